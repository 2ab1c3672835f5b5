"""Job trees and pipeline runs on PostgreSQL: the twins of store/tree.py's queries.

The shape of a tree (`assemble_tree`), what settled means (`settle`) and what a pipeline run
is (`build_pipeline_run`) are store/tree.py's, shared; only the walks are here. They are the
same recursive queries, with the same bounds (MAX_TREE_DEPTH levels, MAX_TREE_NODES + 1 rows)
and the same cycle safety (UNION keeps (job, depth) pairs distinct). The LIMIT sits on the
walk: PostgreSQL evaluates a recursive query level by level as rows are pulled, so it stops
there, breadth first, as SQLite's LIMIT inside the CTE does.

SQLite extracts a routed job's `ductile_decision` from its payload in SQL (`json_extract`);
PostgreSQL 15 has no test for valid JSON that cannot fail the query, so it is read here in
Python from the payload text (the same answer: a string, else None).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ductile.store.context import EventContext
from ductile.store.jobs import Job
from ductile.store.pg.reads import JOB_COLUMNS
from ductile.store.pg.records import fetch_context
from ductile.store.tree import (
    MAX_TREE_DEPTH,
    MAX_TREE_NODES,
    SPLIT_ROOT_PLUGIN,
    PipelineRun,
    TreeState,
    assemble_tree,
    build_pipeline_run,
    settle,
)

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]

_WALK = """
WITH RECURSIVE tree(id, depth) AS (
    SELECT id, 0 FROM job_queue WHERE id = %(root)s
    UNION
    SELECT j.id, t.depth + 1 FROM job_queue AS j JOIN tree AS t ON j.parent_job_id = t.id
    WHERE t.depth <= %(max_depth)s
), walked AS (SELECT id, depth FROM tree LIMIT %(max_rows)s)
"""

_NODE_SQL = _WALK + """
SELECT q.id, q.plugin, q.command, q.status, q.attempt, q.created_at,
       q.started_at, q.completed_at, q.last_error, q.parent_job_id, t.depth, q.payload,
       c.pipeline_name, c.step_id, c.accumulated_json, q.event_context_id,
       (SELECT a.duration_ms FROM job_attempts AS a
         WHERE a.job_id = q.id AND a.attempt = q.attempt) AS duration_ms,
       (SELECT l.result FROM job_log AS l
         WHERE l.job_id = q.id ORDER BY l.attempt DESC LIMIT 1) AS result,
       (SELECT r.reason FROM job_transitions AS r
         WHERE r.job_id = q.id ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS decision
FROM walked AS t
JOIN job_queue AS q ON q.id = t.id
LEFT JOIN event_context AS c ON c.id = q.event_context_id
ORDER BY t.depth, q.created_at, q.seq
"""

_STATUS_SQL = _WALK + """
SELECT t.id, q.status, t.depth FROM walked AS t JOIN job_queue AS q ON q.id = t.id
ORDER BY t.depth
"""

_TOP_SQL = """
WITH RECURSIVE up(id, parent, plugin, depth) AS (
    SELECT id, parent_job_id, plugin, 0 FROM job_queue WHERE id = %(job)s
    UNION
    SELECT q.id, q.parent_job_id, q.plugin, u.depth + 1
    FROM job_queue AS q JOIN up AS u ON q.id = u.parent
    WHERE u.depth < %(max_depth)s
)
SELECT id, plugin FROM up ORDER BY depth DESC LIMIT 1
"""


def _walk_params(root_id: str) -> dict[str, Any]:
    return {"root": root_id, "max_depth": MAX_TREE_DEPTH, "max_rows": MAX_TREE_NODES + 1}


def route_of(payload: str | None) -> str | None:
    """The `ductile_decision` string of a routed job's payload (why the router started it)."""
    if not payload:
        return None
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    route = value.get("ductile_decision") if isinstance(value, dict) else None
    return route if isinstance(route, str) else None


def fetch_job_tree(conn: Conn, job_id: str) -> dict[str, Any] | None:
    """The tree of `job_id` (a split run's whole tree for any of its jobs); None if unknown."""
    root_id = split_run_root(conn, job_id) or job_id
    rows = conn.execute(_NODE_SQL, _walk_params(root_id)).fetchall()
    for row in rows:
        row["route"] = route_of(row.pop("payload"))
    return assemble_tree(rows, root_id)


def tree_settled(conn: Conn, root_id: str) -> TreeState:
    return settle(conn.execute(_STATUS_SQL, _walk_params(root_id)).fetchall())


def split_run_root(conn: Conn, job_id: str) -> str | None:
    """The `core.split` root of the split run `job_id` belongs to, or None."""
    row = conn.execute(_TOP_SQL, {"job": job_id, "max_depth": MAX_TREE_DEPTH}).fetchone()
    if row is None or row["plugin"] != SPLIT_ROOT_PLUGIN:
        return None
    return str(row["id"])


def root_of(conn: Conn, job_id: str) -> str | None:
    """The farthest ancestor of `job_id` still in job_queue (None if unknown); stops at a
    pruned parent, a job seen twice or MAX_TREE_DEPTH steps, as store/tree.py's does."""
    row = conn.execute("SELECT id, parent_job_id FROM job_queue WHERE id = %s", (job_id,))
    found = row.fetchone()
    if found is None:
        return None
    top, parent = str(found["id"]), found["parent_job_id"]
    seen = {top}
    for _ in range(MAX_TREE_DEPTH):
        if parent is None or parent in seen:
            break
        found = conn.execute(
            "SELECT id, parent_job_id FROM job_queue WHERE id = %s", (parent,)
        ).fetchone()
        if found is None:
            break
        top, parent = str(found["id"]), found["parent_job_id"]
        seen.add(top)
    return top


class _PgRunReader:
    """store/tree.py's RunReader on a PostgreSQL connection."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def root_of(self, job_id: str) -> str | None:
        return root_of(self._conn, job_id)

    def job(self, job_id: str) -> Job:
        row = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM job_queue WHERE id = %s", (job_id,)).fetchone()
        return Job.from_row(row)

    def context(self, context_id: str) -> EventContext | None:
        return fetch_context(self._conn, context_id)

    def entry_candidates(self, event_id: str) -> list[Job]:
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM job_queue WHERE parent_job_id IS NULL "
            "AND source_event_id >= %s AND source_event_id <= %s ORDER BY created_at, seq",
            (event_id, event_id + "@\U0010ffff"),
        ).fetchall()
        return [Job.from_row(row) for row in rows]

    def settled(self, root_id: str) -> TreeState:
        return tree_settled(self._conn, root_id)


def fetch_pipeline_run(conn: Conn, job_id: str) -> PipelineRun | None:
    """The run `job_id` is the root of (store/tree.py `PipelineRun`), or None."""
    return build_pipeline_run(_PgRunReader(conn), job_id)
