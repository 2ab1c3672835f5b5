"""The API token scopes this gateway grants, and what each one implies.

Pure data shared by the API plane, which enforces scopes on every request
(`ductile/planes/api/auth.py`), and the doctor, which judges the scopes a config gives its tokens
(`ductile/config/doctor.py`). It lives in the config layer so the doctor can read the same
vocabulary without importing a plane.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every scope: a token holding it passes every scope check.
WILDCARD = "*"

#: A read-write scope also grants its read-only twin. `system:ro` and `system:rw` are otherwise
#: matched literally (a route needing `system:ro` also accepts `system:rw`).
IMPLIED: dict[str, tuple[str, ...]] = {
    "plugin:rw": ("plugin:ro",),
    "jobs:rw": ("jobs:ro",),
    "events:rw": ("events:ro",),
    "system:rw": ("system:ro",),
}

#: The scopes a route of this gateway can ask for (besides the wildcard).
GRANTED: frozenset[str] = frozenset(
    {*IMPLIED, *(scope for implied in IMPLIED.values() for scope in implied)}
)


def normalise(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a token holds, with every implied scope added."""
    out: set[str] = set()
    for scope in scopes:
        out.add(scope)
        out.update(IMPLIED.get(scope, ()))
    return frozenset(out)
