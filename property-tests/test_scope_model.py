"""The scope model (ductile/config/scopes.py) against the scope rules this gateway had before
the newest names: whatever scopes a token was given, in any mix of old and new names, it
reaches exactly the routes it reached before, never one more; every old name maps to a
non-empty set of newest ones; expansion is idempotent and never invents a name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.scopes import CURRENT, LEGACY, WILDCARD, effective, expand, satisfies

#: The rules before the split: a read-write scope implied its read-only twin, nothing else.
OLD_IMPLIED = {"plugin:rw": {"plugin:ro"}, "jobs:rw": {"jobs:ro"},
               "events:rw": {"events:ro"}, "system:rw": {"system:ro"}}
OLD_NAMES = sorted({*OLD_IMPLIED, *(s for v in OLD_IMPLIED.values() for s in v)})

#: Every route family: the old check (any of) and the newest scope it asks for now.
ROUTES = {
    "GET /plugin/{p}": ({"plugin:ro", "plugin:rw"}, "plugin:catalog:ro"),
    "POST /plugin/{p}/{read command}": ({"plugin:ro", "plugin:rw"}, "plugin:invoke:ro"),
    "POST /plugin/{p}/{write command}": ({"plugin:rw"}, "plugin:rw"),
    "POST /pipeline/{name}": ({"plugin:rw"}, "plugin:rw"),
    "GET /job/{id}": ({"jobs:ro", "jobs:rw"}, "jobs:status:ro"),
    "GET /jobs": ({"jobs:ro", "jobs:rw"}, "jobs:status:ro"),
    "GET /scheduler/jobs": ({"jobs:ro"}, "jobs:status:ro"),
    "GET /job/{id}/tree": ({"jobs:ro", "jobs:rw"}, "jobs:tree:ro"),
    "GET /job-logs": ({"jobs:ro", "jobs:rw"}, "jobs:logs:ro"),
    "GET /job/{id}/logs/stream": ({"jobs:ro", "jobs:rw"}, "jobs:logs:ro"),
    "POST /job/{id}/cancel": ({"jobs:rw"}, "jobs:rw"),
    "GET /system/doctor": ({"system:ro", "system:rw"}, "system:ro"),
    "POST /system/reload": ({"system:rw"}, "system:rw"),
    "GET /events": ({"events:ro", "events:rw"}, "events:ro"),
}


def old_allows(granted: list[str], any_of: set[str]) -> bool:
    held = set(granted)
    for scope in granted:
        held |= OLD_IMPLIED.get(scope, set())
    return WILDCARD in held or bool(held & any_of)


# Old names, the wildcard, and strings that were never scopes (the newest names are excluded:
# they did not exist before, so they grant what they are meant to grant, tested below).
names = st.one_of(st.sampled_from([*OLD_NAMES, WILDCARD]),
                  st.text(max_size=12).filter(lambda s: s.strip() not in CURRENT),
                  st.sampled_from(["job:ro", "state:ro", " jobs:ro", "plugin:", ""]))


@given(st.lists(names, max_size=6))
def test_a_token_of_old_names_reaches_exactly_what_it_reached_before(granted: list[str]) -> None:
    held = effective(granted)
    for route, (old_any_of, new_scope) in ROUTES.items():
        before = old_allows([g.strip() for g in granted], old_any_of)
        now = satisfies(held, [new_scope])
        assert not (now and not before), f"{granted} gained {route}"
        assert now == before, f"{granted} lost {route}"


@given(st.sampled_from(OLD_NAMES))
def test_every_old_name_maps_to_a_nonempty_set_of_newest_scopes(old: str) -> None:
    mapped = expand(old)
    assert mapped and mapped <= CURRENT


@given(st.lists(st.one_of(st.sampled_from(sorted(CURRENT | set(LEGACY))), names), max_size=6))
def test_effective_scopes_are_newest_names_and_expansion_is_idempotent(granted: list[str]) -> None:
    held = effective(granted)
    assert held <= CURRENT | {WILDCARD}
    assert effective(held) == held
    # A check written in an old name still means what it meant.
    for old, new in LEGACY.items():
        assert satisfies(held, [old]) == (WILDCARD in held or set(new) <= held)
