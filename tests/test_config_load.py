"""load_config / parse_config: includes, YAML errors, strict types, unknown keys, defaults."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ductile.config.load import load_config, parse_config
from ductile.config.schema import DEFAULT_TIMEOUTS, BreakerConf, RetryConf, default_max_workers
from ductile.errors import ConfigError, ConfigNotFound


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(directory: Path, **env: str) -> object:
    return load_config(str(directory), environ=env)


def error_of(directory: Path, **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(str(directory), environ=env)
    return info.value


# ------------------------------------------------------------------ minimal + defaults


def test_minimal_config_defaults(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [plugins]\n")
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.config_path == str(tmp_path / "config.yaml")
    assert cfg.config_dir == str(tmp_path)
    assert cfg.source == "explicit"
    assert cfg.service.name == "ductile"
    assert cfg.service.tick_interval == 60.0
    assert cfg.service.log_level == "info"
    assert cfg.service.max_workers == default_max_workers()
    assert cfg.service.job_log_retention == 30 * 86400
    assert cfg.state_path == str(tmp_path / "data" / "state.db")
    assert cfg.plugin_roots == (str(tmp_path / "plugins"),)
    assert cfg.api.enabled is False
    assert cfg.api.listen == "127.0.0.1:8080"
    assert cfg.api.max_concurrent_sync == 10
    assert cfg.api.max_sync_timeout == 300.0
    assert cfg.plugins == {}
    assert cfg.warnings == ()
    assert [f.path for f in cfg.source_files] == [str(tmp_path / "config.yaml")]
    assert cfg.source_files[0].data == b"plugin_roots: [plugins]\n"


def test_zero_values_take_defaults(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        service: {name: "", tick_interval: 0s, max_workers: 0, log_level: "", hook_max_depth: 0}
        plugin_roots: [p]
        """)
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.service.name == "ductile"
    assert cfg.service.tick_interval == 60.0
    assert cfg.service.max_workers == default_max_workers()
    assert cfg.service.hook_max_depth == 4


def test_source_label_is_kept(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\n")
    cfg = load_config(str(tmp_path / "config.yaml"), source="auto-discovered", environ={})
    assert cfg.source == "auto-discovered"


def test_missing_root_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigNotFound, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"), environ={})


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "# nothing yet\n")
    cfg = parse_config(str(tmp_path), environ={})
    assert cfg.plugin_roots == ()


def test_plugin_defaults_and_blocks(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        plugins:
          plain: {enabled: true}
          tuned:
            enabled: true
            uses: plain
            retry: {max_attempts: 2}
            timeouts: {poll: 5s, sync_repo: 2d}
            circuit_breaker: {reset_after: 1w}
            max_outstanding_polls: 3
            parallelism: 1
            notify_on_complete: true
            schedules:
              - every: 5m
              - {id: nightly, cron: "0 3 * * *", command: sync, payload: {full: true}}
          off:
        """)
    cfg = load_config(str(tmp_path), environ={})
    plain = cfg.plugins["plain"]
    assert plain.retry == RetryConf()
    assert plain.timeouts == DEFAULT_TIMEOUTS
    assert plain.circuit_breaker == BreakerConf()
    assert plain.max_outstanding_polls == 1
    assert plain.parallelism is None  # not filled with max_workers
    tuned = cfg.plugins["tuned"]
    assert tuned.uses == "plain"
    assert tuned.retry == RetryConf(max_attempts=2, backoff_base=30.0)
    assert tuned.timeouts == {"poll": 5.0, "sync_repo": 2 * 86400.0}
    assert tuned.timeout_for("handle") == 120.0  # block given: others fall back per command
    assert tuned.circuit_breaker == BreakerConf(threshold=3, reset_after=7 * 86400.0)
    assert (tuned.max_outstanding_polls, tuned.parallelism, tuned.notify_on_complete) == (
        3, 1, True)
    assert [(s.id, s.command) for s in tuned.schedules] == [("default", "poll"),
                                                            ("nightly", "sync")]
    assert tuned.schedules[1].raw["payload"] == {"full": True}
    assert cfg.plugins["off"].enabled is False


def test_durations_accept_days_and_weeks(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        service:
          job_log_retention: 30d
          job_queue_retention: 2w
          dedupe_ttl: 1d12h
          breaker_transitions_retention: 1.5d
        """)
    service = load_config(str(tmp_path), environ={}).service
    assert service.job_log_retention == 30 * 86400
    assert service.job_queue_retention == 14 * 86400
    assert service.dedupe_ttl == 36 * 3600
    assert service.breaker_transitions_retention == 1.5 * 86400


