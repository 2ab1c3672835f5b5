"""`Backend`: every statement table of one database backend, in one record.

The layers above the store never import a backend's SQL. They are given a Backend (the
runtime's `backend`, set at boot) and reach each function through it: the queue's statements
(store/queue.py `Statements`), the breakers, schedules, ledger figures, events journal,
retention, config snapshots, vault audit, relay replay table, plugin state and the
database's health. `SQLITE_BACKEND` (here) and `POSTGRESQL_BACKEND` (store/pg/backend.py)
are the two; tests/test_store_contract*.py run the same inputs through both and compare the
answers, so a caller sees no difference but the connection it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ductile.store.analytics import SQLITE_ANALYTICS, AnalyticsStatements
from ductile.store.audit import SQLITE_AUDIT, AuditStatements
from ductile.store.breakers import SQLITE_BREAKERS, BreakerStatements
from ductile.store.events import SQLITE_EVENTS, EventStatements
from ductile.store.health import SQLITE_HEALTH, HealthStatements
from ductile.store.queue import SQLITE, Statements
from ductile.store.relay import SQLITE_RELAY, RelayStatements
from ductile.store.retention import SQLITE_RETENTION, RetentionStatements
from ductile.store.schedules import SQLITE_SCHEDULES, ScheduleStatements
from ductile.store.snapshots import SQLITE_SNAPSHOTS, SnapshotStatements
from ductile.store.state import SQLITE_STATE, StateStatements


@dataclass(frozen=True)
class Backend:
    """One backend's statement tables; `name` is the `state.backend` word."""

    name: str
    queue: Statements
    breakers: BreakerStatements
    schedules: ScheduleStatements
    analytics: AnalyticsStatements
    events: EventStatements
    retention: RetentionStatements
    snapshots: SnapshotStatements
    audit: AuditStatements
    relay: RelayStatements
    state: StateStatements
    health: HealthStatements


SQLITE_BACKEND = Backend(
    name="sqlite",
    queue=SQLITE,
    breakers=SQLITE_BREAKERS,
    schedules=SQLITE_SCHEDULES,
    analytics=SQLITE_ANALYTICS,
    events=SQLITE_EVENTS,
    retention=SQLITE_RETENTION,
    snapshots=SQLITE_SNAPSHOTS,
    audit=SQLITE_AUDIT,
    relay=SQLITE_RELAY,
    state=SQLITE_STATE,
    health=SQLITE_HEALTH,
)
