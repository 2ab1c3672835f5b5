"""Operator controls over schedules: pause and resume `PLUGIN[/ID]`, reset a breaker. (A
manual fire needs the running scheduler: `Scheduler.fire_now`.)

The functions here run on a write connection: inside `Database.write` for the API, or on the
CLI's own connection beside a running daemon (SQLite serialises the two writers; the daemon
re-reads schedule_entries at every pass, so a pause takes effect at its next wake, at the latest
after `service.tick_interval`; the API route also calls `Scheduler.wake()` for immediate effect).
Each takes the `backend` of the connection (store/backend.py): the API passes the runtime's,
the CLI SQLITE_BACKEND.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.config.schema import Config
from ductile.errors import UnknownSchedule
from ductile.store import breakers as brk
from ductile.store import schedules as sch

if TYPE_CHECKING:
    from ductile.store.backend import Backend

Target = tuple[str, str, str]  # (plugin, schedule id, command)


def known_targets(cfg: Config) -> list[Target]:
    """Every schedule of an enabled plugin, in plugin order."""
    return [(name, s.id, s.command) for name, plugin in sorted(cfg.plugins.items())
            if plugin.enabled for s in plugin.schedules]


def resolve_targets(cfg: Config, target: str | None) -> list[Target]:
    """The configured schedules `target` names: every one (None), a plugin's, or one `P/ID`.

    Raises UnknownSchedule listing what exists when nothing matches.
    """
    known = known_targets(cfg)
    if target is None or not target.strip():
        return known
    plugin, _, schedule_id = target.strip().partition("/")
    found = [k for k in known if k[0] == plugin and (not schedule_id or k[1] == schedule_id)]
    if not found:
        raise UnknownSchedule(target, [f"{p}/{i}" for p, i, _ in known])
    return found


def pause(conn: Any, cfg: Config, target: str | None, now: str, *,
          backend: Backend) -> list[sch.ScheduleEntry]:
    """Pause the named schedules (persisted; survives restarts until resumed)."""
    return backend.schedules.set_paused(conn, resolve_targets(cfg, target), paused=True,
                                        now=now)


def resume(conn: Any, cfg: Config, target: str | None, now: str, *,
           backend: Backend) -> list[sch.ScheduleEntry]:
    """Resume the named schedules; runs missed while paused are dropped, not caught up."""
    return backend.schedules.set_paused(conn, resolve_targets(cfg, target), paused=False,
                                        now=now)


def reset_breaker(conn: Any, cfg: Config, plugin: str, command: str, now: str, *,
                  backend: Backend) -> brk.Breaker:
    """Close the breaker of (plugin, command) (`ductile system reset`)."""
    if plugin not in cfg.plugins:
        raise UnknownSchedule(plugin, sorted(cfg.plugins))
    return backend.breakers.reset_breaker(conn, brk.breaker_machine(), plugin, command, now)
