"""Wake whoever waits for a job to reach a terminal status (the sync API, tests)."""

from __future__ import annotations

import trio


class Completions:
    """Job id -> events to set when that job finishes. Waiters register before they check the
    job's status, so a completion between the check and the wait is never missed."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[trio.Event]] = {}

    def register(self, job_id: str) -> trio.Event:
        event = trio.Event()
        self._waiters.setdefault(job_id, []).append(event)
        return event

    def discard(self, job_id: str, event: trio.Event) -> None:
        events = self._waiters.get(job_id)
        if events and event in events:
            events.remove(event)
            if not events:
                del self._waiters[job_id]

    def notify(self, job_id: str) -> None:
        for event in self._waiters.pop(job_id, ()):
            event.set()

    def notify_all(self) -> None:
        """Wake every waiter (at stop): each re-reads its job and decides what to answer."""
        waiters, self._waiters = self._waiters, {}
        for events in waiters.values():
            for event in events:
                event.set()
