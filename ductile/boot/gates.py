"""One small pure function per boot gate: facts -> None (pass) or Refusal.

The boot driver (`runtime.py`) does the I/O (reading config, taking the lock, walking plugin roots,
opening SQLite, binding sockets) and records what it found in `BootFacts`. Gates only judge those
facts, so each refusal is easy to test and its message can say exactly what to do next. Every gate
here is named in `states/boot.yaml`, and every gate named there is here (a test checks both ways).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ductile.config.schema import Config


@dataclass(frozen=True)
class Refusal:
    gate: str
    reason: str


@dataclass
class BootFacts:
    """What the driver found. `None` errors mean the step succeeded."""

    reason: str = "startup"  # startup | reload
    config_path: str | None = None
    source: str | None = None
    resolve_error: str | None = None
    load_error: str | None = None
    validate_error: str | None = None
    config: Config | None = None
    previous: Config | None = None  # the serving generation's config, on reload
    lock_error: str | None = None
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    symlink_error: str | None = None
    discovery_error: str | None = None
    alias_error: str | None = None
    plugins: dict[str, Any] = field(default_factory=dict)  # name -> discovery.Plugin
    db_error: str | None = None
    recovery_error: str | None = None
    snapshot_id: str | None = None
    snapshot_error: str | None = None
    bind_error: str | None = None
    listeners: tuple[str, ...] = ()


Gate = Callable[[BootFacts], "Refusal | None"]


def config_found(f: BootFacts) -> Refusal | None:
    if f.resolve_error is not None:
        return Refusal("config_found", f.resolve_error)
    return None


def config_loaded(f: BootFacts) -> Refusal | None:
    if f.load_error is not None:
        return Refusal("config_loaded", f"Failed to load config: {f.load_error}")
    return None


def config_valid(f: BootFacts) -> Refusal | None:
    if f.validate_error is not None:
        return Refusal("config_valid", f"invalid configuration: {f.validate_error}")
    return None


def pid_lock_acquired(f: BootFacts) -> Refusal | None:
    if f.lock_error is not None:
        return Refusal(
            "pid_lock_acquired",
            f"Failed to acquire PID lock (another instance may be running): {f.lock_error}",
        )
    return None


def restart_only_keys_unchanged(f: BootFacts) -> Refusal | None:
    """A reload cannot move the database or the listener: those are bound once per process."""
    old, new = f.previous, f.config
    if old is None or new is None:
        return None
    for key, before, after in (
        ("state.path", old.state_path, new.state_path),
        ("api.listen", old.api.listen, new.api.listen),
        ("api.enabled", old.api.enabled, new.api.enabled),
    ):
        if before != after:
            return Refusal(
                "restart_only_keys_unchanged",
                f"config reload rejected: changes to {key} require a full restart "
                f"({before!r} -> {after!r}); restart the service to apply them",
            )
    return None


def no_unallowed_symlinks(f: BootFacts) -> Refusal | None:
    if f.symlink_error is not None:
        return Refusal("no_unallowed_symlinks", f.symlink_error)
    if f.symlinks and not (f.config and f.config.service.allow_symlinks):
        listed = ", ".join(f"{p} -> {r}" for p, r in f.symlinks)
        return Refusal(
            "no_unallowed_symlinks",
            f"symlinks detected in config paths but not allowed: {listed}; "
            "replace them with real files or set service.allow_symlinks: true",
        )
    return None


def plugins_discovered(f: BootFacts) -> Refusal | None:
    if f.discovery_error is not None:
        return Refusal("plugins_discovered", f.discovery_error)
    return None


def aliases_resolved(f: BootFacts) -> Refusal | None:
    if f.alias_error is not None:
        return Refusal("aliases_resolved", f.alias_error)
    return None


def enabled_plugins_discoverable(f: BootFacts) -> Refusal | None:
    assert f.config is not None
    for name, conf in sorted(f.config.plugins.items()):
        if conf.enabled and name not in f.plugins:
            return Refusal(
                "enabled_plugins_discoverable",
                f"plugin {name!r} is configured but not discoverable; check plugin_roots "
                "and the warnings logged for its manifest.yaml, or set enabled: false",
            )
    return None


def scheduled_commands_declared(f: BootFacts) -> Refusal | None:
    assert f.config is not None
    for name, conf in sorted(f.config.plugins.items()):
        plugin = f.plugins.get(name)
        if not conf.enabled or plugin is None:
            continue
        for schedule in conf.schedules:
            if not plugin.supports(schedule.command):
                return Refusal(
                    "scheduled_commands_declared",
                    f"plugin {name!r} schedule {schedule.id!r} references unsupported command "
                    f"{schedule.command!r}",
                )
    return None


def database_opened(f: BootFacts) -> Refusal | None:
    if f.db_error is not None:
        return Refusal("database_opened", f.db_error)
    return None


def orphans_recovered(f: BootFacts) -> Refusal | None:
    if f.recovery_error is not None:
        return Refusal("orphans_recovered", f"crash recovery failed: {f.recovery_error}")
    return None


def config_snapshot_recorded(f: BootFacts) -> Refusal | None:
    if f.snapshot_error is not None or f.snapshot_id is None:
        return Refusal(
            "config_snapshot_recorded",
            f"could not record the config snapshot: {f.snapshot_error or 'no snapshot id'}",
        )
    return None


def api_has_tokens(f: BootFacts) -> Refusal | None:
    """Fail closed: an enabled API never opens without a credential."""
    assert f.config is not None
    if f.config.api.enabled and not f.config.api.tokens:
        return Refusal(
            "api_has_tokens",
            "no API tokens configured: api.enabled is true but api.auth.tokens is empty; "
            "add a token (token: ${DUCTILE_TOKEN}) or set api.enabled: false",
        )
    return None


def api_tokens_resolved(f: BootFacts) -> Refusal | None:
    assert f.config is not None
    if not f.config.api.enabled:
        return None
    for i, token in enumerate(f.config.api.tokens):
        if not token.token.strip():
            return Refusal("api_tokens_resolved", f"api tokens: api.auth.tokens[{i}] is empty")
        if "${" in token.token:
            return Refusal(
                "api_tokens_resolved",
                f"api tokens: api.auth.tokens[{i}].token still contains an unset ${{VAR}}; "
                "export it or list its env file under environment_vars.include",
            )
    return None


def listeners_bound(f: BootFacts) -> Refusal | None:
    if f.bind_error is not None:
        return Refusal("listeners_bound", f.bind_error)
    return None


GATES: dict[str, Gate] = {
    gate.__name__: gate
    for gate in (
        config_found,
        config_loaded,
        config_valid,
        pid_lock_acquired,
        restart_only_keys_unchanged,
        no_unallowed_symlinks,
        plugins_discovered,
        aliases_resolved,
        enabled_plugins_discoverable,
        scheduled_commands_declared,
        database_opened,
        orphans_recovered,
        config_snapshot_recorded,
        api_has_tokens,
        api_tokens_resolved,
        listeners_bound,
    )
}


def decide_posture(config: Config) -> str:
    """`closed` when the API is off; `gateway` when it is on (api_has_tokens guarantees a token)."""
    return "gateway" if config.api.enabled else "closed"
