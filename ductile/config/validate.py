"""Structural validation of a loaded Config, in Go ductile's order (the first error wins).

Checks run in the reference order so an operator fixing one error at a time meets them in the
same sequence as with the Go gateway: tick interval, hook depth, workers, retention vs dedupe,
log level, state path, plugin roots, API auth, then each enabled plugin (sorted by name).
Schedule checks here are the structural ones boot needs; the scheduler deepens them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ductile.config.accounts import validate_accounts
from ductile.config.durations import DurationError, format_duration, parse_duration
from ductile.config.interpolate import first_unresolved
from ductile.config.relay import validate_relay
from ductile.config.schema import Config, PluginConf
from ductile.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warn", "error")
MIN_TICK_INTERVAL = 0.1
DEFAULT_HOOK_MAX_DEPTH = 4
SCHEDULE_KINDS = ("every", "cron", "at", "after")
INTERVAL_ALIASES = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 7 * 86400.0,
    "monthly": 30 * 86400.0,
}


def validate_config(cfg: Config) -> None:
    """Raise ConfigError for the first structural problem; return None when the config is usable."""
    for check in _CHECKS:
        check(cfg)


def parse_interval(text: str) -> float:
    """A schedule `every:` value in seconds: hourly/daily/weekly/monthly(30d) or a duration > 0.

    Raises DurationError (whose message completes `invalid schedule interval "x": ...`).
    """
    normalized = text.strip()
    if not normalized:
        raise DurationError("value cannot be empty")
    alias = INTERVAL_ALIASES.get(normalized.lower())
    if alias is not None:
        return alias
    seconds = parse_duration(normalized)
    if not seconds > 0:
        raise DurationError("interval must be positive")
    return seconds


def go_quote(text: str) -> str:
    """Render a string the way Go's %q does for ordinary text (double quotes, escapes)."""
    return json.dumps(text, ensure_ascii=False)


def _error(cfg: Config, key: str, message: str) -> ConfigError:
    return ConfigError(message, path=cfg.config_path or None, key=key)


def _check_tick_interval(cfg: Config) -> None:
    tick = cfg.service.tick_interval
    if tick <= 0:
        raise _error(cfg, "service.tick_interval", "service.tick_interval must be positive")
    if tick < MIN_TICK_INTERVAL:
        raise _error(
            cfg, "service.tick_interval",
            f"service.tick_interval {format_duration(tick)} is below the minimum allowed (100ms)",
        )


def _check_hook_max_depth(cfg: Config) -> None:
    depth = cfg.service.hook_max_depth
    if depth < 0:
        raise _error(
            cfg, "service.hook_max_depth",
            f"service.hook_max_depth {depth} must be >= 0 "
            f"(0 means use default {DEFAULT_HOOK_MAX_DEPTH})",
        )


def _check_max_route_depth(cfg: Config) -> None:
    depth = cfg.service.max_route_depth
    if depth < 0:
        raise _error(cfg, "service.max_route_depth",
                     f"service.max_route_depth {depth} must be >= 0 (0 means use default 32)")


def _check_max_workers(cfg: Config) -> None:
    if cfg.service.max_workers <= 0:
        raise _error(cfg, "service.max_workers", "service.max_workers must be positive")


def _check_retention(cfg: Config) -> None:
    service = cfg.service
    if service.job_queue_retention < service.dedupe_ttl:
        raise _error(
            cfg, "service.job_queue_retention",
            f"service.job_queue_retention ({format_duration(service.job_queue_retention)}) "
            f"must be >= service.dedupe_ttl ({format_duration(service.dedupe_ttl)}) "
            "because dedupe checks use terminal rows in job_queue",
        )


def _check_log_level(cfg: Config) -> None:
    level = cfg.service.log_level
    if level not in LOG_LEVELS:
        raise _error(
            cfg, "service.log_level",
            f"service.log_level must be one of: {', '.join(LOG_LEVELS)} (got {go_quote(level)})",
        )


def _check_state_path(cfg: Config) -> None:
    if not cfg.state_path:
        raise _error(cfg, "state.path", "state.path is required")


def _check_plugin_roots(cfg: Config) -> None:
    if not cfg.plugin_roots:
        raise _error(cfg, "plugin_roots", "plugin_roots is required")


