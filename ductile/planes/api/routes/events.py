"""`GET /events`: the event hub as Server-Sent Events (docs/events.md).

Each event is one frame, `id: N`, `event: TYPE`, `data: {single-line JSON}`, as the Go original
writes them; a `: keep-alive` comment follows 15 s of silence. A client resumes with the
`Last-Event-ID` header (or `?last_event_id=N`): the events after N come first, from memory or
the `events` table, then the live ones, with no gap and no duplicate. Without an id it gets the
recent events the hub holds in memory (up to 256), then the live ones.

A client that stops reading is dropped once 256 events wait for it (events/hub.py): its
stream ends and it reconnects with its last id. At stop every stream ends the same way.

The token may come as `?token=` on this route only (a browser's EventSource cannot send a
header); it needs the scope `events:ro` (or `*`). The hub is the process's, so a reload changes
nothing for a stream in progress.

An event's `error`, `final_error`, `message`, `text`, `result`, `last_error` and `stderr` carry
a plugin's words: a subscriber whose token lacks `jobs:result:ro` gets each event without them
(planes/api/resultscope.py), as `GET /job/{id}` leaves them out for it.
"""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import wraps
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request

from ductile.errors import StoreError
from ductile.events.filters import EventFilter, EventFilterError, parse_filter, \
    parse_last_event_id
from ductile.events.journal import backlog
from ductile.planes.api.auth import AuthError, authenticate, require
from ductile.planes.api.kit import GUARD_SCOPES, Handler, respond
from ductile.planes.api.openapi import Operation, Param, ok, refused
from ductile.planes.api.resultscope import RESULT_SCOPE, event_frame
from ductile.planes.api.routes.live import HEARTBEAT, KEEP_ALIVE
from ductile.planes.api.schemas import EVENT_STREAM_TEXT
from ductile.planes.http import EVENT_STREAM

#: Seconds between two writes of one stream while events keep coming (the most an event
#: waits; an event on an idle stream is written at once).
COALESCE = 0.05

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.events.hub import Event, Hub, Subscription
    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime

