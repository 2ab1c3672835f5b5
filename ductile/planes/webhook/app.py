"""The webhook application: one POST per delivery, verified, enqueued as one job.

Per request, in this order (the cheap refusals first, the signature before anything that
depends on the body's content):

1. path not configured -> 404; configured path, method other than POST -> 405 (`Allow: POST`)
2. `Content-Length` above the endpoint's `max_body_size` -> 413 before reading a byte; a
   body without a length (chunked) is read in chunks and refused with 413 as soon as it passes
   the limit, so a sender cannot make us buffer more than `max_body_size`
3. the body not complete within `body_timeout` -> 408 (slow senders hold one task, not the
   listener)
4. the signature (`verify.py`) fails for any reason -> 403 `{"error":"forbidden"}`, always the
   same body; the reason is logged, never returned
5. a `Content-Type` other than JSON (absent, `application/json`, `application/*+json`) or a
   form (`application/x-www-form-urlencoded`) -> 415; a JSON body the gateway cannot carry (not
   UTF-8, nested deeper than 64 levels, a non-finite number, a lone surrogate) or, for command
   `handle`, not an object, or a form that is not UTF-8 -> 400 naming the field (see
   `payload.py`, which also says how a form becomes the payload)
6. the endpoint's `match:` rules (`rules.py`) do not all hold -> `refuse_status` (202 unless
   configured) `{"status": "ignored", "reason"}`, and nothing is queued
7. enqueue `plugin/command` with the body as payload, `submitted_by = webhook:<path>` and the
   `dedupe_header` value as dedupe key -> 202 `{"job_id"}`; a delivery whose key is already
   outstanding (or succeeded within `service.dedupe_ttl`) -> 200 with the existing job id and
   `"deduplicated": true`, so the sender stops retrying; a store failure -> 503 (retry later);
   outstanding jobs at a `max_outstanding_jobs` bound (backpressure) -> 503 with
   `Retry-After`, nothing queued
8. with `respond: result`, the answer waits for the job (new or deduplicated) to end instead
   (`respond.py`): 200 with its result, 502 with its error, or 202 when the wait runs out

Every response is JSON. A response sent before the whole body was read carries
`Connection: close`, so the unread rest of the body can never be taken for the next request.

Every POST to a configured path (a delivery) is published as one `webhook.delivery` event, once
its answer is known: `{path, outcome, status, job_id}` with `outcome` one of `enqueued`,
`deduplicated`, `ignored` (step 6), `forbidden` (step 4), `rejected` (steps 2, 3 and 5) or
`unavailable` (a 503). Never the body or a header value: the event stream and the metrics are
read by people who may not see what senders send. A 404 or 405 is not a delivery and is not
published (an unknown path would let anyone mint metric labels).

Everything is handled in one `before_request` hook rather than through werkzeug's router: the
configured paths are matched exactly (werkzeug would redirect `/a//b` or treat `<x>` as a
variable), and there is nothing else on this listener.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio
from quart import Request, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ductile.config.webhooks import WebhookEndpoint
from ductile.errors import DedupeDropped, Overloaded, StoreError
from ductile.events.hub import Publish, no_publish
from ductile.logs import Logger
from ductile.planes.http import (
    PlaneApp,
    http_exception_response,
    http_version_refusal,
    internal_error,
    json_error,
    json_response,
    no_redirects,
)
from ductile.planes.webhook.payload import (
    PayloadError,
    UnsupportedContentType,
    parse_webhook_body,
)
from ductile.planes.webhook.respond import SYNC_SLOTS, Answer, JobOutcomes, Responder
from ductile.planes.webhook.rules import evaluate
from ductile.planes.webhook.verify import verify_request

#: Seconds a sender has to deliver the whole body once its headers arrived (Go: Read 10 s).
BODY_TIMEOUT = 10.0
#: Bytes of an unwanted body (404/405) read and discarded to keep the connection usable.
_DRAIN_LIMIT = 64 * 1024

#: `Queue.enqueue`-compatible: (plugin, command, payload, submitted_by, *, dedupe_key) -> job.
Enqueue = Callable[..., Awaitable[Any]]
#: The event type of one delivery's outcome (docs/events.md).
DELIVERY_EVENT = "webhook.delivery"


class _Refused(Exception):
    """A request answered early with `status` and `message` (internal to this module)."""

    def __init__(self, status: int, message: str, *, close: bool = False,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.retry_after = retry_after  # seconds, sent as Retry-After (backpressure)

    def response(self) -> Response:
        response = json_error(self.status, self.message, close=self.close)
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(self.retry_after)
        return response


@dataclass(frozen=True)
class _Delivered:
    """A delivery's answer and what became of it, for its `webhook.delivery` event."""

    response: Response
    outcome: str  # enqueued, deduplicated or ignored (refusals are derived from their status)
    job_id: str | None = None


