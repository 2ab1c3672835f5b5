"""Bearer-token authentication and scope checks (pure)."""

from __future__ import annotations

import pytest

from ductile.config.schema import ApiToken
from ductile.planes.api.auth import AuthError, authenticate, normalise, require

TOKENS = (ApiToken(token="alpha-secret", scopes=("plugin:rw",)),
          ApiToken(token="beta-secret", scopes=("jobs:ro",)),
          ApiToken(token="", scopes=("*",)))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing or invalid Authorization header"),
        ("", "missing or invalid Authorization header"),
        ("Bearer ", "missing or invalid Authorization header"),
        ("Basic abc", "invalid Authorization header format"),
        ("Bearer", "invalid Authorization header format"),
        ("Bearer\talpha-secret", "invalid Authorization header format"),
        ("Bearerx alpha-secret", "invalid Authorization header format"),
        ("bearer  ", "missing or invalid Authorization header"),
        ("Bearer wrong", "invalid token"),
    ],
)
def test_bad_headers_are_401_with_the_reference_message(header: str | None, message: str) -> None:
    with pytest.raises(AuthError) as caught:
        authenticate(header, TOKENS)
    assert caught.value.status == 401
    assert caught.value.message == message


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    # RFC 7235 §2.1: the auth-scheme is a case-insensitive token.
    principal = authenticate(f"{scheme} alpha-secret", TOKENS)
    assert principal.allows(["plugin:rw"])


def test_an_empty_configured_token_never_matches_an_empty_presented_one() -> None:
    with pytest.raises(AuthError):
        authenticate("Bearer  ", TOKENS)


def test_token_is_trimmed_and_matched_to_its_scopes() -> None:
    principal = authenticate("Bearer   beta-secret  ", TOKENS)
    assert principal.allows(["jobs:ro"])
    assert not principal.allows(["plugin:ro"])


def test_rw_implies_ro_but_system_rw_is_literal_for_other_scopes() -> None:
    # Effective scopes are in the newest names (tests/test_scopes.py has the whole table).
    assert normalise(["plugin:rw"]) >= {"plugin:rw", "plugin:catalog:ro", "plugin:invoke:ro"}
    assert normalise(["jobs:rw"]) >= {"jobs:status:ro", "jobs:logs:ro"}
    assert "system:rw" not in normalise(["system:ro"])


def test_star_passes_every_check_and_missing_scope_is_403() -> None:
    star = authenticate("Bearer x", (ApiToken(token="x", scopes=("*",)),))
    require(star, ["system:rw"])
    limited = authenticate("Bearer beta-secret", TOKENS)
    with pytest.raises(AuthError) as caught:
        require(limited, ["system:rw"])
    assert (caught.value.status, caught.value.message) == (403, "insufficient scope")
