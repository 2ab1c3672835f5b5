"""The listing behind `GET /scheduler/jobs`, and the schedule validation boot gates on."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ductile.config.load import parse_config
from ductile.config.schema import Config
from ductile.errors import ConfigError
from ductile.schedule.validate import reachability_refusal, schedule_refusal, validate_schedules
from ductile.schedule.views import open_circuit_count, scheduler_jobs
from ductile.store.backend import SQLITE_BACKEND
from ductile.store.db import schema_sql
from support.gateway import write_config

NOW = datetime(2026, 5, 4, 10, 7, 31, tzinfo=UTC)


def config(tmp_path: Path, schedules: list[dict[str, Any]], **extra: Any) -> Config:
    cfg = write_config(tmp_path / "cfg", plugins={
        "echo": {"enabled": True, "schedules": schedules},
        "off": {"enabled": False, "uses": "echo", "schedules": [{"cron": "61 * * * *"}]},
        **extra,
    })
    return parse_config(str(cfg / "config.yaml"), environ=dict(os.environ))


@pytest.fixture
def conn() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.executescript(schema_sql())
    return db


def test_every_cron_and_after_each_get_a_next_run(tmp_path: Path, conn: sqlite3.Connection) -> None:
    cfg = config(tmp_path, [{"id": "a", "every": "5m"}, {"id": "b", "cron": "*/15 * * * *"},
                            {"id": "c", "after": "1h"}])
    jobs = scheduler_jobs(conn, cfg, backend=SQLITE_BACKEND, now=NOW, boot=NOW)["jobs"]
    assert [(j["schedule_id"], j["mode"], j["status"], j.get("next_run_at")) for j in jobs] == [
        ("a", "every", "scheduled", "2026-05-04T10:07:31.000000Z"),  # new: fires at once
        ("b", "cron", "scheduled", "2026-05-04T10:15:00.000000Z"),
        ("c", "after", "scheduled", "2026-05-04T11:07:31.000000Z"),
    ]
    assert all(j["paused"] is False and j["breaker"] == {"state": "closed", "failure_count": 0}
               and j["timezone"] == "UTC" for j in jobs)
    assert open_circuit_count(conn, backend=SQLITE_BACKEND) == 0


def test_an_invalid_schedule_is_listed_with_its_reason(tmp_path: Path,
                                                       conn: sqlite3.Connection) -> None:
    cfg = config(tmp_path, [{"id": "bad", "cron": "0 24 * * *"}])
    [job] = scheduler_jobs(conn, cfg, backend=SQLITE_BACKEND, now=NOW)["jobs"]
    assert job["status"] == "invalid" and "next_run_at" not in job
    assert job["reason"] == ('plugin "echo": invalid schedules[0].cron: invalid cron hour field '
                             '"24": value 24 out of range 0-23')


def test_validation_names_the_key_and_ignores_disabled_plugins(tmp_path: Path) -> None:
    good = config(tmp_path, [{"every": "1h"}])
    assert schedule_refusal(good) is None
    validate_schedules(good)
    bad = config(tmp_path, [{"every": "1h"}, {"every": "1h", "id": "z", "timezone": "Mars/Phobos"}])
    with pytest.raises(ConfigError) as caught:
        validate_schedules(bad)
    assert caught.value.key == "plugins.echo.schedules[1]"
    assert "invalid schedules[1].timezone \"Mars/Phobos\"" in str(caught.value)
    assert schedule_refusal(bad) == str(caught.value)


def test_an_unsatisfiable_schedule_is_refused_by_the_reachability_check(tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"id": "never", "cron": "0 3 * * *", "only_between": "09:00-17:00"}])
    assert schedule_refusal(cfg) is None  # it parses
    refusal = reachability_refusal(cfg, NOW)
    assert refusal is not None
    assert refusal.startswith('plugin "echo": schedules[0] never fires: ')
    assert reachability_refusal(config(tmp_path, [{"every": "1h"}]), NOW) is None
