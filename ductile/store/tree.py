"""Job trees: a root job and every job routed from it, linked by `parent_job_id`.

Read by `GET /job/{id}/tree`, the synchronous pipeline wait and `ductile job inspect`. A tree is
found by a recursive query from the root down, which is why these readers are bounded: at most
MAX_TREE_NODES jobs (10,000) and MAX_TREE_DEPTH levels (200) below the root are read. A real
pipeline tree is a few dozen jobs and as deep as its route depth; the bounds only stop a runaway
(a hook loop without a depth limit, hand-edited rows forming a cycle) from turning one request
into an unbounded read. A tree cut short says so (`truncated`).

The walk is cycle-safe: the query keeps (job, depth) pairs distinct and stops at the depth
bound, and each job is kept once, at the first (shallowest) place it was reached.

A pipeline run whose first step fans out (a `split`) has one synthetic root job,
`core.split` (SPLIT_ROOT_PLUGIN), whose children are the branches. The tree of any job of such
a run is the whole run, read from that root, so every branch is in it whichever job is asked
for. Any other job's tree is the job and what was routed from it, as it always was.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ductile.errors import StoreError
from ductile.machines import job_statuses
from ductile.store.context import EventContext, fetch_context
from ductile.store.jobs import Job, parse_time

MAX_TREE_NODES = 10_000
MAX_TREE_DEPTH = 200
#: The plugin name of a split run's synthetic root job (the router's SPLIT_PLUGIN).
SPLIT_ROOT_PLUGIN = "core.split"
#: Where the control fields live in an accumulated context; not part of the user's baggage.
CONTROL_NAMESPACE = "ductile"


# Breadth-first from the root: (id, depth) pairs, distinct, so a cycle ends at the depth bound.
# The walk reads one level past MAX_TREE_DEPTH so a caller can tell a tree was cut short.
_WALK = """
WITH RECURSIVE tree(id, depth) AS (
    SELECT id, 0 FROM job_queue WHERE id = :root
    UNION
    SELECT j.id, t.depth + 1 FROM job_queue AS j JOIN tree AS t ON j.parent_job_id = t.id
    WHERE t.depth <= :max_depth
    LIMIT :max_rows
)
"""

_NODE_SQL = _WALK + """
SELECT q.rowid AS rid, q.id, q.plugin, q.command, q.status, q.attempt, q.created_at,
       q.started_at, q.completed_at, q.last_error, q.parent_job_id, t.depth,
       c.pipeline_name, c.step_id, c.accumulated_json, q.event_context_id,
       CASE WHEN json_valid(q.payload) THEN json_extract(q.payload, '$.ductile_decision')
       END AS route,
       (SELECT a.duration_ms FROM job_attempts AS a
         WHERE a.job_id = q.id AND a.attempt = q.attempt) AS duration_ms,
       (SELECT l.result FROM job_log AS l
         WHERE l.job_id = q.id ORDER BY l.attempt DESC LIMIT 1) AS result,
       (SELECT r.reason FROM job_transitions AS r
         WHERE r.job_id = q.id ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS decision
FROM tree AS t
JOIN job_queue AS q ON q.id = t.id
LEFT JOIN event_context AS c ON c.id = q.event_context_id
ORDER BY t.depth, q.created_at, q.rowid
"""

# Up from a job to the top of its lineage: the topmost ancestor still in job_queue, with its
# plugin. Each step is a primary-key lookup; the depth bound ends a (hand-made) cycle.
_TOP_SQL = """
WITH RECURSIVE up(id, parent, plugin, depth) AS (
    SELECT id, parent_job_id, plugin, 0 FROM job_queue WHERE id = :job
    UNION
    SELECT q.id, q.parent_job_id, q.plugin, u.depth + 1
    FROM job_queue AS q JOIN up AS u ON q.id = u.parent
    WHERE u.depth < :max_depth
)
SELECT id, plugin FROM up ORDER BY depth DESC LIMIT 1
"""

_STATUS_SQL = _WALK + """
SELECT t.id, q.status, t.depth FROM tree AS t JOIN job_queue AS q ON q.id = t.id
ORDER BY t.depth
"""


@dataclass(frozen=True)
class TreeState:
    """How far a job tree has got. `all_terminal` is False for an empty or truncated tree (the
    unread part may still be running); `failed_any` counts failed, timed_out and dead."""

    total: int
    terminal: int
    all_terminal: bool
    failed_any: bool
    truncated: bool = False


def fetch_job_tree(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    """The tree of `job_id` as nested dicts, children in creation order; None if unknown.

    The tree is the job and every job routed from it; for a job of a split run (see the
    module docstring) it is the whole run, from the run's `core.split` root (`split_run_root`).

    Each node: job_id, plugin, command, status, attempt, created_at, started_at, completed_at,
    duration_ms (the current attempt's, else completed - started, else None), result (the last
    job_log result, decoded when it is JSON), last_error, decision (the reason of the job's last
    status change: why it was skipped, failed or enqueued), route (why the router started a
    routed job, e.g. `if true` or `after fetch: order.placed`; None for other jobs), context
    (None for a job without one, else {context_id, pipeline, step_id, baggage: accumulated
    without the `ductile` namespace, ductile: the control fields}) and children. The root also
    has `truncated`.
    """
    root_id = split_run_root(conn, job_id) or job_id
    return assemble_tree(conn.execute(_NODE_SQL, _walk_params(root_id)).fetchall(), root_id)


def assemble_tree(rows: Sequence[Mapping[str, Any]], root_id: str) -> dict[str, Any] | None:
    """Nest the walked rows (breadth first, at most MAX_TREE_NODES + 1, each with its `depth`
    and the node columns `_node` reads) into the tree rooted at `root_id`; None without rows.
    Shared by every backend: only the walk's SQL differs."""
    if not rows:
        return None
    nodes: dict[str, dict[str, Any]] = {}
    truncated = len(rows) > MAX_TREE_NODES
    for row in rows[:MAX_TREE_NODES]:
        if row["id"] in nodes:
            continue  # a cycle reached this job again, deeper: keep the first place
        if row["depth"] > MAX_TREE_DEPTH:
            truncated = True
            continue
        node = _node(row)
        if nodes and row["parent_job_id"] in nodes:
            nodes[row["parent_job_id"]]["children"].append(node)
        nodes[row["id"]] = node
    root = nodes[root_id]
    root["truncated"] = truncated
    return root


def tree_settled(conn: sqlite3.Connection, root_id: str) -> TreeState:
    """Count the jobs of the tree and how many are terminal.

    A job is settled only once terminal; a successor is inserted in the same transaction that
    ends its parent, so a tree whose jobs are all terminal has no pending successor. An unknown
    root gives total 0 and all_terminal False.
    """
    return settle(conn.execute(_STATUS_SQL, _walk_params(root_id)).fetchall())


def settle(rows: Sequence[Mapping[str, Any]]) -> TreeState:
    """Count a walked tree's jobs (rows of id, status, depth) and how many are terminal."""
    statuses: dict[str, str] = {}
    truncated = len(rows) > MAX_TREE_NODES
    for row in rows[:MAX_TREE_NODES]:
        if row["id"] in statuses:
            continue  # reached again through a cycle
        if row["depth"] > MAX_TREE_DEPTH:
            truncated = True
        else:
            statuses[row["id"]] = row["status"]
    total = len(statuses)
    sets = job_statuses()
    terminal = sum(1 for status in statuses.values() if status in sets.terminal)
    return TreeState(
        total=total,
        terminal=terminal,
        all_terminal=total > 0 and terminal == total and not truncated,
        failed_any=any(status in sets.failure for status in statuses.values()),
        truncated=truncated,
    )


def root_of(conn: sqlite3.Connection, job_id: str) -> str | None:
    """The top of `job_id`'s tree: its farthest ancestor still in job_queue (None if unknown).

    A parent pruned by retention ends the walk at its child; so does a job seen twice (a cycle)
    or MAX_TREE_DEPTH steps.
    """
    current = conn.execute("SELECT id, parent_job_id FROM job_queue WHERE id = ?", (job_id,))
    row = current.fetchone()
    if row is None:
        return None
    top, parent = str(row[0]), row[1]
    seen = {top}
    for _ in range(MAX_TREE_DEPTH):
        if parent is None or parent in seen:
            break
        row = conn.execute(
            "SELECT id, parent_job_id FROM job_queue WHERE id = ?", (parent,)
        ).fetchone()
        if row is None:
            break
        top, parent = str(row[0]), row[1]
        seen.add(top)
    return top


@dataclass(frozen=True)
class RunEntry:
    """One root job of a pipeline run and its context row (None: a plugin job outside any
    pipeline whose outcome routed into pipelines)."""

    job: Job
    context: EventContext | None


@dataclass(frozen=True)
class PipelineRun:
    """What `ductile pipeline rerun` needs to know about the run `job_id` belongs to.

    `root_id` is the root of the job's tree: a rerun is only asked of it. `entries` are the
    run's root jobs: every entry step of one start (a fanned-out entry starts several, all
    under one pipeline-instance root context, `instance_root`), or the one plugin job whose
    outcome routed into pipelines. `routed` is False for a root nothing was routed from, and
    `live` counts the jobs of the run still queued or running.
    """

    root_id: str
    entries: tuple[RunEntry, ...] = ()
    instance_root: EventContext | None = None
    routed: bool = False
    live: int = 0


def fetch_pipeline_run(conn: sqlite3.Connection, job_id: str) -> PipelineRun | None:
    """The run `job_id` is the root of (see PipelineRun); None for an unknown job. For a job
    that is not its tree's root only `root_id` is filled in. A context row that cannot be
    decoded raises StoreError."""
    return build_pipeline_run(_SqliteRunReader(conn), job_id)


class RunReader(Protocol):
    """The reads `build_pipeline_run` needs, each on one backend's connection."""

    def root_of(self, job_id: str) -> str | None: ...

    def job(self, job_id: str) -> Job: ...

    def context(self, context_id: str) -> EventContext | None: ...

    def entry_candidates(self, event_id: str) -> list[Job]:
        """Parentless jobs whose source_event_id is `event_id` or starts `event_id@`."""
        ...

    def settled(self, root_id: str) -> TreeState: ...


def build_pipeline_run(read: RunReader, job_id: str) -> PipelineRun | None:
    """`fetch_pipeline_run` over any backend's reads (the logic is shared, the SQL is not)."""
    root_id = read.root_of(job_id)
    if root_id is None:
        return None
    if root_id != job_id:
        return PipelineRun(root_id=root_id)
    root = read.job(job_id)
    context = read.context(root.event_context_id) if root.event_context_id else None
    entries = [RunEntry(root, context)]
    instance_root = None
    if context is not None and context.parent_id is not None:
        instance_root = read.context(context.parent_id)
        entries = _entries_of(read, entries[0], context.parent_id)
    states = [read.settled(entry.job.id) for entry in entries]
    return PipelineRun(
        root_id=root_id,
        entries=tuple(entries),
        instance_root=instance_root,
        routed=instance_root is not None or any(state.total > 1 for state in states),
        live=sum(state.total - state.terminal for state in states),
    )


class _SqliteRunReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def root_of(self, job_id: str) -> str | None:
        return root_of(self._conn, job_id)

    def job(self, job_id: str) -> Job:
        row = self._conn.execute(f"SELECT {Job.select_list()} FROM job_queue WHERE id = ?",
                                 (job_id,)).fetchone()
        return Job.from_row(row)

    def context(self, context_id: str) -> EventContext | None:
        return fetch_context(self._conn, context_id)

    def entry_candidates(self, event_id: str) -> list[Job]:
        """Through job_queue_event_source_idx (parent NULL, then source_event_id): a range
        instead of a scan (see `_entries_of`)."""
        rows = self._conn.execute(
            f"SELECT {Job.select_list()} FROM job_queue WHERE parent_job_id IS NULL "
            "AND source_event_id >= ? AND source_event_id <= ? ORDER BY created_at, rowid",
            (event_id, event_id + "@\U0010ffff"),
        ).fetchall()
        return [Job.from_row(row) for row in rows]

    def settled(self, root_id: str) -> TreeState:
        return tree_settled(self._conn, root_id)


def _entries_of(read: RunReader, root: RunEntry, instance_id: str) -> list[RunEntry]:
    """Every root job started with `root` under the pipeline-instance context `instance_id`.

    The entries of one start share its trigger event: their source_event_id is the event id,
    or `<event id>@<pipeline>/<step>` for a second dispatch to the same target (dispatch/
    routing.py), so the reader finds them by a range of source_event_id (an index range, not
    a scan); the context parent confirms each one.
    """
    event_id = _event_id(root.job)
    if event_id is None:
        return [root]
    entries = []
    for found in read.entry_candidates(event_id):
        source = found.source_event_id or ""
        if source != event_id and not source.startswith(event_id + "@"):
            continue
        context = read.context(found.event_context_id) if found.event_context_id else None
        if context is not None and context.parent_id == instance_id:
            entries.append(RunEntry(found, context))
    return entries or [root]


def _event_id(job: Job) -> str | None:
    """The trigger event id an entry job was started with (its source_event_id up to `@`)."""
    if not job.source_event_id:
        return None
    try:
        payload = job.payload_obj()
    except StoreError:
        payload = None
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    if isinstance(event_id, str) and job.source_event_id.startswith(event_id):
        return event_id
    return job.source_event_id


def split_run_root(conn: sqlite3.Connection, job_id: str) -> str | None:
    """The `core.split` root job of the split run `job_id` belongs to (the job itself when it is
    that root), or None: an unknown job, or one whose lineage does not start at a split root
    (a run with one entry step, a plain job, a root pruned by retention)."""
    row = conn.execute(_TOP_SQL, {"job": job_id, "max_depth": MAX_TREE_DEPTH}).fetchone()
    if row is None or row[1] != SPLIT_ROOT_PLUGIN:
        return None
    return str(row[0])


def split_baggage(accumulated: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user baggage, control fields): the accumulated context without and with only the
    `ductile` namespace (a non-object `ductile` value is left out of both)."""
    baggage = {key: value for key, value in accumulated.items() if key != CONTROL_NAMESPACE}
    control = accumulated.get(CONTROL_NAMESPACE)
    return baggage, dict(control) if isinstance(control, Mapping) else {}


def _walk_params(root_id: str) -> dict[str, Any]:
    return {"root": root_id, "max_depth": MAX_TREE_DEPTH, "max_rows": MAX_TREE_NODES + 1}


def _node(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "job_id": row["id"],
        "plugin": row["plugin"],
        "command": row["command"],
        "status": row["status"],
        "attempt": row["attempt"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "duration_ms": _duration(row),
        "result": _json_or_text(row["result"]),
        "last_error": row["last_error"],
        "decision": row["decision"],
        "route": row["route"] if isinstance(row["route"], str) else None,
        "context": _context(row),
        "children": [],
    }


def _duration(row: Mapping[str, Any]) -> int | None:
    if row["duration_ms"] is not None:
        return int(row["duration_ms"])
    if row["started_at"] and row["completed_at"]:
        try:
            elapsed = parse_time(row["completed_at"]) - parse_time(row["started_at"])
        except StoreError:
            return None
        return int(elapsed.total_seconds() * 1000)
    return None


def _context(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row["event_context_id"] is None:
        return None
    accumulated: Any = None
    if row["accumulated_json"] is not None:
        accumulated = _json_or_text(row["accumulated_json"])
    baggage, control = split_baggage(accumulated) if isinstance(accumulated, dict) else ({}, {})
    return {
        "context_id": row["event_context_id"],
        "pipeline": row["pipeline_name"],
        "step_id": row["step_id"],
        "baggage": baggage,
        "ductile": control,
    }


def _json_or_text(text: Any) -> Any:
    """Decode JSON text for display; anything else (NULL, not JSON, not text) as it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text
