"""Scale-out benchmarks: 1, 2 and 3 real gateways on one real PostgreSQL database.

- Throughput: 2,000 jobs of a trivial sh plugin, enqueued first, then drained. While they are
  enqueued (4 client threads, requests round-robin over the nodes' APIs) every worker of every
  node (`service.max_workers: 2`) is held by a `gate` job that waits for a file; creating the
  file starts the drain, and the rate is jobs / (that moment -> the last completed_at, read
  from the database). On this 2-core machine more nodes add no CPU, so the figure to show is
  that a cluster keeps its guarantees (every job succeeded, ran once, at attempt 1) while its
  throughput does not fall below one node's: the goal `>= 1.0x` of the one-node rate is
  printed, not asserted. The enqueue rate of each pass is printed beside it.
- Idle enqueue -> start latency across nodes: gw-a's only worker is held by a long job, so a
  job enqueued on gw-a can only be started by gw-b, woken by the queue's NOTIFY; one job at a
  time, created_at -> started_at from the database (both written on this machine's clock).
  The same figure for jobs enqueued on gw-b itself (woken in-process) is printed beside it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.bench import median, percentile, report
from support.gateway import TOKEN, Gateway
from support.pgnodes import connect, node_config, wait_for
from support.plugins import make_plugin
from support.postgres import PgCluster

JOBS = 2000
CLIENTS = 4
WORKERS = 2
LATENCY_RUNS = 100
PASSES = 3
OK = "printf '%s' '{\"status\":\"ok\",\"result\":\"done\"}'"
NOOP = f"cat >/dev/null\n{OK}"
BLOCKER = f"cat >/dev/null\nsleep 300\n{OK}"


@pytest.fixture
def fresh_db(pg_cluster: PgCluster) -> Iterator[Any]:
    """A factory of fresh databases, all dropped at the end."""
    made: list[str] = []

    def make() -> str:
        made.append(pg_cluster.create_database())
        return made[-1]

    try:
        yield make
    finally:
        for name in made:
            pg_cluster.drop_database(name)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _nodes(directory: Path, cluster: PgCluster, dbname: str, count: int,
           roots: Path, **service: Any) -> list[Gateway]:
    return [node_config(directory / f"gw-{i}", cluster, dbname, f"gw-{i}",
                        plugin_roots=[str(roots)],
                        service={"max_workers": WORKERS, **service},
                        plugins={"noop": {"enabled": True}, "blocker": {"enabled": True},
                                 "gate": {"enabled": True}})
            for i in range(1, count + 1)]


def _plugins(root: Path, gate: Path) -> Path:
    """noop; blocker (300 s); gate, which holds its worker until the file `gate` exists."""
    make_plugin(root, "noop", NOOP)
    make_plugin(root, "blocker", BLOCKER)
    make_plugin(root, "gate", f"cat >/dev/null\nwhile [ ! -e '{gate}' ]; do sleep 0.01; done\n"
                              f"{OK}")
    return root


def _enqueue(gateways: list[Gateway], plugin: str, count: int) -> None:
    """`count` jobs of `plugin` from CLIENTS threads, requests round-robin over the nodes."""
    errors: list[str] = []

    def client(index: int) -> None:
        clients = [httpx.Client(base_url=gw.url, timeout=30,
                                headers={"Authorization": f"Bearer {TOKEN}"})
                   for gw in gateways]
        try:
            for n in range(index, count, CLIENTS):
                resp = clients[n % len(gateways)].post(f"/plugins/{plugin}/run",
                                                       json={"payload": {}})
                if resp.status_code != 202:
                    errors.append(f"{resp.status_code} {resp.text}")
        finally:
            for c in clients:
                c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:5]


def _throughput(tmp: Path, cluster: PgCluster, dbname: str, count: int) -> dict[str, Any]:
    """One pass with `count` nodes: every worker of every node is held by a `gate` job while
    the JOBS noop jobs are enqueued; opening the gate starts the drain, timed from the
    opening to the last completed_at."""
    gate = tmp / "gate"
    roots = _plugins(tmp / "plugins", gate)
    gateways = _nodes(tmp, cluster, dbname, count, roots)
    db = connect(cluster, dbname)

    def count_of(sql: str) -> int:
        return int(db.execute(sql).fetchone()["n"])

    try:
        for gw in gateways:
            gw.start(wait=False)
        for gw in gateways:
            gw.wait_healthy(30)
        slots = WORKERS * count
        _enqueue(gateways, "gate", slots)
        wait_for(lambda: count_of("SELECT count(*) AS n FROM job_queue WHERE plugin = 'gate' "
                                  "AND status = 'running'") == slots, 30, "every worker held")
        began = time.monotonic()
        _enqueue(gateways, "noop", JOBS)
        enqueue_s = time.monotonic() - began
        assert count_of("SELECT count(*) AS n FROM job_queue WHERE plugin = 'noop' "
                        "AND status <> 'queued'") == 0
        gate.touch()
        opened = time.time()
        wait_for(lambda: count_of("SELECT count(*) AS n FROM job_queue WHERE plugin = 'noop' "
                                  "AND status IN ('succeeded', 'failed', 'dead', 'timed_out', "
                                  "'cancelled')") >= JOBS, 300, f"{JOBS} jobs to end",
                 every=0.25)
        rows = db.execute("SELECT status, attempt, claimed_by, completed_at FROM job_queue "
                          "WHERE plugin = 'noop'").fetchall()
        runs = count_of("SELECT count(*) AS n FROM job_attempts a JOIN job_queue q "
                        "ON q.id = a.job_id WHERE q.plugin = 'noop'")
        for gw in gateways:
            assert gw.stop() == 0, gw.stderr()[-2000:]
    finally:
        for gw in gateways:
            gw.stop()
        db.close()
    # The guarantees, with no fault injected: every job succeeded at its first attempt, one
    # attempt row each.
    assert Counter((r["status"], r["attempt"]) for r in rows) == {("succeeded", 1): JOBS}
    assert runs == JOBS
    last = max(_ts(r["completed_at"]) for r in rows)
    return {
        "rate": JOBS / (last - opened),
        "enqueue_rate": JOBS / enqueue_s,
        "claims": dict(sorted(Counter(r["claimed_by"] for r in rows).items())),
    }


def test_throughput_one_two_three_gateways(tmp_path: Path, pg_cluster: PgCluster,
                                           fresh_db: Any) -> None:
    # Interleaved passes (1, 2, 3, 1, 2, 3, ...) and the median per node count: on a shared
    # machine one pass is at the mercy of whoever else is running.
    passes: dict[int, list[dict[str, Any]]] = {1: [], 2: [], 3: []}
    for k in range(PASSES):
        for n in passes:
            load = os.getloadavg()[0]
            got = _throughput(tmp_path / f"p{k}n{n}", pg_cluster, fresh_db(), n)
            passes[n].append({**got, "load": load})
    rate = {n: median([p["rate"] for p in runs]) for n, runs in passes.items()}
    for n, runs in passes.items():
        report(f"scale_out_throughput_{n}_gateways", rate[n], "jobs/s", "n/a",
               f"median of {PASSES} passes {[round(p['rate']) for p in runs]}; {JOBS} sh jobs "
               f"enqueued first (every worker held meanwhile), then drained; max_workers "
               f"{WORKERS} per node; enqueue over {n} node APIs from {CLIENTS} clients "
               f"{median([p['enqueue_rate'] for p in runs]):.0f} jobs/s; claims (last pass) "
               f"{runs[-1]['claims']}; load average before each pass "
               f"{[round(p['load'], 1) for p in runs]}")
        if n > 1:
            report(f"scale_out_throughput_ratio_{n}_vs_1", rate[n] / rate[1], "x", ">= 1.0x",
                   "on 2 cores: the cluster's guarantees without losing one node's rate")


def _latencies(db: Any, gw: Gateway, runs: int) -> tuple[list[float], Counter[str]]:
    """Enqueue `runs` noop jobs on `gw`, one at a time, each waited for (from the database)
    before the next; their created_at -> started_at, and who claimed them."""
    out: list[float] = []
    claimed: Counter[str] = Counter()
    with httpx.Client(base_url=gw.url, timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for _ in range(runs):
            resp = client.post("/plugins/noop/run", json={"payload": {}})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["job_id"]

            def ended(job_id: str = job_id) -> Any:
                row = db.execute("SELECT status, created_at, started_at, claimed_by "
                                 "FROM job_queue WHERE id = %s", (job_id,)).fetchone()
                return row if row["status"] == "succeeded" else None

            row = wait_for(ended, 30, f"job {job_id}", every=0.005)
            out.append(_ts(row["started_at"]) - _ts(row["created_at"]))
            claimed[row["claimed_by"]] += 1
    return out, claimed


def test_idle_start_latency_across_nodes(tmp_path: Path, pg_cluster: PgCluster,
                                         fresh_db: Any) -> None:
    roots = _plugins(tmp_path / "plugins", tmp_path / "gate")
    dbname = fresh_db()
    # gw-a has one worker, held by a long job, so only gw-b can start what gw-a enqueues.
    a, b = (node_config(tmp_path / node, pg_cluster, dbname, node, plugin_roots=[str(roots)],
                        service={"max_workers": workers, "shutdown_grace": "1s"},
                        plugins={"noop": {"enabled": True}, "blocker": {"enabled": True}})
            for node, workers in (("gw-a", 1), ("gw-b", WORKERS)))
    db = connect(pg_cluster, dbname)
    try:
        a.start(timeout=30)
        assert a.post("/plugins/blocker/run", {}).status_code == 202
        wait_for(lambda: db.execute("SELECT 1 FROM job_queue WHERE plugin = 'blocker' "
                                    "AND status = 'running' AND claimed_by = 'gw-a'"
                                    ).fetchone(), 10, "gw-a to run the blocker")
        b.start(timeout=30)
        _latencies(db, a, 5)  # warm-up
        across, claimed = _latencies(db, a, LATENCY_RUNS)
        local, claimed_local = _latencies(db, b, LATENCY_RUNS)
    finally:
        for gw in (a, b):
            gw.stop()
        db.close()
    assert claimed == {"gw-b": LATENCY_RUNS}, claimed
    assert claimed_local == {"gw-b": LATENCY_RUNS}, claimed_local
    ms = 1000.0
    report("scale_out_start_latency_across_nodes_p50", median(across) * ms, "ms", "n/a",
           f"enqueued on gw-a (its one worker busy), started by gw-b woken by NOTIFY; "
           f"p95 {percentile(across, 95) * ms:.3f} ms, n={LATENCY_RUNS}; the same on gw-b "
           f"alone: p50 {median(local) * ms:.3f} ms, p95 {percentile(local, 95) * ms:.3f} ms")

