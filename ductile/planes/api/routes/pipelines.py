"""`POST /pipeline/{name}`: start a pipeline run (asynchronous, or waiting for its tree).

Every answer names the run by one id, `run_id` (also `job_id`): the root of the run's job
tree, so `GET /job/{run_id}/tree` and `ductile job inspect` show every branch of it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request

from ductile.errors import BaggageError, ContextTooLarge, StoreError
from ductile.planes.api.bodies import BodyError
from ductile.planes.api.kit import ApiError, respond
from ductile.planes.api.openapi import Body, Operation, Param, ok, refused, throttled
from ductile.planes.api.schemas import PIPELINE_RUN, RUN_DONE, RUN_STARTED
from ductile.planes.api.pipelines import (
    enqueue_run,
    parse_pipeline_request,
    sync_limit,
    sync_view,
    wait_for_tree,
    wants_wait,
)

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation(
        "POST", "/pipeline/{name}", "start a pipeline run (or wait for its whole tree)",
        query=(Param("sync", description="true: wait for the run's tree (only the exact "
                                         "value true counts)"),
               Param("async", description="true: answer 202 at once (only the exact value "
                                          "true counts); both true: 400")),
        body=Body(PIPELINE_RUN),
        answers=(ok(200, "the run's tree once it settled", RUN_DONE),
                 ok(202, "started (or still running at its timeout)", RUN_STARTED),
                 refused(404, "pipeline not found"),
                 refused(413, "the run's baggage is over the context size limit"),
                 throttled(),
                 refused(503, "the queue could not be written, or no sync slot is free"))))
    @guarded("plugin:rw")
    async def run_pipeline(rt: Runtime, _p: Principal | None, name: str) -> Response:
        pipeline = rt.pipelines.pipelines.get(name)
        if pipeline is None:
            raise ApiError(404, f"pipeline {name!r} not found; ductile pipeline list shows "
                                "the configured ones")
        try:
            sync = wants_wait(pipeline.execution_mode, request.args)
            body = parse_pipeline_request(await request.get_data(as_text=False))
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None
        started = time.monotonic()
        try:
            run = await enqueue_run(rt, pipeline, body)
        except ContextTooLarge as exc:
            raise ApiError(413, "pipeline baggage exceeds maximum context size: the run's "
                                f"baggage would be {exc.actual} bytes as compact JSON, limit "
                                f"{exc.limit} bytes",
                           bytes_actual=exc.actual, bytes_limit=exc.limit) from None
        except BaggageError as exc:
            raise ApiError(400, f"root baggage claims failed: {exc}") from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, f"failed to enqueue pipeline {name!r}: {exc}; retry "
                                "later") from None
        # The run's status is its entry jobs' (a fanned-out run's root is done at once).
        first = run.entries[0] if run.entries else run.run
        accepted = {"job_id": run.run.id, "run_id": run.run.id, "status": first.status,
                    "plugin": "pipeline", "command": name,
                    "job_ids": [job.id for job in run.entries]}
        if not sync:
            return respond(accepted, 202)
        try:
            rt.sync_slots.acquire_nowait()
        except trio.WouldBlock:
            return respond({**accepted, "error": "too many concurrent synchronous requests; "
                                                 "poll GET /job/{id}/tree"}, 503)
        try:
            deadline = trio.current_time() + sync_limit(rt, pipeline)
            tree = await wait_for_tree(rt, ctx.completions, run.run.id, deadline, ctx.stopping)
        finally:
            rt.sync_slots.release()
        if tree is None:
            latest = await rt.queue.get(first.id) or first
            why = ("the gateway is stopping; the run continues after the next start"
                   if ctx.stopping() else "pipeline still running after its timeout")
            return respond({**accepted, "status": latest.status, "timeout_exceeded": True,
                            "message": f"{why}; poll GET /job/{run.run.id}/tree"}, 202)
        view = sync_view(pipeline, tree, int((time.monotonic() - started) * 1000))
        return respond({**view, "run_id": run.run.id})
