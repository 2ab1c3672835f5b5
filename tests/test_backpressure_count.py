"""The outstanding-jobs count behind ingress backpressure (ductile/events/outstanding.py), on a
real SQLite queue: it follows the EventedQueue's job events, is re-synced from the database when
rows change behind its back without losing the events of the read itself, and the bound refuses
at the limit, per plugin and globally, counting and logging its refusals."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio

from ductile.config.schema import ApiConfig, Config, PluginConf, ServiceConfig
from ductile.errors import Overloaded, StoreError
from ductile.events.hub import Hub
from ductile.events.outstanding import RETRY_AFTER, Backpressure, Outstanding, run_resync
from ductile.events.queue import EventedQueue
from ductile.logs import Logger
from ductile.store import Database, Queue
from ductile.store.jobs import Job


@pytest.fixture
def counted(db: Database) -> tuple[EventedQueue, Outstanding, Hub]:
    """The gateway's wiring: the queue publishes to a hub, the count is one of its taps."""
    hub = Hub()
    counter = Outstanding()
    hub.add_tap(counter.observe)
    return EventedQueue(Queue(db, snapshot_id=lambda: "cfg", dedupe_ttl=0), hub.publish), \
        counter, hub


async def _enqueue(queue: EventedQueue, plugin: str = "echo") -> Job:
    return await queue.enqueue(plugin, "poll", {}, "api", max_attempts=3)


async def _truth(queue: EventedQueue) -> dict[str, int]:
    counts: dict[str, int] = await queue.outstanding_counts()
    return counts


def _ending(**extra: object) -> dict[str, object]:
    return {"last_error": None, "stderr": None, "exit_code": 0, "duration_ms": 1, **extra}


async def test_the_count_follows_the_job_events_of_the_queue(
        counted: tuple[EventedQueue, Outstanding, Hub]) -> None:
    queue, counter, hub = counted
    jobs = [await _enqueue(queue) for _ in range(3)] + [await _enqueue(queue, "other")]
    assert (counter.total, counter.by_plugin) == (4, {"echo": 3, "other": 1})
    assert counter.by_plugin == await _truth(queue)
    claim = await queue.claim_next()
    assert claim is not None and counter.total == 4  # running is outstanding
    retried = await queue.retry_and_claim(claim.job, delay=0, outcome="plugin_error",
                                          **_ending())
    assert retried.job.status == "queued" and counter.total == 4  # a retry stays outstanding
    again = await queue.claim_next()
    assert again is not None
    await queue.complete_and_claim(again.job, "succeeded", result="{}", outcome="success",
                                   **_ending())
    assert counter.by_plugin == {"echo": 2, "other": 1}
    await queue.cancel(jobs[3].id)
    assert (counter.total, counter.by_plugin) == (2, {"echo": 2})
    assert counter.by_plugin == await _truth(queue)
    # Crash recovery's job.enqueued moves a job that was running back to queued: not new.
    hub.publish("job.enqueued", job_id=jobs[1].id, plugin="echo", status="queued",
                recovery=True)
    assert counter.total == 2
    # Events of other kinds, or without a plugin, never move it.
    hub.publish("job.started", job_id=jobs[1].id, plugin="echo")
    hub.publish("job.completed", job_id="x")
    assert counter.total == 2


async def test_a_resync_corrects_rows_changed_behind_its_back(
        counted: tuple[EventedQueue, Outstanding, Hub], tmp_path: Path) -> None:
    queue, counter, _ = counted
    jobs = [await _enqueue(queue) for _ in range(3)] + [await _enqueue(queue, "other")]
    # Another writer (the CLI, a restored backup) ends two jobs without a word to the gateway.
    other = sqlite3.connect(tmp_path / "ductile.db", isolation_level=None)
    try:
        other.execute("UPDATE job_queue SET status = 'cancelled' WHERE id IN (?, ?)",
                      (jobs[0].id, jobs[3].id))
    finally:
        other.close()
    assert counter.by_plugin == {"echo": 3, "other": 1}  # stale until re-synced
    drift = await counter.resync(queue.outstanding_counts)
    assert drift == 2
    assert (counter.total, counter.by_plugin) == (2, {"echo": 2})
    assert (counter.resynced, counter.last_drift) == (1, 2)
    assert await counter.resync(queue.outstanding_counts) == 0  # nothing left to correct


async def test_events_published_while_the_read_runs_are_kept(
        counted: tuple[EventedQueue, Outstanding, Hub]) -> None:
    queue, counter, _ = counted
    first = await _enqueue(queue)

    async def slow_read() -> Mapping[str, int]:
        counts = await _truth(queue)  # what the database held when the read ran ...
        await _enqueue(queue)  # ... and work committed and published after it
        await queue.cancel(first.id)
        return counts

    assert await counter.resync(slow_read) == 0
    assert counter.by_plugin == await _truth(queue) == {"echo": 1}


async def test_a_failed_read_leaves_the_count_to_the_events(
        counted: tuple[EventedQueue, Outstanding, Hub]) -> None:
    queue, counter, _ = counted
    await _enqueue(queue)

    async def refused() -> Mapping[str, int]:
        raise StoreError("database is locked")

    with pytest.raises(StoreError):
        await counter.resync(refused)
    await _enqueue(queue)
    assert counter.by_plugin == {"echo": 2}
    assert counter.resynced == 0


