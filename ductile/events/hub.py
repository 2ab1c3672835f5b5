"""The event hub: one per process, it outlives reloads (owned by `boot.runtime.Process`).

`publish(type, **fields)` is synchronous and never waits: it stamps the event with the next id
and the time, encodes its data once, hands it to every matching subscriber's bounded buffer, to
the synchronous taps (the metrics), and to the journal's pending list. Nothing a subscriber
does can slow the publisher: one whose buffer is full is dropped (its stream ends, so its
client reconnects and resumes with Last-Event-ID) and the others get a `subscriber.dropped`
event.

The journal task (`run_journal`) writes the pending events to the `events` table in batches,
one transaction per batch, off the dispatcher's path. Until a batch commits its events stay in
memory, so `backlog(after)` (memory, then the table) never has a gap: a subscriber registers
first, then reads the backlog, then its live buffer, skipping ids it already sent.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ductile.events.filters import EventFilter
from ductile.logs import Logger
from ductile.store.jobs import format_time, utcnow

#: Events each subscriber may have waiting before it counts as stalled and is dropped.
SUBSCRIBER_BUFFER = 256
#: The newest events kept in memory for a subscriber that connects without an id.
RING = 256
#: Events waiting for the journal beyond this (the database refusing writes for a long time)
#: are dropped from durability, oldest first; they were still delivered live.
MAX_UNSAVED = 10_000


class Publish(Protocol):
    """The narrow callable the dispatcher, scheduler and supervisor are given."""

    def __call__(self, kind: str, /, **fields: Any) -> None: ...


def no_publish(kind: str, /, **fields: Any) -> None:
    """A publisher for components run without a hub (tests, tools)."""


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    at: str  # RFC 3339 UTC, also `data["at"]`
    data: str  # the data object as single-line JSON
    # The data object itself, for filters and taps (empty for an event read back from the
    # table: `fields()` decodes `data` then).
    values: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def frame(self) -> str:
        """The Server-Sent Events frame, as the Go original writes it."""
        return f"id: {self.id}\nevent: {self.type}\ndata: {self.data}\n\n"

    def fields(self) -> Mapping[str, Any]:
        if self.values:
            return self.values
        value = json.loads(self.data)
        return value if isinstance(value, dict) else {}


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded buffer. `ended` ("dropped": it fell behind; "stopping": the
    gateway stops) ends its stream; its client reconnects and resumes with Last-Event-ID."""

    number: int
    filter: EventFilter
    limit: int
    pending: deque[Event] = field(default_factory=deque)
    ready: trio.Event = field(default_factory=trio.Event)
    ended: str | None = None

    async def next_batch(self) -> list[Event]:
        """What is buffered, waiting for at least one event; [] once ended."""
        while not self.pending and self.ended is None:
            await self.ready.wait()
            self.ready = trio.Event()
        if self.ended is not None:
            return []
        return self.drain()

    def drain(self) -> list[Event]:
        """What is buffered now, without waiting ([] when nothing is)."""
        batch = list(self.pending)
        self.pending.clear()
        return batch


