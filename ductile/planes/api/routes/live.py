"""`GET /job/{id}/logs/stream`: a job's stderr as Server-Sent Events, live while it runs.

The stream, in order:

- for each attempt shown, `event: attempt` (`{"attempt": N}`), then one `event: line` per
  stderr line (its `data` is the line). A running attempt's lines come from its live feed
  (`dispatch/live.py`) as the plugin writes them, starting with what the feed still holds; a
  follower that fell behind the feed gets `event: dropped` (`{"dropped": N}`) where lines are
  missing. A job that already finished shows the stored stderr of its last attempt instead.
- `event: end` (`{job_id, status, attempt, last_error?}`) once the job is terminal; then the
  stream closes. A queued job (not started yet, or waiting for a retry) keeps the stream open
  until its next attempt starts.
- `event: error` (`{"error": ...}`) when the stream cannot go on (the job left the ledger, the
  database failed, the gateway is stopping); the stream closes after it.

A plugin's stderr is a job's output: the route needs `jobs:result:ro` besides `jobs:logs:ro`
(`jobs:ro`, `jobs:rw` and `*` hold both), and refuses a token without it with 403 before
anything is streamed (planes/api/resultscope.py). Streaming only the `end` event would show a
follower nothing it cannot read from `GET /job/{id}`, so the refusal is the clearer answer.

A comment line (`: keep-alive`) goes out after 15 s without anything else, so proxies and
clients can tell a quiet job from a dead connection. When the client goes away, the connection's
task is cancelled (see `planes/http.py`), which ends this stream where it waits; nothing the
follower does reaches the job.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import trio
from quart import Response

from ductile.errors import StoreError
from ductile.machines import job_statuses
from ductile.planes.api.kit import ApiError
from ductile.planes.api.openapi import Operation, ok, refused
from ductile.planes.api.resultscope import RESULT_SCOPE, may_see_results
from ductile.planes.api.schemas import EVENT_STREAM_TEXT
from ductile.planes.http import EVENT_STREAM
from ductile.plugin.lines import LineSplitter

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.dispatch.live import AttemptFeed, Batch, Cursor
    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime
    from ductile.store.jobs import Job

#: Seconds of silence after which a keep-alive comment is sent.
HEARTBEAT = 15.0
KEEP_ALIVE = ": keep-alive\n\n"
# SSE ends a line at CR, LF or CRLF: a break inside a value becomes a second `data:` line.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation(
        "GET", "/job/{job_id}/logs/stream", "the job's stderr live, as Server-Sent Events",
        description=f"stderr is result-class: besides jobs:logs:ro the token must hold "
                    f"{RESULT_SCOPE} (jobs:ro, jobs:rw and * include it); without it, 403.",
        answers=(ok(200, "events attempt, line, dropped, end, error", EVENT_STREAM_TEXT,
                    media_type=EVENT_STREAM),
                 refused(404, "job not found"))))
    @guarded("jobs:logs:ro")
    async def stream_job_logs(rt: Runtime, principal: Principal | None,
                              job_id: str) -> Response:
        if not may_see_results(principal):
            raise ApiError(403, f"insufficient scope: streaming a job's stderr needs "
                                f"{RESULT_SCOPE} as well as jobs:logs:ro (jobs:ro, jobs:rw and "
                                "* hold both); use GET /job/{id} for its status")
        if await rt.queue.get(job_id) is None:
            raise ApiError(404, "job not found")
        response = Response(_Follow(ctx, job_id).frames(), status=200,
                            content_type=f"{EVENT_STREAM}; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # a buffering proxy would hold the lines
        response.timeout = None  # lasts as long as the job does
        return response


def sse_event(event: str, data: str) -> str:
    """One Server-Sent Event; each line of `data` is a `data:` line (a client joins them
    with LF)."""
    return f"event: {event}\n" + "".join(f"data: {part}\n" for part in _LINE_BREAK.split(data)) \
        + "\n"


def _json_event(event: str, body: dict[str, Any]) -> str:
    return sse_event(event, json.dumps(body, separators=(",", ":")))


_STOPPING = _json_event("error", {"error": "the gateway is stopping; follow the job again "
                                           "once it is back"})


class _Follow:
    """One follower of one job. Runs after the request context is gone (the body of a
    streaming response), so it touches only what it was given, never `request`."""

    def __init__(self, ctx: ApiContext, job_id: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.shown: set[int] = set()  # attempts whose lines this follower was given

    async def frames(self) -> AsyncIterator[str]:
        """The stream's body; also the request boundary of a stream: the status line is
        already sent, so a fault ends the stream with an `error` event, never a 500."""
        try:
            # aclosing: a client that goes away closes the inner generators at once, so their
            # `finally` unregisters this follower right then, not whenever they are collected.
            async with aclosing(self._follow()) as frames:
                async for frame in frames:
                    yield frame
        except StoreError as exc:
            yield _json_event("error", {"error": f"reading job {self.job_id}: {exc}"})
        except Exception as exc:  # noqa: BLE001 - one follower's fault stays with it
            self.ctx.log.child("api").error(
                "stream failed", path=f"/job/{self.job_id}/logs/stream",
                error=f"{type(exc).__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc)))
            yield _json_event("error", {"error": "internal error; see the gateway log"})

    async def _follow(self) -> AsyncIterator[str]:
        ctx, job_id = self.ctx, self.job_id
        while True:
            # Register before looking, so a start or a finish between the look and the wait
            # wakes us (the same pattern as the sync API's wait).
            done = ctx.completions.register(job_id)
            started = ctx.live.watch_start(job_id)
            try:
                feed = ctx.live.feed(job_id)
                if feed is not None and feed.attempt not in self.shown:
                    async with aclosing(self._stream(feed, done)) as frames:
                        async for frame in frames:
                            yield frame
                    continue
                job = await ctx.current().queue.get(job_id)
                if job is None:
                    yield _json_event("error", {"error": "job not found (it left the ledger "
                                                         "while it was followed)"})
                    return
                if job.status in job_statuses().terminal:
                    stored = await self._stored(job) if job.attempt not in self.shown else ""
                    if stored:
                        yield stored
                    yield _json_event("end", _outcome(job))
                    return
                if ctx.stopping():
                    yield _STOPPING
                    return
                with trio.move_on_after(HEARTBEAT) as idle:
                    await _first_of(done, started)
                if idle.cancelled_caught:
                    yield KEEP_ALIVE
            finally:
                ctx.completions.discard(job_id, done)
                ctx.live.unwatch(job_id, started)

    async def _stream(self, feed: AttemptFeed, done: trio.Event) -> AsyncIterator[str]:
        """One running attempt's lines, from the oldest the feed holds until it ends. `done`
        is the job's completion event: while the attempt runs only a stop sets it (waking
        every waiter), and then this ends at once, so the follower is told rather than cut
        off by the HTTP drain."""
        self.shown.add(feed.attempt)
        yield _json_event("attempt", {"attempt": feed.attempt})
        cursor = feed.follow()
        while True:
            batch = None
            with trio.move_on_after(HEARTBEAT) as idle:
                batch = await _next_batch(cursor, done)
            if idle.cancelled_caught:
                yield KEEP_ALIVE
                continue
            if batch is None:
                if self.ctx.stopping():
                    return  # the caller looks at the job once more and says why it ends
                done = trio.Event()  # woken for no stop: read on, from the feed alone
                continue
            frames = []
            if batch.dropped:
                frames.append(_json_event("dropped", {"dropped": batch.dropped}))
            frames.extend(sse_event("line", line) for line in batch.lines)
            if frames:
                yield "".join(frames)
            if batch.ended:
                return

    async def _stored(self, job: Job) -> str:
        """The last attempt's stderr as the ledger keeps it: the job log's copy (the first
        64 KiB), else the attempt's tail. Nothing for a job that ended without an attempt
        (cancelled while queued, a split run's root)."""
        self.shown.add(job.attempt)
        queue = self.ctx.current().queue
        text = next((e.stderr for e in reversed(await queue.log_entries(job.id))
                     if e.attempt == job.attempt), None)
        row = next((a for a in reversed(await queue.attempts(job.id))
                    if a.attempt == job.attempt), None)
        if text is None and row is not None:
            text = row.stderr_tail
        if row is None and not text:
            return ""
        lines: list[str] = []
        splitter = LineSplitter(lines.append)
        splitter.feed((text or "").encode("utf-8", "replace"))
        splitter.close()
        return _json_event("attempt", {"attempt": job.attempt}) \
            + "".join(sse_event("line", line) for line in lines)


def _outcome(job: Job) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": job.id, "status": job.status, "attempt": job.attempt}
    if job.last_error:
        body["last_error"] = job.last_error
    return body


async def _next_batch(cursor: Cursor, done: trio.Event) -> Batch | None:
    """The cursor's next batch, or None when `done` is set first."""
    batch: Batch | None = None

    async def read(scope: trio.CancelScope) -> None:
        nonlocal batch
        batch = await cursor.next()  # advances the cursor only once it has the lines
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, nursery.cancel_scope)
        nursery.start_soon(_wait_then_cancel, done, nursery.cancel_scope)
    return batch


async def _first_of(*events: trio.Event) -> None:
    """Return as soon as any of `events` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:
            nursery.start_soon(_wait_then_cancel, event, nursery.cancel_scope)


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
