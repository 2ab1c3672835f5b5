"""TLS on the API and webhook listeners, through the real gateway process.

A throwaway CA (trustme) issues the server certificates; the tests trust only that CA, over
real sockets on 127.0.0.1. Covered: both listeners serve HTTPS, plain HTTP to a TLS port fails
without harming the gateway, bad material refuses the boot at gate tls_material_loadable naming
the key and the file, a reload serves a renewed certificate to new connections (and refuses a
broken one while the old keeps serving), switching TLS on and off by reload, and the CLI
talking to a TLS gateway through --config.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ductile.boot.gates import BootFacts, tls_material_loadable
from ductile.boot.gather import gather_tls
from ductile.config.load import load_config
from ductile.config.merge import merge_config
from ductile.errors import ConfigError, TlsMaterialError
from ductile.planes.tls import pinned_client_context, server_context
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
TLS = {"cert_file": "tls/server.pem", "key_file": "tls/server.key"}


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def trust(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the throwaway CA only (host names checked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


def write_material(directory: Path, leaf: trustme.LeafCert, *, stem: str = "server",
                   key_mode: int = 0o600) -> tuple[Path, Path]:
    """The leaf's chain and key as PEM files, replaced atomically (as a renewal tool does)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    for path, data, mode in ((cert, b"".join(b.bytes() for b in leaf.cert_chain_pems), 0o644),
                             (key, leaf.private_key_pem.bytes(), key_mode)):
        staged = path.with_suffix(".new")
        staged.write_bytes(data)
        staged.chmod(mode)
        os.replace(staged, path)
    return cert, key


def serial(leaf: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection to `port` is served."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@dataclass
class TlsGateway(Gateway):
    """The gateway, reached over HTTPS with a client that trusts `trust_ctx` only."""

    trust_ctx: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.stderr()}")
            try:
                resp = httpx.get(self.url + "/healthz", timeout=1.0, verify=self.trust_ctx)
                if resp.status_code == 200:
                    return resp.json()
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.02)
        raise AssertionError(f"gateway not healthy within {timeout}s ({last}):\n{self.stderr()}")

    def post(self, path: str, body: Any = None, token: str = TOKEN, **kw: Any) -> httpx.Response:
        return super().post(path, body, token, verify=self.trust_ctx, **kw)

    def get(self, path: str, token: str = TOKEN, **kw: Any) -> httpx.Response:
        return super().get(path, token, verify=self.trust_ctx, **kw)


def tls_config(tmp_path: Path, ca: trustme.CA, *, api_tls: bool = True,
               webhooks_tls: bool = True) -> tuple[Path, int, int]:
    """A config dir with the API and a webhook listener, each with TLS when asked, the
    material under `tls/` (relative paths), the vault holding the tokens and the HMAC key."""
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "gh-secret": SECRET})
    write_material(cfg / "tls", ca.issue_cert("127.0.0.1"))
    webhooks: dict[str, Any] = {
        "listen": f"127.0.0.1:{hook_port}",
        "endpoints": [{"path": "/hooks/github", "plugin": "echo", "secret_ref": "gh-secret"}]}
    if webhooks_tls:
        webhooks["tls"] = dict(TLS)
    write_config(cfg, port=port, api={"tls": dict(TLS)} if api_tls else {},
                 extra={"webhooks": webhooks})
    return cfg, port, hook_port


