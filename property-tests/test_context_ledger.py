"""Properties of the event context ledger: any JSON object round-trips through a real SQLite
row, and baggage over the 1 MiB cap is always refused with ContextTooLarge."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.errors import ContextTooLarge
from ductile.store.context import (
    MAX_CONTEXT_BYTES,
    ContextSpec,
    encode_accumulated,
    fetch_context,
    insert_context,
)
from ductile.store.db import schema_sql

NOW = "2026-03-01T12:00:00.000000Z"

def json_values(chars: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    """Any JSON value whose strings are drawn from `chars`."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(chars),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.text(chars), inner, max_size=4),
        max_leaves=20,
    )


any_chars = st.characters(exclude_categories=())  # lone surrogates included
no_surrogates = st.characters(exclude_categories=("Cs",))
objects = st.dictionaries(st.text(any_chars), json_values(any_chars), max_size=6)


@pytest.fixture(scope="module")
def conn() -> Iterator[sqlite3.Connection]:
    """A real SQLite database with the shipped schema (in memory: one per module is enough,
    each example writes a row with a fresh id)."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.executescript(schema_sql())
    yield connection
    connection.close()


@settings(max_examples=200)
@given(accumulated=objects, pipeline=st.none() | st.text(max_size=8))
def test_any_json_object_round_trips_through_a_row(
    conn: sqlite3.Connection, accumulated: dict, pipeline: str | None
) -> None:
    context_id = insert_context(conn, ContextSpec(None, pipeline, "s", accumulated), NOW)
    stored = fetch_context(conn, context_id)
    assert stored is not None
    assert stored.accumulated == accumulated
    assert stored.pipeline_name == pipeline


@settings(max_examples=50)
@given(
    others=st.dictionaries(st.text(no_surrogates, max_size=8), json_values(no_surrogates),
                           max_size=4),
    pad_char=no_surrogates,
    over=st.integers(min_value=1, max_value=4096),
)
def test_baggage_over_the_cap_is_always_refused(
    conn: sqlite3.Connection, others: dict, pad_char: str, over: int
) -> None:
    """Pad any object just past 1 MiB with a character of any UTF-8 width: refused, and an
    object that fits is accepted; the oracle is the UTF-8 size of compact JSON."""
    base = dict(others, pad="")
    base_size = _size(base)
    if base_size > MAX_CONTEXT_BYTES:
        return
    width = _size({"c": pad_char}) - len('{"c":""}')  # bytes one (maybe escaped) char takes
    count = (MAX_CONTEXT_BYTES - base_size) // width + 1 + over // width
    padded = dict(others, pad=pad_char * count)
    size = _size(padded)
    assert size > MAX_CONTEXT_BYTES
    with pytest.raises(ContextTooLarge) as caught:
        encode_accumulated(padded)
    assert caught.value.actual == size
    with pytest.raises(ContextTooLarge):
        insert_context(conn, ContextSpec(None, None, None, padded), NOW)
    fitting = dict(others, pad=pad_char * ((MAX_CONTEXT_BYTES - base_size) // width))
    assert _size(fitting) <= MAX_CONTEXT_BYTES
    assert json.loads(encode_accumulated(fitting)) == fitting


def _size(value: dict) -> int:
    """Our own measure: UTF-8 bytes of the compact JSON text (the strategies exclude lone
    surrogates, which the encoder stores escaped instead)."""
    return len(
        json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    )
