"""Ingress backpressure: the count of outstanding jobs, and the bound new work is held to.

Outstanding means a live status of states/job.yaml (queued or running). The count lives in
memory, global and per plugin, so the check on every enqueue is a few dictionary reads and no
database hop:

- `Outstanding.observe` is a hub tap (events/hub.py). The EventedQueue (events/queue.py)
  publishes each job event after its write commits: `job.enqueued` and `router.enqueued` add
  one, the `job.<terminal status>` events take one away, and everything else (a retry, a start,
  an interrupted attempt) leaves the job outstanding. Crash recovery's `job.enqueued` moves a
  job that was already running back to queued, so it is not new.
- It is seeded from the database before any plane opens, and re-synced every
  `RESYNC_INTERVAL` seconds (`run_resync`), because rows can change behind the gateway's back
  (the CLI, a backup restored, a bug). Events published while the read is in flight are kept
  and applied on top of what it returns, so a busy gateway loses none; the only error left is
  a write that committed before the read and was published after it started, which is counted
  twice until the next re-sync.

`Backpressure.admit` is the one check every ingress makes before it creates a new root job
(the API's enqueue routes, webhooks, the relay receiver, scheduler fires): it raises
`Overloaded` when a plugin's `max_outstanding_jobs` or `service.max_outstanding_jobs` is
reached. Work the gateway derives from accepted work (pipeline successors, hooks, retries,
recovery) never asks: refusing it would lose it. A batch (a pipeline that fans out, a relay
event several pipelines take) is admitted whole while every bound it touches has room, so a
bound can be passed by one batch, and by the requests admitted at the same instant.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from ductile.errors import Overloaded, StoreError
from ductile.events.queue import terminal_event
from ductile.logs import Logger
from ductile.machines import job_statuses

if TYPE_CHECKING:
    from ductile.config.schema import Config
    from ductile.events.hub import Event

#: Seconds a refused sender is told to wait (`Retry-After`): a slot frees when any job ends.
RETRY_AFTER = 1
#: Seconds between re-syncs of the count with the database.
RESYNC_INTERVAL = 30.0
#: Seconds between two log lines about refusals of one plugin on one plane.
LOG_EVERY = 1.0


def _deltas() -> dict[str, int]:
    """How each job event moves the count: +1 for a new job, -1 for each terminal status."""
    deltas = {"job.enqueued": 1, "router.enqueued": 1}
    for status in job_statuses().terminal:
        deltas[terminal_event(status)] = -1
    return deltas


class Outstanding:
    """Jobs queued or running, global and per plugin, kept from the job events."""

    def __init__(self) -> None:
        self._deltas = _deltas()
        self.by_plugin: dict[str, int] = {}
        self.total = 0
        # Per plugin, what the events moved since a re-sync's read began (None: none runs).
        self._since: dict[str, int] | None = None
        self.resynced = 0  # re-syncs applied
        self.last_drift = 0  # jobs the last re-sync corrected, summed over plugins

    def count(self, plugin: str) -> int:
        return self.by_plugin.get(plugin, 0)

    def observe(self, event: Event) -> None:
        """The hub tap (cheap, never raises)."""
        delta = self._deltas.get(event.type)
        if delta is None:
            return
        data = event.fields()
        plugin = data.get("plugin")
        if not isinstance(plugin, str) or (delta > 0 and data.get("recovery")):
            return
        self.add(plugin, delta)

    def add(self, plugin: str, delta: int) -> None:
        before = self.by_plugin.get(plugin, 0)
        after = max(0, before + delta)
        if after:
            self.by_plugin[plugin] = after
        else:
            self.by_plugin.pop(plugin, None)
        self.total += after - before
        if self._since is not None:
            self._since[plugin] = self._since.get(plugin, 0) + delta

    def begin_resync(self) -> None:
        """A read of the database's counts starts now: remember what the events do meanwhile."""
        self._since = {}

    def finish_resync(self, counts: Mapping[str, int]) -> int:
        """Take `counts` (read since `begin_resync`) plus the events since; return how many
        jobs the memory was off by, summed over plugins."""
        since, self._since = self._since or {}, None
        fresh = dict(counts)
        for plugin, delta in since.items():
            fresh[plugin] = fresh.get(plugin, 0) + delta
        fresh = {plugin: n for plugin, n in fresh.items() if n > 0}
        drift = sum(abs(fresh.get(p, 0) - self.by_plugin.get(p, 0))
                    for p in set(fresh) | set(self.by_plugin))
        self.by_plugin = fresh
        self.total = sum(fresh.values())
        self.resynced += 1
        self.last_drift = drift
        return drift

    def abort_resync(self) -> None:
        """The read failed: keep counting from the events alone."""
        self._since = None

    async def resync(self, read: Callable[[], Awaitable[Mapping[str, int]]]) -> int:
        """Read the database's counts and take them (see the module docstring)."""
        self.begin_resync()
        try:
            counts = await read()
        except BaseException:
            self.abort_resync()
            raise
        return self.finish_resync(counts)


