"""Lifecycle hooks for jobs that crash recovery marks dead.

A crash is simulated as in tests/test_faults_crash.py, but without killing a gateway twice:
before the first boot, the real store writes jobs and claims them, so the database holds them
`running` exactly as a killed gateway leaves them. Booting the real gateway on that directory
then runs crash recovery; a notifying root job with no attempt left must fire its `job.failed`
hook pipeline with `recovery: true`, and nothing else may fire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from ductile.store import Database
from ductile.store.context import ContextSpec
from ductile.store.queue import Queue
from support.fault import connect_ro, db_path, wait_for
from support.gateway import Gateway, free_port, write_config
from support.plugins import make_plugin, respond_script

# Reports the request it got in its emitted event, so the test reads the hook event it saw.
DUMPER = ("req=$(cat)\n"
          "printf '{\"status\":\"ok\",\"result\":\"dumped\",\"events\":[{\"type\":\"dumped\","
          "\"payload\":{\"request\":%s}}]}' \"$req\"")
OK = respond_script({"status": "ok", "result": "fine"})
DEAD_ERROR = "Job marked dead during crash recovery: max attempts (1) reached"
PIPELINES = [
    {"name": "on-crash", "on-hook": "job.failed", "steps": [{"id": "page", "uses": "dumper"}]},
]


async def crash_with_running_jobs(state_db: Path) -> dict[str, str]:
    """Enqueue and claim four jobs in the real store, leaving them `running` as a crash would:
    a notifying root job on its last attempt (`dead_root`), the same as a pipeline step
    (`dead_step`), a root job of a plugin that does not notify (`dead_quiet`), and a notifying
    root job with an attempt left (`requeued`)."""
    state_db.parent.mkdir(parents=True, exist_ok=True)
    db = await Database.open(str(state_db))
    try:
        queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
        ids = {
            "dead_root": (await queue.enqueue("notifier", "poll", {"n": 1}, "api",
                                              max_attempts=1)).id,
            "dead_step": (await queue.enqueue(
                "notifier", "handle", {"type": "x", "payload": {}}, "route", max_attempts=1,
                context=ContextSpec(None, "elsewhere", "s1", {}))).id,
            "dead_quiet": (await queue.enqueue("quiet", "poll", {}, "api", max_attempts=1)).id,
            "requeued": (await queue.enqueue("notifier", "poll", {"n": 2}, "api",
                                             max_attempts=2)).id,
        }
        for _ in ids:
            assert await queue.claim() is not None
    finally:
        await db.close()
    return ids


def jobs_in(path: Path) -> dict[str, dict[str, Any]]:
    conn = connect_ro(path)
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM job_queue")}
    finally:
        conn.close()


def test_a_notifying_root_job_buried_by_recovery_fires_its_failed_hook(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "dumper", DUMPER)
    make_plugin(root, "notifier", OK)
    make_plugin(root, "quiet", OK)
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg", port=port, plugin_roots=[str(root)],
        plugins={"dumper": {"enabled": True},
                 "notifier": {"enabled": True, "notify_on_complete": True},
                 "quiet": {"enabled": True}},
        extra={"pipelines": PIPELINES},
    )
    ids = trio.run(crash_with_running_jobs, db_path(cfg))

    gw = Gateway(cfg, port=port).start()
    try:
        # Hooks are enqueued during boot, before the API answers: every hook that will ever
        # exist for these jobs exists now, so the trees below are final in size.
        tree = wait_for(lambda: [n for n in gw.get(f"/job/{ids['dead_root']}/tree").json()
                                 if n["status"] not in ("queued", "running")][1:],
                        15, "the recovery hook to finish")
        wait_for(lambda: gw.get(f"/job/{ids['requeued']}").json()["status"] == "succeeded",
                 15, "the requeued job to run again")
        for name in ("dead_step", "dead_quiet", "requeued"):
            assert len(gw.get(f"/job/{ids[name]}/tree").json()) == 1, name
    finally:
        assert gw.stop() == 0

    assert len(tree) == 1, tree
    hook = tree[0]
    assert hook["plugin"] == "dumper" and hook["pipeline"] == "on-crash"
    assert hook["parent_job_id"] == ids["dead_root"] and hook["status"] == "succeeded"
    event = hook["result"]["events"][0]["payload"]["request"]["event"]
    assert event["type"] == "job.failed" and event["source"] == "notifier"
    # A `handle` payload also carries the context keys (ductile_*); compare the hook's own.
    expected = {"job_id": ids["dead_root"], "plugin": "notifier", "command": "poll",
                "status": "dead", "reason": "attempts_exhausted", "error": DEAD_ERROR,
                "recovery": True}
    assert {k: event["payload"].get(k) for k in expected} == expected

    jobs = jobs_in(db_path(cfg))
    for name in ("dead_root", "dead_step", "dead_quiet"):
        assert jobs[ids[name]]["status"] == "dead", name
    hooks = [j for j in jobs.values() if j["submitted_by"] == "hook"]
    assert [(j["plugin"], j["parent_job_id"]) for j in hooks] == [("dumper", ids["dead_root"])]
    fired = [r for r in gw.log_records() if r.get("msg") == "recovery hook fired"]
    assert len(fired) == 1, fired
    assert fired[0]["job_id"] == ids["dead_root"] and fired[0]["pipeline"] == "on-crash"

