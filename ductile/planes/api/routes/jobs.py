"""`GET /job/{id}`, `GET /job/{id}/tree`, `GET /jobs` and `GET /job-logs`: the ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response, request

from ductile.machines import job_statuses
from ductile.planes.api.bodies import BodyError
from ductile.planes.api.kit import ApiError, respond
from ductile.planes.api.logquery import parse_log_filter
from ductile.planes.api.pipelines import flat_tree
from ductile.store.joblog import LogFilter, log_view

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime
    from ductile.store.jobs import Job


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @app.route("/job/<job_id>", methods=["GET"])
    @guarded("jobs:ro", "jobs:rw")
    async def get_job(rt: Runtime, _p: Principal | None, job_id: str) -> Response:
        job = await rt.queue.get(job_id)
        if job is None:
            raise ApiError(404, "job not found")
        return respond(await job_view(rt, job))

    @app.route("/job/<job_id>/tree", methods=["GET"])
    @guarded("jobs:ro", "jobs:rw")
    async def get_job_tree(rt: Runtime, _p: Principal | None, job_id: str) -> Response:
        tree = await rt.queue.tree(job_id)
        if tree is None:
            raise ApiError(404, "job not found")
        return respond(flat_tree(tree))

    @app.route("/jobs", methods=["GET"])
    @guarded("jobs:ro", "jobs:rw")
    async def list_jobs(rt: Runtime, _p: Principal | None) -> Response:
        where = _log_filter(request.args)
        jobs, total = await rt.queue.list(plugin=where.plugin, command=where.command,
                                          status=where.status, limit=where.limit)
        return respond({"jobs": [_job_summary(j) for j in jobs], "total": total})

    @app.route("/job-logs", methods=["GET"])
    @guarded("jobs:ro", "jobs:rw")
    async def job_logs(rt: Runtime, _p: Principal | None) -> Response:
        where = _log_filter(request.args)
        include = request.args.get("include_result", "").lower() == "true"
        entries, total = await rt.queue.search_logs(where)
        return respond({"logs": [log_view(e, include_result=include) for e in entries],
                        "total": total})


async def job_view(rt: Runtime, job: Job) -> dict[str, Any]:
    """The body of `GET /job/{id}`: the row, and the terminal attempt's result once ended."""
    result: str | None = None
    if job.status in job_statuses().terminal:
        entries = await rt.queue.log_entries(job.id)
        if entries:
            result = entries[-1].result
    return job.to_api(result=result)


def _log_filter(args: Any) -> LogFilter:
    try:
        return parse_log_filter(args)
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None


def _job_summary(job: Job) -> dict[str, Any]:
    out = {"job_id": job.id, "plugin": job.plugin, "command": job.command,
           "status": job.status, "created_at": job.created_at, "attempt": job.attempt}
    if job.started_at:
        out["started_at"] = job.started_at
    if job.completed_at:
        out["completed_at"] = job.completed_at
    return out
