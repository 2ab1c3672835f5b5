"""`ductile api PATH` against a real gateway: the token read from the vault through --config
(or $DUCTILE_API_KEY), fields as query parameters or a JSON body, the answer printed as JSON,
exit 1 on an HTTP error with the message on stderr, 2 on a usage error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ductile.cli.api_client import field_value
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, run_cli, write_config


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    cfg = write_config(tmp_path_factory.mktemp("api-cli") / "cfg", port=port)
    gateway = Gateway(cfg, port=port).start()
    try:
        yield gateway
    finally:
        assert gateway.stop() == 0


def api(gw: Gateway, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return run_cli("api", *args, "--config", str(gw.config_dir), env=env)


def test_post_with_json_body_then_get_with_fields(gw: Gateway) -> None:
    ran = api(gw, "/plugins/echo/run",
              "--json-body", '{"payload": {"hello": "world"}, "sync": true}')
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert answer["status"] == "succeeded", answer
    assert ran.stdout.startswith("{\n  "), "the answer is printed indented"

    listed = api(gw, "-X", "GET", "/jobs", "-f", "plugin=echo", "-f", "limit=1")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert [job["job_id"] for job in jobs["jobs"]] == [answer["job_id"]]

    nobody = api(gw, "-X", "GET", "/jobs", "-f", "plugin=nobody")
    assert json.loads(nobody.stdout)["jobs"] == []


def test_post_fields_become_a_typed_json_object(gw: Gateway) -> None:
    # `sync=true` is sent as the boolean true (the route refuses a string there).
    ran = api(gw, "/plugin/echo/poll", "-f", "sync=true", "-f", "dedupe_key=cli-1")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "succeeded"
    text = api(gw, "/plugin/echo/poll", "-f", "sync=yes")
    assert text.returncode == 1
    assert "HTTP 400 from POST /plugin/echo/poll" in text.stderr and "sync" in text.stderr


def test_field_values_are_typed_as_the_original_reads_them() -> None:
    assert field_value("true") is True and field_value("false") is False
    assert field_value("42") == 42 and field_value("-7") == -7
    assert field_value("1.5") == "1.5" and field_value("True") == "True"
    assert field_value("") == "" and field_value("{}") == "{}"


def test_an_http_error_exits_1_with_the_message_on_stderr(gw: Gateway) -> None:
    missing = api(gw, "/job/no-such-job")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.strip() == "Error: HTTP 404 from GET /job/no-such-job: job not found"


def test_the_environment_token_is_used_before_the_vault(gw: Gateway) -> None:
    # The read-only token cannot reload: the answer proves which token was sent.
    refused = api(gw, "-X", "POST", "/system/reload", env={"DUCTILE_API_KEY": READ_TOKEN})
    assert refused.returncode == 1
    assert "HTTP 403" in refused.stderr and "insufficient scope" in refused.stderr


def test_an_address_and_an_environment_token_need_no_config(gw: Gateway,
                                                           tmp_path: Path) -> None:
    health = run_cli("api", "/healthz", "--api-url", gw.url,
                     env={"DUCTILE_API_KEY": TOKEN, "DUCTILE_CONFIG_DIR": str(tmp_path / "no"),
                          "HOME": str(tmp_path)})
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "ok"


def test_a_missing_token_and_usage_errors(gw: Gateway, tmp_path: Path) -> None:
    bare = write_config(tmp_path / "no-api")  # no api section: no token to find
    no_token = run_cli("api", "/jobs", "--config", str(bare), "--api-url", gw.url,
                       env={"DUCTILE_API_KEY": ""})
    assert no_token.returncode == 1
    assert "API key required" in no_token.stderr

    both = api(gw, "/jobs", "-f", "a=1", "--json-body", "{}")
    assert both.returncode == 2 and "not both" in both.stderr
    bad_field = api(gw, "/jobs", "-f", "novalue")
    assert bad_field.returncode == 2 and "key=value" in bad_field.stderr
    bad_json = api(gw, "/jobs", "--json-body", "{nope")
    assert bad_json.returncode == 2 and "--json-body is not valid JSON" in bad_json.stderr
    host = api(gw, "http://example.com/jobs")
    assert host.returncode == 2 and "must be a route path" in host.stderr
