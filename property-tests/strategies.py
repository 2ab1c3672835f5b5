"""Hypothesis strategies shared by the fuzzers of HTTP request bodies."""

from __future__ import annotations

from hypothesis import strategies as st

# Any value a JSON request body can hold (finite numbers, short strings, small nesting).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
