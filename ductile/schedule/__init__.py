"""Schedule entries and their fire times (pure; the scheduler task drives them)."""

from __future__ import annotations

from ductile.schedule.expr import (
    Schedule,
    ScheduleError,
    Window,
    fire_key,
    jitter_offset,
    next_fire,
    parse_schedule,
    resolve_wall,
    validate_cron,
)

__all__ = [
    "Schedule",
    "ScheduleError",
    "Window",
    "fire_key",
    "jitter_offset",
    "next_fire",
    "parse_schedule",
    "resolve_wall",
    "validate_cron",
]
