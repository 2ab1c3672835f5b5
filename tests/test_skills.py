"""GET /skills, GET /.well-known/ai-plugin.json and `ductile skills`: what an agent can run here,
from the same plugin registry and pipelines, through the route and the CLI alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.apidoc import PIPELINE, full_config
from support.gateway import READ_TOKEN, Gateway, free_port, run_cli


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    directory = tmp_path_factory.mktemp("skills")
    full_config(directory, port)
    gw = Gateway(directory, port).start()
    yield gw
    gw.stop()


def test_skills_need_a_token(gateway: Gateway) -> None:
    answer = httpx.get(gateway.url + "/skills", timeout=10)
    assert answer.status_code == 401
    assert "error" in answer.json()
    assert gateway.get("/skills", token="not-a-token").status_code == 401
    assert gateway.get("/skills", token=READ_TOKEN).status_code == 200


def test_skills_list_commands_then_pipelines(gateway: Gateway) -> None:
    skills = gateway.get("/skills").json()["skills"]
    kinds = [s["kind"] for s in skills]
    assert kinds == sorted(kinds, key=lambda k: k != "plugin")  # plugins first
    plugins = [s for s in skills if s["kind"] == "plugin"]
    assert [(s["plugin"], s["command"]) for s in plugins] == sorted(
        (s["plugin"], s["command"]) for s in plugins)
    poll = next(s for s in plugins if s["name"] == "plugin.echo.poll")
    assert poll == {
        "name": "plugin.echo.poll", "kind": "plugin", "description": poll["description"],
        "endpoint": "/plugin/echo/poll", "tier": "READ", "plugin": "echo", "command": "poll",
        "input_schema": {"type": "object", "properties": {"message": {"type": "string"}}},
    }
    handle = next(s for s in plugins if s["name"] == "plugin.echo.handle")
    assert handle["tier"] == "WRITE"
    pipeline = next(s for s in skills if s["kind"] == "pipeline")
    assert pipeline["name"] == f"pipeline.{PIPELINE}"
    assert pipeline["endpoint"] == f"/pipeline/{PIPELINE}"
    assert pipeline["trigger"] == "note.requested"
    assert pipeline["execution_mode"] == "asynchronous"
    assert pipeline["timeout_secs"] == 30
    assert pipeline["entry_steps"] == [{"id": "say", "kind": "uses", "plugin": "echo"}]
    # The entry plugin's handle input is what the run's payload reaches.
    assert pipeline["input_schema"] == handle["input_schema"]


def test_well_known_points_at_the_openapi_document(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/.well-known/ai-plugin.json", timeout=10).status_code == 401
    doc = gateway.get("/.well-known/ai-plugin.json", token=READ_TOKEN).json()
    assert doc["schema_version"] == "v1"
    assert doc["name_for_model"] == "ductile"
    assert doc["auth"] == {"type": "bearer"}
    assert doc["api"] == {"type": "openapi", "url": "/openapi.json"}
    assert gateway.get(doc["api"]["url"]).status_code == 200


def test_the_index_names_the_discovery_routes(gateway: Gateway) -> None:
    discovery = httpx.get(gateway.url + "/", timeout=10).json()["discovery"]
    assert discovery["skills"] == "/skills"
    assert discovery["openapi"] == "/openapi.json"
    assert discovery["ai_plugin"] == "/.well-known/ai-plugin.json"


def test_the_cli_prints_what_the_route_answers(gateway: Gateway) -> None:
    result = run_cli("skills", "--json", "--config", str(gateway.config_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == gateway.get("/skills").json()


def test_the_cli_markdown_has_one_line_per_skill(gateway: Gateway) -> None:
    result = run_cli("skills", "--config", str(gateway.config_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert ('- echo.poll m=POST p=/plugin/echo/poll tier=READ mut=0 in="message:string" d='
            in "\n".join(lines))
    assert any(line.startswith(f'- {PIPELINE} m=POST p=/pipeline/{PIPELINE} '
                               'trigger="note.requested" mode=async timeout=30s')
               for line in lines)
    # A description with quotes stays one parseable value.
    health = next(line for line in lines if line.startswith("- echo.health "))
    described = json.loads(health.split(" d=", 1)[1])
    assert described == next(s["description"] for s in gateway.get("/skills").json()["skills"]
                             if s["name"] == "plugin.echo.health")


def test_the_cli_refuses_a_config_it_cannot_load(tmp_path: Path) -> None:
    result = run_cli("skills", "--config", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "config" in result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("pipelines:\n  - name: x\n    steps: [{uses: nope}]\n")
    result = run_cli("skills", "--config", str(broken))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
