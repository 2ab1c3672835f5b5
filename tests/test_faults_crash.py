"""Crash and stop faults of the real gateway process under load (DESIGN §5, §6).

Each test runs `python -m ductile system start` on a temp config dir, loads it with jobs through
the HTTP API, kills or stops it mid-flight, boots it again on the same directory and then reads
the SQLite file read-only to check what at-least-once promises: nothing acknowledged is lost,
every job ends terminal, nothing succeeds twice, and every attempt is accounted for.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from fault_util import (
    RECOVERED,
    check_queue_invariants,
    connect_ro,
    db_path,
    recovered,
    wait_drained,
    wait_for,
)
from gateway_util import Gateway, free_port, write_config
from plugins_util import make_plugin

RETRY = {"max_attempts": 3, "backoff_base": "10ms"}
SERVICE = {"max_workers": 2, "tick_interval": "1s", "shutdown_grace": "2s"}


def worker_script(name: str, sleep: str, sockets: Path) -> str:
    """Read the whole request, sleep, answer ok naming the payload's index. A socket among the
    plugin's descriptors (the API listener leaking into a child) is noted in `sockets`."""
    return f"""req=$(cat)
for f in /proc/$$/fd/*; do [ -S "$f" ] && echo "$$ $f" >> '{sockets}'; done
i=${{req#*\\"index\\":}}
i=${{i%%[!0-9]*}}
sleep {sleep}
printf '{{"status":"ok","result":"{name} index %s"}}\\n' "$i"
"""


def load_config(tmp_path: Path, *, service: dict | None = None) -> tuple[Path, int, Path]:
    """Two plugins on two workers: `quick` (50 ms, two lanes) and `slow` (3 s, one lane)."""
    root = tmp_path / "plugins"
    sockets = tmp_path / "inherited-sockets.txt"
    make_plugin(root, "quick", worker_script("quick", "0.05", sockets))
    make_plugin(root, "slow", worker_script("slow", "3", sockets))
    plugins = {
        "quick": {"enabled": True, "parallelism": 2, "retry": RETRY, "timeouts": {"poll": "20s"}},
        "slow": {"enabled": True, "parallelism": 1, "retry": RETRY, "timeouts": {"poll": "20s"}},
    }
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugins=plugins, plugin_roots=[str(root)],
                       service={**SERVICE, **(service or {})})
    return cfg, port, sockets


class Enqueuer(threading.Thread):
    """POSTs `/plugin/<name>/poll` with `{"payload": {"index": i}}` for each planned job and
    keeps the acknowledged (202) job ids; stops at the first connection error (the gateway
    died or stopped listening)."""

    def __init__(self, gw: Gateway, plan: list[tuple[int, str]]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.plan = gw.url, gw.headers(), plan
        self.acked: dict[str, tuple[int, str]] = {}
        self.refused: list[str] = []
        self.stopped_at: int | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10.0) as client:
            for i, plugin in self.plan:
                try:
                    resp = client.post(f"/plugin/{plugin}/poll", json={"payload": {"index": i}})
                except httpx.HTTPError:
                    self.stopped_at = i
                    return
                if resp.status_code != 202:
                    self.refused.append(f"{i}: {resp.status_code} {resp.text}")
                    self.stopped_at = i
                    return
                self.acked[resp.json()["job_id"]] = (i, plugin)


def plan(n: int, slow_every: int) -> list[tuple[int, str]]:
    return [(i, "slow" if i % slow_every == 0 else "quick") for i in range(n)]


def running_now(gw: Gateway, job_id: str) -> bool:
    try:
        return gw.get(f"/job/{job_id}").json()["status"] == "running"
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def succeeded_total(gw: Gateway) -> int:
    return int(gw.get("/jobs?status=succeeded&limit=1").json()["total"])


def first_slow(enq: Enqueuer) -> str:
    return wait_for(lambda: next((j for j, (i, _) in enq.acked.items() if i == 0), None),
                    10, "the first slow job to be acknowledged")


def running_jobs(path: Path) -> dict[str, int]:
    """Jobs the database holds as running (read while no gateway runs): id -> attempt."""
    conn = connect_ro(path)
    try:
        return {r["id"]: r["attempt"]
                for r in conn.execute("SELECT id, attempt FROM job_queue WHERE status='running'")}
    finally:
        conn.close()


def keep_logs(gw: Gateway, name: str) -> None:
    """A restarted Gateway truncates gateway.stdout; keep the first run's log beside it."""
    assert gw.stdout_path is not None
    shutil.copy(gw.stdout_path, gw.config_dir / name)


def check_results_name_their_index(jobs: dict, acked: dict[str, tuple[int, str]]) -> None:
    for job_id, (index, plugin) in acked.items():
        job = jobs[job_id]
        assert job["status"] == "succeeded", (job_id, job["status"], job["last_error"])
        final = [r for r in job["logs"] if r["status"] == "succeeded"][0]
        assert f'"{plugin} index {index}"' in final["result"], final["result"]


