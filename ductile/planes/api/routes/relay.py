"""`POST <remote_ingress.listen_path>/{peer}`: the relay receiver, on the API listener.

No bearer token: the envelope's signature is the credential (`relay/envelope.py` checks it, in
the Go original's order, with its status codes and messages). An accepted envelope becomes a
local root event, routed to every pipeline whose `on:` matches, and its jobs are in the queue
before the 202 goes out: from then on the receiver owns the event. A replay of the same signed
bytes within the clock-skew window is refused with 409 (`store/relay.py`); a re-send of the
same origin event (signed anew) is deduplicated by its derived dedupe key and answers with the
job it already has.

Every request is published as one `relay.delivery` event once its answer is known:
`{peer, outcome, status, job_id}` with `outcome` `accepted` (202), `replayed` (409),
`forbidden` (403: unknown peer, bad signature, clock skew), `unavailable` (5xx, or 429 from
backpressure: the peer retries) or `rejected` (any other refusal: the envelope itself is
wrong). Never the body or a header value.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ductile.dispatch.routing import successors
from ductile.errors import (BaggageError, DedupeDropped, Overloaded, SourceEventConflict,
                            StoreError)
from ductile.events.hub import no_publish
from ductile.planes.api.kit import overloaded, respond
from ductile.planes.api.openapi import (STRING, Body, Operation, Param, obj, ok, refused,
                                        throttled)
from ductile.planes.api.schemas import RELAY_ACCEPTED
from ductile.relay.envelope import (HEADER_KEY_ID, HEADER_PEER, HEADER_SIGNATURE,
                                    HEADER_TIMESTAMP, Envelope, Refused, check_request)
from ductile.router.engine import ingest
from ductile.store.relay import RelaySeen

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime

#: Seconds a peer has to deliver the whole body once its headers arrived.
BODY_TIMEOUT = 10.0
#: The event type of one received envelope's outcome (docs/events.md).
DELIVERY_EVENT = "relay.delivery"
#: Characters of the path's peer name kept in an event (any name can be sent; as the log).
PEER_SHOWN = 64


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    """Mount the receiver when this generation has `remote_ingress` (its path is bound once per
    process: changing it needs a restart, like api.listen)."""
    listen_path = ctx.current().relay.listen_path
    if not listen_path:
        return
    log = ctx.log.child("relay")
    publish = ctx.events.publish if ctx.events is not None else no_publish

    @guarded.route(Operation(
        "POST", f"{listen_path}/{{peer}}", "the relay receiver: one signed event from a peer",
        auth="signature", tag="relay",
        description="No token: the X-Ductile-* headers sign the body (docs/relay.md). The path "
                    "is remote_ingress.listen_path plus the peer's name.",
        headers=tuple(Param(name, required=name != HEADER_KEY_ID) for name in
                      (HEADER_PEER, HEADER_TIMESTAMP, HEADER_SIGNATURE, HEADER_KEY_ID)),
        body=Body(obj(("event",), event=obj(("type",), type=STRING)), required=True),
        answers=(ok(202, "accepted: the event's jobs are queued", RELAY_ACCEPTED),
                 refused(400, "the envelope or its baggage is not valid"),
                 refused(403, "unknown peer, bad signature, or outside the clock skew"),
                 refused(404, "relay ingress is not configured"),
                 refused(408, "the body did not arrive in time"),
                 refused(409, "the envelope was replayed"),
                 refused(413, "the body is over remote_ingress.max_body_size"),
                 refused(422, "the event type is not accepted from this peer"),
                 throttled(),
                 refused(503, "the event could not be recorded; retry later"))))
    async def relay_ingest(peer: str) -> Response:
        rt = ctx.current()
        # On the serving runtime's backend (a cheap record: two callables).
        seen = RelaySeen(ctx.write, rt.backend.relay)
        try:
            response, job_id = await _receive(rt, seen, peer, log)
        except Exception:
            # Answered 500 by the app's error handler: counted here, then left to it.
            publish(DELIVERY_EVENT, peer=peer[:PEER_SHOWN], outcome="unavailable", status=500)
            raise
        publish(DELIVERY_EVENT, peer=peer[:PEER_SHOWN],
                outcome=_outcome(response.status_code), status=response.status_code,
                job_id=job_id)
        return response


async def _receive(rt: Runtime, seen: RelaySeen, peer: str,
                   log: Any) -> tuple[Response, str | None]:
    """The answer to one envelope, and the first job it queued (if it did)."""
    policy = rt.relay.policy
    if policy is None:
        return respond({"error": "relay ingress is not configured"}, 404), None
    body = await _read(policy.max_body_size)
    if isinstance(body, Refused):
        return _refusal(body, close=True), None
    verdict = check_request(peer, rt.relay.peers.get(peer), request.headers, request.method,
                            request.path, body, datetime.now(timezone.utc), policy)
    if isinstance(verdict, Refused):
        log.info("relay envelope refused", peer=peer[:PEER_SHOWN], status=verdict.status,
                 error=verdict.error)
        return _refusal(verdict), None
    return await _accept(rt, seen, peer, verdict, log)


def _outcome(status: int) -> str:
    """The `outcome` of a `relay.delivery` event, by the status it was answered with."""
    if status == 202:
        return "accepted"
    if status == 409:
        return "replayed"
    if status == 403:
        return "forbidden"
    if status >= 500 or status == 429:
        return "unavailable"  # the peer retries (429: backpressure)
    return "rejected"  # 400, 404, 408, 413, 422: resending the same envelope cannot help


async def _read(limit: int) -> bytes | Refused:
    """The body, at most `limit` bytes: one byte more is enough to know it is too large (the
    signature check, which comes first in the original's order, needs the body anyway)."""
    request.max_content_length = limit + 1
    declared = request.content_length
    if declared is not None and declared > limit:
        return Refused(413, "relay payload too large")
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_TIMEOUT) as scope:
        try:
            async for chunk in request.body:
                size += len(chunk)
                if size > limit:
                    return Refused(413, "relay payload too large")
                chunks.append(chunk)
        except RequestEntityTooLarge:
            return Refused(413, "relay payload too large")
    if scope.cancelled_caught:
        return Refused(408, "relay request body not received in time")
    return b"".join(chunks)


