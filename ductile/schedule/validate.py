"""Validate every schedule of the enabled plugins, with the reference's messages (a boot gate).

`config/validate.py` checks the structure boot needs (one kind per entry, ids unique, `handle`
refused); this goes all the way through `expr.parse_schedule`, so a cron field out of range, an
unknown timezone or a bad window refuses the boot instead of surfacing later as a
`paused_invalid` schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ductile.config.schema import Config, PluginConf, ScheduleConf
from ductile.errors import ConfigError
from ductile.config.validate import go_quote
from ductile.schedule.expr import Schedule, ScheduleError, next_fire, parse_schedule


@dataclass(frozen=True)
class Parsed:
    """One configured schedule entry, parsed (or the reason it cannot be)."""

    plugin: str
    index: int
    conf: ScheduleConf
    schedule: Schedule | None
    error: str | None = None

    @property
    def schedule_id(self) -> str:
        return self.schedule.id if self.schedule is not None else self.conf.id


def parse_plugin_schedules(name: str, plugin: PluginConf) -> list[Parsed]:
    """Every schedule of one plugin, parsed; a bad entry carries its message instead."""
    parsed = []
    for index, conf in enumerate(plugin.schedules):
        try:
            parsed.append(Parsed(name, index, conf, parse_schedule(conf.raw, plugin=name,
                                                                   index=index)))
        except ScheduleError as exc:
            parsed.append(Parsed(name, index, conf, None, str(exc)))
    return parsed


def reachability_refusal(cfg: Config, now: datetime) -> str | None:
    """The first recurring schedule whose not_on/only_between exclude every match (for example
    `cron: "0 3 * * *"` with `only_between: "09:00-17:00"`), or None. Parsing cannot see this;
    the boot gate asks once, at boot."""
    for entry in enabled_schedules(cfg):
        schedule = entry.schedule
        if schedule is None or schedule.kind not in ("every", "cron"):
            continue
        try:
            next_fire(schedule, now, boot=now)
        except ScheduleError as exc:
            return (f"plugin {go_quote(entry.plugin)}: schedules[{entry.index}] never fires: "
                    f"{exc}; widen only_between or not_on")
    return None


def enabled_schedules(cfg: Config) -> list[Parsed]:
    """The schedules of every enabled plugin, sorted by plugin name, in config order."""
    return [entry for name, plugin in sorted(cfg.plugins.items()) if plugin.enabled
            for entry in parse_plugin_schedules(name, plugin)]


def schedule_refusal(cfg: Config) -> str | None:
    """The first invalid schedule's message (for a boot gate), or None when all parse."""
    for entry in enabled_schedules(cfg):
        if entry.error is not None:
            return entry.error
    return None


def validate_schedules(cfg: Config) -> None:
    """Raise ConfigError naming the key (plugins.<name>.schedules[i]) of the first bad entry."""
    for entry in enabled_schedules(cfg):
        if entry.error is not None:
            raise ConfigError(entry.error, path=cfg.config_path,
                              key=f"plugins.{entry.plugin}.schedules[{entry.index}]")
