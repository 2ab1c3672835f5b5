"""The supervisor: one trio nursery owns every plane of the gateway.

    run() ── nursery
             ├── signal handler   SIGTERM/SIGINT -> graceful stop, SIGHUP -> reload
             ├── dispatcher       claims and runs jobs
             ├── API server       hypercorn on the socket bound once at first boot
             │                    (HTTPS with api.tls; webhooks alike with webhooks.tls)
             └── watchdog         WATCHDOG=1 when systemd asks for it

Any task that raises cancels the tree: the process exits 1 and systemd (`Restart=on-failure`)
restarts it. A boot refusal exits 78, which the shipped unit lists in
`RestartPreventExitStatus`, so a bad config does not crash-loop.

Reload builds a whole new generation through every gate while the current one keeps serving, and
swaps only when the new one reached `ready`. The listener and the database are process-wide, so
the swap drops no connection. A TLS listener serves the new generation's certificate to new
connections (planes/tls.py); switching TLS on or off restarts that plane on the same socket.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import trio

from ductile.boot import notify
from ductile.boot.machine import BootMachine
from ductile.boot.gates import BootFacts
from ductile.boot.runtime import Process, Runtime, build_generation
from ductile.planes.api.context import ApiContext, InFlight
from ductile.errors import BootRefused
from ductile.logs import Logger

if TYPE_CHECKING:
    from ductile.store.jobs import Job

EXIT_OK = 0
EXIT_COMPONENT_FAILED = 1
EXIT_REFUSED = 78  # EX_CONFIG
IDLE_HTTP_DRAIN = 0.2  # seconds to close idle connections at stop when no request is in flight


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    message: str
    gate: str | None = None
    reloaded_at: datetime | None = None
    snapshot_id: str | None = None


class Supervisor:
    """Owns the process resources, the current generation and the lifecycle machine."""

    def __init__(
        self, proc: Process, components: Sequence[Callable[[], Awaitable[None]]] = ()
    ) -> None:
        self.proc = proc
        # Extra long-running tasks in the supervisor's nursery, cancelled at stop; like every
        # plane, one that raises takes the process down with exit 1.
        self.components = tuple(components)
        self.log = proc.log.child("supervisor")
        self._current: Runtime | None = None
        self._reload_lock = trio.Lock()
        self._stop = trio.Event()
        # The process-level lifecycle (ready -> reloading -> ready -> stopping -> stopped) uses
        # the same declared machine; each build walks its own copy from idle.
        self.lifecycle = BootMachine(BootFacts(), initial="ready")
        self.started_monotonic = time.monotonic()
        # Set once every plane is open and READY=1 was sent: what an in-process caller (a
        # test, an embedding) waits on instead of guessing with a sleep.
        self.ready = trio.Event()
        self._app: Any = None
        self._webhook_app: Any = None
        self._hyper_configs: dict[str, Any] = {}
        self._plane_stops: dict[str, trio.Event] = {}
        # The TLS of each plane serving HTTPS (planes/tls.py ServedTls), renewed at each swap.
        self._served_tls: dict[str, Any] = {}
        self._planes: trio.Nursery | None = None
        self.scheduler: Any = None
        self.http_inflight = InFlight()  # requests being handled, counted by the API app

    @property
    def current(self) -> Runtime:
        assert self._current is not None, "no runtime generation yet"
        return self._current

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """A stop was requested: no new claims, drains under way."""
        return self._stop.is_set()

    async def reload(self, reason: str = "api") -> ReloadResult:
        """Build a new generation beside the current one; swap only if it reached ready."""
        async with self._reload_lock:
            if self._stop.is_set():
                return ReloadResult(False, "the gateway is stopping", gate="stop")
            notify.notify("RELOADING=1", self.proc.environ)
            self.lifecycle.trigger("reload")
            try:
                new = await build_generation(self.proc, reason="reload", previous=self.current)
            except Exception as exc:  # noqa: BLE001 - a failed build never costs the old runtime
                refused = exc if isinstance(exc, BootRefused) else BootRefused(
                    "reload", f"reload failed unexpectedly: {describe_failure(exc)}")
                if self.lifecycle.state == "reloading":
                    self.lifecycle.trigger("keep")
                self.log.error("config reload failed", gate=refused.gate, reason=refused.reason,
                               trigger=reason, kept_generation=self.current.generation)
                self.proc.events.publish("reload.kept", gate=refused.gate,
                                         reason=refused.reason, trigger=reason,
                                         generation=self.current.generation)
                notify.notify("READY=1", self.proc.environ)
                return ReloadResult(False, refused.reason, gate=refused.gate)
            if self._stop.is_set():
                return ReloadResult(False, "the gateway is stopping", gate="stop")
            previous_posture = self.current.posture
            self._current = new
            self.proc.log.set_level(new.config.service.log_level)
            if self._app is not None:
                self._app.config["MAX_CONTENT_LENGTH"] = new.config.api.max_body_size
            if self._webhook_app is not None:
                self._webhook_app.replace_routes(new.config.webhooks.endpoints,
                                                 new.webhook_secrets, _webhook_enqueue(new))
            self.lifecycle.trigger("swap")
            await self._sync_planes()
            self.proc.wake_dispatcher()
            if self.scheduler is not None:
                self.scheduler.wake()
            self.log.info("config reloaded successfully", generation=new.generation,
                          snapshot_id=new.snapshot_id, trigger=reason, posture=new.posture,
                          previous_posture=previous_posture)
            self.proc.events.publish("reload.swapped", generation=new.generation,
                                     snapshot_id=new.snapshot_id, trigger=reason,
                                     posture=new.posture)
            if new.posture != previous_posture:
                self.proc.events.publish("posture.changed", previous_posture=previous_posture,
                                         posture=new.posture, generation=new.generation)
            notify.notify("READY=1", self.proc.environ)
            return ReloadResult(True, "configuration reloaded",
                                reloaded_at=datetime.now(timezone.utc),
                                snapshot_id=new.snapshot_id)

    async def run(self) -> int:
        """Boot, serve until a stop signal, drain, and return the process exit code."""
        from ductile.dispatch.dispatcher import Dispatcher
        from ductile.dispatch.retention import run_retention
        from ductile.events.journal import run_journal
        from ductile.events.metrics import Metrics
        from ductile.events.outstanding import run_resync
        from ductile.schedule.scheduler import Scheduler

        if self.proc.metrics is None:
            self.proc.metrics = Metrics()
            self.proc.events.add_tap(self.proc.metrics.observe)
            self.proc.metrics.watch_backpressure(self.proc.backpressure)

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            try:
                self._current = await build_generation(self.proc, reason="startup")
            except BootRefused as refused:
                self.log.error("boot refused", gate=refused.gate, reason=refused.reason)
                print(f"ductile: refusing to start (gate {refused.gate}): {refused.reason}",
                      file=sys.stderr)
                with trio.CancelScope(shield=True):
                    await self.proc.close()
                return EXIT_REFUSED
            dispatcher = Dispatcher(lambda: self.current, self.proc.completions, self.proc.log,
                                    live=self.proc.live)
            self.proc.dispatcher = dispatcher
            code = EXIT_OK
            try:
                async with trio.open_nursery() as outer:
                    outer.start_soon(self._handle_signals, signals, outer)
                    outer.start_soon(self._watchdog)
                    assert self.proc.db is not None
                    outer.start_soon(run_retention, lambda: self.current, self.proc.db,
                                     self.proc.log)
                    # Cancelled last (the outer nursery), so the events of the drain are
                    # written before the database closes.
                    outer.start_soon(run_journal, self.proc.events, self.proc.db, self.proc.log,
                                     self.proc.backend.events)
                    leadership = None
                    if self.proc.cluster is not None:
                        # Heartbeats, dead peers' jobs, the scheduler lease, NOTIFY wake-ups;
                        # a fenced node ends here (NodeFenced ends the nursery, and the
                        # process, for systemd).
                        from ductile.boot.cluster import ClusterLeadership, run_cluster

                        def interval() -> tuple[float, float]:
                            state = self.current.config.state
                            return state.heartbeat_interval, state.dead_after

                        leadership = ClusterLeadership(interval)
                        await outer.start(
                            functools.partial(
                                run_cluster, self.proc.cluster,
                                lambda: self.current.queue,  # reap_dead_nodes passes through
                                interval, self.proc.wake_dispatcher,
                                self.proc.log.child("cluster"), leadership=leadership,
                                completions=self.proc.completions,
                                cancel_local=dispatcher.cancel_running))
                    # The backpressure count is seeded before any plane takes work.
                    await outer.start(run_resync, self.proc.backpressure.counter,
                                      lambda: self.current.queue.outstanding_counts(),
                                      self.proc.log)
                    for component in self.components:
                        outer.start_soon(component)
                    async with trio.open_nursery() as planes:
                        self._planes = planes
                        # The listeners first: hypercorn briefly marks a listening socket
                        # inheritable, and no plugin may be spawned until that is undone.
                        await self._sync_planes()
                        await planes.start(dispatcher.run)
                        assert self.proc.db is not None
                        self.scheduler = Scheduler(lambda: self.current, self.proc.db,
                                                   self.proc.log,
                                                   cancel_running=dispatcher.cancel_running,
                                                   publish=self.proc.events.publish,
                                                   leadership=leadership)
                        if leadership is not None:
                            leadership.on_change = self.scheduler.wake
                        await planes.start(self.scheduler.run)
                        notify.notify(
                            f"READY=1\nSTATUS=serving generation {self.current.generation}\n"
                            f"MAINPID={os.getpid()}", self.proc.environ,
                        )
                        self._announce()
                        self.ready.set()
                        await self._stop.wait()
                        self._begin_shutdown(dispatcher)
                    # The dispatcher and the API drained; signals and watchdog can go.
                    self.lifecycle.trigger("stopped")
                    outer.cancel_scope.cancel()
            except Exception as exc:  # noqa: BLE001 - let it crash, at the operator layer
                self.log.error("component failed", error=describe_failure(exc))
                code = EXIT_COMPONENT_FAILED
            finally:
                with trio.CancelScope(shield=True):
                    await self.proc.close()
                self.log.info("ductile stopped", exit_code=code)
            return code

    def _announce(self) -> None:
        rt = self.current
        if rt.posture == "management-only":
            self.log.warn(
                "booting in the management-only posture: no API token is resolved yet, so only "
                "/healthz and /vault/* are served on the local management socket and the public "
                "listener is NOT open; mint an API token with the vault admin token over the "
                "socket, add its secret_ref to api.auth.tokens, then run ductile system reload",
                socket=self.proc.management_path)
        self.log.info("ductile running (press Ctrl+C to stop)", posture=rt.posture,
                      pid=os.getpid(), planes=sorted(self._plane_stops),
                      listen=rt.config.api.listen if "api" in self._plane_stops else None,
                      tls=sorted(self._served_tls))

    def _desired_planes(self, rt: Runtime) -> set[str]:
        """The HTTP planes this generation's posture opens (each on a process-wide socket)."""
        wanted: set[str] = set()
        if rt.posture == "gateway" and self.proc.listener is not None:
            wanted.add("api")
        if rt.posture == "management-only" and self.proc.management_listener is not None:
            wanted.add("management")
        if (rt.posture == "gateway" and self.proc.webhook_listener is not None
                and rt.config.webhooks.endpoints):
            wanted.add("webhooks")
        return wanted

    async def _sync_planes(self) -> None:
        """Open the planes the current posture wants and close the others: a reload from the
        management-only posture to the gateway opens the public listener and removes the
        management socket; deleting every API token goes back the other way. A plane that
        stays open serves the current generation's TLS certificate to new connections."""
        assert self._planes is not None
        wanted = self._desired_planes(self.current)
        tls = self.current.tls
        for name in sorted(set(self._plane_stops) & wanted):
            served = self._served_tls.get(name)
            if served is not None and name in tls:
                served.renew(tls[name])  # new connections get this generation's certificate
            elif served is not None or name in tls:
                # TLS switched on or off: hypercorn wraps its socket once, so this plane is
                # restarted on the same socket (in-flight requests finish on the old one),
                # with a new app: a quart app's lifespan belongs to one serve, and the old
                # serve's shutdown would cancel its successor's.
                self._plane_stops.pop(name).set()
                self._served_tls.pop(name, None)
                if name == "api":
                    self._app = None
                else:
                    self._webhook_app = None
        for name in sorted(set(self._plane_stops) - wanted):
            self._plane_stops.pop(name).set()
            self._served_tls.pop(name, None)
            if name == "management":
                self.proc.close_management()
        for name in sorted(wanted - set(self._plane_stops)):
            stop = trio.Event()
            await self._planes.start(self._serve_plane, name, stop)
            self._plane_stops[name] = stop

    def _begin_shutdown(self, dispatcher: Any) -> None:
        notify.notify("STOPPING=1", self.proc.environ)
        if self.lifecycle.state != "stopping":
            self.lifecycle.trigger("stop")
        grace = self.current.config.service.shutdown_grace
        self.log.info("stopping: no new claims; draining HTTP and running plugins",
                      running=dispatcher.active, grace_s=grace)
        if self.scheduler is not None:
            self.scheduler.stop()
        dispatcher.stop(grace)
        # Sync waiters re-check their job: a queued one answers at once (it stays queued for
        # the next start); a running one waits for the drain.
        self.proc.completions.notify_all()
        self.proc.events.close()  # GET /events streams end; their clients resume later
        busy = self.http_inflight.count > 0
        for config in self._hyper_configs.values():
            # hypercorn reads this when the trigger fires: drain in-flight requests within the
            # grace, but do not hold the exit for idle keep-alive connections.
            config.graceful_timeout = grace if busy else IDLE_HTTP_DRAIN
        for stop in self._plane_stops.values():
            stop.set()

    def _plane_app(self, name: str) -> tuple[Any, Any]:
        """(quart app, socket) of one plane; the API app is built once per process."""
        if name == "api":
            from ductile.planes.api.app import create_app

            if self._app is None:
                self._app = create_app(self._api_context())
            return self._app, self.proc.listener
        if name == "webhooks":
            from ductile.planes.webhook.app import create_webhook_app
            from ductile.planes.webhook.respond import JobOutcomes

            rt = self.current
            if self._webhook_app is None:
                # `respond: result` waits on job ends, read through narrow callables.
                outcomes = JobOutcomes(self.proc.completions, lambda: self.current.queue,
                                       lambda: self.stopping)
                self._webhook_app = create_webhook_app(
                    rt.config.webhooks.endpoints, rt.webhook_secrets, _webhook_enqueue(rt),
                    self.proc.log.child("webhook"), outcomes=outcomes,
                    publish=self.proc.events.publish)
            else:
                self._webhook_app.replace_routes(rt.config.webhooks.endpoints,
                                                 rt.webhook_secrets, _webhook_enqueue(rt))
            return self._webhook_app, self.proc.webhook_listener
        from ductile.planes.api.management import create_management_app

        app = create_management_app(
            lambda: self.current.vault_owner, self.proc.audit, self._management_health,
            self.proc.log.child("management"))
        return app, self.proc.management_listener

    def _management_health(self) -> dict[str, Any]:
        return {"status": "ok", "posture": self.current.posture,
                "uptime_seconds": self._uptime()}

    def _api_context(self) -> ApiContext:
        """What the API plane gets from the process: callables and stores, not `self`."""
        db = self.proc.db
        assert db is not None

        async def audit(event: Any) -> None:
            if self.proc.audit is not None:
                await self.proc.audit(event)

        def wake_scheduler() -> None:
            if self.scheduler is not None:
                self.scheduler.wake()

        async def cancel_running(job_id: str, reason: str) -> bool:
            dispatcher = self.proc.dispatcher
            if dispatcher is not None and await dispatcher.cancel_running(job_id, reason):
                return True
            if self.proc.cluster is None:
                return False
            # A peer may run it: every node hears the request and the one running the job
            # stops it; the caller then waits for the end, which every node hears too.
            from ductile.boot.cluster import request_cancel

            await request_cancel(self.proc.cluster, job_id, reason)
            return True

        return ApiContext(
            current=lambda: self.current, log=self.proc.log,
            completions=self.proc.completions, read=db.read, write=db.write, audit=audit,
            reload=self.reload, stopping=lambda: self.stopping, uptime=self._uptime,
            scheduler_boot=lambda: self.scheduler.boot if self.scheduler is not None else None,
            wake_scheduler=wake_scheduler, fire_schedule=self._fire_schedule,
            inflight=self.http_inflight, live=self.proc.live,
            cancel_running=cancel_running,
            events=self.proc.events, metrics=lambda: self.proc.metrics,
            running=lambda: self.proc.dispatcher.active if self.proc.dispatcher else 0,
            cluster=self._cluster_reader(),
        )

    def _cluster_reader(self) -> Callable[[float], Awaitable[Any]] | None:
        """On PostgreSQL, this node's cached read of the node and lease rows (one
        transaction for both) for GET /system/nodes and /healthz; None on SQLite."""
        cluster = self.proc.cluster
        if cluster is None:
            return None
        from ductile.planes.api.cluster import CachedCluster
        from ductile.store.pg.cluster import leases, nodes

        return CachedCluster(cluster.me, lambda: cluster.db.read(
            lambda conn: (nodes(conn), leases(conn)))).snapshot

    async def _fire_schedule(self, plugin: str, schedule_id: str) -> Any:
        """Fire one schedule now (POST /scheduler/run), through the running scheduler."""
        from ductile.errors import SchedulerError

        if self.scheduler is None:
            raise SchedulerError("the scheduler has not started yet; retry in a moment")
        return await self.scheduler.fire_now(plugin, schedule_id)

    def _uptime(self) -> int:
        """Seconds since the process started serving (a reload does not reset it)."""
        return int(time.monotonic() - self.started_monotonic)

    async def _serve_plane(self, name: str, stop: trio.Event, *, task_status: Any) -> None:
        from ductile.planes.http import serve_plane
        from ductile.planes.tls import ServedTls
        from ductile.planes.tls_hypercorn import PlaneConfig

        app, sock = self._plane_app(name)
        assert sock is not None
        fd = os.dup(sock.fileno())
        grace = self.current.config.service.shutdown_grace
        context = self.current.tls.get(name)
        served = ServedTls(context) if context is not None else None
        if served is not None:
            self._served_tls[name] = served
        if name == "webhooks":
            from ductile.planes.webhook.server import webhook_hypercorn_config

            # Short read/keep-alive timeouts: a slowloris sender cannot pin connections.
            config = webhook_hypercorn_config(f"fd://{fd}", graceful_timeout=grace, tls=served)
        else:
            config = PlaneConfig()
            config.served_tls = served
            config.bind = [f"fd://{fd}"]
            config.accesslog = None
            config.errorlog = None
            config.graceful_timeout = grace
            config.keep_alive_timeout = 60.0
        self._hyper_configs[name] = config

        async def serve_then_seal(*, task_status: Any) -> None:
            try:
                await serve_plane(app, config, shutdown_trigger=stop.wait,
                                  task_status=task_status)
            finally:
                # A plane restarted on its socket (TLS switched) has a successor by this name.
                if self._hyper_configs.get(name) is config:
                    del self._hyper_configs[name]

        async with trio.open_nursery() as inner:
            await inner.start(serve_then_seal)
            # hypercorn marks the socket inheritable; plugins must not inherit our listener.
            os.set_inheritable(fd, False)
            task_status.started()

    async def _handle_signals(self, signals: Any, nursery: trio.Nursery) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                self.log.info("received SIGHUP: reloading")
                nursery.start_soon(self.reload, "sighup")
            else:
                self.log.info("received shutdown signal", signal=signal.Signals(signum).name)
                self.request_stop()

    async def _watchdog(self) -> None:
        interval = notify.watchdog_interval(self.proc.environ)
        if interval is None:
            return
        while True:
            notify.notify("WATCHDOG=1", self.proc.environ)
            await trio.sleep(interval)


def describe_failure(exc: BaseException) -> str:
    """Name the real failures inside trio's exception groups: `RuntimeError: disk full`."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_failure(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def run_gateway(explicit_config: str | None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `ductile system start`."""
    proc = Process(explicit_config=explicit_config,
                   environ=dict(os.environ if environ is None else environ), log=Logger())
    return trio.run(Supervisor(proc).run)


def _webhook_enqueue(rt: Runtime) -> Callable[..., Awaitable[Job]]:
    """The generation's enqueue with each plugin's own `retry.max_attempts`, as the API's run
    routes use: a webhook's job retries on the policy its plugin is configured with. A
    delivery over a `max_outstanding_jobs` bound is refused first (Overloaded)."""

    async def enqueue(plugin: str, command: str, payload: Any, submitted_by: str,
                      **options: Any) -> Job:
        attempts = rt.config.plugin(plugin).retry.max_attempts
        rt.admit("webhook", plugin)  # Overloaded: 503 with Retry-After (webhook/app.py)
        return await rt.queue.enqueue(plugin, command, payload, submitted_by,
                                      max_attempts=attempts, **options)

    return enqueue
