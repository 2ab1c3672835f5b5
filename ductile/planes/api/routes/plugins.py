"""`GET /plugins`, `GET /plugin/{name}`, `POST /plugin/{plugin}/{command}` (the Go route) and
`POST /plugins/{name}/run`. Both run routes take the same body (`payload`, `command`, `sync`,
`dedupe_key`; anything else is a 400) and answer it the same way, waiting when `sync` is true."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request

from ductile.errors import DedupeDropped, StoreError
from ductile.machines import job_statuses
from ductile.planes.api.bodies import (
    BodyError,
    RunRequest,
    event_payload,
    parse_enqueue_request,
    parse_run_request,
)
from ductile.planes.api.kit import ApiError, respond
from ductile.planes.api.openapi import Body, Operation, ok, refused, throttled
from ductile.planes.api.routes.jobs import job_view
from ductile.planes.api.schemas import JOB, PLUGIN_DETAIL, PLUGIN_LIST, RUN

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime
    from ductile.store.jobs import Job


#: What both run routes answer.
RUN_ANSWERS = (
    ok(200, "with sync: the job once it ended; or the job a dedupe key found", JOB),
    ok(202, "queued (with sync: still running after api.max_sync_timeout)", JOB),
    refused(409, "the dedupe key names a job that is gone"),
    throttled(),
    refused(503, "the queue could not be written, or no sync slot is free; retry later"),
)


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation("GET", "/plugins", "the loaded plugins and their commands",
                             answers=(ok(200, "sorted by name", PLUGIN_LIST),)))
    @guarded("auth")
    async def plugins(rt: Runtime, _p: Principal | None) -> Response:
        return respond({"plugins": [
            {"name": p.name, "version": p.manifest.version,
             "description": p.manifest.description,
             "commands": [c.name for c in p.manifest.commands]}
            for p in sorted(rt.plugins.values(), key=lambda p: p.name)
        ]})

    @guarded.route(Operation("GET", "/plugin/{plugin}", "one plugin's manifest",
                             answers=(ok(200, "the manifest's commands and schemas",
                                         PLUGIN_DETAIL),
                                      refused(404, "plugin not found"))))
    @guarded("plugin:catalog:ro")
    async def plugin_detail(rt: Runtime, _p: Principal | None, plugin: str) -> Response:
        found = rt.plugins.get(plugin)
        if found is None:
            raise ApiError(404, "plugin not found")
        return respond({
            "name": found.name, "version": found.manifest.version,
            "description": found.manifest.description, "protocol": found.manifest.protocol,
            "commands": [{"name": c.name, "type": c.type, "description": c.description,
                          "input_schema": c.input_schema, "output_schema": c.output_schema}
                         for c in found.manifest.commands],
        })

    @guarded.route(Operation(
        "POST", "/plugin/{plugin}/{command}", "enqueue one command (the Go route)",
        description="A command whose manifest type is not read also needs plugin:rw. "
                    "Unknown plugin or command: 400 (not 404), as in the Go gateway.",
        body=Body(RUN), answers=RUN_ANSWERS))
    @guarded("plugin:invoke:ro")
    async def enqueue_direct(rt: Runtime, principal: Principal, plugin: str,
                             command: str) -> Response:
        found = rt.plugins.get(plugin)
        if found is None:
            raise ApiError(400, "plugin not found")
        if not found.supports(command):
            raise ApiError(400, "command not supported by plugin")
        _require_command_scope(principal, found.command(command))
        try:
            run = parse_enqueue_request(await request.get_data(as_text=False))
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None
        if run.command is not None and run.command != command:
            raise ApiError(400, f"field command {run.command!r} disagrees with the route's "
                                f"command {command!r}; leave it out, or use "
                                f"POST /plugins/{plugin}/run to choose the command in the body")
        return await _answer(ctx, rt, plugin, command, run)

    @guarded.route(Operation(
        "POST", "/plugins/{name}/run", "enqueue a command (default handle, else poll)",
        description="A command whose manifest type is not read also needs plugin:rw.",
        body=Body(RUN), answers=(*RUN_ANSWERS, refused(404, "plugin not found"))))
    @guarded("plugin:invoke:ro")
    async def run_plugin(rt: Runtime, principal: Principal, name: str) -> Response:
        found = rt.plugins.get(name)
        if found is None:
            raise ApiError(404, f"plugin {name!r} not found; GET /plugins lists the loaded ones")
        try:
            run = parse_run_request(await request.get_data(as_text=False))
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None
        command = run.command or ("handle" if found.supports("handle") else "poll")
        if not found.supports(command):
            declared = ", ".join(c.name for c in found.manifest.commands)
            raise ApiError(400, f"command {command!r} not supported by plugin {name!r} "
                                f"(declared: {declared})")
        _require_command_scope(principal, found.command(command))
        return await _answer(ctx, rt, name, command, run)


async def _answer(ctx: ApiContext, rt: Runtime, plugin: str, command: str,
                  run: RunRequest) -> Response:
    """Enqueue (or find the deduplicated job) and answer: at once, or after the wait `sync`
    asks for. Both run routes end here, so one body gets one answer whichever route it took."""
    job, duplicate = await _enqueue(rt, plugin, command, run.payload, run.dedupe_key)
    if not run.sync:
        return respond(_accepted(job, duplicate), 200 if duplicate else 202)
    return await _run_sync(ctx, rt, job, duplicate)


async def _run_sync(ctx: ApiContext, rt: Runtime, job: Job, duplicate: bool) -> Response:
    """Wait for the job to end (up to api.max_sync_timeout), then answer with its view."""
    limit = rt.config.api.max_sync_timeout or math.inf
    deadline = trio.current_time() + limit
    try:
        rt.sync_slots.acquire_nowait()
    except trio.WouldBlock:
        return respond({"job_id": job.id, "status": job.status, "plugin": job.plugin,
                        "command": job.command,
                        "error": "too many concurrent synchronous requests; "
                                 "poll GET /job/{id}"}, 503)
    try:
        woken_while_stopping = False
        # A job this request has just enqueued is queued until the dispatcher ends an
        # attempt, and the end is remembered: the first read is needed only after one.
        fresh = not duplicate and job.status == "queued"
        while True:
            event = ctx.completions.register(job.id)
            if fresh and not ctx.completions.ended_recently(job.id):
                current = job
            else:
                current = await rt.queue.get(job.id)
            fresh = False
            if current is not None and current.status in job_statuses().terminal:
                ctx.completions.discard(job.id, event)
                view = await job_view(rt, current)
                if duplicate:
                    view["deduplicated"] = True
                return respond(view, 200)
            status = current.status if current is not None else job.status
            if ctx.stopping() and (status == "queued" or woken_while_stopping):
                ctx.completions.discard(job.id, event)
                return respond({"job_id": job.id, "status": status, "plugin": job.plugin,
                                "command": job.command,
                                "message": "the gateway is stopping; the job is kept and "
                                           "runs after the next start; poll GET /job/"
                                           + job.id}, 202)
            with trio.move_on_at(deadline) as scope:
                await event.wait()
            woken_while_stopping = ctx.stopping()
            if scope.cancelled_caught:
                ctx.completions.discard(job.id, event)
                latest = await rt.queue.get(job.id) or job
                return respond({"job_id": job.id, "status": latest.status,
                                "plugin": job.plugin, "command": job.command,
                                "timeout_exceeded": True,
                                "message": "job still running after api.max_sync_timeout; "
                                           "poll GET /job/" + job.id}, 202)
    finally:
        rt.sync_slots.release()


def _require_command_scope(principal: Principal, command: Any) -> None:
    """Running a command that is not declared `read` needs write access."""
    if command is not None and command.type != "read" and not principal.allows(["plugin:rw"]):
        raise ApiError(403, "insufficient scope")


async def _enqueue(rt: Runtime, plugin: str, command: str, payload: Any,
                   dedupe_key: str | None) -> tuple[Job, bool]:
    """Enqueue, or find the job a dedupe key points at; the flag says which happened."""
    try:
        payload = event_payload(command, payload)
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None
    max_attempts = rt.config.plugin(plugin).retry.max_attempts
    rt.admit("api", plugin)  # Overloaded: 429 with Retry-After (kit.py)
    try:
        job = await rt.queue.enqueue(
            plugin, command, payload, "api", max_attempts=max_attempts, dedupe_key=dedupe_key,
            # An explicit TTL also drops duplicates of a queued or running job.
            dedupe_ttl=rt.config.service.dedupe_ttl if dedupe_key else None,
        )
        return job, False
    except DedupeDropped as exc:
        existing = await rt.queue.get(exc.existing_job_id) if exc.existing_job_id else None
        if existing is None:
            raise ApiError(409, str(exc)) from None
        return existing, True
    except StoreError as exc:
        message = f"failed to enqueue job: {exc}; nothing was queued, retry later"
        raise ApiError(503, message) from None


def _accepted(job: Job, duplicate: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": job.id, "status": job.status, "plugin": job.plugin,
                            "command": job.command}
    if duplicate:
        body["deduplicated"] = True
    return body
