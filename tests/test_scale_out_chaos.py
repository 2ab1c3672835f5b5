"""Three real gateways on one real PostgreSQL, one SIGKILLed and one frozen mid-run.

The cluster's promises (docs/operator.md, store/pg/cluster.py) checked end to end, from the
database and from the plugins' own record of what ran, never from the gateways' word:

- every accepted job reaches a terminal status, though the node that accepted or claimed it
  died or was fenced;
- a plugin capped cluster-wide (`parallelism: 3`) never has more than 3 jobs `running`
  (sampled every ~10 ms from the database) nor more than 3 runs in progress at once (from the
  runs' own start/end times), except runs of a node life that was already declared dead;
- a dedupe key repeated across nodes makes exactly one job, every other answer naming it as
  deduplicated, and no two jobs of one key are ever outstanding together;
- at least once: every succeeded job ran to the end at least once; a job ran more than once
  only when a node that was running it died and a peer recovered it.

Timeline: three nodes (gw-a, gw-b, gw-c; heartbeat 500 ms, dead after 2 s) boot on one fresh
database; 2,000 run requests go to their APIs, a third each, while all three dispatch; then gw-a
is SIGKILLed while it runs jobs, and gw-b is SIGSTOPped for 5 s while it runs jobs, at the
worst moment: inside a write transaction that holds its own node row FOR SHARE (a claim or an
outcome; support/pgnodes.py `freeze_mid_write`). gw-c must declare both dead within dead_after
plus a heartbeat and recover their running jobs (checked 4 s into the freeze). On SIGCONT gw-b
finds its life fenced and the process exits 1 (NodeFenced ends the supervisor: "component
failed"); the test then starts gw-b again, as systemd would, and it joins as incarnation 2.
gw-a stays down.

The second test: a sync run and a cancel asked on one node for a job that a peer runs.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.gateway import TOKEN, Gateway
from support.plugins import make_plugin
from support.pgnodes import (
    TERMINAL,
    Run,
    RunningSampler,
    connect,
    freeze_mid_write,
    max_overlap,
    node_config,
    read_runs,
    recording_plugin,
    wait_for,
)
from support.postgres import PgCluster

NODES = ("gw-a", "gw-b", "gw-c")
CAPPED, FREE = "capped", "free"
CAP = 3
PER_NODE = (667, 667, 666)  # 2,000 run requests
REPEATED_KEYS = 100  # each sent once to every node, at about the same moment
FREEZE_S = 5.0
#: EXIT_COMPONENT_FAILED (boot/supervisor.py): how a fenced node's process ends.
FENCED_EXIT = 1


@dataclass(frozen=True)
class Request:
    node: int
    plugin: str
    key: str | None


@dataclass(frozen=True)
class Answer:
    request: Request
    status_code: int
    job_id: str
    deduplicated: bool


@pytest.fixture
def shared_db(pg_cluster: PgCluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    try:
        yield name
    finally:
        pg_cluster.drop_database(name)


def plan() -> list[list[Request]]:
    """Each node's run requests, in sending order: repeated keys at the same positions in
    every node's list (so the three copies race), unique keys, and no key."""
    lists: list[list[Request]] = []
    for node, count in enumerate(PER_NODE):
        mine = []
        for j in range(count):
            if j % 6 == 0 and j // 6 < REPEATED_KEYS:
                k = j // 6
                mine.append(Request(node, CAPPED if k % 2 else FREE, f"r-{k}"))
            elif j % 3 == 1:
                mine.append(Request(node, CAPPED if j % 5 < 2 else FREE, f"u-{node}-{j}"))
            else:
                mine.append(Request(node, CAPPED if j % 5 < 2 else FREE, None))
        lists.append(mine)
    return lists