def check_recovered_exactly(jobs: dict, orphans: dict[str, int]) -> None:
    """Jobs left running by the previous process were re-queued by recovery as attempt + 1,
    their interrupted attempt closed as `crashed`; no other job was touched by recovery."""
    for job_id, job in jobs.items():
        if job_id not in orphans:
            assert not recovered(job), (job_id, [tuple(t) for t in job["transitions"]])
            continue
        crashed_at = orphans[job_id]
        assert any(t["from_status"] == "running" and t["to_status"] == "queued"
                   and t["reason"] == RECOVERED for t in job["transitions"]), job_id
        rows = {a["attempt"]: a for a in job["attempt_rows"]}
        assert rows[crashed_at]["outcome"] == "crashed", dict(rows[crashed_at])
        assert rows[crashed_at]["error"] == RECOVERED
        assert job["attempt"] == crashed_at + 1, (job_id, job["attempt"], crashed_at)
        assert [r["attempt"] for r in job["logs"]] == [crashed_at + 1]


def test_sigkill_under_load_then_restart_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path,
) -> None:
    cfg, port, sockets = load_config(tmp_path)
    gw = Gateway(cfg, port=port).start()
    enq = Enqueuer(gw, plan(200, slow_every=100))
    enq.start()
    try:
        slow = first_slow(enq)
        wait_for(lambda: running_now(gw, slow) and succeeded_total(gw) >= 15, 30,
                 "the slow job running and 15 quick jobs done")
        gw.proc.kill()  # SIGKILL: no drain, no close, no lock release but the kernel's
        assert gw.proc.wait(10) == -signal.SIGKILL
    finally:
        enq.join(15)
        if gw.proc.poll() is None:
            gw.proc.kill()
    assert not enq.refused, enq.refused
    assert len(enq.acked) >= 15
    keep_logs(gw, "gateway-killed.stdout")

    orphans = running_jobs(db_path(cfg))
    assert slow in orphans, "the 3 s job was running at the kill"
    assert 1 <= len(orphans) <= 2  # two workers

    again = Gateway(cfg, port=port).start()
    try:
        wait_drained(again, 60)
        boot = [r for r in again.log_records() if r.get("msg") == "recovered orphaned job"]
        assert sorted(r["job_id"] for r in boot) == sorted(orphans)
    finally:
        assert again.stop() == 0

    jobs = check_queue_invariants(db_path(cfg), enq.acked)
    check_results_name_their_index(jobs, enq.acked)
    check_recovered_exactly(jobs, orphans)
    assert all(j["status"] == "succeeded" for j in jobs.values())
    assert not sockets.exists(), f"a plugin inherited a socket:\n{sockets.read_text()}"


