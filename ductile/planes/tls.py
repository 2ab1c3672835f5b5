"""TLS for the HTTP listeners: load a certificate and key, serve them, renew them on reload.

Loading (`server_context`) checks the material in the order an operator fixes it, so the
refusal (gate `tls_material_loadable`) names the config key, the file and the next step:

1. each file is a regular file this process can read;
2. the key file is neither readable nor writable by others (it is the listener's identity);
3. the certificate file holds PEM certificates (the leaf first, then any intermediates);
4. the key is an unencrypted PEM private key that belongs to that certificate.

The context allows TLS 1.2 and 1.3 only, without compression or renegotiation, and offers
`http/1.1` by ALPN: the planes speak HTTP/1.1, as on a plain listener.

Serving (`ServedTls`): hypercorn wraps a listening socket once, with one SSLContext, for as
long as the plane runs. To serve a renewed certificate without closing the socket, that first
context's SNI callback (OpenSSL calls it on every handshake, whether or not the client sent a
server name) moves each new connection onto the newest admitted context. Connections already
open keep the certificate they started with; nothing is re-read from disk after the gate judged
it, so what is served is exactly what was admitted.

`pinned_client_context` is the CLI's side: it trusts exactly the gateway's own certificate.
"""

from __future__ import annotations

import os
import re
import ssl
import stat

from ductile.errors import TlsMaterialError

#: The application protocols offered: the planes serve HTTP/1.1 (see the module docstring).
ALPN_PROTOCOLS = ("http/1.1",)
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


class _EncryptedKey(Exception):
    """Raised from the password callback: the key wants a passphrase nobody can type."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and hang an unattended boot.
    raise _EncryptedKey


def server_context(cert_file: str, key_file: str, *, key: str) -> ssl.SSLContext:
    """A server context holding the certificate chain and key, or TlsMaterialError naming
    `key` (`api.tls`, `webhooks.tls`), the file at fault and what to do about it."""
    cert_key, private_key = f"{key}.cert_file", f"{key}.key_file"
    _, cert_pem = _read(cert_file, cert_key)
    key_mode, _ = _read(key_file, private_key)
    if key_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise TlsMaterialError(
            f"{private_key}: {key_file} is readable or writable by others (mode "
            f"{key_mode:04o}) and it is this listener's private key; run chmod o-rwx "
            f"{key_file} (600, or 640 to share it with a group)", path=key_file,
            key=private_key)
    if _PEM_CERTIFICATE.search(cert_pem) is None:
        raise TlsMaterialError(
            f"{cert_key}: {cert_file} holds no PEM certificate (a block starting with "
            "-----BEGIN CERTIFICATE-----); point it at the certificate chain, leaf first",
            path=cert_file, key=cert_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _EncryptedKey:
        raise TlsMaterialError(
            f"{private_key}: {key_file} is encrypted and the gateway cannot ask for its "
            f"passphrase; store it unencrypted (openssl pkey -in {key_file} -out NEW_FILE) "
            "and protect it by its file mode (chmod 600) instead",
            path=key_file, key=private_key) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsMaterialError(
                f"{private_key}: {key_file} is not the private key of the certificate in "
                f"{cert_file}; set {private_key} to the key that certificate was issued for",
                path=key_file, key=private_key) from None
        raise TlsMaterialError(
            f"{key}: cannot load {cert_file} with the key {key_file} ({exc.reason or exc}); "
            f"{cert_key} must be PEM certificates and {private_key} an unencrypted PEM "
            "private key", path=key_file, key=private_key) from None
    except OSError as exc:  # a file changed under us since it was read above
        raise TlsMaterialError(f"{key}: cannot load {cert_file} with the key {key_file}: "
                               f"{exc.strerror or exc}", path=cert_file, key=key) from None
    return context


def _read(path: str, key: str) -> tuple[int, bytes]:
    """(permission bits, contents) of a regular file, or TlsMaterialError naming `key`."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise TlsMaterialError(f"{key}: cannot read {path}: {exc.strerror or exc}; check the "
                               "path (relative paths start at the root config's directory)",
                               path=path, key=key) from None
    if not stat.S_ISREG(mode):
        raise TlsMaterialError(f"{key}: {path} is not a regular file", path=path, key=key)
    try:
        with open(path, "rb") as handle:
            return stat.S_IMODE(mode), handle.read()
    except OSError as exc:
        raise TlsMaterialError(f"{key}: cannot read {path}: {exc.strerror or exc}; the "
                               "gateway's user must be able to read it", path=path,
                               key=key) from None


class ServedTls:
    """One listener's TLS: the context hypercorn wraps its socket with, and the newest
    admitted context, which every new connection is moved onto (see the module docstring)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self._newest = context
        context.sni_callback = self._select

    def renew(self, context: ssl.SSLContext) -> None:
        """Serve `context`'s certificate to every connection from now on."""
        self._newest = context

    def _select(self, ssl_object: ssl.SSLObject, _server_name: str | None,
                _context: ssl.SSLContext) -> None:
        newest = self._newest
        if ssl_object.context is not newest:
            ssl_object.context = newest


def pinned_client_context(cert_file: str, *, key: str) -> ssl.SSLContext:
    """A client context that trusts exactly the first certificate in `cert_file` (the
    gateway's own leaf) and nothing else: no system store, no issuer, no host name check,
    since the certificate itself is compared. TlsMaterialError when it cannot be read."""
    cert_key = f"{key}.cert_file"
    found = _PEM_CERTIFICATE.search(_read(cert_file, cert_key)[1])
    if found is None:
        raise TlsMaterialError(f"{cert_key}: {cert_file} holds no PEM certificate",
                               path=cert_file, key=cert_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    # The leaf is the trust anchor: accept a chain that ends there.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cadata=found.group(0).decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise TlsMaterialError(f"{cert_key}: {cert_file}: the first certificate does not "
                               f"load ({exc})", path=cert_file, key=cert_key) from None
    return context
