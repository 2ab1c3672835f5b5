"""Fuzz the config parsers: bad input yields the documented error type, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile.config.durations import DurationError, format_duration, parse_duration
from ductile.config.envfile import parse_env_text
from ductile.config.interpolate import interpolate
from ductile.config.load import load_config
from ductile.config.snapshot import snapshot_fields
from ductile.errors import ConfigError

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

duration_like = st.text(alphabet="0123456789.+- nsuµμmhdwx", max_size=20)


@FUZZ
@given(st.one_of(st.text(max_size=30), duration_like))
def test_parse_duration_raises_only_duration_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except DurationError:
        return
    assert isinstance(value, float)


@FUZZ
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_parse_round_trip_integral_nanoseconds(ns: int) -> None:
    text = format_duration(ns / 1e9)
    assert round(parse_duration(text) * 1e9) == ns


env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)


@FUZZ
@given(st.text(max_size=80), st.dictionaries(env_names, st.text(max_size=10), max_size=4))
def test_interpolate_never_raises_and_ignores_text_without_markers(
    text: str, environ: dict[str, str]
) -> None:
    result = interpolate(text, environ)
    if "${" not in text:
        assert result == text


@FUZZ
@given(st.lists(st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k}={v}", env_names, st.text(max_size=10)),
    st.builds(lambda k, v: f"export {k}='{v}'", env_names, st.text(max_size=10)),
), max_size=8))
def test_env_parser_raises_only_config_error(lines: list[str]) -> None:
    try:
        values = parse_env_text("\n".join(lines), "/fuzz/.env")
    except ConfigError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


# A YAML vocabulary close to real configs, so the fuzzer reaches type checks and validation
# rather than stopping at the parser.
KEYS = ["service", "state", "api", "plugins", "plugin_roots", "include", "environment_vars",
        "auth", "tokens", "token", "scopes", "enabled", "listen", "name", "tick_interval",
        "max_workers", "log_level", "path", "echo", "config", "retry", "timeouts", "schedules",
        "every", "cron", "command", "parallelism", "max_attempts", "backoff_base", "webhooks",
        "database", "dedupe_ttl", "job_queue_retention", "secret_ref", "schedule", "payload"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["5m", "0s", "-1s", "50ms", "1d", "2w", "info", "debug", "x", "${UNSET}",
                     "plugins", "*", "handle", "poll", "127.0.0.1:0", "daily", ""]),
    st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=25,
)

# Well-formed skeletons with fuzzed leaves, so examples get past the types into validation.
durations = st.sampled_from(["5m", "0s", "-1s", "50ms", "1d", "2w", "1h30m", "soon", "daily"])
schedule = st.dictionaries(
    st.sampled_from(["every", "cron", "at", "after", "id", "command", "payload", "jitter"]),
    st.one_of(durations, st.sampled_from(["a", "b", "handle", "poll", "0 * * * *"]), scalars),
    max_size=4,
)
plugin = st.fixed_dictionaries({}, optional={
    "enabled": st.booleans(),
    "parallelism": st.integers(-2, 6),
    "schedules": st.lists(schedule, max_size=3),
    "schedule": scalars,
    "config": st.dictionaries(st.sampled_from(["a", "password", "nested"]), documents,
                              max_size=3),
    "retry": st.fixed_dictionaries({}, optional={"max_attempts": st.integers(-1, 5),
                                                 "backoff_base": durations}),
    "timeouts": st.dictionaries(st.sampled_from(["poll", "handle", "sync"]), durations,
                                max_size=2),
})
service = st.fixed_dictionaries({}, optional={
    "max_workers": st.integers(-2, 8), "tick_interval": durations, "dedupe_ttl": durations,
    "job_queue_retention": durations, "log_level": st.sampled_from(["info", "warn", "loud"]),
    "hook_max_depth": st.integers(-1, 5),
})
token = st.fixed_dictionaries({}, optional={
    "token": st.sampled_from(["t", "", " ", "${UNSET}"]), "scopes": st.just(["*"]),
    "secret_ref": st.sampled_from(["ref", ""]),
})
api = st.fixed_dictionaries({}, optional={
    "enabled": st.booleans(), "auth": st.fixed_dictionaries({"tokens": st.lists(token,
                                                                                 max_size=3)}),
})
config_docs = st.fixed_dictionaries({"plugin_roots": st.just(["p"])}, optional={
    "service": service, "api": api,
    "plugins": st.dictionaries(st.sampled_from(["echo", "off", "x"]), plugin, max_size=3),
})


def check_load(directory: Path, text: str) -> None:
    (directory / "config.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(str(directory), environ={"HOME": str(directory)})
    except ConfigError:
        return
    snapshot_fields(cfg)  # a loadable config must also snapshot


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-fuzz")


@FUZZ
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_load_arbitrary_text_raises_only_config_error(fuzz_dir: Path, text: str) -> None:
    check_load(fuzz_dir, text)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=6))
def test_load_config_shaped_yaml_raises_only_config_error(
    fuzz_dir: Path, doc: dict[str, Any]
) -> None:
    check_load(fuzz_dir, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(config_docs)
def test_load_valid_skeletons_raise_only_config_error(
    fuzz_dir: Path, doc: dict[str, Any]
) -> None:
    check_load(fuzz_dir, yaml.safe_dump(doc, allow_unicode=True))
