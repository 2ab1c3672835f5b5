"""The pieces every API route module shares: the error a handler raises, the JSON answer, and
the declaration that mounts a route with its schema, authenticates a request and turns errors
into JSON.

Declaring a route: `@guarded.route(Operation(...))` above `@guarded(*scopes)`. The Operation
(planes/api/openapi.py) is the route's path, method, parameters, body and answers; the scopes
are read from the `@guarded` below it, so each fact is written once. Both build the quart rule
and the route's entry in `GET /openapi.json`::

    from ductile.planes.api.openapi import INTEGER, STRING, Operation, Param, obj, ok, refused

    @guarded.route(Operation(
        "GET", "/stopwatch/{plugin}", "latency percentiles of one plugin's jobs",
        query=(Param("limit", {"type": "integer", "minimum": 1, "maximum": 200}),),
        answers=(ok(200, "the percentiles", obj(("plugin",), plugin=STRING, p50_ms=INTEGER)),
                 refused(404, "no such plugin")),
    ))
    @guarded("jobs:status:ro")
    async def stopwatch(rt: Runtime, principal: Principal | None, plugin: str) -> Response:
        ...

A stream or a page says its media type: `ok(200, "the stream", EVENT_STREAM_TEXT,
media_type=EVENT_STREAM)` (schemas.py: the schema of one event), `ok(200, "the page",
{"type": "string"}, media_type="text/html")`. A view that checks its own credential (the vault admin
token, a relay signature) is declared with that `auth` and no `@guarded`. tests/test_openapi.py
fails on any rule of the app mounted another way (a bare `@app.route`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import replace
from functools import wraps
from typing import TYPE_CHECKING, Any

from quart import Response, request

from ductile.errors import InputError, Overloaded
from ductile.planes.api.auth import AuthError, authenticate, require
from ductile.planes.api.openapi import REGISTRY, Operation, quart_rule
from ductile.planes.http import json_response

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.context import ApiContext

Handler = Callable[..., Coroutine[Any, Any, Response]]
#: The attribute on a `@guarded` view that holds its scopes (read by `declare`).
GUARD_SCOPES = "__ductile_scopes__"


class ApiError(InputError):
    """A handler's refusal: `status` and the JSON body `{"error": message, **extra}`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def respond(body: Any, status: int = 200) -> Response:
    return json_response(body, status)


def overloaded(exc: Overloaded, status: int = 429) -> Response:
    """The answer to new work refused by backpressure (events/outstanding.py): `status` with
    `Retry-After`, naming the bound that was hit. Nothing was queued; a retry loses nothing."""
    response = respond({"error": str(exc), "bound": exc.key, "limit": exc.limit,
                        "outstanding": exc.outstanding, "retry_after": exc.retry_after},
                       status)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def declare(app: QuartTrio, op: Operation, view: Handler) -> Operation:
    """Mount `view` as the route `op` declares and record it for `GET /openapi.json`; the
    recorded operation takes its auth and scopes from the view's `@guarded`, when it has one.

    Refuses a second declaration of one method and path (two handlers would hide one), and a
    token route whose view has no `@guarded` (the document would promise a check not made)."""
    scopes = getattr(view, GUARD_SCOPES, None)
    if scopes and op.auth != "token":
        raise ValueError(f"route {op.method} {op.path}: a @guarded view with scopes is auth "
                         f"'token', not {op.auth!r}")
    if scopes:
        op = replace(op, scopes=() if scopes == ("auth",) else tuple(scopes))
    elif scopes is not None and op.auth == "token":
        op = replace(op, auth="none", scopes=())
    elif scopes is not None and op.auth not in ("none", "optional-token"):
        raise ValueError(f"route {op.method} {op.path}: a @guarded() view checks no "
                         f"credential; declare it auth 'none' or 'optional-token'")
    elif scopes is None and op.auth == "token":
        raise ValueError(f"route {op.method} {op.path}: auth 'token' needs @guarded(...) "
                         "under the declaration")
    operations: dict[tuple[str, str], Operation] = app.extensions.setdefault(REGISTRY, {})
    if op.key in operations:
        raise ValueError(f"route {op.method} {op.path} is declared twice")
    operations[op.key] = op
    app.add_url_rule(quart_rule(op), endpoint=f"{op.method.lower()}:{op.path}",
                     view_func=view, methods=[op.method.upper()])
    return op


def operations(app: QuartTrio) -> list[Operation]:
    """Every operation declared on `app`."""
    return list(app.extensions.get(REGISTRY, {}).values())


def undeclared(app: QuartTrio) -> list[str]:
    """`METHOD rule` of every rule in the url_map that no Operation declares (should be none)."""
    declared = set(app.extensions.get(REGISTRY, {}))
    missing = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (rule.rule, method) not in declared:
                missing.append(f"{method} {rule.rule}")
    return missing


class Guard:
    """`guarded(*scopes)` wraps a handler: it gets the serving runtime and the principal. No
    scopes: no authentication; `"auth"`: any valid token; else one of them. `guarded.route(op)`
    above it mounts it (see the module docstring)."""

    def __init__(self, ctx: ApiContext, app: QuartTrio | None = None) -> None:
        self.ctx = ctx
        self.app = app

    def route(self, op: Operation) -> Callable[[Handler], Handler]:
        """Declare `op` for the `@guarded` handler below it (see the module docstring)."""
        if self.app is None:
            raise ValueError("this guard has no app to mount routes on")
        app = self.app

        def decorate(handler: Handler) -> Handler:
            declare(app, op, handler)
            return handler

        return decorate

    def __call__(self, *scopes: str) -> Callable[[Handler], Handler]:
        ctx = self.ctx

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
                except Overloaded as exc:  # an enqueue route over a max_outstanding_jobs
                    return overloaded(exc)

            setattr(wrapper, GUARD_SCOPES, tuple(scopes))
            return wrapper

        return decorate


def guard(ctx: ApiContext, app: QuartTrio | None = None) -> Guard:
    """The `guarded` every route module's `register(app, ctx, guarded)` receives."""
    return Guard(ctx, app)
