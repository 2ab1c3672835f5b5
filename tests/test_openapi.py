"""GET /openapi.json is built from the route declarations, and nothing escapes it: every rule of
the app is declared, docs/api.md's route table lists exactly the document's operations, and
GET /plugin/{plugin}/openapi.json describes one plugin's commands."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from ductile.logs import Logger
from ductile.planes.api.app import create_app
from ductile.planes.api.kit import Guard, declare, operations, undeclared
from ductile.planes.api.openapi import Operation, Param, ok
from support.apidoc import RELAY_PATH, full_config
from support.gateway import READ_TOKEN, Gateway, free_port

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    directory = tmp_path_factory.mktemp("openapi")
    full_config(directory, port)
    gw = Gateway(directory, port).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def document(gateway: Gateway) -> dict[str, Any]:
    answer = gateway.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _app(listen_path: str = "/ingest/peer") -> Any:
    """The API app as the supervisor builds it, over a context that only has to answer what
    building the app reads (no request is served: the url_map is what is looked at)."""
    config = SimpleNamespace(api=SimpleNamespace(max_body_size=1 << 20, allowed_origins=()))
    runtime = SimpleNamespace(config=config, relay=SimpleNamespace(listen_path=listen_path))
    ctx = SimpleNamespace(current=lambda: runtime, log=Logger(stream=None),
                          write=None, audit=None, events=None)
    return create_app(ctx)  # type: ignore[arg-type]


def test_every_rule_of_the_app_is_declared() -> None:
    app = _app()
    missing = undeclared(app)
    assert not missing, ("routes mounted without a declaration (declare each with "
                         f"@guarded.route(Operation(...)), see planes/api/kit.py): {missing}")
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert "/ingest/peer/<peer>" in rules  # the relay receiver, at its configured path
    assert not any(rule.startswith("/static/") for rule in rules)  # quart's default, unasked
    assert {op.path for op in operations(app)} >= {"/openapi.json", "/ingest/peer/{peer}"}


def test_a_bare_route_is_reported_undeclared() -> None:
    app = _app()

    @app.route("/sneaky", methods=["GET", "POST"])
    async def sneaky() -> str:
        return "{}"

    assert {"GET /sneaky", "POST /sneaky"} <= set(undeclared(app))


def test_the_relay_route_follows_its_configured_path() -> None:
    app = _app("/relay/in")
    assert ("/relay/in/{peer}", "POST") in {(op.path, op.method) for op in operations(app)}
    assert "/relay/in/<peer>" in {rule.rule for rule in app.url_map.iter_rules()}
    assert "POST /relay/in/<peer>" not in undeclared(app)


def test_a_declaration_refuses_what_would_make_the_document_lie() -> None:
    app = _app()
    guarded = Guard(SimpleNamespace(current=None), app)  # type: ignore[arg-type]

    async def view() -> Any:
        return None

    with pytest.raises(ValueError, match="declared twice"):
        declare(app, Operation("GET", "/jobs", "again", answers=(ok(200, "x"),),
                               auth="none"), view)
    with pytest.raises(ValueError, match="needs @guarded"):
        declare(app, Operation("GET", "/unguarded", "x", answers=(ok(200, "x"),)), view)
    with pytest.raises(ValueError, match="auth 'token'"):
        guarded.route(Operation("GET", "/mixed", "x", answers=(ok(200, "x"),),
                                auth="signature"))(guarded("jobs:ro")(view))
    with pytest.raises(ValueError, match="not in the path"):
        Operation("GET", "/a/{b}", "x", answers=(), path_params=(Param("c"),))


def test_the_document_is_openapi_31_and_lists_itself(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "Ductile Gateway"
    assert "/openapi.json" in document["paths"]
    assert RELAY_PATH.rsplit("/", 1)[0] + "/{peer}" in document["paths"]
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    jobs = document["paths"]["/jobs"]["get"]
    assert jobs["security"] == [{"BearerAuth": []}]
    assert {p["name"] for p in jobs["parameters"]} == {"plugin", "command", "status", "limit"}
    assert "401" in jobs["responses"] and "default" in jobs["responses"]
    stream = document["paths"]["/job/{job_id}/logs/stream"]["get"]["responses"]["200"]
    assert list(stream["content"]) == ["text/event-stream"]
    vault = document["paths"]["/vault/secret"]["post"]
    assert vault["security"] == [{"VaultAdmin": []}]
    assert vault["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
    relay = document["paths"]["/ingest/peer/{peer}"]["post"]
    assert relay["security"] == []
    health = document["paths"]["/healthz"]["get"]
    assert health["security"] == [{}, {"BearerAuth": []}]
    action = document["paths"]["/scheduler/{action}"]["post"]["parameters"][0]
    assert action["schema"]["enum"] == ["pause", "resume"]


def test_the_document_validates_as_openapi_31(document: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(document)


def test_discovery_needs_a_token_of_any_scope(gateway: Gateway) -> None:
    for path in ("/openapi.json", "/skills", "/.well-known/ai-plugin.json",
                 "/plugin/echo/openapi.json"):
        assert httpx.get(gateway.url + path, timeout=10).status_code == 401, path
        assert gateway.get(path, token=READ_TOKEN).status_code == 200, path


def test_a_plugins_document_lists_its_commands(gateway: Gateway) -> None:
    doc = gateway.get("/plugin/echo/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["BearerAuth"] == {"type": "http",
                                                                  "scheme": "bearer"}
    assert list(doc["paths"]) == sorted(doc["paths"])
    assert set(doc["paths"]) == {"/plugin/echo/handle", "/plugin/echo/health",
                                 "/plugin/echo/poll"}
    poll = doc["paths"]["/plugin/echo/poll"]["post"]
    assert poll["operationId"] == "echo__poll"
    assert poll["tags"] == ["echo"]
    assert set(poll["responses"]) == {"202", "400", "403"}
    # echo's compact `{message: string}` input schema, expanded, as the run body's payload.
    body = poll["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["payload"] == {"type": "object",
                                             "properties": {"message": {"type": "string"}}}
    assert body["additionalProperties"] is False
    assert "requestBody" not in doc["paths"]["/plugin/echo/health"]["post"]
    missing = gateway.get("/plugin/nope/openapi.json")
    assert (missing.status_code, missing.json()) == (404, {"error": "plugin not found"})


def _documented_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of each row of the Routes table in docs/api.md: the first column is the
    method, the second starts with the path in backquotes."""
    section = DOCS.read_text().split("\n## Routes\n", 1)[1].split("\n#", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0].startswith("| method | path |"), "docs/api.md: the Routes table moved"
    rows = set()
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        path = re.match(r"`([^`]+)`", cells[1])
        assert path, f"docs/api.md route row without a `path`: {line}"
        rows.add((cells[0], path.group(1)))
    return rows


def test_docs_route_table_lists_exactly_the_documents_routes(document: dict[str, Any]) -> None:
    in_document = {(method.upper(), path) for path, ops in document["paths"].items()
                   for method in ops}
    documented = _documented_routes()
    extra = sorted(documented - in_document)
    assert not extra, f"docs/api.md's Routes table lists routes the API does not have: {extra}"
    missing = sorted(in_document - documented)
    assert not missing, f"routes missing from docs/api.md's Routes table: {missing}"
