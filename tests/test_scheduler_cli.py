"""`ductile system scheduler|breaker|reset` (command objects from ductile/cli/scheduler.py) on a
real config and database, through click's runner."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from ductile.cli.scheduler import breaker, reset, scheduler
from ductile.store import breakers as brk
from ductile.store.db import Database
from ductile.store.jobs import utcnow_text
from support.gateway import write_config


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "cfg", plugins={"echo": {
        "enabled": True,
        "schedules": [{"id": "fast", "every": "5m"},
                      {"id": "nightly", "cron": "0 3 * * *", "timezone": "Europe/London"}],
    }})

    async def create() -> None:
        db = await Database.open(str(cfg / "data" / "state.db"))
        await db.close()

    trio.run(create)
    return cfg


def run(command: object, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args))  # type: ignore[arg-type]
    return result.exit_code, result.output


def test_list_shows_every_schedule_with_its_next_run(config_dir: Path) -> None:
    code, out = run(scheduler, "list", "--config", str(config_dir), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert [(j["schedule_id"], j["mode"], j["status"]) for j in data["schedules"]] == [
        ("fast", "every", "scheduled"), ("nightly", "cron", "scheduled")]
    assert all("next_run_at" in j and j["breaker"]["state"] == "closed"
               for j in data["schedules"])
    assert (data["service_name"], data["count"], data["active_polls"]) == ("ductile-test", 0, [])
    code, out = run(scheduler, "--config", str(config_dir))
    assert code == 0 and "echo/nightly" in out and "every" in out


def test_pause_and_resume_one_schedule(config_dir: Path) -> None:
    code, out = run(scheduler, "pause", "echo/nightly", "--config", str(config_dir))
    assert (code, out.strip()) == (0, "Paused echo/nightly (status paused_manual)")
    _, listing = run(scheduler, "list", "--config", str(config_dir), "--json")
    status = {j["schedule_id"]: (j["status"], j["paused"])
              for j in json.loads(listing)["schedules"]}
    assert status == {"fast": ("scheduled", False), "nightly": ("paused", True)}
    code, out = run(scheduler, "resume", "echo", "--config", str(config_dir), "--json")
    assert code == 0
    assert [(e["schedule_id"], e["status"]) for e in json.loads(out)["resumed"]] == [
        ("nightly", "active")]


def test_pause_of_an_unknown_schedule_names_the_known_ones(config_dir: Path) -> None:
    code, out = run(scheduler, "pause", "echo/nope", "--config", str(config_dir))
    assert code == 1
    assert "no scheduled plugin or schedule 'echo/nope'" in out
    assert "echo/fast, echo/nightly" in out


def test_breaker_shows_history_and_reset_closes_it(config_dir: Path) -> None:
    conn = sqlite3.connect(config_dir / "data" / "state.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    now = utcnow_text()
    conn.execute("INSERT INTO job_log (id, job_id, plugin, command, status, attempt, "
                 "submitted_by, created_at, completed_at, last_error) VALUES "
                 "('j-1', 'j', 'echo', 'poll', 'failed', 1, 'ductile-test', ?, ?, 'boom')",
                 (now, now))
    brk.fold_outcomes(conn, brk.breaker_machine(), "echo", "poll", threshold=1,
                      submitted_by="ductile-test", now=now)
    conn.close()

    code, out = run(breaker, "echo", "--config", str(config_dir), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert (report["state"], report["failure_count"], report["last_job_id"]) == ("open", 1, "j")
    assert [(t["from_state"], t["to_state"], t["reason"], t["job_id"])
            for t in report["transitions"]] == [("closed", "open", "failure_threshold", "j")]

    code, out = run(reset, "echo", "--config", str(config_dir))
    assert (code, out.strip()) == (0, "Reset circuit breaker for echo (poll)")
    _, out = run(breaker, "--config", str(config_dir), "--json")
    assert json.loads(out)["open"] == 0
    code, out = run(reset, "ghost", "--config", str(config_dir))
    assert code == 1 and "Unknown plugin: ghost" in out
