"""The retention task inside a running supervisor prunes old terminal rows (which rows each
policy keeps is tested against the store in test_store_retention.py)."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import trio

from ductile.boot.runtime import Process
from ductile.boot.supervisor import EXIT_OK, Supervisor
from ductile.logs import Logger
from support.gateway import write_config


async def test_the_supervisor_prunes_terminal_rows_past_retention(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", service={"job_queue_retention": "1s",
                                                  "dedupe_ttl": "1s", "job_log_retention": "1s",
                                                  "tick_interval": "200ms"})
    stream = io.StringIO()
    supervisor = Supervisor(Process(explicit_config=str(cfg), environ=dict(os.environ),
                                    log=Logger(stream=stream)))
    results = []
    async with trio.open_nursery() as nursery:
        async def run() -> None:
            results.append(await supervisor.run())

        nursery.start_soon(run)
        await trio.sleep(0.3)
        queue = supervisor.current.queue
        old = await queue.enqueue("echo", "poll", None, "test")
        with trio.fail_after(10):
            while (await queue.get(old.id)).status != "succeeded":
                await trio.sleep(0.05)
        await trio.sleep(1.2)  # past the 1 s retention
        with trio.fail_after(10):
            while await queue.get(old.id) is not None:
                await trio.sleep(0.1)
        supervisor.request_stop()
    assert results == [EXIT_OK]
    with sqlite3.connect(cfg / "data" / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM job_log WHERE job_id = ?",
                            (old.id,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM job_queue WHERE id = ?",
                            (old.id,)).fetchone()[0] == 0
    assert "retention pruned old rows" in stream.getvalue()
