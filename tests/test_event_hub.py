"""The event hub (events/hub.py) and its journal (events/journal.py) on a real SQLite
database: ids, filters, a stalled subscriber dropped while the others go on, and ids and the
backlog continuing from the table after a restart."""

from __future__ import annotations

import io
from pathlib import Path

import trio

from ductile.events.filters import EventFilter
from ductile.events.hub import Hub
from ductile.events.journal import backlog, load, run_journal
from ductile.logs import Logger
from ductile.store import events as stored
from ductile.store.db import Database
from ductile.store.events import SQLITE_EVENTS


async def test_subscribers_get_matching_events_in_order() -> None:
    hub = Hub()
    everything = hub.subscribe(EventFilter())
    jobs = hub.subscribe(EventFilter(types=("job.*",), plugins=("echo",)))
    hub.publish("job.enqueued", job_id="a", plugin="echo", command="poll", status="queued")
    hub.publish("scheduler.tick")
    hub.publish("job.enqueued", job_id="b", plugin="other", command="poll", status="queued")
    hub.publish("job.completed", job_id="a", plugin="echo", command="poll", status="succeeded")
    got = await everything.next_batch()
    assert [e.id for e in got] == [1, 2, 3, 4]
    assert [(e.type, e.fields()["job_id"]) for e in await jobs.next_batch()] == [
        ("job.enqueued", "a"), ("job.completed", "a")]
    assert got[1].frame().startswith("id: 2\nevent: scheduler.tick\ndata: {\"at\":\"")
    assert got[1].frame().endswith("}\n\n") and got[1].data.count("\n") == 0


async def test_a_stalled_subscriber_is_dropped_and_the_others_are_told() -> None:
    hub = Hub(buffer=4)
    stalled = hub.subscribe(EventFilter())
    reader = hub.subscribe(EventFilter())
    seen = []
    for n in range(5):
        hub.publish("job.enqueued", job_id=str(n))
        seen += await reader.next_batch()  # this one keeps up
    assert stalled.ended == "dropped"
    assert await stalled.next_batch() == []
    assert [e.type for e in seen][-2:] == ["job.enqueued", "subscriber.dropped"]
    assert seen[-1].fields()["subscriber"] == stalled.number
    assert hub.subscribers == 1


async def test_the_journal_keeps_ids_and_the_backlog_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    db = await Database.open(path)
    hub = Hub()
    await load(hub, db, SQLITE_EVENTS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_journal(hub, db, Logger(stream=io.StringIO()),
                                               SQLITE_EVENTS, interval=0.01))
        for n in range(10):
            hub.publish("job.enqueued", job_id=str(n))
        while await db.read(stored.max_id) < 10:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    await db.close()

    db = await Database.open(path)
    again = Hub()
    await load(again, db, SQLITE_EVENTS)
    assert again.last_id == 10
    again.publish("reload.swapped")
    assert again.in_memory(9)[-1].id == 11
    resumed = await backlog(db.read, 3, SQLITE_EVENTS)
    assert [e.id for e in resumed] == list(range(4, 11))
    assert [e.fields()["job_id"] for e in resumed] == [str(n) for n in range(3, 10)]
    await db.close()


async def test_the_table_keeps_only_the_newest(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "state.db"))
    rows = [stored.StoredEvent(i, "scheduler.tick", "2026-01-01T00:00:00Z", "{}")
            for i in range(1, 31)]
    await db.write(lambda conn: stored.append(conn, rows, keep=10))
    kept = await db.read(lambda conn: stored.after(conn, 0))
    assert [r.id for r in kept] == list(range(21, 31))
    await db.close()
