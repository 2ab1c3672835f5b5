"""The API's routes as data, and the OpenAPI 3.1 document built from them.

Every route of the API plane is declared by one `Operation`: its method and path, who may call
it, its query parameters, its request body and its answers with their schemas. The same value
builds the quart rule (`kit.declare`, or `guarded.route` for token-guarded handlers) and the
operation of `GET /openapi.json` (`document`), so a route cannot exist without its schema, and
tests/test_openapi.py fails when a rule in the app's url_map has no declaration.

This module knows nothing of quart: the declarations are plain frozen dataclasses, and the
documents are plain dicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Where an app keeps its declared operations (in `app.extensions`: one registry per app).
REGISTRY = "ductile.openapi"
JSON = "application/json"
#: Who may call an operation, as the document's `security` says it.
AUTH_KINDS = ("none", "token", "optional-token", "vault-admin", "signature")
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what went wrong and what to do"}},
}


@dataclass(frozen=True)
class Param:
    """A query (or path) parameter. A path parameter with `enum` in its schema becomes a quart
    `any(...)` converter, so only those values reach the handler."""

    name: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Body:
    """A request body: its schema and whether it may be left out."""

    schema: Mapping[str, Any]
    required: bool = False
    media_type: str = JSON
    description: str = ""


@dataclass(frozen=True)
class Answer:
    """One status of an operation. `schema` None: the error shape `{"error": "..."}`."""

    status: int
    description: str
    schema: Mapping[str, Any] | None = None
    media_type: str = JSON
    headers: tuple[Param, ...] = ()  # response headers the answer carries


@dataclass(frozen=True)
class Operation:
    """One route: method, path (`/job/{job_id}`: OpenAPI's form), auth, and what it takes and
    answers. `auth` is one of AUTH_KINDS; with `token`, `scopes` are the scopes of which the
    token needs one (none: any valid token). Errors need no listing: every operation answers
    `{"error": "..."}` for any status it does not list (the document's `default`)."""

    method: str
    path: str
    summary: str
    answers: tuple[Answer, ...]
    auth: str = "token"
    scopes: tuple[str, ...] = ()
    description: str = ""
    path_params: tuple[Param, ...] = ()
    query: tuple[Param, ...] = ()
    body: Body | None = None
    tag: str = ""
    headers: tuple[Param, ...] = ()

    def __post_init__(self) -> None:
        if self.auth not in AUTH_KINDS:
            raise ValueError(f"operation {self.method} {self.path}: auth {self.auth!r} is not "
                             f"one of {', '.join(AUTH_KINDS)}")
        declared = {p.name for p in self.path_params}
        unknown = declared - set(_PATH_PARAM.findall(self.path))
        if unknown:
            raise ValueError(f"operation {self.method} {self.path}: path parameter(s) "
                             f"{', '.join(sorted(unknown))} are not in the path")

    @property
    def key(self) -> tuple[str, str]:
        """(quart rule, method): how the url_map names this operation."""
        return quart_rule(self), self.method.upper()

    def path_param(self, name: str) -> Param:
        return next((p for p in self.path_params if p.name == name), Param(name))


def quart_rule(op: Operation) -> str:
    """`/job/{job_id}` -> `/job/<job_id>`; an enum parameter -> `<any(a, b):name>`."""

    def convert(match: re.Match[str]) -> str:
        name = match.group(1)
        enum = op.path_param(name).schema.get("enum")
        if enum:
            return f"<any({', '.join(str(v) for v in enum)}):{name}>"
        return f"<{name}>"

    return _PATH_PARAM.sub(convert, op.path)


def ok(status: int, description: str, schema: Mapping[str, Any] | None = None,
       media_type: str = JSON) -> Answer:
    """A success answer; an object of any shape when no schema is given."""
    return Answer(status, description, schema if schema is not None else {"type": "object"},
                  media_type)


def refused(status: int, description: str) -> Answer:
    """An error answer listed for its description (the schema is the error shape)."""
    return Answer(status, description)


#: The header of a refusal that a later retry can get past (backpressure: 429, or 503).
RETRY_AFTER = Param("Retry-After", {"type": "integer", "minimum": 0},
                    "seconds to wait before sending again")


def throttled(status: int = 429) -> Answer:
    """The backpressure refusal of a route that creates jobs (events/outstanding.py)."""
    return Answer(status, "too many outstanding jobs (service.max_outstanding_jobs or the "
                          "plugin's max_outstanding_jobs); nothing was queued: retry after "
                          "Retry-After seconds", headers=(RETRY_AFTER,))


def obj(required: Iterable[str] = (), closed: bool = False, **properties: Any) -> dict[str, Any]:
    """A JSON Schema object: `obj(("job_id",), job_id=STRING)`; `closed` refuses other keys."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": dict(items)}


STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}


def _security(op: Operation) -> list[dict[str, list[str]]]:
    if op.auth == "token":
        return [{"BearerAuth": []}]
    if op.auth == "optional-token":
        return [{}, {"BearerAuth": []}]
    if op.auth == "vault-admin":
        return [{"VaultAdmin": []}]
    return []


def _auth_answers(op: Operation) -> list[Answer]:
    if op.auth == "token":
        out = [refused(401, "missing, malformed or unknown token")]
        if op.scopes:
            out.append(refused(403, "the token has none of the scopes "
                                    + ", ".join(op.scopes) + " (or *)"))
        return out
    if op.auth == "optional-token":
        return [refused(401, "a token was sent and it is not valid")]
    if op.auth == "vault-admin":
        return [refused(401, "missing or wrong vault admin token"),
                refused(503, "no vault is loaded")]
    return []


def _media(schema: Mapping[str, Any] | None, media_type: str) -> dict[str, Any]:
    return {media_type: {"schema": dict(schema) if schema is not None
                         else {"$ref": "#/components/schemas/Error"}}}


def operation_object(op: Operation) -> dict[str, Any]:
    """The OpenAPI operation object of `op`."""
    answers: dict[int, Answer] = {a.status: a for a in _auth_answers(op)}
    if op.body is not None:
        answers.setdefault(400, refused(400, "the body is not what this route takes; the "
                                             "message names the field"))
        answers.setdefault(413, refused(413, "the body is over the size limit"))
    answers.update({a.status: a for a in op.answers})
    responses: dict[str, Any] = {
        str(status): {"description": a.description, "content": _media(a.schema, a.media_type),
                      **({"headers": {h.name: {"schema": dict(h.schema),
                                               "description": h.description}
                                      for h in a.headers}} if a.headers else {})}
        for status, a in sorted(answers.items())
    }
    responses["default"] = {"description": "any other refusal: the error shape",
                            "content": _media(None, JSON)}
    params = [{"name": name, "in": "path", "required": True,
               "schema": dict(op.path_param(name).schema),
               **({"description": op.path_param(name).description}
                  if op.path_param(name).description else {})}
              for name in _PATH_PARAM.findall(op.path)]
    for where, group in (("query", op.query), ("header", op.headers)):
        params.extend({"name": p.name, "in": where, "required": p.required,
                       "schema": dict(p.schema),
                       **({"description": p.description} if p.description else {})}
                      for p in group)
    out: dict[str, Any] = {
        "operationId": operation_id(op),
        "summary": op.summary,
        "tags": [op.tag or _tag(op.path)],
        "security": _security(op),
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if op.scopes:
        out["x-scopes"] = list(op.scopes)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": op.body.required,
                              "content": {op.body.media_type: {"schema": dict(op.body.schema)}}}
        if op.body.description:
            out["requestBody"]["description"] = op.body.description
    return out


def operation_id(op: Operation) -> str:
    """`GET /job/{job_id}/tree` -> `get_job_job_id_tree`: unique per method and path."""
    words = re.sub(r"[^A-Za-z0-9]+", "_", op.path).strip("_") or "root"
    return f"{op.method.lower()}_{words}"


def _tag(path: str) -> str:
    first = path.strip("/").split("/")[0]
    return first.lstrip(".") or "system"


def document(ops: Iterable[Operation], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these operations, paths sorted."""
    paths: dict[str, dict[str, Any]] = {}
    for op in sorted(ops, key=lambda o: (o.path, o.method)):
        paths.setdefault(op.path, {})[op.method.lower()] = operation_object(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ductile Gateway", "version": version,
                 "description": "The gateway's HTTP API, generated from its route "
                                "declarations. Each plugin's commands: "
                                "GET /plugin/{plugin}/openapi.json."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "BearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "an API token (api.auth.tokens)"},
                "VaultAdmin": {"type": "http", "scheme": "bearer",
                               "description": "the vault admin token (never an API token)"},
            },
        },
    }


