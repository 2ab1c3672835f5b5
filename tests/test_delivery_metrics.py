"""Webhook and relay deliveries counted by outcome, against the real gateway: each answered
delivery is one `webhook.delivery` / `relay.delivery` event on `GET /events`, in order, and one
count in `GET /metrics` under its outcome; neither carries the body or a signature. The
outcomes a running gateway cannot be pushed into on purpose (a store that refuses writes, a
bug in the enqueue path) are checked on the webhook app served alone, with a real hub and
real metrics."""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.trio import serve
from prometheus_client.parser import text_string_to_metric_families

from ductile.cli.follow import SseEvent, SseParser
from ductile.config.webhooks import WebhookEndpoint
from ductile.events.hub import Event, Hub
from ductile.events.metrics import Metrics
from ductile.logs import Logger
from ductile.planes.webhook.app import Enqueue, create_webhook_app
from ductile.planes.webhook.server import webhook_hypercorn_config
from ductile.planes.webhook.verify import sign_github
from ductile.relay.envelope import build_envelope, signed_headers
from ductile.store import Database, Queue
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, make_vault, write_config

HOOK_SECRET = "webhook-hmac-secret-value"
RELAY_SECRET = "relay-shared-secret-0123456789"
HOOK_PATH = "/hooks/github"
RELAY_PATH = "/ingest/peer/gw-a"
# In every body sent, so a leak of a body into an event would show.
MARKER = "body-marker-7f3a"


@pytest.fixture
def webhook_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    make_vault(cfg, {"api-token": TOKEN, "read-token": READ_TOKEN, "gh-secret": HOOK_SECRET})
    write_config(cfg, port=port, extra={"webhooks": {
        "listen": f"127.0.0.1:{hook_port}",
        "endpoints": [{"path": HOOK_PATH, "plugin": "echo", "secret_ref": "gh-secret",
                       "signature_header": "X-Hub-Signature-256",
                       "dedupe_header": "X-GitHub-Delivery",
                       "match": [{"header": "X-GitHub-Event", "equals": "push"}]}],
    }})
    gw = Gateway(cfg, port=port).start()
    try:
        yield gw, f"http://127.0.0.1:{hook_port}"
    finally:
        assert gw.stop() == 0


