"""The API plane's quart-trio application: JSON errors, the request boundary, and the routes.

The app is built once per process from an `ApiContext` (narrow callables, never the
supervisor) and reads the current runtime generation at the start of each request, so a reload
swaps configuration under a running server without dropping a connection. Every response is
JSON, errors included (`{"error": "..."}`), also for 404, 405 and 413.

The routes live in `routes/`, one module per resource: system (`/`, `/healthz`,
`/system/reload`), plugins, jobs, pipelines, scheduler, and vault (`/vault/*`, authenticated
by the vault admin token only, never an API token).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ductile.planes.api.kit import guard
from ductile.planes.api.routes import jobs, live, pipelines, plugins, relay, scheduler, system
from ductile.planes.api.routes.vault import register_vault_routes
from ductile.planes.http import (
    PlaneApp,
    http_exception_response,
    internal_error,
    no_redirects,
    refuse_unknown_http_versions,
    shown_path,
)

if TYPE_CHECKING:
    from ductile.planes.api.context import ApiContext


def create_app(ctx: ApiContext) -> QuartTrio:
    app = PlaneApp("ductile")
    no_redirects(app)
    app.config["MAX_CONTENT_LENGTH"] = ctx.current().config.api.max_body_size
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    log = ctx.log.child("api")

    @app.before_request
    async def count_started() -> None:
        ctx.inflight.count += 1

    # After the in-flight count (see refuse_unknown_http_versions).
    refuse_unknown_http_versions(app)

    @app.teardown_request
    async def count_done(_exc: BaseException | None) -> None:
        ctx.inflight.count -= 1

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

    guarded = guard(ctx)
    for routes in (system, plugins, jobs, live, pipelines, scheduler, relay):
        routes.register(app, ctx, guarded)
    register_vault_routes(app, lambda: ctx.current().vault_owner, ctx.audit)
    return app


