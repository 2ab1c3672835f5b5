"""The vault and secrets CLI as an operator runs it: real subprocesses, real files, and one
real daemon-side app on a unix socket for the API verbs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import yaml
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from ductile.boot.pidlock import acquire, lock_path_for
from ductile.planes.api.management import bind_management_socket, create_management_app
from ductile.store.audit import AuditEvent
from ductile.vault.keys import read_key_file
from ductile.vault.owner import VaultOwner

VALUE = "cli-secret-value-never-echoed-91b2"


def cli(*args: str, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DUCTILE_")}
    return subprocess.run([sys.executable, "-m", "ductile", *args], capture_output=True,
                          text=True, env={**clean, **(env or {})}, input=input, timeout=60)


def write_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plugins").mkdir(exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({
        "service": {"name": "vault-cli-test"},
        "state": {"path": "./data/state.db"},
        "plugin_roots": [str(directory / "plugins")],
        "plugins": {},
    }))
    return directory


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    directory = write_config(tmp_path / "cfg")
    init = cli("vault", "init", "--vault", str(directory / "vault.nacl"),
               "--key", str(directory / "vault.key"))
    assert init.returncode == 0, init.stderr
    (directory / "admin.token").write_text(init.stdout.strip())
    return directory


def test_keygen_writes_0600_and_prints_the_public_key_to_stderr(tmp_path: Path) -> None:
    out = tmp_path / "k.key"
    result = cli("secrets", "keygen", "--out", str(out))
    assert result.returncode == 0 and result.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert f"public key: {read_key_file(str(out)).public_text}" in result.stderr
    again = cli("secrets", "keygen", "--out", str(out))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_init_prints_only_the_admin_token_on_stdout(tmp_path: Path) -> None:
    result = cli("vault", "init", "--vault", str(tmp_path / "v.nacl"),
                 "--key", str(tmp_path / "v.key"))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and len(token) == 43
    assert "shown once" in result.stderr and token not in result.stderr
    owner = VaultOwner.open(str(tmp_path / "v.nacl"), read_key_file(str(tmp_path / "v.key")))
    assert owner.authenticate_admin(token)
    again = cli("vault", "init", "--vault", str(tmp_path / "v.nacl"),
                "--key", str(tmp_path / "v.key"))
    assert again.returncode == 1 and "refusing to init" in again.stderr
    missing = cli("vault", "init", "--vault", str(tmp_path / "w.nacl"))
    assert missing.returncode == 1 and "vault init: --vault and --key are required" in \
        missing.stderr


def test_offline_set_then_get_is_audited_without_values(cfg: Path) -> None:
    vault, key = str(cfg / "vault.nacl"), str(cfg / "vault.key")
    result = cli("vault", "set", "--vault", vault, "--key", key, "--name", "k",
                 input=VALUE + "\r\n")
    assert result.returncode == 0 and "offline" in result.stderr and VALUE not in result.stderr
    got = cli("vault", "get", "--config", str(cfg), "--name", "k")
    assert got.returncode == 0, got.stderr
    assert got.stdout == VALUE + "\n"
    admin = cli("vault", "get", "--config", str(cfg), "--name", "core-admin-token")
    assert admin.returncode == 1 and "never printed by 'vault get'" in admin.stderr
    assert (cfg / "admin.token").read_text() not in admin.stdout + admin.stderr


def test_set_mode_errors(cfg: Path) -> None:
    both = cli("vault", "set", "--api-url", "http://127.0.0.1:1", "--vault", "v", "--key", "k",
               "--name", "x", input="v")
    assert both.returncode == 1 and "one mode" in both.stderr
    half = cli("vault", "set", "--vault", "v", "--name", "x", input="v")
    assert half.returncode == 1 and "BOTH --vault and --key" in half.stderr
    neither = cli("vault", "set", "--name", "x", input="v", env={"HOME": str(cfg.parent)})
    assert neither.returncode == 1 and "pass --config PATH" in neither.stderr
    both_ways = cli("vault", "set", "--config", str(cfg), "--vault", "v", "--key", "k",
                    "--name", "x", input="v")
    assert both_ways.returncode == 1 and "one mode" in both_ways.stderr
    closed = cli("vault", "set", "--config", str(cfg), "--name", "x", input="v")
    assert closed.returncode == 1 and "api.enabled is false" in closed.stderr
    no_token = cli("vault", "set", "--api-url", "unix:///nowhere.sock", "--name", "x", input="v",
                   env={"HOME": str(cfg.parent)})
    assert no_token.returncode == 1 and \
        "vault admin token required: --token, $DUCTILE_VAULT_TOKEN" in no_token.stderr
    empty_unix = cli("vault", "set", "--api-url", "unix://", "--token", "t", "--name", "x",
                     input="v")
    assert empty_unix.returncode == 1 and "needs a socket path" in empty_unix.stderr


def test_rotate_admin_token_takes_the_pid_lock_and_is_audited(cfg: Path, tmp_path: Path) -> None:
    old = (cfg / "admin.token").read_text()
    state = cfg / "data" / "state.db"
    lock = acquire(lock_path_for(str(state)))
    try:
        held = cli("vault", "rotate-admin-token", "--config", str(cfg))
    finally:
        lock.release()
    assert held.returncode == 1 and "the daemon appears to be running" in held.stderr
    _create_database(state)
    rotated = cli("vault", "rotate-admin-token", "--config", str(cfg))
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    owner = VaultOwner.open(str(cfg / "vault.nacl"), read_key_file(str(cfg / "vault.key")))
    assert owner.authenticate_admin(new) and not owner.authenticate_admin(old)
    audit = cli("system", "vault-audit", "--config", str(cfg), "--json")
    assert audit.returncode == 0, audit.stderr
    assert '"op": "rotate-admin-token"' in audit.stdout and new not in audit.stdout


def test_rotate_key_reseals_and_replaces_the_key_file(cfg: Path) -> None:
    cli("vault", "set", "--vault", str(cfg / "vault.nacl"), "--key", str(cfg / "vault.key"),
        "--name", "k", input=VALUE)
    before = read_key_file(str(cfg / "vault.key")).public_text
    result = cli("vault", "rotate-key", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "BACK IT UP NOW" in result.stderr
    after = read_key_file(str(cfg / "vault.key")).public_text
    assert after != before and result.stdout.strip() == after
    got = cli("vault", "get", "--config", str(cfg), "--name", "k")
    assert got.stdout.strip() == VALUE


def test_api_verbs_over_the_management_socket(cfg: Path, tmp_path: Path) -> None:
    admin = (cfg / "admin.token").read_text()
    owner = VaultOwner.open(str(cfg / "vault.nacl"), read_key_file(str(cfg / "vault.key")))
    with served(owner, str(tmp_path / "run" / "m.sock")) as url:
        env = {"DUCTILE_VAULT_TOKEN": admin}
        steps = [
            (("register-principal", "--name", "echo"), None, 'Registered principal "echo"'),
            (("set", "--name", "k", "--principal", "echo"), VALUE, 'Set secret "k" via'),
            (("set", "--name", "auto", "--pattern", "auto", "--principal", "echo"), "",
             'Set secret "auto"'),
            (("roll", "--name", "auto"), "", 'Rolled secret "auto"'),
            (("roll-principal", "--name", "echo"), None, "rolled auto; skipped (manual) k"),
            (("revoke", "--name", "k"), None, 'Revoked secret "k"'),
            (("revoke-principal", "--name", "echo"), None, 'Revoked principal "echo"'),
            (("purge-principal", "--name", "echo"), None, 'Purged principal "echo"'),
        ]
        for args, stdin, notice in steps:
            result = cli("vault", *args, "--api-url", url, env=env, input=stdin)
            assert result.returncode == 0, (args, result.stderr)
            assert notice in result.stderr and VALUE not in result.stdout + result.stderr
        wrong = cli("vault", "revoke", "--name", "auto", "--api-url", url, "--token", "nope")
        assert wrong.returncode == 1
        assert "/vault/secret/revoke failed (401): invalid vault admin token" in wrong.stderr
    assert owner.model.secrets["k"].status == "revoked"
    assert "echo" not in owner.model.principals


def _create_database(state: Path) -> None:
    from ductile.store import Database

    async def main() -> None:
        db = await Database.open(str(state))
        await db.close()

    trio.run(main)


class served:
    """Serve the management app for `owner` on a unix socket in a background trio thread."""

    def __init__(self, owner: VaultOwner, path: str) -> None:
        self.owner = owner
        self.path = path
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,))

    async def _main(self) -> None:
        sock = bind_management_socket(self.path)

        async def audit(_event: AuditEvent) -> None:
            return None

        app = create_management_app(lambda: self.owner, audit, lambda: {"status": "ok"})
        config = HyperConfig()
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
        config.accesslog = None
        config.errorlog = None
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: serve(
                    app, config, shutdown_trigger=self._stop.wait, task_status=task_status))
                self._ready.set()
        finally:
            sock.close()
            self._ready.set()

    def __enter__(self) -> str:
        self._thread.start()
        self._ready.wait(30)
        return "unix://" + self.path

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._stop is not None:
            self._token.run_sync_soon(self._stop.set)
        self._thread.join(30)


@pytest.fixture(autouse=True)
def _no_inherited_vault_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DUCTILE_VAULT_KEY_FILE", raising=False)
    monkeypatch.delenv("DUCTILE_VAULT_TOKEN", raising=False)
    yield
