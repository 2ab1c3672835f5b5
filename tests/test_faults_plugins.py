"""Misbehaving plugins against the real gateway process.

One gateway serves the whole module; every fault plugin gets its own retry policy and timeout.
Each test runs one job synchronously through `POST /plugins/{name}/run`, checks the outcome and
the ledger (`ductile job inspect --json`), and that the gateway still answers `/healthz`. The last
test stops the gateway and checks the database file.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fault import (
    TERMINAL,
    alive,
    db_path,
    inspect_job,
    integrity,
    proc_state,
    statuses,
    wait_for,
)
from support.gateway import Gateway, free_port, run_cli, write_config
from support.plugins import make_plugin, respond_script

TIMEOUT = "800ms"


def once(max_attempts: int = 1) -> dict[str, Any]:
    return {"max_attempts": max_attempts, "backoff_base": "10ms"}


class Faults:
    """The module's gateway and the files its plugins write."""

    def __init__(self, gw: Gateway, files: Path) -> None:
        self.gw, self.files = gw, files
        self.job_ids: list[str] = []

    def run(self, plugin: str, payload: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        started = time.monotonic()
        resp = self.gw.post(f"/plugins/{plugin}/run",
                            {"payload": payload or {"n": 1}, "command": "poll", "sync": True},
                            timeout=timeout)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        body["elapsed"] = time.monotonic() - started
        self.job_ids.append(body["job_id"])
        return body

    def ledger(self, job_id: str) -> dict[str, Any]:
        """The gateway is still alive, and the CLI reads the job's ledger."""
        health = self.gw.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert self.gw.proc.poll() is None
        return inspect_job(self.gw.config_dir, job_id)


def outcomes(ledger: dict[str, Any]) -> list[str]:
    return [a["outcome"] for a in ledger["attempts"]]


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    base = tmp_path_factory.mktemp("faults")
    root, files = base / "plugins", base / "files"
    files.mkdir()
    # An ok answer without draining stdin first: respond_script's lines after `cat >/dev/null`.
    ok = respond_script({"status": "ok", "result": "fine"}).split("\n", 1)[1]
    scripts: dict[str, tuple[str, dict[str, Any]]] = {
        "hang": ("cat >/dev/null; sleep 30", {"retry": once(2), "timeouts": {"poll": TIMEOUT}}),
        "flood": ("cat >/dev/null; head -c 20000000 /dev/zero | tr '\\0' x", {"retry": once()}),
        "garbage": ("cat >/dev/null; echo 'this is not json {'", {"retry": once(2)}),
        "twice": ("cat >/dev/null; echo '{\"status\":\"ok\",\"result\":\"a\"}"
                  "{\"status\":\"ok\",\"result\":\"b\"}'", {"retry": once()}),
        "closer": ("cat >/dev/null; exec 1>&-; sleep 30",
                   {"retry": once(), "timeouts": {"poll": TIMEOUT}}),
        "deaf": ("printf '%s' '{\"status\":\"ok\",\"result\":\"never read stdin\"}'",
                 {"retry": once()}),
        "fatal": (respond_script({"status": "error", "error": "bad credentials"}, exit_code=78),
                  {"retry": once(3)}),
        "final": (respond_script({"status": "error", "error": "do not retry", "retry": False}),
                  {"retry": once(3)}),
        "sneaky": ("cat >/dev/null\n"
                   f"sh -c 'trap \"\" TERM; echo $$ > {files}/sneaky.pid; exec sleep 60' &\n"
                   f"while [ ! -s {files}/sneaky.pid ]; do :; done\nsleep 60",
                   {"retry": once(), "timeouts": {"poll": TIMEOUT}}),
        "forker": ("cat >/dev/null\ni=0\nwhile [ $i -lt 50 ]; do\n"
                   f"  sleep 60 & echo $! >> {files}/forker.pids\n  i=$((i+1))\ndone\n"
                   + ok, {"retry": once()}),
        "escapee": ("cat >/dev/null\n"
                    f"setsid sleep 60 & echo $! > {files}/escapee.pid\n"
                    + ok, {"retry": once()}),
        "suicide": ("cat >/dev/null; printf '{\"status\":\"ok\",'; kill -9 $$",
                    {"retry": once(2)}),
        "binary": ("cat >/dev/null; printf '\\377\\376 junk\\n' >&2; "
                   "printf '{\"status\":\"ok\",\"result\":\"bytes \\377\\376 end\"}'",
                   {"retry": once()}),
        "nested": ("cat >/dev/null; head -c 200000 /dev/zero | tr '\\0' '['", {"retry": once()}),
        "nan": ("cat >/dev/null; echo '{\"status\":\"ok\",\"result\":\"x\","
                "\"state_updates\":{\"a\":NaN}}'", {"retry": once()}),
        "frozen": ("cat >/dev/null; kill -STOP $$; echo never",
                   {"retry": once(), "timeouts": {"poll": "300ms"}}),
        "chatty": ("cat >/dev/null; head -c 1000000 /dev/zero | tr '\\0' e >&2\n"
                   + ok, {"retry": once()}),
    }
    plugins = {}
    for name, (script, conf) in scripts.items():
        make_plugin(root, name, script)
        plugins[name] = {"enabled": True, **conf}
    port = free_port()
    cfg = write_config(base / "cfg", port=port, plugins=plugins, plugin_roots=[str(root)],
                       service={"max_workers": 2, "tick_interval": "1s",
                                "shutdown_grace": "2s"},
                       api={"max_sync_timeout": "30s"})
    gw = Gateway(cfg, port=port).start()
    yield Faults(gw, files)
    gw.stop()


def test_a_plugin_hanging_past_its_timeout_times_out_on_every_attempt(faults: Faults) -> None:
    job = faults.run("hang")
    assert (job["status"], job["attempt"]) == ("timed_out", 2)
    assert job["last_error"] == "plugin execution timed out after 800ms"
    ledger = faults.ledger(job["job_id"])
    assert outcomes(ledger) == ["timeout", "timeout"]
    assert [t["to_status"] for t in ledger["transitions"]] == [
        "queued", "running", "queued", "running", "timed_out"]


def test_20_mb_of_stdout_fails_over_the_cap(faults: Faults) -> None:
    job = faults.run("flood")
    assert (job["status"], job["attempt"]) == ("failed", 1)
    assert "exceeded max size" in job["last_error"]
    ledger = faults.ledger(job["job_id"])
    assert outcomes(ledger) == ["spawn_error"]


def test_garbage_output_fails_as_not_json_after_every_attempt(faults: Faults) -> None:
    job = faults.run("garbage")
    assert (job["status"], job["attempt"]) == ("failed", 2)
    assert "not valid JSON" in job["last_error"]
    ledger = faults.ledger(job["job_id"])
    assert outcomes(ledger) == ["spawn_error", "spawn_error"]
    assert all(a["exit_code"] == 0 for a in ledger["attempts"])


def test_two_json_objects_on_stdout_fail(faults: Faults) -> None:
    job = faults.run("twice")
    assert (job["status"], job["attempt"]) == ("failed", 1)
    assert "not valid JSON" in job["last_error"]
    assert outcomes(faults.ledger(job["job_id"])) == ["spawn_error"]


def test_closing_stdout_and_running_on_times_out_without_hanging_the_gateway(
    faults: Faults,
) -> None:
    job = faults.run("closer")
    assert (job["status"], job["attempt"]) == ("timed_out", 1)
    assert job["last_error"] == "plugin execution timed out after 800ms"
    assert job["elapsed"] < 10
    assert outcomes(faults.ledger(job["job_id"])) == ["timeout"]


@pytest.mark.parametrize("size", [0, 300_000], ids=["small-request", "request-over-pipe-size"])
def test_a_plugin_that_never_reads_stdin_still_succeeds(faults: Faults, size: int) -> None:
    payload = {"n": 1, "blob": "b" * size}
    job = faults.run("deaf", payload)
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job
    assert job["result"]["result"] == "never read stdin"
    ledger = faults.ledger(job["job_id"])
    assert outcomes(ledger) == ["ok"]


def test_exit_code_78_is_permanent_despite_three_attempts_allowed(faults: Faults) -> None:
    job = faults.run("fatal")
    assert (job["status"], job["attempt"], job["max_attempts"]) == ("failed", 1, 3)
    assert job["last_error"] == "bad credentials"
    ledger = faults.ledger(job["job_id"])
    assert outcomes(ledger) == ["exit_code_78"]
    assert ledger["attempts"][0]["exit_code"] == 78


def test_retry_false_is_permanent_despite_three_attempts_allowed(faults: Faults) -> None:
    job = faults.run("final")
    assert (job["status"], job["attempt"], job["max_attempts"]) == ("failed", 1, 3)
    assert job["last_error"] == "do not retry"
    assert outcomes(faults.ledger(job["job_id"])) == ["plugin_retry_false"]


def test_a_grandchild_ignoring_sigterm_does_not_survive_the_timeout(faults: Faults) -> None:
    job = faults.run("sneaky")
    assert (job["status"], job["attempt"]) == ("timed_out", 1)
    assert "timed out after 800ms" in job["last_error"]
    assert outcomes(faults.ledger(job["job_id"])) == ["timeout"]
    pid = int((faults.files / "sneaky.pid").read_text())
    # Gone, or a zombie: this container's PID 1 does not reap orphans.
    wait_for(lambda: proc_state(pid) in (None, "Z", "X"), 2, "the grandchild to be killed")


def test_fifty_children_left_behind_are_killed_with_the_job(faults: Faults) -> None:
    job = faults.run("forker")
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job
    # The children hold stdout open for 60 s: the job must not wait for them.
    assert job["elapsed"] < 15
    assert outcomes(faults.ledger(job["job_id"])) == ["ok"]
    pids = [int(p) for p in (faults.files / "forker.pids").read_text().split()]
    assert len(pids) == 50
    wait_for(lambda: not alive(pids), 2, "the 50 children to be killed")


def test_a_descendant_that_left_the_process_group_cannot_hold_the_job(faults: Faults) -> None:
    """It escaped the group kill (setsid) and keeps stdout open: the job still ends when the
    plugin itself exits."""
    job = faults.run("escapee")
    pid = int((faults.files / "escapee.pid").read_text())
    try:
        assert (job["status"], job["attempt"]) == ("succeeded", 1), job
        assert job["elapsed"] < 15
        assert outcomes(faults.ledger(job["job_id"])) == ["ok"]
    finally:
        if proc_state(pid) not in (None, "Z", "X"):
            os.kill(pid, signal.SIGKILL)  # our own leftover: the test started it


def test_a_plugin_killed_mid_response_fails_naming_the_signal(faults: Faults) -> None:
    job = faults.run("suicide")
    assert (job["status"], job["attempt"]) == ("failed", 2)
    assert "not valid JSON" in job["last_error"] and "killed by signal 9" in job["last_error"]
    ledger = faults.ledger(job["job_id"])
    assert outcomes(ledger) == ["spawn_error", "spawn_error"]
    assert [a["exit_code"] for a in ledger["attempts"]] == [None, None]


def test_a_megabyte_of_stderr_is_truncated_and_never_fails_the_job(faults: Faults) -> None:
    job = faults.run("chatty")
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job
    ledger = faults.ledger(job["job_id"])
    assert outcomes(ledger) == ["ok"]
    assert ledger["stderr"] and set(ledger["stderr"]) == {"e"}
    assert len(ledger["stderr"].encode()) <= 64 * 1024


def test_undecodable_bytes_in_stdout_and_stderr_are_stored_replaced(faults: Faults) -> None:
    job = faults.run("binary")
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job
    assert job["result"]["result"] == "bytes \ufffd\ufffd end"
    ledger = faults.ledger(job["job_id"])
    assert ledger["stderr"].startswith("\ufffd\ufffd junk")


def test_json_nested_too_deeply_fails_cleanly(faults: Faults) -> None:
    resp = faults.gw.post("/plugins/nested/run", {"payload": {"n": 1}, "command": "poll"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    faults.job_ids.append(job_id)
    path = db_path(faults.gw.config_dir)
    wait_for(lambda: statuses(path).get(job_id) in TERMINAL, 20, "the job to end")
    assert statuses(path)[job_id] == "failed"
    view = faults.gw.get(f"/job/{job_id}")
    assert view.status_code == 200, view.text
    assert "not valid JSON" in view.json()["last_error"]
    assert outcomes(faults.ledger(job_id)) == ["spawn_error"]


def test_nan_in_a_response_is_not_json(faults: Faults) -> None:
    job = faults.run("nan")
    assert (job["status"], job["attempt"]) == ("failed", 1)
    assert "not valid JSON" in job["last_error"]
    assert outcomes(faults.ledger(job["job_id"])) == ["spawn_error"]


def test_a_stopped_plugin_is_killed_after_the_grace_period(faults: Faults) -> None:
    """SIGSTOP holds SIGTERM pending: only the SIGKILL after the 5 s grace ends it."""
    job = faults.run("frozen")
    assert (job["status"], job["attempt"]) == ("timed_out", 1)
    assert job["last_error"] == "plugin execution timed out after 300ms"
    assert 5 <= job["elapsed"] < 12
    assert outcomes(faults.ledger(job["job_id"])) == ["timeout"]


def test_after_every_fault_the_gateway_stops_cleanly_and_the_database_is_sound(
    faults: Faults,
) -> None:
    assert faults.gw.stop() == 0
    assert integrity(db_path(faults.gw.config_dir)) == "ok"
    listed = json.loads(run_cli("job", "list", "--config", str(faults.gw.config_dir), "--json",
                                "--limit", "200").stdout)
    statuses = {j["job_id"]: j["status"] for j in listed["jobs"]}
    assert set(faults.job_ids) <= set(statuses)
    assert set(statuses.values()) <= TERMINAL, statuses
    # No plugin process of this module outlived its job (zombies aside).
    pids = [int(p) for p in (faults.files / "forker.pids").read_text().split()]
    pids.append(int((faults.files / "sneaky.pid").read_text()))
    wait_for(lambda: not alive(pids), 5, "every plugin descendant to be gone")
