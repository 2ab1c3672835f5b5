"""Webhooks through the real gateway: the listener bound by the supervisor, the HMAC key resolved
from the vault, the job run by the dispatcher, refusals naming their gate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import yaml

from ductile.planes.webhook.verify import sign_github
from support.gateway import (
    TOKEN,
    Gateway,
    free_port,
    make_vault,
    raw_exchange,
    run_cli,
    write_config,
)

SECRET = "webhook-hmac-secret-value"


def webhook_config(tmp_path: Path, *, secret_ref: str = "gh-secret",
                   plugin: str = "echo") -> tuple[Path, int, int]:
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    cfg.mkdir(parents=True)
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "gh-secret": SECRET})
    write_config(cfg, port=port, plugins={"echo": {"enabled": True, "config": {"message": "hi"},
                                                   "retry": {"max_attempts": 7}}},
                 extra={"webhooks": {
        "listen": f"127.0.0.1:{hook_port}",
        "endpoints": [{"path": "/hooks/github", "plugin": plugin, "secret_ref": secret_ref,
                       "signature_header": "X-Hub-Signature-256",
                       "dedupe_header": "X-GitHub-Delivery"}],
    }})
    return cfg, port, hook_port


def test_signed_delivery_runs_and_a_replay_does_not(tmp_path: Path) -> None:
    cfg, port, hook_port = webhook_config(tmp_path)
    gw = Gateway(cfg, port=port).start()
    url = f"http://127.0.0.1:{hook_port}/hooks/github"
    body = b'{"action": "opened", "n": 1}'
    headers = {"X-Hub-Signature-256": sign_github(SECRET.encode(), body),
               "X-GitHub-Delivery": "delivery-1", "Content-Type": "application/json"}
    try:
        first = httpx.post(url, content=body, headers=headers, timeout=10)
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        again = httpx.post(url, content=body, headers=headers, timeout=10)
        assert again.status_code == 200 and again.json() == {"job_id": job_id,
                                                             "deduplicated": True}
        bad = httpx.post(url, content=body + b" ", headers=headers, timeout=10)
        assert bad.status_code == 403 and bad.json() == {"error": "forbidden"}
        deadline = time.monotonic() + 15
        job: dict = {}
        while time.monotonic() < deadline:
            job = gw.get(f"/job/{job_id}").json()
            if job["status"] == "succeeded":
                break
            time.sleep(0.05)
        assert job["status"] == "succeeded", job
        # The job retries on its plugin's policy, as a job started through the API does.
        assert job["max_attempts"] == 7, job
        assert len(gw.get("/jobs").json()["jobs"]) == 1
        inspect = run_cli("job", "inspect", job_id, "--config", str(cfg), "--json")
        ledger = json.loads(inspect.stdout)
        assert ledger["submitted_by"] == "webhook:/hooks/github"
        assert ledger["payload"] == {"action": "opened", "n": 1}
        # A reload keeps the listener and the endpoint.
        assert gw.post("/system/reload").status_code == 200
        headers["X-GitHub-Delivery"] = "delivery-2"
        assert httpx.post(url, content=body, headers=headers, timeout=10).status_code == 202
    finally:
        assert gw.stop() == 0
    assert SECRET not in gw.stdout() + gw.stderr()


def test_unresolved_secret_and_unknown_plugin_refuse_boot(tmp_path: Path) -> None:
    for name, kwargs, gate, needle in (
        ("ref", {"secret_ref": "missing"}, "secret_refs_resolved",
         "webhooks.endpoints[0]: secret_ref 'missing' not found in the vault"),
        ("plugin", {"plugin": "ghost"}, "webhook_targets_admitted",
         "targets plugin 'ghost' which was not discovered"),
    ):
        cfg, port, _ = webhook_config(tmp_path / name, **kwargs)
        gw = Gateway(cfg, port=port).start(wait=False)
        assert gw.wait_exit() == 78
        assert f"gate {gate}" in gw.stderr() and needle in gw.stderr(), gw.stderr()


def test_webhooks_listen_cannot_change_on_reload(tmp_path: Path) -> None:
    cfg, port, _ = webhook_config(tmp_path)
    gw = Gateway(cfg, port=port).start()
    try:
        doc = yaml.safe_load((cfg / "config.yaml").read_text())
        doc["webhooks"]["listen"] = f"127.0.0.1:{free_port()}"
        (cfg / "config.yaml").write_text(yaml.safe_dump(doc))
        resp = gw.post("/system/reload")
        assert resp.status_code == 409
        assert resp.json()["gate"] == "restart_only_keys_unchanged"
        assert "webhooks.listen" in json.dumps(resp.json())
    finally:
        assert gw.stop() == 0


def test_bodies_the_gateway_cannot_carry_are_refused_with_400_naming_the_field(
    tmp_path: Path,
) -> None:
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    cfg.mkdir(parents=True)
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "gh-secret": SECRET})
    write_config(cfg, port=port, extra={"webhooks": {
        "listen": f"127.0.0.1:{hook_port}",
        "endpoints": [{"path": "/hooks/handle", "plugin": "echo", "secret_ref": "gh-secret"},
                      {"path": "/hooks/poll", "plugin": "echo", "command": "poll",
                       "secret_ref": "gh-secret"}],
    }})
    gw = Gateway(cfg, port=port).start()
    base = f"http://127.0.0.1:{hook_port}"

    def deliver(path: str, body: bytes) -> httpx.Response:
        return httpx.post(base + path, content=body, timeout=10,
                          headers={"X-Hub-Signature-256": sign_github(SECRET.encode(), body)})

    try:
        for body, message in (
            (b'{"n": 1e999}', "invalid JSON body: field n holds the out-of-range number 1e999"),
            (b'{"n": [-1e999]}', "field n[0] holds the out-of-range number -1e999"),
            (b'{"n": NaN}', "field n holds NaN, which is not JSON"),
            (b'{"text": "\\ud800"}', "invalid JSON body: field text contains a lone surrogate "
                                     "\\ud800, which is not valid Unicode"),
            (b'{"a": ' * 900 + b"1" + b"}" * 900, "nests objects/arrays 900 levels deep; at "
                                                  "most 64 levels are allowed"),
            (b"[1, 2]", "the body must be a JSON object for command handle (it becomes the "
                        "event's payload); got an array"),
            (b'"text"', "got a string"),
        ):
            resp = deliver("/hooks/handle", body)
            assert resp.status_code == 400, (body[:40], resp.text)
            assert message in resp.json()["error"]
        for body in (b"[1, 2]", b'"text"', b"null", b"42"):
            # No command takes anything but an object: the plugin could not receive it.
            resp = deliver("/hooks/poll", body)
            assert resp.status_code == 400, (body, resp.text)
            assert "(a plugin receives its payload as a JSON object)" in resp.json()["error"]
        surrogate_pair = deliver("/hooks/handle", b'{"text": "\\ud83d\\ude00"}')
        assert surrogate_pair.status_code == 202, surrogate_pair.text
        accepted = [deliver("/hooks/poll", body).json()["job_id"]
                    for body in (b'{"k": [1, 2]}', b'{"a": ' * 63 + b"1" + b"}" * 63)]
        accepted.append(deliver("/hooks/handle", b"{}").json()["job_id"])
        accepted.append(surrogate_pair.json()["job_id"])
        deadline = time.monotonic() + 20
        for job_id in accepted:
            while gw.get(f"/job/{job_id}").json()["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert gw.get(f"/job/{job_id}").json()["status"] == "succeeded", job_id
        wrong = httpx.get(base + "/hooks/poll", timeout=10)
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        # Refused by hypercorn before the app runs (docs/api.md): a bare 4xx, then business
        # as usual.
        for raw, status in (
            (b"POST /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"431"),
            (b"POST /hooks/poll HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", b"400"),
            (b"POST /hooks/poll HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", b"400"),
            (b"POST /hooks/poll HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"400"),
            (b"POST /hooks/poll HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", b"400"),
        ):
            assert raw_exchange(hook_port, raw).startswith(b"HTTP/1.1 " + status)
        assert deliver("/hooks/poll", b"{}").status_code == 202
        assert httpx.get(gw.url + "/healthz").status_code == 200
    finally:
        assert gw.stop() == 0
