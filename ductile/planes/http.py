"""What every HTTP plane (API, management socket, webhooks) shares about its quart app: the
connection class that makes an early answer really close, the JSON answers (one helper for all
of them), and the request boundary for a fault in a handler."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart.utils import encode_headers
from quart.wrappers.response import DataBody
from quart_trio import QuartTrio
from hypercorn.trio import run as hypercorn_run
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ductile.planes.tcp import HELD_HEAD, HTTP1, ContainedTCPServer, HeldHead

if TYPE_CHECKING:
    from ductile.logs import Logger

#: Characters of a request path quoted back in an error message.
MAX_PATH_SHOWN = 200
#: Seconds to hand a (small JSON) response to hypercorn, shielded from cancellation.
SEND_TIMEOUT = 10.0
#: The media type of a live stream (Server-Sent Events), sent without a deadline.
EVENT_STREAM = "text/event-stream"
#: The HTTP versions a plane answers (hypercorn reports them so; h2/h3 only when configured).
HTTP_VERSIONS = frozenset({"1.0", "1.1", "2", "3"})


class ShieldedSendConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, made safe for answers given before the body was read.

    The one workaround, for every plane, of how hypercorn 0.18 and quart-trio treat an early
    answer (a 401 or 404 before the handler read the body, a 413 for a body over the limit):

    - Such an answer closes the connection (`Connection: close`). The unread rest of the body
      would otherwise sit in front of the next request on a keep-alive connection, and the
      client sending that request would wait for an answer that never comes.
    - The send is shielded from its own cancellation. quart-trio runs the handler and the ASGI
      receive loop as two tasks in a nursery; when hypercorn closes the socket from inside our
      send, the receive loop sees "disconnect" and cancels the nursery, which would cancel that
      very close half-way and leave the socket open until `read_timeout`. Shielding the send
      (bounded by SEND_TIMEOUT) lets the close finish.

    A live stream (`text/event-stream`) is the exception: it lasts as long as what it follows,
    and that same cancellation on "disconnect" is what ends it when the client goes away, so it
    is sent unshielded and unbounded.
    """

    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Any, send: Any
    ) -> None:
        response = await self.app.handle_request(request)
        if response.mimetype == EVENT_STREAM:
            await self._send_response(send, response)
            nursery.cancel_scope.cancel()
            return
        if not _body_complete(request):
            response.headers["Connection"] = "close"
        with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT):
            await self._send_response(send, response)
        nursery.cancel_scope.cancel()

    async def _send_response(self, send: Any, response: Any) -> None:
        """A body held in memory (every JSON answer) goes out as one ASGI body message that
        ends the response; quart would send it, then an empty one to end it, and each send
        is a trip through hypercorn's protocol and send lock. Over HTTP/1 its head is held
        back and written with the body, one write (`HeldHead`, planes/tcp.py). Anything else
        (a stream, a file) is sent by quart as it would be."""
        body = getattr(response, "response", None)
        if type(body) is not DataBody:
            await super()._send_response(send, response)
            return
        head = HeldHead() if self.scope.get("http_version") in HTTP1 else None
        token = HELD_HEAD.set(head)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": encode_headers(response.headers)})
            if head is not None:
                head.holding = False
            await send({"type": "http.response.body", "body": body.data[body.begin:body.end],
                        "more_body": False})
        finally:
            HELD_HEAD.reset(token)
            if head is not None:
                await head.flush()  # nothing came after the head: the send failed half-way


def _body_complete(request: Any) -> bool:
    """Whether the whole request body has arrived. A request that declares no body (no
    Content-Length or 0, not chunked) has none to wait for: the receive loop may not have
    marked it complete yet when a fast handler answers, and closing those connections would
    cost every keep-alive client a reconnect. Otherwise quart keeps completion as a private
    event on the body (no public accessor in quart 0.22); if that ever changes, the answer is
    "not complete", which only costs a reconnect."""
    headers = getattr(request, "headers", {})
    if "transfer-encoding" not in headers and headers.get("content-length", "0") == "0":
        return True
    complete = getattr(getattr(request, "body", None), "_complete", None)
    return bool(complete is not None and complete.is_set())


