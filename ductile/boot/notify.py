"""systemd's notify protocol: one datagram to $NOTIFY_SOCKET.

We send `READY=1` only after every listener is bound, `RELOADING=1`/`READY=1` around a reload,
`STOPPING=1` on shutdown and `WATCHDOG=1` on the watchdog interval. Outside systemd
($NOTIFY_SOCKET unset) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `message`; True when a datagram went out. Errors are swallowed: systemd being
    unreachable must never stop the gateway."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of $WATCHDOG_USEC in seconds when the watchdog is meant for this pid."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not (usec.isascii() and usec.isdigit()) or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
