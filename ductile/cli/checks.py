"""`ductile config check`: the boot gates that need no side effects, run from the CLI."""

from __future__ import annotations

import os
from typing import Any


def check_config(config_path: str | None) -> dict[str, Any]:
    from ductile.boot import gates
    from ductile.boot.runtime import gather_vault_facts, schedule_problem
    from ductile.config.load import parse_config, validate_config
    from ductile.config.resolve import resolve_config
    from ductile.errors import ConfigError, DiscoveryError
    from ductile.config.aliases import apply_aliases
    from ductile.plugin.discovery import discover

    errors: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    report: dict[str, Any] = {"valid": False, "errors": errors, "warnings": warnings}
    try:
        path, source = resolve_config(config_path, os.environ, os.path.expanduser("~"))
        report["path"], report["source"] = path, source
        cfg = parse_config(path, source=source, environ=os.environ)
    except ConfigError as exc:
        errors.append({"category": "config", "message": str(exc)})
        return report
    warnings.extend({"category": "config", "message": w} for w in cfg.warnings)
    try:
        validate_config(cfg)
    except ConfigError as exc:
        errors.append({"category": "validation", "message": str(exc)})
    try:
        found = discover(cfg.plugin_roots, allow_symlinks=cfg.service.allow_symlinks)
        warnings.extend({"category": "plugin", "message": w} for w in found.warnings)
        plugins = apply_aliases(found.plugins, cfg.plugins)
    except DiscoveryError as exc:
        errors.append({"category": "plugin", "message": str(exc)})
        return report
    facts = gates.BootFacts(config=cfg, plugins=plugins)
    gather_vault_facts(cfg, facts, os.environ, os.path.expanduser("~"))
    facts.posture = gates.decide_posture(cfg, has_vault=facts.vault_status == "loaded")
    facts.schedule_error = schedule_problem(cfg)
    report["posture"] = facts.posture
    for gate in (gates.enabled_plugins_discoverable, gates.scheduled_commands_declared,
                 gates.schedules_valid, gates.webhook_targets_admitted, gates.vault_opened,
                 gates.secret_refs_resolved, gates.api_has_tokens, gates.api_tokens_resolved):
        refusal = gate(facts)
        if refusal is None:
            continue
        entry = {"category": refusal.gate, "message": refusal.reason}
        # Without the key this user cannot see inside the vault ("vault-blind"): what the
        # daemon (which has the key) would resolve is unknown here, so it is not an error.
        blind = facts.vault_status == "blind" and refusal.gate in (
            "secret_refs_resolved", "api_tokens_resolved")
        (warnings if blind else errors).append(entry)
    report["valid"] = not errors
    report["plugins"] = sorted(plugins)
    return report
