"""Config path resolution: --config > $DUCTILE_CONFIG_DIR > ~/.config/ductile > /etc/ductile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ductile.config.resolve import resolve_config
from ductile.errors import ConfigNotFound


def make_dir(path: Path, with_config: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if with_config:
        (path / "config.yaml").write_text("plugin_roots: [p]\n")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_dir(tmp_path / "home", with_config=False)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    return tmp_path / "etc-ductile"  # absent unless a test creates it


def resolve(explicit: str | None, env: dict[str, str], home: Path, etc: Path) -> tuple[str, str]:
    return resolve_config(explicit, env, str(home), etc_dir=str(etc))


def test_explicit_directory(tmp_path: Path, home: Path, etc: Path) -> None:
    d = make_dir(tmp_path / "cfg")
    assert resolve(str(d), {}, home, etc) == (str(d / "config.yaml"), "explicit")


def test_explicit_file_any_name(tmp_path: Path, home: Path, etc: Path) -> None:
    f = tmp_path / "gateway.yml"
    f.write_text("{}\n")
    assert resolve(str(f), {}, home, etc) == (str(f), "explicit")


def test_explicit_relative_is_made_absolute(
    tmp_path: Path, home: Path, etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dir(tmp_path / "rel")
    monkeypatch.chdir(tmp_path)
    assert resolve("rel", {}, home, etc) == (str(tmp_path / "rel" / "config.yaml"), "explicit")


def test_explicit_tilde_uses_home(home: Path, etc: Path) -> None:
    make_dir(home / "mine")
    assert resolve("~/mine", {}, home, etc)[0] == str(home / "mine" / "config.yaml")


def test_explicit_wins_over_env(tmp_path: Path, home: Path, etc: Path) -> None:
    d = make_dir(tmp_path / "cfg")
    env = {"DUCTILE_CONFIG_DIR": str(make_dir(tmp_path / "envdir"))}
    assert resolve(str(d), env, home, etc)[1] == "explicit"


def test_explicit_missing(tmp_path: Path, home: Path, etc: Path) -> None:
    with pytest.raises(ConfigNotFound) as info:
        resolve(str(tmp_path / "nope"), {}, home, etc)
    assert str(info.value) == (
        f"config file not found: {tmp_path / 'nope'}\n"
        "Hint: Check the path or run with --config flag"
    )


def test_explicit_directory_without_config_yaml(tmp_path: Path, home: Path, etc: Path) -> None:
    d = make_dir(tmp_path / "empty", with_config=False)
    with pytest.raises(ConfigNotFound) as info:
        resolve(str(d), {}, home, etc)
    assert str(info.value) == f"directory provided but config.yaml not found: {d}/config.yaml"


def test_env_dir(tmp_path: Path, home: Path, etc: Path) -> None:
    d = make_dir(tmp_path / "envdir")
    make_dir(home / ".config" / "ductile")
    assert resolve(None, {"DUCTILE_CONFIG_DIR": str(d)}, home, etc) == (
        str(d / "config.yaml"), "env:DUCTILE_CONFIG_DIR")


def test_env_dir_missing_falls_through_labelled_by_real_source(
    tmp_path: Path, home: Path, etc: Path
) -> None:
    user = make_dir(home / ".config" / "ductile")
    env = {"DUCTILE_CONFIG_DIR": str(tmp_path / "missing")}
    assert resolve(None, env, home, etc) == (str(user / "config.yaml"), "auto-discovered")


def test_user_dir_before_etc(home: Path, etc: Path) -> None:
    user = make_dir(home / ".config" / "ductile")
    make_dir(etc)
    assert resolve(None, {}, home, etc) == (str(user / "config.yaml"), "auto-discovered")


def test_etc_dir(home: Path, etc: Path) -> None:
    make_dir(etc)
    assert resolve(None, {"DUCTILE_CONFIG_DIR": ""}, home, etc) == (
        str(etc / "config.yaml"), "auto-discovered")


def test_discovered_dir_without_config_yaml_is_an_error(home: Path, etc: Path) -> None:
    make_dir(home / ".config" / "ductile", with_config=False)
    with pytest.raises(ConfigNotFound, match="directory provided but config.yaml not found"):
        resolve(None, {}, home, etc)


def test_nothing_found(home: Path, etc: Path) -> None:
    with pytest.raises(ConfigNotFound) as info:
        resolve(None, {"DUCTILE_CONFIG_DIR": str(etc / "missing")}, home, etc)
    assert str(info.value) == (
        f"no config found (checked: $DUCTILE_CONFIG_DIR, ~/.config/ductile, {etc})\n"
        "Hint: create ~/.config/ductile/config.yaml or use --config"
    )


@pytest.mark.skipif(os.path.exists("/etc/ductile"), reason="this machine has /etc/ductile")
def test_nothing_found_default_etc_text(home: Path) -> None:
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(None, {}, str(home))
    assert str(info.value).startswith(
        "no config found (checked: $DUCTILE_CONFIG_DIR, ~/.config/ductile, /etc/ductile)\n")
