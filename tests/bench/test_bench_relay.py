"""Relay benchmarks: two real gateways on loopback, A relaying to B (HMAC), as in
tests/test_relay_gateway.py.

A's pipeline `ship` is one `relay:` step (the durable job `core.relay`) that signs the event and
POSTs it to B's `remote_ingress`; B verifies it, records it against replay, and enqueues its
`on-backup` pipeline (one echo step). Both run `max_workers: 2` at log level info.

1. Throughput: N `POST /pipeline/ship` on A from a few client threads; the rate is N over the
   time from the first POST until the last core.relay job on A completed (its `completed_at`,
   which is after B's 202: the event is B's from then on).
2. The latency one relay hop adds: for sequential events, B's job `created_at` minus the A
   core.relay job's `started_at` (both gateways on this machine's clock): claim, sign, HTTP,
   verify, replay record, enqueue on B. Also the client-observed latency of one
   `ductile.relay.sender.send` to B's ingress, measured in this process with trio.

No goal was set for relay, so every line says "n/a".
"""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import trio

from support.bench import BenchGateway, median, percentile, report
from support.gateway import READ_TOKEN, TOKEN, free_port, make_vault, write_config
from ductile.relay.envelope import build_envelope
from ductile.relay.sender import Clients, Target, send

SECRET = "relay-bench-secret-0123456789"
EVENTS = 300
CLIENTS = 4
HOPS = 60
SENDS = 200
WARMUP = 5
SERVICE = {"log_level": "info", "max_workers": 2}
INGRESS_PATH = "/ingest/peer/gw-a"


def _receiver(directory: Path) -> BenchGateway:
    port = free_port()
    make_vault(directory, {"api-token": TOKEN, "read-token": READ_TOKEN, "from-a": SECRET})
    write_config(directory, port=port, service={"name": "gw-b", **SERVICE}, extra={
        "remote_ingress": {"peers": [{"name": "gw-a", "secret_ref": "from-a"}]},
        "pipelines": [{"name": "on-backup", "on": "backup.ready",
                       "steps": [{"id": "note", "uses": "echo"}]}]})
    return BenchGateway(directory, port)


