"""Fuzz what TLS reads from outside: the `api.tls`/`webhooks.tls` block of a config file, and the
certificate and key files it names. Bad input yields ConfigError / TlsMaterialError (which
names the key), never another exception, and a loaded block always has both files."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.config.reader import ConfigFile, Reader
from ductile.config.tls import TlsConfig, decode_tls
from ductile.errors import ConfigError, TlsMaterialError
from ductile.planes.tls import pinned_client_context, server_context

FUZZ = settings(max_examples=150, deadline=None)

_LEAF = trustme.CA().issue_cert("127.0.0.1")
CERT = _LEAF.cert_chain_pems[0].bytes()
KEY = _LEAF.private_key_pem.bytes()

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                    st.just(""), st.just("  "), st.lists(st.text(max_size=4), max_size=2))
blocks = st.one_of(scalars, st.dictionaries(
    st.sampled_from(["cert_file", "key_file", "ca_file", "other"]), scalars, max_size=4))


@FUZZ
@given(blocks)
def test_a_tls_block_decodes_to_both_files_or_a_config_error(value: Any) -> None:
    reader = Reader(ConfigFile("/c/config.yaml", "config.yaml"), [])
    try:
        decoded = decode_tls(reader, value, "api.tls")
    except ConfigError as exc:
        assert str(exc).startswith("config.yaml: api.tls")
        return
    if decoded is not None:
        assert isinstance(decoded, TlsConfig)
        assert decoded.cert_file.strip() and decoded.key_file.strip()


def _mangled(good: bytes) -> st.SearchStrategy[bytes]:
    """Real PEM cut, spliced or flipped, PEM armour around noise, and plain noise."""
    return st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(good)).map(lambda n: good[:n]),
        st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)).map(
            lambda t: good[:t[0]] + bytes([good[t[0]] ^ t[1]]) + good[t[0] + 1:]),
        st.binary(max_size=120).map(
            lambda b: b"-----BEGIN CERTIFICATE-----\n" + b + b"\n-----END CERTIFICATE-----\n"),
        st.just(good),
        st.just(KEY if good is CERT else CERT),
    )


@FUZZ
@given(_mangled(CERT), _mangled(KEY), st.sampled_from([0o600, 0o640, 0o644, 0o602]))
def test_loading_material_refuses_only_with_tls_material_error(
        cert: bytes, key: bytes, key_mode: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        cert_path, key_path = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
        with open(cert_path, "wb") as handle:
            handle.write(cert)
        with open(key_path, "wb") as handle:
            handle.write(key)
        os.chmod(key_path, key_mode)
        try:
            server_context(cert_path, key_path, key="webhooks.tls")
        except TlsMaterialError as exc:
            assert str(exc).startswith("webhooks.tls")
            assert exc.path in (cert_path, key_path)
            return
        assert key_mode & 0o006 == 0, "a key others can read or write was accepted"
        try:
            pinned_client_context(cert_path, key="api.tls")
        except TlsMaterialError as exc:
            raise AssertionError(f"a served certificate cannot be pinned: {exc}") from exc


@FUZZ
@given(_mangled(CERT))
def test_pinning_refuses_only_with_tls_material_error(cert: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "c.pem")
        with open(path, "wb") as handle:
            handle.write(cert)
        try:
            pinned_client_context(path, key="api.tls")
        except TlsMaterialError as exc:
            assert str(exc).startswith("api.tls.cert_file")
