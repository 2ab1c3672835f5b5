"""Trigger rules (`match:`) and synchronous answers (`respond: result`) through the real gateway:
the webhook listener bound by the supervisor, real plugin subprocesses run by the dispatcher,
the jobs read back over the API. One in-process test (a real dispatcher, real plugins, a real
hypercorn listener) fills the synchronous answer slots, which the config does not size.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.trio import serve

from ductile.config.webhooks import WebhookEndpoint
from ductile.logs import Logger
from ductile.planes.webhook.app import create_webhook_app
from ductile.planes.webhook.respond import JobOutcomes
from ductile.planes.webhook.server import webhook_hypercorn_config
from ductile.planes.webhook.verify import sign_github
from support.dispatch import harness
from support.gateway import TOKEN, Gateway, free_port, make_vault, write_config
from support.plugins import bundled_root, make_plugin, respond_script

SECRET = "webhook-hmac-secret-value"
DEPLOYED = {"status": "ok", "result": "deployed main"}


def waiter_script(release: Path) -> str:
    """A plugin that cannot finish before the test creates `release` (no timing involved)."""
    return (f"cat >/dev/null\nwhile [ ! -e '{release}' ]; do sleep 0.02; done\n"
            + respond_script({"status": "ok", "result": "done at last"}))


@dataclass
class Hooks:
    gw: Gateway
    base: str
    release: Path

    def deliver(self, path: str, body: dict[str, Any], *, secret: str = SECRET,
                **headers: str) -> httpx.Response:
        raw = json.dumps(body).encode()
        sent = {"X-Hub-Signature-256": sign_github(secret.encode(), raw),
                "Content-Type": "application/json",
                **{name.replace("_", "-"): value for name, value in headers.items()}}
        return httpx.post(self.base + path, content=raw, headers=sent, timeout=30)

    def jobs(self) -> list[dict[str, Any]]:
        return self.gw.get("/jobs").json()["jobs"]

    def wait_terminal(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while (job := self.gw.get(f"/job/{job_id}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        return job


@pytest.fixture
def hooks(tmp_path: Path) -> Iterator[Hooks]:
    root = tmp_path / "plugins"
    release = tmp_path / "release"
    make_plugin(root, "deploy", respond_script(DEPLOYED))
    make_plugin(root, "waiter", waiter_script(release))
    make_plugin(root, "broken", respond_script({"status": "error", "error": "disk on fire",
                                                "retry": False}))
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "gh-secret": SECRET})
    endpoint = {"secret_ref": "gh-secret"}
    write_config(cfg, port=port, plugin_roots=[str(bundled_root()), str(root)],
                 plugins={name: {"enabled": True} for name in ("deploy", "waiter", "broken")},
                 extra={"webhooks": {"listen": f"127.0.0.1:{hook_port}", "endpoints": [
                     {**endpoint, "path": "/hooks/main", "plugin": "deploy",
                      "match": [{"header": "X-GitHub-Event", "equals": "push"},
                                {"payload": "ref", "equals": "refs/heads/main"}]},
                     {**endpoint, "path": "/hooks/strict", "plugin": "deploy",
                      "match": [{"any": [{"payload": "action", "in": ["opened", "reopened"]},
                                         {"payload": "pull_request.draft", "equals": False}]}],
                      "refuse_status": 422},
                     {**endpoint, "path": "/hooks/result", "plugin": "deploy",
                      "respond": "result", "dedupe_header": "X-GitHub-Delivery",
                      "match": [{"payload": "ref", "regex": "^refs/heads/"}]},
                     {**endpoint, "path": "/hooks/slow", "plugin": "waiter",
                      "respond": "result", "respond_timeout": "1s"},
                     {**endpoint, "path": "/hooks/broken", "plugin": "broken",
                      "respond": "result"},
                 ]}})
    gw = Gateway(cfg, port=port).start()
    try:
        yield Hooks(gw, f"http://127.0.0.1:{hook_port}", release)
    finally:
        release.touch()  # never leave a plugin waiting past the test
        assert gw.stop() == 0


def test_only_matching_deliveries_are_queued(hooks: Hooks) -> None:
    push = {"ref": "refs/heads/main", "repository": {"full_name": "me/site"}}
    accepted = hooks.deliver("/hooks/main", push, X_GitHub_Event="push")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    dev = hooks.deliver("/hooks/main", {**push, "ref": "refs/heads/dev"},
                        X_GitHub_Event="push")
    assert dev.status_code == 202
    assert dev.json() == {"status": "ignored", "reason": 'match[1]: payload ref is '
                                                         '"refs/heads/dev", not "refs/heads/main"'}
    ping = hooks.deliver("/hooks/main", push, X_GitHub_Event="ping")
    assert ping.json()["reason"] == 'match[0]: header X-GitHub-Event is "ping", not "push"'
    unnamed = hooks.deliver("/hooks/main", push)
    assert unnamed.json()["reason"] == "match[0]: header X-GitHub-Event is missing"

    closed = hooks.deliver("/hooks/strict", {"action": "closed",
                                             "pull_request": {"draft": True}})
    assert closed.status_code == 422
    assert closed.json()["status"] == "ignored"
    assert closed.json()["reason"].startswith("match[0]: no item of any holds (")
    reopened = hooks.deliver("/hooks/strict", {"action": "reopened"})
    assert reopened.status_code == 202

    assert hooks.wait_terminal(job_id)["status"] == "succeeded"
    assert hooks.wait_terminal(reopened.json()["job_id"])["status"] == "succeeded"
    assert sorted(job["job_id"] for job in hooks.jobs()) == sorted(
        [job_id, reopened.json()["job_id"]])
    ignored = [r for r in hooks.gw.log_records()
               if r.get("msg") == "webhook ignored: match rules do not hold"]
    assert [r["status"] for r in ignored] == [202, 202, 202, 422]


def test_the_signature_is_checked_before_the_rules(hooks: Hooks) -> None:
    push = {"ref": "refs/heads/main"}
    for body, headers in ((push, {"X_GitHub_Event": "push"}),  # would match
                          ({"ref": "refs/heads/dev"}, {})):  # would be ignored
        forged = hooks.deliver("/hooks/main", body, secret="not-the-secret", **headers)
        assert forged.status_code == 403
        assert forged.json() == {"error": "forbidden"}
    closed = hooks.deliver("/hooks/strict", {"action": "closed"}, secret="wrong")
    assert closed.status_code == 403 and closed.json() == {"error": "forbidden"}
    assert hooks.jobs() == []


def test_respond_result_answers_with_the_plugins_result(hooks: Hooks) -> None:
    body = {"ref": "refs/heads/main"}
    answer = hooks.deliver("/hooks/result", body, X_GitHub_Delivery="d-1")
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["job_id"]
    assert answer.json() == {"job_id": job_id, "status": "succeeded", "result": DEPLOYED}
    # A redelivery gets the same job's result, without running it again.
    again = hooks.deliver("/hooks/result", body, X_GitHub_Delivery="d-1")
    assert again.status_code == 200
    assert again.json() == {"job_id": job_id, "status": "succeeded", "result": DEPLOYED,
                            "deduplicated": True}
    # The rules still come first: a tag push is ignored, nothing runs, nothing is awaited.
    tag = hooks.deliver("/hooks/result", {"ref": "refs/tags/v1"}, X_GitHub_Delivery="d-2")
    assert tag.status_code == 202 and tag.json()["status"] == "ignored"
    assert [job["job_id"] for job in hooks.jobs()] == [job_id]


def test_a_plugin_slower_than_respond_timeout_gets_202_and_still_completes(
    hooks: Hooks,
) -> None:
    answer = hooks.deliver("/hooks/slow", {"n": 1})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert answer.json() == {"job_id": job_id, "status": answer.json()["status"]}
    assert answer.json()["status"] in ("queued", "running")  # the job goes on without us
    hooks.release.touch()
    job = hooks.wait_terminal(job_id)
    assert job["status"] == "succeeded"
    assert job["result"] == {"status": "ok", "result": "done at last"}


def test_a_failing_plugin_gets_502_with_its_error(hooks: Hooks) -> None:
    answer = hooks.deliver("/hooks/broken", {"n": 1})
    assert answer.status_code == 502, answer.text
    job_id = answer.json()["job_id"]
    assert answer.json() == {"job_id": job_id, "status": "failed", "error": "disk on fire"}
    assert hooks.gw.get(f"/job/{job_id}").json()["status"] == "failed"


async def test_when_every_wait_slot_is_taken_a_delivery_gets_202_at_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    release = tmp_path / "release"
    make_plugin(root, "waiter", waiter_script(release))
    hook = WebhookEndpoint(path="/hooks/slow", plugin="waiter", secret_ref="s",
                           signature_header="X-Hub-Signature-256", respond="result",
                           respond_timeout=300.0)
    log = io.StringIO()
    async with harness(tmp_path, plugins={"waiter": {"enabled": True}},
                       plugin_roots=[str(root)]) as h:
        outcomes = JobOutcomes(h.proc.completions, lambda: h.rt.queue, lambda: False)
        app = create_webhook_app([hook], {hook.path: SECRET.encode()}, h.rt.queue.enqueue,
                                 Logger("webhook", stream=log), outcomes=outcomes, sync_slots=1)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        config = webhook_hypercorn_config(f"fd://{os.dup(listener.fileno())}",
                                          graceful_timeout=1.0)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{hook.path}"
        stop = trio.Event()
        first: list[httpx.Response] = []

        async def deliver(n: int) -> httpx.Response:
            raw = json.dumps({"n": n}).encode()
            async with httpx.AsyncClient(timeout=60) as client:
                return await client.post(url, content=raw, headers={
                    "X-Hub-Signature-256": sign_github(SECRET.encode(), raw)})

        async def waiting_delivery() -> None:
            first.append(await deliver(1))

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
                nursery.start_soon(waiting_delivery)
                # "webhook accepted" is logged right before the wait takes its slot, with no
                # checkpoint in between: once it is there, the one slot is held.
                with trio.fail_after(20):
                    while '"webhook accepted"' not in log.getvalue():
                        await trio.sleep(0.01)
                second = await deliver(2)
                assert second.status_code == 202
                second_id = second.json()["job_id"]
                assert second.json() == {"job_id": second_id, "status": "queued"}
                assert "all 1 synchronous answer slots are taken" in log.getvalue()
                release.touch()
                with trio.fail_after(30):
                    while not first:
                        await trio.sleep(0.01)
                assert first[0].status_code == 200, first[0].text
                assert first[0].json()["result"] == {"status": "ok", "result": "done at last"}
                assert (await h.wait(second_id)).status == "succeeded"
                stop.set()
        finally:
            release.touch()
            listener.close()


def test_the_listener_outlasts_the_longest_synchronous_answer() -> None:
    # hypercorn closes a connection silent for read_timeout even while the app is answering,
    # and a sender waiting for `respond: result` is silent.
    from ductile.config.webhooks import MAX_RESPOND_TIMEOUT

    config = webhook_hypercorn_config("127.0.0.1:0")
    assert config.read_timeout > MAX_RESPOND_TIMEOUT
    assert config.keep_alive_timeout == config.ssl_handshake_timeout == 10
