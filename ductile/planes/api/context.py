"""What the API plane receives from the process: narrow callables and stores, never the
supervisor.

The supervisor builds one `ApiContext` per process and hands it to `create_app`; the routes
read the serving generation through `current()` at the start of each request, so a reload swaps
the configuration under a running server without dropping a connection. Keeping the plane on
this small surface is what lets it be tested, and reasoned about, without booting anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ductile.logs import Logger

if TYPE_CHECKING:
    from ductile.dispatch.completions import Completions
    from ductile.dispatch.live import LiveStderr
    from ductile.events.hub import Hub
    from ductile.events.metrics import Metrics
    from ductile.planes.api.cluster import ClusterSnapshot
    from ductile.runtime import Runtime

T = TypeVar("T")


class ReloadOutcome(Protocol):
    """What a reload answers: applied, or refused with the gate that refused it."""

    ok: bool
    message: str
    gate: str | None
    reloaded_at: datetime | None
    snapshot_id: str | None


class InFlight:
    """How many requests are being handled: the supervisor reads it to decide how long an HTTP
    drain may take at stop."""

    def __init__(self) -> None:
        self.count = 0


@dataclass(frozen=True)
class ApiContext:
    current: Callable[[], Runtime]  # the serving runtime generation
    log: Logger
    completions: Completions  # wakes a synchronous request when its job ends
    # A store read and the store's writer: each runs a function on a connection of the
    # runtime's backend, taken from `current().backend` (store/backend.py).
    read: Callable[[Callable[[Any], Any]], Awaitable[Any]]
    write: Callable[[Callable[[Any], Any]], Awaitable[Any]]
    audit: Callable[[Any], Awaitable[None]]  # the vault audit trail
    reload: Callable[[str], Awaitable[ReloadOutcome]]
    stopping: Callable[[], bool]
    uptime: Callable[[], int]  # seconds since the process started serving
    scheduler_boot: Callable[[], datetime | None]  # when the scheduler started, if it runs
    wake_scheduler: Callable[[], None]
    # An operator's manual fire of one schedule (plugin, schedule id) -> schedule.ManualFire.
    fire_schedule: Callable[[str, str], Awaitable[Any]]
    inflight: InFlight
    # Stop a job running in this process (the dispatcher's `cancel_running`): False when it is
    # not running here. The plane reaches the dispatcher through this one call, never itself.
    cancel_running: Callable[[str, str], Awaitable[bool]]
    live: LiveStderr  # running plugins' stderr lines (GET /job/{id}/logs/stream)
    # The process's event hub (GET /events) and metrics (GET /metrics; None until the
    # supervisor builds them), and how many jobs run now.
    events: Hub | None = None
    metrics: Callable[[], Metrics | None] = lambda: None
    running: Callable[[], int] = lambda: 0
    # On a PostgreSQL store, this node and the cluster's node and lease rows, read no more
    # than the given seconds ago (planes/api/cluster.py CachedCluster.snapshot); None on
    # SQLite, where the gateway is alone.
    cluster: Callable[[float], Awaitable[ClusterSnapshot]] | None = None