def test_sigterm_under_load_exits_0_within_grace_and_restart_finishes_the_rest(
    tmp_path: Path,
) -> None:
    grace = 1.0  # the slow job (3 s) cannot finish in it; the quick ones (50 ms) can
    cfg, port, sockets = load_config(tmp_path, service={"shutdown_grace": "1s"})
    gw = Gateway(cfg, port=port).start()
    enq = Enqueuer(gw, plan(120, slow_every=60))
    enq.start()
    try:
        slow = first_slow(enq)
        wait_for(lambda: running_now(gw, slow) and succeeded_total(gw) >= 5, 30,
                 "the slow job running and 5 quick jobs done")
        sent = time.monotonic()
        gw.signal(signal.SIGTERM)
        code = gw.wait_exit(grace + 10)
        took = time.monotonic() - sent
    finally:
        enq.join(15)
        if gw.proc.poll() is None:
            gw.proc.kill()
    assert code == 0, gw.stderr()
    assert took < grace + 4, f"SIGTERM to exit took {took:.1f}s (grace {grace}s)"
    assert not enq.refused or all(" 503 " in r for r in enq.refused), enq.refused
    stopped = [r for r in gw.log_records() if r.get("msg") == "ductile stopped"]
    assert stopped and stopped[-1]["exit_code"] == 0
    keep_logs(gw, "gateway-stopped.stdout")

    # A clean stop: the database was closed (checkpointed), the quick jobs in flight finished
    # in the grace period; only what outlived the grace (the slow job) is still `running`.
    left_running = running_jobs(db_path(cfg))
    assert slow in left_running, "the 3 s job cannot finish within a 1 s grace"
    with connect_ro(db_path(cfg)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        queued_before = conn.execute(
            "SELECT count(*) FROM job_queue WHERE status = 'queued'").fetchone()[0]
    conn.close()
    assert queued_before > 0, "the load should outlast the stop"

    again = Gateway(cfg, port=port).start()
    try:
        wait_drained(again, 60)
    finally:
        assert again.stop() == 0

    jobs = check_queue_invariants(db_path(cfg), enq.acked)
    check_results_name_their_index(jobs, enq.acked)
    check_recovered_exactly(jobs, left_running)
    assert all(j["status"] == "succeeded" for j in jobs.values())
    assert not sockets.exists(), f"a plugin inherited a socket:\n{sockets.read_text()}"


def test_a_plugin_outliving_a_killed_gateway_never_reports_and_its_job_succeeds_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    started, finished = tmp_path / "started.txt", tmp_path / "finished.txt"
    make_plugin(root, "late", f"""req=$(cat)
echo $$ >> '{started}'
sleep 2
echo $$ >> '{finished}'
printf '{{"status":"ok","result":"late pid %s"}}\\n' $$
""")
    port = free_port()
    plugins = {"late": {"enabled": True, "retry": {"max_attempts": 2, "backoff_base": "10ms"},
                        "timeouts": {"poll": "20s"}}}
    cfg = write_config(tmp_path / "cfg", port=port, plugins=plugins, plugin_roots=[str(root)],
                       service=SERVICE)
    gw = Gateway(cfg, port=port).start()
    try:
        job_id = gw.post("/plugin/late/poll", {"payload": {"n": 1}}).json()["job_id"]
        wait_for(lambda: started.exists() and started.read_text().strip(), 10,
                 "the plugin to start")
        gw.proc.kill()
        gw.proc.wait(10)
    finally:
        if gw.proc.poll() is None:
            gw.proc.kill()
    first_pid = int(started.read_text().split()[0])
    assert not finished.exists(), "the first process must still be sleeping at the kill"
    assert running_jobs(db_path(cfg)) == {job_id: 1}

    again = Gateway(cfg, port=port).start()
    try:
        wait_for(lambda: again.get(f"/job/{job_id}").json()["status"] == "succeeded", 20,
                 "the recovered job to succeed")
        # The orphan of the killed gateway finishes its sleep and tries to answer into a pipe
        # nobody reads any more.
        wait_for(lambda: finished.exists() and str(first_pid) in finished.read_text().split(),
                 10, "the orphaned first attempt to finish")
        time.sleep(0.2)
        assert again.wait_healthy()["status"] == "ok"
    finally:
        assert again.stop() == 0

    pids = [int(p) for p in started.read_text().split()]
    assert len(pids) == 2 and pids[0] == first_pid and pids[1] != first_pid
    second_pid = pids[1]
    jobs = check_queue_invariants(db_path(cfg), [job_id])
    job = jobs[job_id]
    assert (job["status"], job["attempt"]) == ("succeeded", 2)
    assert [(r["attempt"], r["status"]) for r in job["logs"]] == [(2, "succeeded")]
    assert f"late pid {second_pid}" in job["logs"][0]["result"]
    assert all(str(first_pid) not in (r["result"] or "") for r in job["logs"])
    assert [(a["attempt"], a["outcome"]) for a in job["attempt_rows"]] == [(1, "crashed"),
                                                                          (2, "ok")]
    assert [(t["to_status"], t["reason"]) for t in job["transitions"]] == [
        ("queued", "enqueued by api"), ("running", "claimed"), ("queued", RECOVERED),
        ("running", "claimed"), ("succeeded", "ok")]


def test_stop_claims_nothing_new_while_draining(tmp_path: Path) -> None:
    """DESIGN §5: on SIGTERM the dispatcher stops claiming. A job queued behind one that is
    running when the signal arrives must stay queued (attempt 1, never started), not be started
    during the drain and then killed at the grace deadline."""
    root = tmp_path / "plugins"
    make_plugin(root, "medium", "cat >/dev/null; sleep 0.6; "
                "echo '{\"status\":\"ok\",\"result\":\"medium\"}'")
    make_plugin(root, "slow", "cat >/dev/null; sleep 3; "
                "echo '{\"status\":\"ok\",\"result\":\"slow\"}'")
    port = free_port()
    plugins = {name: {"enabled": True, "retry": RETRY, "timeouts": {"poll": "20s"}}
               for name in ("medium", "slow")}
    cfg = write_config(tmp_path / "cfg", port=port, plugins=plugins, plugin_roots=[str(root)],
                       service={**SERVICE, "max_workers": 1, "shutdown_grace": "2s"})
    gw = Gateway(cfg, port=port).start()
    try:
        first = gw.post("/plugin/medium/poll", {}).json()["job_id"]
        wait_for(lambda: running_now(gw, first), 10, "the first job to run")
        second = gw.post("/plugin/slow/poll", {}).json()["job_id"]
        gw.signal(signal.SIGTERM)
        assert gw.wait_exit(15) == 0
    finally:
        gw.stop()
    conn = connect_ro(db_path(cfg))
    try:
        rows = {r["id"]: (r["status"], r["attempt"])
                for r in conn.execute("SELECT id, status, attempt FROM job_queue")}
        claimed = conn.execute(
            "SELECT count(*) FROM job_attempts WHERE job_id = ?", (second,)).fetchone()[0]
    finally:
        conn.close()
    assert rows[first] == ("succeeded", 1)
    assert (rows[second], claimed) == (("queued", 1), 0), (
        "a job was claimed after SIGTERM and left running at the grace deadline")

