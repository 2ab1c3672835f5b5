"""hypercorn settings for the webhook listener: drop slow or oversized requests early.

The webhook port faces the internet more often than the API does, so a sender that never
finishes its request must cost one connection for a bounded time and nothing else:

- `keep_alive_timeout`: hypercorn arms this timer when a connection opens and again after each
  response, and disarms it only once a request's headers are complete. It is therefore both
  the idle limit between requests and the deadline for sending the headers: a slowloris
  client dribbling header bytes is dropped after it.
- `h11_max_incomplete_size`: headers larger than this are refused (431/400) instead of buffered.
- The body deadline (`body_timeout` of `create_webhook_app`, 10 s) bounds a body, however it
  trickles in: 408 and the connection is closed.
- `read_timeout`: a connection on which nothing arrives for this long is closed, whatever it is
  doing. hypercorn runs this timer while the app is still answering, too, and a sender waiting
  for a `respond: result` answer sends nothing; so it must outlast the longest such wait
  (`MAX_RESPOND_TIMEOUT`), plus a margin. It is only the outer bound: headers and bodies have
  the 10 s deadlines above, and an unsigned request is answered at once.
- `graceful_timeout`: how long in-flight deliveries may finish at shutdown (Go: 5 s).
- With `webhooks.tls`, `ssl_handshake_timeout` is 10 s (hypercorn's default is 60 s): a client
  that opens a connection and never finishes the handshake is dropped as soon.

Go ductile uses Read 10 s, Write 10 s, Idle 60 s. We keep 10 s for reading headers and bodies
and shorten idle to 10 s as well, because in hypercorn the same timer guards header arrival.
"""

from __future__ import annotations

from ductile.config.webhooks import MAX_RESPOND_TIMEOUT
from ductile.planes.tls import ServedTls
from ductile.planes.tls_hypercorn import PlaneConfig

READ_TIMEOUT = int(MAX_RESPOND_TIMEOUT) + 10
HANDSHAKE_TIMEOUT = 10
KEEP_ALIVE_TIMEOUT = 10.0
MAX_HEADER_BYTES = 16 * 1024
GRACEFUL_TIMEOUT = 5.0


def webhook_hypercorn_config(
    bind: str,
    *,
    read_timeout: int = READ_TIMEOUT,
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
    max_header_bytes: int = MAX_HEADER_BYTES,
    graceful_timeout: float = GRACEFUL_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    tls: ServedTls | None = None,
) -> PlaneConfig:
    """A hypercorn Config bound to `bind` (`host:port` or `fd://N`), access log off (the app
    logs one line per request itself, without the body); `tls` serves HTTPS."""
    config = PlaneConfig()
    config.bind = [bind]
    config.served_tls = tls
    config.ssl_handshake_timeout = handshake_timeout
    config.read_timeout = read_timeout
    config.keep_alive_timeout = keep_alive_timeout
    config.h11_max_incomplete_size = max_header_bytes
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = None
    return config
