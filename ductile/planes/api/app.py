"""The API plane's quart-trio application: JSON errors, the request boundary, and the routes.

The app is built once per process from an `ApiContext` (narrow callables, never the
supervisor) and reads the current runtime generation at the start of each request, so a reload
swaps configuration under a running server without dropping a connection. Every response is
JSON, errors included (`{"error": "..."}`), also for 404, 405 and 413.

The routes live in `routes/`, one module per resource: system (`/`, `/healthz`,
`/system/reload`), plugins, jobs, pipelines, scheduler, discovery (`/openapi.json`,
`/skills`), and vault (`/vault/*`, authenticated by the vault admin token only, never an API
token). Each route is declared with its schema (`kit.py` says how), and `GET /openapi.json` is
built from those declarations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ductile.planes.api.cors import cors_headers, is_preflight
from ductile.planes.api.kit import guard
from ductile.planes.api.routes import (discovery, jobs, live, pipelines, plugins, relay,
                                      scheduler, system)
from ductile.planes.api.routes import introspect
from ductile.planes.api.routes import events, metrics
from ductile.planes.api.routes.vault import register_vault_routes
from ductile.planes.ui import register as register_ui
from ductile.planes.http import (
    PlaneApp,
    http_exception_response,
    http_version_refusal,
    internal_error,
    no_redirects,
    shown_path,
)

if TYPE_CHECKING:
    from ductile.planes.api.context import ApiContext


def create_app(ctx: ApiContext) -> QuartTrio:
    # No static folder: quart would mount GET /static/<path> (a route nobody declared, serving
    # whatever a `static` directory beside the package held); the UI serves its own files.
    app = PlaneApp("ductile", static_folder=None)
    no_redirects(app)
    app.config["MAX_CONTENT_LENGTH"] = ctx.current().config.api.max_body_size
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    log = ctx.log.child("api")

    # One hook before every request, in this order: the in-flight count (it must always
    # run: the teardown below takes it back), the HTTP version, then a CORS preflight.
    # CORS (api.allowed_origins) is read per request so a reload changes it: a preflight
    # from a listed origin is answered here with 204; every answer to a listed origin,
    # errors included, carries the CORS headers; anything else passes through without them.
    @app.before_request
    async def before() -> Response | None:
        ctx.inflight.count += 1
        req = request._get_current_object()  # type: ignore[attr-defined]  # one lookup
        refused = http_version_refusal(req.http_version)
        if refused is not None or req.method != "OPTIONS":
            return refused
        headers = req.headers
        if not is_preflight(req.method, headers.get("Access-Control-Request-Method")):
            return None
        allowed = cors_headers(headers.get("Origin"), ctx.current().config.api.allowed_origins,
                               preflight=True)
        return Response(b"", 204, headers=allowed) if allowed else None

    @app.teardown_request
    async def count_done(_exc: BaseException | None) -> None:
        ctx.inflight.count -= 1

    @app.after_request
    async def cors_response(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        origin = req.headers.get("Origin")
        if not origin:  # not a browser's cross-origin request: nothing to add
            return response
        preflight = is_preflight(req.method, req.headers.get("Access-Control-Request-Method"))
        response.headers.update(cors_headers(origin, ctx.current().config.api.allowed_origins,
                                             preflight=preflight))
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        path = shown_path(request.path)
        messages = {
            404: f"no route for {request.method} {path}; see GET / for the route list",
            405: f"method {request.method} not allowed on {path}",
            413: "request body too large (limit "
                 f"{app.config['MAX_CONTENT_LENGTH']} bytes)",
        }
        code = exc.code or 500
        return http_exception_response(exc, messages.get(code, exc.description or exc.name))

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        return internal_error(log, exc)

    guarded = guard(ctx, app)
    for routes in (system, plugins, jobs, live, pipelines, scheduler, relay, discovery,
                   introspect):
        routes.register(app, ctx, guarded)
    events.register(app, ctx, guarded)  # GET /events (docs/events.md)
    metrics.register(app, ctx, guarded)  # GET /metrics (docs/operator.md)
    register_ui(app, ctx, guarded)  # the web ledger at /ui (docs/ui.md)
    register_vault_routes(app, lambda: ctx.current().vault_owner, ctx.audit)
    return app


