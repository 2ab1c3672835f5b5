"""`GET /openapi.json`, `GET /plugin/{plugin}/openapi.json`, `GET /skills` and
`GET /.well-known/ai-plugin.json`: what a client or an agent can do here.

All four need a valid token (any scope), as in the Go gateway's code. `/openapi.json` is built
from the route declarations of this very app (planes/api/openapi.py), so it lists every route,
itself included; the per-plugin document lists one plugin's commands from its manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response

from ductile import __version__
from ductile.planes.api.kit import ApiError, operations, respond
from ductile.planes.api.openapi import (STRING, Operation, array, document, obj, ok,
                                        plugin_document, refused)
from ductile.planes.api.skills import ai_plugin, skills

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime

OPENAPI = obj(("openapi", "info", "paths"), openapi={"type": "string", "pattern": r"^3\.1\."},
              info=obj(("title", "version")), paths=obj(), components=obj())
SKILLS = obj(("skills",), skills=array(obj(("name", "kind", "endpoint"), name=STRING,
                                           kind={"type": "string",
                                                 "enum": ["plugin", "pipeline"]},
                                           endpoint=STRING)))
AI_PLUGIN = obj(("schema_version", "name_for_model", "auth", "api"), schema_version=STRING,
                name_for_model=STRING, auth=obj(), api=obj(("type", "url")))


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation("GET", "/openapi.json",
                             "this document: every route of the API, from its declaration",
                             tag="discovery",
                             answers=(ok(200, "an OpenAPI 3.1 document", OPENAPI),)))
    @guarded("auth")
    async def openapi(_rt: Runtime, _p: Principal | None) -> Response:
        return respond(document(operations(app), version=__version__))

    @guarded.route(Operation("GET", "/plugin/{plugin}/openapi.json",
                             "one plugin's commands as POST /plugin/{plugin}/{command}",
                             tag="discovery",
                             answers=(ok(200, "an OpenAPI 3.1 document", OPENAPI),
                                      refused(404, "plugin not found"))))
    @guarded("auth")
    async def plugin_openapi(rt: Runtime, _p: Principal | None, plugin: str) -> Response:
        found = rt.plugins.get(plugin)
        if found is None:
            raise ApiError(404, "plugin not found")
        return respond(plugin_document([found], version=__version__))

    @guarded.route(Operation("GET", "/skills",
                             "what can be run here: plugin commands, then pipelines",
                             tag="discovery", answers=(ok(200, "the skills", SKILLS),)))
    @guarded("auth")
    async def skills_index(rt: Runtime, _p: Principal | None) -> Response:
        return respond(skills(rt.plugins.values(), rt.pipelines))

    @guarded.route(Operation("GET", "/.well-known/ai-plugin.json",
                             "the AI-plugin manifest: where the API is described",
                             tag="discovery", answers=(ok(200, "the manifest", AI_PLUGIN),)))
    @guarded("auth")
    async def well_known(_rt: Runtime, _p: Principal | None) -> Response:
        return respond(ai_plugin())
