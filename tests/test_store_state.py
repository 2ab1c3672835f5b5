"""Plugin state: shallow merge, the 1 MiB cap, and what bad input gets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ductile.errors import StoreError
from ductile.store import Database, StateStore, merge_state
from ductile.store.state import MAX_STATE_BYTES, encode_state


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(str(tmp_path / "ductile.db"))
    yield database
    await database.close()


def test_merge_state_replaces_top_level_keys_only() -> None:
    current = {"a": 1, "nested": {"x": 1, "y": 2}, "keep": True}
    merged = merge_state(current, {"a": 2, "nested": {"x": 9}, "gone": None})
    assert merged == {"a": 2, "nested": {"x": 9}, "keep": True, "gone": None}
    assert current == {"a": 1, "nested": {"x": 1, "y": 2}, "keep": True}  # not mutated


def test_encode_state_allows_exactly_the_cap() -> None:
    overhead = len('{"k":""}')
    encode_state({"k": "x" * (MAX_STATE_BYTES - overhead)}, "echo")
    with pytest.raises(StoreError, match=r"plugin state exceeds max size \(1048576 bytes\)"):
        encode_state({"k": "x" * (MAX_STATE_BYTES - overhead + 1)}, "echo")


def test_the_cap_counts_utf8_bytes() -> None:
    with pytest.raises(StoreError, match="exceeds max size"):
        encode_state({"k": "é" * (MAX_STATE_BYTES // 2)}, "echo")


async def test_missing_state_is_an_empty_object(db: Database) -> None:
    assert await StateStore(db).get("never-ran") == {}


async def test_merge_round_trips_and_stamps_updated_at(db: Database) -> None:
    states = StateStore(db)
    assert await states.merge("echo", {"cursor": 1, "seen": ["a"]}) == {"cursor": 1, "seen": ["a"]}
    assert await states.merge("echo", {"cursor": 2}) == {"cursor": 2, "seen": ["a"]}
    assert await states.get("echo") == {"cursor": 2, "seen": ["a"]}
    assert await states.get("other") == {}
    stamp = await db.read(
        lambda conn: conn.execute("SELECT updated_at FROM plugin_state").fetchone()[0]
    )
    assert stamp.endswith("Z") and len(stamp) == len("2026-01-01T00:00:00.000000Z")


async def test_a_merge_over_the_cap_leaves_the_old_state(db: Database) -> None:
    states = StateStore(db)
    await states.merge("echo", {"small": 1})
    with pytest.raises(StoreError, match="exceeds max size"):
        await states.merge("echo", {"big": "x" * MAX_STATE_BYTES})
    assert await states.get("echo") == {"small": 1}


@pytest.mark.parametrize("updates", [["not", "an", "object"], "text", None])
async def test_updates_must_be_an_object(db: Database, updates: object) -> None:
    with pytest.raises(StoreError, match="state updates must be a JSON object"):
        await StateStore(db).merge("echo", updates)  # type: ignore[arg-type]


async def test_unserialisable_updates_are_refused(db: Database) -> None:
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        await StateStore(db).merge("echo", {"when": object()})


async def test_corrupt_stored_state_is_reported(db: Database, tmp_path: Path) -> None:
    raw = sqlite3.connect(db.path)
    raw.execute("INSERT INTO plugin_state (plugin_name, state) VALUES ('echo', '{oops')")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="plugin echo: stored state is not valid JSON"):
        await StateStore(db).get("echo")
