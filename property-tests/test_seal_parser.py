"""`parse_checksums` on arbitrary input: it returns a well-formed seal or raises IntegrityError,
nothing else; and every seal it accepts writes back to the same seal."""

from __future__ import annotations

import re

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.config.seal import Checksums, PluginFingerprint, parse_checksums
from ductile.errors import IntegrityError

PATH = "/fuzz/.checksums"
HEX = re.compile(r"[0-9a-f]{64}")
DIGEST = st.text("0123456789abcdef", min_size=64, max_size=64)
ABS = st.from_regex(r"/[a-z0-9_./-]{0,30}", fullmatch=True)
FP = PluginFingerprint(name="echo", enabled=True, uses="", manifest_path="/p/manifest.yaml",
                       manifest_resolved_path="/p/manifest.yaml", manifest_hash="a" * 64,
                       entrypoint_path="/p/run", entrypoint_resolved_path="/p/run",
                       entrypoint_hash="b" * 64)
VALID = Checksums("2026-06-10T12:00:00Z", {"/c/config.yaml": "c" * 64}, (FP,)).to_bytes()

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), ABS, DIGEST)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=10), ABS), inner, max_size=3)), max_leaves=8)
FIELDS = st.sampled_from(["version", "generated_at", "hashes", "plugin_fingerprints", "name",
                          "enabled", "uses", "manifest_path", "manifest_hash",
                          "entrypoint_path", "entrypoint_resolved_path", "extra"])
DOCS = st.dictionaries(FIELDS, st.one_of(VALUES, st.just(2)), max_size=6)


def check(data: bytes) -> None:
    try:
        seal = parse_checksums(data, PATH)
    except IntegrityError as exc:
        assert exc.path == PATH and PATH in str(exc)
        assert exc.kind in ("unparsable", "version")
        return
    assert seal.version == 2
    for path, digest in seal.hashes.items():
        assert path.startswith("/") and HEX.fullmatch(digest)
    assert len({fp.name for fp in seal.plugin_fingerprints}) == len(seal.plugin_fingerprints)
    assert parse_checksums(seal.to_bytes(), PATH) == seal


@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_only_integrity_error(data: bytes) -> None:
    check(data)


@settings(max_examples=300)
@given(DOCS)
def test_arbitrary_yaml_documents_parse_or_raise_only_integrity_error(doc: dict) -> None:
    check(yaml.safe_dump(doc).encode())


@given(st.dictionaries(ABS, DIGEST, max_size=5), st.lists(
    st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8), "enabled": st.booleans(),
                           "manifest_path": ABS, "manifest_resolved_path": ABS,
                           "manifest_hash": DIGEST, "entrypoint_path": ABS,
                           "entrypoint_resolved_path": ABS, "entrypoint_hash": DIGEST},
                          optional={"uses": st.text(max_size=8)}), max_size=3))
def test_well_formed_seals_round_trip(hashes: dict, fingerprints: list) -> None:
    doc = {"version": 2, "generated_at": "2026-06-10T12:00:00Z", "hashes": hashes,
           "plugin_fingerprints": fingerprints}
    check(yaml.safe_dump(doc).encode())


@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(min_value=1,
                                                                       max_value=255))
def test_any_single_byte_change_parses_or_raises_only_integrity_error(index: int,
                                                                      flip: int) -> None:
    data = bytearray(VALID)
    data[index] ^= flip
    check(bytes(data))


@given(st.integers(min_value=0, max_value=len(VALID)))
def test_every_truncation_parses_or_raises_only_integrity_error(length: int) -> None:
    check(VALID[:length])
