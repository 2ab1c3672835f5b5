"""Live stderr of running jobs: what `GET /job/{id}/logs/stream` and `job logs --follow` read.

The spawn's stderr tap hands each line of a running attempt to that attempt's `AttemptFeed`, a
bounded ring of its most recent lines (at most `max_lines` lines and `max_bytes` bytes). Readers
are cursors into the ring, so publishing is the same constant work whether nobody or a hundred
clients follow: nothing is copied per follower, and nothing a follower does (reading slowly, not
at all, or going away) can slow the plugin or the dispatcher. A late follower gets the lines
the ring still holds; a follower that joined after lines scrolled out of the ring, or fell
further behind than the ring reaches, is told how many lines it missed (`Batch.dropped`).

`LiveStderr` is process-lived (owned by `boot.runtime.Process`, so it survives reloads): the
dispatcher publishes into it and the API plane reads it. A feed exists only while its attempt
runs; once the attempt ends, the stored stderr in the ledger is the record, and followers that
already hold the feed finish reading it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

import trio

#: A late follower sees up to this many of the attempt's latest lines...
DEFAULT_MAX_LINES = 1000
#: ...and at most this many bytes of them (UTF-8, counting each line ending).
DEFAULT_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class Batch:
    """What one read found: the lines since the last read, how many lines before them were
    evicted from the ring unread, and whether the attempt has ended (nothing more will come)."""

    lines: tuple[str, ...]
    dropped: int
    ended: bool


class AttemptFeed:
    """The stderr lines of one running attempt, numbered from 0 in the order the plugin wrote
    them; the ring holds the latest of them."""

    def __init__(self, job_id: str, attempt: int, *, max_lines: int = DEFAULT_MAX_LINES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._max_lines = max(1, max_lines)
        self._max_bytes = max(1, max_bytes)
        self._ring: deque[tuple[str, int]] = deque()  # (line, its size in bytes)
        self._bytes = 0
        self._first = 0  # the number of the oldest line held
        self.ended = False
        # Created only when a reader waits, so a job nobody follows costs no event per line.
        self._changed: trio.Event | None = None

    @property
    def next_number(self) -> int:
        """The number the next published line will get (= how many were published)."""
        return self._first + len(self._ring)

    def publish(self, line: str) -> None:
        """Append one line, evicting the oldest past the bounds. Never blocks, never raises."""
        if self.ended:
            return
        size = len(line.encode("utf-8", "replace")) + 1
        self._ring.append((line, size))
        self._bytes += size
        # The newest line always stays, even alone over max_bytes (lines are cut at 16 KiB).
        while len(self._ring) > 1 and (len(self._ring) > self._max_lines
                                       or self._bytes > self._max_bytes):
            _, gone = self._ring.popleft()
            self._bytes -= gone
            self._first += 1
        self._wake()

    def end(self) -> None:
        """The attempt is over: wake every reader so it drains the ring and stops."""
        self.ended = True
        self._wake()

    def read(self, number: int) -> Batch:
        """The lines held from line `number` on (and how many before them are gone)."""
        dropped = max(0, self._first - number)
        start = max(number, self._first) - self._first
        lines = tuple(line for line, _ in islice(self._ring, start, None))
        return Batch(lines, dropped, self.ended)

    async def wait_past(self, number: int) -> None:
        """Return once line `number` has been published or the attempt ended."""
        while self.next_number <= number and not self.ended:
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def follow(self) -> Cursor:
        """A reader from the attempt's first line: it gets what the ring still holds, and its
        first batch counts the lines that scrolled out before it joined as dropped."""
        return Cursor(self, 0)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class Cursor:
    """One follower's place in a feed."""

    def __init__(self, feed: AttemptFeed, number: int) -> None:
        self.feed = feed
        self.number = number

    async def next(self) -> Batch:
        """Wait for new lines (or the end), then take everything the ring holds past us."""
        await self.feed.wait_past(self.number)
        batch = self.feed.read(self.number)
        self.number += batch.dropped + len(batch.lines)
        return batch


class LiveStderr:
    """Job id -> the feed of its running attempt, and the followers waiting for one to start."""

    def __init__(self, *, max_lines: int = DEFAULT_MAX_LINES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._feeds: dict[str, AttemptFeed] = {}
        self._starts: dict[str, list[trio.Event]] = {}

    @contextmanager
    def attempt(self, job_id: str, attempt: int) -> Iterator[Callable[[str], None]]:
        """Open the feed of one attempt for as long as it runs; yields its `publish`."""
        feed = AttemptFeed(job_id, attempt, max_lines=self._max_lines,
                           max_bytes=self._max_bytes)
        self._feeds[job_id] = feed
        for event in self._starts.pop(job_id, ()):
            event.set()
        try:
            yield feed.publish
        finally:
            feed.end()
            if self._feeds.get(job_id) is feed:
                del self._feeds[job_id]

    def feed(self, job_id: str) -> AttemptFeed | None:
        """The feed of the job's running attempt, if one is running in this process."""
        return self._feeds.get(job_id)

    def watch_start(self, job_id: str) -> trio.Event:
        """An event set when the next attempt of the job starts. Register before looking at
        the job, so a start between the look and the wait is never missed; `unwatch` after."""
        event = trio.Event()
        self._starts.setdefault(job_id, []).append(event)
        return event

    def unwatch(self, job_id: str, event: trio.Event) -> None:
        events = self._starts.get(job_id)
        if events and event in events:
            events.remove(event)
            if not events:
                del self._starts[job_id]

    def watching(self, job_id: str) -> int:
        """How many followers wait for the job's next attempt to start."""
        return len(self._starts.get(job_id, ()))
