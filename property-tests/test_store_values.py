"""Properties of the store's pure helpers: timestamp text and the shallow state merge."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.store.jobs import format_time, parse_time
from ductile.store.values import truncate_head, truncate_tail
from ductile.store.state import merge_state

moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2999, 12, 31),
    timezones=st.just(timezone.utc),
)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
states = st.dictionaries(st.text(max_size=4), json_scalars | st.lists(json_scalars, max_size=3))


@settings(max_examples=200)
@given(moments, moments)
def test_stored_text_orders_like_time(a: datetime, b: datetime) -> None:
    assert (format_time(a) < format_time(b)) == (a < b)
    assert parse_time(format_time(a)) == a


@settings(max_examples=200)
@given(states, states)
def test_merge_keeps_every_key_and_updates_win(current: dict, updates: dict) -> None:
    merged = merge_state(current, updates)
    assert set(merged) == set(current) | set(updates)
    assert all(merged[key] == value for key, value in updates.items())
    assert all(merged[key] == current[key] for key in set(current) - set(updates))


@settings(max_examples=200)
@given(st.text(st.characters(exclude_categories=())), st.integers(0, 64))
def test_truncation_stays_within_the_byte_limit_and_keeps_the_right_end(
    text: str, limit: int
) -> None:
    """Any text, lone surrogates included, becomes valid UTF-8 of at most `limit` bytes."""
    head = truncate_head(text, limit)
    tail = truncate_tail(text, limit)
    assert head is not None and tail is not None
    assert len(head.encode("utf-8")) <= limit and len(tail.encode("utf-8")) <= limit
    clean = text.encode("utf-8", "replace").decode("utf-8")
    assert clean.startswith(head) and clean.endswith(tail)
