"""The credential ladder end to end, with the real gateway process, CLI and unix socket.

init (a vault, no API token) -> boot into the management-only posture (public port closed, the
queued job stays queued) -> mint an API token over the management socket with the admin token ->
add its secret_ref -> `ductile system reload` -> the gateway serves with the token, 401 without,
the management socket is gone and the queued job runs. No secret value ever reaches the logs,
the database or `job inspect`.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

from support.gateway import Gateway, free_port, make_vault, run_cli, write_config

MINTED = "minted-api-token-value-0123456789abcdef"


def short_dir(tmp_path: Path) -> Path:
    """Unix socket paths are limited to 103 bytes; pytest's tmp paths can be long. The short
    directory is a symlink-free sibling under /tmp, removed by `remove_short_dir`."""
    path = Path("/tmp") / f"dl-{os.getpid()}-{tmp_path.name[-12:]}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def remove_short_dir(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def uds_client(path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://mgmt",
                        timeout=10.0)


def wait_for_socket(path: Path, gw: Gateway, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert gw.proc is not None
        if gw.proc.poll() is not None:
            raise AssertionError(f"gateway exited {gw.proc.returncode}:\n{gw.stderr()}")
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"management socket {path} never appeared:\n{gw.stderr()}")


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def enqueue_before_boot(state_path: Path) -> str:
    """A job queued while the gateway is down (it must stay queued in management posture)."""
    from ductile.store.db import Database
    from ductile.store.queue import Queue

    async def main() -> str:
        db = await Database.open(str(state_path))
        try:
            queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
            job = await queue.enqueue("echo", "poll", {"n": 1}, "test")
            return job.id
        finally:
            await db.close()

    return trio.run(main)


def config_for_ladder(tmp_path: Path) -> tuple[Path, int, str, Path]:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=None)
    admin = make_vault(cfg, {})
    sock = short_dir(tmp_path) / "vault-admin.sock"
    doc: dict[str, Any] = yaml.safe_load((cfg / "config.yaml").read_text())
    doc["api"] = {"enabled": True, "listen": f"127.0.0.1:{port}",
                  "management_socket": str(sock)}
    (cfg / "config.yaml").write_text(yaml.safe_dump(doc))
    return cfg, port, admin, sock


def test_the_whole_ladder(tmp_path: Path) -> None:
    cfg, port, admin, sock = config_for_ladder(tmp_path)
    job_id = enqueue_before_boot(cfg / "data" / "state.db")
    gw = Gateway(cfg, port=port).start(wait=False)
    try:
        wait_for_socket(sock, gw)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        with uds_client(sock) as mgmt:
            health = mgmt.get("/healthz").json()
            assert health["posture"] == "management-only"
            # Only /healthz and /vault/*: no gateway route on the socket.
            assert mgmt.get("/plugins").status_code == 404
            assert mgmt.post("/vault/secret", json={"name": "x", "value": "y"}).status_code == 401
            wrong = mgmt.post("/vault/secret", json={"name": "x", "value": "y"},
                              headers={"Authorization": "Bearer not-the-admin-token"})
            assert wrong.status_code == 401
        assert port_closed(port)  # no public listener in this posture
        time.sleep(0.3)
        status = json.loads(run_cli("job", "inspect", job_id, "--config", str(cfg),
                                    "--json").stdout)["status"]
        assert status == "queued"  # no dispatcher claims in management-only posture

        minted = run_cli("vault", "set", "--api-url", f"unix://{sock}", "--token", admin,
                         "--name", "api-token", input=MINTED + "\n")
        assert minted.returncode == 0, minted.stderr
        assert MINTED not in minted.stdout + minted.stderr

        doc = yaml.safe_load((cfg / "config.yaml").read_text())
        doc["api"]["auth"] = {"tokens": [{"secret_ref": "api-token", "scopes": ["*"]}]}
        (cfg / "config.yaml").write_text(yaml.safe_dump(doc))
        reload = run_cli("system", "reload", "--config", str(cfg))
        assert reload.returncode == 0, reload.stderr

        health = gw.wait_healthy()
        assert health["posture"] == "gateway"
        assert gw.get("/jobs", token=MINTED).status_code == 200
        assert httpx.get(gw.url + "/jobs", timeout=5).status_code == 401
        assert gw.get("/jobs", token="wrong").status_code == 401
        # The admin token is not an API token, and an API token is not the admin token.
        assert gw.get("/jobs", token=admin).status_code == 401
        assert gw.post("/vault/secret", {"name": "x", "value": "y"},
                       token=MINTED).status_code == 401
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sock.exists():
            time.sleep(0.05)
        assert not sock.exists()  # the management socket went away on activation
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if gw.get(f"/job/{job_id}", token=MINTED).json()["status"] == "succeeded":
                break
            time.sleep(0.1)
        assert gw.get(f"/job/{job_id}", token=MINTED).json()["status"] == "succeeded"
        inspect = run_cli("job", "inspect", job_id, "--config", str(cfg), "--json")
        assert inspect.returncode == 0 and MINTED not in inspect.stdout
    finally:
        assert gw.stop() == 0
    remove_short_dir(sock.parent)
    for text in (gw.stdout(), gw.stderr()):
        assert MINTED not in text and admin not in text
    for path in (cfg / "data").iterdir():
        data = path.read_bytes()
        assert MINTED.encode() not in data and admin.encode() not in data, path


def test_enabled_api_without_token_or_vault_is_refused(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=None)
    doc = yaml.safe_load((cfg / "config.yaml").read_text())
    doc["api"] = {"enabled": True, "listen": f"127.0.0.1:{port}"}
    (cfg / "config.yaml").write_text(yaml.safe_dump(doc))
    gw = Gateway(cfg, port=port).start(wait=False)
    assert gw.wait_exit() == 78
    assert "gate api_has_tokens" in gw.stderr()
    assert "api.auth.tokens must be configured when API is enabled" in gw.stderr()


def test_wrong_key_tampered_vault_and_loose_key_mode_fail_closed(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port)
    vault = cfg / "vault.nacl"
    original = vault.read_bytes()

    def refused_with(needle: str) -> None:
        gw = Gateway(cfg, port=port).start(wait=False)
        assert gw.wait_exit() == 78, gw.stderr()
        assert "gate vault_opened" in gw.stderr() and needle in gw.stderr(), gw.stderr()

    (cfg / "vault.key").chmod(0o644)
    refused_with("chmod 600")
    (cfg / "vault.key").chmod(0o600)

    tampered = bytearray(original)
    tampered[-5] ^= 0x01
    vault.write_bytes(bytes(tampered))
    refused_with(str(vault))

    vault.write_bytes(original[: len(original) // 2])
    refused_with(str(vault))

    from ductile.vault.keys import keygen

    vault.write_bytes(original)
    (cfg / "vault.key").unlink()
    keygen(str(cfg / "vault.key"))
    refused_with(str(vault))


def test_revoked_principal_fails_the_job_closed_and_secrets_reach_the_plugin(
    tmp_path: Path,
) -> None:
    from ductile.vault.keys import read_key_file
    from ductile.vault.owner import VaultOwner

    port = free_port()
    plugin_secret = "plugin-only-secret-value-42"
    cfg = write_config(tmp_path / "cfg", port=port, plugins={
        "echo": {"enabled": True, "config": {"message": "hi"}},
        "shout": {"enabled": True, "uses": "echo", "requires_vault": True},
    })
    owner = VaultOwner.open(str(cfg / "vault.nacl"),
                            read_key_file(str(cfg / "vault.key")))
    owner.register_principal("echo")
    owner.register_principal("shout")
    owner.set_secret("echo-secret", plugin_secret, principals=["echo"])
    owner.revoke_principal("shout")
    gw = Gateway(cfg, port=port).start()
    try:
        ran = gw.post("/plugins/echo/run", {"payload": {"x": 1}, "sync": True}).json()
        assert ran["status"] == "succeeded", ran
        # The echo plugin reports the names of the secrets it received (never values).
        assert ran["result"]["events"][0]["payload"].get("secret_names") == ["echo-secret"], ran
        failed = gw.post("/plugins/shout/run", {"payload": {"x": 1}, "sync": True}).json()
        assert failed["status"] == "failed", failed
        assert "requires_vault" in json.dumps(failed)
    finally:
        assert gw.stop() == 0
    assert plugin_secret not in gw.stdout() + gw.stderr()
    for path in (cfg / "data").iterdir():
        assert plugin_secret.encode() not in path.read_bytes()


def test_reload_onto_an_unminted_ref_keeps_the_serving_generation(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port)
    gw = Gateway(cfg, port=port).start()
    try:
        doc = yaml.safe_load((cfg / "config.yaml").read_text())
        doc["api"]["auth"]["tokens"][0]["secret_ref"] = "never-minted"
        (cfg / "config.yaml").write_text(yaml.safe_dump(doc))
        resp = gw.post("/system/reload")
        assert resp.status_code == 409, resp.text
        assert resp.json()["gate"] == "api_tokens_resolved"
        assert "'never-minted' not found in the vault" in resp.json()["error"]
        assert gw.get("/jobs").status_code == 200  # the old token still serves
    finally:
        assert gw.stop() == 0


def test_system_status_probes_the_management_socket(tmp_path: Path) -> None:
    cfg, port, _admin, sock = config_for_ladder(tmp_path)
    gw = Gateway(cfg, port=port).start(wait=False)
    try:
        wait_for_socket(sock, gw)
        status = run_cli("system", "status", "--config", str(cfg), "--json")
        checks = {c["name"]: c for c in json.loads(status.stdout)["checks"]}
        assert checks["healthz"]["ok"] is True, checks["healthz"]
        assert "management-only" in checks["healthz"]["detail"]
        assert checks["healthz"]["path"] == str(sock)
    finally:
        assert gw.stop() == 0
        remove_short_dir(sock.parent)