def _refusal(refused: Refused, *, close: bool = False) -> Response:
    response = respond({"error": refused.error}, refused.status)
    if close:
        response.headers["Connection"] = "close"
    return response


async def _accept(rt: Runtime, seen: RelaySeen, peer: str, envelope: Envelope,
                  log: Any) -> tuple[Response, str | None]:
    policy = rt.relay.policy
    assert policy is not None
    event_id = str(uuid.uuid4())
    try:
        earlier = await seen.remember(peer, envelope.signature, event_id,
                                      window=policy.allowed_clock_skew)
    except StoreError as exc:
        log.error("relay envelope not recorded", peer=peer, error=str(exc))
        return respond({"error": "failed to accept relay request"}, 503), None
    if earlier is not None:
        log.warn("relay envelope replayed", peer=peer, receiver_event_id=earlier)
        return respond({"error": "relay envelope replayed", "receiver_event_id": earlier},
                       409), None
    event = _local_event(peer, envelope, event_id)
    try:
        job_id = await _enqueue(rt, peer, envelope, event)
    except BaggageError as exc:
        await seen.forget(peer, envelope.signature)
        return respond({"error": f"relay baggage refused: {exc}"}, 400), None
    except Overloaded as exc:
        # Forgotten, so the sender's retry of these very bytes is not taken for a replay.
        await seen.forget(peer, envelope.signature)
        return overloaded(exc), None
    except StoreError as exc:
        await seen.forget(peer, envelope.signature)
        log.error("relay event not enqueued", peer=peer, event_type=envelope.event_type,
                  error=str(exc))
        return respond({"error": "failed to enqueue relay event"}, 503), None
    log.info("relay event accepted", peer=peer, event_type=envelope.event_type,
             receiver_event_id=event_id, job_id=job_id,
             origin_instance=envelope.origin_instance, origin_job_id=envelope.origin_job_id,
             origin_event_id=envelope.origin_event_id)
    answer: dict[str, Any] = {"status": "accepted", "peer": peer,
                              "event_type": envelope.event_type, "receiver_event_id": event_id}
    if job_id:
        answer["job_id"] = job_id
    return respond(answer, 202), job_id or None


def _local_event(peer: str, envelope: Envelope, event_id: str) -> dict[str, Any]:
    """The event as the local router sees it: `source` names the peer and `origin` carries the
    sender's ids, so `job inspect` on this side shows where it came from."""
    event: dict[str, Any] = {"type": envelope.event_type,
                             "payload": copy.deepcopy(envelope.payload),
                             "source": f"relay:{peer}",
                             "timestamp": datetime.now(timezone.utc).isoformat(),
                             "event_id": event_id}
    dedupe = envelope.dedupe(peer)
    if dedupe:
        event["dedupe_key"] = dedupe
    origin = {k: v for k, v in (("instance", envelope.origin_instance or peer),
                                ("plugin", envelope.origin_plugin),
                                ("job_id", envelope.origin_job_id),
                                ("event_id", envelope.origin_event_id)) if v}
    event["origin"] = origin
    return event


async def _enqueue(rt: Runtime, peer: str, envelope: Envelope, event: dict[str, Any]) -> str:
    """Enqueue the root jobs of the relayed event; the first job's id ("" when no pipeline
    matched: the event is accepted and has nothing to run, as in the original)."""
    routing = ingest(rt.pipelines, event, envelope.baggage, source=f"relay:{peer}")
    first = ""
    roots = successors(routing.dispatches, None, lambda p: rt.config.plugin(p).retry.max_attempts,
                       submitted_by=f"relay:{peer}")
    rt.admit("relay", *(root.plugin for root in roots))  # Overloaded: 429, retried by the peer
    for successor in roots:
        try:
            job = await rt.queue.enqueue(
                successor.plugin, successor.command, successor.payload, successor.submitted_by,
                max_attempts=successor.max_attempts, dedupe_key=event.get("dedupe_key"),
                source_event_id=successor.source_event_id, context=successor.context)
        except DedupeDropped as exc:
            first = first or (exc.existing_job_id or "")
            continue
        except SourceEventConflict:
            continue
        first = first or job.id
    return first
