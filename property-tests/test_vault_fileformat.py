"""The vault file parser on arbitrary bytes fails closed with only the documented errors."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from ductile.errors import VaultFileError
from ductile.planes.api.routes.vault import ROUTES, VaultBodyError, parse_vault_body
from ductile.vault import fileformat
from ductile.vault.model import genesis

KEY = PrivateKey(bytes(range(32)))
MODEL = genesis(now="2026-03-01T12:00:00.000000Z", nonce=bytes(32))[0].set_secret(
    "k", "fuzz-secret-value", now="2026-03-01T12:00:00.000000Z")
VALID = fileformat.seal(MODEL, KEY.public_key)
HEADER = VALID.partition(b"\n")[0] + b"\n"


def parse(data: bytes) -> None:
    try:
        model = fileformat.open_sealed(data, KEY, "/fuzz/vault.nacl")
    except VaultFileError as exc:
        assert "fuzz-secret-value" not in str(exc)
        return
    # Only an authentic file can open, and then it is exactly what was sealed.
    assert model == MODEL


@given(st.binary(max_size=512))
def test_arbitrary_bytes_fail_closed(data: bytes) -> None:
    parse(data)


@given(st.binary(max_size=256))
def test_a_valid_header_with_arbitrary_body_fails_closed(body: bytes) -> None:
    parse(HEADER + body)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_fails_closed(index: int, flip: int) -> None:
    data = bytearray(VALID)
    data[index] ^= flip
    parse(bytes(data))


@given(st.integers(min_value=0, max_value=len(VALID) - 1))
def test_every_truncation_fails_closed(length: int) -> None:
    parse(VALID[:length])


@given(st.binary(max_size=300))
def test_sealed_garbage_plaintext_fails_closed(plaintext: bytes) -> None:
    from nacl.public import SealedBox

    body = base64.encodebytes(SealedBox(KEY.public_key).encrypt(plaintext))
    parse(HEADER + body)


@given(st.sampled_from(sorted(ROUTES)), st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["name", "value", "authorized_principals", "pattern",
                                     "kind", "description", "extra"]),
                    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                              st.lists(st.one_of(st.text(max_size=8), st.integers()),
                                       max_size=3)),
                    max_size=6).map(lambda d: json.dumps(d).encode())))
def test_vault_bodies_parse_or_refuse_with_a_body_error(route: str, data: bytes) -> None:
    try:
        request = parse_vault_body(route, data)
    except VaultBodyError:
        return
    assert isinstance(request.name, str) and request.name
    assert isinstance(request.value, str)
