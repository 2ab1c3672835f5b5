"""`GET /scheduler/jobs`, `POST /scheduler/pause|resume` and `POST /scheduler/run` (fire one
schedule now). The control routes need `system:rw`: they are the operator's hold on the
scheduler, as `ductile system scheduler` is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response, request

from ductile.errors import StoreError
from ductile.planes.api.bodies import BodyError, parse_json_object
from ductile.planes.api.kit import ApiError, respond
from ductile.planes.api.openapi import Body, Operation, Param, ok, refused, throttled
from ductile.planes.api.schemas import SCHEDULE_CHANGED, SCHEDULE_RUN, SCHEDULE_TARGET, SCHEDULES

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation("GET", "/scheduler/jobs",
                             "every schedule with its next run, paused flag and breaker",
                             answers=(ok(200, "the schedules", SCHEDULES),
                                      refused(503, "schedule state could not be read"))))
    @guarded("jobs:status:ro")
    async def scheduler_jobs(rt: Runtime, _p: Principal | None) -> Response:
        """Every schedule of an enabled plugin with its next run, paused flag and breaker."""
        from ductile.schedule.views import scheduler_jobs as listing
        from ductile.store.jobs import utcnow

        boot = ctx.scheduler_boot()
        try:
            body = await ctx.read(
                lambda conn: listing(conn, rt.config, backend=rt.backend, now=utcnow(),
                                     boot=boot or utcnow()))
        except StoreError as exc:
            raise ApiError(503, f"cannot read schedule state: {exc}") from None
        return respond(body)

    @guarded.route(Operation(
        "POST", "/scheduler/{action}", "pause or resume schedules (absent target: all)",
        path_params=(Param("action", {"type": "string", "enum": ["pause", "resume"]}),),
        body=Body(SCHEDULE_TARGET),
        answers=(ok(200, "the schedules changed", SCHEDULE_CHANGED),
                 refused(404, "no such schedule; the message lists the known ones"),
                 refused(503, "schedule state could not be written"))))
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
        try:
            entries = await ctx.write(
                lambda conn: change(conn, rt.config, target, utcnow_text(),
                                    backend=rt.backend))
        except UnknownSchedule as exc:
            raise ApiError(404, str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, f"cannot write schedule state: {exc}") from None
        ctx.wake_scheduler()
        key = "paused" if action == "pause" else "resumed"
        return respond({key: [e.as_dict() for e in entries]})

    @guarded.route(Operation(
        "POST", "/scheduler/run", "fire one schedule now", body=Body(SCHEDULE_RUN, required=True),
        answers=(ok(202, "fired", {"type": "object"}), refused(404, "no such schedule"),
                 refused(409, "the schedule was not fired (its policy or state said no)"),
                 throttled(),
                 refused(503, "the scheduler or the queue could not take it"))))
    @guarded("system:rw")
    async def scheduler_run(rt: Runtime, _p: Principal | None) -> Response:
        """Fire one schedule now (`{"target": "plugin/schedule_id"}`): its command and payload,
        its if_running policy, submitted by scheduler:manual; its next regular fire stays."""
        from ductile.errors import SchedulerError, UnknownSchedule
        from ductile.schedule.control import known_targets

        try:
            plugin, schedule_id = parse_run_target(await request.get_data(cache=True))
        except BodyError as exc:
            known = ", ".join(f"{p}/{i}" for p, i, _ in known_targets(rt.config)) or "none"
            raise ApiError(400, f"{exc} (known schedules: {known})") from None
        target = f"{plugin}/{schedule_id}"
        try:
            fired = await ctx.fire_schedule(plugin, schedule_id)
        except UnknownSchedule as exc:
            raise ApiError(404, str(exc)) from None
        except SchedulerError as exc:
            raise ApiError(503, str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, f"cannot fire the schedule: {exc}; nothing was queued, retry "
                                "later") from None
        if fired.skipped is not None:
            what = ("cannot run" if fired.skipped == "invalid"
                    else f"was not fired ({fired.skipped})")
            raise ApiError(409, f"schedule {target} {what}: {fired.detail}",
                           **fired.as_dict())
        return respond(fired.as_dict(), 202)


def parse_run_target(data: bytes) -> tuple[str, str]:
    """`POST /scheduler/run`: `{"target": "plugin/schedule_id"}` -> (plugin, schedule id).

    Raises BodyError naming the field: a manual fire runs exactly one schedule, so the target
    is required and must have both parts (pause and resume also take a plugin, or nothing)."""
    body = parse_json_object(data) or {}
    usage = 'send {"target": "plugin/schedule_id"}'
    unknown = sorted(set(body) - {"target"})
    if unknown:
        raise BodyError(f"unknown field(s) in body: {', '.join(unknown)[:200]}; {usage}")
    target = body.get("target")
    if not isinstance(target, str) or not target.strip():
        raise BodyError(f"field target is required and must be a string; {usage}")
    plugin, _, schedule_id = target.strip().partition("/")
    if not plugin or not schedule_id or "/" in schedule_id:
        raise BodyError(f"field target must name one schedule as plugin/schedule_id, got "
                        f"{target[:200]!r}")
    return plugin, schedule_id
