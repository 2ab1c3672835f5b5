"""JSON-ready views of the scheduler and its breakers, for `GET /scheduler/jobs`, the CLI and
`/healthz`. Pure readers over a (read-only) connection plus the config; no trio. Each takes
the `backend` the connection belongs to (store/backend.py) and reads through its statements:
the API passes the runtime's, the CLI's read-only SQLite readers SQLITE_BACKEND.

Shapes (Go-compatible keys first, our additions after):

* `scheduler_jobs` -> `{"jobs": [{plugin, schedule_id, command, mode, status, reason?, timezone?,
  next_run_at?, paused, last_fired_at?, breaker: {state, failure_count}}]}`; status is
  `scheduled`, `paused`, `exhausted` or `invalid`. next_run_at is the persisted next slot with its
  jitter applied; for a schedule the scheduler has not seen yet it is projected from the config.
* `breaker_report` -> Go's `system breaker --json`: `{plugin, command, state, failure_count,
  opened_at?, last_failure_at?, last_job_id?, updated_at?, transitions: [...]}`.
* `active_polls` -> Go's `system scheduler --json`: `{service_name, count, active_polls: [...]}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ductile.config.schema import Config
from ductile.schedule.expr import ScheduleError
from ductile.schedule.plan import due_at, plan
from ductile.schedule.validate import enabled_schedules
from ductile.store import breakers as brk
from ductile.store import schedules as sch
from ductile.store.jobs import format_time, parse_time

if TYPE_CHECKING:
    from ductile.store.backend import Backend

_STATUS = {sch.ACTIVE: "scheduled", sch.PAUSED_MANUAL: "paused", sch.EXHAUSTED: "exhausted",
           sch.PAUSED_INVALID: "invalid"}


def open_circuit_count(conn: Any, *, backend: Backend) -> int:
    """Open breakers right now (for /healthz `open_circuits`)."""
    return backend.breakers.open_circuit_count(conn)


def scheduler_jobs(conn: Any, cfg: Config, *, backend: Backend, now: datetime,
                   boot: datetime | None = None, seed: bytes = b"") -> dict[str, Any]:
    """Every schedule of every enabled plugin with its next run, pause state and breaker."""
    entries = backend.schedules.fetch_entries(conn)
    breakers = {(b.plugin, b.command): b for b in backend.breakers.fetch_breakers(conn)}
    jobs = []
    for item in enabled_schedules(cfg):
        entry = entries.get((item.plugin, item.schedule_id))
        row: dict[str, Any] = {
            "plugin": item.plugin,
            "schedule_id": item.schedule_id,
            "command": item.conf.command,
            "mode": item.schedule.kind if item.schedule is not None else _mode(item.conf.raw),
        }
        status = entry.status if entry is not None else sch.ACTIVE
        reason = entry.reason if entry is not None else None
        if item.error is not None:
            status, reason = sch.PAUSED_INVALID, item.error
        row["status"] = _STATUS.get(status, status)
        if reason:
            row["reason"] = reason
        if item.schedule is not None:
            row["timezone"] = item.schedule.timezone
            nxt = _next_run(item.schedule, entry, now, boot or now, seed)
            if nxt is not None and status in (sch.ACTIVE, sch.PAUSED_MANUAL):
                row["next_run_at"] = format_time(nxt)
        row["paused"] = status == sch.PAUSED_MANUAL
        if entry is not None and entry.last_fired_at:
            row["last_fired_at"] = entry.last_fired_at
        breaker = breakers.get((item.plugin, item.conf.command))
        row["breaker"] = {"state": breaker.state if breaker else brk.CLOSED,
                          "failure_count": breaker.failure_count if breaker else 0}
        jobs.append(row)
    return {"jobs": jobs}


def breaker_report(conn: Any, plugin: str, command: str = "poll",
                   limit: int = brk.DEFAULT_HISTORY, *, backend: Backend) -> dict[str, Any]:
    breaker = backend.breakers.fetch_breaker(conn, plugin, command)
    report: dict[str, Any] = {"plugin": plugin, "command": command}
    if breaker is None:
        report.update(state=brk.CLOSED, failure_count=0)
    else:
        report.update({k: v for k, v in breaker.as_dict().items()
                       if k not in ("plugin", "command") and v is not None})
    report["transitions"] = [
        {k: v for k, v in t.as_dict().items() if k not in ("plugin", "command") and v is not None}
        for t in backend.breakers.fetch_breaker_history(conn, plugin, command, limit)
    ]
    return report


def breakers_overview(conn: Any, plugin: str | None = None, *,
                      backend: Backend) -> dict[str, Any]:
    rows = backend.breakers.fetch_breakers(conn, plugin)
    return {"breakers": [b.as_dict() for b in rows],
            "open": sum(1 for b in rows if b.state == brk.OPEN)}


def active_polls(conn: Any, service_name: str, *, backend: Backend) -> dict[str, Any]:
    polls = backend.schedules.active_polls(conn, service_name)
    return {
        "service_name": service_name,
        "count": len(polls),
        "active_polls": [
            {k: v for k, v in {
                "job_id": p.id, "plugin": p.plugin, "dedupe_key": p.dedupe_key,
                "status": p.status, "attempt": p.attempt, "created_at": p.created_at,
                "started_at": p.started_at}.items() if v is not None}
            for p in polls
        ],
    }


def _next_run(schedule: Any, entry: sch.ScheduleEntry | None, now: datetime, boot: datetime,
              seed: bytes) -> datetime | None:
    if entry is not None and entry.next_run_at:
        return due_at(schedule, parse_time(entry.next_run_at), seed)
    if entry is not None and entry.status == sch.EXHAUSTED:
        return None
    try:
        projected = plan(schedule, None, now, boot=boot, seed=seed)
    except ScheduleError:
        return None  # unsatisfiable constraints: the scheduler marks it paused_invalid
    if projected.fire:
        return now
    return due_at(schedule, projected.next_run_at, seed) if projected.next_run_at else None


def _mode(raw: dict[str, Any]) -> str:
    return next((k for k in ("every", "cron", "at", "after") if raw.get(k)), "unknown")