def send_all(gateways: list[Gateway], lists: list[list[Request]]) -> list[Answer]:
    """Two client threads per node, each sending every other request of that node's list."""
    answers: list[Answer] = []
    failures: list[str] = []
    lock = threading.Lock()

    def sender(gw: Gateway, requests: list[Request]) -> None:
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=30.0) as client:
            for req in requests:
                body: dict[str, Any] = {"payload": {"n": 1}}
                if req.key is not None:
                    body["dedupe_key"] = req.key
                resp = client.post(f"/plugins/{req.plugin}/run", json=body)
                data = resp.json()
                with lock:
                    if resp.status_code not in (200, 202) or "job_id" not in data:
                        failures.append(f"{gw.url} {req}: {resp.status_code} {resp.text}")
                        continue
                    answers.append(Answer(req, resp.status_code, data["job_id"],
                                          bool(data.get("deduplicated"))))

    threads = [threading.Thread(target=sender, args=(gw, mine[half::2]))
               for gw, mine in zip(gateways, lists, strict=True) for half in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    return answers


def running_on(conn: Any, node_id: str) -> int:
    row = conn.execute("SELECT count(*) AS n FROM job_queue WHERE status = 'running' "
                       "AND claimed_by = %s", (node_id,)).fetchone()
    return int(row["n"])


def test_three_gateways_keep_their_guarantees_through_kill_and_freeze(
        tmp_path: Path, pg_cluster: PgCluster, shared_db: str) -> None:
    started = time.monotonic()
    roots = tmp_path / "plugins"
    record = tmp_path / "runs.log"
    recording_plugin(roots, CAPPED, record, sleep_s=0.03)
    recording_plugin(roots, FREE, record, sleep_s=0.03)
    gateways = [
        node_config(tmp_path / node, pg_cluster, shared_db, node,
                    plugin_roots=[str(roots)], service={"max_workers": 4},
                    plugins={CAPPED: {"enabled": True, "parallelism": CAP,
                                      "config": {"node": node}},
                             FREE: {"enabled": True, "config": {"node": node}}})
        for node in NODES
    ]
    gw_a, gw_b, gw_c = gateways
    db = connect(pg_cluster, shared_db)
    sampler = RunningSampler(pg_cluster, shared_db, CAPPED)
    events: list[str] = []
    # Broken promises that do not stop the run: asserted at the end, after every other check.
    findings: list[str] = []
    try:
        for gw in gateways:
            gw.start(wait=False)
        for gw in gateways:
            gw.wait_healthy(30)
        sampler.start()

        answers = send_all(gateways, plan())
        events.append(f"{len(answers)} run requests answered in "
                      f"{time.monotonic() - started:.1f}s since the start")

        # gw-a dies with jobs in its hands.
        wait_for(lambda: running_on(db, "gw-a"), 10, "gw-a to be running a job")
        pid_a1 = gw_a.proc.pid  # type: ignore[union-attr]
        gw_a.signal(signal.SIGKILL)
        gw_a.wait_exit(10)
        events.append("gw-a SIGKILLed")

        # gw-b freezes with jobs in its hands, longer than dead_after, at the worst moment:
        # inside a write that holds its node row FOR SHARE.
        wait_for(lambda: running_on(db, "gw-b"), 10, "gw-b to be running a job", every=0.005)
        pid_b1 = gw_b.proc.pid  # type: ignore[union-attr]
        holder = freeze_mid_write(gw_b, db, pg_cluster.port)
        events.append(f"gw-b frozen while its backend {holder} holds its node row FOR SHARE")
        time.sleep(FREEZE_S - 1)
        # Frozen for longer than dead_after + a heartbeat: gw-c must have declared it dead.
        during = _freeze_snapshot(db)
        time.sleep(1)
        gw_b.signal(signal.SIGCONT)
        events.append(f"gw-b SIGSTOPped for {FREEZE_S:g}s, then SIGCONT; "
                      f"{FREEZE_S - 1:g}s into the freeze: {during}")
        if during["gw-b"] != "dead":
            findings.append(f"gw-b frozen {FREEZE_S - 1:g}s (dead_after 2s) is still "
                            f"{during['gw-b']!r}, its jobs not recovered: {during}")
        if during["gw-a"] != "dead":
            findings.append(f"gw-a, SIGKILLed more than {FREEZE_S - 1:g}s ago (dead_after 2s), "
                            f"is still {during['gw-a']!r}, its jobs not recovered")

        # Declared dead by gw-c, gw-b must find itself fenced and end.
        code = gw_b.wait_exit(15)
        failed = [str(r.get("error")) for r in gw_b.log_records()
                  if r.get("msg") == "component failed"]
        events.append(f"gw-b exited {code}: {failed}")
        assert code == FENCED_EXIT, gw_b.stderr()[-2000:]
        assert failed, gw_b.stdout()[-3000:]
        if "is fenced" not in failed[0] or "TypeError" in failed[0]:
            findings.append(f"gw-b's fenced exit is not reported as NodeFenced: {failed[0]}")

        # As systemd would: start it again; it joins as a new incarnation (its first life's
        # log kept beside it for a failure's post-mortem).
        (tmp_path / "gw-b" / "first-life.stdout").write_text(gw_b.stdout())
        gw_b.start(wait=True, timeout=30)
        events.append("gw-b started again")

        job_ids = {a.job_id for a in answers}
        wait_for(lambda: _all_terminal(db, job_ids), 60, "every accepted job to end",
                 every=0.2)
        events.append(f"every job terminal {time.monotonic() - started:.1f}s since the start")
        sampler.stop()
        for gw in (gw_b, gw_c):
            assert gw.stop() == 0, gw.stderr()[-2000:]
        runs = read_runs(record)

        _check_terminal(db, job_ids)
        dead_pids = {pid_a1, pid_b1}  # the gateway processes of the lives declared dead
        _check_cap(db, sampler, runs, dead_pids)
        _check_dedupe(db, answers)
        _check_at_least_once(db, job_ids, runs, dead_pids)
        _check_nodes(db)
        events.append(f"sampled {sampler.samples} times, peak {sampler.peak} running "
                      f"{CAPPED} jobs; histogram {dict(sorted(sampler.histogram.items()))}")
        assert not findings, findings
    finally:
        print("\n".join(events))
        sampler.halt()
        for gw in gateways:
            if gw.proc is not None and gw.proc.poll() is None:
                gw.signal(signal.SIGCONT)
                gw.stop()
        db.close()


def _freeze_snapshot(db: Any) -> dict[str, Any]:
    """The nodes' statuses, the sessions idle inside a transaction, and the lock waits."""
    nodes = {r["node_id"]: r["status"] for r in db.execute(
        "SELECT node_id, status FROM cluster_nodes").fetchall()}
    idle = db.execute(
        "SELECT pid, left(query, 80) AS query, round(EXTRACT(EPOCH FROM now() - state_change)"
        "::numeric, 1)::float8 AS idle_s FROM pg_stat_activity "
        "WHERE datname = current_database() AND state = 'idle in transaction'").fetchall()
    waits = db.execute(
        "SELECT pid, pg_blocking_pids(pid) AS blocked_by, left(query, 80) AS query "
        "FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'").fetchall()
    return {**nodes, "idle_in_transaction": idle, "lock_waits": waits}


def _all_terminal(db: Any, job_ids: set[str]) -> bool:
    rows = db.execute("SELECT count(*) AS n FROM job_queue WHERE status = ANY(%s) "
                      "AND id = ANY(%s)", (list(TERMINAL), list(job_ids))).fetchone()
    return int(rows["n"]) == len(job_ids)


def _check_terminal(db: Any, job_ids: set[str]) -> None:
    """None lost: every accepted job is in the database and ended; nothing else was made."""
    rows = db.execute("SELECT id, status, last_error FROM job_queue").fetchall()
    assert {r["id"] for r in rows} == job_ids
    statuses = Counter(r["status"] for r in rows)
    # Nothing here fails on its own: a job that did not succeed was lost by the cluster.
    assert statuses == {"succeeded": len(job_ids)}, (
        statuses, [r for r in rows if r["status"] != "succeeded"][:5])


def _check_cap(db: Any, sampler: RunningSampler, runs: list[Run], dead_pids: set[int]) -> None:
    assert sampler.samples > 300, sampler.samples
    # The store's view: never above the cap, and the cap was reached (else nothing was tested).
    assert sampler.peak == CAP, dict(sampler.histogram)
    # The plugins' view: runs really in progress together. A run of a life already declared
    # dead may still be finishing when a peer re-runs its job (the documented window); every
    # other run started under the cap.
    capped = {r["id"] for r in db.execute("SELECT id FROM job_queue WHERE plugin = %s",
                                          (CAPPED,)).fetchall()}
    live_runs = [r for r in runs if r.job_id in capped and r.gateway_pid not in dead_pids]
    assert live_runs
    assert max_overlap(live_runs) <= CAP


def _check_dedupe(db: Any, answers: list[Answer]) -> None:
    rows = db.execute("SELECT id, plugin, command, dedupe_key, created_at, completed_at "
                      "FROM job_queue WHERE dedupe_key IS NOT NULL").fetchall()
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_key[(r["plugin"], r["command"], r["dedupe_key"])].append(r)
    # No two jobs of one target and key were outstanding together (created..completed).
    for jobs in by_key.values():
        jobs.sort(key=lambda r: r["created_at"])
        for earlier, later in zip(jobs, jobs[1:]):
            assert earlier["completed_at"] <= later["created_at"], (earlier, later)
    # With the default dedupe_ttl (24 h) a key makes one job in this run, and every answer for
    # it names that job: one accepted (202), every other copy deduplicated (200).
    answered: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        if a.request.key is not None:
            answered[a.request.key].append(a)
    assert len(by_key) == len(answered)
    for (_, _, key), jobs in by_key.items():
        assert len(jobs) == 1, jobs
        got = answered[key]
        assert {a.job_id for a in got} == {jobs[0]["id"]}, (key, got)
        assert sorted((a.status_code, a.deduplicated) for a in got) == (
            [(200, True)] * (len(got) - 1) + [(202, False)]), (key, got)
    repeated = [key for key, got in answered.items() if len(got) > 1]
    assert len(repeated) == REPEATED_KEYS
    assert all(len({a.request.node for a in answered[k]}) == 3 for k in repeated)


def _check_at_least_once(db: Any, job_ids: set[str], runs: list[Run],
                         dead_pids: set[int]) -> None:
    # A run without a job id got a truncated request: only a SIGKILLed gateway writes one.
    unread = [r for r in runs if not r.job_id]
    assert all(r.gateway_pid in dead_pids for r in unread), unread
    runs = [r for r in runs if r.job_id]
    count = Counter(r.job_id for r in runs)
    assert set(count) <= job_ids, set(count) - job_ids  # no run of a job never accepted
    assert not job_ids - set(count), sorted(job_ids - set(count))[:5]  # each ran to the end
    recovered = {r["job_id"] for r in db.execute(
        "SELECT DISTINCT job_id FROM job_transitions WHERE reason = 'recovered after crash'"
    ).fetchall()}
    by_job: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_job[r.job_id].append(r)
    twice = {job for job, n in count.items() if n > 1}
    # Ran more than once only when a node died while running it: a peer recovered it, and at
    # least one of its runs was that dead life's.
    assert twice <= recovered, sorted(twice - recovered)[:5]
    for job in twice:
        assert any(r.gateway_pid in dead_pids for r in by_job[job]), by_job[job]
    # The recoveries this test exists for happened, and each names the dead node.
    dead_attempts = db.execute(
        "SELECT error FROM job_attempts WHERE outcome = 'crashed'").fetchall()
    named = {node for node in ("gw-a", "gw-b")
             if any(f"node {node} (incarnation 1)" in (r["error"] or "") for r in dead_attempts)}
    assert named == {"gw-a", "gw-b"}, dead_attempts[:5]


def _check_nodes(db: Any) -> None:
    nodes = {r["node_id"]: r for r in db.execute(
        "SELECT node_id, incarnation, status FROM cluster_nodes").fetchall()}
    assert (nodes["gw-a"]["incarnation"], nodes["gw-a"]["status"]) == (1, "dead")
    assert (nodes["gw-b"]["incarnation"], nodes["gw-b"]["status"]) == (2, "stopped")
    assert (nodes["gw-c"]["incarnation"], nodes["gw-c"]["status"]) == (1, "stopped")


def test_sync_run_and_cancel_on_one_node_reach_a_job_a_peer_runs(
        tmp_path: Path, pg_cluster: PgCluster, shared_db: str) -> None:
    """gw-a's one worker is busy, so gw-b claims and runs what gw-a's API enqueues. Asked on
    gw-a: a `sync: true` run must answer with the outcome as soon as the job ends (not at
    api.max_sync_timeout), and a cancel must stop the job gw-b runs."""
    roots = tmp_path / "plugins"
    recording_plugin(roots, "quick", tmp_path / "runs.log", sleep_s=0.01)
    make_plugin(roots, "blocker",
                "cat >/dev/null\nsleep 60\nprintf '%s' '{\"status\":\"ok\",\"result\":\"-\"}'")
    a, b = (node_config(tmp_path / node, pg_cluster, shared_db, node, plugin_roots=[str(roots)],
                        service={"max_workers": 1, "shutdown_grace": "1s"},
                        api={"max_sync_timeout": "8s"},
                        plugins={"quick": {"enabled": True, "config": {"node": node}},
                                 "blocker": {"enabled": True}})
            for node in ("gw-a", "gw-b"))
    db = connect(pg_cluster, shared_db)
    findings: list[str] = []

    def claimed_by(job_id: str) -> Any:
        return db.execute("SELECT status, claimed_by FROM job_queue WHERE id = %s",
                          (job_id,)).fetchone()

    try:
        a.start(timeout=30)
        held = a.post("/plugins/blocker/run", {}).json()["job_id"]
        wait_for(lambda: running_on(db, "gw-a"), 10, "gw-a to run the blocker")
        b.start(timeout=30)

        began = time.monotonic()
        answer = a.post("/plugins/quick/run", {"sync": True}, timeout=20)
        took = time.monotonic() - began
        quick = db.execute("SELECT id FROM job_queue WHERE plugin = 'quick'").fetchone()["id"]
        assert dict(claimed_by(quick)) == {"status": "succeeded", "claimed_by": "gw-b"}
        if not (answer.status_code == 200 and answer.json()["status"] == "succeeded"
                and took < 3):
            findings.append(f"sync run on gw-a of a job gw-b ran, answered after {took:.1f}s: "
                            f"{answer.status_code} {answer.text}")

        # A long job gw-b runs, cancelled through gw-a.
        long_id = a.post("/plugins/blocker/run", {}).json()["job_id"]
        wait_for(lambda: claimed_by(long_id)["status"] == "running", 10, "gw-b to run it")
        assert claimed_by(long_id)["claimed_by"] == "gw-b"
        cancel = a.post(f"/job/{long_id}/cancel", {}, timeout=40)
        ended = wait_for(lambda: claimed_by(long_id)["status"] != "running" or None, 5,
                         "the cancelled job to stop") if cancel.status_code < 300 else None
        if cancel.status_code >= 300 or ended is None:
            findings.append(f"cancel on gw-a of a job gw-b runs: {cancel.status_code} "
                            f"{cancel.text}; the job is {claimed_by(long_id)['status']}")
        assert claimed_by(held)["claimed_by"] == "gw-a"
    finally:
        for gw in (a, b):
            gw.stop()
        db.close()
    assert not findings, findings
