"""`ductile config show|get|set|schema|validate`: real files, the real CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.gateway import BUNDLED_PLUGINS, run_cli

ROOT = f"""\
# Root config: every comment here must survive an edit.
service:
  name: edit-test        # shown in snapshots
  tick_interval: 5s
  max_workers: 2

state:
  path: ./data/state.db

plugin_roots:
  - "{BUNDLED_PLUGINS}"

environment_vars:
  include: [.env]

include:
  - plugins.yaml
  - conf.d
"""
PLUGINS = """\
# Plugins live here.
plugins:
  echo:
    enabled: true   # keep it on
    config:
      message: "hi ${GREETING}"
    retry:
      max_attempts: 3      # three tries
      backoff_base: 10s
"""
API = """\
api:
  enabled: false
  listen: ${LISTEN}
  max_sync_timeout: 1m   # sync callers wait this long
  allowed_origins: [https://a.example, https://b.example]
"""
ENV = "LISTEN=127.0.0.1:18999\nGREETING=value-from-the-env-file\n"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A config directory whose values live in three files and an env file."""
    directory = tmp_path / "cfg"
    (directory / "conf.d").mkdir(parents=True)
    (directory / "config.yaml").write_text(ROOT)
    (directory / "plugins.yaml").write_text(PLUGINS)
    (directory / "conf.d" / "api.yaml").write_text(API)
    (directory / ".env").write_text(ENV)
    return directory


def ductile(*args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli(*args, env=env)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: bytes and mode."""
    return {str(path.relative_to(directory)): (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
            for path in sorted(directory.rglob("*")) if path.is_file()}


# --------------------------------------------------------------------------- show and get


def test_show_merges_the_includes_fills_defaults_and_never_prints_env_values(cfg: Path) -> None:
    shown = ductile("config", "show", "--config", str(cfg), "--json",
                    env={"GREETING": "value-from-the-process-env"})
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["service"]["name"] == "edit-test"
    assert doc["service"]["max_workers"] == 2
    assert doc["service"]["dedupe_ttl"] == "24h0m0s"  # a default, filled in
    assert doc["plugins"]["echo"]["retry"] == {"max_attempts": 3, "backoff_base": "10s"}
    assert doc["plugins"]["echo"]["circuit_breaker"] == {"threshold": 3, "reset_after": "30m0s"}
    assert doc["api"]["max_sync_timeout"] == "1m"  # as written, from conf.d/api.yaml
    # ${VAR} values are shown as the reference, from the env file and the process alike.
    assert doc["api"]["listen"] == "${LISTEN}"
    assert doc["plugins"]["echo"]["config"]["message"] == "hi ${GREETING}"
    for value in ("127.0.0.1:18999", "value-from-the-env-file", "value-from-the-process-env"):
        assert value not in shown.stdout

    as_yaml = ductile("config", "show", "--config", str(cfg))
    assert yaml.safe_load(as_yaml.stdout) == doc
    bare = json.loads(ductile("config", "show", "--config", str(cfg), "--json",
                              "--no-defaults").stdout)
    assert "dedupe_ttl" not in bare["service"] and bare["api"]["listen"] == "${LISTEN}"


def test_show_and_get_address_one_value_by_dot_path(cfg: Path) -> None:
    def get(*args: str) -> str:
        result = ductile("config", "get", *args, "--config", str(cfg))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert get("service.max_workers") == "2"
    assert get("plugins.echo.retry.max_attempts") == "3"
    assert get("service.shutdown_grace") == "30s"  # default
    assert get("plugins.echo.enabled") == "true"
    assert get("api.listen") == "${LISTEN}"
    assert get("api.allowed_origins[1]") == "https://b.example"
    assert json.loads(get("plugins.echo.retry", "--json")) == {"max_attempts": 3,
                                                              "backoff_base": "10s"}
    subtree = ductile("config", "show", "plugins.echo.retry", "--config", str(cfg))
    assert yaml.safe_load(subtree.stdout) == {"max_attempts": 3, "backoff_base": "10s"}


@pytest.mark.parametrize(("key", "message"), [
    ("plugins.ech.retry", "plugins.ech: no key 'ech' in plugins; available: echo"),
    ("service.max_workers.x", "service.max_workers is the value 2, it has no key 'x'"),
    ("api.allowed_origins[5]", "no entry [5] in api.allowed_origins (2 entries)"),
    ("service..name", "invalid key path 'service..name'"),
])
def test_a_missing_path_exits_1_naming_the_first_missing_segment(cfg: Path, key: str,
                                                                   message: str) -> None:
    result = ductile("config", "get", key, "--config", str(cfg))
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------- set


def test_set_edits_the_include_that_defines_the_key_and_nothing_else(cfg: Path) -> None:
    before = snapshot(cfg)
    result = ductile("config", "set", "plugins.echo.retry.max_attempts", "5",
                     "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert f"in {cfg / 'plugins.yaml'} (was 3)" in result.stdout
    after = snapshot(cfg)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"plugins.yaml"}
    expected = PLUGINS.replace("max_attempts: 3      # three tries",
                               "max_attempts: 5      # three tries")
    assert (cfg / "plugins.yaml").read_text() == expected
    assert after["plugins.yaml"][1] == before["plugins.yaml"][1]
    got = ductile("config", "get", "plugins.echo.retry.max_attempts", "--config", str(cfg))
    assert got.stdout.strip() == "5"


def test_set_follows_directory_includes_and_adds_missing_keys_to_the_root(cfg: Path) -> None:
    assert ductile("config", "set", "api.max_sync_timeout", "2m", "--config",
                   str(cfg)).returncode == 0
    assert (cfg / "conf.d" / "api.yaml").read_text() == API.replace(
        "max_sync_timeout: 1m   #", "max_sync_timeout: 2m   #")
    added = ductile("config", "set", "service.hook_max_depth", "6", "--config", str(cfg))
    assert added.returncode == 0, added.stderr
    assert "(added)" in added.stdout
    assert (cfg / "config.yaml").read_text() == ROOT.replace(
        "  max_workers: 2\n", "  max_workers: 2\n  hook_max_depth: 6\n")
    # A new key of a plugin goes to the file holding that plugin (its stanza is replaced whole).
    assert ductile("config", "set", "plugins.echo.parallelism", "1", "--config",
                   str(cfg)).returncode == 0
    assert (cfg / "plugins.yaml").read_text() == PLUGINS + "    parallelism: 1\n"


def test_set_keeps_the_mode_of_the_file_it_replaces(cfg: Path) -> None:
    os.chmod(cfg / "plugins.yaml", 0o640)
    assert ductile("config", "set", "plugins.echo.enabled", "false", "--config",
                   str(cfg)).returncode == 0
    assert stat.S_IMODE((cfg / "plugins.yaml").stat().st_mode) == 0o640
    assert "enabled: false   # keep it on" in (cfg / "plugins.yaml").read_text()


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("plugins.echo.retry.max_attempts", "two", "expected an integer, got \"two\""),
    ("service.log_level", "loud", "service.log_level must be one of"),
    ("service.tick_interval", "10ms", "below the minimum allowed"),
    ("api.max_sync_timeout", "[1, 2]", "expected a duration"),
    ("service.max_wrokers", "3", "is not a key ductile reads"),
    ("plugins.echo.config", "x", "holds a block map over several lines"),
    ("api.allowed_origins[0]", "https://c.example", "inside a flow-style list"),
    ("plugins.echo.retry.max_attempts", "a: b", "quote it to set a string"),
])
def test_set_refuses_and_leaves_every_file_untouched(cfg: Path, key: str, value: str,
                                                     reason: str) -> None:
    os.chmod(cfg / "plugins.yaml", 0o640)
    before = snapshot(cfg)
    result = ductile("config", "set", key, value, "--config", str(cfg))
    assert result.returncode == 1
    assert reason in result.stderr
    assert snapshot(cfg) == before  # same bytes, same modes, no temporary file left behind


def test_set_refuses_an_edit_the_merge_would_ignore(cfg: Path) -> None:
    (cfg / "conf.d" / "service.yaml").write_text("service:\n  name: from-include\n")
    before = snapshot(cfg)
    result = ductile("config", "set", "service.name", "''", "--config", str(cfg))
    assert result.returncode == 1
    assert "would have no effect" in result.stderr
    assert snapshot(cfg) == before


def test_set_dry_run_prints_the_change_and_writes_nothing(cfg: Path) -> None:
    before = snapshot(cfg)
    result = ductile("config", "set", "service.name", "renamed", "--dry-run", "--config",
                     str(cfg))
    assert result.returncode == 0, result.stderr
    assert "-  name: edit-test        # shown in snapshots" in result.stdout
    assert "+  name: renamed        # shown in snapshots" in result.stdout
    assert snapshot(cfg) == before


def test_set_keeps_variable_references_and_edits_beside_flow_style(cfg: Path) -> None:
    (cfg / "conf.d" / "api.yaml").write_text(API + "  management_socket: ${SOCK_DIR}/v.sock\n")
    result = ductile("config", "set", "api.listen", "${OTHER_LISTEN}", "--config", str(cfg),
                     env={"OTHER_LISTEN": "127.0.0.1:18998"})
    assert result.returncode == 0, result.stderr
    text = (cfg / "conf.d" / "api.yaml").read_text()
    assert "  listen: ${OTHER_LISTEN}\n" in text
    assert "management_socket: ${SOCK_DIR}/v.sock" in text
    assert "allowed_origins: [https://a.example, https://b.example]" in text


def test_set_moves_the_seal_of_the_edited_file(cfg: Path) -> None:
    from ductile.config.seal import digest_bytes, read_checksums

    locked = ductile("config", "lock", "--config", str(cfg))
    if locked.returncode != 0:
        pytest.skip(f"config lock is not usable here: {locked.stderr}")
    seal = cfg / ".checksums"
    root = str(cfg / "config.yaml")
    assert root in read_checksums(str(seal)).hashes
    result = ductile("config", "set", "service.name", "sealed", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "Updated the .checksums seal" in result.stdout
    assert read_checksums(str(seal)).hashes[root] == digest_bytes((cfg / "config.yaml")
                                                                  .read_bytes())


# --------------------------------------------------------------------------- schema


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = run_cli("config", "schema")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_schema_is_draft_2020_12_and_every_reference_resolves(schema: dict[str, Any]) -> None:
    from ductile.config.json_schema import KEYWORDS, schema_keywords

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema_keywords(schema) <= KEYWORDS
    refs = re.findall(r'"\$ref": "#/\$defs/([A-Za-z]+)"', json.dumps(schema))
    assert refs and set(refs) <= set(schema["$defs"])
    for pattern in re.findall(r'"pattern": ("(?:[^"\\]|\\.)*")', json.dumps(schema)):
        re.compile(json.loads(pattern))
    service = schema["$defs"]["ServiceConfig"]["properties"]
    assert service["log_level"] == {"enum": ["debug", "info", "warn", "error"]}
    assert service["tick_interval"]["type"] == "string" and "pattern" in service["tick_interval"]
    schedule = schema["$defs"]["ScheduleConf"]["properties"]
    assert schedule["catch_up"] == {"enum": ["skip", "run_once", "run_all"]}
    assert schema["$defs"]["WebhookEndpoint"]["required"] == ["path", "plugin", "secret_ref"]


def _config_dataclasses() -> set[type]:
    """Every dataclass reachable from Config's annotations."""
    from ductile.config.schema import Config

    found: set[type] = set()

    def visit(hint: Any) -> None:
        for arg in typing.get_args(hint):
            visit(arg)
        if dataclasses.is_dataclass(hint) and hint not in found:
            found.add(typing.cast(type, hint))
            for field_hint in typing.get_type_hints(hint).values():
                visit(field_hint)

    visit(Config)
    return found


def test_the_schema_names_every_field_of_every_config_dataclass(schema: dict[str, Any]) -> None:
    from ductile.config.json_schema import shapes
    from ductile.config.schema import Config

    known = shapes({})
    # A new config dataclass needs a Shape; only the records of what was read are not YAML.
    assert _config_dataclasses() - set(known) <= set(_source_types())
    for cls, shape in known.items():
        definition = schema if cls is Config else schema["$defs"][cls.__name__]
        for field in dataclasses.fields(cls):
            if field.name in shape.derived:
                continue
            assert shape.moved.get(field.name, field.name) in definition["properties"], \
                f"{cls.__name__}.{field.name} is not in the schema"


def _source_types() -> tuple[type, type]:
    """Dataclasses of Config that are not YAML (what the loader read, where from)."""
    from ductile.config.schema import PipelineSource, SourceFile

    return SourceFile, PipelineSource


def test_a_field_the_loader_does_not_read_stops_generation() -> None:
    from ductile.config.json_schema import SchemaBuilder, Shape

    @dataclasses.dataclass(frozen=True)
    class Retry:
        max_attempts: int = 4
        backoff_base: float = 30.0
        jitter_ratio: float = 0.25  # added to the dataclass, not to the loader's key set

    builder = SchemaBuilder({Retry: Shape(keys=frozenset({"max_attempts", "backoff_base"}))})
    with pytest.raises(TypeError, match="jitter_ratio"):
        builder.definition(Retry)


def test_the_schema_validates_the_bundled_demo_config(tmp_path: Path,
                                                      schema: dict[str, Any]) -> None:
    from ductile.config.filecheck import check_file

    demo = tmp_path / "demo"
    assert run_cli("config", "init", "--dir", str(demo)).returncode == 0
    for name in ("config.yaml", "plugins.yaml", "api.yaml"):
        assert check_file(str(demo / name), schema) == []
        result = run_cli("config", "validate", str(demo / name))
        assert result.returncode == 0, result.stdout
        assert result.stdout.strip() == f"OK: {demo / name} is valid"
    # The merged config with every default filled in is valid too.
    shown = run_cli("config", "show", "--config", str(demo))
    (tmp_path / "effective.yaml").write_text(shown.stdout)
    assert check_file(str(tmp_path / "effective.yaml"), schema) == []


# --------------------------------------------------------------------------- validate


def test_validate_reports_every_problem_with_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "plugins.yaml"
    bad.write_text(
        "plugins:\n"
        "  echo:\n"
        "    enabled: maybe\n"
        "    retry: {max_attempts: two, backoff_base: 30}\n"
        "    parallelism: ${PARALLEL}\n"     # interpolated: not type-checked
        "    schedules:\n"
        "      - {every: 5m, cron: '* * * * *'}\n"
        "    retyr: {}\n")
    result = run_cli("config", "validate", str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"ERROR {bad}:3: plugins.echo.enabled: expected true or false" in lines[0]
    assert f"ERROR {bad}:4: plugins.echo.retry.max_attempts: expected an integer, got \"two\"" \
        in result.stdout
    assert f"ERROR {bad}:4: plugins.echo.retry.backoff_base: expected a duration" \
        in result.stdout
    assert f"ERROR {bad}:7: plugins.echo.schedules[0]: must set exactly one of every, cron" \
        in result.stdout
    assert f"WARN {bad}:8: plugins.echo.retyr: unknown key (ignored)" in result.stdout
    assert "parallelism" not in result.stdout
    assert lines[-1] == f"INVALID: {bad} (4 error(s), 1 warning(s))"

    report = json.loads(run_cli("config", "validate", str(bad), "--json").stdout)
    assert report["valid"] is False and len(report["errors"]) == 4
    assert report["errors"][0] == {"file": str(bad), "line": 3, "key": "plugins.echo.enabled",
                                   "message": report["errors"][0]["message"],
                                   "severity": "error"}


def test_validate_names_the_line_of_a_yaml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("service:\n  name: [unclosed\n  tick_interval: 5s\n")
    result = run_cli("config", "validate", str(bad))
    assert result.returncode == 1
    assert result.stdout.startswith(f"ERROR {bad}:")
    assert "YAML syntax error" in result.stdout


def test_set_edits_a_relay_instance_in_the_file_that_lists_it(cfg: Path) -> None:
    # Instances from every file are appended: entry 1 of the merged list is the first entry of
    # the second file.
    relay = ("instances:\n"
             "  - name: {name}\n"
             "    base_url: http://127.0.0.1:9\n"
             "    secret_ref: to-{name}\n"
             "    timeout: 10s   # near\n")
    (cfg / "conf.d" / "a-relay.yaml").write_text(relay.format(name="gw-b"))
    (cfg / "conf.d" / "b-relay.yaml").write_text(relay.format(name="gw-c"))
    result = ductile("config", "set", "instances[1].timeout", "5s", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert (cfg / "conf.d" / "a-relay.yaml").read_text() == relay.format(name="gw-b")
    assert (cfg / "conf.d" / "b-relay.yaml").read_text() == relay.format(
        name="gw-c").replace("10s", "5s")
