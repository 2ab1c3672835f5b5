"""The request boundary of every HTTP plane: a fault in one handler answers that request with a
JSON error (logged with its traceback), closes its connection, and the gateway keeps serving.

The real supervisor runs in-process with the real planes on loopback sockets; the fault is
injected by replacing a function a handler calls with one that raises.
"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ductile.boot.runtime import Process
from ductile.boot.supervisor import Supervisor
from ductile.logs import Logger
from ductile.planes.webhook.verify import sign_github
from support.gateway import TOKEN, free_port, make_vault, write_config

HOOK_SECRET = "boundary-hook-secret"


def fault(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected handler fault")


async def serving(tmp_path: Path, during: Callable[[int, int], Awaitable[None]]) -> str:
    """Run the real supervisor with the API and a webhook listener; `during(api, hooks)` runs
    once it serves. Returns the log."""
    cfg = tmp_path / "cfg"
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "hook": HOOK_SECRET})
    port, hook_port = free_port(), free_port()
    write_config(cfg, port=port, extra={"webhooks": {
        "listen": f"127.0.0.1:{hook_port}",
        "endpoints": [{"path": "/hooks/gh", "plugin": "echo", "secret_ref": "hook"}]}})
    stream = io.StringIO()
    proc = Process(explicit_config=str(cfg), environ=dict(os.environ), log=Logger(stream=stream))
    supervisor = Supervisor(proc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        with trio.fail_after(20):
            await supervisor.ready.wait()
        try:
            await during(port, hook_port)
        finally:
            supervisor.request_stop()
    return stream.getvalue()


async def good_job_runs(client: httpx.AsyncClient, port: int) -> None:
    ran = await client.post(f"http://127.0.0.1:{port}/plugins/echo/run",
                            json={"payload": {"ok": True}, "sync": True},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert ran.status_code == 200 and ran.json()["status"] == "succeeded", ran.text


async def test_a_fault_in_an_api_handler_is_a_json_500_and_the_gateway_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ductile.planes.api.routes import jobs

    async def during(port: int, _hooks: int) -> None:
        monkeypatch.setattr(jobs, "flat_tree", fault)
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{port}/job/x/tree",
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status_code in (404, 500)  # unknown job: 404 before the tree is built
            await good_job_runs(client, port)
            job = (await client.get(f"http://127.0.0.1:{port}/jobs",
                                    headers={"Authorization": f"Bearer {TOKEN}"})).json()
            job_id = job["jobs"][0]["job_id"]
            resp = await client.get(f"http://127.0.0.1:{port}/job/{job_id}/tree",
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status_code == 500
            assert resp.json() == {"error": "internal error; see the gateway log"}
            assert resp.headers["connection"] == "close"
            monkeypatch.undo()
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            await good_job_runs(client, port)

    log = await serving(tmp_path, during)
    failed = [json.loads(line) for line in log.splitlines() if '"request failed"' in line]
    assert len(failed) == 1
    assert failed[0]["error"] == "RuntimeError: injected handler fault"
    assert "Traceback" in failed[0]["traceback"] and failed[0]["path"].endswith("/tree")


async def test_a_fault_in_the_webhook_handler_is_a_json_503_the_sender_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ductile.planes.webhook import app as webhook_app

    async def during(port: int, hooks: int) -> None:
        monkeypatch.setattr(webhook_app, "verify_request", fault)
        body = b'{"n": 1}'
        headers = {"X-Hub-Signature-256": sign_github(HOOK_SECRET.encode(), body)}
        async with httpx.AsyncClient() as client:
            resp = await client.post(f"http://127.0.0.1:{hooks}/hooks/gh", content=body,
                                     headers=headers)
            assert resp.status_code == 503
            assert resp.json() == {"error": "webhook not accepted; retry later"}
            monkeypatch.undo()
            again = await client.post(f"http://127.0.0.1:{hooks}/hooks/gh", content=body,
                                      headers=headers)
            assert again.status_code == 202, again.text
            await good_job_runs(client, port)

    log = await serving(tmp_path, during)
    assert '"request failed"' in log and "injected handler fault" in log


async def test_an_early_answer_closes_the_connection_so_the_next_request_is_served(
    tmp_path: Path,
) -> None:
    """A 401 given before the body was read closes the connection: the unread body can never
    be taken for the next request, and a keep-alive client reconnects instead of hanging."""

    async def during(port: int, _hooks: int) -> None:
        body = b'{"payload": {"k": "' + b"x" * 200_000 + b'"}}'
        request = (b"POST /plugins/echo/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                   b"Content-Type: application/json\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n")
        answer = await trio.to_thread.run_sync(_exchange, port, request + body[:1000])
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"connection: close" in answer.lower()
        async with httpx.AsyncClient() as client:
            for _ in range(5):
                denied = await client.post(f"http://127.0.0.1:{port}/plugins/echo/run",
                                           content=body, headers={"Authorization": "Bearer no"},
                                           timeout=10)
                assert denied.status_code == 401
                assert (await client.get(f"http://127.0.0.1:{port}/healthz",
                                         timeout=10)).status_code == 200

    await serving(tmp_path, during)


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        out = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return out
            out += chunk
