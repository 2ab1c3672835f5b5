"""The view state of `ductile system watch`: what the screen shows, as a pure value.

Two inputs move it, and neither does I/O here:

* `apply_snapshot(state, snapshot)`: the JSON API's answers (`/healthz`, `GET /jobs` for the
  queued, running and latest jobs, `GET /scheduler/jobs`), taken at start, every resync and
  after a reconnect. A snapshot replaces what it covers: it is the truth, events only keep the
  screen current between two of them.
* `apply(state, event)`: one event of `GET /events` (`{"type", "id", "data"}`).

Both accept whatever the gateway (or a newer or older one) sends: an unknown event type, a
missing field or a value of the wrong type is skipped, never raised, because one odd event
must not end an operator's view. `render_text` (plain lines for `--once` and scripts),
`render` (a rich renderable for the live screen) and `to_json` draw it.

The running set follows the events exactly: a job is running once `job.started` names it and
until an event that ends its attempt does (property-tests/test_watch_state_props.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

#: Outcomes kept on screen, newest first.
MAX_OUTCOMES = 10
#: Schedules shown, soonest first.
MAX_SCHEDULES = 8

#: Events that end a job's attempt: it leaves the running set.
ENDS_ATTEMPT = frozenset({
    "job.completed", "job.failed", "job.timed_out", "job.skipped", "job.cancelled",
    "job.dead", "job.retry_scheduled", "job.retry_exhausted",
})
#: Events that put a job into the queue.
ENQUEUES = frozenset({
    "job.enqueued", "router.enqueued", "pipeline.enqueued", "scheduler.scheduled",
    "job.retry_scheduled",
})
#: The status an ending event means when its data names none.
_STATUS_OF = {
    "job.completed": "succeeded", "job.failed": "failed", "job.timed_out": "timed_out",
    "job.skipped": "skipped", "job.cancelled": "cancelled", "job.dead": "dead",
}
#: Statuses that are an outcome worth listing (a job that ended for good).
TERMINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled", "dead", "skipped"})


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    plugin: str
    command: str
    started_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    job_id: str
    plugin: str
    command: str
    status: str
    at: datetime | None
    error: str = ""


@dataclass(frozen=True)
class Schedule:
    plugin: str
    schedule_id: str
    command: str
    next_run_at: datetime | None
    paused: bool
    status: str


@dataclass(frozen=True)
class Breaker:
    plugin: str
    command: str
    state: str
    failure_count: int


@dataclass(frozen=True)
class ViewState:
    """Everything on screen. `queued_ids` are the queued jobs the view knows by id;
    `queued_unlisted` the ones the last snapshot counted beyond its listing limit."""

    running: Mapping[str, RunningJob] = field(default_factory=dict)
    queued_ids: frozenset[str] = frozenset()
    queued_unlisted: int = 0
    outcomes: tuple[Outcome, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    breakers: Mapping[tuple[str, str], Breaker] = field(default_factory=dict)
    gateway: Mapping[str, Any] = field(default_factory=dict)
    #: "live" (the event stream is connected), "polling" (no stream: snapshots only),
    #: "disconnected" (the last attempt to reach the gateway failed), "snapshot" (`--once`).
    link: str = "polling"
    link_detail: str = ""
    last_event_id: str | None = None
    synced_at: datetime | None = None

    @property
    def queued(self) -> int:
        return len(self.queued_ids) + self.queued_unlisted

    @property
    def open_breakers(self) -> tuple[Breaker, ...]:
        return tuple(sorted((b for b in self.breakers.values() if b.state != "closed"),
                            key=lambda b: (b.plugin, b.command)))


# -- reading loose JSON -----------------------------------------------------------------------


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as an aware UTC datetime, or None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _dicts(value: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return []


def _jobs(answer: Any) -> Iterable[Mapping[str, Any]]:
    return _dicts(answer.get("jobs")) if isinstance(answer, Mapping) else []


# -- the snapshot -----------------------------------------------------------------------------


def apply_snapshot(state: ViewState, snapshot: Mapping[str, Any], *,
                   now: datetime | None = None) -> ViewState:
    """The state the API's answers describe. `snapshot` holds the raw JSON bodies under
    `healthz`, `queued` (`GET /jobs?status=queued`), `running` (`?status=running`), `recent`
    (`GET /jobs`) and `schedules` (`GET /scheduler/jobs`); a key that is absent (that request
    failed) keeps what the state had."""
    changes: dict[str, Any] = {"synced_at": now}
    health = snapshot.get("healthz")
    if isinstance(health, Mapping):
        changes["gateway"] = dict(health)
    queued = snapshot.get("queued")
    if isinstance(queued, Mapping):
        ids = frozenset(_text(j.get("job_id")) for j in _jobs(queued)) - {""}
        changes["queued_ids"] = ids
        changes["queued_unlisted"] = max(0, _int(queued.get("total"), len(ids)) - len(ids))
    elif isinstance(health, Mapping) and isinstance(health.get("queue_depth"), int):
        changes["queued_ids"] = frozenset()
        changes["queued_unlisted"] = max(0, _int(health.get("queue_depth")))
    running = snapshot.get("running")
    if isinstance(running, Mapping):
        changes["running"] = {
            job_id: RunningJob(job_id, _text(j.get("plugin"), "?"), _text(j.get("command"), "?"),
                               parse_time(j.get("started_at")))
            for j in _jobs(running) if (job_id := _text(j.get("job_id")))}
    recent = snapshot.get("recent")
    if isinstance(recent, Mapping):
        outcomes = [Outcome(_text(j.get("job_id")), _text(j.get("plugin"), "?"),
                            _text(j.get("command"), "?"), _text(j.get("status")),
                            parse_time(j.get("completed_at")), _text(j.get("last_error")))
                    for j in _jobs(recent) if _text(j.get("status")) in TERMINAL]
        changes["outcomes"] = _newest(outcomes)
    schedules = snapshot.get("schedules")
    if isinstance(schedules, Mapping):
        rows = list(_jobs(schedules))
        changes["schedules"] = tuple(
            Schedule(_text(s.get("plugin"), "?"), _text(s.get("schedule_id"), "?"),
                     _text(s.get("command"), "?"), parse_time(s.get("next_run_at")),
                     s.get("paused") is True, _text(s.get("status")))
            for s in rows)
        breakers: dict[tuple[str, str], Breaker] = {}
        for s in rows:
            b = s.get("breaker")
            if isinstance(b, Mapping) and _text(b.get("state")):
                key = (_text(s.get("plugin"), "?"), _text(s.get("command"), "?"))
                breakers[key] = Breaker(*key, _text(b.get("state")),
                                        _int(b.get("failure_count")))
        changes["breakers"] = breakers
    return replace(state, **changes)


def _newest(outcomes: Iterable[Outcome]) -> tuple[Outcome, ...]:
    """One outcome per job (the latest seen first wins), newest first, at most MAX_OUTCOMES."""
    seen: set[str] = set()
    unique = []
    for outcome in outcomes:
        if outcome.job_id in seen:
            continue
        seen.add(outcome.job_id)
        unique.append(outcome)
    epoch = datetime.min.replace(tzinfo=UTC)
    unique.sort(key=lambda o: o.at or epoch, reverse=True)  # stable: ties keep arrival order
    return tuple(unique[:MAX_OUTCOMES])


# -- one event --------------------------------------------------------------------------------


def apply(state: ViewState, event: Mapping[str, Any]) -> ViewState:
    """The state after one event `{"type": str, "id": str|None, "data": {...}}`."""
    kind = _text(event.get("type"))
    data = event.get("data")
    event_id = event.get("id")
    if isinstance(event_id, str) and event_id:
        state = replace(state, last_event_id=event_id)
    if not isinstance(data, Mapping):
        return state
    if kind == "scheduler.circuit_state_changed":
        return _breaker_changed(state, data)
    if kind == "scheduler.skipped":
        return _schedule_moved(state, data)
    job_id = _text(data.get("job_id"))
    if not job_id:
        return state
    plugin, command = _text(data.get("plugin"), "?"), _text(data.get("command"), "?")
    at = parse_time(data.get("at"))
    if kind == "job.started":
        running = {**state.running, job_id: RunningJob(job_id, plugin, command, at)}
        return replace(state, running=running, queued_ids=state.queued_ids - {job_id})
    if kind in ENDS_ATTEMPT:
        previous = state.running.get(job_id)
        running = {k: v for k, v in state.running.items() if k != job_id}
        state = replace(state, running=running, queued_ids=state.queued_ids - {job_id})
        status = _text(data.get("status")) or _STATUS_OF.get(kind, "")
        if status in TERMINAL and kind != "job.retry_scheduled":
            if previous is not None:  # the end event may not repeat the command
                plugin = plugin if plugin != "?" else previous.plugin
                command = command if command != "?" else previous.command
            error = _text(data.get("error")) or _text(data.get("message"))
            outcome = Outcome(job_id, plugin, command, status, at, error)
            state = replace(state, outcomes=_newest((outcome, *state.outcomes)))
    if kind in ENQUEUES and job_id not in state.running:
        state = replace(state, queued_ids=state.queued_ids | {job_id})
    return state


def _breaker_changed(state: ViewState, data: Mapping[str, Any]) -> ViewState:
    plugin, command, to = (_text(data.get("plugin")), _text(data.get("command")),
                           _text(data.get("state")))
    if not (plugin and command and to):
        return state
    breaker = Breaker(plugin, command, to, _int(data.get("failure_count")))
    return replace(state, breakers={**state.breakers, (plugin, command): breaker})


def _schedule_moved(state: ViewState, data: Mapping[str, Any]) -> ViewState:
    """A skipped fire may say when the schedule fires next."""
    next_run = parse_time(data.get("next_run_at"))
    plugin, schedule_id = _text(data.get("plugin")), _text(data.get("schedule_id"))
    if next_run is None or not plugin:
        return state
    schedules = tuple(replace(s, next_run_at=next_run)
                      if (s.plugin, s.schedule_id) == (plugin, schedule_id) else s
                      for s in state.schedules)
    return replace(state, schedules=schedules)


def with_link(state: ViewState, link: str, detail: str = "") -> ViewState:
    """The state with the connection shown as `link` (live, polling, disconnected)."""
    return replace(state, link=link, link_detail=detail)


# -- drawing ----------------------------------------------------------------------------------


def age(since: datetime | None, now: datetime) -> str:
    """`3s`, `4m05s`, `2h03m`; `?` when unknown; `0s` for a clock a little ahead."""
    if since is None:
        return "?"
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _until(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    ahead = int((when - now).total_seconds())
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} (in {age(now, when)})" if ahead >= 0 else f"{stamp} (due)"


def _stamp(when: datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when else "-"


def upcoming(state: ViewState) -> tuple[Schedule, ...]:
    """The schedules that will fire, soonest first (paused and exhausted ones after)."""
    epoch_end = datetime.max.replace(tzinfo=UTC)
    ordered = sorted(state.schedules, key=lambda s: (s.paused or s.next_run_at is None,
                                                     s.next_run_at or epoch_end,
                                                     s.plugin, s.schedule_id))
    return tuple(ordered[:MAX_SCHEDULES])


def _header(state: ViewState) -> str:
    gw = state.gateway
    bits = [f"gateway {_text(gw.get('status'), 'unknown')}"]
    if _text(gw.get("version")):
        bits.append(f"version {gw['version']}")
    if isinstance(gw.get("uptime_seconds"), (int, float)):
        bits.append(f"up {int(gw['uptime_seconds'])}s")
    link = {"live": "live (event stream)", "polling": "polling",
            "disconnected": "disconnected, retrying",
            "snapshot": "snapshot"}.get(state.link, state.link)
    if state.link_detail:
        link += f": {state.link_detail}"
    bits.append(link)
    return " | ".join(bits)


def render_text(state: ViewState, now: datetime) -> str:
    """The state as plain text lines (what `--once` prints)."""
    lines = [_header(state), f"Queued: {state.queued}   Running: {len(state.running)}", ""]
    lines.append("Running jobs:")
    for job in sorted(state.running.values(), key=lambda j: (j.started_at is None,
                                                            j.started_at or now, j.job_id)):
        lines.append(f"  {job.job_id}  {job.plugin}/{job.command}  running for "
                     f"{age(job.started_at, now)}")
    if not state.running:
        lines.append("  (none)")
    lines += ["", "Recent outcomes:"]
    for o in state.outcomes:
        error = f"  {o.error[:80]}" if o.error else ""
        lines.append(f"  {_stamp(o.at)}  {o.status:<9}  {o.plugin}/{o.command}  {o.job_id}"
                     f"{error}")
    if not state.outcomes:
        lines.append("  (none)")
    lines += ["", "Next schedules:"]
    for s in upcoming(state):
        when = "paused" if s.paused else _until(s.next_run_at, now)
        lines.append(f"  {s.plugin}/{s.schedule_id} ({s.command})  {when}")
    if not state.schedules:
        lines.append("  (none)")
    lines += ["", "Open breakers:"]
    for b in state.open_breakers:
        lines.append(f"  {b.plugin}/{b.command}  {b.state}  failures={b.failure_count}")
    if not state.open_breakers:
        lines.append("  (none)")
    return "\n".join(lines)


def to_json(state: ViewState, now: datetime) -> dict[str, Any]:
    """The state as JSON (`--once --json`); times are RFC 3339 UTC, ages in whole seconds."""
    def iso(when: datetime | None) -> str | None:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None

    def seconds(since: datetime | None) -> int | None:
        return None if since is None else max(0, int((now - since).total_seconds()))

    return {
        "at": iso(now),
        "link": state.link,
        "gateway": dict(state.gateway),
        "queued": state.queued,
        "running": [{"job_id": j.job_id, "plugin": j.plugin, "command": j.command,
                     "started_at": iso(j.started_at), "age_seconds": seconds(j.started_at)}
                    for j in sorted(state.running.values(), key=lambda j: j.job_id)],
        "outcomes": [{"job_id": o.job_id, "plugin": o.plugin, "command": o.command,
                      "status": o.status, "at": iso(o.at), "error": o.error or None}
                     for o in state.outcomes],
        "schedules": [{"plugin": s.plugin, "schedule_id": s.schedule_id,
                       "command": s.command, "next_run_at": iso(s.next_run_at),
                       "paused": s.paused} for s in upcoming(state)],
        "open_breakers": [{"plugin": b.plugin, "command": b.command, "state": b.state,
                           "failure_count": b.failure_count} for b in state.open_breakers],
    }


def render(state: ViewState, now: datetime) -> RenderableType:
    """The state as rich tables for the live screen (rich is imported only here)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    style = {"live": "green", "polling": "yellow", "disconnected": "bold red"}
    header = Text(_header(state), style=style.get(state.link, ""))
    counts = Text(f"Queued: {state.queued}   Running: {len(state.running)}", style="bold")

    running = Table(title="Running", title_justify="left", expand=True)
    for column in ("job", "plugin/command", "age"):
        running.add_column(column)
    for job in sorted(state.running.values(), key=lambda j: (j.started_at is None,
                                                            j.started_at or now, j.job_id)):
        running.add_row(job.job_id, f"{job.plugin}/{job.command}", age(job.started_at, now))

    outcomes = Table(title="Recent outcomes", title_justify="left", expand=True)
    for column in ("at", "status", "plugin/command", "job", "error"):
        outcomes.add_column(column)
    colour = {"succeeded": "green", "skipped": "dim", "cancelled": "yellow"}
    for o in state.outcomes:
        outcomes.add_row(_stamp(o.at), Text(o.status, style=colour.get(o.status, "red")),
                         f"{o.plugin}/{o.command}", o.job_id, o.error[:60])

    schedules = Table(title="Next schedules", title_justify="left", expand=True)
    for column in ("schedule", "command", "next run"):
        schedules.add_column(column)
    for s in upcoming(state):
        schedules.add_row(f"{s.plugin}/{s.schedule_id}", s.command,
                          "paused" if s.paused else _until(s.next_run_at, now))

    breakers = Table(title="Open breakers", title_justify="left", expand=True)
    for column in ("plugin/command", "state", "failures"):
        breakers.add_column(column)
    for b in state.open_breakers:
        breakers.add_row(f"{b.plugin}/{b.command}", Text(b.state, style="red"),
                         str(b.failure_count))
    return Group(header, counts, running, outcomes, schedules, breakers)