def _sender(directory: Path, receiver_port: int) -> BenchGateway:
    port = free_port()
    make_vault(directory, {"api-token": TOKEN, "read-token": READ_TOKEN, "to-b": SECRET})
    write_config(directory, port=port, service={"name": "gw-a", **SERVICE}, extra={
        "instances": [{"name": "gw-b", "base_url": f"http://127.0.0.1:{receiver_port}",
                       "ingress_path": INGRESS_PATH, "secret_ref": "to-b",
                       "retry": {"max_attempts": 40, "backoff_base": "0.2s"}}],
        "pipelines": [{"name": "ship", "on": "ship.requested", "steps": [
            {"id": "out", "relay": {"to": "gw-b", "event": "backup.ready",
                                    "with": {"n": "payload.n"},
                                    "dedupe_key": "backup-{payload.n}"}}]}]})
    return BenchGateway(directory, port)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rows(gw: BenchGateway, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{gw.config_dir / 'data' / 'state.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _total(client: httpx.Client, **params: Any) -> int:
    resp = client.get("/jobs", params={"limit": 1, **params})
    assert resp.status_code == 200, resp.text
    total: int = resp.json()["total"]
    return total


def _wait_job(client: httpx.Client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/job/{job_id}").json()
        if job.get("status") == "succeeded":
            return job
        assert job.get("status") in ("queued", "running"), job
        time.sleep(0.005)
    raise AssertionError(f"job {job_id} did not succeed within {timeout} s")


def test_relay_throughput(tmp_path: Path) -> None:
    with _receiver(tmp_path / "b") as b, _sender(tmp_path / "a", b.port) as a:
        errors: list[str] = []
        posted_at: list[float] = []
        counter = iter(range(EVENTS))
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=a.url, headers=a.headers, timeout=30) as c:
                while True:
                    with lock:
                        n = next(counter, None)
                    if n is None:
                        break
                    resp = c.post("/pipeline/ship", json={"payload": {"n": n}})
                    if resp.status_code not in (200, 202):
                        errors.append(f"{resp.status_code} {resp.text}")
            posted_at.append(time.time())

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        t0_wall, t0 = time.time(), time.monotonic()
        for t in threads:
            t.start()
        seen_a = seen_b = None
        with httpx.Client(base_url=a.url, headers=a.headers, timeout=30) as pa, \
                httpx.Client(base_url=b.url, headers=b.headers, timeout=30) as pb:
            deadline = t0 + 180
            while time.monotonic() < deadline and not errors:
                if seen_a is None and _total(pa, plugin="core.relay",
                                             status="succeeded") >= EVENTS:
                    seen_a = time.monotonic()
                if seen_a is not None and _total(pb, plugin="echo",
                                                 status="succeeded") >= EVENTS:
                    seen_b = time.monotonic()
                    break
                # The rates come from the job records, so coarse polling loses no precision
                # and keeps the poller from competing with the gateways for CPU.
                time.sleep(0.25)
        for t in threads:
            t.join()
        assert not errors, errors[:5]
        assert seen_a is not None and seen_b is not None, "relay did not finish within 180 s"
        relayed = _rows(a, "SELECT status, count(*), max(attempt), max(completed_at) "
                           "FROM job_queue WHERE plugin = 'core.relay' GROUP BY status")
        received = _rows(b, "SELECT status, count(*), min(created_at), max(created_at), "
                            "max(completed_at) FROM job_queue GROUP BY status")
    assert [r[:2] for r in relayed] == [("succeeded", EVENTS)], relayed
    assert [r[:2] for r in received] == [("succeeded", EVENTS)], received
    retried = relayed[0][2] - 1
    relay_s = _ts(relayed[0][3]) - t0_wall
    posts_s = max(posted_at) - t0_wall
    b_first, b_last, b_done = (_ts(v) for v in received[0][2:5])
    report("relay_throughput", EVENTS / relay_s, "events/s", "n/a",
           f"{EVENTS} POST /pipeline/ship on A from {CLIENTS} clients, each relayed to B "
           f"(HMAC); first POST -> last core.relay completed_at {relay_s:.3f} s "
           f"(seen via GET /jobs after {seen_a - t0:.3f} s); max_workers 2 on each; "
           f"{'no retries' if retried == 0 else f'max attempt {retried + 1}'}")
    print(f"BENCH-DETAIL relay_throughput phases: all {EVENTS} POSTs answered after "
          f"{posts_s:.3f} s ({EVENTS / posts_s:.0f}/s); B enqueued its echo jobs from "
          f"{b_first - t0_wall:.3f} s to {b_last - t0_wall:.3f} s; B's last echo job completed "
          f"after {b_done - t0_wall:.3f} s ({EVENTS / (b_done - t0_wall):.1f} events/s end to "
          f"end, seen after {seen_b - t0:.3f} s)", flush=True)


def test_relay_hop_latency(tmp_path: Path) -> None:
    with _receiver(tmp_path / "b") as b, _sender(tmp_path / "a", b.port) as a:
        hops: list[float] = []
        relay_runs: list[float] = []
        with httpx.Client(base_url=a.url, headers=a.headers, timeout=30) as ca, \
                httpx.Client(base_url=b.url, headers=b.headers, timeout=30) as cb:
            for n in range(WARMUP + HOPS):
                resp = ca.post("/pipeline/ship", json={"payload": {"n": n}})
                assert resp.status_code in (200, 202), resp.text
                job = _wait_job(ca, resp.json()["job_id"])
                assert job["attempt"] == 1, job
                accepted = job["result"]["relay"]["accepted"]
                received = cb.get(f"/job/{accepted['job_id']}").json()
                assert received["submitted_by"] == "relay:gw-a", received
                if n < WARMUP:
                    continue
                hops.append(_ts(received["created_at"]) - _ts(job["started_at"]))
                relay_runs.append(_ts(job["completed_at"]) - _ts(job["started_at"]))
        sends = _send_latencies(b.port)
    clients = _client_setup_latencies()
    ms = 1000.0
    h50, h95 = percentile(hops, 50) * ms, percentile(hops, 95) * ms
    r50, r95 = percentile(relay_runs, 50) * ms, percentile(relay_runs, 95) * ms
    s50, s95 = percentile(sends, 50) * ms, percentile(sends, 95) * ms
    report("relay_hop_latency_p50", h50, "ms", "n/a",
           f"p95 {h95:.3f} ms, n={HOPS} sequential events; A core.relay started_at -> "
           f"B job created_at")
    report("relay_hop_latency_p95", h95, "ms", "n/a", f"max {max(hops) * ms:.3f} ms")
    report("relay_send_latency_p50", s50, "ms", "n/a",
           f"p95 {s95:.3f} ms, n={SENDS}; client-observed ductile.relay.sender.send of one "
           f"HMAC envelope to B's ingress (pooled connection, as the step has)")
    report("relay_send_latency_p95", s95, "ms", "n/a", f"max {max(sends) * ms:.3f} ms")
    print(f"BENCH-DETAIL relay_hop: core.relay started_at -> completed_at (sign, POST, 202, "
          f"ledger) median {median(relay_runs) * ms:.3f} ms, p50 {r50:.3f} ms, "
          f"p95 {r95:.3f} ms", flush=True)
    print(f"BENCH-DETAIL relay_send: what the pool saves per send: opening and closing one "
          f"httpx.AsyncClient (no request) median {median(clients) * ms:.3f} ms, "
          f"n={len(clients)}", flush=True)


def _send_latencies(port: int) -> list[float]:
    """Seconds per `send` of a fresh envelope (distinct origin event ids) to B, one at a time."""
    target = Target(name="gw-b", url=f"http://127.0.0.1:{port}", path=INGRESS_PATH,
                    mode="hmac", key=SECRET.encode(), key_id="", timeout=10.0, sender="gw-a")

    async def main() -> list[float]:
        out: list[float] = []
        clients = Clients()
        for i in range(WARMUP + SENDS):
            body = build_envelope("backup.ready", {"n": i},
                                  origin={"instance": "gw-a", "event_id": f"bench-send-{i}"})
            start = time.perf_counter()
            accepted = await send(target, body, now=datetime.now(timezone.utc),
                                  clients=clients)
            elapsed = time.perf_counter() - start
            assert accepted["status"] == "accepted", accepted
            if i >= WARMUP:
                out.append(elapsed)
        await clients.aclose()
        return out

    return trio.run(main)


def _client_setup_latencies(n: int = 50) -> list[float]:
    """Seconds to open and close one `httpx.AsyncClient` (no request made): what `send` paid
    per delivery before the step's connections were pooled."""

    async def main() -> list[float]:
        out: list[float] = []
        for _ in range(n):
            start = time.perf_counter()
            async with httpx.AsyncClient(timeout=10.0):
                pass
            out.append(time.perf_counter() - start)
        return out

    return trio.run(main)
