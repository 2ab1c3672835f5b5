"""The scheduler on both backends: a real `Scheduler` over a runtime whose queue and `backend`
are SQLite's or PostgreSQL's, so every store call it makes (schedule entries, outstanding jobs,
breakers) goes through the Backend it is given. Passes are run by hand on the hand-moved clock.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ductile.config.aliases import apply_aliases
from ductile.config.load import parse_config, validate_config
from ductile.logs import Logger
from ductile.plugin.discovery import discover
from ductile.runtime import Runtime
from ductile.schedule.scheduler import MANUAL_SUBMITTER, Scheduler
from ductile.store.jobs import format_time
from ductile.store.state import StateStore
from support.backends import Opened, location, opened  # noqa: F401 - fixtures
from support.gateway import write_config

SERVICE = "ductile-test"  # write_config's service.name


@dataclass
class World:
    rt: Runtime
    scheduler: Scheduler


def world(o: Opened, tmp_path: Path, threshold: int = 2) -> World:
    cfg_dir = write_config(tmp_path / "cfg", plugins={"echo": {
        "enabled": True, "schedules": [{"id": "a", "every": "5m"}],
        "circuit_breaker": {"threshold": threshold, "reset_after": "10m"},
        "retry": {"max_attempts": 1}}})
    cfg = parse_config(str(cfg_dir / "config.yaml"), environ=dict(os.environ))
    validate_config(cfg)
    found = discover(cfg.plugin_roots, allow_symlinks=False)
    rt = Runtime(generation=1, config=cfg, plugins=apply_aliases(found.plugins, cfg.plugins),
                 snapshot_id="cfg", posture="gateway", queue=o.queue,
                 state=StateStore(o.db, o.backend.state), backend=o.backend,
                 loaded_at=datetime.now(timezone.utc), started_monotonic=0.0)
    scheduler = Scheduler(lambda: rt, o.db, Logger(stream=io.StringIO()), clock=o.clock)
    return World(rt, scheduler)


async def fail_next(o: Opened) -> str:
    job = await o.queue.claim()
    assert job is not None
    await o.queue.complete(job, "failed", result=None, last_error="boom", stderr=None,
                           exit_code=1, duration_ms=1, outcome="plugin_error")
    return job.id


async def test_fires_remembers_and_trips_the_breaker(opened: Opened, tmp_path: Path) -> None:
    w = world(opened, tmp_path)
    sql, start = opened.backend, opened.clock()
    await w.scheduler.run_pass()
    [fired] = w.scheduler.fired
    assert fired.skipped is None and fired.slot == start
    job = await opened.queue.get(fired.job_id or "")
    assert job is not None and job.submitted_by == SERVICE
    assert job.dedupe_key == "echo:poll:a:2026-03-01T12:00:00Z"
    entries = await opened.read(sql.schedules.fetch_entries)
    entry = entries[("echo", "a")]
    assert (entry.status, entry.last_fired_at) == ("active", format_time(start))
    assert entry.next_run_at == "2026-03-01T12:05:00.000000Z"

    # Two failed fires trip the breaker (threshold 2); the third slot is skipped.
    await fail_next(opened)
    opened.clock.advance(300)
    await w.scheduler.run_pass()
    assert w.scheduler.fired[-1].skipped is None
    await fail_next(opened)
    opened.clock.advance(300)
    await w.scheduler.run_pass()
    assert w.scheduler.fired[-1].skipped == "circuit_open"
    breaker = await opened.read(lambda c: sql.breakers.fetch_breaker(c, "echo", "poll"))
    assert breaker is not None and (breaker.state, breaker.failure_count) == ("open", 2)

    # Ten minutes after it opened, the next fire is the half-open probe.
    opened.clock.advance(600)
    await w.scheduler.run_pass()
    assert w.scheduler.fired[-1].skipped is None
    breaker = await opened.read(lambda c: sql.breakers.fetch_breaker(c, "echo", "poll"))
    assert breaker is not None and breaker.state == "half_open"


async def test_a_paused_schedule_does_not_fire_and_a_manual_fire_skips_a_running_one(
        opened: Opened, tmp_path: Path) -> None:
    w = world(opened, tmp_path)
    sql = opened.backend
    now = format_time(opened.clock())
    await opened.write(lambda c: sql.schedules.set_paused(c, [("echo", "a", "poll")],
                                                          paused=True, now=now))
    await w.scheduler.run_pass()
    assert w.scheduler.fired == []
    entry = (await opened.read(sql.schedules.fetch_entries))[("echo", "a")]
    assert entry.status == "paused_manual"

    manual = await w.scheduler.fire_now("echo", "a")
    assert manual.job_id is not None and manual.skipped is None
    job = await opened.queue.get(manual.job_id)
    assert job is not None and job.submitted_by == MANUAL_SUBMITTER
    again = await w.scheduler.fire_now("echo", "a")  # if_running: skip (the default)
    assert (again.skipped, again.outstanding) == ("already_running", (manual.job_id,))
