"""Bad work fails as work, never as the process: the real gateway against jobs that once took
it down."""

from __future__ import annotations

from pathlib import Path

import trio

from ductile.store import Database
from ductile.store.queue import Queue
from ductile.store.values import RawJSON
from support.fault import db_path, wait_for
from support.gateway import Gateway, free_port, write_config


async def _enqueue_raw(path: Path, body: str) -> str:
    """Enqueue a job whose payload is `body` byte for byte, as a webhook stored it before
    webhooks refused numbers out of range."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await Database.open(str(path))
    try:
        queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
        return (await queue.enqueue("echo", "poll", RawJSON(body), "webhook")).id
    finally:
        await db.close()


def test_a_stored_payload_the_request_cannot_carry_fails_that_job_and_the_gateway_serves(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port)
    job_id = trio.run(_enqueue_raw, db_path(cfg), '{"n":1e999}')
    gw = Gateway(cfg, port=port).start()
    try:
        job = wait_for(lambda: _terminal(gw, job_id), 15, "the bad job to end")
        assert job["status"] == "failed"
        assert job["last_error"].startswith(
            "job fault while building the plugin request: ProtocolError: ")
        assert gw.proc is not None and gw.proc.poll() is None
        ran = gw.post("/plugins/echo/run", {"payload": {"ok": True}, "sync": True})
        assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text
        assert any(r.get("msg") == "job fault contained" for r in gw.log_records())
    finally:
        assert gw.stop() == 0


def _terminal(gw: Gateway, job_id: str) -> dict | None:
    job = gw.get(f"/job/{job_id}").json()
    return job if job["status"] not in ("queued", "running") else None
