"""`ductile config check`: boot's side-effect-free gates, run from the CLI.

Which gates run is not written here: `states/boot.yaml` lists them under `side_effect_free`, and
the facts they judge are gathered by the same functions boot uses (`ductile/boot/gather.py`).
Unlike boot, which stops at the first refusal, the check reports every gate that refuses,
stopping only where a later gate would have nothing to judge (no config parsed, no plugin
discovered). The doctor's findings (`ductile/config/doctor.py`) are added to the report whether
or not `service.admission.validate_config_on_boot` makes boot enforce them.
"""

from __future__ import annotations

import os
from typing import Any

# Without the vault key this user cannot see inside the vault ("vault-blind"): what the daemon
# (which has the key) would resolve is unknown here, so these refusals are only warnings.
_BLIND_GATES = ("secret_refs_resolved", "api_tokens_resolved")
# A refusal here leaves nothing for the gates after it to judge.
_STOPPING_GATES = ("config_found", "config_loaded", "plugins_discovered", "aliases_resolved")
# These judge what the vault holds. When the vault file exists but cannot be opened (gate
# vault_opened refused), the check knows nothing about its contents, so their refusals would
# be false advice ("not found in the vault; mint it" for a secret that is there): boot never
# reaches them in that state, and the check reports them as not checked instead.
_VAULT_CONTENT_GATES = ("secret_refs_resolved", "api_has_tokens", "api_tokens_resolved")
_NOT_CHECKED = ("not checked: the vault cannot be opened (see vault_opened), so whether it "
                "holds the secrets this gate needs is unknown; fix vault_opened and check again")
_TOKENS_KEY = "api.auth.tokens"


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
        if facts.vault_error is not None and gate in _VAULT_CONTENT_GATES:
            warnings.append({"category": gate, "message": _NOT_CHECKED})
            continue
        blind = facts.vault_status == "blind" and gate in _BLIND_GATES
        (warnings if blind else errors).append(entry)
        if gate in _STOPPING_GATES:
            return report
    _add_doctor_findings(facts.doctor, errors, warnings,
                         vault_unreadable=facts.vault_error is not None)
    report["valid"] = not errors
    report["posture"] = facts.posture
    report["plugins"] = sorted(facts.plugins)
    if facts.config is not None:
        report["tokens"] = token_scopes(facts.config.api.tokens)
    return report


def token_scopes(tokens: Any) -> list[dict[str, Any]]:
    """Each API token's granted scopes as written, and its effective scopes in the newest
    names (what the API checks): an old config's `jobs:ro` shows as the four `jobs:*:ro`."""
    from ductile.config.scopes import effective

    return [{"name": t.name or t.secret_ref, "scopes": list(t.scopes),
             "effective": sorted(effective(t.scopes))} for t in tokens]


def _add_doctor_findings(doctor: Any, errors: list[dict[str, str]],
                         warnings: list[dict[str, str]], *, vault_unreadable: bool) -> None:
    """The doctor's findings, whatever service.admission.validate_config_on_boot says: with the
    switch off boot only logs them, but an error still means the config is not as meant (the Go
    gateway's `config check` judges the same way). Under the switch the gate
    config_doctor_passed is listed as well, since boot would refuse there.

    With a vault that cannot be opened the doctor sees no vault, so its "no token and no vault"
    error would be false too: it is left out, as the vault gates are."""
    if doctor is None:
        return
    for finding in doctor.errors:
        if vault_unreadable and finding.category == "api" and finding.field == _TOKENS_KEY:
            continue
        errors.append(finding.as_dict())
    warnings.extend(finding.as_dict() for finding in doctor.warnings)


def human_report(report: dict[str, Any]) -> list[str]:
    """The lines `config check` prints: the verdict, then one line per finding
    (`  ERROR [category] file: field: message`), then which config was checked."""
    errors, warnings = report["errors"], report["warnings"]
    if not report["valid"]:
        head = f"Configuration invalid ({len(errors)} error(s), {len(warnings)} warning(s))"
    elif warnings:
        head = f"Configuration valid ({len(warnings)} warning(s))"
    else:
        head = "Configuration valid."
    lines = [head]
    lines += [f"  ERROR [{e['category']}] {_where(e)}{e['message']}" for e in errors]
    lines += [f"  WARN  [{w['category']}] {_where(w)}{w['message']}" for w in warnings]
    for token in report.get("tokens", ()):
        lines.append(f"Token {token['name']}: effective scopes "
                     f"{', '.join(token['effective']) or '(none)'}")
    if report.get("path"):
        lines.append(f"Checked: {report['path']} ({report.get('source')})")
    return lines


def _where(finding: dict[str, str]) -> str:
    return "".join(f"{finding[part]}: " for part in ("file", "field") if finding.get(part))
