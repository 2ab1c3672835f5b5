"""Config snapshots: recorded rows, decoded reads, refused fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ductile.errors import StoreError
from ductile.store import Database, Snapshots


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(str(tmp_path / "ductile.db"))
    yield database
    await database.close()


async def test_record_and_get_round_trip(db: Database) -> None:
    snapshots = Snapshots(db)
    fields = {
        "config_hash": "blake2b:00ff",
        "source_hash": "blake2b:11ee",
        "source_path": "/etc/ductile",
        "source": "explicit",
        "semantics": {"retry_policy_owner": "core"},
        "plugin_fingerprints": [{"plugin": "echo", "available": True}],
        "sanitized_config": {"service": {"name": "ductile"}},
        "secret_fingerprints": [],
    }
    snapshot_id = await snapshots.record(
        fields, reason="startup", version="0.1.0", binary_path="/usr/bin/ductile"
    )
    assert re.fullmatch(r"cfg_[0-9a-f]{32}", snapshot_id)
    row = await snapshots.get(snapshot_id)
    assert row is not None
    assert {key: row[key] for key in fields} == fields
    assert (row["reason"], row["ductile_version"], row["binary_path"]) == (
        "startup", "0.1.0", "/usr/bin/ductile"
    )
    assert row["snapshot_format"] == 1
    assert row["loaded_at"].endswith("Z")


async def test_optional_fields_may_be_absent_or_json_text(db: Database) -> None:
    snapshots = Snapshots(db)
    snapshot_id = await snapshots.record(
        {"config_hash": "h", "semantics": '{"a":1}'}, reason="reload", version="v", binary_path="b"
    )
    row = await snapshots.get(snapshot_id)
    assert row is not None
    assert row["semantics"] == {"a": 1}
    assert row["plugin_fingerprints"] is None and row["source_hash"] is None


async def test_unknown_snapshot_is_none(db: Database) -> None:
    assert await Snapshots(db).get("cfg_missing") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"config_hash": "h", "colour": "blue"}, "unknown field"),
        ({"source": "explicit"}, "config_hash is empty"),
        ({"config_hash": "h", "semantics": "{not json"}, "semantics is not valid JSON"),
        ({"config_hash": "h", "semantics": {"x": object()}}, "not JSON-serialisable"),
    ],
)
async def test_bad_fields_are_refused(db: Database, fields: dict, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        await Snapshots(db).record(fields, reason="startup", version="v", binary_path="b")
