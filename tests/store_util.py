"""Shared pieces of the store tests: a hand-moved clock and a real database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ductile.store import Database

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@dataclass
class Clock:
    """A hand-moved clock so due times, TTLs and cutoffs are tested without sleeping."""

    now: datetime = START
    wakes: list[str] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def open_database(tmp_path: Path) -> AsyncIterator[Database]:
    """Body of the `db` fixtures: a fresh SQLite file, closed after the test."""
    database = await Database.open(str(tmp_path / "ductile.db"))
    yield database
    await database.close()
