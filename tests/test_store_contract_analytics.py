"""The ledger figures (Backend.analytics, behind `GET /analytics/*` and `GET /stopwatch`) on
both backends: one history built through each backend's queue, the same figures expected.

The history, on the hand-moved clock: three jobs of p1/p2 run to succeeded, failed and
timed_out (each waited 250 ms in the queue and ran 5 ms), one p1 job running, one p2 job back
in the queue for a retry in ten minutes, one fresh p3 job queued, and one p1 job finished a
day and a half ago, outside every window.
"""

from __future__ import annotations

from datetime import timedelta

from ductile.store.analytics import RECENT_WINDOW, Sample
from ductile.store.jobs import Job, format_time, parse_time
from ductile.store.retention import RetentionPolicy, prune
from support.backends import Opened, location, opened  # noqa: F401 - fixtures


async def run(o: Opened, plugin: str, command: str, status: str | None, *,
              max_attempts: int = 1) -> Job:
    """Enqueue, wait 250 ms, claim; end in `status` after 5 ms (None: leave it running)."""
    o.clock.advance(0.001)
    queued = await o.queue.enqueue(plugin, command, {}, "svc", max_attempts=max_attempts)
    o.clock.advance(0.25)
    job = await o.queue.claim()
    assert job is not None and job.id == queued.id
    if status is None:
        return job
    o.clock.advance(0.005)
    return await o.queue.complete(job, status, result=None, last_error="x", stderr=None,
                                  exit_code=0, duration_ms=5, outcome="test")


async def history(o: Opened) -> dict[str, Job]:
    jobs = {"old": await run(o, "p1", "c1", "succeeded")}
    o.clock.advance(36 * 3600)
    jobs["a"] = await run(o, "p1", "c1", "succeeded")
    jobs["b"] = await run(o, "p1", "c1", "failed")
    jobs["c"] = await run(o, "p2", "c2", "timed_out")
    jobs["e"] = await run(o, "p1", "c1", None)
    retried = await run(o, "p2", "c2", None, max_attempts=2)
    jobs["f"] = await o.queue.retry(retried, delay=600, last_error="again", exit_code=1,
                                    duration_ms=7, outcome="plugin_error", stderr=None)
    o.clock.advance(0.001)
    jobs["d"] = await o.queue.enqueue("p3", "c3", {}, "svc")
    o.clock.advance(1)
    return jobs


async def test_summary_counts_by_status_and_plugin(opened: Opened) -> None:
    await history(opened)
    now, sql = opened.clock(), opened.backend.analytics
    assert await opened.read(lambda c: sql.status_counts(c, now)) == {
        "failed": 1, "succeeded": 1, "timed_out": 1}
    assert await opened.read(lambda c: sql.plugin_status_counts(c, now)) == {
        "p1": {"failed": 1, "succeeded": 1}, "p2": {"timed_out": 1}}
    assert await opened.read(lambda c: sql.status_counts(c, now, timedelta(days=2))) == {
        "failed": 1, "succeeded": 2, "timed_out": 1}
    assert await opened.read(lambda c: sql.status_counts(c, now, RECENT_WINDOW)) == {
        "failed": 1, "succeeded": 1, "timed_out": 1}
    later = now + timedelta(days=3)
    assert await opened.read(lambda c: sql.status_counts(c, later)) == {}
    assert await opened.read(lambda c: sql.plugin_status_counts(c, later)) == {}


async def test_queue_figures(opened: Opened) -> None:
    jobs = await history(opened)
    now = opened.clock()
    q = await opened.read(lambda c: opened.backend.analytics.queue_figures(c, now))
    assert q.by_status == {"failed": 1, "queued": 2, "running": 1, "succeeded": 2,
                           "timed_out": 1}
    assert q.delayed == 1
    assert q.oldest_queued_at == jobs["f"].created_at
    assert q.running == [{"job_id": jobs["e"].id, "plugin": "p1", "command": "c1",
                          "started_at": jobs["e"].started_at}]
    assert q.active_by_plugin == {"p1": {"queued": 0, "running": 1},
                                  "p2": {"queued": 1, "running": 0},
                                  "p3": {"queued": 1, "running": 0}}
    # a, b, c and e were created within the hour and started on their first attempt.
    assert q.wait_ms == [250.0, 250.0, 250.0, 250.0]
    assert q.completed_last_hour == 3
    # Once the retry is due it no longer counts as delayed.
    due = parse_time(jobs["f"].next_retry_at or "") + timedelta(seconds=1)
    later = await opened.read(lambda c: opened.backend.analytics.queue_figures(c, due))
    assert (later.delayed, later.wait_ms, later.completed_last_hour) == (0, q.wait_ms, 3)
    # Two hours on, nothing was created or completed within the last hour.
    hours = now + timedelta(hours=2)
    quiet = await opened.read(lambda c: opened.backend.analytics.queue_figures(c, hours))
    assert (quiet.wait_ms, quiet.completed_last_hour, quiet.by_status) == ([], 0, q.by_status)


async def test_an_empty_ledger(opened: Opened) -> None:
    now = opened.clock()
    q = await opened.read(lambda c: opened.backend.analytics.queue_figures(c, now))
    assert (q.by_status, q.delayed, q.oldest_queued_at, q.running, q.active_by_plugin,
            q.wait_ms, q.completed_last_hour) == ({}, 0, None, [], {}, [], 0)
    assert await opened.read(lambda c: opened.backend.analytics.attempt_durations(
        c, "p1", now - timedelta(hours=1))) == []


async def test_attempt_durations_also_after_the_job_row_is_pruned(opened: Opened) -> None:
    jobs = await history(opened)
    sql = opened.backend.analytics
    since = parse_time(jobs["a"].created_at) - timedelta(minutes=1)

    def attempt_start(job: Job) -> str:
        return format_time(parse_time(job.created_at) + timedelta(seconds=0.25))

    expected = [Sample("c1", attempt_start(jobs["a"]), 5, "test"),
                Sample("c1", attempt_start(jobs["b"]), 5, "test")]
    assert await opened.read(lambda c: sql.attempt_durations(c, "p1", since)) == expected
    assert await opened.read(lambda c: sql.attempt_durations(c, "p2", since)) == [
        Sample("c2", attempt_start(jobs["c"]), 5, "test"),
        Sample("c2", attempt_start(jobs["f"]), 7, "plugin_error")]
    # Terminal job rows go after a second; job_log keeps plugin and command for the stopwatch.
    report = await prune(opened.db, RetentionPolicy(job_log=0, job_queue=1, job_transitions=0,
                                                    job_attempts=0),
                         now=opened.clock() + timedelta(seconds=2),
                         statements=opened.backend.retention)
    assert report.job_queue == 4
    assert await opened.queue.get(jobs["a"].id) is None
    assert await opened.read(lambda c: sql.attempt_durations(c, "p1", since)) == expected
