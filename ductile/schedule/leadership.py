"""Who may fire schedules when several gateways share one store.

On SQLite there is one gateway and it always leads (the scheduler is given no Leadership).
On PostgreSQL every node runs a scheduler, but only the node holding the scheduler lease
fires (boot/cluster.py renews it every heartbeat; the database's clock expires it), and each
write the leader makes re-checks, in its own transaction, that the lease is still its own at
the term it acted under: a fire row keyed by (schedule, instant) and the fired job commit
together or not at all, so an instant fires once across the cluster even when a frozen leader
wakes up after its successor took over.

This module is the scheduler's side of that contract, kept free of any database driver: the
guards it hands out are functions the store runs inside its transactions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Leadership(Protocol):
    """The scheduler's view of the lease (implemented in boot/cluster.py)."""

    def lease(self) -> Any | None:
        """The scheduler lease this node holds now, or None (another node leads)."""
        ...

    def retry_in(self) -> float:
        """How soon a node that does not lead looks again (seconds)."""
        ...

    def fire_guard(self, lease: Any, schedule: str, instant: str) -> Callable[[Any, Any], None]:
        """For QueueCore.enqueue's `guard`: records the fire of `schedule` at `instant`
        under `lease`, or raises LeadershipLost / DedupeDropped (`already_fired`)."""
        ...

    def write_guard(self, lease: Any) -> Callable[[Any], None]:
        """Run first in a transaction of the leader's other writes (schedule state): raises
        LeadershipLost once `lease` is no longer held."""
        ...
