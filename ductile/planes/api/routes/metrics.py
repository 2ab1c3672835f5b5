"""`GET /metrics`: the gateway's metrics in the Prometheus text format (docs/operator.md,
"Metrics").

Counters and histograms are fed by the event hub as things happen (events/metrics.py); what is
a state is read now: the queue depth (one COUNT), the jobs running in this process, the event
subscribers, and the circuit breakers as the table holds them. Needs the scope `metrics:ro` (or
`*`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response

from ductile.planes.api.kit import ApiError
from ductile.planes.api.openapi import Operation, ok, refused

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation(
        "GET", "/metrics", "the gateway's metrics, in the Prometheus text format",
        description="Metric names and labels: docs/operator.md, section Metrics.",
        answers=(ok(200, "Prometheus text exposition format 0.0.4", {"type": "string"},
                    media_type="text/plain"),
                 refused(503, "metrics are not collected yet"))))
    @guarded("metrics:ro")
    async def metrics(rt: Runtime, _p: Principal | None) -> Response:
        collected = ctx.metrics()
        if collected is None:
            raise ApiError(503, "metrics are not collected yet; retry in a moment")
        depth = await rt.queue.queue_depth()
        breakers = await ctx.read(rt.backend.breakers.fetch_breakers)
        collected.set_breakers({(b.plugin, b.command): b.state for b in breakers})
        body = collected.render(queue_depth=depth, running=ctx.running(),
                                subscribers=ctx.events.subscribers if ctx.events else 0)
        from ductile.events.metrics import TEXT_FORMAT

        return Response(body, status=200, content_type=TEXT_FORMAT)
