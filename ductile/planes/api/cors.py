"""CORS for the API listener (`api.allowed_origins`), as the Go gateway answers it.

Pure: given the request's `Origin`, whether it is a preflight, and the configured list, the
headers to add. An origin is allowed only when it is exactly one of the listed strings (scheme,
host and port, no trailing slash); the answer echoes that origin, never `*`, because the API
is used with credentials (a bearer token) and browsers refuse `*` with credentials anyway.
A request with no `Origin`, or one not listed, gets no CORS header at all, so the browser
blocks it; the request itself is still served as any other (CORS protects browsers' users,
the bearer token protects the API).
"""

from __future__ import annotations

from collections.abc import Sequence

#: Preflight answers, as the original sends them.
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Accept, Authorization, Content-Type, X-CSRF-Token"
MAX_AGE_SECONDS = 300
EXPOSE_HEADERS = "Link"


def is_preflight(method: str, request_method_header: str | None) -> bool:
    """A browser's preflight: `OPTIONS` carrying `Access-Control-Request-Method`."""
    return method == "OPTIONS" and bool(request_method_header)


def cors_headers(origin: str | None, allowed: Sequence[str], *,
                 preflight: bool) -> dict[str, str]:
    """The Access-Control-* headers for this request; empty when CORS does not apply."""
    # `*` is never echoed, even when listed: with credentials a browser refuses it, and no
    # browser sends it as an Origin, so it can only be a mistake or a forged header.
    if not origin or origin == "*" or origin not in allowed:
        return {}
    headers = {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": EXPOSE_HEADERS,
    }
    if preflight:
        headers.update({
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        })
    return headers
