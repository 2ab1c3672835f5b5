"""Ingress backpressure through the real gateway: the API answers 429 with Retry-After once a
plugin's (or the gateway's) `max_outstanding_jobs` is reached, webhooks 503, the relay receiver
429; a plugin's bound leaves other plugins alone; `/healthz` and `/metrics` show the bound; a
pipeline successor is never refused; a scheduler fire over the bound is skipped as
`backpressure`; once jobs end, new work is accepted again.

The plugin `slow` (and its aliases, each with its own lane and count) holds every job until
the test creates its release file, so the outstanding count is exactly what the test made it.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from ductile.planes.webhook.verify import sign_github
from ductile.relay.envelope import build_envelope, signed_headers
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, make_vault, write_config
from support.plugins import bundled_root, make_plugin

HOOK_SECRET = "webhook-hmac-secret-value"
RELAY_SECRET = "relay-shared-secret-0123456789"
RELAY_PATH = "/ingest/peer/gw-a"


def _slow_plugin(root: Path, release: Path) -> None:
    """`slow`: reads its request, then waits for `release` to exist before it answers."""
    make_plugin(root, "slow", f"cat >/dev/null\nwhile [ ! -e '{release}' ]; do sleep 0.05; "
                              "done\nprintf '%s' '{\"status\":\"ok\",\"result\":\"done\"}'",
                concurrency_safe=False)


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not in time: {what}")


def _outstanding(gw: Gateway) -> dict[str, Any]:
    health = gw.get("/healthz")
    assert health.status_code == 200, health.text
    return health.json()["backpressure"]


def _metric(gw: Gateway, name: str, **labels: str) -> float | None:
    text = gw.get("/metrics").text
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            return float(match.group(2))
    return None


def _assert_throttled(resp: httpx.Response, status: int, message: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Retry-After"] == "1"
    assert resp.json()["error"] == message


@pytest.fixture
def bounded(tmp_path: Path) -> Iterator[tuple[Gateway, Path, int]]:
    """slow (bound 3), other (bound 2) and third (no bound of its own), each an own lane, the
    gateway bounded at 6; a webhook endpoint and a relay pipeline both run slow."""
    release = tmp_path / "release"
    roots = tmp_path / "plugins"
    _slow_plugin(roots, release)
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    make_vault(cfg, {"api-token": TOKEN, "read-token": READ_TOKEN, "gh-secret": HOOK_SECRET,
                     "from-a": RELAY_SECRET})
    write_config(cfg, port=port, plugin_roots=[str(bundled_root()), str(roots)],
                 service={"max_workers": 3, "max_outstanding_jobs": 6},
                 plugins={"slow": {"enabled": True, "max_outstanding_jobs": 3},
                          "other": {"uses": "slow", "enabled": True, "max_outstanding_jobs": 2},
                          "third": {"uses": "slow", "enabled": True}},
                 extra={"webhooks": {"listen": f"127.0.0.1:{hook_port}", "endpoints": [
                            {"path": "/hooks/slow", "plugin": "slow", "secret_ref": "gh-secret",
                             "signature_header": "X-Hub-Signature-256"}]},
                        "remote_ingress": {"peers": [{"name": "gw-a", "secret_ref": "from-a"}]},
                        "pipelines": [{"name": "on-ready", "on": "backup.ready",
                                       "steps": [{"id": "hold", "uses": "slow"}]}]})
    gw = Gateway(cfg, port).start()
    try:
        yield gw, release, hook_port
    finally:
        release.touch()
        assert gw.stop() == 0, gw.stderr()


def _deliver(hook_port: int, n: int) -> httpx.Response:
    body = f'{{"n": {n}}}'.encode()
    return httpx.post(f"http://127.0.0.1:{hook_port}/hooks/slow", content=body, timeout=10,
                      headers={"X-Hub-Signature-256": sign_github(HOOK_SECRET.encode(), body),
                               "Content-Type": "application/json"})


def _relay(gw: Gateway, body: bytes) -> httpx.Response:
    headers = signed_headers("hmac", RELAY_SECRET.encode(), sender="gw-a", method="POST",
                             path=RELAY_PATH, body=body, now=datetime.now(timezone.utc))
    return httpx.post(gw.url + RELAY_PATH, content=body, headers=headers, timeout=10)


def test_each_plane_refuses_over_a_bound_and_accepts_again_once_jobs_end(
        bounded: tuple[Gateway, Path, int]) -> None:
    gw, release, hook_port = bounded
    slow_full = ("too many outstanding jobs for plugin slow (limit 3, outstanding 3); "
                 "retry after 1 s")
    assert _outstanding(gw) == {"max_outstanding_jobs": 6, "outstanding": 0, "refused_total": 0,
                                "plugins": {"other": {"max_outstanding_jobs": 2,
                                                      "outstanding": 0},
                                            "slow": {"max_outstanding_jobs": 3,
                                                     "outstanding": 0}}}
    # Up to the plugin's bound: accepted, through the run route and the Go route.
    assert gw.post("/plugins/slow/run", {"payload": {"n": 1}}).status_code == 202
    assert gw.post("/plugin/slow/poll", {"payload": {"n": 2}}).status_code == 202
    assert gw.post("/plugins/slow/run", {"payload": {"n": 3}}).status_code == 202
    # The next one, on either route, sync or not: 429, Retry-After, the bound named.
    refused = gw.post("/plugins/slow/run", {"payload": {"n": 4}})
    _assert_throttled(refused, 429, slow_full)
    assert refused.json()["bound"] == "plugins.slow.max_outstanding_jobs"
    assert (refused.json()["limit"], refused.json()["outstanding"]) == (3, 3)
    _assert_throttled(gw.post("/plugin/slow/poll", {"payload": {}, "sync": True}), 429,
                      slow_full)
    # A webhook delivery for slow: 503 (senders retry a 5xx), Retry-After, nothing queued.
    _assert_throttled(_deliver(hook_port, 1), 503, slow_full)
    # A relay envelope whose pipeline starts at slow: 429, which the sending peer retries.
    envelope = build_envelope("backup.ready", {"n": 1},
                              origin={"instance": "gw-a", "event_id": "e-1"})
    _assert_throttled(_relay(gw, envelope), 429, slow_full)
    # Another plugin's own bound is independent of slow's.
    assert gw.post("/plugins/other/run", {"payload": {}}).status_code == 202
    assert gw.post("/plugins/other/run", {"payload": {}}).status_code == 202
    _assert_throttled(gw.post("/plugins/other/run", {"payload": {}}), 429,
                      "too many outstanding jobs for plugin other (limit 2, outstanding 2); "
                      "retry after 1 s")
    # A plugin without a bound of its own is held by the gateway's: 6 outstanding at most.
    assert gw.post("/plugins/third/run", {"payload": {}}).status_code == 202
    global_full = ("too many outstanding jobs in the gateway (limit 6, outstanding 6); "
                   "retry after 1 s")
    refused = gw.post("/plugins/third/run", {"payload": {}})
    _assert_throttled(refused, 429, global_full)
    assert refused.json()["bound"] == "service.max_outstanding_jobs"
    assert gw.get("/jobs", params={"limit": 50}).json()["total"] == 6  # nothing refused queued
    assert _outstanding(gw) == {"max_outstanding_jobs": 6, "outstanding": 6, "refused_total": 6,
                                "plugins": {"other": {"max_outstanding_jobs": 2,
                                                      "outstanding": 2},
                                            "slow": {"max_outstanding_jobs": 3,
                                                     "outstanding": 3}}}
    assert _metric(gw, "ductile_backpressure_refusals_total", plane="api", plugin="slow",
                   bound="plugin") == 2
    assert _metric(gw, "ductile_backpressure_refusals_total", plane="webhook",
                   plugin="slow") == 1
    assert _metric(gw, "ductile_backpressure_refusals_total", plane="relay", plugin="slow") == 1
    assert _metric(gw, "ductile_backpressure_refusals_total", plane="api", plugin="third",
                   bound="global") == 1
    assert _metric(gw, "ductile_jobs_outstanding") == 6
    assert _metric(gw, "ductile_plugin_jobs_outstanding", plugin="slow") == 3
    # The refusals are logged, never per request (at most once a second per plane and plugin).
    warned = [r for r in gw.log_records()
              if r.get("msg") == "backpressure: new work refused (senders retry)"]
    assert {(r["plane"], r["plugin"]) for r in warned} >= {("api", "slow"), ("webhook", "slow"),
                                                          ("relay", "slow"), ("api", "other")}
    assert len(warned) <= 6

    # Every job ends; the count follows the job events back to zero.
    release.touch()
    _wait(lambda: _outstanding(gw)["outstanding"] == 0, "every held job to end")
    statuses = {j["status"] for j in gw.get("/jobs", params={"limit": 50}).json()["jobs"]}
    assert statuses == {"succeeded"}
    # ... and each plane accepts again. The relay's very same bytes are not a replay: the
    # refused envelope was forgotten, so the sender's retry of it gets through.
    assert gw.post("/plugins/slow/run", {"payload": {"n": 5}}).status_code == 202
    assert _deliver(hook_port, 2).status_code == 202
    accepted = _relay(gw, envelope)
    assert accepted.status_code == 202, accepted.text
    assert gw.post("/plugins/third/run", {"payload": {}}).status_code == 202


@pytest.fixture
def piped(tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    """slow bound at 1; a pipeline echo -> slow; `ticker` (slow, bound 1) fires every second."""
    release = tmp_path / "release"
    roots = tmp_path / "plugins"
    _slow_plugin(roots, release)
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port,
                       plugin_roots=[str(bundled_root()), str(roots)],
                       service={"max_workers": 3},
                       plugins={"echo": {"enabled": True},
                                "slow": {"enabled": True, "max_outstanding_jobs": 1},
                                "ticker": {"uses": "slow", "enabled": True,
                                           "max_outstanding_jobs": 1,
                                           "schedules": [{"id": "tick", "every": "1s"}]}},
                       extra={"pipelines": [{"name": "then-slow", "on": "go", "steps": [
                           {"id": "first", "uses": "echo"}, {"id": "second", "uses": "slow"}]}]})
    gw = Gateway(cfg, port).start()
    try:
        yield gw, release
    finally:
        release.touch()
        assert gw.stop() == 0, gw.stderr()


def test_a_pipeline_successor_is_never_refused_and_the_run_completes(
        piped: tuple[Gateway, Path]) -> None:
    gw, release = piped
    assert gw.post("/plugins/slow/run", {"payload": {}}).status_code == 202
    assert gw.post("/plugins/slow/run", {"payload": {}}).status_code == 429
    # The run's entry step is echo, which has room; its successor on slow is work the
    # gateway derived from accepted work: enqueued over slow's bound, never refused.
    started = gw.post("/pipeline/then-slow", {"payload": {"n": 1}})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    over = _wait(lambda: (lambda b: b if b["plugins"]["slow"]["outstanding"] == 2 else None)(
        _outstanding(gw)), "the successor on slow to be queued over its bound")
    assert over["plugins"]["slow"]["max_outstanding_jobs"] == 1
    release.touch()

    def settled() -> list[dict[str, Any]] | None:
        tree = gw.get(f"/job/{run_id}/tree").json()
        done = all(n["status"] not in ("queued", "running") for n in tree)
        return tree if len(tree) == 2 and done else None

    tree = _wait(settled, "the run's two steps to end")
    assert [(n["plugin"], n["status"]) for n in tree] == [("echo", "succeeded"),
                                                          ("slow", "succeeded")]


def test_a_scheduler_fire_over_the_bound_is_skipped_and_a_manual_one_refused(
        piped: tuple[Gateway, Path]) -> None:
    gw, release = piped
    # The first fire holds ticker's one slot; every later one is skipped as `backpressure`.
    skipped = _wait(lambda: _metric(gw, "ductile_scheduler_fires_total", plugin="ticker",
                                    outcome="backpressure"), "a fire skipped as backpressure")
    assert skipped >= 1
    assert _metric(gw, "ductile_backpressure_refusals_total", plane="scheduler",
                   plugin="ticker") == skipped
    records = [r for r in gw.log_records() if r.get("msg") == "scheduled fire skipped"]
    assert {r.get("reason") for r in records} == {"backpressure"}
    held = [j for j in gw.get("/jobs", params={"plugin": "ticker"}).json()["jobs"]]
    assert len(held) == 1  # nothing but the first fire was queued
    manual = gw.post("/scheduler/run", {"target": "ticker/tick"})
    _assert_throttled(manual, 429, "too many outstanding jobs for plugin ticker (limit 1, "
                                   "outstanding 1); retry after 1 s")
    release.touch()
    _wait(lambda: (_metric(gw, "ductile_scheduler_fires_total", plugin="ticker",
                           outcome="enqueued") or 0) >= 2, "a fire enqueued once the slot freed")


def test_the_count_is_seeded_from_the_database_at_boot(tmp_path: Path) -> None:
    """After a crash, the new process counts what the ledger holds (the held job that was
    running is requeued by recovery, the queued ones wait): the bound holds across restarts."""
    release = tmp_path / "release"
    roots = tmp_path / "plugins"
    _slow_plugin(roots, release)
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port,
                       plugin_roots=[str(bundled_root()), str(roots)],
                       plugins={"slow": {"enabled": True, "max_outstanding_jobs": 3}})
    first = Gateway(cfg, port).start()
    try:
        for n in range(3):
            assert first.post("/plugins/slow/run", {"payload": {"n": n}}).status_code == 202
        _wait(lambda: any(j["status"] == "running" for j in
                          first.get("/jobs", params={"plugin": "slow"}).json()["jobs"]),
              "one held job to run")
    finally:
        first.signal(signal.SIGKILL)
        first.wait_exit()
    second = Gateway(cfg, port).start()
    try:
        assert _outstanding(second)["plugins"]["slow"] == {"max_outstanding_jobs": 3,
                                                           "outstanding": 3}
        assert second.post("/plugins/slow/run", {"payload": {}}).status_code == 429
        release.touch()
        _wait(lambda: _outstanding(second)["outstanding"] == 0, "the held jobs to end")
        assert second.post("/plugins/slow/run", {"payload": {}}).status_code == 202
    finally:
        release.touch()
        assert second.stop() == 0, second.stderr()
