"""hypercorn settings for the webhook listener: drop slow or oversized requests early.

The webhook port faces the internet more often than the API does, so a sender that never
finishes its request must cost one connection for a bounded time and nothing else:

- `keep_alive_timeout`: hypercorn arms this timer when a connection opens and again after each
  response, and disarms it only once a request's headers are complete. It is therefore both
  the idle limit between requests and the deadline for sending the headers: a slowloris
  client dribbling header bytes is dropped after it.
- `h11_max_incomplete_size`: headers larger than this are refused (431/400) instead of buffered.
- `read_timeout`: a connection on which nothing arrives for this long is closed, also mid-body.
- The body deadline (`body_timeout` of `create_webhook_app`) bounds a body that trickles in
  just fast enough to beat `read_timeout`: 408 and the connection is closed.
- `graceful_timeout`: how long in-flight deliveries may finish at shutdown (Go: 5 s).

Go ductile uses Read 10 s, Write 10 s, Idle 60 s. We keep 10 s for reading but shorten idle to
10 s as well, because in hypercorn the same timer guards header arrival.
"""

from __future__ import annotations

from hypercorn.config import Config

READ_TIMEOUT = 10
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
) -> Config:
    """A hypercorn Config bound to `bind` (`host:port` or `fd://N`), access log off (the app
    logs one line per request itself, without the body)."""
    config = Config()
    config.bind = [bind]
    config.read_timeout = read_timeout
    config.keep_alive_timeout = keep_alive_timeout
    config.h11_max_incomplete_size = max_header_bytes
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = None
    return config
