"""Connections as the supervisor serves them (`serve_plane`: hypercorn with
ContainedTCPServer, planes/tcp.py), on 127.0.0.1 with the webhook app and a real queue.

- An answer held in memory (every JSON answer) is one write: its head goes out with its
  body, and the empty end of a Content-Length body is not written. The writes are counted by
  wrapping `trio.SocketStream.send_all` (the real call still runs); only the server's side of
  each connection is counted.
- The keep-alive timer (one task per connection, its deadline moved) closes an idle
  connection, and a client too slow with its headers, after `keep_alive_timeout`; never a
  connection whose request is in flight; at a stop, idle connections at once and busy ones
  once answered.
"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from ductile.config.webhooks import WebhookEndpoint
from ductile.logs import Logger
from ductile.planes.http import serve_plane
from ductile.planes.webhook.app import create_webhook_app
from ductile.planes.webhook.server import webhook_hypercorn_config
from ductile.planes.webhook.verify import sign_github
from ductile.store import Database, Queue

SECRET = b"write-count-secret"
HOOK = WebhookEndpoint(path="/hooks/one", plugin="echo", secret_ref="s",
                       signature_header="X-Hub-Signature-256", max_body_size=256)


@dataclass
class Served:
    port: int
    queue: Queue
    log: io.StringIO
    writes: list[bytes] = field(default_factory=list)  # the server's writes, in order
    stop: trio.Event = field(default_factory=trio.Event)  # the shutdown trigger

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


@asynccontextmanager
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                 keep_alive_timeout: float = 10.0) -> AsyncIterator[Served]:
    db = await Database.open(str(tmp_path / "ductile.db"))
    queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
    log = io.StringIO()
    app = create_webhook_app([HOOK], {HOOK.path: SECRET}, queue.enqueue,
                             Logger("webhook", stream=log), body_timeout=5.0)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    result = Served(port, queue, log)
    original: Callable[..., Awaitable[None]] = trio.SocketStream.send_all

    async def counted(self: trio.SocketStream, data: Any) -> None:
        if self.socket.getsockname()[1] == port:  # the server's end of a connection
            result.writes.append(bytes(data))
        await original(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counted)
    config = webhook_hypercorn_config(f"fd://{os.dup(listener.fileno())}", graceful_timeout=5.0,
                                      keep_alive_timeout=keep_alive_timeout)
    stop = result.stop
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_plane, app, config, shutdown_trigger=stop.wait))
            try:
                yield result
            finally:
                stop.set()
    finally:
        listener.close()
        await db.close()


class Client:
    """One keep-alive connection; reads each answer by its Content-Length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def ask(self, request: bytes, *, head: bool = False) -> tuple[bytes, bytes]:
        """Send `request`; return (the head, the body) of the answer."""
        await self.stream.send_all(request)
        with trio.fail_after(10):
            while b"\r\n\r\n" not in self.buffer:
                await self._more()
            top, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            length = 0 if head else _content_length(top)
            while len(self.buffer) < length:
                await self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return top + b"\r\n\r\n", body

    async def closed(self, within: float = 10.0) -> bool:
        """Whether the server closed the connection within `within` seconds."""
        with trio.move_on_after(within):
            while True:
                try:
                    chunk = await self.stream.receive_some(4096)
                except trio.BrokenResourceError:  # a reset is a close too
                    return True
                if not chunk:
                    return True
                self.buffer += chunk
        return False

    async def _more(self) -> None:
        chunk = await self.stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"connection closed mid-answer; got {self.buffer!r}")
        self.buffer += chunk


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no Content-Length in {head!r}")


