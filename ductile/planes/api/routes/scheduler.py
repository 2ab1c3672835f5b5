"""`GET /scheduler/jobs` and `POST /scheduler/pause|resume`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response, request

from ductile.errors import StoreError
from ductile.planes.api.bodies import BodyError, parse_json_object
from ductile.planes.api.kit import ApiError, respond

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @app.route("/scheduler/jobs", methods=["GET"])
    @guarded("jobs:ro")
    async def scheduler_jobs(rt: Runtime, _p: Principal | None) -> Response:
        """Every schedule of an enabled plugin with its next run, paused flag and breaker."""
        from ductile.schedule.views import scheduler_jobs as listing
        from ductile.store.jobs import utcnow

        boot = ctx.scheduler_boot()
        try:
            body = await ctx.read(
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
        try:
            entries = await ctx.write(
                lambda conn: change(conn, rt.config, target, utcnow_text()))
        except UnknownSchedule as exc:
            raise ApiError(404, str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, f"cannot write schedule state: {exc}") from None
        ctx.wake_scheduler()
        key = "paused" if action == "pause" else "resumed"
        return respond({key: [e.as_dict() for e in entries]})
