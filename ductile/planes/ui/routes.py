"""The `/ui` routes: HTML shells, their script and stylesheet, and two read-only JSON views the
API has no route for (a job's attempts and transitions; the breaker table).

The shells take no token and carry no data from the gateway (only the declared boot machine,
which is the same for every installation). Everything else is fetched by the page's script
from the JSON routes, through the same `guarded` decorator and scopes as the rest of the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from quart import Response

from ductile.errors import StoreError
from ductile.machines import job_statuses, load_machine
from ductile.planes.api.kit import ApiError, declare, respond
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
from ductile.planes.api.resultscope import ATTEMPT_FIELDS, RULE, strip_result_class, \
    transition_view
from ductile.planes.ui.bootview import boot_view

if TYPE_CHECKING:
    import jinja2
    from quart_trio import QuartTrio

    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime

#: Only our own script and stylesheet, and connections back to this gateway: a value that
#: slipped past escaping still could not run inline script or send data elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_STATIC_TYPES = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}

#: The pages in the navigation bar, in order: (path, title).
NAV: tuple[tuple[str, str], ...] = (
    ("/ui/jobs", "Jobs"),
    ("/ui/schedules", "Schedules"),
    ("/ui/breakers", "Breakers"),
    ("/ui/boot", "Boot gates"),
)


@dataclass(frozen=True)
class UiAssets:
    """The template environment and the static files, read once when the app is built."""

    env: jinja2.Environment
    static: dict[str, bytes]

    @classmethod
    def load(cls) -> UiAssets:
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.PackageLoader("ductile.planes.ui", "templates"),
            autoescape=True,  # every value, including a job's payload, is shown as text
            undefined=jinja2.StrictUndefined,
        )
        folder = resources.files("ductile.planes.ui") / "static"
        static = {name: (folder / name).read_bytes() for name in _STATIC_TYPES}
        return cls(env=env, static=static)

    def page(self, template: str, **values: Any) -> Response:
        nav = [{"path": path, "title": title} for path, title in NAV]
        html = self.env.get_template(template).render(nav=nav, **values)
        return _secured(Response(html, status=200, content_type="text/html; charset=utf-8"))


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


HTML = "text/html"
_SHELL = (ok(200, "the page: a shell that holds no gateway data; its script reads the JSON "
                  "API with the token given at /ui/login", {"type": "string"}, HTML),)
_ATTEMPT = obj(("attempt", "outcome"), attempt=INTEGER, created_at=STRING,
               started_at=NULLABLE_STRING, finished_at=NULLABLE_STRING,
               duration_ms={"type": ["integer", "null"]}, exit_code={"type": ["integer", "null"]},
               outcome=NULLABLE_STRING, error=NULLABLE_STRING)
_TRANSITION = obj(("to_status", "created_at"), from_status=NULLABLE_STRING, to_status=STRING,
                  reason=NULLABLE_STRING, created_at=STRING)
LEDGER = obj(("job_id", "attempts", "transitions"), job_id=STRING,
             enqueued_config_snapshot_id=NULLABLE_STRING,
             started_config_snapshot_id=NULLABLE_STRING,
             attempts=array(_ATTEMPT), transitions=array(_TRANSITION))
BREAKERS = obj(("breakers", "open"), open=INTEGER, breakers=array(obj(
    ("plugin", "command", "state", "failure_count"), plugin=STRING, command=STRING,
    state=STRING, failure_count=INTEGER)))


def _static_view(body: bytes, media: str) -> Callable[[], Awaitable[Response]]:
    async def view() -> Response:
        return _secured(Response(body, status=200, content_type=media))
    return view


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    assets = UiAssets.load()
    statuses = job_statuses().all

    boot = boot_view(load_machine("boot"))
    pages: dict[str, tuple[str, str, dict[str, Any]]] = {
        "jobs": ("jobs.html", "Jobs", {"statuses": statuses}),
        "login": ("login.html", "Log in", {}),
        "schedules": ("schedules.html", "Schedules", {}),
        "breakers": ("breakers.html", "Breakers", {}),
        "boot": ("boot.html", "Boot gates", {"boot": boot}),
    }

    async def ui_index() -> Response:
        return assets.page("jobs.html", title="Jobs", statuses=statuses)

    async def ui_page(page: str) -> Response:
        template, title, values = pages[page]
        return assets.page(template, title=title, **values)

    async def ui_job(job_id: str) -> Response:
        return assets.page("job.html", title="Job", job_id=job_id)

    declare(app, Operation("GET", "/ui", "the web ledger: the job list (docs/ui.md)",
                           answers=_SHELL, auth="none", tag="ui"), ui_index)
    declare(app, Operation("GET", "/ui/{page}", "the web ledger: one of its pages",
                           answers=_SHELL, auth="none", tag="ui",
                           path_params=(Param("page", {"type": "string",
                                                       "enum": list(pages)}),)), ui_page)
    declare(app, Operation("GET", "/ui/job/{job_id}",
                           "the web ledger: one job, its attempts, transitions and pipeline "
                           "tree", answers=_SHELL, auth="none", tag="ui",
                           path_params=(Param("job_id"),)), ui_job)

    for name, media in _STATIC_TYPES.items():
        declare(app, Operation("GET", f"/ui/static/{name}", f"the web ledger's {name}",
                               answers=(ok(200, name, {"type": "string"},
                                           media.split(";")[0]),),
                               auth="none", tag="ui"), _static_view(assets.static[name], media))

    @guarded.route(Operation(
        "GET", "/ui/api/job/{job_id}/ledger",
        "one job's attempts, status transitions and config snapshot ids (for /ui/job)",
        description=f"As GET /job/{{job_id}}: {RULE}; here that is each attempt's error, and "
                    "each transition's reason keeps only its code.",
        tag="ui", answers=(ok(200, "the ledger", LEDGER), refused(404, "job not found"))))
    @guarded("jobs:status:ro")
    async def ui_job_ledger(rt: Runtime, principal: Principal | None, job_id: str) -> Response:
        """What `ductile job inspect` shows beyond `GET /job/{id}`. Each attempt's stderr is
        left out: it is `GET /job-logs`' to show, under its own scope. An attempt's error and
        the error text in a transition's reason are result-class (resultscope.py)."""
        try:
            job = await rt.queue.get(job_id)
            if job is None:
                raise ApiError(404, "job not found")
            attempts = await rt.queue.attempts(job_id)
            transitions = await rt.queue.transitions(job_id)
        except StoreError as exc:
            raise ApiError(503, f"cannot read the job ledger: {exc}") from None
        return respond({
            "job_id": job.id,
            "enqueued_config_snapshot_id": job.enqueued_config_snapshot_id,
            "started_config_snapshot_id": job.started_config_snapshot_id,
            "attempts": [strip_result_class(
                {k: v for k, v in a.as_dict().items()
                 if k not in ("stderr_tail", "pid", "id", "job_id")}, principal, ATTEMPT_FIELDS)
                for a in attempts],
            "transitions": [transition_view(
                {k: v for k, v in t.as_dict().items() if k not in ("id", "job_id")}, principal)
                for t in transitions],
        })

    @guarded.route(Operation(
        "GET", "/ui/api/breakers", "every circuit breaker and its state (for /ui/breakers)",
        tag="ui", answers=(ok(200, "the breakers", BREAKERS),)))
    @guarded("jobs:status:ro")
    async def ui_breakers(rt: Runtime, _p: Principal | None) -> Response:
        """What `ductile system breaker` lists; the same scope as `GET /scheduler/jobs`."""
        from ductile.schedule.views import breakers_overview

        try:
            return respond(await ctx.read(
                lambda conn: breakers_overview(conn, backend=rt.backend)))
        except StoreError as exc:
            raise ApiError(503, f"cannot read the breakers: {exc}") from None