def edit_config(cfg: Path, change: Any) -> None:
    doc = yaml.safe_load((cfg / "config.yaml").read_text())
    change(doc)
    (cfg / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def start_refused(cfg: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run([sys.executable, "-m", "ductile", "system", "start", "--config",
                           str(cfg)], capture_output=True, text=True, env=env, timeout=60)


# --------------------------------------------------------------------------- serving


def test_both_listeners_serve_https_and_plain_http_fails_cleanly(
        tmp_path: Path, ca: trustme.CA) -> None:
    cfg, port, hook_port = tls_config(tmp_path, ca)
    client = trust(ca)
    gw = TlsGateway(cfg, port=port, trust_ctx=client).start()
    try:
        run = gw.post("/plugins/echo/run", {"payload": {"hello": "tls"}, "sync": True})
        assert run.status_code == 200 and run.json()["status"] == "succeeded", run.text
        body = b'{"action": "opened"}'
        hook = httpx.post(f"https://127.0.0.1:{hook_port}/hooks/github", content=body,
                          headers={"X-Hub-Signature-256": sign_github(SECRET.encode(), body)},
                          verify=client, timeout=10)
        assert hook.status_code == 202, hook.text

        for listener in (port, hook_port):
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{listener}/healthz", timeout=10)
            reply = raw_exchange(listener, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not reply.startswith(b"HTTP/"), reply[:80]
        # Both listeners still serve, and the process is alive.
        assert gw.get("/healthz").status_code == 200
        assert httpx.post(f"https://127.0.0.1:{hook_port}/hooks/github", content=body,
                          headers={"X-Hub-Signature-256": "sha256=00"}, verify=client,
                          timeout=10).status_code == 403
        assert gw.proc is not None and gw.proc.poll() is None
    finally:
        assert gw.stop() == 0
    running = [r for r in gw.log_records() if r.get("msg", "").startswith("ductile running")]
    assert running and running[0]["tls"] == ["api", "webhooks"], running
    assert not [r for r in gw.log_records() if r.get("level") == "ERROR"], gw.stdout()


def test_the_context_allows_tls_1_2_and_up_without_compression(
        tmp_path: Path, ca: trustme.CA) -> None:
    cert, key = write_material(tmp_path, ca.issue_cert("127.0.0.1"))
    context = server_context(str(cert), str(key), key="api.tls")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_the_gate_judges_what_gather_loaded(tmp_path: Path, ca: trustme.CA) -> None:
    """gather_tls loads each configured listener's context; the first failure is the fact the
    gate refuses on, and a config with no tls block gathers nothing."""
    cfg = write_config(tmp_path / "cfg", port=free_port(), api={"tls": dict(TLS)}, extra={
        "webhooks": {"listen": "127.0.0.1:1", "endpoints": [],
                     "tls": {"cert_file": "tls/server.pem", "key_file": "tls/absent.key"}}})
    write_material(cfg / "tls", ca.issue_cert("127.0.0.1"))
    facts = BootFacts()
    gather_tls(load_config(str(cfg)), facts)
    assert set(facts.tls) == {"api"} and isinstance(facts.tls["api"], ssl.SSLContext)
    refusal = tls_material_loadable(facts)
    assert refusal is not None and refusal.gate == "tls_material_loadable"
    assert refusal.reason.startswith(f"TLS refused: webhooks.tls.key_file: cannot read "
                                     f"{cfg / 'tls' / 'absent.key'}")
    plain = BootFacts()
    gather_tls(load_config(str(write_config(tmp_path / "plain", port=free_port()))), plain)
    assert plain.tls == {} and tls_material_loadable(plain) is None


# --------------------------------------------------------------------------- refusals


def _encrypted(leaf: trustme.LeafCert) -> bytes:
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"passphrase"))


def _break(kind: str, tls_dir: Path, ca: trustme.CA) -> tuple[str, str]:
    """Damage the material under `tls_dir`; (config key, file) the refusal must name."""
    cert, key = tls_dir / "server.pem", tls_dir / "server.key"
    if kind == "missing certificate":
        cert.unlink()
        return "cert_file", str(cert)
    if kind == "not a certificate":
        cert.write_text("this is not PEM\n")
        return "cert_file", str(cert)
    if kind == "key of another certificate":
        write_material(tls_dir, ca.issue_cert("127.0.0.1"), stem="other")
        os.replace(tls_dir / "other.key", key)
        return "key_file", str(key)
    if kind == "world-readable key":
        key.chmod(0o644)
        return "key_file", str(key)
    assert kind == "encrypted key"
    key.write_bytes(_encrypted(ca.issue_cert("127.0.0.1")))
    return "key_file", str(key)


@pytest.mark.parametrize("kind", ["missing certificate", "not a certificate",
                                  "key of another certificate", "world-readable key",
                                  "encrypted key"])
@pytest.mark.parametrize("listener", ["api", "webhooks"])
def test_bad_material_refuses_the_boot_naming_key_and_file(
        tmp_path: Path, ca: trustme.CA, kind: str, listener: str) -> None:
    cfg, _, _ = tls_config(tmp_path, ca, api_tls=listener == "api",
                           webhooks_tls=listener == "webhooks")
    field, path = _break(kind, cfg / "tls", ca)
    boot = start_refused(cfg)
    assert boot.returncode == 78, boot.stderr[-2000:]
    assert "(gate tls_material_loadable)" in boot.stderr, boot.stderr
    assert f"{listener}.tls.{field}" in boot.stderr and path in boot.stderr, boot.stderr
    if kind == "world-readable key":
        assert f"chmod o-rwx {path}" in boot.stderr
    check = run_cli("config", "check", "--config", str(cfg), "--json")
    assert check.returncode == 1
    assert "tls_material_loadable" in [e["category"] for e in json.loads(check.stdout)["errors"]]


def test_half_a_tls_block_is_refused_at_load_naming_the_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", port=free_port(),
                       api={"tls": {"cert_file": "tls/server.pem"}})
    boot = start_refused(cfg)
    assert boot.returncode == 78 and "(gate config_loaded)" in boot.stderr, boot.stderr
    assert "config.yaml: api.tls.key_file: api.tls needs both cert_file and key_file" \
        in boot.stderr, boot.stderr