async def test_run_resync_seeds_before_it_reports_started_then_keeps_resyncing(
        counted: tuple[EventedQueue, Outstanding, Hub], tmp_path: Path) -> None:
    queue, _, _ = counted
    jobs = [await _enqueue(queue) for _ in range(2)]  # before the count existed (a restart)
    counter = Outstanding()  # a fresh process: it has heard no event yet
    stream = io.StringIO()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_resync(
            counter, queue.outstanding_counts, Logger(stream=stream), interval=0.02,
            task_status=task_status))
        assert counter.by_plugin == {"echo": 2}
        other = sqlite3.connect(tmp_path / "ductile.db", isolation_level=None)
        try:
            other.execute("UPDATE job_queue SET status = 'dead' WHERE id = ?", (jobs[0].id,))
        finally:
            other.close()
        with trio.fail_after(10):
            while counter.by_plugin != {"echo": 1}:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line["msg"] == "outstanding jobs re-counted from the database"
               and line["corrected"] == 1 for line in lines), lines


async def test_run_resync_starts_even_when_the_first_read_is_refused() -> None:
    reads = 0

    async def flaky() -> Mapping[str, int]:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise StoreError("disk I/O error")
        return {"echo": 5}

    counter = Outstanding()
    stream = io.StringIO()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_resync(
            counter, flaky, Logger(stream=stream), interval=0.02, task_status=task_status))
        assert counter.total == 0
        with trio.fail_after(10):
            while counter.total != 5:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert "outstanding jobs not re-counted" in stream.getvalue()


# -- the bound ------------------------------------------------------------------------------


def _config(service_bound: int = 5, **plugin_bounds: int | None) -> Config:
    return Config(service=ServiceConfig(max_outstanding_jobs=service_bound),
                  state_path="/tmp/unused.db", api=ApiConfig(), plugin_roots=(),
                  plugins={name: PluginConf(name=name, max_outstanding_jobs=bound)
                           for name, bound in plugin_bounds.items()},
                  config_path="", config_dir="", source="test")


class Ticks:
    """A hand-moved monotonic clock for the log rate limit."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_plugin_bound_refuses_at_its_limit_and_leaves_other_plugins_alone() -> None:
    bound = Backpressure()
    config = _config(10, echo=2)
    bound.counter.add("echo", 1)
    bound.admit(config, "api", ["echo"])  # 1 < 2: room
    bound.counter.add("echo", 1)
    with pytest.raises(Overloaded) as refused:
        bound.admit(config, "api", ["echo"])
    exc = refused.value
    assert str(exc) == ("too many outstanding jobs for plugin echo (limit 2, outstanding 2); "
                        f"retry after {RETRY_AFTER} s")
    assert (exc.plugin, exc.limit, exc.outstanding, exc.key) == (
        "echo", 2, 2, "plugins.echo.max_outstanding_jobs")
    bound.admit(config, "api", ["other"])  # no bound of its own; the global one has room
    assert bound.refused == {("api", "echo", "plugin"): 1}
    assert bound.refused_total == 1


def test_the_global_bound_counts_every_plugin_and_a_batch_is_admitted_whole() -> None:
    bound = Backpressure()
    config = _config(3, b=5)
    bound.counter.add("a", 2)
    bound.admit(config, "relay", ["a", "b", "b", "c"])  # 2 < 3: the whole batch may go
    bound.counter.add("b", 1)
    with pytest.raises(Overloaded) as refused:
        bound.admit(config, "webhook", ["b"])
    assert str(refused.value).startswith("too many outstanding jobs in the gateway (limit 3, "
                                         "outstanding 3)")
    assert refused.value.key == "service.max_outstanding_jobs"
    assert bound.refused == {("webhook", "b", "global"): 1}
    bound.admit(config, "api", [])  # no job to create: nothing to refuse
    bound.counter.add("a", -1)
    bound.admit(config, "webhook", ["b"])  # a job ended: room again


def test_refusals_are_logged_at_most_once_a_second_per_plane_and_plugin() -> None:
    stream = io.StringIO()
    ticks = Ticks()
    bound = Backpressure(log=Logger(stream=stream), clock=ticks)
    config = _config(1)
    bound.counter.add("echo", 1)
    for _ in range(5):
        with pytest.raises(Overloaded):
            bound.admit(config, "api", ["echo"])
    with pytest.raises(Overloaded):
        bound.admit(config, "webhook", ["echo"])
    ticks.now += 1.0
    with pytest.raises(Overloaded):
        bound.admit(config, "api", ["echo"])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["plane"], line.get("refused_since_last_line")) for line in lines] == [
        ("api", None), ("webhook", None), ("api", 4)]
    assert lines[0]["bound"] == "service.max_outstanding_jobs"
    assert bound.refused_total == 7


def test_the_view_shows_the_bounds_and_the_counts() -> None:
    bound = Backpressure()
    bound.counter.add("echo", 2)
    bound.counter.add("other", 1)
    assert bound.view(_config(9, echo=4, free=None)) == {
        "max_outstanding_jobs": 9, "outstanding": 3, "refused_total": 0,
        "plugins": {"echo": {"max_outstanding_jobs": 4, "outstanding": 2}}}
    assert "plugins" not in bound.view(_config(9))


def test_the_count_never_goes_below_zero() -> None:
    counter = Outstanding()
    counter.add("echo", -1)  # an end heard for a job counted before a re-sync dropped it
    assert (counter.total, counter.by_plugin) == (0, {})
    counter.add("echo", 2)
    counter.add("echo", -3)
    assert (counter.total, counter.by_plugin) == (0, {})
