"""Wake whoever waits for a job to reach a terminal status (the sync API, tests)."""

from __future__ import annotations

from collections import OrderedDict

import trio

#: How many recently ended attempts `register` remembers (see Completions).
RECENT = 4096


class Completions:
    """Job id -> events to set when an attempt of that job ends.

    Waiters register before they check the job's status, so a completion between the check
    and the wait is never missed. The last `RECENT` job ids notified are remembered as well:
    a waiter that has just enqueued a job registers, asks `ended_recently`, and only when it
    says yes reads the job before waiting. The sync run route saves a database read per
    request that way, and still never misses an end that came before it registered.
    """

    def __init__(self, recent: int = RECENT) -> None:
        self._waiters: dict[str, list[trio.Event]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_limit = recent

    def register(self, job_id: str) -> trio.Event:
        event = trio.Event()
        self._waiters.setdefault(job_id, []).append(event)
        return event

    def ended_recently(self, job_id: str) -> bool:
        """Whether an attempt of `job_id` ended among the last `RECENT` notified."""
        return job_id in self._recent

    def discard(self, job_id: str, event: trio.Event) -> None:
        events = self._waiters.get(job_id)
        if events and event in events:
            events.remove(event)
            if not events:
                del self._waiters[job_id]

    def notify(self, job_id: str) -> None:
        self._recent[job_id] = None
        self._recent.move_to_end(job_id)
        if len(self._recent) > self._recent_limit:
            self._recent.popitem(last=False)
        for event in self._waiters.pop(job_id, ()):
            event.set()

    def notify_all(self) -> None:
        """Wake every waiter (at stop): each re-reads its job and decides what to answer."""
        waiters, self._waiters = self._waiters, {}
        for events in waiters.values():
            for event in events:
                event.set()
