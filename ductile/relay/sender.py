"""Deliver one signed envelope to a configured relay instance.

The sender owns a failure until the receiver answers 202; after that the receiver owns the
event. So every error says whether trying again later can help (`retryable`): a receiver that
is down, slow or failing (connection errors, timeouts, 5xx, 429) leaves the carrying job
retrying with its backoff; a refusal (any other 4xx: bad signature, unknown peer, type not
allowed) would be refused again and fails the job for good.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ductile.errors import DuctileError
from ductile.relay.envelope import signed_headers

if TYPE_CHECKING:
    import httpx

DEFAULT_INGRESS_PREFIX = "/ingest/peer"


class RelaySendError(DuctileError):
    """An envelope was not accepted; `retryable` says whether a later attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where and how to send: an instance's URL, signing mode and key, and who we are."""

    name: str
    url: str
    path: str
    mode: str
    key: bytes
    key_id: str
    timeout: float
    sender: str


class Clients:
    """Pooled HTTP clients, one per receiver and timeout, kept for the life of the process.

    A fresh client per delivery paid a TCP connect and the client's own set-up every time:
    about two thirds of a relay hop on loopback. Kept across reloads (a generation may be
    swapped while one of its deliveries is in flight), closed once at shutdown.
    """

    def __init__(self) -> None:
        self._clients: dict[tuple[str, float], httpx.AsyncClient] = {}

    def get(self, url: str, timeout: float) -> httpx.AsyncClient:
        import httpx

        key = (url, timeout)
        client = self._clients.get(key)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(timeout=timeout if timeout > 0 else None)
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def target_path(ingress_path: str, sender: str) -> str:
    """The receiver's path for us: the instance's `ingress_path` as written (Go configs name
    the full path, `/ingest/peer/<sender>`), else the default prefix plus our name."""
    return ingress_path or f"{DEFAULT_INGRESS_PREFIX}/{sender}"


async def send(target: Target, body: bytes, *, now: datetime | None = None,
               clients: Clients | None = None) -> dict[str, Any]:
    """POST the envelope; the receiver's 202 body, or RelaySendError. With `clients`, the
    connection to the receiver is pooled; without, one client serves this one request."""
    import httpx

    headers = signed_headers(target.mode, target.key, sender=target.sender, method="POST",
                             path=target.path, body=body, now=now or datetime.now(timezone.utc),
                             key_id=target.key_id)
    try:
        if clients is not None:
            response = await clients.get(target.url, target.timeout).post(
                target.url + target.path, content=body, headers=headers)
        else:
            timeout = target.timeout if target.timeout > 0 else None
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.post(target.url + target.path, content=body,
                                             headers=headers)
    except httpx.TimeoutException:
        raise RelaySendError(f"relay instance {target.name!r}: no answer within "
                             f"{target.timeout:g}s", retryable=True) from None
    except httpx.HTTPError as exc:
        raise RelaySendError(f"relay instance {target.name!r}: cannot reach {target.url}: "
                             f"{type(exc).__name__}: {exc}", retryable=True) from None
    return _accepted(target, response.status_code, response.content)


def _accepted(target: Target, status: int, content: bytes) -> dict[str, Any]:
    import json

    try:
        data: Any = json.loads(content) if content else {}
    except ValueError:
        data = {}
    if status == 202 and isinstance(data, Mapping):
        return dict(data)
    message = data.get("error") if isinstance(data, Mapping) else None
    retryable = status >= 500 or status in (408, 429)
    if isinstance(message, str) and message:
        text = f"relay receiver rejected request: {message}"
    else:
        text = f"relay receiver returned status {status}"
    raise RelaySendError(f"relay instance {target.name!r}: {text}", retryable=retryable,
                         status=status)
