"""The SQLite store: one database file, one writer thread, and the tables' typed front doors.

    Database      db.py         open/verify the file; `write` (group commit) and `read`
    MIGRATIONS    migrations.py the versioned schema steps an older file is migrated through
    Queue         queue.py      the job queue's async facade: one write or read per method
                  writes.py     its writer statements, job machine checks, crash recovery
                  ledger.py     its readers (also run by the CLI on a read-only connection)
                  values.py     new job rows, payload JSON, byte-bounded text (pure)
    JobQueue      interface.py  what the layers above call on the queue (both backends)
    PgQueue       pg/queue.py   the same queue on PostgreSQL (pg/: its own SQL, the same facade)
    StateStore    state.py      per-plugin state, shallow-merged, 1 MiB cap
    Snapshots     snapshots.py  config snapshots stamped on every job
    Job, ...      jobs.py       immutable row records and the stored timestamp format
    Backend       backend.py    every statement table of one backend (queue, breakers,
                                schedules, analytics, events, retention, snapshots, audit,
                                relay, state, health): SQLITE_BACKEND here,
                                POSTGRESQL_BACKEND in pg/backend.py

Planes and the dispatcher call these; nothing outside `store/` writes SQL. A layer above that
runs a store function on a connection takes it from the Backend it is given (the runtime's
`backend`), never from a backend's module.
"""

from __future__ import annotations

from ductile.store.db import Database, open_readonly
from ductile.store.jobs import (
    Attempt,
    Job,
    LogEntry,
    Transition,
    format_time,
    parse_time,
    utcnow,
    utcnow_text,
)
from ductile.store.ledger import read_job_ledger
from ductile.store.queue import Queue
from ductile.store.snapshots import Snapshots
from ductile.store.state import StateStore, merge_state

__all__ = [
    "Attempt",
    "Database",
    "Job",
    "LogEntry",
    "Queue",
    "Snapshots",
    "StateStore",
    "Transition",
    "format_time",
    "merge_state",
    "open_readonly",
    "parse_time",
    "read_job_ledger",
    "utcnow",
    "utcnow_text",
]