def _refusal_outcome(status: int) -> str:
    """The `outcome` of a delivery refused with `status` before anything was queued."""
    if status == 403:
        return "forbidden"
    if status >= 500:
        return "unavailable"  # the sender retries: nothing was stored for it
    return "rejected"  # 400, 408, 413, 415: the body itself is the problem


@dataclass(frozen=True)
class WebhookRoutes:
    """What one runtime generation serves: endpoints by exact path, their HMAC keys, and the
    enqueue function. Replaced as a whole on reload, so a request sees one generation."""

    by_path: Mapping[str, WebhookEndpoint]
    secrets: Mapping[str, bytes]
    enqueue: Enqueue

    @classmethod
    def build(cls, endpoints: Iterable[WebhookEndpoint], secrets: Mapping[str, bytes],
              enqueue: Enqueue) -> WebhookRoutes:
        return cls({e.path: e for e in endpoints}, dict(secrets), enqueue)

    def buffer_limit(self) -> int:
        """Bytes quart may buffer for a body: the largest endpoint limit, plus one."""
        return max([e.max_body_size for e in self.by_path.values()] + [_DRAIN_LIMIT]) + 1


class WebhookApp(PlaneApp):
    """A PlaneApp (early answers really close the connection) serving the current `routes`."""

    routes: WebhookRoutes

    def create_url_adapter(self, request: Any) -> Any:
        """No URL adapter for a request: the app has no rules (its one hook answers every
        path), so werkzeug's matching would only raise and keep a NotFound per request."""
        if request is not None:
            return None
        return super().create_url_adapter(request)

    def replace_routes(
        self,
        endpoints: Iterable[WebhookEndpoint],
        secrets: Mapping[str, bytes],
        enqueue: Enqueue,
    ) -> None:
        """Serve a new generation (reload): later requests use it; the listener stays up.
        `webhooks.listen` cannot change this way, it is the socket itself."""
        routes = WebhookRoutes.build(endpoints, secrets, enqueue)
        self.config["MAX_CONTENT_LENGTH"] = routes.buffer_limit()
        self.routes = routes


