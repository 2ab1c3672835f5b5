"""`GET /events` and `GET /metrics` against the real gateway: a subscriber sees the events of
the jobs it triggered, in order; resumes with Last-Event-ID without a gap or a duplicate, also
across a restart; filters hold; a client that never reads is dropped while the others go on;
the metrics' job counters agree with the ledger."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ductile.cli.follow import SseEvent, SseParser
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, write_config
from support.plugins import make_plugin

JOB_TYPES = ("job.enqueued", "job.started", "job.completed")

# Fails for good (no retry) when the payload says so; otherwise answers at once.
PLUGIN = """
import json, sys
request = json.load(sys.stdin)
event = request.get("event") or {}
if (event.get("payload") or {}).get("fail"):
    print(json.dumps({"status": "error", "error": "asked to fail", "retry": False}))
else:
    print(json.dumps({"status": "ok", "result": "done",
                      "events": [{"type": "quick.done", "payload": {}}]}))
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = _gateway(tmp_path)
    yield gw.start()
    gw.stop()


def _gateway(tmp_path: Path) -> Gateway:
    roots = tmp_path / "plugins"
    make_plugin(roots, "quick", PLUGIN, shebang=f"#!{sys.executable}")
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(roots)],
                       plugins={"quick": {"enabled": True, "retry": {"max_attempts": 1}}},
                       service={"max_workers": 2},
                       extra={"pipelines": [{"name": "twice", "on": "twice.go", "steps": [
                           {"id": "first", "uses": "quick"},
                           {"id": "second", "uses": "quick"}]}]})
    return Gateway(cfg, port=port)


def run_job(gw: Gateway, fail: bool = False) -> str:
    resp = gw.post("/plugins/quick/run", {"payload": {"fail": fail}, "sync": True})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["job_id"])


@contextmanager
def stream(gw: Gateway, query: str = "", last_id: int | None = None,
           token: str = TOKEN) -> Iterator[Callable[[Callable[[SseEvent], bool]],
                                                    list[SseEvent]]]:
    """Open GET /events; yields `until(pred)`: the events read up to the first that `pred`
    accepts (included)."""
    headers = gw.headers(token)
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    timeout = httpx.Timeout(10.0, read=30.0)
    with httpx.stream("GET", f"{gw.url}/events{query}", headers=headers,
                      timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = resp.iter_text()
        parser = SseParser()
        pending: list[SseEvent] = []

        def until(pred: Callable[[SseEvent], bool]) -> list[SseEvent]:
            seen: list[SseEvent] = []
            while True:
                while pending:
                    event = pending.pop(0)
                    seen.append(event)
                    if pred(event):
                        return seen
                pending.extend(parser.feed(next(chunks)))

        yield until


def data(event: SseEvent) -> dict[str, Any]:
    value = json.loads(event.data)
    assert isinstance(value, dict)
    return value


def completed(job_id: str) -> Callable[[SseEvent], bool]:
    return lambda e: e.event in ("job.completed", "job.failed") and data(e)["job_id"] == job_id


def test_a_subscriber_sees_its_job_in_order_and_resumes_without_gap(
        tmp_path: Path, gateway: Gateway) -> None:
    with stream(gateway, "?type=job.*") as until:
        job = run_job(gateway)
        first = [e for e in until(completed(job)) if data(e).get("job_id") == job]
    assert [e.event for e in first] == list(JOB_TYPES)
    ids = [int(e.id or 0) for e in first]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for event in first:
        body = data(event)
        assert body["plugin"] == "quick" and body["command"] == "handle"
        assert body["at"].endswith("Z") and "status" in body
    assert data(first[-1])["status"] == "succeeded"

    # Disconnected, two more jobs run; the resumed stream starts right after the last id.
    missed = [run_job(gateway), run_job(gateway, fail=True)]
    with stream(gateway, "?type=job.*", last_id=ids[-1]) as until:
        resumed = until(completed(missed[1]))
    resumed_ids = [int(e.id or 0) for e in resumed]
    assert resumed_ids == sorted(set(resumed_ids)) and resumed_ids[0] > ids[-1]
    assert [(e.event, data(e)["job_id"]) for e in resumed] == [
        *((kind, missed[0]) for kind in JOB_TYPES),
        *((kind, missed[1]) for kind in ("job.enqueued", "job.started", "job.retry_exhausted",
                                         "job.failed"))]

    # Across a restart: the same resume answers the same events (they were stored), and the
    # ids of new events continue after them.
    assert gateway.stop() == 0
    gateway.start()
    after = run_job(gateway)
    with stream(gateway, "?type=job.*", last_id=ids[-1]) as until:
        again = until(completed(after))
    assert [int(e.id or 0) for e in again[:len(resumed)]] == resumed_ids
    later = [int(e.id or 0) for e in again[len(resumed):]]
    assert later == sorted(later) and later[0] > resumed_ids[-1]
    assert {data(e)["job_id"] for e in again[len(resumed):]} == {after}


def test_filters_select_events(gateway: Gateway) -> None:
    one, two = run_job(gateway), run_job(gateway, fail=True)
    with stream(gateway, f"?job={two}", last_id=0) as until:
        only = until(completed(two))
    assert {data(e)["job_id"] for e in only} == {two}
    with stream(gateway, "?type=job.completed&type=job.failed&plugin=quick",
                last_id=0) as until:
        ends = until(completed(two))
    assert [(e.event, data(e)["job_id"]) for e in ends] == [("job.completed", one),
                                                            ("job.failed", two)]


def test_bad_requests_name_what_is_wrong(gateway: Gateway) -> None:
    resp = gateway.get("/events?plugins=echo")
    assert resp.status_code == 400 and "'plugins'" in resp.json()["error"]
    resp = gateway.get("/events?type=job.*x")
    assert resp.status_code == 400 and "type" in resp.json()["error"]
    resp = httpx.get(gateway.url + "/events", timeout=10,
                     headers={**gateway.headers(), "Last-Event-ID": "abc"})
    assert resp.status_code == 400 and "Last-Event-ID" in resp.json()["error"]


def test_tokens_and_scopes(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/events", timeout=10).status_code == 401
    assert gateway.get("/events", token=READ_TOKEN).status_code == 403
    assert httpx.get(gateway.url + "/metrics", timeout=10).status_code == 401
    assert gateway.get("/metrics", token=READ_TOKEN).status_code == 403
    # ?token= is accepted on /events only.
    assert httpx.get(gateway.url + "/metrics?token=" + TOKEN, timeout=10).status_code == 401
    job = run_job(gateway)
    with httpx.stream("GET", f"{gateway.url}/events?last_event_id=0&token={TOKEN}",
                      timeout=httpx.Timeout(10.0, read=30.0)) as resp:
        assert resp.status_code == 200
        parser, seen = SseParser(), []
        for chunk in resp.iter_text():
            seen += parser.feed(chunk)
            if any(completed(job)(e) for e in seen):
                break


def test_a_stalled_subscriber_is_dropped_and_the_others_go_on(gateway: Gateway) -> None:
    # A client that never reads, with a tiny receive window so the kernel holds little for it.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stalled.connect(("127.0.0.1", gateway.port or 0))
    stalled.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                    .encode())
    seen: list[SseEvent] = []
    done = threading.Event()

    def read_all() -> None:
        with stream(gateway) as until:
            until(lambda e: seen.append(e) or done.is_set() and e.event == "job.completed")

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(), timeout=30) as client:
        # Until the drop: the kernel's socket buffers take some events before the 256 count.
        for _ in range(150):
            for _ in range(10):
                assert client.post("/plugins/quick/run", json={}).status_code == 202
            if any(e.event == "subscriber.dropped" for e in seen):
                break
        done.set()
        last = client.post("/plugins/quick/run", json={"sync": True}).json()["job_id"]
    reader.join(30)
    assert not reader.is_alive()
    types = [e.event for e in seen]
    assert "subscriber.dropped" in types
    assert types[-1] == "job.completed" and types.index("subscriber.dropped") < len(types) - 1
    assert last  # the gateway took a job after the drop
    # The stalled stream ended: its body, once read, closes with the drop comment.
    stalled.settimeout(10)
    body = b""
    while b"0\r\n\r\n" not in body[-16:]:
        chunk = stalled.recv(65536)
        if not chunk:
            break
        body += chunk
    stalled.close()
    assert b": dropped" in body


