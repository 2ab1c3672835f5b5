"""Webhooks through the real gateway: the listener bound by the supervisor, the HMAC key resolved
from the vault, the job run by the dispatcher, refusals naming their gate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import yaml

from ductile.planes.webhook.verify import sign_github
from gateway_util import TOKEN, Gateway, free_port, make_vault, run_cli, write_config

SECRET = "webhook-hmac-secret-value"


def webhook_config(tmp_path: Path, *, secret_ref: str = "gh-secret",
                   plugin: str = "echo") -> tuple[Path, int, int]:
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    cfg.mkdir(parents=True)
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "gh-secret": SECRET})
    write_config(cfg, port=port, extra={"webhooks": {
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
