"""One store per backend for the contract suites (tests/test_store_contract_*.py).

`opened` is parametrized "sqlite" / "postgresql": a fresh SQLite file, or a fresh database on
the run's throwaway PostgreSQL cluster (`pg_dsn`, skipped with its reason when PostgreSQL is
not installed), with the Backend whose statements belong to it and a queue on the same hand-
moved clock. A contract test builds its rows through the public queue and the Backend's
statements only, so both backends get the same inputs, and asserts one expected answer that
both must give.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ductile.store.backend import Backend
from ductile.store.jobs import Job
from ductile.store.queue import QueueCore
from support.store import Clock

BACKENDS = ["sqlite", "postgresql"]
T = TypeVar("T")


@dataclass
class Opened:
    """One open backend: its name, statements, database and a queue on the test's clock."""

    name: str
    backend: Backend
    db: Any
    clock: Clock
    queue: QueueCore

    async def read(self, fn: Any) -> Any:
        return await self.db.read(fn)

    async def write(self, fn: Any) -> Any:
        return await self.db.write(fn)

    async def finish(self, plugin: str, command: str, status: str, *, submitted_by: str = "svc",
                     error: str | None = "boom", step: float = 0.001) -> Job:
        """A job of (plugin, command) enqueued, claimed and ended in `status` through the
        queue, the clock moved by `step` first so completion order is time order."""
        self.clock.advance(step)
        queued = await self.queue.enqueue(plugin, command, {}, submitted_by)
        job = await self.queue.claim()
        assert job is not None and job.id == queued.id, "another job was claimed first"
        return await self.queue.complete(
            job, status, result=None, last_error=None if status == "succeeded" else error,
            stderr=None, exit_code=0, duration_ms=5, outcome="test")


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(backend, where): a SQLite file path, or the DSN of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "ductile.db")
    return "postgresql", request.getfixturevalue("pg_dsn")


@pytest.fixture
async def opened(location: tuple[str, str], clock: Clock) -> AsyncIterator[Opened]:
    name, where = location
    db: Any
    if name == "sqlite":
        from ductile.store.backend import SQLITE_BACKEND
        from ductile.store.db import Database
        from ductile.store.queue import Queue

        db = await Database.open(where)
        backend = SQLITE_BACKEND
        queue: QueueCore = Queue(db, snapshot_id=lambda: "cfg", dedupe_ttl=0, clock=clock)
    else:
        from ductile.store.pg.backend import POSTGRESQL_BACKEND
        from ductile.store.pg.db import PgDatabase
        from ductile.store.pg.queue import PgQueue

        db = await PgDatabase.open(where)
        backend = POSTGRESQL_BACKEND
        queue = PgQueue(db, snapshot_id=lambda: "cfg", dedupe_ttl=0, clock=clock)
    try:
        yield Opened(name, backend, db, clock, queue)
    finally:
        await db.close()