def delivery(body: bytes) -> bytes:
    return (f"POST {HOOK.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Hub-Signature-256: {sign_github(SECRET, body)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_each_answer_is_one_write_on_a_kept_alive_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as server:
        client = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
        for n in range(3):
            before = len(server.writes)
            head, body = await client.ask(delivery(json.dumps({"n": n}).encode()))
            assert head.startswith(b"HTTP/1.1 202 "), head
            assert server.writes[before:] == [head + body]
        before = len(server.writes)
        head, body = await client.ask(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404 ") and json.loads(body) == {
            "error": "endpoint not found"}
        assert server.writes[before:] == [head + body]
        await client.stream.aclose()
        assert len((await server.queue.list(limit=10))[0]) == 3


async def test_an_answer_without_a_body_still_gets_its_head_and_the_connection_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HEAD: hypercorn drops the body, so the held head goes out with the end of the message.
    async with served(tmp_path, monkeypatch) as server:
        client = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
        before = len(server.writes)
        head, body = await client.ask(f"HEAD {HOOK.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                                      head=True)
        assert head.startswith(b"HTTP/1.1 405 ") and b"\r\nallow: post\r\n" in head.lower()
        assert body == b"" and server.writes[before:] == [head]
        head, _ = await client.ask(delivery(b'{"after": "head"}'))
        assert head.startswith(b"HTTP/1.1 202 "), head
        await client.stream.aclose()


async def test_an_early_answer_still_closes_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as server:
        client = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
        head, body = await client.ask(
            f"POST {HOOK.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n{{".encode())
        assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
        assert "payload too large" in json.loads(body)["error"]
        assert await client.closed()
        await client.stream.aclose()


async def test_an_accepted_delivery_is_one_log_line_with_its_job_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as server:
        client = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
        _, body = await client.ask(delivery(b'{"logged": "once"}'))
        await client.stream.aclose()
    job_id = json.loads(body)["job_id"]
    lines = [r for r in server.records() if r.get("job_id") == job_id]
    assert [r["msg"] for r in lines] == ["webhook request"], server.log.getvalue()
    assert lines[0]["status"] == 202 and lines[0]["path"] == HOOK.path


async def connect(server: Served) -> Client:
    return Client(await trio.open_tcp_stream("127.0.0.1", server.port))


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch, keep_alive_timeout=0.5) as server:
        client = await connect(server)
        for n in range(3):  # the timer is moved after every answer, not only the first
            if n:
                await trio.sleep(0.3)
            head, _ = await client.ask(delivery(json.dumps({"n": n}).encode()))
            assert head.startswith(b"HTTP/1.1 202 "), head
        answered = trio.current_time()
        assert await client.closed(within=5)
        assert trio.current_time() - answered >= 0.4  # not before the timeout
        await client.stream.aclose()


async def test_headers_sent_too_slowly_are_dropped_and_others_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch, keep_alive_timeout=0.5) as server:
        slow = await connect(server)
        opened = trio.current_time()
        await slow.stream.send_all(f"POST {HOOK.path} HTTP/1.1\r\nHost: x\r\n".encode())
        fast = await connect(server)
        head, _ = await fast.ask(delivery(b'{"fast": true}'))
        assert head.startswith(b"HTTP/1.1 202 "), head
        assert await slow.closed(within=5)
        assert trio.current_time() - opened >= 0.4
        assert slow.buffer == b""  # dropped without an answer, as hypercorn does
        await slow.stream.aclose()
        await fast.stream.aclose()


async def test_a_request_in_flight_past_the_keep_alive_timeout_is_not_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch, keep_alive_timeout=0.5) as server:
        client = await connect(server)
        request = delivery(b'{"slow": "body"}')
        top, _, body = request.partition(b"\r\n\r\n")
        await client.stream.send_all(top + b"\r\n\r\n")
        await trio.sleep(1.2)  # headers complete: busy, the body may take body_timeout (5 s)
        head, _ = await client.ask(body)
        assert head.startswith(b"HTTP/1.1 202 "), head
        head, _ = await client.ask(delivery(b'{"then": "another"}'))
        assert head.startswith(b"HTTP/1.1 202 "), head
        await client.stream.aclose()


async def test_a_stop_closes_idle_connections_at_once_and_busy_ones_once_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(tmp_path, monkeypatch) as server:  # keep-alive 10 s
        idle = await connect(server)
        head, _ = await idle.ask(delivery(b'{"idle": true}'))
        assert head.startswith(b"HTTP/1.1 202 "), head
        busy = await connect(server)
        top, _, body = delivery(b'{"busy": true}').partition(b"\r\n\r\n")
        await busy.stream.send_all(top + b"\r\n\r\n")
        await trio.sleep(0.2)
        server.stop.set()
        assert await idle.closed(within=3)  # long before its 10 s keep-alive
        head, _ = await busy.ask(body)
        assert head.startswith(b"HTTP/1.1 202 "), head
        assert await busy.closed(within=3)
        await idle.stream.aclose()
        await busy.stream.aclose()
        assert len((await server.queue.list(limit=10))[0]) == 2