def run_body(payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body both run routes take (planes/api/bodies.py), `payload` as given."""
    return obj(closed=True,
               payload=dict(payload) if payload is not None else {"type": ["object", "null"]},
               command={"type": "string", "minLength": 1},
               sync=BOOLEAN,
               dedupe_key={"type": "string", "pattern": r"\S", "maxLength": 256})


def plugin_document(plugins: Iterable[Any], *, version: str = "1.0") -> dict[str, Any]:
    """The Go gateway's per-plugin document: one `POST /plugin/<p>/<cmd>` per command, its
    request body the command's (expanded) input schema. `plugins` have `.name` and
    `.manifest` (plugin/manifest.py); paths are sorted across plugins."""
    from ductile.plugin.manifest import expand_schema

    paths: dict[str, Any] = {}
    for plugin in sorted(plugins, key=lambda p: p.name):
        for command in plugin.manifest.commands:
            post: dict[str, Any] = {
                "operationId": f"{plugin.name}__{command.name}",
                "summary": command.description or f"{plugin.name}: {command.name}",
                "tags": [plugin.name],
                "x-command-type": command.type,
                "description": f"Also POST /plugins/{plugin.name}/run with "
                               f'{{"command": "{command.name}", "payload": ...}}. '
                               + ("A read command." if command.type == "read"
                                  else "A write command: needs plugin:rw."),
                "responses": {
                    "202": {"description": "Job queued"},
                    "400": {"description": "Bad request"},
                    "403": {"description": "Insufficient scope"},
                },
                "security": [{"BearerAuth": []}],
            }
            schema = expand_schema(command.input_schema)
            if schema is not None:
                # The Go gateway documented the payload as the whole body; this route refuses
                # unknown fields, so the body is the run body with the payload inside it.
                post["requestBody"] = {"required": False,
                                       "content": {JSON: {"schema": run_body(schema)}}}
            output = expand_schema(command.output_schema)
            if output is not None:
                post["x-output-schema"] = output
            paths[f"/plugin/{plugin.name}/{command.name}"] = {"post": post}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ductile Gateway", "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {"BearerAuth": {"type": "http",
                                                          "scheme": "bearer"}}},
    }
