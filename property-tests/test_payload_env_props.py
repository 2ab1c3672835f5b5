"""The payload environment (plugin/payload_env.py) over arbitrary JSON payloads: every name is
a valid, distinct variable under the DUCTILE_PAYLOAD_ prefix, every value is text without NUL,
and the only refusal is a value that holds a NUL byte."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from ductile.plugin.payload_env import PayloadEnvError, payload_environment

NAME = re.compile(r"^DUCTILE_PAYLOAD__?[A-Z0-9]+(?:_[A-Z0-9]+)*$")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)


@given(st.dictionaries(st.text(), json_values, max_size=8))
def test_names_are_valid_and_distinct_and_values_carry_no_nul(payload: dict) -> None:
    # Nested values travel as JSON, which escapes NUL; only a plain string can hold one.
    holds_nul = any(isinstance(v, str) and "\0" in v for v in payload.values())
    try:
        env = payload_environment(payload, job_id="j", command="poll")
    except PayloadEnvError as exc:
        assert holds_nul and "NUL byte" in str(exc)
        return
    assert not holds_nul
    names = [n for n in env if n.startswith("DUCTILE_PAYLOAD_")]
    assert len(names) == len(payload)
    for name in names:
        assert NAME.match(name) or re.match(r"^DUCTILE_PAYLOAD_[A-Z0-9_]+_\d+$", name), name
    assert all("\0" not in value and "=" not in name for name, value in env.items())
