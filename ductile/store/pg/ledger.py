"""Everything recorded about one job, and plugin facts, on PostgreSQL: the twins of
store/ledger.py's `read_job_ledger` and store/facts.py's `fetch_facts` for the CLI's offline
readers (`ductile job inspect`, `ductile system plugin-facts`).

Same answers as the SQLite readers, record for record: the lineage walk is store/context.py's
(root first, stopping at a missing parent, a row seen twice or MAX_LINEAGE_HOPS), and where
SQLite breaks a created_at tie by `rowid` these use `seq` (insert order). Each function takes
the connection of a `PgDatabase.read` and only reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.errors import StoreError
from ductile.store.context import EventContext, walk_lineage
from ductile.store.facts import Fact
from ductile.store.jobs import Job, load_stored_object
from ductile.store.ledger import LineageStep
from ductile.store.pg import reads
from ductile.store.pg.records import fetch_context
from ductile.store.pg.snapshots import fetch as fetch_snapshot

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]

_FACT_COLUMNS = "id, seq, plugin_name, fact_type, job_id, command, fact_json, created_at"


def fetch_lineage(conn: Conn, context_id: str) -> list[EventContext]:
    """The contexts from the lineage's root down to `context_id` (empty when unknown)."""
    return walk_lineage(lambda context: fetch_context(conn, context), context_id)


def fetch_steps(conn: Conn, context_id: str | None) -> list[LineageStep]:
    """The context lineage numbered from 1, each hop with its first job (by creation)."""
    if not context_id:
        return []
    steps = []
    for hop, context in enumerate(fetch_lineage(conn, context_id), start=1):
        row = conn.execute(
            f"SELECT {reads.JOB_COLUMNS} FROM job_queue WHERE event_context_id = %s "
            "ORDER BY created_at, seq LIMIT 1", (context.id,),
        ).fetchone()
        steps.append(LineageStep(hop, context, Job.from_row(row) if row is not None else None))
    return steps


def read_job_ledger(conn: Conn, job_id: str) -> dict[str, Any] | None:
    """store/ledger.py `read_job_ledger` on PostgreSQL (the same keys and records)."""
    job = reads.fetch_job(conn, job_id)
    if job is None:
        return None
    return {
        "job": job,
        "attempts": reads.fetch_attempts(conn, job_id),
        "transitions": reads.fetch_transitions(conn, job_id),
        "logs": reads.fetch_log_entries(conn, job_id),
        "snapshot": fetch_snapshot(conn, job.enqueued_config_snapshot_id),
        "started_snapshot": fetch_snapshot(conn, job.started_config_snapshot_id),
        "links": reads.fetch_links(conn, job),
        "steps": fetch_steps(conn, job.event_context_id),
    }


def fetch_facts(conn: Conn, plugin: str, limit: int, *,
                fact_type: str | None = None) -> list[Fact]:
    """A plugin's newest facts first (`seq` descending, rows without one last by time), as
    store/facts.py `fetch_facts` without `after_seq`."""
    if limit < 1:
        raise StoreError("facts: limit must be a positive integer")
    clauses = ["plugin_name = %s"]
    params: list[Any] = [plugin]
    if fact_type is not None:
        clauses.append("fact_type = %s")
        params.append(fact_type)
    rows = conn.execute(
        f"SELECT {_FACT_COLUMNS} FROM plugin_facts WHERE {' AND '.join(clauses)} "
        "ORDER BY seq IS NULL, seq DESC, created_at DESC LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [_fact(row) for row in rows]


def facts_of_every_plugin(conn: Conn, limit: int, fact_type: str | None = None) -> list[Fact]:
    """The newest `limit` facts over every plugin, merged newest first by time, then seq."""
    plugins = [str(row["plugin_name"]) for row in conn.execute(
        "SELECT DISTINCT plugin_name FROM plugin_facts ORDER BY plugin_name").fetchall()]
    merged = [fact for plugin in plugins
              for fact in fetch_facts(conn, plugin, limit, fact_type=fact_type)]
    merged.sort(key=lambda f: (f.created_at, f.seq or 0), reverse=True)
    return merged[:limit]


def _fact(row: dict[str, Any]) -> Fact:
    """A plugin_facts row as its record (store/facts.py builds the same from SQLite's)."""
    return Fact(
        id=row["id"], seq=row["seq"], plugin_name=row["plugin_name"],
        fact_type=row["fact_type"], job_id=row["job_id"], command=row["command"],
        fact=load_stored_object(row["fact_json"], f"fact {row['id']}: stored fact_json"),
        created_at=row["created_at"],
    )