# --------------------------------------------------------------------------- reload


def test_reload_serves_a_renewed_certificate_and_refuses_a_broken_one(
        tmp_path: Path, ca: trustme.CA) -> None:
    cfg, port, hook_port = tls_config(tmp_path, ca)
    client = trust(ca)
    first = ca.issue_cert("127.0.0.1")
    write_material(cfg / "tls", first)
    gw = TlsGateway(cfg, port=port, trust_ctx=client).start()
    try:
        assert served_serial(port, client) == served_serial(hook_port, client) == serial(first)
        with httpx.Client(verify=client, headers=gw.headers(), timeout=30) as kept:
            assert kept.get(gw.url + "/healthz").status_code == 200

            renewed = ca.issue_cert("127.0.0.1")
            write_material(cfg / "tls", renewed)
            # Renewed on disk, not yet reloaded: the CLI trusts the file, so it says what to do.
            stale = run_cli("plugin", "run", "echo", "--sync", "--config", str(cfg))
            assert stale.returncode == 1 and "ductile system reload" in stale.stderr, \
                stale.stderr
            reload = gw.post("/system/reload")
            assert reload.status_code == 200, reload.text
            assert served_serial(port, client) == serial(renewed)
            assert served_serial(hook_port, client) == serial(renewed)
            # A connection opened before the reload goes on with the certificate it has.
            assert kept.get(gw.url + "/healthz").status_code == 200

            broken = ca.issue_cert("127.0.0.1")
            (cfg / "tls" / "server.pem").write_bytes(broken.cert_chain_pems[0].bytes())
            refused = gw.post("/system/reload")
            assert refused.status_code == 409, refused.text
            assert refused.json()["gate"] == "tls_material_loadable"
            assert "api.tls.key_file" in refused.json()["error"]
            assert served_serial(port, client) == serial(renewed)
            assert gw.get("/healthz").status_code == 200
    finally:
        assert gw.stop() == 0


def test_a_reload_switches_tls_on_and_off(tmp_path: Path, ca: trustme.CA) -> None:
    cfg, port, _ = tls_config(tmp_path, ca, api_tls=False, webhooks_tls=False)
    plain = f"http://127.0.0.1:{port}"
    client = trust(ca)
    gw = Gateway(cfg, port=port).start()
    headers = gw.headers()
    try:
        edit_config(cfg, lambda doc: doc["api"].update(tls=dict(TLS)))
        on = httpx.post(plain + "/system/reload", headers=headers, timeout=30)
        assert on.status_code == 200, on.text
        assert httpx.get(f"https://127.0.0.1:{port}/healthz", verify=client,
                         timeout=10).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(plain + "/healthz", timeout=10)

        edit_config(cfg, lambda doc: doc["api"].pop("tls"))
        off = httpx.post(f"https://127.0.0.1:{port}/system/reload", headers=headers,
                         verify=client, timeout=30)
        assert off.status_code == 200, off.text
        assert httpx.get(plain + "/healthz", timeout=10).status_code == 200
    finally:
        assert gw.stop() == 0


# --------------------------------------------------------------------------- the CLI


