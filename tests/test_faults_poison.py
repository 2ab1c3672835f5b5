"""Poison jobs: a job that takes the gateway down every time it runs is quarantined.

The plugin here kills the gateway that spawned it (`kill -9 $PPID`), the worst a job can do.
Under systemd each death is followed by a restart; the test restarts the real gateway by hand.
The first restart re-queues the job (it may have been bad luck), the job kills the gateway
again, and the second restart buries it `dead` as a poison job, fires its `job.failed` hook and
serves: a crash loop ends after two crashes instead of running on until the attempts run out.
"""

from __future__ import annotations

from pathlib import Path

from support.fault import db_path, wait_for
from support.gateway import Gateway, free_port, write_config
from support.plugins import bundled_root, make_plugin
from ductile.store.writes import POISON_ERROR

KILLER = "cat >/dev/null\nkill -9 $PPID\nsleep 5"
PIPELINES = [{"name": "on-poison", "on-hook": "job.failed",
              "steps": [{"id": "page", "uses": "echo"}]}]


def test_a_job_running_during_two_crashes_is_quarantined_and_its_hook_fires(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "killer", KILLER)
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg", port=port, plugin_roots=[str(root), str(bundled_root())],
        plugins={"killer": {"enabled": True, "notify_on_complete": True,
                            "retry": {"max_attempts": 5}},
                 "echo": {"enabled": True}},
        extra={"pipelines": PIPELINES},
    )
    gw = Gateway(cfg, port=port).start()
    accepted = gw.post("/plugin/killer/poll", {"payload": {"n": 1}})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert gw.wait_exit(20) == -9  # the first crash

    gw.start(wait=False)  # recovery re-queues it as attempt 2, and it kills the gateway again
    assert gw.wait_exit(20) == -9
    assert "recovered orphaned job" in gw.stdout()

    gw.start()  # the second recovery quarantines it
    try:
        job = gw.get(f"/job/{job_id}").json()
        assert job["status"] == "dead"
        assert job["attempt"] == 2  # the attempt it was running, never a third
        assert job["last_error"] == POISON_ERROR.format(2)
        tree = wait_for(lambda: _finished_children(gw, job_id), 15, "the poison hook to run")
        [hook] = tree
        assert hook["plugin"] == "echo" and hook["status"] == "succeeded"
        event = hook["result"]
        assert event is not None
        # The gateway serves good work after the quarantine.
        ran = gw.post("/plugins/echo/run", {"payload": {"ok": True}, "sync": True})
        assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text
    finally:
        assert gw.stop() == 0
    assert db_path(cfg).exists()


def _finished_children(gw: Gateway, job_id: str) -> list[dict] | None:
    tree = gw.get(f"/job/{job_id}/tree").json()
    children = [n for n in tree[1:] if n["status"] not in ("queued", "running")]
    return children or None
