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

from ductile.config.state import STATE_FIELDS
from ductile.errors import SchemaTooNew

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
    # The state database's schema: the version the file had when opened, the newest this
    # release knows (what an older file was migrated to), the backup a migration wrote, and
    # the reason a migration failed (rolled back: the file is unchanged).
    schema_path: str | None = None
    schema_version: int | None = None
    schema_supported: int | None = None
    schema_backup: str | None = None
    schema_error: str | None = None
    recovery_error: str | None = None
    snapshot_id: str | None = None
    snapshot_error: str | None = None
    bind_error: str | None = None
    listeners: tuple[str, ...] = ()
    # The vault: "absent" (no vault file), "blind" (a file but no key), "loaded"; a broken
    # vault or key is vault_error. `secrets` is its gateway-visible projection (name -> value).
    vault_status: str = "absent"
    vault_error: str | None = None
    vault_path: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    posture: str | None = None
    schedule_error: str | None = None
    # The compiled `pipelines:` (a router.PipelineSet), or the compiler's refusal text.
    pipelines: Any = None
    pipelines_error: str | None = None
    # Plugin names two roots provide (discovery.Shadowed), the doctor's review (a
    # config.doctor.DoctorResult; None: not gathered) and the keys the loader did not
    # understand (strict decode; both judged by config_doctor_passed).
    shadowed: tuple[Any, ...] = ()
    doctor: Any = None
    ignored_keys: tuple[str, ...] = ()
    # The integrity seal as found (a config.integrity.SealFacts); None: not gathered.
    integrity: Any = None
    # The relay resolved against the vault (a relay.service.RelayService) and the secrets that
    # resolve but are unusable as keys (judged by secret_refs_resolved).
    relay: Any = None
    relay_problems: tuple[str, ...] = ()
    # Privilege separation: the resolved accounts (name -> privsep.accounts.Account) and what
    # kept others from resolving; the posture decision (privsep.posture.Decision); in the
    # enforcing posture, the filesystem floor (privsep.floor.FloorReport) and the side-door
    # audit (privsep.sidedoor.AuditVerdict). None: not gathered (not enforcing).
    accounts: dict[str, Any] = field(default_factory=dict)
    account_problems: tuple[str, ...] = ()
    privsep: Any = None
    floor: Any = None
    sidedoors: Any = None
    # TLS: the server context loaded for each listener with a `tls` block ("api",
    # "webhooks" -> ssl.SSLContext), or why the first one could not be (gate
    # tls_material_loadable).
    tls: dict[str, Any] = field(default_factory=dict)
    tls_error: str | None = None


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
    state_keys = tuple((f"state.{name}", getattr(old.state, name), getattr(new.state, name))
                       for name in STATE_FIELDS)
    for key, before, after in (
        ("state.path", old.state_path, new.state_path),
        *state_keys,
        ("api.listen", old.api.listen, new.api.listen),
        ("api.enabled", old.api.enabled, new.api.enabled),
        ("webhooks.listen", old.webhooks.listen, new.webhooks.listen),
        ("remote_ingress.listen_path", _listen_path(old), _listen_path(new)),
    ):
        if before != after:
            return Refusal(
                "restart_only_keys_unchanged",
                f"config reload rejected: changes to {key} require a full restart "
                f"({before!r} -> {after!r}); restart the service to apply them",
            )
    return None


def _listen_path(config: Config) -> str:
    """Where the relay receiver is mounted ("" for none): bound once, with the API routes."""
    ingress = config.relay.ingress
    return ingress.listen_path if ingress is not None else ""


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


def schema_migrated(f: BootFacts) -> Refusal | None:
    """The state database is at this release's schema version: an older file was migrated
    (backed up beside itself first). A newer file is refused: migrations only go forward, and
    an older release cannot know what a newer schema means. A failed migration is refused with
    its reason; it was rolled back, so the file is as it was."""
    found, supported = f.schema_version, f.schema_supported
    if found is not None and supported is not None and found > supported:
        return Refusal("schema_migrated",
                       SchemaTooNew.describe(f.schema_path or "(unknown)", found, supported))
    if f.schema_error is not None:
        return Refusal("schema_migrated", f.schema_error)
    return None


def orphans_recovered(f: BootFacts) -> Refusal | None:
    if f.recovery_error is not None:
        return Refusal("orphans_recovered", f"crash recovery failed: {f.recovery_error}")
    return None