def test_unquoted_dates_stay_strings(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        plugins: {p: {config: {since: 2026-01-02, at: 2026-01-02T03:04:05Z}}}
        """)
    config = load_config(str(tmp_path), environ={}).plugins["p"].config
    assert config == {"since": "2026-01-02", "at": "2026-01-02T03:04:05Z"}


def test_scalars_follow_go_yaml_v3(tmp_path: Path) -> None:
    """Only true/false are implicit booleans; no base-60 numbers; typed bools take yes/no."""
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        plugins:
          off: {enabled: yes, config: {answer: no, at: 12:30, mode: 0o755, n: 1_000}}
          on: {enabled: Off}
        """)
    plugins = load_config(str(tmp_path), environ={}).plugins
    assert plugins["off"].enabled is True
    assert plugins["off"].config == {"answer": "no", "at": "12:30", "mode": 0o755, "n": 1000}
    assert plugins["on"].enabled is False


def test_api_tokens_not_wiped_when_disabled(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        api: {enabled: false, auth: {tokens: [{secret_ref: abc, scopes: [read]}]}}
        """)
    api = load_config(str(tmp_path), environ={}).api
    assert api.enabled is False
    assert api.listen == "127.0.0.1:8080"
    assert [(t.secret_ref, t.token, t.scopes) for t in api.tokens] == [("abc", "", ("read",))]


@pytest.mark.parametrize("entry", ["{token: abc}", "{token: '${T}', secret_ref: x}"])
def test_literal_api_token_is_refused_in_its_file(tmp_path: Path, entry: str) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [api.yaml]\n")
    write(tmp_path, "api.yaml", f"api: {{auth: {{tokens: [{entry}]}}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path), environ={"T": "secret-value"})
    message = str(caught.value)
    assert message.startswith("api.yaml: api.auth.tokens[0]: a literal token value is not "
                              "allowed: API secrets live in the vault")
    assert "secret_ref" in message and "secret-value" not in message


def test_api_token_needs_secret_ref(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\napi: {auth: {tokens: [{scopes: ['*']}]}}\n")
    with pytest.raises(ConfigError, match=r"config.yaml: api.auth.tokens\[0\]: secret_ref is "
                                          r"required \(API tokens are vault-only"):
        load_config(str(tmp_path), environ={})


def test_secrets_and_management_socket_and_vault_keys(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        secrets: {vault_file: ~/v.nacl, key_file: keys/vault.key}
        api: {management_socket: ~/admin.sock}
        plugins: {p: {vault_principal: team-a, requires_vault: true}, q: {}}
        """)
    cfg = load_config(str(tmp_path), environ={"HOME": "/home/op"})
    assert cfg.secrets.vault_file == "/home/op/v.nacl"
    assert cfg.secrets.key_file == "keys/vault.key"
    assert cfg.api.management_socket == "/home/op/admin.sock"
    assert (cfg.plugins["p"].principal, cfg.plugins["p"].requires_vault) == ("team-a", True)
    assert (cfg.plugins["q"].principal, cfg.plugins["q"].requires_vault) == ("q", False)


