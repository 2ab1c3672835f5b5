"""The quart-trio application: routes, JSON errors, auth.

The app is built once per process and reads the current runtime generation at the start of each
request, so a reload swaps configuration under a running server without dropping a connection.
Every response is JSON, errors included (`{"error": "..."}`), also for 404, 405 and 413.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ductile import __version__
from ductile.errors import BaggageError, ContextTooLarge, DedupeDropped, StoreError
from ductile.planes.api.auth import AuthError, Principal, authenticate, require
from ductile.planes.api.bodies import (
    BodyError,
    event_payload,
    parse_enqueue_request,
    parse_json_object,
    parse_run_request,
)
from ductile.planes.api.logquery import parse_log_filter
from ductile.planes.api.pipelines import (
    enqueue_run,
    flat_tree,
    parse_pipeline_request,
    sync_limit,
    sync_view,
    wait_for_tree,
)
from ductile.planes.api.vault_routes import register_vault_routes
from ductile.planes.http import (
    PlaneApp,
    http_exception_response,
    no_redirects,
    refuse_unknown_http_versions,
    shown_path,
)
from ductile.store.joblog import LogFilter, log_view

if TYPE_CHECKING:
    from ductile.boot.runtime import Runtime
    from ductile.boot.supervisor import Supervisor
    from ductile.store.jobs import Job

TERMINAL = {"succeeded", "failed", "timed_out", "dead", "skipped"}

Handler = Callable[..., Coroutine[Any, Any, Response]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def create_app(supervisor: Supervisor) -> QuartTrio:
    app = PlaneApp("ductile")
    no_redirects(app)
    app.config["MAX_CONTENT_LENGTH"] = supervisor.current.config.api.max_body_size
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    log = supervisor.proc.log.child("api")

    def respond(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body, default=str) + "\n", status=status,
                        content_type="application/json")

    def guarded(*scopes: str) -> Callable[[Handler], Handler]:
        """Authenticate (when `scopes` is non-empty or "auth") and map errors to JSON."""

        def decorate(handler: Handler) -> Handler:
            @wraps(handler)
            async def wrapper(*args: Any, **kwargs: Any) -> Response:
                rt = supervisor.current
                try:
                    principal = None
                    if scopes:
                        principal = authenticate(request.headers.get("Authorization"),
                                                 rt.api_tokens)
                        if scopes != ("auth",):
                            require(principal, scopes)
                    return await handler(rt, principal, *args, **kwargs)
                except AuthError as exc:
                    return respond({"error": exc.message}, exc.status)
                except ApiError as exc:
                    return respond({"error": exc.message, **exc.extra}, exc.status)

            return wrapper

        return decorate

    @app.before_request
    async def read_body_first() -> None:
        """Read every request body before any handler can answer early (401, 404, ...).

        hypercorn 0.18 with quart-trio can leave a keep-alive connection hanging when a response
        is sent before the request body was consumed; the next request on it never gets an
        answer. Reading the body (capped by MAX_CONTENT_LENGTH, 413 beyond) avoids that.
        """
        supervisor.http_inflight += 1
        await request.get_data(cache=True)

    # After the body was read (and counted in flight): see refuse_unknown_http_versions.
    refuse_unknown_http_versions(app)

    @app.teardown_request
    async def count_done(_exc: BaseException | None) -> None:
        supervisor.http_inflight -= 1

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        path = shown_path(request.path)
        messages = {
            404: f"no route for {request.method} {path}; see GET / for the route list",
            405: f"method {request.method} not allowed on {path}",
            413: "request body too large (limit "
                 f"{app.config['MAX_CONTENT_LENGTH']} bytes)",
        }
        code = exc.code or 500
        return http_exception_response(exc, messages.get(code, exc.description or exc.name))

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("unhandled API error", path=request.path, error=f"{type(exc).__name__}: {exc}")
        return respond({"error": "internal error; see the gateway log"}, 500)

    async def audit(event: Any) -> None:
        if supervisor.proc.audit is not None:
            await supervisor.proc.audit(event)

    # The vault admin routes: authenticated by the vault admin token only, never an API token.
    register_vault_routes(app, lambda: supervisor.current.vault_owner, audit)

    @app.route("/", methods=["GET"])
    @guarded()
    async def index(rt: Runtime, _p: Principal | None) -> Response:
        return respond({
            "name": "Ductile Gateway",
            "description": "Lightweight, open-source integration engine for the agentic era.",
            "version": __version__,
            "uptime_seconds": _uptime(supervisor),
            "discovery": {"health": "/healthz", "plugins": "/plugins", "jobs": "/jobs",
                          "run": "/plugins/{name}/run", "enqueue": "/plugin/{plugin}/{command}",
                          "pipeline": "/pipeline/{name}", "tree": "/job/{id}/tree",
                          "scheduler": "/scheduler/jobs"},
        })

    @app.route("/healthz", methods=["GET"])
    @guarded()
    async def healthz(rt: Runtime, _p: Principal | None) -> Response:
        from ductile.schedule.views import open_circuit_count

        try:
            depth = await rt.queue.queue_depth()
            assert supervisor.proc.db is not None
            circuits_open = await supervisor.proc.db.read(open_circuit_count)
        except StoreError:
            raise ApiError(503, "failed to compute queue depth") from None
        return respond({
            "status": "ok",
            "uptime_seconds": _uptime(supervisor),
            "queue_depth": depth,
            "plugins_loaded": len(rt.plugins),
            "plugins_circuit_open": circuits_open,
            "posture": rt.posture,
            "version": __version__,
            "config_path": rt.config.config_path,
            "binary_path": os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "",
            "generation": rt.generation,
            "snapshot_id": rt.snapshot_id,
        })

    @app.route("/plugins", methods=["GET"])
    @guarded("auth")
    async def plugins(rt: Runtime, _p: Principal | None) -> Response:
        return respond({"plugins": [
            {"name": p.name, "version": p.manifest.version,
             "description": p.manifest.description,
             "commands": [c.name for c in p.manifest.commands]}
            for p in sorted(rt.plugins.values(), key=lambda p: p.name)
        ]})

    @app.route("/plugin/<plugin>", methods=["GET"])
    @guarded("plugin:ro", "plugin:rw")
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

    @app.route("/plugin/<plugin>/<command>", methods=["POST"])
    @guarded("plugin:ro", "plugin:rw")
    async def enqueue_direct(rt: Runtime, principal: Principal, plugin: str,
                             command: str) -> Response:
        found = rt.plugins.get(plugin)
        if found is None:
            raise ApiError(400, "plugin not found")
        if not found.supports(command):
            raise ApiError(400, "command not supported by plugin")
        _require_command_scope(principal, found.command(command))
        try:
            body = parse_enqueue_request(await request.get_data(as_text=False))
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None
        job, duplicate = await _enqueue(rt, plugin, command, body.payload, body.dedupe_key)
        return respond(_accepted(job, duplicate), 200 if duplicate else 202)

    @app.route("/plugins/<name>/run", methods=["POST"])
    @guarded("plugin:ro", "plugin:rw")
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
        job, duplicate = await _enqueue(rt, name, command, run.payload, run.dedupe_key)
        if not run.sync:
            return respond(_accepted(job, duplicate), 200 if duplicate else 202)
        return await _run_sync(rt, job, duplicate)

    async def _run_sync(rt: Runtime, job: Job, duplicate: bool) -> Response:
        limit = rt.config.api.max_sync_timeout or math.inf
        deadline = trio.current_time() + limit
        completions = supervisor.proc.completions
        try:
            rt.sync_slots.acquire_nowait()
        except trio.WouldBlock:
            return respond({"job_id": job.id, "status": job.status, "plugin": job.plugin,
                            "command": job.command,
                            "error": "too many concurrent synchronous requests; "
                                     "poll GET /job/{id}"}, 503)
        try:
            woken_while_stopping = False
            while True:
                event = completions.register(job.id)
                current = await rt.queue.get(job.id)
                if current is not None and current.status in TERMINAL:
                    completions.discard(job.id, event)
                    view = await _job_view(rt, current)
                    if duplicate:
                        view["deduplicated"] = True
                    return respond(view, 200)
                status = current.status if current is not None else job.status
                if supervisor.stopping and (status == "queued" or woken_while_stopping):
                    completions.discard(job.id, event)
                    return respond({"job_id": job.id, "status": status, "plugin": job.plugin,
                                    "command": job.command,
                                    "message": "the gateway is stopping; the job is kept and "
                                               "runs after the next start; poll GET /job/"
                                               + job.id}, 202)
                with trio.move_on_at(deadline) as scope:
                    await event.wait()
                woken_while_stopping = supervisor.stopping
                if scope.cancelled_caught:
                    completions.discard(job.id, event)
                    latest = await rt.queue.get(job.id) or job
                    return respond({"job_id": job.id, "status": latest.status,
                                    "plugin": job.plugin, "command": job.command,
                                    "timeout_exceeded": True,
                                    "message": "job still running after api.max_sync_timeout; "
                                               "poll GET /job/" + job.id}, 202)
        finally:
            rt.sync_slots.release()

    @app.route("/job/<job_id>", methods=["GET"])
    @guarded("jobs:ro", "jobs:rw")
    async def get_job(rt: Runtime, _p: Principal | None, job_id: str) -> Response:
        job = await rt.queue.get(job_id)
        if job is None:
            raise ApiError(404, "job not found")
        return respond(await _job_view(rt, job))

    @app.route("/job/<job_id>/tree", methods=["GET"])
    @guarded("jobs:ro", "jobs:rw")
    async def get_job_tree(rt: Runtime, _p: Principal | None, job_id: str) -> Response:
        tree = await rt.queue.tree(job_id)
        if tree is None:
            raise ApiError(404, "job not found")
        return respond(flat_tree(tree))

    @app.route("/pipeline/<name>", methods=["POST"])
    @guarded("plugin:rw")
    async def run_pipeline(rt: Runtime, _p: Principal | None, name: str) -> Response:
        pipeline = rt.pipelines.pipelines.get(name)
        if pipeline is None:
            raise ApiError(404, f"pipeline {name!r} not found; ductile pipeline list shows "
                                "the configured ones")
        try:
            body = parse_pipeline_request(await request.get_data(as_text=False))
        except BodyError as exc:
            raise ApiError(400, str(exc)) from None
        sync = (pipeline.execution_mode == "synchronous"
                and request.args.get("async") != "true")
        started = time.monotonic()
        try:
            jobs = await enqueue_run(rt, pipeline, body, single_entry=sync)
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
        first = jobs[0]
        accepted = {"job_id": first.id, "status": first.status, "plugin": "pipeline",
                    "command": name, "job_ids": [job.id for job in jobs]}
        if not sync:
            return respond(accepted, 202)
        try:
            rt.sync_slots.acquire_nowait()
        except trio.WouldBlock:
            return respond({**accepted, "error": "too many concurrent synchronous requests; "
                                                 "poll GET /job/{id}/tree"}, 503)
        try:
            deadline = trio.current_time() + sync_limit(rt, pipeline)
            tree = await wait_for_tree(rt, supervisor.proc.completions, first.id, deadline,
                                      lambda: supervisor.stopping)
        finally:
            rt.sync_slots.release()
        if tree is None:
            latest = await rt.queue.get(first.id) or first
            why = ("the gateway is stopping; the run continues after the next start"
                   if supervisor.stopping else "pipeline still running after its timeout")
            return respond({**accepted, "status": latest.status, "timeout_exceeded": True,
                            "message": f"{why}; poll GET /job/{first.id}/tree"}, 202)
        return respond(sync_view(pipeline, tree, int((time.monotonic() - started) * 1000)))

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

    @app.route("/scheduler/jobs", methods=["GET"])
    @guarded("jobs:ro")
    async def scheduler_jobs(rt: Runtime, _p: Principal | None) -> Response:
        """Every schedule of an enabled plugin with its next run, paused flag and breaker."""
        from ductile.schedule.views import scheduler_jobs as listing
        from ductile.store.jobs import utcnow

        assert supervisor.proc.db is not None
        boot = supervisor.scheduler.boot if supervisor.scheduler is not None else None
        try:
            body = await supervisor.proc.db.read(
                lambda conn: listing(conn, rt.config, now=utcnow(), boot=boot or utcnow()))
        except StoreError as exc:
            raise ApiError(503, f"cannot read schedule state: {exc}") from None
        return respond(body)

    @app.route("/scheduler/<any(pause, resume):action>", methods=["POST"])
    @guarded("system:rw")
    async def scheduler_control(rt: Runtime, _p: Principal | None, action: str) -> Response:
        """Pause or resume schedules (`{"target": "plugin[/id]"}`, absent: all), persisted, and
        wake the scheduler so a resume fires without waiting for its next tick."""
        from ductile.errors import UnknownSchedule
        from ductile.schedule import control
        from ductile.store.jobs import utcnow_text

        raw = await request.get_data(cache=True)
        try:
            # An empty body means every schedule; a body that does not parse must never.
            body = parse_json_object(raw) or {}
        except BodyError as exc:
            raise ApiError(400, f'{exc}; send {{"target": "plugin[/schedule_id]"}} or an empty '
                                "body") from None
        if not isinstance(body.get("target", ""), (str, type(None))):
            raise ApiError(400, 'field target must be a string "plugin[/schedule_id]" (or '
                                "absent: every schedule)")
        target = body.get("target")
        change = control.pause if action == "pause" else control.resume
        assert supervisor.proc.db is not None
        try:
            entries = await supervisor.proc.db.write(
                lambda conn: change(conn, rt.config, target, utcnow_text()))
        except UnknownSchedule as exc:
            raise ApiError(404, str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, f"cannot write schedule state: {exc}") from None
        if supervisor.scheduler is not None:
            supervisor.scheduler.wake()
        key = "paused" if action == "pause" else "resumed"
        return respond({key: [e.as_dict() for e in entries]})

    @app.route("/system/reload", methods=["POST"])
    @guarded("system:rw")
    async def reload(rt: Runtime, _p: Principal | None) -> Response:
        # Shielded: a client that disconnects must not abandon a half-built generation.
        with trio.CancelScope(shield=True):
            result = await supervisor.reload("api")
        if not result.ok:
            return respond({"error": result.message, "gate": result.gate}, 409)
        return respond({"status": "ok", "message": result.message,
                        "reloaded_at": result.reloaded_at.isoformat().replace("+00:00", "Z")
                        if result.reloaded_at else None,
                        "snapshot_id": result.snapshot_id})

    return app


def _uptime(supervisor: Supervisor) -> int:
    """Seconds since the process started serving (a reload does not reset it)."""
    return int(time.monotonic() - supervisor.started_monotonic)


def _log_filter(args: Any) -> LogFilter:
    try:
        return parse_log_filter(args)
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None


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


def _job_summary(job: Job) -> dict[str, Any]:
    out = {"job_id": job.id, "plugin": job.plugin, "command": job.command,
           "status": job.status, "created_at": job.created_at, "attempt": job.attempt}
    if job.started_at:
        out["started_at"] = job.started_at
    if job.completed_at:
        out["completed_at"] = job.completed_at
    return out


async def _job_view(rt: Runtime, job: Job) -> dict[str, Any]:
    result: str | None = None
    if job.status in TERMINAL:
        entries = await rt.queue.log_entries(job.id)
        if entries:
            result = entries[-1].result
    return job.to_api(result=result)
