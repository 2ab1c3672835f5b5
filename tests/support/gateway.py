"""Start the real gateway (`python -m ductile system start`) on loopback for integration tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

BUNDLED_PLUGINS = Path(__file__).resolve().parents[2] / "ductile" / "bundled" / "plugins"
TOKEN = "test-token-0123456789abcdef"
READ_TOKEN = "read-only-token-abcdef0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: What a root test config adds so the privsep gate admits it (see write_config).
ROOT_UNCONFINED: dict[str, Any] = {"unconfined": True} if os.geteuid() == 0 else {}


def write_config(
    directory: Path,
    *,
    port: int | None = None,
    plugins: dict[str, Any] | None = None,
    plugin_roots: list[str] | None = None,
    service: dict[str, Any] | None = None,
    api: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A minimal working config dir: bundled plugins, echo enabled, API with two tokens.

    Run as root (as in CI) with no `accounts:` in `extra`, it says `service.unconfined: true`,
    as `ductile config init` does for root: a gateway that can change uid refuses to run
    plugins at its own privilege unless told so on purpose."""
    directory.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "service": {"name": "ductile-test", "max_workers": 2, "tick_interval": "5s",
                    "shutdown_grace": "5s", **ROOT_UNCONFINED, **(service or {})},
        "state": {"path": "./data/state.db"},
        "plugin_roots": plugin_roots or [str(BUNDLED_PLUGINS)],
        "plugins": plugins if plugins is not None else {
            "echo": {"enabled": True, "config": {"message": "hi"}}
        },
    }
    if port is not None:
        doc["api"] = {
            "enabled": True,
            "listen": f"127.0.0.1:{port}",
            "auth": {"tokens": [{"secret_ref": "api-token", "scopes": ["*"]},
                                {"secret_ref": "read-token", "scopes": ["plugin:ro", "jobs:ro"]}]},
            **(api or {}),
        }
        if not (directory / "vault.nacl").exists():
            make_vault(directory, {"api-token": TOKEN, "read-token": READ_TOKEN})
    doc.update(extra or {})
    if "accounts" in doc and "unconfined" not in (service or {}):
        doc["service"].pop("unconfined", None)
    (directory / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def make_vault(directory: Path, secrets: dict[str, str]) -> str:
    """A real vault (`vault.nacl` sealed to a new `vault.key`) in `directory` holding `secrets`
    as gateway-visible manual secrets; returns the admin token."""
    from ductile.vault.keys import keygen
    from ductile.vault.owner import VaultOwner

    directory.mkdir(parents=True, exist_ok=True)
    key = keygen(str(directory / "vault.key"))
    owner, admin_token = VaultOwner.create(str(directory / "vault.nacl"), key)
    for name, value in secrets.items():
        owner.set_secret(name, value)
    return admin_token


@dataclass
class Gateway:
    config_dir: Path
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    # Run before the gateway's command (e.g. setpriv, to start it without a capability).
    prefix: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 15.0) -> Gateway:
        self.stdout_path = self.config_dir / "gateway.stdout"
        self.stderr_path = self.config_dir / "gateway.stderr"
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env.update(self.env)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "ductile", "system", "start", "--config",
                 str(self.config_dir)],
                stdout=out, stderr=err, env=env,
            )
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 15.0, token: str = TOKEN) -> dict[str, Any]:
        """Poll /healthz (no token, as a probe would) until it answers 200; return the detailed
        answer `token` gets, or the probe's short one when the gateway refuses that token."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.stderr()}"
                                     f"\n{self.stdout()}")
            try:
                resp = httpx.get(self.url + "/healthz", timeout=1.0)
                if resp.status_code == 200:
                    detailed = httpx.get(self.url + "/healthz", headers=self.headers(token),
                                         timeout=5.0)
                    return detailed.json() if detailed.status_code == 200 else resp.json()
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.02)
        raise AssertionError(f"gateway not healthy within {timeout}s ({last}):\n{self.stderr()}")

    def headers(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: Any = None, token: str = TOKEN, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.headers(token),
                          timeout=kw.pop("timeout", 30.0), **kw)

    def get(self, path: str, token: str = TOKEN, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers(token), timeout=30.0, **kw)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may close while a long request is still being sent
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out


def run_cli(*args: str, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ductile", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, input=input, timeout=timeout,
    )