def create_webhook_app(
    endpoints: Iterable[WebhookEndpoint],
    secrets: Mapping[str, bytes],
    enqueue: Enqueue,
    log: Logger,
    *,
    clock: Callable[[], float] = time.time,
    body_timeout: float = BODY_TIMEOUT,
    outcomes: JobOutcomes | None = None,
    sync_slots: int = SYNC_SLOTS,
    publish: Publish = no_publish,
) -> WebhookApp:
    """The app for `endpoints`; `secrets` maps each endpoint path to its HMAC key.

    `enqueue` is `Queue.enqueue` (or a wrapper that adds `max_attempts`); it receives the body as
    a `RawJSON` payload. `clock` returns Unix seconds, for the stripe/slack tolerance window.
    An endpoint without a secret refuses every delivery (403), it never accepts unsigned ones.
    `outcomes` lets `respond: result` endpoints wait for their job, at most `sync_slots` at
    once; without it they answer as `respond: accepted` does. `publish` is the event hub's:
    each delivery's outcome goes to it as one `webhook.delivery` event (the hub outlives
    reloads, so it is given once).
    On reload, call `app.replace_routes(...)` with the new generation's values.
    """
    responder = Responder(outcomes, sync_slots) if outcomes is not None else None
    app = WebhookApp("ductile.webhook")
    no_redirects(app)
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # Quart stops buffering a body past MAX_CONTENT_LENGTH; each endpoint's own limit is
    # enforced while reading (_read_body).
    app.replace_routes(endpoints, secrets, enqueue)

    @app.before_request
    async def handle_webhook() -> Response:
        started = time.monotonic()
        # The request itself, looked up once: each use of quart's `request` proxy is a
        # context-variable lookup, and this hook is every request's whole handling.
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        bad_version = http_version_refusal(req.http_version)
        if bad_version is not None:
            return bad_version
        routes = app.routes
        path = req.path
        endpoint = routes.by_path.get(path)
        job_id = None
        if endpoint is None or req.method != "POST":
            response = await _not_a_delivery(req, endpoint, body_timeout)
        else:
            try:
                delivered = await _deliver(req, endpoint, routes.secrets.get(endpoint.path, b""),
                                           routes.enqueue, log, clock=clock,
                                           body_timeout=body_timeout, responder=responder)
            except _Refused as refused:
                delivered = _Delivered(refused.response(), _refusal_outcome(refused.status))
            except Exception:
                # Answered 503 by `unexpected` below: counted here, then left to it.
                publish(DELIVERY_EVENT, path=endpoint.path, outcome="unavailable", status=503)
                raise
            response = delivered.response
            job_id = delivered.job_id
            publish(DELIVERY_EVENT, path=endpoint.path, outcome=delivered.outcome,
                    status=response.status_code, job_id=job_id)
        # One line per request; an accepted delivery's job id is on it (no second line).
        log.info("webhook request", method=req.method, path=path,
                 status=response.status_code, remote_addr=req.remote_addr,
                 duration_ms=round((time.monotonic() - started) * 1000, 3),
                 **({"job_id": job_id} if job_id is not None else {}))
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        # Only reachable if quart itself refuses a request before our hook runs.
        return http_exception_response(exc, exc.description or exc.name, close=True)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        # 503, not 500: a webhook sender retries a 5xx, and a delivery nothing was stored for
        # must be retried rather than lost.
        return internal_error(log, exc, status=503, message="webhook not accepted; retry later")

    return app


async def _not_a_delivery(req: Request, endpoint: WebhookEndpoint | None,
                          body_timeout: float) -> Response:
    """Step 1 of the module docstring: 404 for a path not configured, 405 for another method."""
    close = not await _drained(req, body_timeout)
    if endpoint is None:
        return json_error(404, "endpoint not found", close=close)
    return json_error(405, f"method {req.method} not allowed on {endpoint.path}; "
                           "webhooks are delivered with POST", close=close, allow=["POST"])


