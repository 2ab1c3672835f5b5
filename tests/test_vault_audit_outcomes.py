"""The vault audit's outcome words (`ok`, `denied`, `error`, as the Go original) on a real
state database, rows of earlier versions (`refused`) included."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ductile.errors import StoreError
from ductile.store.audit import AuditEvent, append_creating_database, append_offline, list_events


def test_a_denied_read_is_written_and_an_old_refused_row_reads_as_denied(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    append_creating_database(state, [AuditEvent("cli", "init", "core-admin-token", "ok")])
    assert append_offline(state, AuditEvent("cli", "read", "api-token", "denied", "reserved"))
    conn = sqlite3.connect(state)
    try:
        # A row as an earlier version wrote it.
        conn.execute("INSERT INTO vault_audit (created_at, actor, op, target, outcome, detail) "
                     "VALUES ('2026-01-01T00:00:00Z', 'anonymous', 'set', '', 'refused', "
                     "'missing bearer token')")
        conn.commit()
        rows = list_events(conn)
        stored = [r[0] for r in conn.execute("SELECT outcome FROM vault_audit ORDER BY id")]
    finally:
        conn.close()
    assert [(r.op, r.outcome) for r in rows] == [("set", "denied"), ("read", "denied"),
                                                 ("init", "ok")]
    assert stored == ["ok", "denied", "refused"]  # old rows are read as denied, not rewritten


def test_an_unknown_outcome_word_is_refused_naming_the_words(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    append_creating_database(state, [])
    with pytest.raises(StoreError, match="ok, denied, error"):
        append_offline(state, AuditEvent("cli", "read", "x", "refused"))
