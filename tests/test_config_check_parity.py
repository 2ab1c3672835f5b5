"""`config check` refuses what boot refuses, for every gate boot judges without side effects.

For each gate listed under `side_effect_free` in states/boot.yaml there is one broken config
below. The real gateway must refuse to start on it (exit 78, naming that gate) and `ductile
config check` must report that gate as an error. A gate added to the list without a broken
config here fails `test_every_side_effect_free_gate_has_a_case`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ductile.machines import load_machine
from support.gateway import free_port, make_vault, run_cli, write_config


def _edit(cfg: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    doc = yaml.safe_load((cfg / "config.yaml").read_text())
    change(doc)
    (cfg / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg


def _base(tmp: Path, **kw: Any) -> Path:
    return write_config(tmp / "cfg", port=free_port(), **kw)


def _echo_schedule(**schedule: Any) -> dict[str, Any]:
    return {"echo": {"enabled": True, "schedules": [{"id": "s", **schedule}]}}


def _symlinked(tmp: Path) -> Path:
    real = _base(tmp)
    link = tmp / "linked"
    link.symlink_to(real, target_is_directory=True)
    return link


def _bad_vault(tmp: Path) -> Path:
    cfg = _base(tmp)
    (cfg / "vault.nacl").write_bytes(b"not a vault at all\n")
    return cfg


def _unusable_seal(tmp: Path) -> Path:
    cfg = _base(tmp, service={"admission": {"verify_integrity_on_boot": True}})
    (cfg / ".checksums").write_text("version: 1\nhashes: {}\n")
    return cfg


def _webhook(tmp: Path, **endpoint: Any) -> Path:
    cfg = _base(tmp)
    return _edit(cfg, lambda d: d.update(webhooks={
        "listen": f"127.0.0.1:{free_port()}",
        "endpoints": [{"path": "/hooks/x", "plugin": "echo", "secret_ref": "api-token",
                       **endpoint}]}))


def _no_token_no_vault(tmp: Path) -> Path:
    cfg = write_config(tmp / "cfg")
    return _edit(cfg, lambda d: d.update(api={"enabled": True,
                                             "listen": f"127.0.0.1:{free_port()}"}))


def _unminted_token(tmp: Path) -> Path:
    cfg = tmp / "cfg"
    make_vault(cfg, {"read-token": "r" * 32})
    return write_config(cfg, port=free_port())


BROKEN: dict[str, Callable[[Path], Path]] = {
    "config_found": lambda tmp: tmp / "no-such-config",
    "config_loaded": lambda tmp: _write(_base(tmp), "service: [\n"),
    "config_valid": lambda tmp: _base(tmp, service={"max_workers": -1}),
    "no_unallowed_symlinks": _symlinked,
    "plugins_discovered": lambda tmp: _base(tmp, plugin_roots=[str(tmp / "missing-root")]),
    "aliases_resolved": lambda tmp: _base(tmp, plugins={"alias": {"enabled": True,
                                                                 "uses": "ghost"}}),
    "enabled_plugins_discoverable": lambda tmp: _base(tmp, plugins={"ghost": {"enabled": True}}),
    "scheduled_commands_declared": lambda tmp: _base(
        tmp, plugins=_echo_schedule(every="1h", command="nope")),
    "schedules_valid": lambda tmp: _base(tmp, plugins=_echo_schedule(cron="99 * * * *")),
    "webhook_targets_admitted": lambda tmp: _webhook(tmp, plugin="ghost"),
    "vault_opened": _bad_vault,
    "integrity_verified": _unusable_seal,
    "secret_refs_resolved": lambda tmp: _webhook(tmp, secret_ref="never-minted"),
    "accounts_resolved": lambda tmp: _base(tmp, extra={"accounts": {
        "default": {"user": "no-such-user-ductile", "state_dir": "/var/lib/ductile/d"}}}),
    "pipelines_compiled": lambda tmp: _base(tmp, extra={"pipelines": [
        {"name": "p", "on": "x.happened", "steps": [{"id": "s", "uses": "ghost"}]}]}),
    # sys_exec's manifest requires config.command; the doctor's error refuses under the switch.
    "config_doctor_passed": lambda tmp: _base(
        tmp, service={"admission": {"validate_config_on_boot": True}},
        plugins={"sys_exec": {"enabled": True}}),
    "api_has_tokens": _no_token_no_vault,
    "api_tokens_resolved": _unminted_token,
    "tls_material_loadable": lambda tmp: _base(tmp, api={"tls": {"cert_file": "absent.pem",
                                                                 "key_file": "absent.key"}}),
}


def _write(cfg: Path, text: str) -> Path:
    (cfg / "config.yaml").write_text(text)
    return cfg


def test_every_side_effect_free_gate_has_a_case() -> None:
    assert set(BROKEN) == set(load_machine("boot").side_effect_free)


@pytest.mark.parametrize("gate", sorted(BROKEN))
def test_config_check_refuses_what_boot_refuses(tmp_path: Path, gate: str) -> None:
    cfg = BROKEN[gate](tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["HOME"] = str(tmp_path)  # no vault key from the runner's home
    boot = subprocess.run([sys.executable, "-m", "ductile", "system", "start", "--config",
                           str(cfg)], capture_output=True, text=True, env=env, timeout=60)
    assert boot.returncode == 78, (gate, boot.returncode, boot.stderr[-2000:])
    assert f"(gate {gate})" in boot.stderr, boot.stderr[-2000:]

    check = run_cli("config", "check", "--config", str(cfg), "--json",
                    env={"HOME": str(tmp_path)})
    assert check.returncode == 1, (check.stdout, check.stderr)
    report = json.loads(check.stdout)
    assert not report["valid"]
    assert gate in [e["category"] for e in report["errors"]], report["errors"]


def test_a_sound_config_passes_both(tmp_path: Path) -> None:
    cfg = _base(tmp_path)
    check = run_cli("config", "check", "--config", str(cfg), "--json",
                    env={"HOME": str(tmp_path)})
    assert check.returncode == 0 and json.loads(check.stdout)["valid"], check.stdout
