"""The scheduler inside the real gateway: schedules fire, `GET /scheduler/jobs` and the CLI list
them, pause/resume persist, `/healthz` counts open circuits, and a bad schedule refuses boot."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from support.gateway import Gateway, free_port, run_cli, write_config


def scheduled_jobs(gw: Gateway) -> list[dict]:
    return [j for j in gw.get("/jobs").json()["jobs"] if j["plugin"] == "echo"]


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_schedules_fire_list_and_pause(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, service={"tick_interval": "1s"}, plugins={
        "echo": {"enabled": True, "schedules": [{"id": "fast", "every": "1s"},
                                                {"id": "nightly", "cron": "0 3 * * *",
                                                 "timezone": "Europe/London"}]},
    })
    gw = Gateway(cfg, port=port).start()
    try:
        wait_for(lambda: len(scheduled_jobs(gw)) >= 2)
        rows_by_id = {r["schedule_id"]: r for r in gw.get("/scheduler/jobs").json()["jobs"]}
        assert rows_by_id["fast"]["paused"] is False
        listing = gw.get("/scheduler/jobs").json()["jobs"]
        rows = {row["schedule_id"]: row for row in listing}
        assert set(rows) == {"fast", "nightly"}
        assert rows["nightly"]["mode"] == "cron" and rows["nightly"]["next_run_at"]
        assert gw.get("/healthz").json()["plugins_circuit_open"] == 0

        paused = run_cli("system", "scheduler", "pause", "echo/fast", "--config", str(cfg))
        assert paused.returncode == 0, paused.stderr
        cli_list = run_cli("system", "scheduler", "--config", str(cfg), "--json")
        assert cli_list.returncode == 0, cli_list.stderr
        assert "paused" in cli_list.stdout
        # The CLI went through the daemon, which wrote the pause and woke its scheduler.
        assert gw.get("/scheduler/jobs").json()["jobs"][0]["paused"] is True
        settled = len(scheduled_jobs(gw))
        time.sleep(2.5)
        assert len(scheduled_jobs(gw)) == settled
        unknown = gw.post("/scheduler/resume", {"target": "echo/nope"})
        assert unknown.status_code == 404 and "echo/fast" in unknown.json()["error"]
        assert gw.post("/scheduler/pause", {"target": 5}).status_code == 400
        garbled = httpx.post(gw.url + "/scheduler/pause", content=b"{not json",
                             headers=gw.headers(), timeout=10)
        assert garbled.status_code == 400  # never read as "pause everything"
        resumed = run_cli("system", "scheduler", "resume", "echo/fast", "--config", str(cfg))
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: len(scheduled_jobs(gw)) > settled)
    finally:
        assert gw.stop() == 0
    inspect = run_cli("job", "list", "--config", str(cfg), "--json")
    # As in Go ductile, scheduled jobs are submitted by the service name.
    assert any(j["submitted_by"] == "ductile-test" for j in json.loads(inspect.stdout)["jobs"])


def test_unreachable_schedule_refuses_boot(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugins={
        "echo": {"enabled": True, "schedules": [
            {"cron": "0 3 * * *", "only_between": "09:00-17:00"}]},
    })
    gw = Gateway(cfg, port=port).start(wait=False)
    assert gw.wait_exit() == 78
    assert "gate schedules_valid" in gw.stderr(), gw.stderr()
