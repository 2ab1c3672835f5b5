"""Introspection routes through a real gateway: `GET /config/view` (redacted, with compiled
routes), `GET /topology`, `GET /stopwatch/{plugin}`, `GET /analytics/summary` and
`GET /analytics/queue`, with their scopes; and the analytics reads' query plans on a real
SQLite database of a few thousand rows."""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ductile.store import Database, analytics
from ductile.store.jobs import format_time
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, make_vault, write_config

RUNS = 3
SYSTEM_TOKEN = "system-read-token-0123456789abcdef"
PIPELINES = [{"name": "greet", "on": "demo.hello",
              "steps": [{"id": "first", "uses": "echo"},
                        {"id": "second", "uses": "echo",
                         "if": {"path": "payload.message", "op": "exists"}}]}]
ECHO_CONFIG = {"message": "hi", "api_key": "plugin-secret-1",
               "nested": {"Password": "plugin-secret-2", "ok": "shown",
                          "list": [{"auth_header": "plugin-secret-3", "name": "n"}]}}

# A section ductile does not read (a warning at load): shown, with the structural rule applied.
NOTES = {"db_password": "notes-secret-4", "require_auth": True, "secret_ref": "notes-ref",
         "tls": {"key_file": "/etc/ssl/k.pem"}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    cfg = tmp_path_factory.mktemp("introspect") / "cfg"
    make_vault(cfg, {"api-token": TOKEN, "read-token": READ_TOKEN,
                     "system-token": SYSTEM_TOKEN})
    write_config(cfg, port=port, plugins={"echo": {"enabled": True, "config": ECHO_CONFIG}},
                 api={"auth": {"tokens": [
                     {"secret_ref": "api-token", "scopes": ["*"]},
                     {"secret_ref": "read-token", "scopes": ["plugin:ro", "jobs:ro"]},
                     {"secret_ref": "system-token", "scopes": ["system:ro"]}]}},
                 extra={"pipelines": PIPELINES, "notes": NOTES})
    gateway = Gateway(cfg, port=port).start()
    try:
        for n in range(RUNS):
            ran = gateway.post("/plugins/echo/run", {"payload": {"n": n}, "sync": True})
            assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text
        yield gateway
    finally:
        assert gateway.stop() == 0


def test_config_view_is_redacted_and_carries_the_compiled_routes(gw: Gateway) -> None:
    view = gw.get("/config/view", token=SYSTEM_TOKEN)
    assert view.status_code == 200, view.text
    text = view.text
    for secret in (TOKEN, READ_TOKEN, SYSTEM_TOKEN, "plugin-secret-1", "plugin-secret-2",
                   "plugin-secret-3", "notes-secret-4"):
        assert secret not in text
    doc = view.json()
    config = doc["plugins"]["echo"]["config"]
    assert config == {"message": "hi", "api_key": "[REDACTED]",
                      "nested": {"Password": "[REDACTED]", "ok": "shown",
                                 "list": [{"auth_header": "[REDACTED]", "name": "n"}]}}
    # Outside plugin config: text under a secret-like key is redacted, a boolean setting and
    # the keys that name a vault secret or a file are shown.
    assert doc["notes"] == {"db_password": "[REDACTED]", "require_auth": True,
                            "secret_ref": "notes-ref", "tls": {"key_file": "/etc/ssl/k.pem"}}
    # snake_case keys, as the config files write them; durations as written or Go strings.
    assert doc["service"]["name"] == "ductile-test"
    assert doc["plugins"]["echo"]["retry"]["max_attempts"] >= 1
    assert doc["api"]["auth"]["tokens"][2] == {"secret_ref": "system-token",
                                               "scopes": ["system:ro"]}
    assert doc["service"]["admission"]["require_api_auth"] is not None  # a setting, shown
    routes = doc["compiled_routes"]["greet"]
    # The `if:` of step two compiles to a switch node: run on true, skip on false.
    assert [r["id"] for r in routes] == [
        "greet:trigger->first", "greet:first:*->second__switch",
        "greet:second__switch:ductile.switch.true->second",
        "greet:second__switch:ductile.switch.false->second"]
    trigger, to_switch, run, skip = routes
    assert trigger["source"]["trigger"] == "demo.hello"
    assert trigger["destination"] == {"kind": "uses", "step_id": "first", "plugin": "echo",
                                      "command": "handle", "call_pipeline": None,
                                      "relay_to": None, "relay_event": None}
    assert to_switch["source"]["step_id"] == "first"
    assert to_switch["destination"]["kind"] == "switch"
    assert (run["destination"]["mode"], skip["destination"]["mode"]) == ("run", "skip")


def test_introspection_scopes(gw: Gateway) -> None:
    for path in ("/config/view", "/topology"):
        refused = gw.get(path, token=READ_TOKEN)
        assert refused.status_code == 403, path
        assert refused.json() == {"error": "insufficient scope"}
        assert httpx.get(gw.url + path, timeout=10).status_code == 401
    for path in ("/stopwatch/echo", "/analytics/summary", "/analytics/queue"):
        assert gw.get(path, token=SYSTEM_TOKEN).status_code == 403, path
        assert gw.get(path, token=READ_TOKEN).status_code == 200, path


def test_topology_connects_plugins_by_signal(gw: Gateway) -> None:
    topo = gw.get("/topology", token=SYSTEM_TOKEN).json()
    assert {"version", "captured_at", "plugins", "signals", "pipelines", "webhooks",
            "schedules", "relay"} <= set(topo)
    echo = next(p for p in topo["plugins"] if p["name"] == "echo")
    assert echo["active"] is True and echo["version"] == "1.0.0"
    assert {"signal": "echo.handle", "command": "handle"} in echo["outputs"]
    # Both steps consume the trigger: the second through its switch, whose events are internal.
    assert echo["inputs"] == [{"signal": "demo.hello", "command": "handle"}]
    signals = {s["name"]: s for s in topo["signals"]}
    assert signals["demo.hello"] == {"name": "demo.hello", "producers": [],
                                     "consumers": [{"plugin": "echo", "command": "handle"}]}
    assert {"plugin": "echo", "command": "handle"} in signals["echo.handle"]["producers"]
    greet = topo["pipelines"][0]
    assert greet["name"] == "greet" and greet["trigger"] == "demo.hello"
    assert greet["edges"][0] == {"from": "first", "to": "second__switch", "event_type": None}
    assert topo["relay"] == {"instances": [], "peers": [], "listen_path": None}
    assert gw.get("/topology", token=SYSTEM_TOKEN).json()["plugins"] == topo["plugins"]


def test_stopwatch_reads_the_attempts_of_the_ledger(gw: Gateway) -> None:
    watch = gw.get("/stopwatch/echo", token=READ_TOKEN)
    assert watch.status_code == 200, watch.text
    body = watch.json()
    assert body["plugin"] == "echo" and body["window"] == "1h"
    (step,) = body["steps"]
    assert step["step"] == "handle" and step["sample_count"] == RUNS  # the run route's default
    assert 0 <= step["p50_ms"] <= step["p95_ms"] <= step["p99_ms"] <= step["max_ms"]
    assert len(step["trend_p95_ms"]) == analytics.TREND_BUCKETS
    assert step["trend_p95_ms"][-1] is not None  # the runs are in the newest sixth
    day = gw.get("/stopwatch/echo?window=24h", token=READ_TOKEN).json()
    assert day["steps"][0]["sample_count"] == RUNS
    bad = gw.get("/stopwatch/echo?window=2h", token=READ_TOKEN)
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid window '2h' (use 5m, 1h, or 24h)"}
    ghost = gw.get("/stopwatch/ghost", token=READ_TOKEN)
    assert ghost.status_code == 404 and "ghost" in ghost.json()["error"]


def test_analytics_summary_and_queue(gw: Gateway) -> None:
    summary = gw.get("/analytics/summary", token=READ_TOKEN).json()
    assert summary["window"] == "24h"
    assert summary["stats"] == {"succeeded": RUNS}
    assert summary["by_plugin"] == {"echo": {"succeeded": RUNS}}
    assert summary["last_hour"] == {"succeeded": RUNS}
    queue = gw.get("/analytics/queue", token=READ_TOKEN).json()
    assert queue["queue_depth"] == 0 and queue["running_count"] == 0
    assert queue["delayed_count"] == 0 and queue["dead_count"] == 0
    assert queue["by_status"] == {"succeeded": RUNS}
    assert queue["oldest_queued_at"] is None and queue["oldest_queued_age_seconds"] is None
    assert queue["queue_wait_ms"]["samples"] == RUNS
    assert 0 <= queue["queue_wait_ms"]["p50"] <= queue["queue_wait_ms"]["p95"]
    assert queue["throughput_last_hour"] == RUNS
    assert "active_jobs" not in queue and "plugin_lanes" not in queue


# --------------------------------------------------------------------------- query plans

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
LEDGER = {"job_queue", "job_log", "job_attempts", "a", "q", "l"}


class Recording:
    """Stands in for the read connection: runs every statement and remembers it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.statements.append((sql, params))
        return self.conn.execute(sql, params)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path = str(tmp_path_factory.mktemp("analytics") / "ductile.db")

    async def create() -> None:
        await (await Database.open(path)).close()

    trio.run(create)
    conn = sqlite3.connect(path, isolation_level=None)
    rng = random.Random(3)
    jobs = []
    for i in range(4000):
        created = NOW - timedelta(seconds=4000 - i)
        status = rng.choice(["succeeded", "failed", "dead", "queued", "running"])
        jobs.append((str(uuid.uuid4()), f"p{i % 5}", f"c{i % 3}", status, format_time(created),
                     format_time(created + timedelta(seconds=1)),
                     format_time(created + timedelta(seconds=2))))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO job_queue (id, plugin, command, status, submitted_by, "
                     "created_at, started_at, completed_at) VALUES (?, ?, ?, ?, 't', ?, ?, ?)",
                     jobs)
    conn.executemany("INSERT INTO job_attempts (job_id, attempt, created_at, duration_ms) "
                     "VALUES (?, 1, ?, 5)", [(j[0], j[4]) for j in jobs])
    conn.executemany("INSERT INTO job_log (id, job_id, plugin, command, status, attempt, "
                     "submitted_by, created_at, completed_at) VALUES (?, ?, ?, ?, ?, 1, 't', "
                     "?, ?)", [(j[0] + "-1", *j[:4], j[4], j[6]) for j in jobs])
    conn.execute("COMMIT")
    yield conn
    conn.close()


@pytest.mark.parametrize("analyzed", [False, True], ids=["no-stats", "analyzed"])
def test_every_analytics_read_searches_an_index(ledger: sqlite3.Connection,
                                                analyzed: bool) -> None:
    if analyzed:
        ledger.execute("ANALYZE")
    recorder = Recording(ledger)
    fake: Any = recorder
    analytics.status_counts(fake, NOW)
    analytics.plugin_status_counts(fake, NOW)
    figures = analytics.queue_figures(fake, NOW)
    samples = analytics.attempt_durations(fake, "p1", NOW - timedelta(hours=1))
    assert figures.by_status and samples, "the fill must give every read rows to find"
    assert len(recorder.statements) == 10
    for sql, params in recorder.statements:
        details = [row[3] for row in ledger.execute("EXPLAIN QUERY PLAN " + sql, params)]
        scans = [d for d in details if d.startswith("SCAN ") and d.split()[1] in LEDGER]
        assert not scans, f"{sql}\n{json.dumps(details, indent=1)}"
        assert any(d.startswith("SEARCH ") for d in details), sql


def test_nearest_rank_percentiles() -> None:
    assert analytics.nearest_rank([], 50) is None
    values = list(range(1, 101))
    assert analytics.nearest_rank(values, 50) == 50
    assert analytics.nearest_rank(values, 95) == 95
    assert analytics.nearest_rank(values, 100) == 100
    assert analytics.nearest_rank([7], 99) == 7


def test_stopwatch_trend_buckets_split_the_window(tmp_path: Path) -> None:
    since = NOW - timedelta(hours=1)
    samples = [analytics.Sample("poll", format_time(since + timedelta(minutes=m)), ms, None)
               for m, ms in ((1, 10), (2, 30), (59, 100))]
    (step,) = analytics.stopwatch_steps(samples, since, 3600.0)
    assert step["sample_count"] == 3 and step["max_ms"] == 100 and step["last_ms"] == 100
    assert step["trend_p95_ms"] == [30, None, None, None, None, 100]


# --------------------------------------------------------------------------- plugin facts


def test_system_plugin_facts_newest_first(tmp_path: Path) -> None:
    import yaml

    from support.gateway import run_cli
    from support.plugins import make_plugin, manifest_dict, respond_script

    root = tmp_path / "plugins"
    counter = make_plugin(root, "counter", respond_script(
        {"status": "ok", "result": "counted", "state_updates": {"seen": 2}}))
    (counter / "manifest.yaml").write_text(yaml.safe_dump(manifest_dict(
        "counter", fact_outputs=[{"when": {"command": "poll"}, "from": "state_updates",
                                  "fact_type": "counter.snapshot"}])))
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(root)],
                       plugins={"counter": {"enabled": True}})
    missing = run_cli("system", "plugin-facts", "--config", str(cfg))
    assert missing.returncode == 1 and "no database at" in missing.stderr
    gateway = Gateway(cfg, port=port).start()
    try:
        jobs = [gateway.post("/plugins/counter/run", {"command": "poll", "sync": True})
                .json()["job_id"] for _ in range(2)]
    finally:
        assert gateway.stop() == 0
    one = json.loads(run_cli("system", "plugin-facts", "counter", "--json",
                             "--config", str(cfg)).stdout)
    assert one["plugin"] == "counter"
    assert [f["job_id"] for f in one["facts"]] == jobs[::-1]
    assert one["facts"][0]["fact"] == {"seen": 2}
    assert one["facts"][0]["fact_type"] == "counter.snapshot"
    every = json.loads(run_cli("system", "plugin-facts", "--json", "--limit", "1",
                               "--config", str(cfg)).stdout)
    assert every["plugin"] is None and [f["job_id"] for f in every["facts"]] == [jobs[1]]
    other = run_cli("system", "plugin-facts", "counter", "--fact-type", "nope",
                    "--config", str(cfg))
    assert other.returncode == 0
    assert other.stdout.strip() == "No facts recorded by plugin counter of type nope."
    human = run_cli("system", "plugin-facts", "--config", str(cfg)).stdout.splitlines()
    assert len(human) == 2 and f"counter counter.snapshot job={jobs[1]} command=poll" \
        in human[0] and human[0].endswith('{"seen": 2}')