def _check_api_auth(cfg: Config) -> None:
    """Token entries are checked at load (vault-only, per file). Whether an enabled API with no
    token may boot depends on the vault (management-only posture), so boot decides that."""
    for index, token in enumerate(cfg.api.tokens):
        if not token.secret_ref.strip():
            key = f"api.auth.tokens[{index}]"
            raise _error(cfg, key, f"{key}: secret_ref is required (API tokens are vault-only)")


def api_without_token(cfg: Config, *, has_vault: bool) -> str | None:
    """The refusal for an enabled API with no token and no vault to mint one, else None."""
    if cfg.api.enabled and not cfg.api.tokens and not has_vault:
        return ("api.auth.tokens must be configured when API is enabled (or create a vault to "
                "bootstrap one: ductile config init, or ductile vault init; see docs/vault.md)")
    return None


def _check_plugins(cfg: Config) -> None:
    for name, plugin in sorted(cfg.plugins.items()):
        if plugin.enabled:
            _check_plugin(cfg, name, plugin)


def _check_plugin(cfg: Config, name: str, plugin: PluginConf) -> None:
    label = f"plugin {go_quote(name)}"
    key = f"plugins.{name}"
    if "schedule" in _raw_plugin(cfg, name):
        raise _error(cfg, f"{key}.schedule",
                     f"{label}: schedule is no longer supported; use schedules[]")
    if plugin.parallelism is not None:
        if plugin.parallelism < 1:
            raise _error(cfg, f"{key}.parallelism", f"{label}: parallelism must be >= 1")
        if plugin.parallelism > cfg.service.max_workers:
            raise _error(
                cfg, f"{key}.parallelism",
                f"{label}: parallelism ({plugin.parallelism}) cannot exceed "
                f"service.max_workers ({cfg.service.max_workers})",
            )
    _check_schedules(cfg, name, plugin)
    missing = first_unresolved(plugin.config)
    if missing is not None:
        raise _error(cfg, f"{key}.config",
                     f"{label}: environment variable ${{{missing}}} is not set")


def _check_schedules(cfg: Config, name: str, plugin: PluginConf) -> None:
    label = f"plugin {go_quote(name)}"
    seen: set[str] = set()
    for index, schedule in enumerate(plugin.schedules):
        where = f"schedules[{index}]"
        key = f"plugins.{name}.{where}"
        kinds = [kind for kind in SCHEDULE_KINDS if schedule.raw.get(kind)]
        if not kinds:
            raise _error(cfg, key, f"{label}: {where} requires one of every, cron, at, or after")
        if len(kinds) > 1:
            raise _error(cfg, key,
                         f"{label}: {where} must set exactly one of every, cron, at, or after")
        every = schedule.raw.get("every")
        if isinstance(every, str):
            try:
                parse_interval(every)
            except DurationError as exc:
                raise _error(cfg, f"{key}.every", f"{label}: invalid schedule interval "
                                                  f"{go_quote(every)}: {exc}") from exc
        if schedule.command == "handle":
            raise _error(cfg, f"{key}.command",
                         f"{label}: {where}.command \"handle\" cannot be scheduled")
        if schedule.id in seen:
            raise _error(cfg, key, f"{label}: duplicate schedule id {go_quote(schedule.id)}")
        seen.add(schedule.id)


def _raw_plugin(cfg: Config, name: str) -> Mapping[str, Any]:
    """The merged YAML stanza (plugins are replaced whole, so this is the effective one)."""
    plugins = cfg.raw.get("plugins")
    stanza = plugins.get(name) if isinstance(plugins, Mapping) else None
    return stanza if isinstance(stanza, Mapping) else {}


def _check_accounts(cfg: Config) -> None:
    """The `accounts:` table and every plugin's `run_as` grant (config/accounts.py)."""
    validate_accounts(cfg.accounts, {name: p.run_as for name, p in cfg.plugins.items()})


def _check_relay(cfg: Config) -> None:
    """`instances:` and `remote_ingress:` (config/relay.py); secret_refs resolve at boot."""
    validate_relay(cfg.relay, cfg.service.name)


_CHECKS: tuple[Callable[[Config], None], ...] = (
    _check_tick_interval,
    _check_hook_max_depth,
    _check_max_route_depth,
    _check_max_workers,
    _check_retention,
    _check_log_level,
    _check_state_path,
    _check_plugin_roots,
    _check_api_auth,
    _check_plugins,
    _check_accounts,
    _check_relay,
)