def test_metrics_job_counters_match_the_ledger(gateway: Gateway) -> None:
    for fail in (False, False, True, False, True):
        run_job(gateway, fail=fail)
    resp = gateway.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    counted: dict[str, float] = {}
    for sample in families["ductile_jobs"].samples:
        if sample.name == "ductile_jobs_total" and sample.labels["plugin"] == "quick":
            counted[sample.labels["outcome"]] = sample.value
    ledger: dict[str, float] = {}
    for job in gateway.get("/jobs?plugin=quick&limit=200").json()["jobs"]:
        ledger[job["status"]] = ledger.get(job["status"], 0) + 1
    assert counted == ledger == {"succeeded": 3, "failed": 2}
    duration = [s for s in families["ductile_job_duration_seconds"].samples
                if s.name.endswith("_count") and s.labels["plugin"] == "quick"]
    assert sum(s.value for s in duration) == 5
    assert families["ductile_queue_depth"].samples[0].value == 0
    assert "ductile_reloads" in families and "ductile_circuit_breaker_state" in families


def test_pipeline_events_carry_the_pipeline_and_survive_a_reload(gateway: Gateway) -> None:
    with stream(gateway, "?pipeline=twice&type=job.*&type=router.*&type=pipeline.*") as until:
        resp = gateway.post("/pipeline/twice", {"payload": {}})
        assert resp.status_code in (200, 202), resp.text
        seen = until(lambda e: e.event == "job.completed" and data(e)["step_id"] == "second")
        steps = [(e.event, data(e).get("step_id")) for e in seen]
        assert steps == [("job.enqueued", "first"), ("pipeline.enqueued", None),
                         ("job.started", "first"), ("job.completed", "first"),
                         ("router.enqueued", "second"), ("job.started", "second"),
                         ("job.completed", "second")]
        assert {data(e)["pipeline"] for e in seen} == {"twice"}

    # A reload swaps the configuration under an open stream: it goes on.
    with stream(gateway, "?type=reload.*&type=job.completed") as until:
        gateway.signal(signal.SIGHUP)
        swapped = until(lambda e: e.event == "reload.swapped")[-1]
        assert data(swapped)["trigger"] == "sighup"
        job = run_job(gateway)
        until(completed(job))
    metrics = gateway.get("/metrics").text
    reloads = {s.labels["outcome"]: s.value
               for f in text_string_to_metric_families(metrics) if f.name == "ductile_reloads"
               for s in f.samples if s.name == "ductile_reloads_total"}
    assert reloads == {"swapped": 1.0}
