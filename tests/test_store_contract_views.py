"""What the API, the UI and the CLI show of the scheduler (schedule/views.py, schedule/control.py)
over both backends: the listing behind `GET /scheduler/jobs`, pause and resume, the breaker
views behind `/ui/api/breakers` and `ductile system breaker`, the healthz open-circuit count.
Each is given the Backend of its connection, as the routes give the runtime's."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from ductile.config.load import parse_config
from ductile.config.schema import Config
from ductile.errors import UnknownSchedule
from ductile.schedule import control, views
from ductile.store.jobs import format_time
from support.backends import Opened, location, opened  # noqa: F401 - fixtures
from support.gateway import write_config


def config(tmp_path: Path) -> Config:
    cfg = write_config(tmp_path / "cfg", plugins={
        "echo": {"enabled": True, "schedules": [{"id": "a", "every": "5m"},
                                                 {"id": "b", "cron": "*/15 * * * *"}]},
    })
    return parse_config(str(cfg / "config.yaml"), environ=dict(os.environ))


async def test_listing_pause_and_resume(opened: Opened, tmp_path: Path) -> None:
    opened.clock.advance(60)  # 12:01: the cron schedule's next slot is 12:15
    cfg, backend, now = config(tmp_path), opened.backend, opened.clock()
    stamp = format_time(now)

    async def listing() -> list[tuple[str, str, bool, str | None]]:
        body = await opened.read(lambda c: views.scheduler_jobs(
            c, cfg, backend=backend, now=now, boot=now))
        return [(j["schedule_id"], j["status"], j["paused"], j.get("next_run_at"))
                for j in body["jobs"]]

    assert await listing() == [("a", "scheduled", False, stamp),
                               ("b", "scheduled", False, "2026-03-01T12:15:00.000000Z")]
    paused = await opened.write(lambda c: control.pause(c, cfg, "echo/b", stamp,
                                                        backend=backend))
    assert [(e.schedule_id, e.status) for e in paused] == [("b", "paused_manual")]
    assert await listing() == [("a", "scheduled", False, stamp),
                               ("b", "paused", True, "2026-03-01T12:15:00.000000Z")]
    resumed = await opened.write(lambda c: control.resume(c, cfg, None, stamp, backend=backend))
    assert [(e.schedule_id, e.status) for e in resumed] == [("b", "active")]
    assert [row[:3] for row in await listing()] == [("a", "scheduled", False),
                                                    ("b", "scheduled", False)]
    with pytest.raises(UnknownSchedule):
        await opened.write(lambda c: control.pause(c, cfg, "echo/zz", stamp, backend=backend))


async def test_breaker_views_and_the_operators_reset(opened: Opened, tmp_path: Path) -> None:
    cfg, backend = config(tmp_path), opened.backend
    failed = await opened.finish("echo", "poll", "failed", submitted_by="svc")
    now = format_time(opened.clock())
    machine = control.brk.breaker_machine()
    await opened.write(lambda c: backend.breakers.fold_outcomes(
        c, machine, "echo", "poll", threshold=1, submitted_by="svc", now=now))

    assert await opened.read(lambda c: views.open_circuit_count(c, backend=backend)) == 1
    overview = await opened.read(lambda c: views.breakers_overview(c, backend=backend))
    assert overview["open"] == 1
    assert [(b["plugin"], b["command"], b["state"], b["last_job_id"])
            for b in overview["breakers"]] == [("echo", "poll", "open", failed.id)]
    report = await opened.read(lambda c: views.breaker_report(c, "echo", backend=backend))
    assert (report["state"], report["failure_count"], report["opened_at"]) == ("open", 1, now)
    assert [(t["to_state"], t["reason"], t["job_id"]) for t in report["transitions"]] == [
        ("open", "failure_threshold", failed.id)]
    listed = await opened.read(lambda c: views.scheduler_jobs(
        c, cfg, backend=backend, now=opened.clock()))
    assert [j["breaker"] for j in listed["jobs"]] == [{"state": "open", "failure_count": 1}] * 2

    later = format_time(opened.clock() + timedelta(seconds=1))
    closed = await opened.write(lambda c: control.reset_breaker(c, cfg, "echo", "poll", later,
                                                                backend=backend))
    assert (closed.state, closed.failure_count) == ("closed", 0)
    report = await opened.read(lambda c: views.breaker_report(c, "echo", backend=backend))
    assert [t["reason"] for t in report["transitions"]] == ["manual_reset", "failure_threshold"]
    assert await opened.read(lambda c: views.open_circuit_count(c, backend=backend)) == 0
    with pytest.raises(UnknownSchedule):
        await opened.write(lambda c: control.reset_breaker(c, cfg, "nope", "poll", later,
                                                           backend=backend))
    untouched = await opened.read(lambda c: views.breaker_report(c, "other", backend=backend))
    assert untouched == {"plugin": "other", "command": "poll", "state": "closed",
                         "failure_count": 0, "transitions": []}


async def test_active_polls(opened: Opened) -> None:
    backend = opened.backend
    queued = await opened.queue.enqueue("echo", "poll", {}, "svc", dedupe_key="k")
    await opened.queue.enqueue("echo", "poll", {}, "api")
    body = await opened.read(lambda c: views.active_polls(c, "svc", backend=backend))
    assert body == {"service_name": "svc", "count": 1, "active_polls": [
        {"job_id": queued.id, "plugin": "echo", "dedupe_key": "k", "status": "queued",
         "attempt": 1, "created_at": queued.created_at}]}
