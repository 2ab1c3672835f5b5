"""The pieces every API route module shares: the error a handler raises, the JSON answer, and
the decorator that authenticates a request and turns errors into JSON."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any

from quart import Response, request

from ductile.errors import InputError
from ductile.planes.api.auth import AuthError, authenticate, require
from ductile.planes.http import json_response

if TYPE_CHECKING:
    from ductile.planes.api.context import ApiContext

Handler = Callable[..., Coroutine[Any, Any, Response]]


class ApiError(InputError):
    """A handler's refusal: `status` and the JSON body `{"error": message, **extra}`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def respond(body: Any, status: int = 200) -> Response:
    return json_response(body, status)


def guard(ctx: ApiContext) -> Callable[..., Callable[[Handler], Handler]]:
    """`@guarded(*scopes)` for this app: the handler gets the serving runtime and the
    principal. No scopes: no authentication; `"auth"`: any valid token; else one of them."""

    def guarded(*scopes: str) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            @wraps(handler)
            async def wrapper(*args: Any, **kwargs: Any) -> Response:
                rt = ctx.current()
                try:
                    principal = None
                    if scopes:
                        principal = authenticate(request.headers.get("Authorization"),
                                                 rt.api_tokens)
                        if scopes != ("auth",):
                            require(principal, scopes)
                    return await handler(rt, principal, *args, **kwargs)
                except AuthError as exc:
                    return respond({"error": exc.message}, exc.status)
                except ApiError as exc:
                    return respond({"error": exc.message, **exc.extra}, exc.status)

            return wrapper

        return decorate

    return guarded
