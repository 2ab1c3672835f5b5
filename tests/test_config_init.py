"""`config init` writes a directory that loads and validates as-is."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ductile.config.init import init_config_dir
from ductile.config.load import load_config
from ductile.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_working_config(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    plugins = tmp_path / "my plugins"  # a space must survive YAML quoting
    written = init_config_dir(str(target), plugin_root=str(plugins))
    names = ["config.yaml", "plugins.yaml", "api.yaml", ".env"]
    assert written == [str(target / name) for name in names]
    assert mode(target) == 0o700
    assert all(mode(target / name) == 0o600 for name in names)

    env_lines = (target / ".env").read_text().splitlines()
    token = next(line.split("=", 1)[1] for line in env_lines if line.startswith("DUCTILE_TOKEN="))
    assert len(token) >= 40

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
    assert [(t.token, t.scopes) for t in cfg.api.tokens] == [(token, ("*",))]


def test_exported_token_wins_over_env_file(tmp_path: Path) -> None:
    init_config_dir(str(tmp_path / "cfg"), plugin_root=str(tmp_path))
    cfg = load_config(str(tmp_path / "cfg"), environ={"DUCTILE_TOKEN": "exported"})
    assert cfg.api.tokens[0].token == "exported"


def test_refuses_existing_files_without_force(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    init_config_dir(str(target), plugin_root=str(tmp_path))
    before = (target / ".env").read_text()
    with pytest.raises(ConfigError) as info:
        init_config_dir(str(target), plugin_root=str(tmp_path))
    assert str(info.value) == f"{target}/config.yaml already exists; pass --force to overwrite"
    assert (target / ".env").read_text() == before


def test_refuses_when_only_env_exists(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KEEP=me\n")
    with pytest.raises(ConfigError, match=r"/\.env already exists; pass --force"):
        init_config_dir(str(tmp_path), plugin_root=str(tmp_path))
    assert not (tmp_path / "config.yaml").exists()


def test_force_overwrites_with_a_new_token_and_tightens_modes(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    init_config_dir(str(target), plugin_root=str(tmp_path))
    before = (target / ".env").read_text()
    (target / ".env").chmod(0o644)
    target.chmod(0o755)
    init_config_dir(str(target), force=True, plugin_root=str(tmp_path))
    assert (target / ".env").read_text() != before
    assert mode(target / ".env") == 0o600
    assert mode(target) == 0o700
    load_config(str(target), environ={})
