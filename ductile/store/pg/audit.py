"""The vault audit trail on PostgreSQL: the twins of store/audit.py's insert and list.

The row is checked and capped by store/audit.py (`audit_values`) and read back through its
`audit_row`, so both backends keep and show the same trail; ids come from the BIGSERIAL
(`RETURNING id`, as SQLite's lastrowid).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.store.audit import AuditEvent, AuditRow, AuditStatements, audit_row, audit_values

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def insert_event(conn: Conn, event: AuditEvent, created_at: str) -> int:
    """Append one row inside the caller's transaction; returns its id."""
    row = conn.execute(
        "INSERT INTO vault_audit (created_at, actor, op, target, outcome, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        audit_values(event, created_at),
    ).fetchone()
    return int(row["id"])


def list_events(conn: Conn, *, principal: str | None = None, limit: int = 50) -> list[AuditRow]:
    """Newest first; `principal` keeps rows where it is the actor or the target."""
    sql = "SELECT id, created_at, actor, op, target, outcome, detail FROM vault_audit"
    params: list[Any] = []
    if principal:
        sql += " WHERE actor = %s OR target = %s"
        params += [principal, principal]
    sql += " ORDER BY id DESC LIMIT %s"
    params.append(limit)
    return [audit_row(row) for row in conn.execute(sql, params).fetchall()]


PG_AUDIT = AuditStatements(insert_event=insert_event, list_events=list_events)
