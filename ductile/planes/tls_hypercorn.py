"""hypercorn's Config, serving TLS from a context the gateway owns.

hypercorn builds its SSLContext itself from `certfile`/`keyfile` paths, once per serve, with
no way to renew the certificate later. `PlaneConfig.served_tls` hands it our context instead
(`ductile.planes.tls.ServedTls`): loaded and judged by the boot gate, renewed on reload for new
connections. With no `served_tls` the plane serves plain HTTP, exactly as hypercorn's Config.
"""

from __future__ import annotations

import ssl

from hypercorn.config import Config

from ductile.planes.tls import ServedTls


class PlaneConfig(Config):
    """A hypercorn Config whose TLS is `served_tls` (None: plain HTTP)."""

    served_tls: ServedTls | None = None

    @property
    def ssl_enabled(self) -> bool:
        return self.served_tls is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self.served_tls.context if self.served_tls is not None else None
