"""Token scopes in the newest names: the mapping table (pure), then a real gateway answering
403 or not, per route family, for tokens holding one scope each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import json

import httpx
import pytest

from ductile.config.scopes import CURRENT, GRANTED, WILDCARD, effective, satisfies
from support.gateway import Gateway, free_port, make_vault, run_cli, write_config

JOBS_RO = {"jobs:status:ro", "jobs:result:ro", "jobs:logs:ro", "jobs:tree:ro"}
EVENTS_RO = {"events:ro", "events:meta:ro", "events:payload:ro"}


@pytest.mark.parametrize(("granted", "effective_scopes"), [
    # Older names: exactly what they allowed before, in the newest names.
    (["plugin:ro"], {"plugin:catalog:ro", "plugin:invoke:ro"}),
    (["jobs:ro"], JOBS_RO),
    # Current names and what they imply.
    (["plugin:rw"], {"plugin:rw", "plugin:catalog:ro", "plugin:invoke:ro"}),
    (["jobs:rw"], {"jobs:rw"} | JOBS_RO),
    (["events:rw"], {"events:rw"} | EVENTS_RO),
    (["events:ro"], EVENTS_RO),
    (["system:rw"], {"system:rw", "system:ro"}),
    (["system:ro"], {"system:ro"}),
    (["metrics:ro"], {"metrics:ro"}),
    (["plugin:catalog:ro"], {"plugin:catalog:ro"}),
    (["jobs:logs:ro"], {"jobs:logs:ro"}),
    (["*"], {"*"}),
    # Names that were never scopes grant nothing (the Go sample config's job:ro, state:ro).
    (["job:ro", "state:ro", ""], set()),
    ([], set()),
    ([" jobs:ro "], JOBS_RO),
])
def test_the_mapping_table(granted: list[str], effective_scopes: set[str]) -> None:
    assert effective(granted) == effective_scopes


def test_every_newest_name_is_granted_and_the_new_routes_names_exist() -> None:
    assert {"events:ro", "metrics:ro", "plugin:invoke:ro", "plugin:catalog:ro"} <= CURRENT
    assert CURRENT | {"plugin:ro", "jobs:ro"} == GRANTED


def test_a_check_still_written_in_an_old_name_needs_all_it_stood_for() -> None:
    assert satisfies(effective(["jobs:rw"]), ["jobs:ro"])
    assert not satisfies(effective(["jobs:status:ro"]), ["jobs:ro"])
    assert satisfies(frozenset({WILDCARD}), ["anything"])
    assert not satisfies(effective(["plugin:rw"]), ["system:ro"])


# One token per scope, each named for its scope.
TOKENS: dict[str, list[str]] = {
    "star": ["*"], "old-read": ["plugin:ro", "jobs:ro"], "none": [],
    "catalog": ["plugin:catalog:ro"], "invoke": ["plugin:invoke:ro"], "plugin-rw": ["plugin:rw"],
    "status": ["jobs:status:ro"], "tree": ["jobs:tree:ro"], "logs": ["jobs:logs:ro"],
    "jobs-rw": ["jobs:rw"], "system-ro": ["system:ro"], "system-rw": ["system:rw"],
    "events": ["events:ro"], "events-rw": ["events:rw"], "metrics": ["metrics:ro"],
}

# Each route family: a request, the status it gets when allowed, and who is allowed.
ROUTES: list[tuple[str, str, dict | None, int, set[str]]] = [
    ("GET", "/plugins", None, 200, set(TOKENS)),
    ("GET", "/plugin/echo", None, 200, {"star", "old-read", "catalog", "plugin-rw"}),
    ("POST", "/plugin/echo/poll", {"payload": {}}, 202,
     {"star", "old-read", "invoke", "plugin-rw"}),
    ("POST", "/plugins/echo/run", {"command": "poll"}, 202,
     {"star", "old-read", "invoke", "plugin-rw"}),
    # A write command needs plugin:rw beyond plugin:invoke:ro.
    ("POST", "/plugin/echo/handle", {"payload": {}}, 202, {"star", "plugin-rw"}),
    ("POST", "/pipeline/no-such-pipeline", {"payload": {}}, 404, {"star", "plugin-rw"}),
    ("GET", "/jobs", None, 200, {"star", "old-read", "status", "jobs-rw"}),
    ("GET", "/job/no-such-job", None, 404, {"star", "old-read", "status", "jobs-rw"}),
    ("GET", "/scheduler/jobs", None, 200, {"star", "old-read", "status", "jobs-rw"}),
    ("GET", "/job/no-such-job/tree", None, 404, {"star", "old-read", "tree", "jobs-rw"}),
    ("GET", "/job-logs", None, 200, {"star", "old-read", "logs", "jobs-rw"}),
    ("POST", "/job/no-such-job/cancel", {}, 404, {"star", "jobs-rw"}),
    ("GET", "/system/doctor", None, 200, {"star", "system-ro", "system-rw"}),
    ("GET", "/system/nodes", None, 200, {"star", "system-ro", "system-rw"}),
    ("POST", "/scheduler/run", {"not": "a valid body"}, 400, {"star", "system-rw"}),
    ("GET", "/events", None, 200, {"star", "events", "events-rw"}),
    ("GET", "/metrics", None, 200, {"star", "metrics"}),
]


def _secret(name: str) -> str:
    return f"token-for-{name}-0123456789abcdef"


@pytest.fixture(scope="module")
def scoped_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = Path(tmp_path_factory.mktemp("scopes"))
    make_vault(directory, {name: _secret(name) for name in TOKENS})
    port = free_port()
    write_config(directory, port=port, api={"auth": {"tokens": [
        {"secret_ref": name, "scopes": scopes} for name, scopes in TOKENS.items()]}})
    gw = Gateway(directory, port).start(wait=False)
    gw.wait_healthy(token=_secret("star"))
    try:
        yield gw
    finally:
        gw.stop()


@pytest.mark.parametrize(("method", "path", "body", "allowed_status", "allowed"), ROUTES,
                         ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_each_route_family_admits_exactly_its_scopes(
        scoped_gateway: Gateway, method: str, path: str, body: dict | None,
        allowed_status: int, allowed: set[str]) -> None:
    for name in TOKENS:
        # Streamed, so an admitted GET /events is judged by its status without waiting for
        # a stream that does not end.
        with httpx.stream(method, scoped_gateway.url + path, json=body, timeout=30.0,
                          headers={"Authorization": f"Bearer {_secret(name)}"}) as resp:
            status = resp.status_code
            text = "" if status == 200 else resp.read().decode()
        if name in allowed:
            assert status == allowed_status, (name, text)
        else:
            assert (status, json.loads(text)) == (403, {"error": "insufficient scope"}), \
                (name, text)


def test_config_check_shows_effective_scopes_in_the_newest_names(
        scoped_gateway: Gateway) -> None:
    done = run_cli("config", "check", "--config", str(scoped_gateway.config_dir),
                   "--format", "json")
    report = json.loads(done.stdout)
    shown = {t["name"]: t for t in report["tokens"]}
    assert shown["old-read"]["scopes"] == ["plugin:ro", "jobs:ro"]
    assert set(shown["old-read"]["effective"]) == {"plugin:catalog:ro", "plugin:invoke:ro"} \
        | JOBS_RO
    assert shown["none"]["effective"] == []
    text = run_cli("config", "check", "--config", str(scoped_gateway.config_dir)).stdout
    assert "Token jobs-rw: effective scopes jobs:logs:ro, jobs:result:ro, jobs:rw, " \
           "jobs:status:ro, jobs:tree:ro" in text
