"""The operator's job verbs against the real gateway: cancel, retry, rerun, and a clean stop
recorded as a stop.

One gateway serves most of the module (a plugin that holds its worker until it is stopped and
records the signal it got, a plugin that fails while a flag file exists, and the bundled echo in
a two-step pipeline); `max_workers: 1` keeps a second job queued behind a running one. The stop
test runs its own gateway, stops it with SIGTERM and boots it again on the same directory.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from ductile.plugin.spawn import spawn_plugin
from support.fault import alive, connect_ro, db_path
from support.gateway import BUNDLED_PLUGINS, READ_TOKEN, Gateway, free_port, run_cli, write_config
from support.plugins import make_plugin

T = TypeVar("T")

# Holds its worker: a grandchild `sleep` in the same process group, both pids recorded. On
# SIGTERM it notes the signal (a SIGKILL could not be noted) and exits.
HOLD = """cat >/dev/null
trap 'echo "term $$" >> "{marks}"; exit 143' TERM
sleep 60 &
echo "$$ $!" >> "{pids}"
wait
"""
# Fails for good while the flag file exists, succeeds once it is gone.
FLAKY = """cat >/dev/null
if [ -e "{flag}" ]; then
  echo '{{"status":"error","error":"upstream down","retry":false}}'
else
  echo '{{"status":"ok","result":"fine"}}'
fi
"""
PIPELINES = [
    {"name": "twostep", "on": "twostep.start", "steps": [
        {"id": "first", "uses": "echo", "baggage": {"order.id": "payload.order"}},
        {"id": "second", "uses": "echo"},
    ]},
    # Fans out at once: the run's root is a synthetic core.split job.
    {"name": "fanned", "on": "fanned.start", "steps": [
        {"split": [{"id": "left", "uses": "echo"}, {"id": "right", "uses": "echo"}]},
    ]},
]
TERMINAL = ("succeeded", "failed", "timed_out", "dead", "skipped", "cancelled")


def wait_for(check: Callable[[], T | None], what: str, within: float = 20.0) -> T:
    """Poll until `check` answers something truthy; fail naming `what` (a bound on a wait,
    not a timing assertion)."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("verbs")
    root = base / "plugins"
    files = {"marks": base / "marks", "pids": base / "pids", "flag": base / "flag"}
    make_plugin(root, "hold", HOLD.format(**files))
    make_plugin(root, "flaky", FLAKY.format(**files))
    port = free_port()
    cfg = write_config(
        base / "cfg", port=port, plugin_roots=[str(BUNDLED_PLUGINS), str(root)],
        plugins={"echo": {"enabled": True}, "hold": {"enabled": True,
                                                      "timeouts": {"poll": "2m"}},
                 "flaky": {"enabled": True}},
        service={"max_workers": 1}, extra={"pipelines": PIPELINES})
    gateway = Gateway(cfg, port=port).start()
    try:
        yield {"gw": gateway, "cfg": cfg, **files}
    finally:
        gateway.stop()


