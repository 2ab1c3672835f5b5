"""The webhook plane over real HTTP: hypercorn on 127.0.0.1, a real Queue on a real SQLite file.

Each test serves `create_webhook_app` with `hypercorn.trio.serve` on a socket bound to port 0
(handed over as `fd://`, the way the supervisor does it) and talks to it with httpx or a raw
socket.
"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.trio import serve

from ductile.config.webhooks import WebhookEndpoint
from ductile.logs import Logger
from ductile.planes.webhook.app import WebhookApp, create_webhook_app
from ductile.planes.webhook.server import webhook_hypercorn_config
from ductile.planes.webhook.verify import sign_github, sign_slack, sign_stripe
from ductile.store import Database, Queue

SECRET = b"it-is-a-secret"
NOW = 1_780_000_000  # the injected clock, Unix seconds

GITHUB = WebhookEndpoint(path="/webhook/github", plugin="github-handler",
                         secret_ref="gh", signature_header="X-Hub-Signature-256",
                         dedupe_header="X-GitHub-Delivery")
STRIPE = WebhookEndpoint(path="/webhook/stripe", plugin="billing", secret_ref="stripe",
                         signature_header="Stripe-Signature", scheme="stripe", tolerance=300)
SLACK = WebhookEndpoint(path="/webhook/slack", plugin="chat", secret_ref="slack",
                        signature_header="X-Slack-Signature", scheme="slack", tolerance=300)
SMALL = WebhookEndpoint(path="/small", plugin="tiny", secret_ref="s",
                        signature_header="X-Signature-256", max_body_size=64)
ENDPOINTS = (GITHUB, STRIPE, SLACK, SMALL)


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Server:
    url: str
    port: int
    queue: Queue
    db: Database
    clock: Clock
    app: WebhookApp
    log: io.StringIO = field(default_factory=io.StringIO)

    async def jobs(self) -> list[Any]:
        return (await self.queue.list(limit=200))[0]


@asynccontextmanager
async def webhook_server(
    tmp_path: Path,
    *,
    endpoints: tuple[WebhookEndpoint, ...] = ENDPOINTS,
    body_timeout: float = 10.0,
    keep_alive_timeout: float = 10.0,
    read_timeout: int = 10,
    secrets: dict[str, bytes] | None = None,
) -> AsyncIterator[Server]:
    db = await Database.open(str(tmp_path / "ductile.db"))
    queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
    clock = Clock()
    log = io.StringIO()
    app = create_webhook_app(
        endpoints,
        {e.path: SECRET for e in endpoints} if secrets is None else secrets,
        queue.enqueue,
        Logger("webhook", stream=log),
        clock=clock,
        body_timeout=body_timeout,
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    config = webhook_hypercorn_config(
        f"fd://{os.dup(listener.fileno())}", read_timeout=read_timeout,
        keep_alive_timeout=keep_alive_timeout, graceful_timeout=1.0,
    )
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            try:
                yield Server(f"http://127.0.0.1:{port}", port, queue, db, clock, app, log)
            finally:
                stop.set()
    finally:
        listener.close()
        await db.close()


def github_headers(body: bytes, secret: bytes = SECRET, **extra: str) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign_github(secret, body),
            "Content-Type": "application/json", **extra}


def stripe_headers(body: bytes, secret: bytes = SECRET, ts: int = NOW) -> dict[str, str]:
    return {"Stripe-Signature": sign_stripe(secret, body, ts)}


def slack_headers(body: bytes, secret: bytes = SECRET, ts: int = NOW) -> dict[str, str]:
    return {"X-Slack-Signature": sign_slack(secret, body, ts),
            "X-Slack-Request-Timestamp": str(ts)}


SIGNERS: dict[str, tuple[str, Callable[..., dict[str, str]]]] = {
    "github": (GITHUB.path, github_headers),
    "stripe": (STRIPE.path, stripe_headers),
    "slack": (SLACK.path, slack_headers),
}

# Pretty-printed, with escapes and odd number spellings: re-encoding would change every byte.
BODY = (b'{\n  "action": "opened",\n  "title": "caf\\u00e9 \xc3\xa9",\n'
        b'  "n": 1.50, "big": 1e3,\n  "nested": {"b": 2, "a": [1, 2 ]}\n}\n')


# -- accepted deliveries -------------------------------------------------------------------


async def test_github_delivery_is_queued_with_the_body_stored_byte_for_byte(tmp_path: Path) -> None:
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(GITHUB.path, content=BODY, headers=github_headers(BODY))
        assert response.status_code == 202
        assert response.headers["content-type"] == "application/json"
        job_id = response.json()["job_id"]
        assert set(response.json()) == {"job_id"}
        job = await server.queue.get(job_id)
        assert job is not None
        assert (job.plugin, job.command, job.status) == ("github-handler", "handle", "queued")
        assert job.submitted_by == "webhook:/webhook/github"
        assert job.payload is not None and job.payload.encode("utf-8") == BODY


async def test_bare_hex_github_signature_is_accepted(tmp_path: Path) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    bare = sign_github(SECRET, body).removeprefix("sha256=")
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(GITHUB.path, content=body,
                                headers={"X-Hub-Signature-256": bare.upper()})
        assert response.status_code == 202
        assert len(await server.jobs()) == 1


async def test_stripe_delivery_is_accepted_when_any_v1_matches(tmp_path: Path) -> None:
    body = b'{"id": "evt_1", "type": "invoice.paid"}'
    good = sign_stripe(SECRET, body, NOW)
    old_secret = sign_stripe(b"previous-secret", body, NOW).split(",")[1]
    header = f"t={NOW},{old_secret}, {good.split(',')[1]},v0=ignored"
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(STRIPE.path, content=body,
                                headers={"Stripe-Signature": header})
        assert response.status_code == 202
        job = await server.queue.get(response.json()["job_id"])
        assert job is not None and job.plugin == "billing"
        assert job.payload == body.decode()


async def test_slack_delivery_is_accepted(tmp_path: Path) -> None:
    body = b'{"type": "event_callback", "event": {"type": "app_mention"}}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(SLACK.path, content=body, headers=slack_headers(body))
        assert response.status_code == 202
        job = await server.queue.get(response.json()["job_id"])
        assert job is not None and job.submitted_by == "webhook:/webhook/slack"


async def test_timestamp_inside_the_tolerance_window_is_accepted(tmp_path: Path) -> None:
    body = b'{"ok": true}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        server.clock.now = NOW + 299
        assert (await c.post(STRIPE.path, content=body,
                             headers=stripe_headers(body))).status_code == 202
        server.clock.now = NOW - 299  # a sender clock slightly ahead of ours
        assert (await c.post(SLACK.path, content=body,
                             headers=slack_headers(body))).status_code == 202


# -- signature refusals: always 403 {"error": "forbidden"}, never a job ---------------------


async def assert_forbidden(server: Server, response: httpx.Response) -> None:
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden"}
    assert await server.jobs() == []


@pytest.mark.parametrize("scheme", ["github", "stripe", "slack"])
async def test_tampered_body_is_forbidden(tmp_path: Path, scheme: str) -> None:
    path, sign = SIGNERS[scheme]
    body = b'{"amount": 100}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(path, content=b'{"amount": 900}', headers=sign(body))
        await assert_forbidden(server, response)


@pytest.mark.parametrize("scheme", ["github", "stripe", "slack"])
async def test_wrong_secret_is_forbidden(tmp_path: Path, scheme: str) -> None:
    path, sign = SIGNERS[scheme]
    body = b'{"amount": 100}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(path, content=body, headers=sign(body, b"not-the-secret"))
        await assert_forbidden(server, response)


@pytest.mark.parametrize("scheme", ["github", "stripe", "slack"])
async def test_missing_signature_header_is_forbidden(tmp_path: Path, scheme: str) -> None:
    path, _sign = SIGNERS[scheme]
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(path, content=b"{}", headers={"X-Slack-Request-Timestamp":
                                                               str(NOW)})
        await assert_forbidden(server, response)


@pytest.mark.parametrize("header", [
    {"X-Hub-Signature-256": ""},
    {"X-Hub-Signature-256": "sha256="},
    {"X-Hub-Signature-256": "sha1=0123456789abcdef0123456789abcdef01234567"},
    {"X-Hub-Signature-256": "sha256=zz" + "0" * 62},
    {"X-Hub-Signature-256": "sha256=" + "0" * 64},
])
async def test_malformed_github_signature_is_forbidden(tmp_path: Path,
                                                       header: dict[str, str]) -> None:
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        await assert_forbidden(server, await c.post(GITHUB.path, content=b"{}", headers=header))


async def test_slack_without_its_timestamp_header_is_forbidden(tmp_path: Path) -> None:
    body = b"{}"
    headers = slack_headers(body)
    del headers["X-Slack-Request-Timestamp"]
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        await assert_forbidden(server, await c.post(SLACK.path, content=body, headers=headers))


@pytest.mark.parametrize("scheme", ["stripe", "slack"])
@pytest.mark.parametrize("skew", [301, -301, 86400])
async def test_timestamp_outside_the_tolerance_is_forbidden(tmp_path: Path, scheme: str,
                                                            skew: int) -> None:
    path, sign = SIGNERS[scheme]
    body = b'{"replayed": true}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        server.clock.now = NOW + skew
        await assert_forbidden(server, await c.post(path, content=body, headers=sign(body)))


async def test_the_refusal_reason_is_logged_but_not_returned(tmp_path: Path) -> None:
    body = b'{"x": 1}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        server.clock.now = NOW + 3600
        response = await c.post(STRIPE.path, content=body, headers=stripe_headers(body))
        assert response.text == '{"error": "forbidden"}\n'
    lines = [json.loads(line) for line in server.log.getvalue().splitlines()]
    rejected = [line for line in lines if line["msg"] == "webhook signature rejected"]
    assert rejected[0]["reason"] == "timestamp outside tolerance"
    assert rejected[0]["path"] == STRIPE.path


async def test_endpoint_without_a_secret_refuses_every_delivery(tmp_path: Path) -> None:
    body = b"{}"
    async with webhook_server(tmp_path, secrets={}) as server, \
            httpx.AsyncClient(base_url=server.url) as c:
        await assert_forbidden(server, await c.post(GITHUB.path, content=body,
                                                    headers=github_headers(body, b"")))


# -- replay, body rules ----------------------------------------------------------------------


async def test_redelivery_with_the_same_dedupe_header_makes_one_job(tmp_path: Path) -> None:
    body = b'{"action": "push"}'
    headers = github_headers(body, **{"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab"})
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        first = await c.post(GITHUB.path, content=body, headers=headers)
        again = await c.post(GITHUB.path, content=body, headers=headers)
        assert first.status_code == 202
        assert again.status_code == 200
        assert again.json() == {"job_id": first.json()["job_id"], "deduplicated": True}
        jobs = await server.jobs()
        assert [job.id for job in jobs] == [first.json()["job_id"]]
        assert jobs[0].dedupe_key == "72d3162e-cc78-11e3-81ab"
        other = await c.post(GITHUB.path, content=body,
                             headers={**headers, "X-GitHub-Delivery": "another-delivery"})
        assert other.status_code == 202
        assert len(await server.jobs()) == 2


@pytest.mark.parametrize("body", [b"not json", b"", b"{\"a\": NaN}", b"\xff\xfe{}",
                                  b"\xef\xbb\xbf{}", b"[" * 100_000])
async def test_signed_body_that_is_not_json_is_refused_with_400(tmp_path: Path,
                                                                body: bytes) -> None:
    endpoint = WebhookEndpoint(path="/big", plugin="p", secret_ref="s",
                               signature_header="X-Hub-Signature-256")
    async with webhook_server(tmp_path, endpoints=(endpoint,)) as server, \
            httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post("/big", content=body, headers=github_headers(body))
        assert response.status_code == 400
        assert "JSON" in response.json()["error"]
        assert await server.jobs() == []


async def test_body_over_the_limit_with_content_length_is_413(tmp_path: Path) -> None:
    body = b'{"pad": "' + b"x" * 100 + b'"}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        response = await c.post(SMALL.path, content=body,
                                headers={"X-Signature-256": sign_github(SECRET, body)})
        assert response.status_code == 413
        assert response.json() == {"error": "payload too large (limit 64 bytes)"}
        assert await server.jobs() == []
        # The next request, on whatever connection, is served normally.
        ok = b'{"pad": "' + b"x" * 53 + b'"}'
        assert len(ok) == 64
        response = await c.post(SMALL.path, content=ok,
                                headers={"X-Signature-256": sign_github(SECRET, ok)})
        assert response.status_code == 202


async def test_chunked_body_over_the_limit_is_413_before_it_ends(tmp_path: Path) -> None:
    async with webhook_server(tmp_path) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        # No Content-Length, and the body never ends: only a streaming cap can answer this.
        await stream.send_all(b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              b"X-Signature-256: sha256=" + b"0" * 64 + b"\r\n\r\n"
                              + (b"20\r\n" + b"x" * 32 + b"\r\n") * 3)
        await stream.send_all(b"20\r\n" + b"y" * 32 + b"\r\n")
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(4096):
                received += chunk
        await stream.aclose()
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        assert b"connection: close" in head.lower()
        assert json.loads(body) == {"error": "payload too large (limit 64 bytes)"}
        assert await server.jobs() == []


async def test_unknown_path_is_404_json_and_wrong_method_is_405_json(tmp_path: Path) -> None:
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        missing = await c.post("/webhook/nope", content=b"{}")
        assert missing.status_code == 404
        assert missing.json() == {"error": "endpoint not found"}
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
            wrong = await c.request(method, GITHUB.path)
            assert wrong.status_code == 405
            assert wrong.headers["allow"] == "POST"
            assert "POST" in wrong.json()["error"]
        root = await c.get("/")
        assert root.status_code == 404 and root.json() == {"error": "endpoint not found"}
        assert await server.jobs() == []


async def test_store_failure_is_503_json_not_500(tmp_path: Path) -> None:
    body = b'{"a": 1}'
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        await server.db.close()  # every write now raises StoreError
        response = await c.post(GITHUB.path, content=body, headers=github_headers(body))
        assert response.status_code == 503
        assert response.json() == {"error": "failed to enqueue job; retry later"}


# -- hostile senders -------------------------------------------------------------------------


async def test_slowloris_headers_do_not_block_others_and_are_dropped(tmp_path: Path) -> None:
    async with webhook_server(tmp_path, keep_alive_timeout=0.5) as server, \
            httpx.AsyncClient(base_url=server.url) as c:
        slow = await trio.open_tcp_stream("127.0.0.1", server.port)
        await slow.send_all(b"POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-Hub-Sig")
        body = b'{"while": "someone is slow"}'
        response = await c.post(GITHUB.path, content=body, headers=github_headers(body))
        assert response.status_code == 202
        # The server hangs up on the half-sent request (bounded wait, not a timing assertion).
        with trio.fail_after(10):
            while await slow.receive_some(1024):
                pass
        await slow.aclose()


async def test_slow_body_gets_408_and_others_are_still_served(tmp_path: Path) -> None:
    async with webhook_server(tmp_path, body_timeout=0.5) as server, \
            httpx.AsyncClient(base_url=server.url) as c:
        slow = await trio.open_tcp_stream("127.0.0.1", server.port)
        await slow.send_all(b"POST /webhook/github HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 100\r\n\r\n{\"partial\":")
        body = b'{"fast": true}'
        assert (await c.post(GITHUB.path, content=body,
                             headers=github_headers(body))).status_code == 202
        received = b""
        with trio.fail_after(10):
            while chunk := await slow.receive_some(1024):
                received += chunk
        await slow.aclose()
        assert received.startswith(b"HTTP/1.1 408")
        assert len(await server.jobs()) == 1


async def test_garbage_on_the_socket_does_not_hurt_the_listener(tmp_path: Path) -> None:
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        bad = await trio.open_tcp_stream("127.0.0.1", server.port)
        await bad.send_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        with trio.fail_after(10):
            while await bad.receive_some(1024):
                pass
        await bad.aclose()
        body = b"{}"
        assert (await c.post(GITHUB.path, content=body,
                             headers=github_headers(body))).status_code == 202


async def test_a_good_delivery_is_accepted_after_1000_bad_requests(tmp_path: Path) -> None:
    body = b'{"n": 1}'
    bad_requests: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("POST", GITHUB.path, body, github_headers(body, b"wrong")),
        ("POST", GITHUB.path, b'{"n": 2}', github_headers(body)),
        ("POST", STRIPE.path, body, {"Stripe-Signature": "t=abc,v1=zz"}),
        ("POST", SLACK.path, body, slack_headers(body, ts=NOW - 10_000)),
        ("POST", "/nowhere", body, {}),
        ("GET", GITHUB.path, b"", {}),
        ("POST", SMALL.path, b"x" * 65, {}),
        ("POST", GITHUB.path, b"not json", github_headers(b"not json")),
    ]
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        statuses = set()
        for i in range(1000):
            method, path, content, headers = bad_requests[i % len(bad_requests)]
            response = await c.request(method, path, content=content, headers=headers)
            statuses.add(response.status_code)
            assert response.headers["content-type"] == "application/json"
        assert statuses == {400, 403, 404, 405, 413}
        assert await server.jobs() == []
        good = await c.post(GITHUB.path, content=body, headers=github_headers(body))
        assert good.status_code == 202
        assert len(await server.jobs()) == 1


async def test_replaced_routes_take_effect_without_restarting_the_listener(tmp_path: Path) -> None:
    body = b'{"reloaded": true}'
    moved = WebhookEndpoint(path="/webhook/v2", plugin="github-handler", secret_ref="gh2",
                            signature_header="X-Hub-Signature-256")
    async with webhook_server(tmp_path) as server, httpx.AsyncClient(base_url=server.url) as c:
        assert (await c.post(GITHUB.path, content=body,
                             headers=github_headers(body))).status_code == 202
        server.app.replace_routes([moved], {moved.path: b"rolled"}, server.queue.enqueue)
        assert (await c.post(GITHUB.path, content=body,
                             headers=github_headers(body))).status_code == 404
        assert (await c.post(moved.path, content=body,
                             headers=github_headers(body))).status_code == 403
        accepted = await c.post(moved.path, content=body, headers=github_headers(body, b"rolled"))
        assert accepted.status_code == 202
        job = await server.queue.get(accepted.json()["job_id"])
        assert job is not None and job.submitted_by == "webhook:/webhook/v2"
