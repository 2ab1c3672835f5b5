"""The PostgreSQL store (`state.backend: postgresql`): several gateways share one database.

    PgDatabase    db.py          a psycopg pool: `write` / `read` run a function in one
                                 transaction in a worker thread; `listen` wakes on NOTIFY
    notify        db.py          NOTIFY inside the caller's transaction (delivered at commit)
    PG_MIGRATIONS migrations.py  the versioned schema steps, run under an advisory lock
                  schema.sql     the tables of ductile/store/schema.sql in PostgreSQL types
    PgQueue       queue.py       the job queue (writes.py, reads.py, tree.py, records.py)
    POSTGRESQL_BACKEND backend.py every statement table (store/backend.py): breakers.py,
                                 schedules.py, analytics.py, events.py, retention.py,
                                 snapshots.py, audit.py, relay.py, health.py, and the queue's

psycopg is an optional dependency (the `postgresql` extra) and is imported only inside these
modules' functions, never at import time: a SQLite installation never loads it, and importing
this package costs nothing.
"""

from __future__ import annotations

from ductile.store.pg.db import JOBS_CHANNEL, Listener, PgDatabase, describe_dsn, notify

__all__ = ["JOBS_CHANNEL", "Listener", "PgDatabase", "describe_dsn", "notify"]
