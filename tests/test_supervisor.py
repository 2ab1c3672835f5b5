"""The supervisor in-process: a failing component takes the whole tree down with exit 1, and
stop drains and exits 0."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import trio

from ductile.boot.runtime import Process
from ductile.boot.supervisor import EXIT_COMPONENT_FAILED, EXIT_OK, EXIT_REFUSED, Supervisor
from ductile.logs import Logger
from support.gateway import write_config


def make_supervisor(tmp_path: Path, components=(), **config) -> tuple[Supervisor, io.StringIO]:
    cfg = write_config(tmp_path / "cfg", **config)
    stream = io.StringIO()
    proc = Process(explicit_config=str(cfg), environ=dict(os.environ), log=Logger(stream=stream))
    return Supervisor(proc, components=components), stream


async def run_then_stop(supervisor: Supervisor, during=None) -> int:
    """Run the supervisor, do `during` once it serves, then request a stop; return the code."""
    results: list[int] = []
    async with trio.open_nursery() as nursery:
        async def run() -> None:
            results.append(await supervisor.run())

        nursery.start_soon(run)
        with trio.fail_after(20):
            await supervisor.ready.wait()
        if during is not None:
            await during()
        supervisor.request_stop()
    return results[0]


async def test_a_crashing_component_cancels_the_tree_and_exits_1(tmp_path: Path) -> None:
    async def explode() -> None:
        await trio.sleep(0.05)
        raise RuntimeError("disk on fire")

    supervisor, stream = make_supervisor(tmp_path, components=[explode])
    with trio.fail_after(20):
        code = await supervisor.run()
    assert code == EXIT_COMPONENT_FAILED
    log = stream.getvalue()
    assert "component failed" in log and "disk on fire" in log
    assert "ductile stopped" in log
    # The database was closed cleanly and the lock released: a new instance can start.
    again, _ = make_supervisor(tmp_path)
    assert await run_then_stop(again) == EXIT_OK


async def test_request_stop_drains_and_exits_0_with_the_database_sound(tmp_path: Path) -> None:
    supervisor, stream = make_supervisor(tmp_path)
    jobs = []

    async def enqueue_one() -> None:
        completions = supervisor.proc.completions
        job = await supervisor.current.queue.enqueue("echo", "poll", None, "test")
        done = completions.register(job.id)
        jobs.append(job)
        if (await supervisor.current.queue.get(job.id)).status != "succeeded":
            with trio.fail_after(20):
                await done.wait()
        completions.discard(job.id, done)

    assert await run_then_stop(supervisor, enqueue_one) == EXIT_OK
    [job] = jobs
    assert supervisor.lifecycle.state == "stopped"
    db = tmp_path / "cfg" / "data" / "state.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        status = conn.execute("SELECT status FROM job_queue WHERE id = ?", (job.id,)).fetchone()
    assert status[0] == "succeeded"


async def test_a_refused_boot_returns_78_and_releases_everything(tmp_path: Path) -> None:
    supervisor, stream = make_supervisor(tmp_path, plugins={"ghost": {"enabled": True}})
    assert await supervisor.run() == EXIT_REFUSED
    assert '"gate":"enabled_plugins_discoverable"' in stream.getvalue()
    assert supervisor.proc.lock is None and supervisor.proc.db is None