def test_pipelines_are_collected_from_every_file(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        include: [more.yaml]
        pipelines: [{name: a}]
        """)
    write(tmp_path, "more.yaml", "pipelines: [{name: b}, {name: c}]\n")
    cfg = load_config(str(tmp_path), environ={})
    assert [(p.file, p.index, p.raw["name"]) for p in cfg.pipelines] == [
        ("config.yaml", 0, "a"), ("more.yaml", 0, "b"), ("more.yaml", 1, "c")]
    assert not cfg.warnings


# ------------------------------------------------------------------ paths


def test_state_path_relative_absolute_tilde_and_alias(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\nstate: {path: db/x.db}\n")
    assert load_config(str(tmp_path), environ={}).state_path == str(tmp_path / "db" / "x.db")
    write(tmp_path, "config.yaml", "plugin_roots: [p]\nstate: {path: ~/s.db}\n")
    home = tmp_path / "home"
    assert load_config(str(tmp_path), environ={"HOME": str(home)}).state_path == str(
        home / "s.db")
    write(tmp_path, "config.yaml", "plugin_roots: [p]\nstate: {path: ~/s.db}\n")
    assert load_config(str(tmp_path), environ={}).state_path == str(tmp_path / "~" / "s.db")
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ndatabase: {path: old.db}\n")
    assert load_config(str(tmp_path), environ={}).state_path == str(tmp_path / "old.db")
    write(tmp_path, "config.yaml",
          "plugin_roots: [p]\ndatabase: {path: old.db}\nstate: {path: new.db}\n")
    assert load_config(str(tmp_path), environ={}).state_path == str(tmp_path / "new.db")


def test_plugin_roots_trimmed_absolute_deduped(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml",
          "plugin_roots: [' plugins ', plugins, ./plugins/, /abs/root, '~/mine']\n")
    cfg = load_config(str(tmp_path), environ={"HOME": "/home/u"})
    assert cfg.plugin_roots == (str(tmp_path / "plugins"), "/abs/root", "/home/u/mine")


# ------------------------------------------------------------------ interpolation


def test_interpolation_reaches_any_scalar(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        service: {max_workers: ${WORKERS}, name: "${NAME}"}
        plugins: {p: {config: {left: "${UNSET_VAR}"}}}
        """)
    cfg = parse_config(str(tmp_path), environ={"WORKERS": "3", "NAME": "gw"})
    assert cfg.service.max_workers == 3
    assert cfg.service.name == "gw"
    assert cfg.plugins["p"].config == {"left": "${UNSET_VAR}"}
    assert cfg.raw["service"] == {"max_workers": 3, "name": "gw"}


