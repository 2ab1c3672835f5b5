"""The boot facts that can be gathered without side effects, shared by boot and `config check`.

Boot (`boot/runtime.py`) gathers facts with real I/O, then fires a phase of `states/boot.yaml`
whose gates judge them. Some of that I/O changes the world (the PID lock, opening and migrating
the database, recovering orphans, recording a snapshot, binding sockets); the rest only reads
(the config files, the plugin roots, the vault). `states/boot.yaml` lists the gates that judge
only read facts under `side_effect_free`, and `config check` runs exactly those, over facts
gathered by exactly these functions, so the check cannot drift from what boot would refuse.

Each gatherer records into `BootFacts` and returns the warnings it met, for its caller to log
or report; none of them logs or writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ductile.boot.gates import BootFacts, decide_posture
from ductile.errors import ConfigError, DiscoveryError

if TYPE_CHECKING:
    from ductile.config.schema import Config
    from ductile.vault.owner import VaultLoad, VaultOwner

DEFAULT_ETC_DIR = "/etc/ductile"


@dataclass
class Warned:
    """The warnings of a dry run, by where they came from (config, plugin, vault, pipeline)."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, category: str, messages: tuple[str, ...] | list[str]) -> None:
        self.items.extend((category, message) for message in messages)


def gather_config(facts: BootFacts, explicit: str | None, environ: Mapping[str, str],
                  home: str, etc_dir: str = DEFAULT_ETC_DIR) -> None:
    """Resolve, parse and validate the config (gates config_found, config_loaded,
    config_valid). `facts.config` is set whenever it parsed, even when invalid."""
    from ductile.config.load import parse_config, validate_config
    from ductile.config.resolve import resolve_config

    try:
        facts.config_path, facts.source = resolve_config(explicit, environ, home,
                                                         etc_dir=etc_dir)
    except ConfigError as exc:
        facts.resolve_error = str(exc)
        return
    try:
        cfg = parse_config(facts.config_path, source=facts.source, environ=environ)
    except ConfigError as exc:
        facts.load_error = str(exc)
        return
    try:
        validate_config(cfg)
    except ConfigError as exc:
        facts.validate_error = str(exc)
    facts.config = cfg


def gather_symlinks(cfg: Config, facts: BootFacts) -> None:
    """Every config path that resolves through a symlink (gate no_unallowed_symlinks)."""
    paths = [cfg.config_dir, cfg.config_path, *(f.path for f in cfg.source_files)]
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        try:
            resolved = os.path.realpath(path, strict=True)
        except OSError as exc:
            facts.symlink_error = f"failed to resolve symlinks for {path!r}: {exc.strerror}"
            return
        if resolved != os.path.normpath(os.path.abspath(path)):
            facts.symlinks.append((path, resolved))


def gather_plugins(cfg: Config, facts: BootFacts) -> tuple[str, ...]:
    """Discover and trust the plugins, then apply the config's aliases (gates
    plugins_discovered, aliases_resolved). Blocking file I/O. Returns discovery warnings."""
    from ductile.config.aliases import apply_aliases
    from ductile.plugin.discovery import discover

    try:
        found = discover(cfg.plugin_roots, allow_symlinks=cfg.service.allow_symlinks)
    except DiscoveryError as exc:
        facts.discovery_error = str(exc)
        return ()
    facts.shadowed = found.shadowed
    try:
        facts.plugins = apply_aliases(found.plugins, cfg.plugins)
    except DiscoveryError as exc:
        facts.alias_error = str(exc)
    return tuple(found.warnings)


def gather_vault_facts(
    cfg: Config, facts: BootFacts, environ: Mapping[str, str], home: str
) -> tuple[VaultLoad | None, tuple[str, ...]]:
    """Open the configured vault and record what the vault gates judge (status, path, the
    gateway-visible secrets, or the error). Blocking file I/O. Returns the load (None on
    error) and the projection's warnings."""
    from ductile.errors import VaultError
    from ductile.vault.owner import load_vault

    try:
        loaded = load_vault(cfg.config_dir, cfg.secrets.vault_file, cfg.secrets.key_file,
                            environ, home)
    except VaultError as exc:
        facts.vault_error = str(exc)
        return None, ()
    facts.vault_status, facts.vault_path = loaded.status, loaded.vault_path
    if loaded.owner is None:
        return loaded, ()
    resolved = loaded.owner.resolved_secrets()
    facts.secrets = dict(resolved.values)
    return loaded, tuple(resolved.warnings)


def gather_integrity(cfg: Config, facts: BootFacts, owner: VaultOwner | None) -> tuple[str, ...]:
    """Read the `.checksums` seal and hash what it covers, plugins keyed with the vault's nonce
    (gate integrity_verified). Blocking file I/O, after the vault and discovery. Returns the
    findings that do not refuse under the policy, for the caller to log or report."""
    from ductile.config.integrity import (collect_seal_facts, integrity_policy, refusal_text,
                                          verify_integrity)
    from ductile.errors import VaultError

    nonce, problem = None, None
    if owner is not None:
        try:
            nonce = owner.nonce
        except VaultError as exc:
            problem = str(exc)
    elif facts.vault_error is not None:
        problem = "the vault cannot be opened (see gate vault_opened)"
    elif facts.vault_status == "blind":
        problem = f"the vault {facts.vault_path} cannot be opened without its key"
    facts.integrity = seal = collect_seal_facts(
        cfg.config_dir, cfg.config_path, plugin_confs=cfg.plugins, plugins=facts.plugins,
        nonce=nonce, nonce_problem=problem)
    previous = facts.previous.service.admission if facts.previous is not None else None
    policy = integrity_policy(reason=facts.reason, admission=cfg.service.admission,
                              previous=previous, sealed=seal.sealed)
    if not policy.verify:
        if seal.sealed and facts.reason == "startup":
            return (f"the seal {seal.seal_path} is not verified at startup because "
                    "service.admission.verify_integrity_on_boot is false (a reload verifies it)",)
        return ()
    verdict = verify_integrity(seal)
    if refusal_text(verdict, reason=facts.reason, fail_on_drift=policy.fail_on_drift):
        return ()  # the gate refuses with every finding
    return verdict.warnings