def test_the_cli_talks_https_to_the_configured_listener(tmp_path: Path, ca: trustme.CA) -> None:
    cfg, port, _ = tls_config(tmp_path, ca, webhooks_tls=False)
    gw = TlsGateway(cfg, port=port, trust_ctx=trust(ca)).start()
    try:
        status = run_cli("system", "status", "--config", str(cfg), "--json")
        healthz = {c["name"]: c for c in json.loads(status.stdout)["checks"]}["healthz"]
        assert healthz["ok"] and healthz["path"] == f"https://127.0.0.1:{port}/healthz", healthz
        text = run_cli("system", "status", "--config", str(cfg))
        assert f"healthz: OK (path=https://127.0.0.1:{port}/healthz)" in text.stdout
        run = run_cli("plugin", "run", "echo", "--sync", "--config", str(cfg), "--json")
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["status"] == "succeeded"
    finally:
        assert gw.stop() == 0


def test_the_cli_trusts_exactly_the_configured_certificate(
        tmp_path: Path, ca: trustme.CA) -> None:
    """No gateway needed: the pinned context accepts the configured leaf, whatever the host
    name, and refuses another certificate from the same CA."""
    leaf, other = ca.issue_cert("gateway.example"), ca.issue_cert("gateway.example")
    cert, key = write_material(tmp_path, leaf)
    pinned = pinned_client_context(str(cert), key="api.tls")
    served = server_context(str(cert), str(key), key="api.tls")
    assert _handshake(served, pinned) is None
    other_cert, other_key = write_material(tmp_path, other, stem="other")
    failure = _handshake(server_context(str(other_cert), str(other_key), key="api.tls"), pinned)
    assert isinstance(failure, ssl.SSLCertVerificationError)
    with pytest.raises(TlsMaterialError, match=r"api\.tls\.cert_file: .*absent\.pem"):
        pinned_client_context(str(tmp_path / "absent.pem"), key="api.tls")


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLError | None:
    """A TLS handshake in memory; the client's error, or None when it completed."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(to_server, from_server, server_side=True)
    cli = client.wrap_bio(to_client, from_client, server_hostname="127.0.0.1")
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", cli), ("server", srv)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if name == "client":
                    return exc
                done[name] = True  # the server's alert; the client reports why
        to_server.write(from_client.read())
        to_client.write(from_server.read())
        if all(done.values()):
            return None
    raise AssertionError("the handshake did not finish")


# --------------------------------------------------------------------------- config


def test_paths_resolve_against_the_config_dir_and_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = write_config(tmp_path / "cfg", port=free_port(), api={"tls": dict(TLS)}, extra={
        "webhooks": {"listen": "127.0.0.1:1", "endpoints": [],
                     "tls": {"cert_file": "~/certs/hooks.pem", "key_file": "/etc/k.key"}}})
    loaded = load_config(str(cfg), environ={"HOME": str(home)})
    assert loaded.api.tls is not None and loaded.webhooks.tls is not None
    assert loaded.api.tls.cert_file == str(cfg / "tls" / "server.pem")
    assert loaded.api.tls.key_file == str(cfg / "tls" / "server.key")
    assert loaded.webhooks.tls.cert_file == str(home / "certs" / "hooks.pem")
    assert loaded.webhooks.tls.key_file == "/etc/k.key"
    shown = run_cli("config", "get", "api.tls", "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    assert "tls/server.pem" in shown.stdout and str(cfg) not in shown.stdout


def test_an_included_tls_block_replaces_the_whole_block() -> None:
    base = {"api": {"tls": {"cert_file": "a.pem", "key_file": "a.key"}}}
    assert merge_config(base, {"api": {"tls": {"cert_file": "b.pem", "key_file": "b.key"}}}) \
        == {"api": {"tls": {"cert_file": "b.pem", "key_file": "b.key"}}}
    assert merge_config(base, {"api": {"tls": {}}}) == base
    hooks = {"webhooks": {"tls": {"cert_file": "a.pem", "key_file": "a.key"}}}
    assert merge_config(hooks, {"webhooks": {"tls": {"cert_file": "c.pem",
                                                      "key_file": "c.key"}}})["webhooks"] \
        == {"tls": {"cert_file": "c.pem", "key_file": "c.key"}}


def test_webhooks_tls_alone_is_refused_at_load(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", extra={"webhooks": {"tls": {"key_file": "k.key"}}})
    with pytest.raises(ConfigError, match=r"webhooks\.tls\.cert_file: webhooks\.tls needs both"):
        load_config(str(cfg))