def pipelines_compiled(f: BootFacts) -> Refusal | None:
    """Every `pipelines:` entry compiles against the enabled plugins: a pipeline naming an
    unknown plugin, call target or condition would otherwise fail only when an event arrives."""
    if f.pipelines_error is not None:
        return Refusal("pipelines_compiled", f"pipelines refused: {f.pipelines_error}; fix the "
                                             "named pipeline step (see docs/pipelines.md)")
    return None


def config_doctor_passed(f: BootFacts) -> Refusal | None:
    """Under service.admission.validate_config_on_boot the doctor finds no error and the loader
    ignored no key (strict decode). With the switch off this passes: the doctor then only
    reports, through `config check` and GET /system/doctor."""
    from ductile.config.doctor import validation_refusal

    if f.config is None or not f.config.service.admission.validate_config_on_boot:
        return None
    reason = validation_refusal(f.doctor, f.ignored_keys)
    return None if reason is None else Refusal("config_doctor_passed", reason)


def config_snapshot_recorded(f: BootFacts) -> Refusal | None:
    if f.snapshot_error is not None or f.snapshot_id is None:
        return Refusal(
            "config_snapshot_recorded",
            f"could not record the config snapshot: {f.snapshot_error or 'no snapshot id'}",
        )
    return None


def schedules_valid(f: BootFacts) -> Refusal | None:
    """Every schedule of an enabled plugin parses and can fire at least once (a cron whose
    only_between/not_on exclude every match would otherwise sit silent forever)."""
    if f.schedule_error is not None:
        return Refusal("schedules_valid", f"invalid schedule: {f.schedule_error}")
    return None


def webhook_targets_admitted(f: BootFacts) -> Refusal | None:
    """Each webhook endpoint targets an enabled, discovered plugin that declares its command."""
    assert f.config is not None
    for i, endpoint in enumerate(f.config.webhooks.endpoints):
        conf = f.config.plugins.get(endpoint.plugin)
        plugin = f.plugins.get(endpoint.plugin)
        where = f"webhooks.endpoints[{i}] ({endpoint.path})"
        if plugin is None or conf is None or not conf.enabled:
            return Refusal("webhook_targets_admitted",
                           f"{where}: webhook {endpoint.path!r} targets plugin "
                           f"{endpoint.plugin!r} which was not discovered or is not enabled")
        if not plugin.supports(endpoint.command):
            return Refusal("webhook_targets_admitted",
                           f"{where}: plugin {endpoint.plugin!r} does not declare command "
                           f"{endpoint.command!r}")
    return None


def vault_opened(f: BootFacts) -> Refusal | None:
    """A vault that exists but cannot be read fails closed: wrong key, tampered or truncated
    file, a key file others can read. (No vault file at all is fine: nothing needs it yet.)"""
    if f.vault_error is not None:
        return Refusal("vault_opened", f.vault_error)
    return None


def integrity_verified(f: BootFacts) -> Refusal | None:
    """The `.checksums` seal holds when it must (config/integrity.py: at startup under
    verify_integrity_on_boot; on reload whenever a seal exists, with the running config's
    fail_on_drift). After vault_opened because plugin fingerprints are keyed with its nonce."""
    from ductile.config.integrity import integrity_policy, refusal_text, verify_integrity

    if f.integrity is None or f.config is None:
        return None
    previous = f.previous.service.admission if f.previous is not None else None
    policy = integrity_policy(reason=f.reason, admission=f.config.service.admission,
                              previous=previous, sealed=f.integrity.sealed)
    if not policy.verify:
        return None
    reason = refusal_text(verify_integrity(f.integrity), reason=f.reason,
                          fail_on_drift=policy.fail_on_drift)
    return None if reason is None else Refusal("integrity_verified", reason)


def secret_refs_resolved(f: BootFacts) -> Refusal | None:
    """Every webhook `secret_ref` and plugin `*_ref` config value names a gateway-visible vault
    secret. (API tokens are judged with the posture: a fresh vault may not hold one yet.)"""
    assert f.config is not None
    for where, ref in _secret_refs(f.config):
        if ref in f.secrets:
            continue
        if f.vault_status == "absent":
            hint = ("there is no vault yet; create one with ductile vault init (or ductile "
                    "config init) and mint the secret")
        elif f.vault_status == "blind":
            hint = (f"the vault {f.vault_path} exists but no key was found to open it; set "
                    "DUCTILE_VAULT_KEY_FILE or secrets.key_file")
        else:
            hint = "mint it with ductile vault set (and grant it to no plugin-only principal)"
        return Refusal("secret_refs_resolved",
                       f"{where}: secret_ref {ref!r} not found in the vault; {hint}")
    if f.relay_problems:
        return Refusal("secret_refs_resolved", "; ".join(f.relay_problems))
    return None


