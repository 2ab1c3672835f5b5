"""Helpers for the fault suites (tests/test_faults_*.py): poll the real gateway, read its SQLite
file read-only after it exited, and check the invariants every crash must preserve."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from support.gateway import Gateway, run_cli

T = TypeVar("T")

TERMINAL = frozenset({"succeeded", "failed", "timed_out", "dead", "skipped", "cancelled"})
RECOVERED = "recovered after crash"


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             interval: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def db_path(config_dir: Path) -> Path:
    """write_config puts the database at ./data/state.db."""
    return Path(config_dir) / "data" / "state.db"


def connect_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def integrity(path: Path) -> str:
    conn = connect_ro(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def status_total(gw: Gateway, status: str) -> int:
    resp = gw.get(f"/jobs?status={status}&limit=1")
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total"])


def outstanding(gw: Gateway) -> int:
    """Queued plus running jobs, as the API reports them."""
    return status_total(gw, "queued") + status_total(gw, "running")


def wait_drained(gw: Gateway, timeout: float) -> None:
    """Until no job is queued or running (asked twice in a row, so a retry in flight between
    the two queries cannot fool us)."""
    def drained() -> bool:
        return outstanding(gw) == 0 and outstanding(gw) == 0
    wait_for(drained, timeout, "the queue to drain", interval=0.1)


def statuses(path: Path) -> dict[str, str]:
    conn = connect_ro(path)
    try:
        return {r["id"]: r["status"] for r in conn.execute("SELECT id, status FROM job_queue")}
    finally:
        conn.close()


def inspect_job(config_dir: Path, job_id: str) -> dict[str, Any]:
    """`ductile job inspect <id> --json` (the CLI reads the database read-only)."""
    result = run_cli("job", "inspect", job_id, "--config", str(config_dir), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def proc_state(pid: int) -> str | None:
    """The /proc state letter of `pid` (None when it no longer exists)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return None


def alive(pids: Iterable[int]) -> list[int]:
    """The pids that still run (not gone, not a zombie waiting for a reaper that is not us:
    this container's PID 1 does not reap)."""
    return [pid for pid in pids if proc_state(pid) not in (None, "Z", "X")]


def check_queue_invariants(path: Path, acked: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Assert what every crash, stop and restart must preserve; return the jobs by id.

    - every acknowledged job exists and every job is terminal: succeeded, or dead only with
      its attempts used up;
    - at most one job_log row per (job, attempt) and at most one `succeeded` transition;
    - the attempt counter equals the number of job_attempts rows, numbered 1..attempt
      (a job dead by recovery is one past its last real attempt);
    - the transitions chain (each from_status is the previous to_status) and end in the
      job's status;
    - a succeeded job has exactly one succeeded job_log row, for its last attempt.
    """
    conn = connect_ro(path)
    try:
        jobs = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM job_queue")}
        attempts: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for r in conn.execute("SELECT * FROM job_attempts ORDER BY job_id, attempt"):
            attempts[r["job_id"]].append(r)
        transitions: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for r in conn.execute("SELECT * FROM job_transitions ORDER BY id"):
            transitions[r["job_id"]].append(r)
        logs: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for r in conn.execute("SELECT * FROM job_log ORDER BY job_id, attempt"):
            logs[r["job_id"]].append(r)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()

    missing = [job_id for job_id in acked if job_id not in jobs]
    assert not missing, f"{len(missing)} acknowledged jobs lost, e.g. {missing[:3]}"
    problems: list[str] = []
    for job_id, job in jobs.items():
        status, attempt, limit = job["status"], job["attempt"], job["max_attempts"]
        numbers = [a["attempt"] for a in attempts[job_id]]
        if status not in TERMINAL:
            problems.append(f"{job_id}: not terminal ({status})")
        elif status == "dead":
            if attempt <= limit:
                problems.append(f"{job_id}: dead at attempt {attempt} of {limit}")
            if numbers != list(range(1, attempt)):
                problems.append(f"{job_id}: dead with attempt rows {numbers} (attempt {attempt})")
        elif status != "succeeded":
            problems.append(f"{job_id}: {status}: {job['last_error']}")
        elif numbers != list(range(1, attempt + 1)):
            problems.append(f"{job_id}: attempt {attempt} but attempt rows {numbers}")
        per_attempt = Counter(r["attempt"] for r in logs[job_id])
        doubled = [a for a, n in per_attempt.items() if n > 1]
        if doubled:
            problems.append(f"{job_id}: two job_log rows for attempt(s) {doubled}")
        chain = transitions[job_id]
        tos = [t["to_status"] for t in chain]
        if tos.count("succeeded") > 1:
            problems.append(f"{job_id}: succeeded {tos.count('succeeded')} times: {tos}")
        froms = [t["from_status"] for t in chain]
        if not chain or froms[0] is not None or froms[1:] != tos[:-1] or tos[-1] != status:
            problems.append(f"{job_id}: broken transition chain {list(zip(froms, tos))}")
        if status == "succeeded":
            wins = [r for r in logs[job_id] if r["status"] == "succeeded"]
            if len(wins) != 1 or wins[0]["attempt"] != attempt:
                problems.append(f"{job_id}: succeeded log rows {[(r['attempt']) for r in wins]}"
                                f" for attempt {attempt}")
        job["attempt_rows"] = attempts[job_id]
        job["transitions"] = chain
        job["logs"] = logs[job_id]
    assert not problems, f"{len(problems)} broken jobs:\n" + "\n".join(problems[:20])
    return jobs


def recovered(job: dict[str, Any]) -> bool:
    """True when crash recovery re-queued (or buried) this job at some boot: a transition out
    of `running` whose reason mentions recovery."""
    return any(t["from_status"] == "running" and "recover" in (t["reason"] or "").lower()
               for t in job["transitions"])
