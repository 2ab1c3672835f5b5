"""Decode `api.tls` and `webhooks.tls`: the certificate and key a listener serves TLS with.

Both listeners take the same block, `{cert_file, key_file}`, both PEM. Giving one without the
other is refused here (naming the file and key), so a half-configured listener never boots as
plain HTTP by accident. Whether the files exist, are private and belong together is judged at
boot and on every reload (gate `tls_material_loadable`), because a certificate is renewed on
disk without any config change.

Paths are returned as written; the loader expands `~` and resolves them against the root
config's directory, like `state.path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ductile.config.reader import Reader

TLS_KEYS = frozenset({"cert_file", "key_file"})


@dataclass(frozen=True)
class TlsConfig:
    """A listener's TLS material: the certificate chain (leaf first) and its private key."""

    cert_file: str
    key_file: str


def decode_tls(r: Reader, value: Any, key: str) -> TlsConfig | None:
    """The block at `key` (`api.tls`, `webhooks.tls`), or None when absent, null or empty."""
    m = r.section(value, key, TLS_KEYS)
    cert = (r.string(m.get("cert_file"), f"{key}.cert_file") or "").strip()
    private = (r.string(m.get("key_file"), f"{key}.key_file") or "").strip()
    if not cert and not private:
        return None
    for name, given in (("cert_file", cert), ("key_file", private)):
        if not given:
            raise r.error(f"{key}.{name}", f"{key} needs both cert_file and key_file (PEM "
                          f"files); {name} is missing. Set it, or remove {key} to serve plain "
                          "HTTP")
    return TlsConfig(cert_file=cert, key_file=private)
