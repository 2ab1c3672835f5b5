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

# JSON text fragments the gateway must refuse (or, for a surrogate pair, accept): lone
# surrogate escapes, out-of-range numbers, NaN/Infinity, integers past the int-conversion limit.
HOSTILE_SCALARS = (
    '"\\ud800"', '"a\\udfffb"', '"\\ud83d\\ude00"', '"\\ud83d"', "1e999", "-1e999", "1E400",
    "NaN", "Infinity", "-Infinity", "1" + "0" * 5000, "-" + "9" * 310, "1.5", "0", '"ok"',
    "null", "true",
)


@st.composite
def hostile_json_bytes(draw: st.DrawFn) -> bytes:
    """JSON-shaped bytes: a tree of objects/arrays (sometimes far deeper than 64 levels) with
    hostile scalars and keys at the leaves. Mostly well-formed; the parser decides."""
    leaf = st.sampled_from(HOSTILE_SCALARS)
    key = st.sampled_from(['"k"', '"\\ud800"', '"payload"', '"baggage"', '"a.b"'])
    text = draw(st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
            st.lists(st.tuples(key, inner), max_size=3).map(
                lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"),
        ),
        max_leaves=8,
    ))
    levels = draw(st.sampled_from([0, 0, 1, 62, 63, 64, 65, 900, 980, 5000]))
    opener, closer = draw(st.sampled_from([('{"payload":', "}"), ('{"baggage":', "}"),
                                           ("[", "]")]))
    return (opener * levels + text + closer * levels).encode()
