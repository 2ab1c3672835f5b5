"""Bearer-token authentication and scope checks, free of any HTTP framework.

`Authorization: Bearer <token>`; the scheme name is case-insensitive (`bearer`, `BEARER`).

Tokens are compared in constant time against every configured token (no early exit on the first
mismatch, so timing does not reveal which token prefix matched). Scopes follow the newest Go
gateway (`plugin:catalog:ro`, `jobs:status:ro`, ...; `*` passes every check): a token's granted
names, older ones included, are expanded once into its effective scopes when it authenticates.
The vocabulary and the old-name mapping live in `ductile/config/scopes.py`, where the doctor
and `config check` read them too.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ductile.config.schema import ApiToken
from ductile.config.scopes import IMPLIED, effective, normalise, satisfies
from ductile.errors import InputError

__all__ = ["IMPLIED", "AuthError", "Principal", "authenticate", "bearer_credentials",
           "normalise", "require"]

#: The auth scheme, compared case-insensitively.
SCHEME = "bearer"

#: A token's effective scopes by its granted names: the same few tuples on every request.
_effective = lru_cache(maxsize=256)(effective)


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def allows(self, any_of: Iterable[str]) -> bool:
        return satisfies(self.scopes, any_of)


class AuthError(InputError):
    """A request could not be authenticated (401) or lacks a scope (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bearer_credentials(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, stripped ("" when empty); None when the
    header is absent or names another scheme. The scheme is case-insensitive (RFC 7235 §2.1:
    `bearer`, `BEARER` and `Bearer` are the same scheme)."""
    if not header:
        return None
    scheme, space, rest = header.partition(" ")
    if not space or scheme.lower() != SCHEME:
        return None
    return rest.strip()


def authenticate(header: str | None, tokens: Sequence[ApiToken]) -> Principal:
    """Map an Authorization header to the principal of the token it carries."""
    if not header:
        raise AuthError(401, "missing or invalid Authorization header")
    presented = bearer_credentials(header)
    if presented is None:
        raise AuthError(401, "invalid Authorization header format")
    if not presented:
        raise AuthError(401, "missing or invalid Authorization header")
    match: ApiToken | None = None
    candidate = presented.encode()
    for token in tokens:
        configured = token.token.encode()
        if configured and hmac.compare_digest(candidate, configured) and match is None:
            match = token
    if match is None:
        raise AuthError(401, "invalid token")
    return Principal(name=match.name, scopes=_effective(tuple(match.scopes)))


def require(principal: Principal, any_of: Sequence[str]) -> None:
    if not principal.allows(any_of):
        raise AuthError(403, "insufficient scope")
