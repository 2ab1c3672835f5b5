"""The events journal's statements (Backend.events) on both backends: the table the event hub
resumes from (GET /events with Last-Event-ID, and the ids after a restart)."""

from __future__ import annotations

from ductile.store.events import StoredEvent
from support.backends import Opened, location, opened  # noqa: F401 - fixtures


def events(*ids: int, kind: str = "job.enqueued") -> list[StoredEvent]:
    return [StoredEvent(i, kind, f"2026-03-01T12:00:{i:02d}.000000Z", f'{{"n":{i}}}')
            for i in ids]


async def test_an_empty_table(opened: Opened) -> None:
    sql = opened.backend.events
    assert await opened.read(sql.max_id) == 0
    assert await opened.read(lambda c: sql.latest(c, 10)) == []
    assert await opened.read(lambda c: sql.after(c, 0)) == []
    await opened.write(lambda c: sql.append(c, []))
    assert await opened.read(sql.max_id) == 0


async def test_batches_read_back_in_id_order(opened: Opened) -> None:
    sql = opened.backend.events
    await opened.write(lambda c: sql.append(c, events(1, 2, 3)))
    await opened.write(lambda c: sql.append(c, events(4, 5, kind="scheduler.tick")))
    assert await opened.read(sql.max_id) == 5
    assert await opened.read(lambda c: sql.after(c, 2)) == events(3) + events(
        4, 5, kind="scheduler.tick")
    assert await opened.read(lambda c: sql.after(c, 1, 2)) == events(2, 3)
    assert await opened.read(lambda c: sql.latest(c, 2)) == events(4, 5, kind="scheduler.tick")
    assert await opened.read(lambda c: sql.after(c, 5)) == []


async def test_a_batch_written_twice_keeps_the_first_rows(opened: Opened) -> None:
    """A batch tried again after an unknown commit outcome must not fail or change rows."""
    sql = opened.backend.events
    await opened.write(lambda c: sql.append(c, events(1, 2)))
    await opened.write(lambda c: sql.append(c, events(2, 3, kind="other")))
    assert await opened.read(lambda c: sql.after(c, 0)) == events(1, 2) + events(3, kind="other")


async def test_the_table_keeps_only_the_newest(opened: Opened) -> None:
    sql = opened.backend.events
    await opened.write(lambda c: sql.append(c, events(*range(1, 11)), 4))
    assert [e.id for e in await opened.read(lambda c: sql.after(c, 0))] == [7, 8, 9, 10]
    await opened.write(lambda c: sql.append(c, events(11), 2))
    assert [e.id for e in await opened.read(lambda c: sql.after(c, 0))] == [10, 11]
    assert await opened.read(sql.max_id) == 11
