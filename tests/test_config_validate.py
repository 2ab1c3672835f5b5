"""Structural validation messages and their order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ductile.config.durations import DurationError
from ductile.config.load import load_config, parse_config
from ductile.config.validate import api_without_token, parse_interval, validate_config
from ductile.errors import ConfigError

BASE = "plugin_roots: [p]\n"


def invalid(tmp_path: Path, text: str, **env: str) -> ConfigError:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), environ=env)
    return info.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("service: {tick_interval: -1s}", "service.tick_interval must be positive"),
        ("service: {tick_interval: 50ms}",
         "service.tick_interval 50ms is below the minimum allowed (100ms)"),
        ("service: {hook_max_depth: -1}",
         "service.hook_max_depth -1 must be >= 0 (0 means use default 4)"),
        ("service: {max_workers: -2}", "service.max_workers must be positive"),
        ("service: {dedupe_ttl: 2d, job_queue_retention: 1d}",
         "service.job_queue_retention (24h0m0s) must be >= service.dedupe_ttl (48h0m0s) "
         "because dedupe checks use terminal rows in job_queue"),
        ("service: {log_level: verbose}",
         'service.log_level must be one of: debug, info, warn, error (got "verbose")'),
        ("plugins: {p: {enabled: true, schedule: {every: 5m}}}",
         'plugin "p": schedule is no longer supported; use schedules[]'),
        ("plugins: {p: {enabled: true, parallelism: -1}}",
         'plugin "p": parallelism must be >= 1'),
        ("service: {max_workers: 2}\nplugins: {p: {enabled: true, parallelism: 3}}",
         'plugin "p": parallelism (3) cannot exceed service.max_workers (2)'),
        ("plugins: {p: {enabled: true, schedules: [{command: poll}]}}",
         'plugin "p": schedules[0] requires one of every, cron, at, or after'),
        ("plugins: {p: {enabled: true, schedules: [{every: 5m}, {every: 1h, cron: '* * * * *'}]}}",
         'plugin "p": schedules[1] must set exactly one of every, cron, at, or after'),
        ("plugins: {p: {enabled: true, schedules: [{every: soon}]}}",
         'plugin "p": invalid schedule interval "soon": invalid duration'),
        ("plugins: {p: {enabled: true, schedules: [{every: 0s}]}}",
         'plugin "p": invalid schedule interval "0s": interval must be positive'),
        ("plugins: {p: {enabled: true, schedules: [{every: 5m, command: handle}]}}",
         'plugin "p": schedules[0].command "handle" cannot be scheduled'),
        ("plugins: {p: {enabled: true, schedules: [{every: 5m}, {cron: '0 * * * *'}]}}",
         'plugin "p": duplicate schedule id "default"'),
        ("plugins: {p: {enabled: true, schedules: [{id: a, every: 1m}, {id: a, at: x}]}}",
         'plugin "p": duplicate schedule id "a"'),
        ("plugins: {p: {enabled: true, config: {outer: {inner: 'x ${NOT_SET_PLUGIN}'}}}}",
         'plugin "p": environment variable ${NOT_SET_PLUGIN} is not set'),
        ("plugins: {p: {enabled: true, config: {list: [a, '${NOT_SET_IN_LIST}']}}}",
         'plugin "p": environment variable ${NOT_SET_IN_LIST} is not set'),
    ],
)
def test_messages(tmp_path: Path, text: str, message: str) -> None:
    err = invalid(tmp_path, BASE + text + "\n")
    assert str(err).startswith(message)
    assert err.key


def test_plugin_roots_required(tmp_path: Path) -> None:
    assert str(invalid(tmp_path, "plugin_roots: ['  ']\n")) == "plugin_roots is required"
    assert str(invalid(tmp_path, "service: {name: x}\n")) == "plugin_roots is required"


def test_state_path_required(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(BASE)
    cfg = dataclasses.replace(parse_config(str(tmp_path), environ={}), state_path="")
    with pytest.raises(ConfigError, match="^state.path is required$"):
        validate_config(cfg)


def test_first_error_wins_in_reference_order(tmp_path: Path) -> None:
    err = invalid(tmp_path, "service: {log_level: nope, max_workers: -1}\n")
    assert str(err) == "service.max_workers must be positive"


def test_disabled_plugins_and_disabled_api_are_not_checked(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        BASE
        + "api: {enabled: false, auth: {tokens: [{secret_ref: '${NOT_SET_X}'}]}}\n"
        + "plugins: {p: {schedule: x, parallelism: 99, config: {a: '${NOT_SET_Y}'}}}\n")
    load_config(str(tmp_path), environ={})


def test_valid_schedules_and_parallelism(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        BASE + "service: {max_workers: 2}\n"
        "plugins: {p: {enabled: true, parallelism: 2, schedules: ["
        "{every: daily}, {id: b, every: 1.5d}, {id: c, cron: '0 3 * * *', command: sync},"
        "{id: d, at: '2030-01-01T00:00:00Z'}, {id: e, after: 10m}]}}\n")
    load_config(str(tmp_path), environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("hourly", 3600), ("Daily", 86400), ("weekly", 604800), ("monthly", 2592000),
     ("5m", 300), ("3d", 259200), ("2w", 1209600), ("1.5d", 129600), (" 90s ", 90)],
)
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "  ", "-5m", "0s", "fortnightly", "5"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_interval(text)


def test_enabled_api_without_token_needs_a_vault(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(BASE + "api: {enabled: true}\n")
    cfg = load_config(str(tmp_path), environ={})
    message = api_without_token(cfg, has_vault=False)
    assert message is not None
    assert message.startswith("api.auth.tokens must be configured when API is enabled")
    assert api_without_token(cfg, has_vault=True) is None


def test_max_route_depth_default_override_and_refusal(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(BASE)
    assert load_config(str(tmp_path), environ={}).service.max_route_depth == 32
    (tmp_path / "config.yaml").write_text(BASE + "service: {max_route_depth: 5}\n")
    assert load_config(str(tmp_path), environ={}).service.max_route_depth == 5
    (tmp_path / "config.yaml").write_text(BASE + "service: {max_route_depth: -1}\n")
    with pytest.raises(ConfigError, match=r"service.max_route_depth -1 must be >= 0"):
        load_config(str(tmp_path), environ={})
