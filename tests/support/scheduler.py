"""Run the scheduler over a real runtime generation (real config, plugins, SQLite file).

`scheduler_world` builds one generation the way boot does and starts a Scheduler on it, with a
wall clock derived from the trio clock, so a test under `trio.testing.MockClock` can let hours
of schedules go by in milliseconds. Leaving the context stops the scheduler and closes the
database; entering it again on the same `tmp_path` is a restart.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import trio
from trio.testing import MockClock

from ductile.boot.runtime import Process, Runtime
from ductile.dispatch.dispatcher import Dispatcher
from ductile.logs import Logger
from ductile.schedule.scheduler import Scheduler
from support.gateway import write_config


def trio_wall(start: datetime) -> Callable[[], datetime]:
    """A wall clock that moves with the trio clock (MockClock in tests), from `start`."""
    origin = trio.current_time()
    return lambda: start + timedelta(seconds=trio.current_time() - origin)


async def advance(world: World, seconds: float) -> None:
    """Move a hand-driven MockClock (rate 0, no autojump) forward by `seconds`, stopping at each
    scheduler wake-up on the way and letting its pass finish: deterministic, because time only
    moves while the scheduler is asleep."""
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, MockClock), "advance() needs the MockClock fixture"
    target = trio.current_time() + seconds
    while True:
        wake_at = await world.scheduler.idle()
        if wake_at > target:
            clock.jump(max(0.0, target - trio.current_time()))
            return
        clock.jump(max(0.0, wake_at - trio.current_time()))


@dataclass
class World:
    proc: Process
    rt: Runtime
    scheduler: Scheduler
    dispatcher: Dispatcher | None
    log: io.StringIO

    def db_rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import sqlite3

        assert self.proc.db is not None
        conn = sqlite3.connect(self.proc.db.path)
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def jobs(self) -> list[tuple[str, str, str]]:
        """(dedupe_key, status, submitted_by) of every job, oldest first."""
        return [tuple(r) for r in self.db_rows(  # type: ignore[misc]
            "SELECT dedupe_key, status, submitted_by FROM job_queue ORDER BY created_at, rowid")]

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line.strip()]


async def build_runtime(proc: Process, cfg_dir: Path) -> Runtime:
    """A runtime generation built directly from its parts (config, discovery, database), so
    these tests do not depend on the boot gates."""
    from ductile.config.load import parse_config, validate_config
    from ductile.config.aliases import apply_aliases
    from ductile.plugin.discovery import discover
    from ductile.store.db import Database
    from ductile.store.queue import Queue
    from ductile.store.state import StateStore

    cfg = parse_config(str(cfg_dir / "config.yaml"), environ=dict(os.environ))
    validate_config(cfg)
    found = discover(cfg.plugin_roots, allow_symlinks=False)
    proc.db = db = await Database.open(cfg.state_path)
    await Queue(db, snapshot_id=lambda: None, dedupe_ttl=0).recover_orphans()
    return Runtime(
        generation=1, config=cfg, plugins=apply_aliases(found.plugins, cfg.plugins),
        snapshot_id="test", posture="gateway",
        queue=Queue(db, snapshot_id=lambda: None, dedupe_ttl=cfg.service.dedupe_ttl,
                    on_enqueue=proc.wake_dispatcher),
        state=StateStore(db), loaded_at=datetime.now(timezone.utc), started_monotonic=0.0,
    )


@asynccontextmanager
async def scheduler_world(
    tmp_path: Path,
    plugins: dict[str, Any],
    *,
    start: datetime | None = None,
    clock: Callable[[], datetime] | None = None,
    service: dict[str, Any] | None = None,
    plugin_roots: list[str] | None = None,
    dispatch: bool = False,
    kill_grace: float = 0.5,
    stop_grace: float = 0.2,
) -> AsyncIterator[World]:
    cfg_dir = write_config(tmp_path / "cfg", plugins=plugins, plugin_roots=plugin_roots,
                           service={"tick_interval": "1h", **(service or {})})
    stream = io.StringIO()
    proc = Process(explicit_config=str(cfg_dir), environ=dict(os.environ),
                   log=Logger(stream=stream))
    rt = await build_runtime(proc, cfg_dir)
    wall = clock or trio_wall(start or datetime(2026, 1, 1, tzinfo=timezone.utc))
    dispatcher = None
    if dispatch:
        dispatcher = Dispatcher(lambda: rt, proc.completions, proc.log)
        dispatcher.kill_grace = kill_grace
        proc.dispatcher = dispatcher
    assert proc.db is not None
    scheduler = Scheduler(lambda: rt, proc.db, proc.log, clock=wall,
                          cancel_running=dispatcher.cancel_running if dispatcher else None)
    try:
        async with trio.open_nursery() as nursery:
            if dispatcher is not None:
                await nursery.start(dispatcher.run)
            await nursery.start(scheduler.run)
            yield World(proc, rt, scheduler, dispatcher, stream)
            scheduler.stop()
            if dispatcher is not None:
                dispatcher.stop(stop_grace)
    finally:
        with trio.CancelScope(shield=True):
            await proc.close()