async def serve_plane(app: QuartTrio, config: Any, **kwargs: Any) -> None:
    """`hypercorn.trio.serve`, with each connection run by ContainedTCPServer.

    hypercorn builds its connection servers inside `hypercorn.trio.run` with no hook for the
    class, so the class is swapped there (the same class every time: idempotent).
    """
    from hypercorn.trio import serve

    hypercorn_run.TCPServer = ContainedTCPServer  # type: ignore[misc]
    await serve(app, config, **kwargs)


class PlaneApp(QuartTrio):
    """The quart-trio app of every HTTP plane: early answers really close the connection."""

    asgi_http_class = ShieldedSendConnection


def no_redirects(app: QuartTrio) -> None:
    """Answer every path with JSON from our own handlers, never with werkzeug's HTML redirect.

    By default werkzeug redirects (308, HTML body) a path with doubled slashes or a missing
    trailing slash to its canonical form. A JSON API has no canonical alias to send a client to:
    an unknown path is simply a JSON 404.
    """
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False


def refuse_unknown_http_versions(app: QuartTrio) -> None:
    """Answer 400 to a request line with an HTTP version we do not speak (`HTTP/9.9`).

    h11 accepts any `HTTP/<digit>.<digit>` and hypercorn passes it on; the answer would be an
    HTTP/1.1 response to a client that asked for something else. Hooks run in the order they
    were registered: register this after a hook that must always run and before one that
    answers every request (the webhook plane's). A plane with a hook of its own may call
    `http_version_refusal` from it instead (the API does, after its in-flight count).
    """

    @app.before_request
    async def check_http_version() -> Response | None:
        return http_version_refusal(request.http_version)


def http_version_refusal(version: str) -> Response | None:
    """The 400 for a request in HTTP `version` when we do not speak it, else None. It may
    answer before the body was read, so it closes the connection."""
    if version in HTTP_VERSIONS:
        return None
    return json_error(400, f"HTTP/{version[:10]} is not supported; use HTTP/1.1 or "
                           "HTTP/1.0", close=True)


#: One encoder for every answer (json.dumps with `default` builds a new one per call).
_ENCODE = json.JSONEncoder(default=str).encode


def json_response(body: Any, status: int = 200, *, close: bool = False) -> Response:
    """A JSON answer (one line, newline-terminated); `close` adds `Connection: close`."""
    response = Response((_ENCODE(body) + "\n").encode(), status=status,
                        content_type="application/json")
    if close:
        response.headers["Connection"] = "close"
    return response


def json_error(status: int, message: str, *, allow: Iterable[str] | None = None,
               close: bool = False) -> Response:
    """`{"error": message}` with `status`; a 405 lists the methods the path does take in
    `Allow` (RFC 9110 §15.5.6 requires it)."""
    response = json_response({"error": message}, status, close=close)
    if allow is not None:
        response.headers["Allow"] = ", ".join(sorted(set(allow)))
    return response


def http_exception_response(exc: HTTPException, message: str, *,
                            close: bool = False) -> Response:
    """The JSON answer to a werkzeug HTTPException (404, 405, 413, ... raised by routing or
    quart), keeping what the status needs: `Allow` for a 405, `Connection: close` for a 413."""
    allow = exc.valid_methods if isinstance(exc, MethodNotAllowed) else None
    # A body over the limit is answered before it was read: the rest of it must never be
    # taken for the next request on the connection.
    close = close or isinstance(exc, RequestEntityTooLarge)
    return json_error(exc.code or 500, message, allow=allow or None, close=close)


def internal_error(log: Logger, exc: Exception, *, status: int = 500,
                   message: str = "internal error; see the gateway log") -> Response:
    """The request boundary of every plane: a fault in one handler answers that request (and
    closes its connection), is logged with its traceback for the operator, and never reaches
    the server's nursery. A 500 is a bug in the gateway; the log line is how it gets fixed."""
    log.error("request failed", path=shown_path(request.path), method=request.method,
              error=f"{type(exc).__name__}: {exc}",
              traceback="".join(traceback.format_exception(exc)))
    return json_error(status, message, close=True)


def shown_path(path: str) -> str:
    """A request path as quoted in an error message: at most MAX_PATH_SHOWN characters."""
    if len(path) <= MAX_PATH_SHOWN:
        return path
    return f"{path[:MAX_PATH_SHOWN]}... ({len(path)} characters)"
