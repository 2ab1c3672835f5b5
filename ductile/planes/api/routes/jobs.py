"""`GET /job/{id}`, `GET /job/{id}/tree`, `GET /jobs` and `GET /job-logs`: the ledger; and the
operator's verbs `POST /job/{id}/cancel`, `/retry` and `/rerun` (planes/api/jobverbs.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response, request

from ductile.machines import job_statuses
from ductile.planes.api import jobverbs
from ductile.planes.api.bodies import BodyError
from ductile.planes.api.kit import ApiError, respond
from ductile.planes.api.logquery import parse_log_filter
from ductile.planes.api.openapi import Body, Operation, ok, refused, throttled
from ductile.planes.api.pipelines import flat_tree
from ductile.planes.api.resultscope import RESULT_SCOPE, RULE, TREE_FIELDS, may_see_results, \
    strip_result_class
from ductile.planes.api.schemas import (CANCEL, JOB, JOB_LIST, JOB_QUERY, LOG_QUERY, LOGS,
                                        NO_FIELDS, RUN_STARTED, TREE)
from ductile.store.joblog import LogFilter, log_view

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime
    from ductile.store.jobs import Job


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation("GET", "/job/{job_id}", "one job, its result once ended, its links",
                             description=f"{RULE}.",
                             answers=(ok(200, "the job", JOB), refused(404, "job not found"))))
    @guarded("jobs:status:ro")
    async def get_job(rt: Runtime, principal: Principal | None, job_id: str) -> Response:
        job = await rt.queue.get(job_id)
        if job is None:
            raise ApiError(404, "job not found")
        return respond(strip_result_class(await job_view(rt, job), principal))

    @guarded.route(Operation("GET", "/job/{job_id}/tree",
                             "the job and every job routed from it, parents first",
                             description=f"{RULE}; so is each node's baggage (values the "
                                         "run claimed from its steps' output).",
                             answers=(ok(200, "a flat list", TREE),
                                      refused(404, "job not found"))))
    @guarded("jobs:tree:ro")
    async def get_job_tree(rt: Runtime, principal: Principal | None, job_id: str) -> Response:
        tree = await rt.queue.tree(job_id)
        if tree is None:
            raise ApiError(404, "job not found")
        return respond([strip_result_class(node, principal, TREE_FIELDS)
                        for node in flat_tree(tree)])

    @guarded.route(Operation("GET", "/jobs", "the ledger, newest first", query=JOB_QUERY,
                             description="Shows no result-class field (result, last_error, "
                                         f"stderr), so it needs no {RESULT_SCOPE}.",
                             answers=(ok(200, "the jobs and how many match", JOB_LIST),
                                      refused(400, "a query parameter is not valid"))))
    @guarded("jobs:status:ro")
    async def list_jobs(rt: Runtime, _p: Principal | None) -> Response:
        where = _log_filter(request.args)
        jobs, total = await rt.queue.list(plugin=where.plugin, command=where.command,
                                          status=where.status, limit=where.limit)
        return respond({"jobs": [_job_summary(j) for j in jobs], "total": total})

    @guarded.route(Operation(
        "POST", "/job/{job_id}/cancel", "stop a queued or running job", body=Body(CANCEL),
        answers=(ok(200, "the job, cancelled (or already ended)", JOB),
                 ok(202, "the stop is under way", JOB), refused(404, "job not found"),
                 refused(409, "the job cannot be cancelled now"))))
    @guarded("jobs:rw")
    async def cancel_job(rt: Runtime, principal: Principal | None, job_id: str) -> Response:
        reason = jobverbs.cancel_reason(await _verb_body("cancel"))
        answer = await jobverbs.cancel(rt, ctx.completions, ctx.cancel_running, job_id, reason)
        ctx.log.info("job cancelled", job_id=job_id, status=answer.body.get("status"),
                     reason=reason, token=principal.name if principal else None)
        return respond(answer.body, answer.status)

    @guarded.route(Operation(
        "POST", "/job/{job_id}/retry", "enqueue a failed, timed-out, dead or cancelled job again",
        body=Body(NO_FIELDS),
        answers=(ok(202, "the new job", JOB), refused(404, "job not found"),
                 refused(409, "the job is not in a state that can be retried"),
                 throttled())))
    @guarded("jobs:rw")
    async def retry_job(rt: Runtime, principal: Principal | None, job_id: str) -> Response:
        await _verb_body("retry")
        answer = await jobverbs.retry(rt, job_id)
        ctx.log.info("job retried", job_id=job_id, new_job_id=answer.body["job_id"],
                     token=principal.name if principal else None)
        return respond(answer.body, answer.status)

    @guarded.route(Operation(
        "POST", "/job/{job_id}/rerun", "start a finished pipeline run again",
        body=Body(NO_FIELDS),
        answers=(ok(202, "the new run", RUN_STARTED), refused(404, "job not found"),
                 refused(409, "not a finished run root"), throttled())))
    @guarded("jobs:rw")
    async def rerun_run(rt: Runtime, principal: Principal | None, job_id: str) -> Response:
        await _verb_body("rerun")
        answer = await jobverbs.rerun(rt, job_id)
        ctx.log.info("pipeline run rerun", job_id=job_id, job_ids=answer.body["job_ids"],
                     token=principal.name if principal else None)
        return respond(answer.body, answer.status)

    @guarded.route(Operation("GET", "/job-logs", "terminal attempts, newest first",
                             query=LOG_QUERY,
                             description=f"{RULE}; `query` searches those fields, so it "
                                         f"needs {RESULT_SCOPE} too (403 without it).",
                             answers=(ok(200, "the attempts and how many match", LOGS),
                                      refused(400, "a query parameter is not valid"))))
    @guarded("jobs:logs:ro")
    async def job_logs(rt: Runtime, principal: Principal | None) -> Response:
        where = _log_filter(request.args)
        if where.query and not may_see_results(principal):
            # A text search over hidden fields would tell, match by match, what they say.
            raise ApiError(403, f"insufficient scope: query searches last_error, stderr and "
                                f"result, which need {RESULT_SCOPE} (or jobs:ro, jobs:rw, *); "
                                "drop query or use a token that holds it")
        include = request.args.get("include_result", "").lower() == "true"
        entries, total = await rt.queue.search_logs(where)
        return respond({"logs": [strip_result_class(log_view(e, include_result=include),
                                                    principal) for e in entries],
                        "total": total})


async def job_view(rt: Runtime, job: Job) -> dict[str, Any]:
    """The body of `GET /job/{id}`: the row, the terminal attempt's result once ended, and the
    retry and rerun links both ways (`retry_of`/`retried_as`, `rerun_of`/`rerun_as`)."""
    result: str | None = None
    if job.status in job_statuses().terminal:
        entries = await rt.queue.log_entries(job.id)
        if entries:
            result = entries[-1].result
    return {**job.to_api(result=result), **(await rt.queue.links(job)).as_dict()}


async def _verb_body(verb: str) -> jobverbs.VerbRequest:
    try:
        return jobverbs.parse_verb_body(await request.get_data(as_text=False), verb)
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None


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
