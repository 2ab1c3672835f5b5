"""The event hub's cost on the job path: the dispatcher's jobs/s with no GET /events subscriber
and with 10 reading every event (goal: within 10%)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from support.bench import BenchGateway, report

JOBS = 400
WORKERS = 2
SUBSCRIBERS = 10


def _cpu_seconds(pid: int) -> float:
    """The process's own user+system CPU time (its plugins' not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rate(tmp_path: Path, subscribers: int) -> tuple[float, int, float]:
    """(jobs/s from first enqueue to last completed_at, events the subscribers read, the
    gateway's own CPU milliseconds per job)."""
    with BenchGateway.fresh(tmp_path / f"cfg{subscribers}",
                            service={"max_workers": WORKERS}) as gw:
        counts = [0] * subscribers
        opened = threading.Barrier(subscribers + 1)

        def subscribe(i: int) -> None:
            with httpx.stream("GET", gw.url + "/events", headers=gw.headers,
                              timeout=httpx.Timeout(10.0, read=60.0)) as resp:
                assert resp.status_code == 200
                opened.wait()
                # Until the gateway stops, which ends every stream.
                # Raw bytes, counted without decoding: on two cores the readers share the
                # machine with the gateway, and should take as little of it as they can.
                tail = b""
                for chunk in resp.iter_raw():
                    data = tail + chunk
                    counts[i] += data.count(b"\nevent: ")
                    tail = data[-7:]  # shorter than the marker: never counted twice

        readers = [threading.Thread(target=subscribe, args=(i,), daemon=True)
                   for i in range(subscribers)]
        for reader in readers:
            reader.start()
        if subscribers:
            opened.wait(30)
        start = time.time()
        cpu_before = _cpu_seconds(gw.proc.pid)
        with httpx.Client(base_url=gw.url, headers=gw.headers, timeout=30) as client:
            for _ in range(JOBS):
                assert client.post("/plugin/echo/poll", json={"payload": {}}).status_code == 202
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                done = client.get("/jobs", params={"status": "succeeded", "limit": 1}).json()
                if done["total"] >= JOBS:
                    break
                time.sleep(0.25)
        cpu_ms = 1000 * (_cpu_seconds(gw.proc.pid) - cpu_before) / JOBS
        db = sqlite3.connect(f"file:{gw.config_dir / 'data' / 'state.db'}?mode=ro", uri=True)
        try:
            last = db.execute("SELECT max(completed_at), count(*) FROM job_queue "
                              "WHERE status = 'succeeded'").fetchone()
        finally:
            db.close()
    for reader in readers:
        reader.join(30)
    assert last[1] == JOBS, last
    finished = datetime.fromisoformat(str(last[0]).replace("Z", "+00:00")).timestamp()
    return JOBS / (finished - start), sum(counts), cpu_ms


def test_throughput_with_subscribers(tmp_path: Path) -> None:
    alone, _, alone_cpu = _rate(tmp_path, 0)
    watched, read, watched_cpu = _rate(tmp_path, SUBSCRIBERS)
    report("events_jobs_no_subscriber", alone, "jobs/s", "n/a",
           f"{JOBS} echo jobs, max_workers {WORKERS}")
    report("events_jobs_10_subscribers", watched, "jobs/s", "n/a",
           f"{SUBSCRIBERS} GET /events clients read {read} events in all")
    report("events_throughput_ratio", 100 * watched / alone, "%", ">= 90%")
    # On a 2-core machine the ten readers run beside the gateway and its plugins: the gateway's
    # own CPU per job tells what serving them costs it, apart from the cores they take.
    report("events_gateway_cpu_ratio", 100 * watched_cpu / alone_cpu, "%", "n/a",
           f"the gateway's own CPU per job: {alone_cpu:.2f} ms alone, {watched_cpu:.2f} ms "
           f"with {SUBSCRIBERS} subscribers")
    assert read >= SUBSCRIBERS * JOBS * 3  # every subscriber saw every job's three events
