"""Circuit breakers on PostgreSQL: the statements of store/breakers.py's `BreakerRows`.

The rules (what an outcome does to a breaker, which changes states/breaker.yaml allows) are
store/breakers.py's, bound here to PostgreSQL's SQL by `breaker_statements`. Where SQLite
orders the job log and the history by `rowid`, these use `seq` (insert order). Two schedulers
never fold one breaker at once (one leader fires), but an operator's reset may meet a fold:
`fetch_breaker` takes the row's lock inside a write, so the second waits for the first and
then reads what it wrote instead of overwriting it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.store.breakers import (
    CANCELLED_BY_SCHEDULER,
    DEFAULT_HISTORY,
    OPEN,
    Breaker,
    BreakerRows,
    BreakerTransition,
    Outcome,
    breaker_statements,
    outcome_filter,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def fetch_breaker(conn: Conn, plugin: str, command: str) -> Breaker | None:
    """The target's row; locked for the rest of a write transaction (FOR UPDATE is refused
    in a read-only one, so reads take no lock)."""
    lock = "" if conn.read_only else " FOR UPDATE"
    row = conn.execute(
        f"SELECT {Breaker.select_list()} FROM circuit_breakers WHERE plugin = %s "
        f"AND command = %s{lock}",
        (plugin, command),
    ).fetchone()
    return Breaker.from_row(row) if row is not None else None


def fetch_breakers(conn: Conn, plugin: str | None = None) -> list[Breaker]:
    """Every breaker row (of one plugin), by plugin and command."""
    where, params = ("WHERE plugin = %s", (plugin,)) if plugin is not None else ("", ())
    rows = conn.execute(
        f"SELECT {Breaker.select_list()} FROM circuit_breakers {where} ORDER BY plugin, command",
        params,
    ).fetchall()
    return [Breaker.from_row(row) for row in rows]


def fetch_breaker_history(
    conn: Conn, plugin: str, command: str, limit: int = DEFAULT_HISTORY
) -> list[BreakerTransition]:
    """The newest `limit` transitions of the target, newest first."""
    rows = conn.execute(
        f"SELECT {BreakerTransition.select_list()} FROM circuit_breaker_transitions "
        "WHERE plugin = %s AND command = %s ORDER BY created_at DESC, seq DESC LIMIT %s",
        (plugin, command, limit),
    ).fetchall()
    return [BreakerTransition.from_row(row) for row in rows]


def open_circuit_count(conn: Conn) -> int:
    """How many breakers are open right now (half_open is already letting a probe through)."""
    row = conn.execute(
        "SELECT count(*) AS n FROM circuit_breakers WHERE state = %s", (OPEN,)
    ).fetchone()
    return int(row["n"])


def outcomes_since(conn: Conn, breaker: Breaker, submitted_by: str,
                   first_look: int) -> list[Outcome]:
    """The target's terminal scheduler outcomes after the breaker's last job, oldest first."""
    base = (
        "SELECT job_id, status, completed_at FROM job_log "
        "WHERE plugin = %s AND command = %s AND submitted_by = %s " + outcome_filter() + "%s "
    )
    params: list[Any] = [breaker.plugin, breaker.command, submitted_by, CANCELLED_BY_SCHEDULER]
    if breaker.last_job_id is None:
        rows = conn.execute(base + "ORDER BY completed_at DESC, seq DESC LIMIT %s",
                            (*params, first_look)).fetchall()
        return [_outcome(row) for row in reversed(rows)]
    cursor = conn.execute(
        "SELECT completed_at, seq FROM job_log WHERE job_id = %s ORDER BY attempt DESC LIMIT 1",
        (breaker.last_job_id,),
    ).fetchone()
    if cursor is None:  # pruned by retention: fall back to the breaker's own clock
        rows = conn.execute(base + "AND completed_at > %s ORDER BY completed_at, seq",
                            (*params, breaker.updated_at)).fetchall()
    else:
        rows = conn.execute(
            base + "AND (completed_at > %s OR (completed_at = %s AND seq > %s)) "
            "ORDER BY completed_at, seq",
            (*params, cursor["completed_at"], cursor["completed_at"], cursor["seq"]),
        ).fetchall()
    return [_outcome(row) for row in rows]


def append(conn: Conn, row: BreakerTransition) -> None:
    values = row.as_dict()
    conn.execute(
        f"INSERT INTO circuit_breaker_transitions ({', '.join(values)}) "
        f"VALUES ({', '.join('%s' for _ in values)})",
        tuple(values.values()),
    )


def save(conn: Conn, breaker: Breaker) -> None:
    values = breaker.as_dict()
    updates = ", ".join(f"{n} = excluded.{n}" for n in values if n not in ("plugin", "command"))
    conn.execute(
        f"INSERT INTO circuit_breakers ({', '.join(values)}) "
        f"VALUES ({', '.join('%s' for _ in values)}) "
        f"ON CONFLICT (plugin, command) DO UPDATE SET {updates}",
        tuple(values.values()),
    )


def _outcome(row: dict[str, Any]) -> Outcome:
    return (row["job_id"], row["status"], row["completed_at"])


PG_BREAKERS = breaker_statements(BreakerRows(
    fetch_breaker=fetch_breaker,
    fetch_breakers=fetch_breakers,
    fetch_breaker_history=fetch_breaker_history,
    open_circuit_count=open_circuit_count,
    outcomes_since=outcomes_since,
    append=append,
    save=save,
))
