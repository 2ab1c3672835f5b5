"""`ductile migrate from-go` on a Go-shaped installation (tests/support/goinstall.py): the dry
run writes nothing, the migration imports vault and history, `config check` passes, a real
gateway boots with the imported jobs visible and the Go tokens working; refusals name the file
and leave every file as it was."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from support.gateway import Gateway, free_port, run_cli
from support.goinstall import (JOB_CANCELLED, JOB_FAILED, JOB_OK, STATE_TEXT, GoInstall,
                               make_go_install, our_time)


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: what "nothing was written" compares."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _migrate(go: GoInstall, *extra: str) -> tuple[int, str, str]:
    result = run_cli("migrate", "from-go", "--config-dir", str(go.config_dir), *extra)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def go(tmp_path: Path) -> GoInstall:
    return make_go_install(tmp_path / "go", port=free_port())


def test_dry_run_then_migration_then_a_gateway_serves_the_imported_history(
        go: GoInstall) -> None:
    before = _tree(go.config_dir)
    code, out, err = _migrate(go, "--dry-run")
    assert code == 0, err
    assert "dry run" in out
    assert "secrets.vault_file: vault.age -> vault.nacl" in out
    assert "recorded as cancelled" in out
    assert _tree(go.config_dir) == before

    code, out, err = _migrate(go)
    assert code == 0, err
    assert "secrets.vault_file: vault.age -> vault.nacl" in out
    assert (go.config_dir / "config.yaml.go-backup").read_bytes() == before["config.yaml"]
    assert (go.state.parent / "state.db.go-backup").exists()
    assert (go.config_dir / "vault.age").read_bytes() == before["vault.age"]
    assert oct((go.config_dir / "vault.nacl").stat().st_mode & 0o777) == "0o600"
    # Nothing but the one setting changed in the config.
    changed = [line for line in (go.config_dir / "config.yaml").read_text().splitlines()
               if line not in before["config.yaml"].decode().splitlines()]
    assert changed == ["  vault_file: vault.nacl"]

    check = run_cli("config", "check", "--config", str(go.config_dir))
    assert check.returncode == 0, check.stdout + check.stderr

    listed = run_cli("job", "list", "--config", str(go.config_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    statuses = {j["job_id"]: j["status"] for j in json.loads(listed.stdout)["jobs"]}
    assert statuses == {JOB_OK: "succeeded", JOB_FAILED: "failed", JOB_CANCELLED: "cancelled"}

    inspected = run_cli("job", "inspect", JOB_OK, "--config", str(go.config_dir))
    assert inspected.returncode == 0, inspected.stderr
    # Go's `…:02.123456789Z` is stored in our fixed-width form, truncated to microseconds.
    assert our_time(2, "123456789") in inspected.stdout
    assert "a line of stderr" in inspected.stdout

    # The rest of the state, before a gateway runs its scheduler over it.
    conn = sqlite3.connect(go.state)
    try:
        assert conn.execute("SELECT state FROM plugin_state WHERE plugin_name = 'echo'"
                            ).fetchone()[0] == STATE_TEXT
        assert conn.execute("SELECT id, seq FROM plugin_facts ORDER BY seq").fetchall() == [
            ("fact-1", 1), ("fact-2", 2)]
        assert conn.execute("SELECT status, next_run_at FROM schedule_entries").fetchone() == (
            "active", our_time(10800))
        assert conn.execute("SELECT state, failure_count, last_job_id FROM circuit_breakers"
                            ).fetchone() == ("open", 3, JOB_FAILED)
        # Go's JSON column held the number 42 (NUMERIC affinity): it is JSON text again.
        assert conn.execute("SELECT payload, typeof(payload) FROM job_queue WHERE id = ?",
                            (JOB_FAILED,)).fetchone() == ("42", "text")
    finally:
        conn.close()

    port = int(_listen_port(go.config_dir))
    gateway = Gateway(go.config_dir, port=port).start(timeout=30)
    try:
        gateway.wait_healthy(token=go.api_token)
        job = gateway.get(f"/job/{JOB_FAILED}", token=go.api_token)
        assert job.status_code == 200, job.text
        assert job.json()["status"] == "failed"
        assert gateway.get("/jobs", token="not-the-go-token").status_code == 401
        # The Go vault's admin token still opens the vault's management routes.
        registered = gateway.post("/vault/principal", {"name": "new-plugin", "kind": "plugin"},
                                  token=go.admin_token)
        assert registered.status_code == 200, registered.text
    finally:
        assert gateway.stop() == 0



def test_a_literal_api_token_moves_into_the_vault(go: GoInstall) -> None:
    config = go.config_dir / "config.yaml"
    config.write_text(config.read_text().replace(
        "    - secret_ref: api-token\n",
        "    - token: literal-go-token-123\n      scopes: ['*']\n    - secret_ref: api-token\n"))
    code, out, err = _migrate(go)
    assert code == 0, err
    assert "api.auth.tokens[0].token (literal) -> secret_ref: api-token-1" in out
    text = config.read_text()
    assert "literal-go-token-123" not in text and "secret_ref: api-token-1" in text
    assert "literal-go-token-123" in (go.config_dir / "config.yaml.go-backup").read_text()
    got = run_cli("vault", "get", "--config", str(go.config_dir), "--name", "api-token-1")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "literal-go-token-123"
    check = run_cli("config", "check", "--config", str(go.config_dir))
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_wrong_age_identity_is_refused_naming_it(go: GoInstall, tmp_path: Path) -> None:
    from pyrage import x25519

    wrong = tmp_path / "other.key"
    wrong.write_text(f"# public key: x\n{x25519.Identity.generate()}\n")
    wrong.chmod(0o600)
    before = _tree(go.config_dir)
    code, _, err = _migrate(go, "--age-key", str(wrong))
    assert code == 1
    assert str(wrong) in err and "does not open the Go vault" in err
    assert "Traceback" not in err
    assert _tree(go.config_dir) == before


def test_a_corrupted_state_database_is_refused_naming_it(go: GoInstall) -> None:
    data = bytearray(go.state.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the header's tail and the schema page
    go.state.write_bytes(bytes(data))
    before = _tree(go.config_dir)
    code, _, err = _migrate(go)
    assert code == 1
    assert str(go.state) in err and "damaged" in err
    assert "Traceback" not in err
    assert _tree(go.config_dir) == before


def test_an_unknown_schema_version_is_refused_naming_the_file(go: GoInstall) -> None:
    conn = sqlite3.connect(go.state)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = _tree(go.config_dir)
    code, _, err = _migrate(go)
    assert code == 1
    assert str(go.state) in err and "schema version 7" in err
    assert _tree(go.config_dir) == before


def test_a_database_without_the_go_tables_is_an_unknown_schema(go: GoInstall) -> None:
    conn = sqlite3.connect(go.state)
    conn.execute("DROP TABLE schedule_entries")
    conn.close()
    code, _, err = _migrate(go)
    assert code == 1
    assert str(go.state) in err and "table schedule_entries is missing" in err
    assert not (go.config_dir / "vault.nacl").exists()


def test_an_existing_vault_is_never_replaced(go: GoInstall) -> None:
    (go.config_dir / "vault.nacl").write_text("ours\n")
    code, _, err = _migrate(go)
    assert code == 1
    assert "already exists" in err
    assert (go.config_dir / "vault.nacl").read_text() == "ours\n"
    assert not (go.config_dir / "config.yaml.go-backup").exists()


def _listen_port(config_dir: Path) -> str:
    import yaml

    listen = yaml.safe_load((config_dir / "config.yaml").read_text())["api"]["listen"]
    return listen.rpartition(":")[2]


def test_the_key_file_is_private(go: GoInstall) -> None:
    code, _, err = _migrate(go)
    assert code == 0, err
    assert os.stat(go.config_dir / "vault.key").st_mode & 0o077 == 0


def test_a_state_elsewhere_is_read_and_left_in_place(go: GoInstall, tmp_path: Path) -> None:
    elsewhere = tmp_path / "old" / "ductile.db"
    elsewhere.parent.mkdir()
    go.state.rename(elsewhere)
    before = elsewhere.read_bytes()
    code, out, err = _migrate(go, "--state", str(elsewhere))
    assert code == 0, err
    assert f"state: {elsewhere} -> {go.state}" in out
    assert elsewhere.read_bytes() == before
    assert not (tmp_path / "old" / "ductile.db.go-backup").exists()
    listed = run_cli("job", "list", "--config", str(go.config_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["jobs"]) == 3


def test_a_row_that_cannot_be_carried_is_named_and_nothing_is_written(go: GoInstall) -> None:
    conn = sqlite3.connect(go.state)
    conn.execute("UPDATE job_queue SET completed_at = 'yesterday' WHERE id = ?", (JOB_OK,))
    conn.commit()
    conn.close()
    before = _tree(go.config_dir)
    code, _, err = _migrate(go)
    assert code == 1
    assert str(go.state) in err and f"job_queue row '{JOB_OK}'" in err
    assert "completed_at" in err
    assert _tree(go.config_dir) == before
