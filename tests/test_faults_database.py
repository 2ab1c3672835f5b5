"""Database faults against the real gateway: a read-only database at boot, and a disk that
fills up while jobs run (simulated with RLIMIT_FSIZE on the gateway process, raised again
later with prlimit)."""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.gateway import BUNDLED_PLUGINS, Gateway, free_port, write_config
from support.plugins import make_plugin

SMALL = 8 * 1024  # below what any enqueue transaction appends to the WAL


def wait_status(gw: Gateway, job_id: str, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = gw.get(f"/job/{job_id}").json()
        if job["status"] == status:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {status}: {job}")


def test_a_full_disk_refuses_new_work_with_503_and_recovers(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "slow", "cat >/dev/null; sleep 1; echo '{\"status\":\"ok\",\"result\":\"x\"}'")
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(root), str(BUNDLED_PLUGINS)],
                       plugins={"echo": {"enabled": True}, "slow": {"enabled": True}})
    gw = Gateway(cfg, port=port).start()
    pid = gw.proc.pid
    try:
        assert gw.post("/plugins/echo/run", {"sync": True}).json()["status"] == "succeeded"
        slow = gw.post("/plugin/slow/poll", {}).json()["job_id"]
        wait_status(gw, slow, "running")

        resource.prlimit(pid, resource.RLIMIT_FSIZE, (SMALL, resource.RLIM_INFINITY))
        refused = gw.post("/plugins/echo/run", {"payload": {"n": 1}})
        assert refused.status_code == 503
        assert "failed to enqueue job" in refused.json()["error"]
        assert gw.wait_healthy()["status"] == "ok"  # reads still work; the gateway is up
        time.sleep(1.5)  # the slow job finishes but cannot record its outcome yet
        assert gw.get(f"/job/{slow}").json()["status"] == "running"

        resource.prlimit(pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        done = wait_status(gw, slow, "succeeded")
        assert done["attempt"] == 1  # recorded once, not re-run
        after = gw.post("/plugins/echo/run", {"payload": {"n": 2}, "sync": True})
        assert after.status_code == 200 and after.json()["status"] == "succeeded"
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert gw.stop() == 0
    db = cfg / "data" / "state.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM job_log WHERE job_id = ?",
                            (slow,)).fetchone()[0] == 1
    messages = [r["msg"] for r in gw.log_records()]
    assert "database unavailable: cannot record job outcome; retrying" in messages


def _make_read_only(path: Path) -> Callable[[], None]:
    """Make one file read-only even for root (a read-only bind mount over it); return undo."""
    if os.geteuid() != 0:
        path.chmod(0o400)
        return lambda: path.chmod(0o600)
    steps = (["mount", "--bind", str(path), str(path)],
             ["mount", "-o", "remount,ro,bind", str(path)])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip(f"cannot make a read-only mount here: {done.stderr.strip()}")
    return lambda: subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_database_refuses_boot_naming_the_file(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port)
    first = Gateway(cfg, port=port).start()
    assert first.stop() == 0
    db = cfg / "data" / "state.db"
    undo = _make_read_only(db)
    try:
        gw = Gateway(cfg, port=port)
        gw.start(wait=False)
        code = gw.wait_exit(30)
    finally:
        undo()
    assert code == 78, gw.stderr()
    assert "gate database_opened" in gw.stderr()
    assert str(db) in gw.stderr()
    assert "read" in gw.stderr().lower()
