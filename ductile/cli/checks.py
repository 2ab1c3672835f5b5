"""`ductile config check`: boot's side-effect-free gates, run from the CLI.

Which gates run is not written here: `states/boot.yaml` lists them under `side_effect_free`, and
the facts they judge are gathered by the same functions boot uses (`ductile/boot/gather.py`).
Unlike boot, which stops at the first refusal, the check reports every gate that refuses,
stopping only where a later gate would have nothing to judge (no config parsed, no plugin
discovered).
"""

from __future__ import annotations

import os
from typing import Any

# Without the vault key this user cannot see inside the vault ("vault-blind"): what the daemon
# (which has the key) would resolve is unknown here, so these refusals are only warnings.
_BLIND_GATES = ("secret_refs_resolved", "api_tokens_resolved")
# A refusal here leaves nothing for the gates after it to judge.
_STOPPING_GATES = ("config_found", "config_loaded", "plugins_discovered", "aliases_resolved")


def check_config(config_path: str | None) -> dict[str, Any]:
    from ductile.boot.gates import GATES
    from ductile.boot.gather import dry_run
    from ductile.machines import load_machine

    facts, warned = dry_run(config_path, os.environ, os.path.expanduser("~"))
    errors: list[dict[str, str]] = []
    warnings = [{"category": category, "message": message}
                for category, message in warned.items]
    report: dict[str, Any] = {"valid": False, "errors": errors, "warnings": warnings}
    if facts.config_path is not None:
        report["path"], report["source"] = facts.config_path, facts.source
    for gate in load_machine("boot").side_effect_free:
        refusal = GATES[gate](facts)
        if refusal is None:
            continue
        entry = {"category": refusal.gate, "message": refusal.reason}
        blind = facts.vault_status == "blind" and gate in _BLIND_GATES
        (warnings if blind else errors).append(entry)
        if gate in _STOPPING_GATES:
            return report
    report["valid"] = not errors
    report["posture"] = facts.posture
    report["plugins"] = sorted(facts.plugins)
    return report
