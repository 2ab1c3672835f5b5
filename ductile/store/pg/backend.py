"""`POSTGRESQL_BACKEND`: every statement table of the PostgreSQL store (store/backend.py).

Importing it loads the statement modules only; psycopg itself is imported by PgDatabase when a
database is opened (store/pg/__init__.py).
"""

from __future__ import annotations

from ductile.store.backend import Backend
from ductile.store.pg import records
from ductile.store.pg.analytics import PG_ANALYTICS
from ductile.store.pg.audit import PG_AUDIT
from ductile.store.pg.breakers import PG_BREAKERS
from ductile.store.pg.events import PG_EVENTS
from ductile.store.pg.health import PG_HEALTH
from ductile.store.pg.queue import PG
from ductile.store.pg.relay import PG_RELAY
from ductile.store.pg.retention import PG_RETENTION
from ductile.store.pg.schedules import PG_SCHEDULES
from ductile.store.pg.snapshots import PG_SNAPSHOTS
from ductile.store.state import StateStatements

#: Plugin state on PostgreSQL: the queue's row-locked merge (store/pg/records.py).
PG_STATE = StateStatements(load_state=records.load_state,
                           apply_state_update=records.apply_state_update)

POSTGRESQL_BACKEND = Backend(
    name="postgresql",
    queue=PG,
    breakers=PG_BREAKERS,
    schedules=PG_SCHEDULES,
    analytics=PG_ANALYTICS,
    events=PG_EVENTS,
    retention=PG_RETENTION,
    snapshots=PG_SNAPSHOTS,
    audit=PG_AUDIT,
    relay=PG_RELAY,
    state=PG_STATE,
    health=PG_HEALTH,
)