async def run_resync(counter: Outstanding, read: Callable[[], Awaitable[Mapping[str, int]]],
                     log: Logger, *, interval: float = RESYNC_INTERVAL,
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Seed the count, report started (the planes open after it), then re-sync it every
    `interval` seconds. A read the database refuses is logged and tried at the next one."""
    log = log.child("backpressure")
    started = False
    while True:
        try:
            drift = await counter.resync(read)
        except StoreError as exc:
            log.error("outstanding jobs not re-counted; counting from job events until the "
                      "next try", error=str(exc), retry_in_s=interval)
        else:
            if drift and started:
                log.info("outstanding jobs re-counted from the database", corrected=drift,
                         outstanding=counter.total)
        if not started:
            started = True
            task_status.started()
        await trio.sleep(interval)


class Backpressure:
    """The bound on outstanding jobs that ingress is held to (one per process: the count and
    the refusal totals outlive reloads; the limits are read from the serving config)."""

    def __init__(self, counter: Outstanding | None = None, log: Logger | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counter = counter if counter is not None else Outstanding()
        self._log = log
        self._clock = clock
        # (plane, plugin, bound) -> refusals; bound is "plugin" or "global".
        self.refused: dict[tuple[str, str, str], int] = {}
        self.refused_total = 0
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def admit(self, config: Config, plane: str, plugins: Iterable[str]) -> None:
        """Raise Overloaded when a bound that new jobs of `plugins` would add to is reached;
        return when all of them may be enqueued. `plane` (api, webhook, relay, scheduler)
        labels the refusal."""
        wanted = list(dict.fromkeys(plugins))
        if not wanted:
            return
        counter = self.counter
        for plugin in wanted:
            limit = config.plugin(plugin).max_outstanding_jobs
            if limit is not None and counter.count(plugin) >= limit:
                self._refuse(plane, plugin, Overloaded(
                    plugin=plugin, limit=limit, outstanding=counter.count(plugin),
                    retry_after=RETRY_AFTER))
        limit = config.service.max_outstanding_jobs
        if counter.total >= limit:
            self._refuse(plane, wanted[0], Overloaded(
                plugin=None, limit=limit, outstanding=counter.total, retry_after=RETRY_AFTER))

    def _refuse(self, plane: str, plugin: str, exc: Overloaded) -> None:
        key = (plane, plugin, "plugin" if exc.plugin is not None else "global")
        self.refused[key] = self.refused.get(key, 0) + 1
        self.refused_total += 1
        self._note(plane, plugin, exc)
        raise exc

    def _note(self, plane: str, plugin: str, exc: Overloaded) -> None:
        """Log the refusal, at most once per LOG_EVERY per plane and plugin (with how many
        were refused since the last line), so a flood of senders cannot flood the log."""
        if self._log is None:
            return
        now = self._clock()
        last, quiet = self._logged.get((plane, plugin), (None, 0))
        if last is not None and now - last < LOG_EVERY:
            self._logged[(plane, plugin)] = (last, quiet + 1)
            return
        self._logged[(plane, plugin)] = (now, 0)
        self._log.warn("backpressure: new work refused (senders retry)", plane=plane,
                       plugin=plugin, bound=exc.key, limit=exc.limit,
                       outstanding=exc.outstanding, refused_since_last_line=quiet or None)

    def view(self, config: Config) -> dict[str, Any]:
        """What `/healthz` shows: the global bound and count, refusals so far, and each
        configured plugin with its own bound."""
        counter = self.counter
        body: dict[str, Any] = {"max_outstanding_jobs": config.service.max_outstanding_jobs,
                                "outstanding": counter.total,
                                "refused_total": self.refused_total}
        plugins = {name: {"max_outstanding_jobs": conf.max_outstanding_jobs,
                          "outstanding": counter.count(name)}
                   for name, conf in sorted(config.plugins.items())
                   if conf.max_outstanding_jobs is not None}
        if plugins:
            body["plugins"] = plugins
        return body