class Hub:
    def __init__(self, *, log: Logger | None = None, buffer: int = SUBSCRIBER_BUFFER,
                 ring: int = RING) -> None:
        self._log = log
        self._buffer = buffer
        self._next_id = 1
        self._ring: deque[Event] = deque(maxlen=ring)
        self._subscribers: list[Subscription] = []
        self._numbers = 0
        self._taps: list[Callable[[Event], None]] = []
        self._unsaved: deque[Event] = deque()  # published, not yet handed to the journal
        self._saving: list[Event] = []  # handed to the journal, not yet committed
        self._wake_journal = trio.Event()
        self.lost = 0  # events dropped from durability (see MAX_UNSAVED)

    # -- boot ------------------------------------------------------------------------------

    def resume(self, last_id: int, recent: Sequence[Event]) -> None:
        """Continue the ids after the stored ones (at boot, before anything is published)."""
        self._next_id = max(self._next_id, last_id + 1)
        for event in recent:
            self._ring.append(event)

    def add_tap(self, tap: Callable[[Event], None]) -> None:
        """Call `tap(event)` synchronously for every event (must be cheap and not raise)."""
        self._taps.append(tap)

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- publishing ------------------------------------------------------------------------

    def publish(self, kind: str, /, **fields: Any) -> None:
        dropped = self._deliver(self._make(kind, fields))
        for sub in dropped:
            # After the loop, so a drop never re-enters a delivery in progress.
            self._deliver(self._make("subscriber.dropped", {
                "subscriber": sub.number, "buffered": sub.limit,
                "reason": "the subscriber did not read its stream in time; it reconnects "
                          "and resumes with Last-Event-ID"}))

    def _make(self, kind: str, fields: dict[str, Any]) -> Event:
        at = fields.pop("at", None) or _now()
        data = {"at": at, **{k: v for k, v in fields.items() if v is not None}}
        event = Event(self._next_id, kind, at, _ENCODE(data), data)
        self._next_id += 1
        return event

    def _deliver(self, event: Event) -> list[Subscription]:
        self._ring.append(event)
        self._unsaved.append(event)
        if len(self._unsaved) > MAX_UNSAVED:
            self._unsaved.popleft()
            self.lost += 1
            if self._log is not None and self.lost % 1000 == 1:
                self._log.error("events not stored: the database has refused them for too long; "
                                "a client resuming across them misses them",
                                lost=self.lost)
        self._wake_journal.set()
        for tap in self._taps:
            try:
                tap(event)
            except Exception as exc:  # noqa: BLE001 - a tap's bug must not cost the publisher
                if self._log is not None:
                    self._log.error("event tap failed", event=event.type, error=repr(exc))
        dropped = []
        for sub in self._subscribers:
            if sub.filter != _EVERYTHING and not sub.filter.matches(event.type, event.values):
                continue
            if len(sub.pending) >= sub.limit:
                dropped.append(sub)
                continue
            sub.pending.append(event)
            sub.ready.set()
        for sub in dropped:
            self._drop(sub)
        return dropped

    def _drop(self, sub: Subscription) -> None:
        self._end(sub, "dropped")
        if self._log is not None:
            self._log.warn("event subscriber dropped: it fell behind", subscriber=sub.number,
                           buffered=sub.limit)

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self, flt: EventFilter) -> Subscription:
        self._numbers += 1
        sub = Subscription(self._numbers, flt, self._buffer)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def close(self) -> None:
        """End every stream (at stop): each client reconnects and resumes once we are back."""
        for sub in list(self._subscribers):
            self._end(sub, "stopping")

    def _end(self, sub: Subscription, why: str) -> None:
        sub.ended = why
        sub.pending.clear()
        sub.ready.set()
        self.unsubscribe(sub)

    def in_memory(self, after: int) -> list[Event]:
        """The events after `after` still held in memory (the ring and the unsaved), by id."""
        seen: dict[int, Event] = {}
        for source in (self._saving, self._unsaved, self._ring):
            for event in source:
                if event.id > after:
                    seen[event.id] = event
        return [seen[i] for i in sorted(seen)]

    def oldest_in_memory(self) -> int | None:
        ids = [source[0].id for source in (self._saving, self._unsaved, self._ring) if source]
        return min(ids) if ids else None

    # -- the journal's side ----------------------------------------------------------------

    async def wait_unsaved(self) -> None:
        while not self._unsaved:
            await self._wake_journal.wait()
            self._wake_journal = trio.Event()

    def take_unsaved(self) -> list[Event]:
        """Move the pending events to `saving` (still in memory until `saved`)."""
        self._saving.extend(self._unsaved)
        self._unsaved.clear()
        return list(self._saving)

    def saved(self) -> None:
        self._saving.clear()

    def save_failed(self) -> None:
        """The batch did not commit: it goes back in front of what came since."""
        self._unsaved.extendleft(reversed(self._saving))
        self._saving.clear()


_EVERYTHING = EventFilter()


#: One compact encoder for every event (json.dumps with arguments builds a new one per call).
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _now() -> str:
    # The ledger's fixed-width RFC 3339 UTC form, so `at` compares with its times as text.
    return format_time(utcnow())
