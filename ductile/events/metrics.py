"""The gateway's Prometheus metrics (`GET /metrics`), fed by the event hub.

`Metrics.observe` is a synchronous hub tap (events/hub.py): each job, scheduler, reload,
webhook and relay event moves a counter or a histogram as it is published, so a scrape never
scans the ledger. What is a state rather than a history (queue depth, running jobs,
subscribers) is read when the scrape asks for it. One `CollectorRegistry` per process, never
the library's global one. `prometheus_client` is imported here only, when the gateway builds
its metrics, so no CLI verb pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ductile.events.hub import Event
    from ductile.events.outstanding import Backpressure

#: Where a job's run time falls (seconds): plugins run from milliseconds to their timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                    600)
#: Where a job's wait in the queue falls (seconds).
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: The value of `ductile_circuit_breaker_state` for each breaker state.
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
_OUTCOMES = {"job.completed", "job.failed", "job.timed_out", "job.dead", "job.skipped",
             "job.cancelled"}


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter(
            "ductile_jobs", "Jobs that reached a terminal status, by outcome (status).",
            ["plugin", "command", "outcome"], registry=registry)
        self.retries = Counter(
            "ductile_job_retries", "Attempts that failed and were scheduled again.",
            ["plugin", "command"], registry=registry)
        self.enqueued = Counter(
            "ductile_jobs_enqueued", "Jobs enqueued, by plugin and how they came.",
            ["plugin", "source"], registry=registry)
        self.duration = Histogram(
            "ductile_job_duration_seconds", "Run time of each finished attempt.",
            ["plugin", "command"], buckets=DURATION_BUCKETS, registry=registry)
        self.queue_wait = Histogram(
            "ductile_job_queue_wait_seconds",
            "Time from a job being due to its attempt starting.",
            ["plugin"], buckets=WAIT_BUCKETS, registry=registry)
        self.queue_depth = Gauge(
            "ductile_queue_depth", "Jobs queued (read at scrape).", registry=registry)
        self.running = Gauge(
            "ductile_jobs_running", "Jobs running in this process (read at scrape).",
            registry=registry)
        self.breakers = Gauge(
            "ductile_circuit_breaker_state",
            "Each scheduler circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["plugin", "command"], registry=registry)
        self.scheduled = Counter(
            "ductile_scheduler_fires", "Scheduler fires, enqueued or skipped (with reason).",
            ["plugin", "outcome"], registry=registry)
        self.webhooks = Counter(
            "ductile_webhook_deliveries",
            "Webhook deliveries to a configured endpoint (its path), by outcome.",
            ["endpoint", "outcome"], registry=registry)
        self.relay = Counter(
            "ductile_relay_deliveries",
            "Relay envelopes sent (by the core.relay job's outcome) and received (by the "
            "receiver's answer).",
            ["direction", "outcome"], registry=registry)
        self.reloads = Counter(
            "ductile_reloads", "Configuration reloads: swapped, or kept (refused).",
            ["outcome"], registry=registry)
        self.refusals = Counter(
            "ductile_boot_refusals", "Reloads this process refused, by the gate that refused.",
            ["gate"], registry=registry)
        self.subscribers = Gauge(
            "ductile_event_subscribers", "Clients streaming GET /events (read at scrape).",
            registry=registry)
        self.dropped = Counter(
            "ductile_event_subscribers_dropped",
            "GET /events clients dropped for falling behind.", registry=registry)
        self.events = Counter(
            "ductile_events", "Events published, by type.", ["type"], registry=registry)
        # The labelled child of each (metric, label values) seen, so an event costs a dict
        # read instead of prometheus_client's validating `labels()` (with its lock). The
        # label values are bounded as the metrics' own are (config names, event types).
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def watch_backpressure(self, source: Backpressure) -> None:
        """Expose the ingress bound (events/outstanding.py), read at each scrape: refusals
        by plane, plugin and bound, and the outstanding jobs (the count the bound is held
        to, kept from events and re-synced from the database)."""
        self.registry.register(_BackpressureCollector(source))

    def _child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once per label set."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, event: Event) -> None:
        """The hub tap: count one event (cheap, never raises on missing fields)."""
        data = event.fields()
        kind = event.type
        child = self._child
        child(self.events, kind).inc()
        plugin = str(data.get("plugin") or "")
        command = str(data.get("command") or "")
        if kind in _OUTCOMES:
            child(self.jobs, plugin, command, str(data.get("status") or kind[4:])).inc()
            self._duration(plugin, command, data)
            if plugin == "core.relay":
                child(self.relay, "sent", str(data.get("status"))).inc()
        elif kind == "job.retry_scheduled":
            child(self.retries, plugin, command).inc()
            self._duration(plugin, command, data)
        elif kind in ("job.enqueued", "router.enqueued"):
            source = _source(str(data.get("submitted_by") or ""), kind)
            child(self.enqueued, plugin, source).inc()
        elif kind == "webhook.delivery":
            # One event per delivery, whatever became of it (a delivery is not a job: it may
            # queue none, or find its job already queued).
            child(self.webhooks, str(data.get("path") or ""),
                  str(data.get("outcome") or "unknown")).inc()
        elif kind == "relay.delivery":
            # Not by peer: the receiver publishes refusals of names anyone can put in a URL.
            child(self.relay, "received", str(data.get("outcome") or "unknown")).inc()
        elif kind == "job.started":
            wait = data.get("wait_ms")
            if isinstance(wait, int):
                child(self.queue_wait, plugin).observe(wait / 1000)
        elif kind == "scheduler.scheduled":
            child(self.scheduled, plugin, "enqueued").inc()
        elif kind == "scheduler.skipped":
            child(self.scheduled, plugin, str(data.get("reason") or "skipped")).inc()
        elif kind == "scheduler.circuit_state_changed":
            state = BREAKER_VALUES.get(str(data.get("state")))
            if state is not None:
                child(self.breakers, plugin, command).set(state)
        elif kind in ("reload.swapped", "reload.kept"):
            child(self.reloads, kind[len("reload."):]).inc()
            if kind == "reload.kept":
                child(self.refusals, str(data.get("gate") or "unknown")).inc()
        elif kind == "subscriber.dropped":
            self.dropped.inc()

    def _duration(self, plugin: str, command: str, data: Mapping[str, Any]) -> None:
        duration = data.get("duration_ms")
        if isinstance(duration, int):
            self._child(self.duration, plugin, command).observe(duration / 1000)

    def set_breakers(self, states: Mapping[tuple[str, str], str]) -> None:
        """The breakers as the table holds them (at scrape: also those tripped before boot)."""
        for (plugin, command), state in states.items():
            value = BREAKER_VALUES.get(state)
            if value is not None:
                self._child(self.breakers, plugin, command).set(value)

    def render(self, *, queue_depth: int, running: int, subscribers: int) -> bytes:
        from prometheus_client import generate_latest

        self.queue_depth.set(queue_depth)
        self.running.set(running)
        self.subscribers.set(subscribers)
        return generate_latest(self.registry)


class _BackpressureCollector:
    """A custom collector: the counts live in `Backpressure`, which counts without
    prometheus_client (a refusal costs no label lookup on the hot path)."""

    def __init__(self, source: Backpressure) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        refusals = CounterMetricFamily(
            "ductile_backpressure_refusals",
            "New work refused at ingress because outstanding jobs were at a bound, by plane "
            "(api, webhook, relay, scheduler), plugin and bound (plugin or global).",
            labels=["plane", "plugin", "bound"])
        for (plane, plugin, bound), count in sorted(self._source.refused.items()):
            refusals.add_metric([plane, plugin, bound], count)
        yield refusals
        counter = self._source.counter
        total = GaugeMetricFamily(
            "ductile_jobs_outstanding",
            "Jobs queued or running: what service.max_outstanding_jobs bounds.")
        total.add_metric([], counter.total)
        yield total
        by_plugin = GaugeMetricFamily(
            "ductile_plugin_jobs_outstanding",
            "Jobs queued or running, per plugin (plugins with none are left out).",
            labels=["plugin"])
        for plugin, count in sorted(counter.by_plugin.items()):
            by_plugin.add_metric([plugin], count)
        yield by_plugin


def _source(submitted_by: str, kind: str) -> str:
    """How a job came, as a label of few values (submitted_by itself may name a peer or an
    endpoint; the scheduler's jobs carry the service name and count as "other")."""
    if kind == "router.enqueued":
        return "pipeline"
    head = submitted_by.split(":", 1)[0]
    return head if head in _SOURCES else "other"


_SOURCES = frozenset({"api", "webhook", "relay", "hook", "recovery"})