async def _deliver(
    req: Request,
    endpoint: WebhookEndpoint,
    secret: bytes,
    enqueue: Enqueue,
    log: Logger,
    *,
    clock: Callable[[], float],
    body_timeout: float,
    responder: Responder | None,
) -> _Delivered:
    """Steps 2-8 of the module docstring for a POST to a configured path (a refusal is
    raised as `_Refused`)."""
    body = await _read_body(req, endpoint.max_body_size, body_timeout)
    header = req.headers.get
    verdict = verify_request(
        endpoint.scheme, secret, header, body,
        signature_header=endpoint.signature_header, tolerance=endpoint.tolerance, now=clock(),
    )
    if not verdict.ok:
        log.warn("webhook signature rejected", path=endpoint.path, reason=verdict.reason,
                 remote_addr=req.remote_addr)
        raise _Refused(403, "forbidden")
    try:
        parsed = parse_webhook_body(body, endpoint.command, header("Content-Type"))
    except UnsupportedContentType as exc:
        raise _Refused(415, str(exc)) from None
    except PayloadError as exc:
        raise _Refused(400, str(exc)) from None
    rules = evaluate(endpoint.match, header, parsed.value)
    if not rules.ok:
        log.info("webhook ignored: match rules do not hold", path=endpoint.path,
                 reason=rules.reason, status=endpoint.refuse_status)
        return _Delivered(json_response({"status": "ignored", "reason": rules.reason},
                                        endpoint.refuse_status), "ignored")
    sync = responder if endpoint.respond == "result" else None
    dedupe_key = None
    if endpoint.dedupe_header is not None:
        dedupe_key = (header(endpoint.dedupe_header) or "").strip() or None
    try:
        job = await enqueue(endpoint.plugin, endpoint.command, parsed.payload,
                            f"webhook:{endpoint.path}", dedupe_key=dedupe_key)
    except DedupeDropped as exc:
        log.info("webhook redelivery deduplicated", path=endpoint.path,
                 job_id=exc.existing_job_id, reason=exc.reason)
        if sync is not None and exc.existing_job_id is not None:
            # The sender asked for the result: the existing job's is the one it gets.
            answer = await sync.answer(exc.existing_job_id, "queued", endpoint.respond_timeout)
            return _Delivered(_answered(endpoint, answer, log, deduplicated=True),
                              "deduplicated", exc.existing_job_id)
        return _Delivered(json_response({"job_id": exc.existing_job_id, "deduplicated": True},
                                        200), "deduplicated", exc.existing_job_id)
    except Overloaded as exc:
        # 503, not 429: senders that redeliver (Stripe, Slack, ...) do so on a 5xx. Logged
        # (rate limited) by the bound itself (events/outstanding.py).
        raise _Refused(503, str(exc), retry_after=exc.retry_after) from None
    except StoreError as exc:
        log.error("webhook enqueue failed", path=endpoint.path, error=str(exc))
        raise _Refused(503, "failed to enqueue job; retry later") from None
    if sync is not None:
        # Logged before the wait takes its slot (the request's own line comes after it).
        log.info("webhook accepted", path=endpoint.path, job_id=job.id, plugin=endpoint.plugin,
                 command=endpoint.command)
        answer = await sync.answer(job.id, job.status, endpoint.respond_timeout)
        return _Delivered(_answered(endpoint, answer, log), "enqueued", job.id)
    return _Delivered(json_response({"job_id": job.id}, 202), "enqueued", job.id)


def _answered(endpoint: WebhookEndpoint, answer: Answer, log: Logger, *,
              deduplicated: bool = False) -> Response:
    """The `respond: result` answer, logged with why it is what it is."""
    body = {**answer.body, "deduplicated": True} if deduplicated else answer.body
    (log.warn if answer.warn else log.info)(
        "webhook answered", path=endpoint.path, job_id=body["job_id"], status=answer.status,
        job_status=body["status"], why=answer.why)
    return json_response(body, answer.status)


async def _read_body(req: Request, limit: int, timeout: float) -> bytes:
    """The whole body, refusing more than `limit` bytes (413) or a slow sender (408)."""
    declared = req.content_length
    if declared is not None and declared > limit:
        raise _Refused(413, f"payload too large (limit {limit} bytes)", close=True)
    with trio.move_on_after(timeout):
        try:
            if declared is not None:
                # h11 holds the body to its Content-Length (within the limit): wait once for
                # all of it rather than wake up for each chunk.
                return await req.body
            return await _collect(req, limit)
        except RequestEntityTooLarge:
            raise _Refused(413, f"payload too large (limit {limit} bytes)",
                           close=True) from None
    raise _Refused(408, "request body not received in time", close=True)


async def _collect(req: Request, limit: int) -> bytes:
    """A body of no declared length, as it arrives, refused (413) as soon as it passes
    `limit`: a sender cannot make us buffer more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in req.body:
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"payload too large (limit {limit} bytes)", close=True)
        chunks.append(chunk)
    return b"".join(chunks)


async def _drained(req: Request, timeout: float) -> bool:
    """Read and drop a small unwanted body (404/405) so the connection can serve the next
    request. False when it is too large or too slow: the response then closes the connection."""
    declared = req.content_length
    if declared == 0:
        return True
    if declared is not None and declared > _DRAIN_LIMIT:
        return False
    try:
        await _read_body(req, _DRAIN_LIMIT, min(timeout, 1.0))
    except _Refused:
        return False
    return True
