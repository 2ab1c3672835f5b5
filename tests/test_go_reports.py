"""`ductile job inspect|list|logs --json` in the Go gateway's shapes, read from a real
gateway's ledger: a two-step pipeline (two steps with jobs under the run's root context), a job
retried once (two attempts),
and the search's `--from`/`--to` beside `--since`/`--until`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.gateway import BUNDLED_PLUGINS, Gateway, free_port, run_cli, write_config
from support.plugins import make_plugin

PIPELINES = [{"name": "two", "on": "two.start", "execution_mode": "synchronous", "steps": [
    {"id": "first", "uses": "echo", "baggage": {"order.id": "payload.order"}},
    {"id": "second", "uses": "echo"},
]}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    base = Path(tmp_path_factory.mktemp("reports"))
    root = base / "plugins"
    marker = base / "flaky-ran-once"
    # Fails its first run (asking for a retry), succeeds once the marker exists.
    make_plugin(root, "flaky", f"cat >/dev/null\nif [ -e '{marker}' ]; then\n"
                f"  printf '%s' '{{\"status\":\"ok\",\"result\":\"second try\"}}'\nelse\n"
                f"  touch '{marker}'\n"
                f"  printf '%s' '{{\"status\":\"error\",\"error\":\"first try\",\"retry\":true}}'\n"
                "fi")
    port = free_port()
    cfg = write_config(
        base / "cfg", port=port, plugin_roots=[str(BUNDLED_PLUGINS), str(root)],
        plugins={"echo": {"enabled": True},
                 "flaky": {"enabled": True,
                           "retry": {"max_attempts": 3, "backoff_base": "1ms"}}},
        extra={"pipelines": PIPELINES})
    gateway = Gateway(cfg, port=port).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def cli_json(gw: Gateway, *args: str) -> Any:
    done = run_cli(*args, "--config", str(gw.config_dir), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_inspect_of_a_second_pipeline_step_lists_both_steps_root_first(gw: Gateway) -> None:
    run = gw.post("/pipeline/two", {"payload": {"order": "O-1"}})
    assert run.status_code in (200, 202), run.text
    root_id = run.json()["job_id"]
    tree = gw.get(f"/job/{root_id}/tree").json()
    second = next(n for n in tree if n["job_id"] != root_id)
    report = cli_json(gw, "job", "inspect", second["job_id"])

    assert (report["job_id"], report["plugin"], report["command"]) == (
        second["job_id"], "echo", "handle")
    # As in the original, hop 1 is the run's root context (no job of its own: `<entry>`),
    # then one hop per step, root first.
    assert report["hops"] == 3 and len(report["steps"]) == 3
    root, first, last = report["steps"]
    assert [s["hop"] for s in report["steps"]] == [1, 2, 3]
    assert (root["pipeline"], root["step_id"]) == ("two", "<entry>")
    assert "job_id" not in root and "parent_id" not in root
    ran = [s for s in report["steps"] if "job_id" in s]
    assert [s["step_id"] for s in ran] == ["first", "second"]
    assert (first["pipeline"], first["step_id"], first["job_id"]) == ("two", "first", root_id)
    assert (last["pipeline"], last["step_id"]) == ("two", "second")
    assert last["job_id"] == second["job_id"] and last["plugin"] == "echo"
    assert last["context_id"] == report["context_id"]
    assert last["parent_id"] == first["context_id"] and first["parent_id"] == root["context_id"]
    # Baggage as the original shows it (the `ductile` control block inside), and that block.
    assert last["baggage"]["order"] == {"id": "O-1"} and "order" not in root["baggage"]
    assert last["ductile"] == last["baggage"]["ductile"]
    assert {s["ductile"]["pipeline_instance_id"] for s in report["steps"]} == {
        root["ductile"]["pipeline_instance_id"]}
    assert [s["ductile"]["route_depth"] for s in report["steps"]] == [0, 1, 2]
    for step in ran:
        assert set(step) == {"hop", "pipeline", "step_id", "context_id", "parent_id", "job_id",
                             "plugin", "command", "status", "baggage", "ductile"}
    # Our own lineage view stays beside the original's.
    assert report["lineage"]["run_id"] == root_id


def test_inspect_of_a_retried_job_has_two_attempts_and_the_original_fields(gw: Gateway) -> None:
    done = gw.post("/plugins/flaky/run", {"payload": {"k": 1}, "sync": True})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded"
    report = cli_json(gw, "job", "inspect", done.json()["job_id"])

    assert report["attempt"] == 2 and report["status"] == "succeeded"
    assert [a["attempt"] for a in report["attempts"]] == [1, 2]
    assert all(isinstance(a["at"], str) and a["at"] for a in report["attempts"])
    assert report["attempts"][0]["outcome"] and report["attempts"][1]["exit_code"] == 0
    transitions = report["transitions"]
    assert "from" not in transitions[0] and transitions[0]["to"] == "queued"
    assert [t["to"] for t in transitions].count("running") == 2
    assert transitions[-1]["to"] == "succeeded" and all("at" in t for t in transitions)
    assert report["consistency"] == {"latest_transition_status": "succeeded",
                                     "cached_status_matches": True,
                                     "attempt_facts_match": True,
                                     "legacy_missing_data": False}
    config = report["config"]
    assert config["enqueued"]["id"] == config["started"]["id"] == config["snapshot"]["id"]
    assert isinstance(config["enqueued"]["snapshot_format"], int)
    assert config["crossed_reload_boundary"] is False
    assert config["legacy_missing_data"] is False
    assert "missing_snapshot_refs" not in config
    uses = config["secret_uses"]
    assert {u["ref"] for u in uses} == {"api-token", "read-token"}
    assert all(u["present"] is True and u["fingerprint"] and u["source"] == "vault"
               and u["purpose"].startswith("api.auth.tokens[") for u in uses)
    # A lone job: no context, no steps.
    assert (report["context_id"], report["hops"], report["steps"]) == ("", 0, [])
    # The stored result is the plugin's whole response, as JSON; a handle payload is the event.
    assert report["result"] == {"status": "ok", "result": "second try"}
    assert report["payload"]["payload"] == {"k": 1}


def test_job_list_uses_the_api_names_and_a_payload_object(gw: Gateway) -> None:
    job = gw.post("/plugins/echo/run", {"payload": {"list": "me"}, "command": "poll",
                                        "sync": True}).json()
    listed = cli_json(gw, "job", "list", "--plugin", "echo")
    entry = next(j for j in listed["jobs"] if j["job_id"] == job["job_id"])
    api = next(j for j in gw.get("/jobs", params={"plugin": "echo"}).json()["jobs"]
               if j["job_id"] == job["job_id"])
    assert {k: entry[k] for k in api} == api  # every field GET /jobs has, with its value
    assert entry["payload"] == {"list": "me"} and "id" not in entry
    assert listed["total"] >= 1


def test_job_logs_result_is_an_object_and_from_to_bound_the_search(gw: Gateway) -> None:
    job = gw.post("/plugins/flaky/run", {"payload": {}, "sync": True}).json()
    found = cli_json(gw, "job", "logs", "--plugin", "flaky", "--include-result",
                     "--from", "1h")
    entry = next(e for e in found["logs"] if e["job_id"] == job["job_id"])
    assert entry["result"] == {"status": "ok", "result": "second try"}
    assert {"job_id", "log_id", "plugin", "command", "status", "attempt", "submitted_by",
            "created_at", "completed_at"} <= set(entry)
    api = gw.get("/job-logs", params={"job_id": job["job_id"],
                                      "include_result": "true"}).json()["logs"][0]
    assert api["result"] == entry["result"]
    none = cli_json(gw, "job", "logs", "--plugin", "flaky", "--to", "2000-01-01T00:00:00Z")
    assert none == {"logs": [], "total": 0}
    same = cli_json(gw, "job", "logs", "--plugin", "flaky", "--since", "1h")
    assert same["total"] == found["total"]
    bad = run_cli("job", "logs", "--config", str(gw.config_dir), "--from", "nope")
    assert bad.returncode == 1 and "invalid from timestamp" in bad.stderr
    both = run_cli("job", "logs", "--config", str(gw.config_dir), "--to", "1h", "--until", "1h")
    assert both.returncode == 2 and "--to and --until are one option" in both.stderr


def test_inspect_of_an_unknown_job_fails_naming_it(gw: Gateway) -> None:
    done = run_cli("job", "inspect", "no-such-job", "--config", str(gw.config_dir), "--json")
    assert done.returncode == 1
    assert "Inspect failed: job no-such-job not found" in done.stderr
