"""hypercorn's per-connection server as every plane runs it (`serve_plane`, planes/http.py).

`ContainedTCPServer` is hypercorn 0.18's `TCPServer` with one fault contained and three costs
removed from every request; what goes on the wire, and when, is what hypercorn would send:

- A BusyResourceError from a send ends that connection, never the server (see the class).
- The head of an answer held in memory goes out with its body, one write instead of two
  (`HeldHead`, set by ShieldedSendConnection in planes/http.py).
- The end of a body with a Content-Length is an empty write (h11 has nothing to frame it
  with): hypercorn would still take its send lock, open a shielded scope and yield to the
  scheduler for it; it is dropped.
- The keep-alive timer is one task per connection whose deadline moves (`KeepAlive`), where
  hypercorn starts a new task after every answer and cancels it when the next request's
  headers are complete.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Any

import trio
from hypercorn.events import Closed, RawData
from hypercorn.trio.tcp_server import TCPServer

#: The HTTP versions whose answer is one byte stream (h11): a head can be written with its body.
HTTP1 = frozenset({"1.0", "1.1"})


class HeldHead:
    """The head (status line and headers) of one in-memory answer over HTTP/1, held by the
    connection's server until the next thing it sends, which it then prefixes: the body, or
    for a body hypercorn suppresses (HEAD, 204, 304) the empty end of the message.

    Shared through `HELD_HEAD`, a context variable: hypercorn calls the server's send from
    inside the app's ASGI `send`, in the app's task, so no other task (the reader's
    `100 Continue`, hypercorn's own error answers) sees it."""

    __slots__ = ("data", "holding", "server")

    def __init__(self) -> None:
        self.data = b""
        self.holding = True  # while the head is being sent
        self.server: ContainedTCPServer | None = None

    def take(self) -> bytes:
        data, self.data = self.data, b""
        return data

    async def flush(self) -> None:
        """Write what is still held (the send failed between head and body)."""
        if self.data and self.server is not None:
            await self.server.protocol_send(RawData(self.take()))


HELD_HEAD: ContextVar[HeldHead | None] = ContextVar("ductile_held_head", default=None)


class KeepAlive:
    """hypercorn's keep-alive timer, with the interface of the `TrioSingleTask` it replaces.

    hypercorn calls `restart` when a connection opens and after each answer (idle: close it
    after `keep_alive_timeout`, or at once when the server is stopping) and `stop` when a
    request's headers are complete (busy: no timeout). Its own timer starts a task on each
    `restart` and cancels it on `stop`. Here one task per connection waits under a deadline
    those calls move, with the same outcome: an idle connection is closed after the timeout
    (this also bounds how long a client may take to send its headers), a stopping server
    closes idle connections at once and busy ones as soon as they are answered.
    """

    def __init__(self, server: TCPServer) -> None:
        self._server = server
        self._deadline = math.inf
        self._idle = False
        self._started = False
        self._done = False
        self._scope: trio.CancelScope | None = None  # the task's current wait
        self._answered: trio.Event | None = None  # set on the next restart (stopping, busy)

    async def restart(self, task_group: Any, action: Any) -> None:
        """Idle from now. `action` (hypercorn's timer body) is not used: `_watch` is it."""
        self._idle = True
        self._deadline = trio.current_time() + self._server.config.keep_alive_timeout
        if self._scope is not None:
            self._scope.deadline = self._deadline
        if not self._started:
            self._started = True
            task_group.spawn(self._watch)
        if self._answered is not None:
            self._answered.set()

    async def stop(self) -> None:
        """Busy: no timeout until the next `restart`."""
        self._idle = False
        self._deadline = math.inf
        if self._scope is not None:
            self._scope.deadline = math.inf

    def close(self) -> None:
        """The connection is ending: the task ends too (the connection's task group waits
        for it, as for any task of the connection)."""
        self._done = True
        if self._scope is not None:
            self._scope.cancel()
        if self._answered is not None:
            self._answered.set()

    async def _watch(self) -> None:
        terminated = self._server.context.terminated
        while not self._done:
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                await terminated.wait()
            self._scope = None
            if self._done:
                return
            if self._idle:
                break  # idle past the timeout, or idle while the server stops
            if not terminated.is_set():
                continue  # the deadline passed just as a request arrived: it is busy now
            # The server stops while a request is in flight: close once it is answered.
            self._answered = trio.Event()
            await self._answered.wait()
            if self._done:
                return
            break
        if self._done:
            return
        with trio.CancelScope(shield=True):
            await self._server._initiate_server_close()


class ContainedTCPServer(TCPServer):
    """hypercorn's per-connection server, with one race contained to its connection and the
    per-request costs of the module docstring removed.

    When a client sends bytes h11 refuses (a bad chunk size) while the app's answer closes the
    connection, hypercorn's reader sends its own 400 while the close (`send_eof`, which does not
    take hypercorn's send lock) is under way. trio refuses the second concurrent send with
    BusyResourceError, and in hypercorn 0.18 that error escapes the connection's task and ends
    the whole server: one malformed request took the gateway down. The connection is closing
    anyway, so the send is moot: this ends that connection only.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = KeepAlive(self)  # type: ignore[assignment]

    async def protocol_send(self, event: Any) -> None:
        head = HELD_HEAD.get()
        if head is not None:
            if head.holding and type(event) is RawData:
                head.data += event.data
                head.server = self
                return
            if head.data:
                if type(event) is RawData:
                    event = RawData(head.take() + event.data)
                else:
                    await self._send_contained(RawData(head.take()))
        if type(event) is RawData and not event.data:
            return
        await self._send_contained(event)

    async def _send_contained(self, event: Any) -> None:
        try:
            await super().protocol_send(event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            # Nothing more will be read: the keep-alive task must not hold the connection.
            self.idle_task.close()  # type: ignore[attr-defined]