def job(gw: Gateway, job_id: str) -> dict[str, Any]:
    resp = gw.get(f"/job/{job_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def finished(gw: Gateway, job_id: str) -> dict[str, Any]:
    return wait_for(lambda: (lambda j: j if j["status"] in TERMINAL else None)(job(gw, job_id)),
                    f"job {job_id} to end")


def enqueue(gw: Gateway, plugin: str, payload: dict[str, Any] | None = None) -> str:
    resp = gw.post(f"/plugin/{plugin}/poll", {"payload": payload or {}})
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["job_id"]
    return job_id


def inspect(cfg: Path, job_id: str) -> dict[str, Any]:
    out = run_cli("job", "inspect", job_id, "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def held_pids(path: Path, count: int) -> list[int]:
    """The (plugin, grandchild) pids of the `count`-th spawn of `hold`."""
    lines = wait_for(lambda: (lambda ls: ls if len(ls) >= count else None)(
        path.read_text().split("\n")[:-1] if path.exists() else []), "the plugin to start")
    return [int(pid) for pid in lines[count - 1].split()]


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_a_queued_job_then_the_running_one_stops_its_process_group(
    world: dict[str, Any],
) -> None:
    gw, cfg = world["gw"], world["cfg"]
    running = enqueue(gw, "hold")
    pids = held_pids(world["pids"], 1)
    waiting = enqueue(gw, "echo")
    assert job(gw, waiting)["status"] == "queued"  # the only worker is held

    out = run_cli("job", "cancel", waiting, "--reason", "not needed", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert f"Cancelled job {waiting}" in out.stdout
    view = job(gw, waiting)
    assert (view["status"], view["last_error"]) == (
        "cancelled", "cancelled by operator: not needed")
    report = inspect(cfg, waiting)
    assert [(t["from_status"], t["to_status"]) for t in report["transitions"]] == [
        (None, "queued"), ("queued", "cancelled")]
    assert report["attempts"] == []  # it never ran
    listed = gw.get("/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert waiting in [j["job_id"] for j in listed]
    logged = gw.get("/job-logs", params={"status": "cancelled"}).json()["logs"]
    assert waiting in [entry["job_id"] for entry in logged]
    out = run_cli("job", "list", "--status", "cancelled", "--config", str(cfg), "--json")
    assert waiting in [j["job_id"] for j in json.loads(out.stdout)["jobs"]]

    resp = gw.post(f"/job/{running}/cancel", {"reason": "stuck"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled"
    # SIGTERM came first: a SIGKILL could not have been trapped.
    assert world["marks"].read_text().splitlines()[-1] == f"term {pids[0]}"
    wait_for(lambda: not alive(pids) or None, "the plugin and its grandchild to be gone")
    report = inspect(cfg, running)
    assert report["status"] == "cancelled"
    assert report["last_error"] == "cancelled by operator: stuck"
    assert report["transitions"][-1]["from_status"] == "running"
    assert report["transitions"][-1]["reason"] == (
        "cancelled: cancelled by operator: stuck")
    assert [a["outcome"] for a in report["attempts"]] == ["cancelled"]
    # Nothing is routed on and the worker is free again.
    assert finished(gw, enqueue(gw, "echo"))["status"] == "succeeded"


def test_a_sync_request_waiting_on_a_queued_job_answers_when_it_is_cancelled(
    world: dict[str, Any],
) -> None:
    """The cancel of a queued job wakes a `sync: true` request waiting on it at once (it
    would otherwise wait out api.max_sync_timeout, five minutes by default)."""
    import threading

    import httpx

    from support.gateway import TOKEN

    gw = world["gw"]
    count = len(world["pids"].read_text().splitlines()) + 1 if world["pids"].exists() else 1
    holder = enqueue(gw, "hold")
    held_pids(world["pids"], count)  # the only worker is held
    answers: list[httpx.Response] = []

    def sync_run() -> None:
        answers.append(httpx.post(f"{gw.url}/plugins/echo/run",
                                  headers={"Authorization": f"Bearer {TOKEN}"},
                                  json={"payload": {"n": 1}, "sync": True}, timeout=60))

    waiter = threading.Thread(target=sync_run)
    waiter.start()
    queued = wait_for(lambda: next((j["job_id"] for j in gw.get(
        "/jobs", params={"plugin": "echo", "status": "queued"}).json()["jobs"]), None),
        "the sync run's job to be queued")
    started = time.monotonic()
    assert gw.post(f"/job/{queued}/cancel", {}).status_code == 200
    waiter.join(timeout=30)
    assert answers and time.monotonic() - started < 10
    assert answers[0].status_code == 200 and answers[0].json()["status"] == "cancelled"
    assert gw.post(f"/job/{holder}/cancel", {}).status_code == 200


def test_cancel_refusals_name_the_job_status_and_scope(world: dict[str, Any]) -> None:
    gw = world["gw"]
    done = finished(gw, enqueue(gw, "echo"))
    resp = gw.post(f"/job/{done['job_id']}/cancel")
    assert resp.status_code == 409
    assert resp.json() == {
        "error": f"job {done['job_id']} is succeeded: only a queued or running job can be "
                 "cancelled", "job_id": done["job_id"], "job_status": "succeeded"}
    resp = gw.post("/job/no-such-job/cancel")
    assert (resp.status_code, resp.json()) == (404, {"error": "job not found"})
    resp = gw.post(f"/job/{done['job_id']}/cancel", token=READ_TOKEN)
    assert (resp.status_code, resp.json()) == (403, {"error": "insufficient scope"})
    resp = gw.post(f"/job/{done['job_id']}/cancel", {"reason": "x", "force": True})
    assert resp.status_code == 400
    assert resp.json()["error"] == "unknown field(s) in body: force; allowed: reason"
    resp = gw.post(f"/job/{done['job_id']}/cancel", {"reason": "two\nlines"})
    assert resp.status_code == 400 and "one line" in resp.json()["error"]
    out = run_cli("job", "cancel", done["job_id"], "--config", str(world["cfg"]))
    assert out.returncode == 1
    assert "API error (409): job" in out.stderr and "is succeeded" in out.stderr


# -- retry ----------------------------------------------------------------------------------


def test_retry_enqueues_a_new_linked_job_once(world: dict[str, Any]) -> None:
    gw, cfg, flag = world["gw"], world["cfg"], world["flag"]
    flag.touch()
    try:
        old = finished(gw, enqueue(gw, "flaky", {"order": 9}))
    finally:
        flag.unlink()
    assert (old["status"], old["last_error"]) == ("failed", "upstream down")

    out = run_cli("job", "retry", old["job_id"], "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["retry_of"] == old["job_id"] and answer["plugin"] == "flaky"
    new = finished(gw, answer["job_id"])
    assert (new["status"], new["retry_of"]) == ("succeeded", old["job_id"])
    assert job(gw, old["job_id"])["retried_as"] == new["job_id"]

    old_report, new_report = inspect(cfg, old["job_id"]), inspect(cfg, new["job_id"])
    assert old_report["links"] == {"retried_as": new["job_id"]}
    assert new_report["links"] == {"retry_of": old["job_id"]}
    assert new_report["payload"] == old_report["payload"] == {"order": 9}
    assert new_report["transitions"][0]["reason"] == f"enqueued by api: retry of {old['job_id']}"
    text = run_cli("job", "inspect", old["job_id"], "--config", str(cfg)).stdout
    assert f"retried as:   job {new['job_id']}" in text

    again = gw.post(f"/job/{old['job_id']}/retry")
    assert again.status_code == 409
    assert again.json()["error"] == (
        f"job {old['job_id']} was already retried as job {new['job_id']}; retry that job "
        "instead (ductile job inspect shows it)")
    resp = gw.post(f"/job/{new['job_id']}/retry")
    assert resp.status_code == 409
    assert resp.json()["error"] == (
        f"job {new['job_id']} is succeeded: only a job that is failed, timed_out, dead or "
        "cancelled can be retried")
    assert gw.post("/job/nope/retry").status_code == 404
    assert gw.post(f"/job/{old['job_id']}/retry", token=READ_TOKEN).status_code == 403


def test_a_cancelled_job_can_be_retried(world: dict[str, Any]) -> None:
    gw = world["gw"]
    count = len(world["pids"].read_text().splitlines()) + 1 if world["pids"].exists() else 1
    held = enqueue(gw, "hold")
    held_pids(world["pids"], count)
    waiting = enqueue(gw, "echo", {"n": 1})
    assert gw.post(f"/job/{waiting}/cancel").json()["status"] == "cancelled"
    assert gw.post(f"/job/{held}/cancel").status_code == 200
    resp = gw.post(f"/job/{waiting}/retry")
    assert resp.status_code == 202, resp.text
    assert finished(gw, resp.json()["job_id"])["status"] == "succeeded"


# -- rerun ----------------------------------------------------------------------------------


def contexts(cfg: Path, job_ids: list[str]) -> list[dict[str, Any]]:
    conn = connect_ro(db_path(cfg))
    try:
        rows = [conn.execute(
            "SELECT c.accumulated_json FROM job_queue q JOIN event_context c "
            "ON c.id = q.event_context_id WHERE q.id = ?", (job_id,)).fetchone()
            for job_id in job_ids]
    finally:
        conn.close()
    return [json.loads(row[0]) for row in rows]


def settled(gw: Gateway, root: str, size: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        tree: list[dict[str, Any]] = gw.get(f"/job/{root}/tree").json()
        done = len(tree) >= size and all(n["status"] in TERMINAL for n in tree)
        return tree if done else None

    return wait_for(check, f"the run rooted at {root}")


def test_rerun_starts_the_same_run_again_as_a_new_instance(world: dict[str, Any]) -> None:
    gw, cfg = world["gw"], world["cfg"]
    started = gw.post("/pipeline/twostep",
                      {"payload": {"order": 7}, "baggage": {"tenant": "acme"}}).json()
    root = started["job_id"]
    before = settled(gw, root, 2)
    assert [n["step_id"] for n in before] == ["first", "second"]

    step = before[1]["job_id"]
    refused = gw.post(f"/job/{step}/rerun")
    assert refused.status_code == 409
    assert refused.json()["error"] == (
        f"job {step} is not the root of its pipeline run: the root is job {root}; rerun that "
        f"job (ductile pipeline rerun {root})")
    assert refused.json()["root_job_id"] == root

    out = run_cli("pipeline", "rerun", root, "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    new_root = out.stdout.split(": job ")[1].split()[0]
    after = settled(gw, new_root, 2)
    assert [(n["step_id"], n["status"]) for n in after] == [
        ("first", "succeeded"), ("second", "succeeded")]
    assert [n["baggage"] for n in after] == [n["baggage"] for n in before]
    assert after[0]["baggage"] == {"tenant": "acme", "order": {"id": 7}}
    old_ctx, new_ctx = contexts(cfg, [root, new_root])
    assert old_ctx["ductile"]["pipeline_instance_id"] != new_ctx["ductile"][
        "pipeline_instance_id"]
    assert job(gw, new_root)["rerun_of"] == root
    assert job(gw, root)["rerun_as"] == [new_root]
    assert inspect(cfg, new_root)["links"] == {"rerun_of": root}


def test_rerun_of_a_fanned_out_run_starts_it_again_from_its_trigger(
    world: dict[str, Any],
) -> None:
    gw = world["gw"]
    started = gw.post("/pipeline/fanned", {"payload": {"n": 3}, "baggage": {"team": "ops"}})
    assert started.status_code == 202, started.text
    root = started.json()["run_id"]
    before = settled(gw, root, 3)
    resp = gw.post(f"/job/{root}/rerun")
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert (answer["rerun_of"], answer["command"], len(answer["job_ids"])) == (root, "fanned", 2)
    after = settled(gw, answer["run_id"], 3)
    assert sorted((n["step_id"] or "", n["status"]) for n in after) == sorted(
        (n["step_id"] or "", n["status"]) for n in before)
    assert {n["baggage"]["team"] for n in after if n["step_id"]} == {"ops"}
    assert job(gw, answer["run_id"])["rerun_of"] == root
    assert job(gw, root)["rerun_as"] == [answer["run_id"]]


def test_rerun_refuses_a_job_that_started_no_run(world: dict[str, Any]) -> None:
    gw = world["gw"]
    lone = finished(gw, enqueue(gw, "flaky"))["job_id"]
    resp = gw.post(f"/job/{lone}/rerun")
    assert resp.status_code == 409
    assert resp.json()["error"] == (
        f"job {lone} started no pipeline run (nothing was routed from it); to run this one job "
        f"again, use ductile job retry {lone}")
    assert gw.post("/job/missing/rerun").status_code == 404


# -- a clean stop ---------------------------------------------------------------------------


def test_a_job_cut_short_by_sigterm_is_recorded_as_interrupted_not_crashed(
    tmp_path: Path,
) -> None:
    root, hold = tmp_path / "plugins", tmp_path / "hold"
    make_plugin(root, "slow", f'cat >/dev/null\nif [ -e "{hold}" ]; then sleep 60; fi\n'
                              "echo '{\"status\":\"ok\",\"result\":\"done\"}'")
    hold.touch()
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(root)],
                       plugins={"slow": {"enabled": True, "timeouts": {"poll": "2m"},
                                         "retry": {"max_attempts": 2}}},
                       service={"shutdown_grace": "1s"})
    gw = Gateway(cfg, port=port).start()
    try:
        job_id = enqueue(gw, "slow")
        wait_for(lambda: job(gw, job_id)["status"] == "running" or None, "the job to run")
        gw.signal(signal.SIGTERM)
        assert gw.wait_exit(20) == 0, gw.stderr()
    finally:
        gw.stop()
    conn = connect_ro(db_path(cfg))
    try:
        row = conn.execute("SELECT status, attempt, max_attempts FROM job_queue WHERE id = ?",
                           (job_id,)).fetchone()
    finally:
        conn.close()
    assert tuple(row) == ("queued", 2, 3)  # back in the queue; the cut attempt is not counted
    assert any(r.get("msg") == "job interrupted by shutdown; it runs again after the next start"
               for r in gw.log_records())

    hold.unlink()
    again = Gateway(cfg, port=port).start()
    try:
        assert finished(again, job_id)["status"] == "succeeded"
        boot = [r for r in again.log_records() if r.get("msg") == "recovered orphaned job"]
    finally:
        again.stop()
    assert boot == []  # a clean stop leaves crash recovery nothing to do
    report = inspect(cfg, job_id)
    assert [(a["attempt"], a["outcome"]) for a in report["attempts"]] == [
        (1, "interrupted"), (2, "ok")]
    reasons = [t["reason"] or "" for t in report["transitions"]]
    assert any(r.startswith("interrupted by shutdown") for r in reasons)
    assert not any("crash" in r for r in reasons)


# -- the stop itself, below the dispatcher --------------------------------------------------


async def test_a_stop_terms_the_group_then_kills_what_ignores_term(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    plugin = make_plugin(tmp_path / "plugins", "stubborn",
                         f"trap '' TERM\nsleep 60 &\necho \"$$ $!\" > {pids}\nwait\nwait")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        async def stop_once_started() -> None:
            while not pids.exists() or not pids.read_text().strip():
                await trio.sleep(0.02)
            stop.set()

        nursery.start_soon(stop_once_started)
        result = await spawn_plugin(str(plugin / "run"), b"{}", timeout=60, env={},
                                    grace=0.3, stop=stop)
    assert result.stopped and not result.timed_out
    assert result.exit_code is None and result.signal == signal.SIGKILL
    # The group's SIGKILL is sent; the kernel finishes each member's exit on its own time, so
    # a busy machine may still show the background `sleep` for a moment.
    group = [int(pid) for pid in pids.read_text().split()]
    deadline = trio.current_time() + 10
    while alive(group) and trio.current_time() < deadline:
        await trio.sleep(0.02)
    assert alive(group) == []
