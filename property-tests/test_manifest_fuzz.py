"""Fuzz parse_manifest: whatever the text, the only exception is ManifestError."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ductile.errors import ManifestError
from ductile.plugin.manifest import Manifest, parse_manifest

PATH = "/fuzz/manifest.yaml"
KEYS = [
    "manifest_spec", "manifest_version", "name", "version", "protocol", "entrypoint",
    "description", "concurrency_safe", "commands", "fact_outputs", "config_keys",
]
COMMAND_KEYS = ["name", "type", "description", "input_schema", "output_schema", "values"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["read", "write", "ductile.plugin", "payload.*", "poll"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(COMMAND_KEYS)), inner,
                        max_size=4),
    ),
    max_leaves=12,
)
commands = st.lists(
    st.one_of(values, st.dictionaries(st.sampled_from(COMMAND_KEYS), values, max_size=6)),
    max_size=4,
)
documents = st.dictionaries(
    st.sampled_from(KEYS), st.one_of(values, commands), max_size=len(KEYS)
)

YAML_NOISE = st.lists(
    st.sampled_from(list(":-[]{}#&*!|>'\"%@`,? \n\tabcx01.\x00\u00e9")
                    + ["!!python/object ", "<<", "commands:", "\n  - ", "name: ", "type: "]),
    max_size=40,
).map("".join)


def check(text: str | bytes) -> None:
    try:
        assert isinstance(parse_manifest(text, PATH), Manifest)
    except ManifestError as exc:
        assert str(exc).startswith("invalid manifest: ")
        assert exc.path == PATH


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(st.text(max_size=200), YAML_NOISE))
@example("[" * 5000)
@example("a: &x [*x]\n")
@example("version: 2001-02-30\n")
@example("<<: 5\n")
@example("? [a]\n: b\n")
def test_arbitrary_text(text: str) -> None:
    check(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents)
def test_structured_documents(doc: dict[str, Any]) -> None:
    check(yaml.safe_dump(doc, allow_unicode=True))


VALID_NAMES = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_-]{0,10}\Z")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(VALID_NAMES, st.sampled_from(["read", "write"])), min_size=1,
                max_size=5, unique_by=lambda c: c[0]),
       st.booleans())
def test_valid_manifests_parse(cmds: list[tuple[str, str]], safe: bool) -> None:
    doc = {
        "manifest_spec": "ductile.plugin", "manifest_version": 1, "name": "p", "version": "1",
        "protocol": 2, "entrypoint": "run", "concurrency_safe": safe,
        "commands": [{"name": n, "type": t} for n, t in cmds],
    }
    m = parse_manifest(yaml.safe_dump(doc), PATH)
    assert [(c.name, c.type) for c in m.commands] == cmds
    assert m.concurrency_safe is safe