def test_raw_is_the_merged_document(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [a]\ninclude: [more.yaml]\n")
    write(tmp_path, "more.yaml", "plugin_roots: [b]\nplugins: {x: {enabled: true}}\n")
    raw = load_config(str(tmp_path), environ={}).raw
    assert raw["plugin_roots"] == ["a", "b"]
    assert raw["plugins"] == {"x": {"enabled": True}}
    assert raw["include"] == ["more.yaml"]


# ------------------------------------------------------------------ includes


def test_include_file_relative_to_including_file(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [conf/plugins.yaml]\n")
    write(tmp_path, "conf/plugins.yaml", "plugins: {echo: {enabled: true}}\n")
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.plugins["echo"].enabled
    assert [f.path for f in cfg.source_files] == [
        str(tmp_path / "config.yaml"), str(tmp_path / "conf" / "plugins.yaml")]


def test_absolute_include_path(tmp_path: Path) -> None:
    other = write(tmp_path, "elsewhere/extra.yaml", "plugins: {echo: {enabled: true}}\n")
    write(tmp_path, "cfg/config.yaml", f"plugin_roots: [p]\ninclude: ['{other}']\n")
    assert load_config(str(tmp_path / "cfg"), environ={}).plugins["echo"].enabled


def test_include_directory_sorted_yaml_only(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [conf.d]\n")
    write(tmp_path, "conf.d/20-b.yaml", "service: {name: from-b}\n")
    write(tmp_path, "conf.d/10-a.yaml", "service: {name: from-a, log_level: debug}\n")
    write(tmp_path, "conf.d/30-c.yml", "service: {name: from-yml}\n")
    write(tmp_path, "conf.d/notes.txt", "service: {name: from-txt}\n")
    (tmp_path / "conf.d" / "sub.yaml").mkdir()  # a directory named *.yaml is skipped
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.service.name == "from-b"
    assert cfg.service.log_level == "debug"
    assert [Path(f.path).name for f in cfg.source_files] == [
        "config.yaml", "10-a.yaml", "20-b.yaml"]


def test_nested_includes_depth_first_child_overrides_parent(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [a.yaml, c.yaml]\n")
    write(tmp_path, "a.yaml", "include: [nested/b.yaml]\nservice: {name: a, log_level: warn}\n")
    write(tmp_path, "nested/b.yaml", "service: {name: b}\n")
    write(tmp_path, "c.yaml", "service: {log_level: error}\n")
    cfg = load_config(str(tmp_path), environ={})
    assert (cfg.service.name, cfg.service.log_level) == ("b", "error")
    assert [Path(f.path).name for f in cfg.source_files] == [
        "config.yaml", "a.yaml", "b.yaml", "c.yaml"]


def test_cycle_through_root_refused(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [a.yaml]\n")
    write(tmp_path, "a.yaml", "include: [config.yaml]\n")
    err = error_of(tmp_path)
    assert str(err) == (
        f"a.yaml: include[0]: circular dependency detected: {tmp_path / 'config.yaml'}")
    assert err.key == "include[0]"
    assert err.path == str(tmp_path / "a.yaml")


def test_cycle_between_includes_refused(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [a.yaml]\n")
    write(tmp_path, "a.yaml", "include: [b.yaml]\n")
    write(tmp_path, "b.yaml", "include: [a.yaml]\n")
    assert str(error_of(tmp_path)) == (
        f"b.yaml: include[0]: circular dependency detected: {tmp_path / 'a.yaml'}")


def test_diamond_include_refused(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [a.yaml, b.yaml]\n")
    write(tmp_path, "a.yaml", "include: [shared.yaml]\n")
    write(tmp_path, "b.yaml", "include: [shared.yaml]\n")
    write(tmp_path, "shared.yaml", "{}\n")
    assert str(error_of(tmp_path)) == (
        f"b.yaml: include[0]: circular dependency detected: {tmp_path / 'shared.yaml'}")


def test_include_directory_containing_root_is_circular(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [.]\n")
    assert "include[0]: circular dependency detected" in str(error_of(tmp_path))


def test_missing_include(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [ok.yaml, missing.yaml]\n")
    write(tmp_path, "ok.yaml", "{}\n")
    assert str(error_of(tmp_path)) == (
        f"config.yaml: include[1]: file not found: {tmp_path / 'missing.yaml'}\n"
        f"Referenced from: {tmp_path}\n"
        "Hint: Check the path is correct and the file exists")


def test_include_of_special_file_refused(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "include: [/dev/null]\n")
    assert "not a regular file or directory: /dev/null" in str(error_of(tmp_path))


# ------------------------------------------------------------------ YAML errors


def test_yaml_syntax_error_names_file_line_column(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "service:\n  name: x\n  bad: [unclosed\nplugins: {}\n")
    err = error_of(tmp_path)
    assert str(err).startswith("config.yaml:4:")
    assert "YAML syntax error" in str(err)
    assert (err.path, err.line) == (str(tmp_path / "config.yaml"), 4)
    assert err.column is not None


def test_yaml_syntax_error_in_include_names_include(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "include: [conf/broken.yaml]\n")
    write(tmp_path, "conf/broken.yaml", "a: b\n  c: d\n")
    err = error_of(tmp_path)
    assert str(err).startswith("conf/broken.yaml:2:4: YAML syntax error: ")
    assert err.path == str(tmp_path / "conf" / "broken.yaml")


def test_yaml_error_after_interpolation_is_flagged(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", 'service: {name: "${NAME}"}\n')
    err = error_of(tmp_path, NAME='a"b')
    assert "(after ${VAR} interpolation)" in str(err)
    assert str(err).startswith("config.yaml:1:")


def test_top_level_must_be_a_map(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "- a\n- b\n")
    assert str(error_of(tmp_path)) == (
        "config.yaml: expected a map of config keys at the top level, got a list")


def test_unknown_tag_and_non_utf8(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "a: !custom x\n")
    assert str(error_of(tmp_path)).startswith("config.yaml:1:4: YAML error: ")
    (tmp_path / "config.yaml").write_bytes(b"a: \xff\n")
    assert str(error_of(tmp_path)) == "config.yaml: not valid UTF-8 text (byte offset 3)"


def test_recursive_and_exploding_aliases_refused(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "webhooks: &a [*a]\n")
    assert str(error_of(tmp_path)) == (
        "config.yaml:1:11: YAML error: found a recursive alias (a value that contains itself)")
    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    write(tmp_path, "config.yaml", "\n".join(levels) + "\n")
    assert "aliases expand this document beyond 1000000 values" in str(error_of(tmp_path))


def test_a_key_written_twice_in_one_mapping_is_refused_naming_both_lines(
        tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        plugins:
          echo:
            enabled: true
            enabled: false
        """)
    assert str(error_of(tmp_path)) == (
        'config.yaml:5:5: YAML error: mapping key "enabled" already defined at line 4')
    # The same name under two different mappings is no repetition.
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        plugins:
          a: {enabled: true, config: {region: eu}}
          b: {enabled: true, config: {region: us}}
        """)
    assert load_config(str(tmp_path), environ={}).plugins["b"].config == {"region": "us"}


def test_ordinary_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        plugins:
          a: &base {enabled: true, config: {region: eu}}
          b: {<<: *base, uses: a}
          c: {<<: *base, enabled: false}
        """)
    plugins = load_config(str(tmp_path), environ={}).plugins
    assert plugins["b"].enabled and plugins["b"].config == {"region": "eu"}
    assert not plugins["c"].enabled  # a merged key may be overridden


# ------------------------------------------------------------------ strict types


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("service: {max_workers: two}",
         'config.yaml: service.max_workers: expected an integer, got "two"'),
        ("service: {max_workers: 2.5}",
         "config.yaml: service.max_workers: expected an integer, got 2.5"),
        ("service: {max_workers: true}",
         "config.yaml: service.max_workers: expected an integer, got true"),
        ("service: {tick_interval: 60}",
         "config.yaml: service.tick_interval: expected a duration such as 30s, 5m, 1h or 7d, "
         "got 60"),
        ("service: {allow_symlinks: maybe}",
         'config.yaml: service.allow_symlinks: expected true or false, got "maybe"'),
        ("service: {name: [a]}", "config.yaml: service.name: expected a string, got a list"),
        ("service: [a]", "config.yaml: service: expected a map, got a list"),
        ("plugin_roots: plugins",
         'config.yaml: plugin_roots: expected a list, got "plugins"'),
        ("plugin_roots: [a, 3]",
         "config.yaml: plugin_roots[1]: expected a non-empty string, got 3"),
        ("include: [a, '']", 'config.yaml: include[1]: expected a non-empty string, got ""'),
        ("api: {enabled: 1}", "config.yaml: api.enabled: expected true or false, got 1"),
        ("api: {auth: {tokens: [abc]}}",
         'config.yaml: api.auth.tokens[0]: expected a map such as {secret_ref: api-token, '
         'scopes: ["*"]}, got "abc"'),
        ("api: {auth: {tokens: [{secret_ref: 12345}]}}",
         "config.yaml: api.auth.tokens[0].secret_ref: expected a string, got 12345"),
        ("pipelines: {name: x}", "config.yaml: pipelines: expected a list, got a map"),
        ("plugins: [echo]",
         "config.yaml: plugins: expected a map of plugin name to settings, got a list"),
        ("plugins: {echo: {retry: {max_attempts: many}}}",
         'config.yaml: plugins.echo.retry.max_attempts: expected an integer, got "many"'),
        ("plugins: {echo: {timeouts: {poll: 10}}}",
         "config.yaml: plugins.echo.timeouts.poll: expected a duration such as 30s, 5m, 1h "
         "or 7d, got 10"),
        ("plugins: {echo: {schedules: {every: 5m}}}",
         "config.yaml: plugins.echo.schedules: expected a list, got a map"),
        ("plugins: {echo: {schedules: [{every: 5}]}}",
         "config.yaml: plugins.echo.schedules[0].every: expected a string, got 5"),
        ("plugins: {echo: {config: {n: .nan}}}",
         "config.yaml: plugins.echo.config.n: expected a finite number, got nan"),
        ("plugins: {echo: {config: {1: x}}}",
         "config.yaml: plugins.echo.config: expected string keys, got 1"),
        ("plugins: {echo: {config: {b: !!binary aGk=}}}",
         "config.yaml: plugins.echo.config.b: expected a string, number, boolean, null, list "
         "or map, got a bytes"),
    ],
)
def test_wrong_types_name_file_and_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    write(tmp_path, "config.yaml", yaml_text + "\n")
    err = error_of(tmp_path)
    assert str(err) == message
    assert err.path == str(tmp_path / "config.yaml")


def test_bad_duration_names_key(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "service: {dedupe_ttl: 3 days}\n")
    err = error_of(tmp_path)
    assert str(err).startswith("config.yaml: service.dedupe_ttl: invalid duration '3 days'")
    assert err.key == "service.dedupe_ttl"


def test_wrong_type_in_include_names_the_include(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\ninclude: [conf.d]\n")
    write(tmp_path, "conf.d/plugins.yaml", "plugins: {echo: {parallelism: lots}}\n")
    err = error_of(tmp_path)
    assert str(err) == (
        'conf.d/plugins.yaml: plugins.echo.parallelism: expected an integer, got "lots"')
    assert err.path == str(tmp_path / "conf.d" / "plugins.yaml")


# ------------------------------------------------------------------ unknown keys


def test_unknown_keys_warn(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", """\
        plugin_roots: [p]
        service: {log_levle: debug, admission: {fail_on_drift: true}}
        tokens: []
        webhooks: {listen: ":9000"}
        api: {auth: {tokens: [{secret_ref: x, scope: [a]}]}, managment: 1}
        include: [plugins.yaml]
        """)
    write(tmp_path, "plugins.yaml", """\
        plugins:
          echo: {enabled: true, timeout: 5s, config: {anything: goes},
                 retry: {attempts: 3}, schedules: [{every: 5m, jitterr: 1s}]}
        service: {max_workers: 9}
        database: {path: x.db}
        """)
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.warnings == (
        "config.yaml: unknown key tokens (ignored)",
        "config.yaml: unknown key service.log_levle (ignored)",
        "config.yaml: unknown key api.managment (ignored)",
        "config.yaml: unknown key api.auth.tokens[0].scope (ignored)",
        "plugins.yaml: unknown key plugins.echo.timeout (ignored)",
        "plugins.yaml: unknown key plugins.echo.retry.attempts (ignored)",
        "plugins.yaml: unknown key plugins.echo.schedules[0].jitterr (ignored)",
        "plugins.yaml: database is read only from the root config file (ignored)",
        "plugins.yaml: service.max_workers is read only from the root config file (ignored)",
    )
    assert cfg.service.admission.fail_on_drift is True
    assert cfg.raw["webhooks"] == {"listen": ":9000"}
    assert cfg.service.max_workers == default_max_workers()


def test_a_list_where_a_boolean_belongs_is_a_config_error(tmp_path) -> None:
    import pytest as _pytest

    from ductile.config.load import parse_config
    from ductile.errors import ConfigError

    (tmp_path / "config.yaml").write_text("plugin_roots: [.]\napi:\n  enabled: []\n")
    with _pytest.raises(ConfigError, match="api.enabled"):
        parse_config(str(tmp_path / "config.yaml"))


def test_relative_management_socket_resolves_against_the_config_dir(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", "plugin_roots: [p]\napi: {management_socket: run/admin.sock}\n")
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.api.management_socket == str(tmp_path / "run" / "admin.sock")


@pytest.mark.parametrize(("service", "expected", "warned"), [
    ({}, (False,) * 5, None),
    ({"strict_mode": True}, (True,) * 5, "service.strict_mode is deprecated; replace it with"),
    ({"strict_mode": True, "admission": {"require_api_auth": True}},
     (False, False, False, True, False), "deprecated and ignored because service.admission"),
    ({"admission": {"verify_integrity_on_boot": "yes"}}, (True, False, False, False, False),
     None),
])
def test_admission_switches_resolve_from_the_block_else_strict_mode(
    tmp_path: Path, service: dict, expected: tuple, warned: str | None
) -> None:
    from ductile.config.schema import ADMISSION_SWITCHES
    from support.gateway import write_config

    cfg = load_config(str(write_config(tmp_path / "cfg", service=service)), environ={})
    assert tuple(getattr(cfg.service.admission, s) for s in ADMISSION_SWITCHES) == expected
    deprecation = [w for w in cfg.warnings if "strict_mode" in w]
    if warned is None:
        assert deprecation == []
    else:
        assert len(deprecation) == 1 and warned in deprecation[0]
    # Until its gate exists, every switch that is on says so at each load.
    from ductile.config.load import ADMISSION_ENFORCED

    unenforced = [w for w in cfg.warnings if "is not enforced yet" in w]
    assert len(unenforced) == sum(on for switch, on in zip(ADMISSION_SWITCHES, expected)
                                  if switch not in ADMISSION_ENFORCED)