@pytest.fixture
def relay_gateway(tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    cfg = tmp_path / "b"
    make_vault(cfg, {"api-token": TOKEN, "read-token": READ_TOKEN, "from-a": RELAY_SECRET})
    write_config(cfg, port=port, service={"name": "gw-b"}, extra={
        "remote_ingress": {"peers": [{"name": "gw-a", "secret_ref": "from-a"}]},
        "pipelines": [{"name": "on-backup", "on": "backup.ready",
                       "steps": [{"id": "note", "uses": "echo"}]}]})
    gw = Gateway(cfg, port=port).start()
    try:
        yield gw
    finally:
        assert gw.stop() == 0


def _events_until_reload(gw: Gateway, kinds: str) -> list[SseEvent]:
    """Every stored event of `kinds` (a `type` filter), from the first, up to a reload made
    now: the reload's own event ends the read, so a missing event fails instead of waiting."""
    assert gw.post("/system/reload").status_code == 200
    query = f"?last_event_id=0&type={kinds}&type=reload.swapped"
    seen: list[SseEvent] = []
    with _stream(gw, query) as chunks:
        parser = SseParser()
        for chunk in chunks:
            for event in parser.feed(chunk):
                if event.event == "reload.swapped":
                    return seen
                seen.append(event)
    raise AssertionError(f"the stream ended before the reload's event; got {seen}")


@contextmanager
def _stream(gw: Gateway, query: str) -> Iterator[Iterator[str]]:
    with httpx.stream("GET", f"{gw.url}/events{query}", headers=gw.headers(),
                      timeout=httpx.Timeout(10.0, read=30.0)) as resp:
        assert resp.status_code == 200, resp.read()
        yield resp.iter_text()


def _data(event: SseEvent) -> dict[str, Any]:
    value = json.loads(event.data)
    assert isinstance(value, dict)
    return value


def _counts(gw: Gateway, family: str, **labels: str) -> dict[str, float]:
    """`{outcome: value}` of the `<family>_total` samples whose labels include `labels`."""
    resp = gw.get("/metrics")
    assert resp.status_code == 200, resp.text
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    counted: dict[str, float] = {}
    for sample in families[family].samples:
        if sample.name == f"{family}_total" and labels.items() <= sample.labels.items():
            counted[sample.labels["outcome"]] = sample.value
    return counted


def test_each_webhook_delivery_is_one_event_and_one_count_by_outcome(
        webhook_gateway: tuple[Gateway, str]) -> None:
    gw, hooks = webhook_gateway
    url = hooks + HOOK_PATH
    body = json.dumps({"ref": "refs/heads/main", "note": MARKER}).encode()
    signature = sign_github(HOOK_SECRET.encode(), body)
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "delivery-1",
               "X-GitHub-Event": "push", "Content-Type": "application/json"}
    text = f"note={MARKER} as plain text".encode()
    answers = [
        httpx.post(url, content=body, headers=headers, timeout=10),  # enqueued
        httpx.post(url, content=body, headers=headers, timeout=10),  # deduplicated
        httpx.post(url, content=body + b" ", headers=headers, timeout=10),  # forbidden
        httpx.post(url, content=body, timeout=10, headers={  # ignored: not a push
            **headers, "X-GitHub-Event": "issues", "X-GitHub-Delivery": "delivery-2"}),
        httpx.post(url, content=text, timeout=10, headers={  # rejected: neither JSON nor form
            **headers, "X-Hub-Signature-256": sign_github(HOOK_SECRET.encode(), text),
            "X-GitHub-Delivery": "delivery-3", "Content-Type": "text/plain"}),
    ]
    # Not deliveries: an unknown path and another method publish nothing and count nothing.
    assert httpx.post(hooks + "/hooks/unknown", content=body, timeout=10).status_code == 404
    assert httpx.get(url, timeout=10).status_code == 405
    assert [a.status_code for a in answers] == [202, 200, 403, 202, 415], \
        [a.text for a in answers]
    job_id = answers[0].json()["job_id"]
    assert answers[1].json() == {"job_id": job_id, "deduplicated": True}
    assert answers[3].json()["status"] == "ignored"

    outcomes = ["enqueued", "deduplicated", "forbidden", "ignored", "rejected"]
    assert _counts(gw, "ductile_webhook_deliveries", endpoint=HOOK_PATH) == \
        dict.fromkeys(outcomes, 1.0)
    assert _counts(gw, "ductile_webhook_deliveries") == dict.fromkeys(outcomes, 1.0)

    events = _events_until_reload(gw, "webhook.*")
    assert [e.event for e in events] == ["webhook.delivery"] * 5
    ids = [int(e.id or 0) for e in events]
    assert ids == sorted(set(ids))
    found = [_data(e) for e in events]
    for data in found:
        assert data["at"].endswith("Z")
        assert MARKER not in json.dumps(data) and signature not in json.dumps(data)
    assert [{k: v for k, v in d.items() if k != "at"} for d in found] == [
        {"path": HOOK_PATH, "outcome": "enqueued", "status": 202, "job_id": job_id},
        {"path": HOOK_PATH, "outcome": "deduplicated", "status": 200, "job_id": job_id},
        {"path": HOOK_PATH, "outcome": "forbidden", "status": 403},
        {"path": HOOK_PATH, "outcome": "ignored", "status": 202},
        {"path": HOOK_PATH, "outcome": "rejected", "status": 415},
    ]


