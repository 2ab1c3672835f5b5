"""`system selfcheck`, `GET /system/selfcheck`, `system backup`, `config backup|restore`,
against real config directories, real database files and the real gateway."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import stat
import tarfile
import threading
from pathlib import Path

import pytest

from tests.support.gateway import (BUNDLED_PLUGINS, READ_TOKEN, TOKEN, Gateway, free_port,
                                   make_vault, run_cli, write_config)

SYS_TOKEN = "system-ro-token-0123456789abcdef"


def _init_dir(tmp_path: Path) -> tuple[Path, int]:
    """`config init` with the API moved to a free port."""
    directory = tmp_path / "cfg"
    res = run_cli("config", "init", "--dir", str(directory))
    assert res.returncode == 0, res.stderr
    port = free_port()
    api = directory / "api.yaml"
    api.write_text(api.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    return directory, port


def _selfcheck(directory: Path) -> tuple[int, dict]:
    res = run_cli("system", "selfcheck", "--config", str(directory), "--json")
    return res.returncode, json.loads(res.stdout)


def _by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_selfcheck_passes_after_one_start_and_fails_on_a_corrupted_copy(tmp_path: Path) -> None:
    directory, port = _init_dir(tmp_path)
    gw = Gateway(directory, port).start()
    try:
        running = run_cli("system", "selfcheck", "--config", str(directory))
        assert running.returncode == 0, running.stdout + running.stderr
        assert "is bound" in running.stdout
    finally:
        assert gw.stop() == 0
    res = run_cli("system", "selfcheck", "--config", str(directory))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("Selfcheck: PASS")
    code, report = _selfcheck(directory)
    checks = _by_name(report)
    assert code == 0 and report["ok"] is True
    assert checks["database"]["ok"] and "integrity ok" in checks["database"]["detail"]
    assert checks["vault"]["ok"] and checks["plugin:echo"]["ok"] and checks["config"]["ok"]
    assert checks["listener:api"]["bound"] is False
    assert {c["severity"] for c in report["checks"]} <= {"info", "warning", "error"}
    db = Path(checks["database"]["path"])

    # a copy with garbage written into its middle fails
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    copied_db = copy / db.relative_to(directory)
    for side in ("-wal", "-shm"):
        Path(str(copied_db) + side).unlink(missing_ok=True)
    size = copied_db.stat().st_size
    with copied_db.open("r+b") as handle:
        handle.seek(size // 4)
        handle.write(b"\xde\xad\xbe\xef" * (size // 8))
    res = run_cli("system", "selfcheck", "--config", str(copy))
    assert res.returncode == 1
    assert res.stdout.startswith("Selfcheck: FAIL")
    assert "- database: FAIL" in res.stdout


def test_selfcheck_fails_on_a_non_executable_entrypoint(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    shutil.copytree(BUNDLED_PLUGINS / "echo", root / "echo")
    directory = write_config(tmp_path / "cfg", plugin_roots=[str(root)])
    code, report = _selfcheck(directory)
    assert code == 0, report
    entry = root / "echo" / "run"
    entry.chmod(entry.stat().st_mode & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    code, report = _selfcheck(directory)
    assert code == 1 and report["ok"] is False
    echo = _by_name(report)["plugin:echo"]
    assert echo["ok"] is False and echo["severity"] == "error"
    assert "not executable" in echo["detail"]


def _scoped_gateway(tmp_path: Path) -> Gateway:
    directory = tmp_path / "gw"
    make_vault(directory, {"api-token": TOKEN, "read-token": READ_TOKEN, "sys-token": SYS_TOKEN})
    port = free_port()
    write_config(directory, port=port, api={"auth": {"tokens": [
        {"secret_ref": "api-token", "scopes": ["*"]},
        {"secret_ref": "read-token", "scopes": ["plugin:ro", "jobs:ro"]},
        {"secret_ref": "sys-token", "scopes": ["system:ro"]},
    ]}})
    return Gateway(directory, port)


def test_selfcheck_route_needs_a_system_scope(tmp_path: Path) -> None:
    gw = _scoped_gateway(tmp_path).start()
    try:
        resp = gw.get("/system/selfcheck", token=SYS_TOKEN)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["ok"] is True, body
        names = [c["name"] for c in body["checks"]]
        assert {"config", "seal", "vault", "database", "plugin:echo", "disk",
                "listener:api"} <= set(names)
        assert _by_name(body)["database"]["detail"].startswith("integrity ok")
        assert set(body["checks"][0]) >= {"name", "ok", "severity", "detail"}
        assert gw.get("/system/selfcheck", token=TOKEN).status_code == 200
        assert gw.get("/system/selfcheck", token=READ_TOKEN).status_code == 403
        assert gw.get("/system/selfcheck", token="nope").status_code == 401
    finally:
        assert gw.stop() == 0


def test_backup_while_the_gateway_enqueues(tmp_path: Path) -> None:
    gw = _scoped_gateway(tmp_path).start()
    accepted: list[str] = []
    stop = threading.Event()

    def enqueue() -> None:
        while not stop.is_set():
            resp = gw.post("/plugins/echo/run", {"payload": {"n": len(accepted)}})
            if resp.status_code in (200, 202):
                accepted.append(resp.json()["job_id"])

    worker = threading.Thread(target=enqueue)
    worker.start()
    try:
        while len(accepted) < 10:
            threading.Event().wait(0.02)
        before = list(accepted)
        out = tmp_path / "backup.tar.gz"
        res = run_cli("system", "backup", "--config", str(gw.config_dir), "--out", str(out))
        assert res.returncode == 0, res.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        again = run_cli("system", "backup", "--config", str(gw.config_dir), "--out", str(out))
        assert again.returncode == 1 and "already exists" in again.stderr
    finally:
        stop.set()
        worker.join()
        assert gw.stop() == 0
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
        tar.extract("db/state.db", tmp_path / "x", filter="data")
    assert "config/config.yaml" in names and "config/vault.nacl" in names
    assert not any(n.endswith("vault.key") for n in names)
    assert manifest["schema_version"] >= 1 and manifest["ductile_version"]
    assert {f["path"] for f in manifest["files"]} == set(names) - {"MANIFEST.json"}
    conn = sqlite3.connect(tmp_path / "x" / "db" / "state.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in conn.execute("SELECT id FROM job_queue")}
    finally:
        conn.close()
    assert set(before) <= ids


def _config_archive(tmp_path: Path) -> tuple[Path, Path]:
    directory = write_config(tmp_path / "cfg", port=free_port())
    res = run_cli("config", "lock", "--config", str(directory))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "config.tar.gz"
    res = run_cli("config", "backup", "--config", str(directory), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return directory, out


def _rewrite(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    """Copy an archive, replacing (or adding) members by name."""
    with tarfile.open(src) as old, tarfile.open(dst, "w:gz") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read()  # type: ignore[union-attr]
            if member.name in change:
                data = change.pop(member.name)
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
        for name, data in change.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))


def test_config_backup_restores_and_never_holds_the_key(tmp_path: Path) -> None:
    directory, archive = _config_archive(tmp_path)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "config/.checksums" in names and "config/vault.nacl" in names
    assert not any("vault.key" in n for n in names)
    assert not any(n.startswith("db/") for n in names)
    target = tmp_path / "restored"
    res = run_cli("config", "restore", str(archive), "--dir", str(target))
    assert res.returncode == 0, res.stderr
    assert (target / "config.yaml").read_bytes() == (directory / "config.yaml").read_bytes()
    assert not (target / "vault.key").exists()
    again = run_cli("config", "restore", str(archive), "--dir", str(target))
    assert again.returncode == 1 and "--force" in again.stderr
    assert run_cli("config", "restore", str(archive), "--dir", str(target),
                   "--force").returncode == 0


def test_restore_refuses_a_tampered_sealed_file(tmp_path: Path) -> None:
    _directory, archive = _config_archive(tmp_path)
    with tarfile.open(archive) as tar:
        original = tar.extractfile("config/config.yaml").read()  # type: ignore[union-attr]
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
    tampered_yaml = original.replace(b"ductile-test", b"ductile-evil")
    # forge the manifest too, so only the seal stands between the archive and the disk
    from ductile.config.seal import digest_bytes

    for entry in manifest["files"]:
        if entry["path"] == "config/config.yaml":
            entry["blake2b"] = digest_bytes(tampered_yaml)
    tampered = tmp_path / "tampered.tar.gz"
    _rewrite(archive, tampered, {"config/config.yaml": tampered_yaml,
                                 "MANIFEST.json": json.dumps(manifest).encode()})
    target = tmp_path / "restored"
    res = run_cli("config", "restore", str(tampered), "--dir", str(target))
    assert res.returncode == 1
    assert "config.yaml" in res.stderr and ".checksums" in res.stderr
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ductile-restore-")]


@pytest.mark.parametrize("member", ["../evil.yaml", "config/../../evil.yaml", "/tmp/evil.yaml"])
def test_restore_refuses_unsafe_members(tmp_path: Path, member: str) -> None:
    _directory, archive = _config_archive(tmp_path)
    bad = tmp_path / "bad.tar.gz"
    _rewrite(archive, bad, {member: b"x: 1\n"})
    target = tmp_path / "restored"
    res = run_cli("config", "restore", str(bad), "--dir", str(target))
    assert res.returncode == 1
    assert member in res.stderr
    assert not target.exists()
    assert not (tmp_path / "evil.yaml").exists()
    assert not os.path.exists("/tmp/evil.yaml")
