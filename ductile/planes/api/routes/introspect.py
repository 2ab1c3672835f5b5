"""Introspection: `GET /config/view`, `GET /topology`, `GET /stopwatch/{plugin}`,
`GET /analytics/summary` and `GET /analytics/queue`.

Read-only views of the serving generation and the ledger, with the Go original's scopes:
`system:ro` (or `system:rw`) for the config and the topology, `jobs:status:ro` (held by
`jobs:ro` and `jobs:rw` too) for the figures. The config is shown the way `ductile config
show` shows it (`config/view.py`), then redacted; the figures are indexed reads in one
snapshot (`store/analytics.py`), run through the runtime's backend (`rt.backend.analytics`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request

from ductile.errors import StoreError
from ductile.planes.api.kit import ApiError, respond
from ductile.planes.api.openapi import (
    INTEGER,
    NULLABLE_STRING,
    STRING,
    Operation,
    Param,
    array,
    obj,
    ok,
    refused,
)
from ductile.planes.api.topology import compiled_routes, topology
from ductile.store import analytics

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime


NULLABLE_NUMBER: dict[str, Any] = {"type": ["number", "null"]}
LINK = obj(("plugin", "command"), plugin=STRING, command=STRING)
SIGNAL_LINK = obj(("signal", "command"), signal=STRING, command=STRING)
CONFIG_VIEW = obj(("compiled_routes",), compiled_routes=obj())
TOPOLOGY = obj(("version", "captured_at", "plugins", "signals"), version=STRING,
               captured_at=STRING,
               plugins=array(obj(("name", "version", "active", "inputs", "outputs"),
                                 name=STRING, version=STRING, active={"type": "boolean"},
                                 inputs=array(SIGNAL_LINK), outputs=array(SIGNAL_LINK))),
               signals=array(obj(("name", "producers", "consumers"), name=STRING,
                                 producers=array(LINK), consumers=array(LINK))),
               pipelines=array(obj()), webhooks=array(obj()), schedules=array(obj()),
               relay=obj())
STOPWATCH = obj(("plugin", "window", "captured_at", "steps"), plugin=STRING, window=STRING,
                captured_at=STRING, steps=array(obj(
                    ("step", "sample_count", "p50_ms", "p95_ms", "p99_ms", "max_ms", "last_ms",
                     "trend_p95_ms"),
                    step=STRING, sample_count=INTEGER, p50_ms=INTEGER, p95_ms=INTEGER,
                    p99_ms=INTEGER, max_ms=INTEGER, last_ms=INTEGER, last_at=STRING,
                    trend_p95_ms=array({"type": ["integer", "null"]}))))
COUNTS = {"type": "object", "additionalProperties": INTEGER}
SUMMARY = obj(("window", "stats"), window=STRING, captured_at=STRING, stats=COUNTS,
              by_plugin={"type": "object", "additionalProperties": COUNTS}, last_hour=COUNTS)
QUEUE = obj(("queue_depth", "running_count", "delayed_count", "dead_count"),
            queue_depth=INTEGER, running_count=INTEGER, delayed_count=INTEGER,
            dead_count=INTEGER, captured_at=STRING, by_status=COUNTS,
            oldest_queued_at=NULLABLE_STRING, oldest_queued_age_seconds=NULLABLE_NUMBER,
            queue_wait_ms=obj(("window", "samples", "p50", "p95"), window=STRING,
                              samples=INTEGER, p50=NULLABLE_NUMBER, p95=NULLABLE_NUMBER),
            throughput_last_hour=INTEGER,
            active_jobs=array(obj(("job_id", "plugin", "command"), job_id=STRING,
                                  plugin=STRING, command=STRING, started_at=NULLABLE_STRING)),
            plugin_lanes=array(obj(("plugin", "active_count"), plugin=STRING,
                                   active_count=INTEGER, queued_count=INTEGER)))
WINDOW = Param("window", {"type": "string", "enum": sorted(analytics.STOPWATCH_WINDOWS)},
               "how far back to look (default 1h)")
LEDGER_DOWN = refused(503, "the job ledger cannot be read right now")


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation(
        "GET", "/config/view", "the merged config with defaults, secrets redacted, and each "
        "pipeline's compiled routes", answers=(ok(200, "the config", CONFIG_VIEW),)))
    @guarded("system:ro")
    async def config_view(rt: Runtime, _p: Principal | None) -> Response:
        from ductile.config.view import redacted_view

        # Off the event loop: the view re-reads every source file's text (kept in memory).
        view = await trio.to_thread.run_sync(redacted_view, rt.config)
        return respond({**view, "compiled_routes": compiled_routes(rt.pipelines)})

    @guarded.route(Operation(
        "GET", "/topology", "plugins and the signals that connect them, with pipelines, "
        "webhooks, schedules and relay peers", answers=(ok(200, "the wiring", TOPOLOGY),)))
    @guarded("system:ro")
    async def get_topology(rt: Runtime, _p: Principal | None) -> Response:
        return respond(topology(rt, _stamp(_now())))

    @guarded.route(Operation(
        "GET", "/stopwatch/{plugin}", "how long one plugin's attempts ran, per command",
        description="Durations only: no result-class field (result, last_error, stderr), so "
                    "it needs no jobs:result:ro; this gateway keeps no sub-spans, the part "
                    "the Go gateway hides without that scope.",
        query=(WINDOW,), answers=(ok(200, "the durations", STOPWATCH),
                                  refused(400, "the window is not 5m, 1h or 24h"),
                                  refused(404, "no such plugin and no attempts"),
                                  LEDGER_DOWN)))
    @guarded("jobs:status:ro")
    async def stopwatch(rt: Runtime, _p: Principal | None, plugin: str) -> Response:
        window = request.args.get("window", "1h")
        seconds = analytics.STOPWATCH_WINDOWS.get(window)
        if seconds is None:
            raise ApiError(400, f"invalid window {window!r} (use 5m, 1h, or 24h)")
        now = _now()
        since = now - timedelta(seconds=seconds)
        # Percentiles are computed in the reader's thread too: a busy plugin has many samples.
        durations = rt.backend.analytics.attempt_durations
        steps = await _read(ctx, lambda conn: analytics.stopwatch_steps(
            durations(conn, plugin, since), since, seconds))
        if not steps and plugin not in rt.plugins:
            raise ApiError(404, f"plugin {plugin!r} not found and no attempts in the last "
                                f"{window}; see GET /plugins")
        return respond({"plugin": plugin, "window": window, "captured_at": _stamp(now),
                        "steps": steps})

    @guarded.route(Operation(
        "GET", "/analytics/summary", "terminal attempts of the last 24 hours by status and "
        "plugin", answers=(ok(200, "the counts", SUMMARY), LEDGER_DOWN)))
    @guarded("jobs:status:ro")
    async def summary(rt: Runtime, _p: Principal | None) -> Response:
        now = _now()
        sql = rt.backend.analytics

        def figures(conn: Any) -> dict[str, Any]:
            return {"window": "24h", "captured_at": _stamp(now),
                    "stats": sql.status_counts(conn, now),
                    "by_plugin": sql.plugin_status_counts(conn, now),
                    "last_hour": sql.status_counts(conn, now, analytics.RECENT_WINDOW)}

        return respond(await _read(ctx, figures))

    @guarded.route(Operation(
        "GET", "/analytics/queue", "the queue now: depth, running, delayed, waits, "
        "throughput", answers=(ok(200, "the figures", QUEUE), LEDGER_DOWN)))
    @guarded("jobs:status:ro")
    async def queue(rt: Runtime, _p: Principal | None) -> Response:
        now = _now()
        q = await _read(ctx, lambda conn: rt.backend.analytics.queue_figures(conn, now))
        body: dict[str, Any] = {
            "queue_depth": q.by_status.get("queued", 0),
            "running_count": q.by_status.get("running", 0),
            "delayed_count": q.delayed,
            "dead_count": q.by_status.get("dead", 0),
            "captured_at": _stamp(now),
            "by_status": q.by_status,
            "oldest_queued_at": q.oldest_queued_at,
            "oldest_queued_age_seconds": None if q.oldest_queued_at is None else round(
                (now - _parse(q.oldest_queued_at)).total_seconds(), 3),
            "queue_wait_ms": {"window": "1h", "samples": len(q.wait_ms),
                              "p50": _rounded(analytics.nearest_rank(q.wait_ms, 50)),
                              "p95": _rounded(analytics.nearest_rank(q.wait_ms, 95))},
            "throughput_last_hour": q.completed_last_hour,
        }
        # As the original: the two lists are left out when empty.
        if q.running:
            body["active_jobs"] = q.running
        lanes = [{"plugin": name, "active_count": counts["running"],
                  "queued_count": counts["queued"]}
                 for name, counts in q.active_by_plugin.items()]
        if lanes:
            body["plugin_lanes"] = lanes
        return respond(body)


async def _read(ctx: ApiContext, fn: Any) -> Any:
    try:
        return await ctx.read(fn)
    except StoreError:
        raise ApiError(503, "the job ledger cannot be read right now; retry later") from None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    from ductile.store.jobs import parse_time

    return parse_time(text)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