SCOPES = ("events:ro",)
_REPEATABLE = "repeat the parameter for several values (any of them matches)"


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation(
        "GET", "/events", "the gateway's events live, as Server-Sent Events",
        description="Frames `id:`, `event:`, `data:` (single-line JSON with at least `at`); "
                    "resume with Last-Event-ID. See docs/events.md. The fields error, "
                    "final_error, message, text, result, last_error and stderr are left out "
                    f"of each event unless the token also holds {RESULT_SCOPE} (jobs:ro, "
                    "jobs:rw and * include it).",
        query=(
            Param("plugin", description=f"only events of this plugin; {_REPEATABLE}"),
            Param("job", description=f"only events of this job id; {_REPEATABLE}"),
            Param("pipeline", description=f"only events of this pipeline; {_REPEATABLE}"),
            Param("type", description="an exact type (job.completed) or a prefix ending in * "
                                      f"(job.*); {_REPEATABLE}"),
            Param("last_event_id", {"type": "integer", "minimum": 0},
                  description="resume after this event id (the Last-Event-ID header wins)"),
            Param("token", description="the API token, for clients that cannot send a header"),
        ),
        headers=(Param("Last-Event-ID", {"type": "integer", "minimum": 0},
                       description="resume after this event id"),),
        answers=(ok(200, "the event stream", EVENT_STREAM_TEXT, media_type=EVENT_STREAM),
                 refused(400, "a filter or event id the stream cannot use"),
                 refused(503, "the event hub is not running"))))
    @_token_in_query(ctx, *SCOPES)
    async def stream_events(rt: Runtime, principal: Principal | None) -> Response:
        try:
            flt = parse_filter(request.args.items(multi=True))
            last = parse_last_event_id(request.headers.get("Last-Event-ID"),
                                       request.args.get("last_event_id"))
        except EventFilterError as exc:
            return respond({"error": str(exc)}, 400)
        hub = ctx.events
        if hub is None:
            return respond({"error": "the event hub is not running; retry in a moment"}, 503)
        # Subscribe before the backlog is read, so nothing published in between is missed.
        sub = hub.subscribe(flt)
        response = Response(_Stream(ctx, hub, sub, flt, last, principal).frames(), status=200,
                            content_type=f"{EVENT_STREAM}; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # a buffering proxy would hold events
        response.timeout = None  # as long as the client reads
        return response


def _token_in_query(ctx: ApiContext, *scopes: str) -> Any:
    """The API's `@guarded(*scopes)`, also taking the token from `?token=` when no
    Authorization header is sent (this route only, as in the Go original)."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            rt = ctx.current()
            header = request.headers.get("Authorization")
            token = request.args.get("token")
            if not header and token:
                header = f"Bearer {token}"
            try:
                principal = authenticate(header, rt.api_tokens)
                require(principal, scopes)
            except AuthError as exc:
                return respond({"error": exc.message}, exc.status)
            return await handler(rt, principal, *args, **kwargs)

        setattr(wrapper, GUARD_SCOPES, tuple(scopes))
        return wrapper

    return decorate


class _Stream:
    """One subscriber's stream. Runs after the request context is gone (the body of a
    streaming response), so it touches only what it was given."""

    def __init__(self, ctx: ApiContext, hub: Hub, sub: Subscription, flt: EventFilter,
                 last: int, principal: Principal | None) -> None:
        self.ctx, self.hub, self.sub, self.flt = ctx, hub, sub, flt
        self.principal = principal  # whose token decides which fields each frame shows
        # The id of the last event this client has. An id beyond the newest event (a database
        # restored from an older backup) would hide every event up to it: start live instead.
        self.sent = min(last, hub.last_id)
        self.last_write = float("-inf")  # trio time of the last events written

    async def frames(self) -> AsyncIterator[str]:
        """The body; a fault ends this stream with a comment, never the gateway."""
        try:
            async with aclosing(self._frames()) as frames:
                async for frame in frames:
                    yield frame
        except StoreError as exc:
            yield f": error: reading stored events: {_one_line(str(exc))}; reconnect\n\n"
        except Exception as exc:  # noqa: BLE001 - one subscriber's fault stays with it
            self.ctx.log.child("api").error(
                "stream failed", path="/events", error=f"{type(exc).__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc)))
            yield ": error: internal error; see the gateway log\n\n"
        finally:
            self.hub.unsubscribe(self.sub)

    async def _frames(self) -> AsyncIterator[str]:
        # An SSE comment first, so the client sees the stream open before any event.
        yield ": connected\n\n"
        first = await self._backlog()
        if first:
            yield first
        while True:
            with trio.move_on_after(HEARTBEAT) as idle:
                batch = await self.sub.next_batch()
            if idle.cancelled_caught:
                yield KEEP_ALIVE
                continue
            # At most one write per COALESCE under load, none delayed when the stream was idle:
            # a chunk per event per subscriber cost the gateway about 30 microseconds each,
            # a seventh of the dispatcher's rate with ten subscribers.
            wait = self.last_write + COALESCE - trio.current_time()
            if wait > 0 and self.sub.ended is None:
                await trio.sleep(wait)
                batch += self.sub.drain()
            if self.sub.ended is not None:
                yield (": the gateway is stopping; reconnect with Last-Event-ID\n\n"
                       if self.sub.ended == "stopping" else
                       ": dropped: this client fell behind; reconnect with Last-Event-ID\n\n")
                return
            out = self._take(batch)
            if out:
                self.last_write = trio.current_time()
                yield out

    async def _backlog(self) -> str:
        """The events after the client's id that happened before it subscribed."""
        memory = self.hub.in_memory(self.sent)
        if self.sent == 0:
            return self._take(memory)
        oldest = memory[0].id if memory else None
        stored: list[Event] = []
        if oldest is None or oldest > self.sent + 1:
            # Older than memory reaches (or memory is empty): the table has the rest. Memory
            # was looked at first, so whatever it lacks was committed before this read.
            stored = await backlog(self.ctx.read, self.sent,
                                   self.ctx.current().backend.events)
        merged = {event.id: event for event in stored + memory}
        return self._take([merged[i] for i in sorted(merged)])

    def _take(self, events: list[Event]) -> str:
        """The frames of `events` this client has not had and wants, in id order."""
        frames = []
        for event in events:
            if event.id <= self.sent:
                continue
            self.sent = event.id
            if self.flt.matches(event.type, event.fields()):
                frames.append(event_frame(event, self.principal))
        return "".join(frames)


def _one_line(text: str) -> str:
    return " ".join(text.split())