def test_each_relay_envelope_received_is_one_event_and_one_count_by_outcome(
        relay_gateway: Gateway) -> None:
    gw = relay_gateway
    body = build_envelope("backup.ready", {"n": 1, "note": MARKER},
                          origin={"instance": "gw-a", "event_id": "e-1"})
    headers = signed_headers("hmac", RELAY_SECRET.encode(), sender="gw-a", method="POST",
                             path=RELAY_PATH, body=body, now=datetime.now(timezone.utc))
    accepted = httpx.post(gw.url + RELAY_PATH, content=body, headers=headers, timeout=10)
    replayed = httpx.post(gw.url + RELAY_PATH, content=body, headers=headers, timeout=10)
    forged = httpx.post(gw.url + RELAY_PATH, content=body.replace(b'"n":1', b'"n":2'),
                        headers=headers, timeout=10)
    assert [accepted.status_code, replayed.status_code, forged.status_code] == [202, 409, 403]
    job_id = accepted.json()["job_id"]

    assert _counts(gw, "ductile_relay_deliveries", direction="received") == {
        "accepted": 1.0, "replayed": 1.0, "forbidden": 1.0}

    events = _events_until_reload(gw, "relay.*")
    assert [e.event for e in events] == ["relay.delivery"] * 3
    found = [_data(e) for e in events]
    for data in found:
        text = json.dumps(data)
        assert MARKER not in text
        assert all(value not in text for value in headers.values() if len(value) > 20)
    assert [{k: v for k, v in d.items() if k != "at"} for d in found] == [
        {"peer": "gw-a", "outcome": "accepted", "status": 202, "job_id": job_id},
        {"peer": "gw-a", "outcome": "replayed", "status": 409},
        {"peer": "gw-a", "outcome": "forbidden", "status": 403},
    ]


# -- the outcomes a running gateway is not pushed into on purpose ------------------------------

SMALL = WebhookEndpoint(path="/small", plugin="echo", secret_ref="s",
                        signature_header="X-Hub-Signature-256", max_body_size=64)


@asynccontextmanager
async def _served(enqueue: Enqueue, hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """The webhook app alone on 127.0.0.1, publishing to `hub`."""
    app = create_webhook_app([SMALL], {SMALL.path: HOOK_SECRET.encode()}, enqueue,
                             Logger("webhook", stream=io.StringIO()), publish=hub.publish)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    config = webhook_hypercorn_config(f"fd://{os.dup(listener.fileno())}",
                                      graceful_timeout=1.0)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            try:
                async with httpx.AsyncClient(base_url=url) as client:
                    yield client
            finally:
                stop.set()
    finally:
        listener.close()


async def test_unstored_and_oversized_webhook_deliveries_are_counted(tmp_path: Path) -> None:
    hub, metrics = Hub(), Metrics()
    hub.add_tap(metrics.observe)
    seen: list[dict[str, Any]] = []

    def record(event: Event) -> None:
        if event.type == "webhook.delivery":
            seen.append(dict(event.fields()))

    hub.add_tap(record)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the enqueue path")

    db = await Database.open(str(tmp_path / "ductile.db"))
    queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
    body = b'{"a": 1}'
    signed = {"X-Hub-Signature-256": sign_github(HOOK_SECRET.encode(), body),
              "Content-Type": "application/json"}
    try:
        async with _served(queue.enqueue, hub) as client:
            big = b'{"a": "' + b"x" * 100 + b'"}'
            too_big = await client.post(SMALL.path, content=big, headers={
                **signed, "X-Hub-Signature-256": sign_github(HOOK_SECRET.encode(), big)})
            await db.close()  # every write now raises StoreError
            unstored = await client.post(SMALL.path, content=body, headers=signed)
        async with _served(broken, hub) as client:
            failed = await client.post(SMALL.path, content=body, headers=signed)
    finally:
        await db.close()
    assert [too_big.status_code, unstored.status_code, failed.status_code] == [413, 503, 503]
    assert [{k: v for k, v in d.items() if k != "at"} for d in seen] == [
        {"path": SMALL.path, "outcome": "rejected", "status": 413},
        {"path": SMALL.path, "outcome": "unavailable", "status": 503},
        {"path": SMALL.path, "outcome": "unavailable", "status": 503},
    ]
    text = metrics.render(queue_depth=0, running=0, subscribers=0).decode()
    counted = {s.labels["outcome"]: s.value
               for f in text_string_to_metric_families(text)
               if f.name == "ductile_webhook_deliveries"
               for s in f.samples if s.name == "ductile_webhook_deliveries_total"}
    assert counted == {"rejected": 1.0, "unavailable": 2.0}
