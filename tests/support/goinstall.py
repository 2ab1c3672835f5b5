"""A small installation of the Go original, built for `ductile migrate from-go` tests.

`make_go_install(directory, port=...)` writes what a Go gateway leaves in its config directory:
`config.yaml` (its keys and layout), `age.key` (an age X25519 identity, 0600), `vault.age` (the
ASCII-armored age vault whose plaintext is the Go vault's YAML) and `data/state.db` (SQLite with
the Go schema below, holding a few jobs, logs, plugin state, facts, schedule entries and a
breaker). The returned `GoInstall` names every file and the values the tests look for.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from support.gateway import BUNDLED_PLUGINS, ROOT_UNCONFINED, TOKEN

#: The Go original's state schema (internal/storage/schema.sql): its tables and columns, with the
#: declared type `JSON` it uses (NUMERIC affinity: a JSON number is stored as a number).
GO_SCHEMA = """
CREATE TABLE job_queue (
    id TEXT PRIMARY KEY, plugin TEXT NOT NULL, command TEXT NOT NULL, payload JSON,
    status TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 1,
    max_attempts INTEGER NOT NULL DEFAULT 4, submitted_by TEXT NOT NULL, dedupe_key TEXT,
    created_at TEXT NOT NULL, started_at TEXT, completed_at TEXT, next_retry_at TEXT,
    last_error TEXT, parent_job_id TEXT, source_event_id TEXT, event_context_id TEXT,
    enqueued_config_snapshot_id TEXT, started_config_snapshot_id TEXT);
CREATE INDEX job_queue_status_created_at_idx ON job_queue(status, created_at);
CREATE INDEX job_queue_plugin_command_status_idx ON job_queue(plugin, command, status);
CREATE INDEX job_queue_dedupe_status_completed_idx ON job_queue(dedupe_key, status, completed_at);
CREATE UNIQUE INDEX job_queue_event_source_idx
    ON job_queue(parent_job_id, source_event_id, plugin, command)
    WHERE source_event_id IS NOT NULL;
CREATE TABLE job_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, from_status TEXT,
    to_status TEXT NOT NULL, reason TEXT, created_at TEXT NOT NULL);
CREATE TABLE job_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    created_at TEXT NOT NULL, UNIQUE(job_id, attempt));
CREATE TABLE config_snapshots (
    id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, source_hash TEXT, source_path TEXT,
    source TEXT, reason TEXT NOT NULL, loaded_at TEXT NOT NULL, ductile_version TEXT,
    binary_path TEXT, snapshot_format INTEGER NOT NULL DEFAULT 1, semantics JSON,
    plugin_fingerprints JSON, sanitized_config JSON, secret_fingerprints JSON);
CREATE TABLE plugin_state (
    plugin_name TEXT PRIMARY KEY, state JSON NOT NULL DEFAULT '{}', updated_at TEXT);
