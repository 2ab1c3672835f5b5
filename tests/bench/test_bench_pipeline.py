"""Pipeline routing overhead: what a 10-step pipeline of echo steps costs beyond its plugins.

Per run of the synchronous pipeline, the overhead is the run's wall time in the ledger (the
first job's created_at to the last job's completed_at) minus the time spent inside plugin
attempts (job_attempts.duration_ms, measured around the spawn), divided by the number of steps.
That is everything the core adds per hop: recording the response, routing (condition-free
here), writing the successor and its context in the completion's transaction, claiming it,
building its request. The goal is <= 5 ms p50 per hop.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path

import httpx

from support.bench import BenchGateway, median, percentile, report

STEPS = 10
RUNS = 40
WARMUP = 3


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_pipeline_hop_overhead(tmp_path: Path) -> None:
    pipeline = {"name": "ten", "on": "ten.start", "execution_mode": "synchronous",
                "timeout": "60s",
                "steps": [{"id": f"s{i}", "uses": "echo"} for i in range(1, STEPS + 1)]}
    with BenchGateway.fresh(tmp_path / "cfg", service={"max_workers": 2},
                            extra={"pipelines": [pipeline]}) as gw:
        roots: list[str] = []
        client_ms: list[float] = []
        with httpx.Client(base_url=gw.url, headers=gw.headers, timeout=60) as c:
            for i in range(WARMUP + RUNS):
                start = time.monotonic()
                resp = c.post("/pipeline/ten", json={"payload": {"n": i}})
                elapsed = time.monotonic() - start
                assert resp.status_code == 200, resp.text
                body = resp.json()
                assert body["status"] == "succeeded" and len(body["tree"]) == STEPS, body
                if i >= WARMUP:
                    roots.append(body["job_id"])
                    client_ms.append(elapsed * 1000)
        db = sqlite3.connect(f"file:{gw.config_dir / 'data' / 'state.db'}?mode=ro", uri=True)
        try:
            per_hop: list[float] = []
            gaps: list[float] = []
            spawn: list[float] = []
            for root in roots:
                rows = db.execute(
                    "WITH RECURSIVE t(id) AS (SELECT ? UNION SELECT q.id FROM job_queue q "
                    "JOIN t ON q.parent_job_id = t.id) "
                    "SELECT q.created_at, q.started_at, q.completed_at, a.duration_ms "
                    "FROM t JOIN job_queue q ON q.id = t.id "
                    "JOIN job_attempts a ON a.job_id = q.id AND a.attempt = q.attempt "
                    "ORDER BY q.created_at", (root,)).fetchall()
                assert len(rows) == STEPS
                wall = (_ts(rows[-1][2]) - _ts(rows[0][0])) * 1000
                plugin = sum(r[3] for r in rows)
                per_hop.append((wall - plugin) / STEPS)
                spawn.extend(r[3] for r in rows)
                gaps.extend((_ts(b[1]) - _ts(a[2])) * 1000 for a, b in zip(rows, rows[1:]))
        finally:
            db.close()
    p50, p95 = percentile(per_hop, 50), percentile(per_hop, 95)
    report("pipeline_hop_overhead_p50", p50, "ms", "<= 5 ms",
           f"p95 {p95:.3f} ms; {RUNS} runs of a {STEPS}-step echo pipeline; echo spawn p50 "
           f"{median(spawn):.1f} ms; run via POST /pipeline p50 "
           f"{percentile(client_ms, 50):.1f} ms")
    print(f"BENCH-DETAIL predecessor completed_at -> successor started_at p50 "
          f"{percentile(gaps, 50):.3f} ms (the successor is claimed in the completion's "
          f"transaction)", flush=True)
    assert p50 < 50, "routing overhead is an order of magnitude over its goal"