def _secret_refs(config: Config) -> list[tuple[str, str]]:
    refs = [(f"webhooks.endpoints[{i}]", endpoint.secret_ref)
            for i, endpoint in enumerate(config.webhooks.endpoints)]
    refs += list(config.relay.secret_refs())
    if config.state.shared and config.state.secret_ref:
        refs.append(("state", config.state.secret_ref))
    for name, conf in sorted(config.plugins.items()):
        if not conf.enabled:
            continue
        for key, value in sorted(conf.config.items()):
            if key.endswith("_ref") and isinstance(value, str) and value:
                refs.append((f"plugins.{name}.config.{key}", value))
    return refs


def api_has_tokens(f: BootFacts) -> Refusal | None:
    """Fail closed: an enabled API with no token boots only into the management-only posture,
    which needs a vault to mint a token in; with no vault there is no way in at all."""
    from ductile.config.validate import api_without_token

    assert f.config is not None
    message = api_without_token(f.config, has_vault=f.vault_status == "loaded")
    if message is not None:
        return Refusal("api_has_tokens", f"no API tokens configured: {message}")
    return None


def api_tokens_resolved(f: BootFacts) -> Refusal | None:
    """The gateway never opens on an unminted or empty credential."""
    assert f.config is not None
    if f.posture != "gateway":
        return None
    for i, token in enumerate(f.config.api.tokens):
        value = f.secrets.get(token.secret_ref)
        if value is None:
            where = (f"the vault {f.vault_path} cannot be opened without its key"
                     if f.vault_status == "blind" else "not found in the vault")
            return Refusal("api_tokens_resolved",
                           f"api tokens: api.auth.tokens[{i}]: secret_ref {token.secret_ref!r} "
                           f"{where}; mint it (ductile vault set --name {token.secret_ref}) "
                           "and reload")
        if not value.strip():
            return Refusal("api_tokens_resolved",
                           f"api tokens: api.auth.tokens[{i}]: secret_ref {token.secret_ref!r} "
                           "resolved to an empty value")
    return None


def accounts_resolved(f: BootFacts) -> Refusal | None:
    """Every `accounts:` entry names a user and groups this host has."""
    if f.account_problems:
        return Refusal("accounts_resolved", "privsep accounts: " + "; ".join(f.account_problems))
    return None


def tls_material_loadable(f: BootFacts) -> Refusal | None:
    """Every listener with a `tls` block has a readable certificate chain and a matching,
    unencrypted key that others cannot read. Judged on every reload too, so a renewed
    certificate that is broken is refused while the old one keeps serving."""
    if f.tls_error is not None:
        return Refusal("tls_material_loadable", f"TLS refused: {f.tls_error}")
    return None


def privsep_posture_decided(f: BootFacts) -> Refusal | None:
    """The capability to change uid and the `accounts:` table agree (privsep/posture.py)."""
    if f.privsep is not None and f.privsep.refusal is not None:
        return Refusal("privsep_posture_decided", f.privsep.refusal)
    return None


def filesystem_floor_held(f: BootFacts) -> Refusal | None:
    """Enforcing: every secret file is the gateway's alone and each account has its directory."""
    if f.floor is not None and f.floor.problems:
        count = len(f.floor.problems)
        return Refusal("filesystem_floor_held",
                       f"privsep filesystem floor: {count} path(s) cannot be brought to the "
                       "floor: " + "; ".join(f.floor.problems))
    return None


def side_doors_closed(f: BootFacts) -> Refusal | None:
    """Enforcing, under service.admission.fail_on_sidedoor: no confined account has a way back
    to root (the audit itself always runs and logs its findings)."""
    if f.sidedoors is not None and f.sidedoors.refusal is not None:
        return Refusal("side_doors_closed", f.sidedoors.refusal)
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
        schedules_valid,
        webhook_targets_admitted,
        vault_opened,
        integrity_verified,
        secret_refs_resolved,
        database_opened,
        schema_migrated,
        orphans_recovered,
        pipelines_compiled,
        config_doctor_passed,
        config_snapshot_recorded,
        api_has_tokens,
        api_tokens_resolved,
        accounts_resolved,
        tls_material_loadable,
        privsep_posture_decided,
        filesystem_floor_held,
        side_doors_closed,
        listeners_bound,
    )
}


def decide_posture(config: Config, *, has_vault: bool) -> str:
    """`closed` when the API is off; `management-only` when it is on with no token configured
    but a vault to mint one in; otherwise `gateway` (api_has_tokens refused the rest)."""
    if not config.api.enabled:
        return "closed"
    if not config.api.tokens and has_vault:
        return "management-only"
    return "gateway"
