"""The API token scopes this gateway grants: the newest Go gateway's names, what each one
implies, and how the older names map onto them.

One pure table shared by the API plane, which enforces scopes on every request
(`ductile/planes/api/auth.py`), the doctor, which judges the scopes a config gives its tokens
(`ductile/config/doctor.py`), and `config check`, which shows each token's effective scopes. It
lives in the config layer so the doctor can read the same vocabulary without importing a plane.

The newest original split the broad read scopes into narrow ones (`plugin:catalog:ro`,
`plugin:invoke:ro`, `jobs:status:ro`, ...). Older configs say `plugin:ro` and `jobs:ro`; those
names keep working, and they map to exactly what they allowed before (the original's own split
made `plugin:ro` stop invoking read commands: we keep the old meaning, so an old config is not
broken by an upgrade). A token's scopes are expanded once, when it authenticates, into the
effective set in the newest names (`effective`); routes ask for the newest names only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Every scope: a token holding it passes every scope check.
WILDCARD = "*"

#: What each scope of the newest model grants besides itself (the closure is taken by
#: `effective`, so `jobs:rw` reaching the four `jobs:*:ro` scopes is written once).
IMPLIED: Mapping[str, tuple[str, ...]] = {
    "plugin:rw": ("plugin:catalog:ro", "plugin:invoke:ro"),
    "plugin:catalog:ro": (),
    "plugin:invoke:ro": (),
    "jobs:rw": ("jobs:status:ro", "jobs:result:ro", "jobs:logs:ro", "jobs:tree:ro"),
    "jobs:status:ro": (),
    "jobs:result:ro": (),
    "jobs:logs:ro": (),
    "jobs:tree:ro": (),
    "events:rw": ("events:ro",),
    "events:ro": ("events:meta:ro", "events:payload:ro"),
    "events:meta:ro": (),
    "events:payload:ro": (),
    # The original matches these two literally, but every route that accepts system:ro also
    # accepts system:rw, so implying it is the same rule written once.
    "system:rw": ("system:ro",),
    "system:ro": (),
    "metrics:ro": (),
}

#: The older names and the newest scopes each one stands for: exactly what it allowed before.
LEGACY: Mapping[str, tuple[str, ...]] = {
    "plugin:ro": ("plugin:catalog:ro", "plugin:invoke:ro"),
    "jobs:ro": ("jobs:status:ro", "jobs:result:ro", "jobs:logs:ro", "jobs:tree:ro"),
}

#: The scopes of the newest model (what routes ask for, what `effective` returns).
CURRENT: frozenset[str] = frozenset(IMPLIED)

#: Every name a token may hold and be granted something for (besides the wildcard).
GRANTED: frozenset[str] = CURRENT | frozenset(LEGACY)


def expand(scope: str) -> frozenset[str]:
    """One granted name as the set of newest scopes it holds, implied ones included; a name
    this gateway does not know grants nothing (the original accepts it and matches nothing)."""
    if scope == WILDCARD:
        return frozenset({WILDCARD})
    todo = list(LEGACY.get(scope, (scope,) if scope in IMPLIED else ()))
    out: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(IMPLIED[name])
    return frozenset(out)


def effective(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a token holds, in the newest names, with every implied scope added."""
    out: set[str] = set()
    for scope in scopes:
        out |= expand(scope.strip())
    return frozenset(out)


#: The name the auth module has used since before the split.
normalise = effective


def satisfies(held: frozenset[str], any_of: Iterable[str]) -> bool:
    """Whether effective scopes `held` pass a check asking for one of `any_of`. A check still
    written in an older name passes when every newest scope that name stands for is held."""
    if WILDCARD in held:
        return True
    return any(expand(scope) <= held if scope in LEGACY else scope in held
               for scope in any_of)
