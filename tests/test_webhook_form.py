"""Form-encoded webhook bodies (Slack slash commands) through the real gateway: signed with the
slack scheme over the raw bytes, parsed into `{"form", "raw_body"}`, routed on their fields by
`match:` rules, delivered to a real plugin subprocess; other content types refused with 415."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from ductile.planes.webhook.verify import sign_slack
from support.gateway import TOKEN, Gateway, free_port, make_vault, run_cli, write_config
from support.plugins import make_plugin

SECRET = "slack-signing-secret-value"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Slack:
    gw: Gateway
    url: str
    stdin: Path

    def post(self, body: bytes, *, content_type: str = FORM, secret: str = SECRET
             ) -> httpx.Response:
        stamp = int(time.time())
        headers = {"X-Slack-Request-Timestamp": str(stamp),
                   "X-Slack-Signature": sign_slack(secret.encode(), body, stamp),
                   "Content-Type": content_type}
        return httpx.post(self.url, content=body, headers=headers, timeout=10)

    def wait_terminal(self, job_id: str) -> dict:
        deadline = time.monotonic() + 20
        while (job := self.gw.get(f"/job/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        return job


@pytest.fixture
def slack(tmp_path: Path) -> Iterator[Slack]:
    stdin = tmp_path / "stdin.json"
    reply = json.dumps({"status": "ok", "result": "deploying"})
    make_plugin(tmp_path / "plugins", "slash", f"cat > '{stdin}'\nprintf '%s' '{reply}'")
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "slack-secret": SECRET})
    write_config(cfg, port=port, plugin_roots=[str(tmp_path / "plugins")],
                 plugins={"slash": {"enabled": True}},
                 extra={"webhooks": {"listen": f"127.0.0.1:{hook_port}", "endpoints": [
                     {"path": "/hooks/slack", "plugin": "slash", "scheme": "slack",
                      "secret_ref": "slack-secret",
                      "match": [{"payload": "form.command", "equals": "/deploy"}]}]}})
    gw = Gateway(cfg, port=port).start()
    try:
        yield Slack(gw, f"http://127.0.0.1:{hook_port}/hooks/slack", stdin)
    finally:
        assert gw.stop() == 0


def test_a_signed_slash_command_runs_with_its_fields_and_raw_body(slack: Slack) -> None:
    body = urlencode([("token", "legacy"), ("command", "/deploy"), ("text", "site prod"),
                      ("channel_id", "C1"), ("channel_id", "C2"), ("user_name", "")]).encode()
    accepted = slack.post(body, content_type=f"{FORM}; charset=utf-8")
    assert accepted.status_code == 202, accepted.text
    job = slack.wait_terminal(accepted.json()["job_id"])
    assert job["status"] == "succeeded", job
    expected = {"form": {"token": "legacy", "command": "/deploy", "text": "site prod",
                         "channel_id": ["C1", "C2"], "user_name": ""},
                "raw_body": body.decode()}
    assert json.loads(slack.stdin.read_text())["payload"] == expected
    ledger = json.loads(run_cli("job", "inspect", job["job_id"], "--config",
                                str(slack.gw.config_dir), "--json").stdout)
    assert ledger["payload"] == expected


def test_form_fields_are_routed_on_and_other_bodies_refused(slack: Slack) -> None:
    other = slack.post(urlencode({"command": "/status", "text": ""}).encode())
    assert other.status_code == 202
    assert other.json() == {"status": "ignored",
                            "reason": 'match[0]: payload form.command is "/status", '
                                      'not "/deploy"'}
    text = slack.post(b"command=/deploy", content_type="text/plain")
    assert text.status_code == 415
    assert text.json() == {"error": "unsupported Content-Type 'text/plain': a webhook body "
                                    f"must be application/json or {FORM}"}
    bad = slack.post(b"command=%2Fdeploy&text=%ff")
    assert bad.status_code == 400
    assert bad.json()["error"] == ("invalid form body: a percent-escape does not decode "
                                   "as UTF-8")
    # The signature still comes first: an unsigned form learns nothing about the body.
    forged = slack.post(b"command=/deploy", secret="not-the-secret")
    assert forged.status_code == 403 and forged.json() == {"error": "forbidden"}
    assert slack.gw.get("/jobs").json()["jobs"] == []