def gather_relay(cfg: Config, facts: BootFacts) -> None:
    """The relay's instances and peers with their keys from the vault (judged with the secret
    refs by secret_refs_resolved)."""
    from ductile.relay.service import build

    facts.relay, problems = build(cfg.relay, cfg.service.name, facts.secrets)
    facts.relay_problems = tuple(problems)


def gather_schedules(cfg: Config, facts: BootFacts) -> None:
    """The first schedule that cannot parse or can never fire (gate schedules_valid)."""
    from ductile.schedule.validate import reachability_refusal, schedule_refusal

    facts.schedule_error = (schedule_refusal(cfg)
                            or reachability_refusal(cfg, datetime.now(timezone.utc)))


def gather_pipelines(cfg: Config, facts: BootFacts) -> tuple[str, ...]:
    """Compile every `pipelines:` entry against the enabled plugins (gate
    pipelines_compiled). Returns the compiler's warnings."""
    from ductile.errors import PipelineCompileError
    from ductile.router.dsl import compile_pipelines

    catalog = {name: {c.name for c in plugin.manifest.commands}
               for name, plugin in facts.plugins.items() if cfg.plugin(name).enabled}
    try:
        compiled = compile_pipelines(cfg.pipelines, catalog,
                                     default_max_depth=cfg.service.max_route_depth,
                                     hook_max_depth=cfg.service.hook_max_depth,
                                     relay_instances=[i.name for i in cfg.relay.instances
                                                      if i.enabled])
    except PipelineCompileError as exc:
        facts.pipelines_error = str(exc)
        return ()
    facts.pipelines = compiled
    return tuple(compiled.warnings)


def gather_posture(cfg: Config, facts: BootFacts) -> None:
    """Closed, gateway or management-only (gates api_has_tokens, api_tokens_resolved)."""
    facts.posture = decide_posture(cfg, has_vault=facts.vault_status == "loaded")


def gather_accounts(cfg: Config, facts: BootFacts) -> None:
    """Resolve `accounts:` against the passwd and group databases (gate accounts_resolved)."""
    from ductile.privsep.accounts import resolve_accounts

    facts.accounts, problems = resolve_accounts(cfg.accounts)
    facts.account_problems = tuple(problems)


def gather_tls(cfg: Config, facts: BootFacts) -> None:
    """Load the certificate and key of each listener with a `tls` block into a server context
    (gate tls_material_loadable). Reads the files only; nothing is served from here."""
    from ductile.errors import TlsMaterialError
    from ductile.planes.tls import server_context

    for name, tls in (("api", cfg.api.tls), ("webhooks", cfg.webhooks.tls)):
        if tls is None:
            continue
        try:
            facts.tls[name] = server_context(tls.cert_file, tls.key_file, key=f"{name}.tls")
        except TlsMaterialError as exc:
            facts.tls_error = str(exc)
            return


def gather_doctor(cfg: Config, facts: BootFacts) -> None:
    """The doctor's review of everything gathered so far, and the keys the loader ignored
    (gate config_doctor_passed). Pure: it reads only facts, so it follows the pipelines."""
    from ductile.config.doctor import diagnose, ignored_keys

    facts.doctor = diagnose(cfg, facts.plugins, pipelines=facts.pipelines,
                            vault_present=facts.vault_status == "loaded",
                            shadowed=facts.shadowed)
    facts.ignored_keys = ignored_keys(cfg)


def dry_run(explicit: str | None, environ: Mapping[str, str], home: str,
            etc_dir: str = DEFAULT_ETC_DIR) -> tuple[BootFacts, Warned]:
    """Every side-effect-free fact, gathered in boot's phase order.

    Stops where a later phase has nothing to work on: no config parsed, or no plugin
    discovered (every enabled plugin would then look missing).
    """
    facts, warned = BootFacts(), Warned()
    gather_config(facts, explicit, environ, home, etc_dir)
    cfg = facts.config
    if cfg is None:
        return facts, warned
    warned.add("config", list(cfg.warnings))
    gather_symlinks(cfg, facts)
    warned.add("plugin", gather_plugins(cfg, facts))
    if facts.discovery_error is not None or facts.alias_error is not None:
        return facts, warned
    vault, vault_warnings = gather_vault_facts(cfg, facts, environ, home)
    warned.add("vault", vault_warnings)
    warned.add("integrity", gather_integrity(cfg, facts, vault.owner if vault else None))
    gather_relay(cfg, facts)
    gather_schedules(cfg, facts)
    gather_accounts(cfg, facts)
    gather_tls(cfg, facts)
    warned.add("pipeline", gather_pipelines(cfg, facts))
    gather_doctor(cfg, facts)
    gather_posture(cfg, facts)
    return facts, warned
