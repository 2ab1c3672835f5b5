"""`config init` writes a directory that loads and validates as-is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ductile.config.init import init_config_dir
from ductile.config.load import load_config
from ductile.errors import ConfigError
from ductile.vault.owner import load_vault


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_working_config_and_the_credential_ladder(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    plugins = tmp_path / "my plugins"  # a space must survive YAML quoting
    result = init_config_dir(str(target), plugin_root=str(plugins))
    names = ["config.yaml", "plugins.yaml", "api.yaml", ".env", "vault.key", "vault.nacl",
             "admin-token", "api-token"]
    assert result.written == tuple(str(target / name) for name in names)
    assert result.vault_created
    assert mode(target) == 0o700
    assert all(mode(target / name) == 0o600 for name in names)

    token = (target / "api-token").read_text().strip()
    admin = (target / "admin-token").read_text().strip()
    assert len(token) >= 40 and len(admin) >= 40 and token != admin
    for name in ("config.yaml", "plugins.yaml", "api.yaml", ".env"):
        text = (target / name).read_text()
        assert token not in text and admin not in text  # no secret in any YAML file

    cfg = load_config(str(target), environ={})
    assert cfg.warnings == ()
    assert cfg.service.name == "ductile"
    assert cfg.service.tick_interval == 60.0
    assert cfg.service.log_level == "info"
    assert cfg.state_path == str(target / "data" / "state.db")
    assert cfg.plugin_roots == (str(plugins),)
    assert cfg.plugins["echo"].enabled
    assert cfg.plugins["echo"].config == {"message": "hello from ductile"}
    assert cfg.api.enabled and cfg.api.listen == "127.0.0.1:8080"
    assert [(t.secret_ref, t.scopes) for t in cfg.api.tokens] == [("api-token", ("*",))]

    loaded = load_vault(str(target), "", "", {}, str(tmp_path))
    assert loaded.status == "loaded" and loaded.owner is not None
    assert loaded.owner.resolved_secrets().values["api-token"] == token
    assert loaded.owner.authenticate_admin(admin)


def test_refuses_existing_files_without_force(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    init_config_dir(str(target), plugin_root=str(tmp_path))
    before = (target / "vault.nacl").read_bytes()
    with pytest.raises(ConfigError) as info:
        init_config_dir(str(target), plugin_root=str(tmp_path))
    assert str(info.value) == f"{target}/config.yaml already exists; pass --force to overwrite"
    assert (target / "vault.nacl").read_bytes() == before


def test_refuses_when_only_env_exists(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KEEP=me\n")
    with pytest.raises(ConfigError, match=r"/\.env already exists; pass --force"):
        init_config_dir(str(tmp_path), plugin_root=str(tmp_path))
    assert not (tmp_path / "config.yaml").exists()
    assert not (tmp_path / "vault.nacl").exists()


def test_force_rewrites_yaml_keeps_the_vault_and_tightens_modes(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    init_config_dir(str(target), plugin_root=str(tmp_path))
    vault = (target / "vault.nacl").read_bytes()
    token = (target / "api-token").read_text()
    (target / "api.yaml").write_text("api: {enabled: false}\n")
    (target / "api.yaml").chmod(0o644)
    target.chmod(0o755)
    result = init_config_dir(str(target), force=True, plugin_root=str(tmp_path))
    assert not result.vault_created
    assert (target / "vault.nacl").read_bytes() == vault  # never replaced: secrets survive
    assert (target / "api-token").read_text() == token
    assert mode(target / "api.yaml") == 0o600
    assert mode(target) == 0o700
    assert load_config(str(target), environ={}).api.enabled


def test_init_for_a_gateway_that_can_change_uid_says_unconfined_on_purpose(
        tmp_path: Path) -> None:
    init_config_dir(str(tmp_path / "root"), plugin_root=str(tmp_path), unconfined=True)
    text = (tmp_path / "root" / "config.yaml").read_text()
    assert "  unconfined: true\n" in text
    assert "refuses to start without an accounts: table" in text
    assert load_config(str(tmp_path / "root"), environ={}).service.unconfined is True
    init_config_dir(str(tmp_path / "user"), plugin_root=str(tmp_path))
    assert "unconfined" not in (tmp_path / "user" / "config.yaml").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only an account that can change uid gets it")
def test_config_init_run_as_root_boots_unconfined_and_warned(tmp_path: Path) -> None:
    from support.gateway import Gateway, free_port, run_cli

    done = run_cli("config", "init", "--dir", str(tmp_path / "cfg"))
    assert done.returncode == 0 and "service.unconfined: true was written" in done.stdout
    api = tmp_path / "cfg" / "api.yaml"
    port = free_port()
    api.write_text(api.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    token = (tmp_path / "cfg" / "api-token").read_text().strip()
    gw = Gateway(tmp_path / "cfg", port).start()
    try:
        health = gw.get("/healthz", token=token).json()
        assert health["privsep"]["posture"] == "unconfined"
    finally:
        gw.stop()
    assert any(r.get("msg", "").startswith("privsep UNCONFINED") and r.get("level") == "WARN"
               for r in gw.log_records())
