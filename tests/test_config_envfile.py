"""environment_vars.include files and ${VAR} interpolation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ductile.config.envfile import load_env_includes, parse_env_text, read_env_file
from ductile.config.interpolate import first_unresolved, interpolate, unresolved_names
from ductile.config.load import load_config
from ductile.errors import ConfigError


def test_each_line_form() -> None:
    text = (
        "# a comment\n"
        "\n"
        "   \n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        'DOUBLE="quoted value"\n'
        "SINGLE='single'\n"
        "MISMATCHED=\"left'\n"
        "SPACED = padded  \n"
        "EMPTY=\n"
        "EQUALS=a=b=c\n"
        "  # indented comment\n"
        "CRLF=x\r\n"
    )
    assert parse_env_text(text, "/x/.env") == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "DOUBLE": "quoted value",
        "SINGLE": "single",
        "MISMATCHED": "\"left'",
        "SPACED": "padded",
        "EMPTY": "",
        "EQUALS": "a=b=c",
        "CRLF": "x",
    }


def test_first_definition_wins_within_a_file() -> None:
    assert parse_env_text("A=1\nA=2\n", "f") == {"A": "1"}


@pytest.mark.parametrize("line", ["NOEQUALS", "=value", "1ABC=x", "BAD KEY=x", "export"])
def test_invalid_line_names_line_and_file(line: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_env_text(f"# ok\nGOOD=1\n{line}\n", "/cfg/.env")
    assert str(info.value).startswith("invalid env line 3 in /cfg/.env")
    assert info.value.line == 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_env_includes(["nope.env"], base_dir=str(tmp_path), environ={})
    assert str(info.value) == (
        f"environment_vars.include[0]: file not found: {tmp_path / 'nope.env'}")


def test_directory_is_not_an_env_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        read_env_file(str(tmp_path))


def test_existing_environment_is_never_overridden(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("KEEP=from-file\nNEW=a\n")
    (tmp_path / "b.env").write_text("NEW=b\nOTHER=b\n")
    environ = {"KEEP": "from-env"}
    merged = load_env_includes(["a.env", "b.env"], base_dir=str(tmp_path), environ=environ)
    assert merged == {"KEEP": "from-env", "NEW": "a", "OTHER": "b"}
    assert environ == {"KEEP": "from-env"}  # the input mapping is not mutated


def test_entry_paths_interpolate_and_expand_home(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "x.env").write_text("X=1\n")
    env = {"HOME": str(tmp_path), "SUB": "secrets"}
    assert load_env_includes(["~/${SUB}/x.env"], base_dir="/elsewhere", environ=env)["X"] == "1"


def test_interpolate() -> None:
    env = {"A": "1", "B_2": "two", "NESTED": "${A}"}
    assert interpolate("${A}-${B_2}-${MISSING}-$A-${1X}-${NESTED}", env) == (
        "1-two-${MISSING}-$A-${1X}-${A}")
    assert unresolved_names("x ${A} ${B}") == ["A", "B"]
    assert first_unresolved({"a": [1, {"b": "ok ${Z}"}]}) == "Z"
    assert first_unresolved({"a": "plain"}) is None


def test_loader_uses_env_file_without_touching_os_environ(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("export DUCTILE_TEST_ONLY_VAR='hello'\n")
    (tmp_path / "config.yaml").write_text(
        "environment_vars: {include: [.env]}\n"
        "plugin_roots: [p]\n"
        "plugins: {echo: {enabled: true, config: {msg: '${DUCTILE_TEST_ONLY_VAR}'}}}\n"
    )
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.plugins["echo"].config == {"msg": "hello"}
    assert "DUCTILE_TEST_ONLY_VAR" not in os.environ


def test_process_env_wins_over_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WHO=file\n")
    (tmp_path / "config.yaml").write_text(
        "environment_vars: {include: [.env]}\nplugin_roots: [p]\nservice: {name: '${WHO}'}\n")
    assert load_config(str(tmp_path), environ={"WHO": "env"}).service.name == "env"
    assert load_config(str(tmp_path), environ={}).service.name == "file"


def test_env_file_of_included_file_is_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "local.env").write_text("TOKEN_X=tok\n")
    (tmp_path / "sub" / "api.yaml").write_text(
        "environment_vars: {include: [local.env]}\n"
        "api: {enabled: true, auth: {tokens: [{secret_ref: '${TOKEN_X}', scopes: ['*']}]}}\n")
    (tmp_path / "config.yaml").write_text("plugin_roots: [p]\ninclude: [sub/api.yaml]\n")
    assert load_config(str(tmp_path), environ={}).api.tokens[0].secret_ref == "tok"


def test_env_file_error_names_declaring_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("environment_vars: {include: [gone.env]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), environ={})
    assert str(info.value) == (
        f"config.yaml: environment_vars.include[0]: file not found: {tmp_path / 'gone.env'}")