CREATE TABLE storage_sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0);
CREATE TABLE plugin_facts (
    id TEXT PRIMARY KEY, seq INTEGER, plugin_name TEXT NOT NULL, fact_type TEXT NOT NULL,
    job_id TEXT NOT NULL, command TEXT NOT NULL, fact_json JSON NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE event_context (
    id TEXT PRIMARY KEY, parent_id TEXT, pipeline_name TEXT, step_id TEXT,
    accumulated_json JSON NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE job_log (
    id TEXT PRIMARY KEY, job_id TEXT, plugin TEXT NOT NULL, command TEXT NOT NULL,
    status TEXT NOT NULL, result TEXT, attempt INTEGER NOT NULL, submitted_by TEXT NOT NULL,
    created_at TEXT NOT NULL, completed_at TEXT NOT NULL, last_error TEXT, stderr TEXT,
    parent_job_id TEXT, source_event_id TEXT, event_context_id TEXT,
    enqueued_config_snapshot_id TEXT, started_config_snapshot_id TEXT);
CREATE TABLE circuit_breakers (
    plugin TEXT NOT NULL, command TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'closed',
    failure_count INTEGER NOT NULL DEFAULT 0, opened_at TEXT, last_failure_at TEXT,
    last_job_id TEXT, updated_at TEXT NOT NULL, PRIMARY KEY(plugin, command));
CREATE TABLE circuit_breaker_transitions (
    id TEXT PRIMARY KEY, plugin TEXT, command TEXT, from_state TEXT, to_state TEXT NOT NULL,
    failure_count INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL, job_id TEXT,
    created_at TEXT NOT NULL);
CREATE TABLE schedule_entries (
    plugin TEXT NOT NULL, schedule_id TEXT NOT NULL, command TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active', reason TEXT, last_fired_at TEXT,
    last_success_job_id TEXT, last_success_at TEXT, next_run_at TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY(plugin, schedule_id));
CREATE TABLE vault_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, principal TEXT, secret_name TEXT,
    actor TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT, created_at TEXT NOT NULL);
"""

#: Job ids in the Go database (UUIDs, as the original mints them).
JOB_OK = "0b5c1f6e-8f0e-4d8a-9c41-2f7a1c0e9a01"
JOB_FAILED = "0b5c1f6e-8f0e-4d8a-9c41-2f7a1c0e9a02"
JOB_CANCELLED = "0b5c1f6e-8f0e-4d8a-9c41-2f7a1c0e9a03"


@dataclass(frozen=True)
class GoInstall:
    config_dir: Path
    age_key: Path
    vault: Path
    state: Path
    admin_token: str = field(repr=False)
    api_token: str = field(repr=False)
    age_public: str = ""


def make_go_install(directory: Path, *, port: int) -> GoInstall:
    """Write a Go-shaped config directory with vault, identity and state database."""
    import pyrage
    from pyrage import x25519

    directory.mkdir(parents=True, exist_ok=True)
    identity = x25519.Identity.generate()
    age_key = directory / "age.key"
    fd = os.open(age_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# created: 2026-05-01T10:00:00Z\n"
                     f"# public key: {identity.to_public()}\n{identity}\n")
    admin_token = _token(1)
    api_token = TOKEN
    plaintext = {
        "secrets": {
            "core-admin-token": _secret(admin_token, pattern="auto"),
            "api-token": _secret(api_token, principals=["ops-console"]),
            "weather-key": _secret("w-123", principals=["echo"]),
            "old-hook": {**_secret("", pattern="manual"), "status": "revoked",
                         "revoked_at": "2026-05-02T09:00:00Z"},
        },
        "principals": {
            "core": {"kind": "gateway", "status": "active", "nonce": _token(2)},
            "echo": {"kind": "plugin", "status": "active"},
            "ops-console": {"kind": "consumer", "status": "active"},
        },
    }
    vault = directory / "vault.age"
    vault.write_bytes(pyrage.encrypt(yaml.safe_dump(plaintext).encode(),
                                     [identity.to_public()], armored=True))
    os.chmod(vault, 0o600)
    config = {
        "service": {"name": "ductile", "tick_interval": "60s", "log_level": "info",
                    "max_workers": 2, "shutdown_grace": "5s", **ROOT_UNCONFINED},
        "state": {"path": "./data/state.db"},
        "secrets": {"age_key_file": "age.key", "vault_file": "vault.age"},
        "plugin_roots": [str(BUNDLED_PLUGINS)],
        "api": {"enabled": True, "listen": f"127.0.0.1:{port}",
                "auth": {"tokens": [{"secret_ref": "api-token", "scopes": ["*"]}]}},
        "plugins": {"echo": {"enabled": True, "config": {"message": "hi"},
                             "schedules": [{"id": "hourly", "every": "1h"}]}},
    }
    (directory / "config.yaml").write_text(
        "# Go ductile config\n" + yaml.safe_dump(config, sort_keys=False))
    state = directory / "data" / "state.db"
    make_go_state(state)
    return GoInstall(config_dir=directory, age_key=age_key, vault=vault, state=state,
                     admin_token=admin_token, api_token=api_token,
                     age_public=str(identity.to_public()))


#: The hour the Go history starts: recent, so the gateway's retention (job_queue_retention,
#: default 24h) keeps it when a test boots one over the imported state.
BASE = (datetime.now(timezone.utc) - timedelta(hours=4)).replace(minute=0, second=0,
                                                                 microsecond=0)


def go_time(seconds: int, fraction: str = "") -> str:
    """BASE + `seconds` as the original writes it (RFC3339Nano, trailing zeros trimmed)."""
    moment = BASE + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def our_time(seconds: int, fraction: str = "") -> str:
    """The same moment in our stored form (microseconds, fixed width)."""
    moment = BASE + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + "." + fraction[:6].ljust(6, "0") + "Z"


STATE_TEXT = '{"last_run": "2026-05-01T10:00:02Z", "count": 3}'


def make_go_state(path: Path) -> None:
    """A Go state database: three finished jobs (one cancelled by the scheduler, which the
    original records as `dead`), their logs and transitions, state, facts, a schedule, a
    breaker. Times in Go's RFC3339Nano form (trailing zeros trimmed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(GO_SCHEMA)
        rows: list[tuple[Any, ...]] = [
            (JOB_OK, "echo", "poll", '{"n": 1}', "succeeded", 1, "ductile",
             go_time(0, "1"), go_time(1), go_time(2, "123456789"), None),
            (JOB_FAILED, "echo", "poll", 42, "failed", 4, "ductile",
             go_time(3600), go_time(3601), go_time(3603, "5"), "plugin error: boom"),
            (JOB_CANCELLED, "echo", "poll", "{}", "dead", 1, "ductile",
             go_time(7200), go_time(7201), go_time(7202),
             "cancelled by scheduler (if_running=cancel)"),
        ]
        for job_id, plugin, command, payload, status, attempt, by, created, started, done, \
                error in rows:
            conn.execute(
                "INSERT INTO job_queue (id, plugin, command, payload, status, attempt, "
                "max_attempts, submitted_by, created_at, started_at, completed_at, last_error)"
                " VALUES (?, ?, ?, ?, ?, ?, 4, ?, ?, ?, ?, ?)",
                (job_id, plugin, command, payload, status, attempt, by, created, started, done,
                 error))
            conn.execute("INSERT INTO job_transitions (job_id, from_status, to_status, "
                         "created_at) VALUES (?, NULL, 'queued', ?)", (job_id, created))
            conn.execute("INSERT INTO job_transitions (job_id, from_status, to_status, "
                         "created_at) VALUES (?, 'queued', 'running', ?)", (job_id, started))
            conn.execute("INSERT INTO job_transitions (job_id, from_status, to_status, reason, "
                         "created_at) VALUES (?, 'running', ?, ?, ?)",
                         (job_id, status, error, done))
            conn.execute("INSERT INTO job_attempts (job_id, attempt, created_at) "
                         "VALUES (?, ?, ?)", (job_id, attempt, started))
            conn.execute(
                "INSERT INTO job_log (id, job_id, plugin, command, status, result, attempt, "
                "submitted_by, created_at, completed_at, last_error, stderr) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f"{job_id}-{attempt}", job_id, plugin, command, status,
                 '{"status":"ok","result":"hi"}' if status == "succeeded" else None,
                 attempt, by, created, done, error, "a line of stderr\n"))
        conn.execute("INSERT INTO plugin_state VALUES ('echo', ?, ?)", (STATE_TEXT, go_time(2)))
        conn.execute("INSERT INTO storage_sequences VALUES ('plugin_facts', 2)")
        for seq in (1, 2):
            conn.execute("INSERT INTO plugin_facts VALUES (?, ?, 'echo', 'echo.snapshot', ?, "
                         "'poll', ?, ?)", (f"fact-{seq}", seq, JOB_OK, f'{{"seq": {seq}}}',
                                           go_time(seq)))
        conn.execute("INSERT INTO schedule_entries VALUES ('echo', 'hourly', 'poll', 'active', "
                     "NULL, ?, ?, ?, ?, ?)", (go_time(7200), JOB_OK, go_time(2, "123456789"),
                                              go_time(10800), go_time(7200)))
        failed_at = go_time(3603, "5")
        conn.execute("INSERT INTO circuit_breakers VALUES ('echo', 'poll', 'open', 3, ?, ?, ?, "
                     "?)", (failed_at, failed_at, JOB_FAILED, failed_at))
        conn.execute("INSERT INTO circuit_breaker_transitions VALUES ('cbt-1', 'echo', 'poll', "
                     "'closed', 'open', 3, 'failure_threshold', ?, ?)", (JOB_FAILED, failed_at))
        conn.execute("INSERT INTO vault_audit (op, principal, secret_name, actor, outcome, "
                     "detail, created_at) VALUES ('set', NULL, 'api-token', "
                     "'core-admin-token', 'ok', '', ?)", (go_time(-3600),))
        conn.commit()
    finally:
        conn.close()


def _secret(value: str, *, principals: list[str] | None = None,
            pattern: str = "manual") -> dict[str, Any]:
    return {"value": value, "authorized_principals": principals or [], "status": "active",
            "pattern": pattern, "roll_count": 0, "created_at": "2026-05-01T09:00:00Z",
            "updated_at": "2026-05-01T09:00:00Z"}


def _token(seed: int) -> str:
    return base64.urlsafe_b64encode(bytes([seed]) * 32).decode().rstrip("=")
