"""Property: any JSON value survives the queue exactly. Enqueued with `Queue.enqueue` and
claimed with `Queue.claim_next` on a real SQLite file, the job's `payload` is the very text
that was encoded and `payload_obj()` is the value again.

Schema version 1 declared the payload column `JSON` (NUMERIC affinity), so `42` came back as
an int, `1.50` as 1.5 and a 23-digit integer as a float; this is the property that broke.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.store import Database, Queue
from ductile.store.values import encode_payload
from strategies import json_values

# Wider than the request-body strategy: integers far past 64 bits (JSON has no limit; Python's
# own int-to-text limit of 4300 digits is not approached), every finite float, any text
# (surrogates excluded: they are not Unicode scalar values, so not JSON text either).
scalars = (
    st.none() | st.booleans() | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
payloads = json_values | st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def state_db() -> Iterator[str]:
    """One database file for every example (a fresh file per example would mostly measure
    schema creation)."""
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "state.db")
        trio.run(_create, path)
        yield path


async def _create(path: str) -> None:
    await (await Database.open(path)).close()


async def _round_trip(path: str, value: Any) -> tuple[str, Any, Any, str]:
    db = await Database.open(path)
    try:
        queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
        enqueued = await queue.enqueue("echo", "poll", value, "property-test")
        claim = await queue.claim_next()
        assert claim is not None and claim.job.id == enqueued.id
        stored = await db.read(lambda conn: _stored_type(conn, enqueued.id))
        return claim.job.id, claim.job.payload, claim.job.payload_obj(), stored
    finally:
        await db.close()


def _stored_type(conn: sqlite3.Connection, job_id: str) -> str:
    return str(conn.execute("SELECT typeof(payload) FROM job_queue WHERE id = ?",
                            (job_id,)).fetchone()[0])


@settings(max_examples=150)
@given(payloads)
def test_any_json_payload_comes_back_as_the_exact_text_and_the_same_value(
    state_db: str, value: Any
) -> None:
    text = encode_payload(value)
    _, payload, decoded, stored = trio.run(_round_trip, state_db, value)
    assert payload == text
    assert stored == ("null" if text is None else "text")
    assert decoded == value
