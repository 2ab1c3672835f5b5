"""Job-path benchmarks: async throughput and sync-run overhead, each against a bare spawn loop of
the same bundled echo plugin (ductile.plugin.spawn.spawn_plugin, no queue, no HTTP)."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import trio

from support.bench import ECHO_RUN, BenchGateway, median, percentile, report
from ductile.plugin.protocol import build_request
from ductile.plugin.spawn import child_env, spawn_plugin

JOBS = 500
WORKERS = 2
CLIENTS = 4
SYNC_RUNS = 200
WARMUP = 5


def _echo_request() -> bytes:
    return build_request(
        job_id=str(uuid.uuid4()), command="poll", config={"message": "hi"}, state={},
        payload={}, context={"ductile_plugin": "echo"}, event=None,
        deadline_at=datetime.now(timezone.utc).astimezone() + timedelta(seconds=60),
    )


async def _bare_spawn(env: dict[str, str]) -> float:
    start = time.monotonic()
    result = await spawn_plugin(str(ECHO_RUN), _echo_request(), timeout=60, env=env)
    elapsed = time.monotonic() - start
    assert result.exit_code == 0 and b'"status": "ok"' in result.stdout, result
    return elapsed


def bare_throughput(n: int, concurrency: int) -> float:
    """Jobs/s of `n` echo spawns, `concurrency` at a time."""
    env = child_env()

    async def main() -> float:
        left = [n]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await _bare_spawn(env)

        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return n / (time.monotonic() - start)

    return trio.run(main)


def bare_latencies(n: int) -> list[float]:
    env = child_env()

    async def main() -> list[float]:
        for _ in range(WARMUP):
            await _bare_spawn(env)
        return [await _bare_spawn(env) for _ in range(n)]

    return trio.run(main)


def _parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_throughput(tmp_path: Path) -> None:
    # The machine may be shared: run the bare loop before and after the gateway and compare the
    # gateway with their mean, so a load change during the run shows up in the printed numbers.
    bare_before = bare_throughput(JOBS, WORKERS)
    with BenchGateway.fresh(tmp_path / "cfg", service={"max_workers": WORKERS}) as gw:
        errors: list[str] = []
        enqueue_done: list[float] = []

        def client(count: int) -> None:
            with httpx.Client(base_url=gw.url, headers=gw.headers, timeout=30) as c:
                for _ in range(count):
                    resp = c.post("/plugin/echo/poll", json={"payload": {}})
                    if resp.status_code != 202:
                        errors.append(f"{resp.status_code} {resp.text}")
            enqueue_done.append(time.time())

        per_client = [JOBS // CLIENTS + (1 if i < JOBS % CLIENTS else 0) for i in range(CLIENTS)]
        threads = [threading.Thread(target=client, args=(k,)) for k in per_client]
        t0_wall, t0 = time.time(), time.monotonic()
        for t in threads:
            t.start()
        observed_end = None
        with httpx.Client(base_url=gw.url, headers=gw.headers, timeout=30) as poller:
            deadline = t0 + 120
            while time.monotonic() < deadline:
                total = poller.get("/jobs", params={"status": "succeeded", "limit": 1}).json()
                if total["total"] >= JOBS:
                    observed_end = time.monotonic()
                    break
                if errors:
                    break
                # The rate comes from completed_at in the database, so coarse polling loses no
                # precision and keeps the poller from competing with the plugins for CPU.
                time.sleep(0.25)
        for t in threads:
            t.join()
        assert not errors, errors[:5]
        assert observed_end is not None, "jobs did not all succeed within 120 s"
        db = sqlite3.connect(f"file:{gw.config_dir / 'data' / 'state.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT status, count(*), max(attempt) FROM job_queue "
                              "GROUP BY status").fetchall()
            done_at = sorted(_parse_ts(r[0]) for r in
                             db.execute("SELECT completed_at FROM job_queue"))
        finally:
            db.close()
    assert rows == [("succeeded", JOBS, 1)], rows
    bare_after = bare_throughput(JOBS, WORKERS)
    gateway_s = done_at[-1] - t0_wall
    gateway_rate = JOBS / gateway_s
    enqueued_at = max(enqueue_done)
    during = sum(1 for d in done_at if d <= enqueued_at)
    drain_rate = (JOBS - during) / (done_at[-1] - enqueued_at)
    bare_rate = (bare_before + bare_after) / 2
    report("throughput_gateway", gateway_rate, "jobs/s", "n/a",
           f"{JOBS} echo jobs, max_workers {WORKERS}, {CLIENTS} enqueue clients; first enqueue "
           f"-> last completed_at {gateway_s:.3f} s (seen via GET /jobs after "
           f"{observed_end - t0:.3f} s)")
    enqueue_s = enqueued_at - t0_wall
    print(f"BENCH-DETAIL throughput phases: all {JOBS} enqueued after {enqueue_s:.3f} s "
          f"({JOBS / enqueue_s:.0f} enqueues/s), {during} jobs completed meanwhile "
          f"({during / enqueue_s:.1f} jobs/s); then {JOBS - during} jobs drained at "
          f"{drain_rate:.1f} jobs/s", flush=True)
    report("throughput_bare_spawn", bare_rate, "jobs/s", "n/a",
           f"{JOBS} spawn_plugin calls of echo/run, concurrency {WORKERS}; before "
           f"{bare_before:.1f}, after {bare_after:.1f}")
    report("throughput_ratio", 100 * gateway_rate / bare_rate, "%", ">= 70%",
           f"drain phase alone {100 * drain_rate / bare_rate:.1f}%")


def test_sync_overhead(tmp_path: Path) -> None:
    body = {"payload": {}, "sync": True, "command": "poll"}
    with BenchGateway.fresh(tmp_path / "cfg") as gw:
        with httpx.Client(base_url=gw.url, headers=gw.headers, timeout=30) as c:
            parts: list[tuple[float, float, float]] = []

            def one() -> float:
                start = time.monotonic()
                resp = c.post("/plugins/echo/run", json=body)
                elapsed = time.monotonic() - start
                assert resp.status_code == 200, resp.text
                job = resp.json()
                assert job["status"] == "succeeded", resp.text
                created, began, done = (_parse_ts(job[k]) for k in
                                        ("created_at", "started_at", "completed_at"))
                # queue wait (created -> claimed), run (claimed -> completed), rest = HTTP etc.
                parts.append((began - created, done - began, elapsed - (done - created)))
                return elapsed

            for _ in range(WARMUP):
                one()
            del parts[:]
            sync = [one() for _ in range(SYNC_RUNS)]
    bare = bare_latencies(SYNC_RUNS)
    ms = 1000.0
    s50, s95 = percentile(sync, 50) * ms, percentile(sync, 95) * ms
    b50, b95 = percentile(bare, 50) * ms, percentile(bare, 95) * ms
    report("sync_run_latency_p50", s50, "ms", "n/a", f"p95 {s95:.3f} ms, n={SYNC_RUNS}")
    report("bare_spawn_latency_p50", b50, "ms", "n/a", f"p95 {b95:.3f} ms, n={SYNC_RUNS}")
    report("sync_overhead_p50", s50 - b50, "ms", "<= 5 ms", f"p95 overhead {s95 - b95:.3f} ms")
    wait, run, rest = (median([p[i] for p in parts]) * ms for i in range(3))
    print(f"BENCH-DETAIL sync_run medians: created->started {wait:.3f} ms, "
          f"started->completed {run:.3f} ms (bare spawn p50 {b50:.3f} ms), "
          f"HTTP+enqueue+response (client latency - created->completed) {rest:.3f} ms",
          flush=True)
