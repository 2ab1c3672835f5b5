"""The bundled echo plugin end to end: discover, build the request, spawn, decode."""

from __future__ import annotations

import os
import signal
import stat
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.plugins import bundled_root

from ductile.errors import ProtocolError
from ductile.plugin.discovery import Plugin, discover
from ductile.plugin.protocol import Response, build_request, decode_response
from ductile.plugin.spawn import SpawnResult, child_env, spawn_plugin


@pytest.fixture(scope="module")
def echo() -> Plugin:
    return discover([str(bundled_root())], allow_symlinks=False).plugins["echo"]


async def call(
    plugin: Plugin,
    command: str = "poll",
    config: dict[str, Any] | None = None,
    *,
    state: dict[str, Any] | None = None,
    payload: Any = None,
    event: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> SpawnResult:
    request = build_request(
        job_id="job-1", command=command, config=config or {}, state=state or {}, payload=payload,
        context={"ductile_plugin": plugin.name}, event=event,
        deadline_at=datetime.now(UTC) + timedelta(seconds=timeout),
    )
    return await spawn_plugin(plugin.entrypoint, request, timeout=timeout, env=child_env(),
                              grace=0.3)


async def respond(plugin: Plugin, *args: Any, **kw: Any) -> Response:
    result = await call(plugin, *args, **kw)
    assert result.exit_code == 0, result
    return decode_response(result.stdout)


def test_launcher_is_executable_sh(echo: Plugin) -> None:
    mode = os.stat(echo.entrypoint).st_mode
    assert stat.S_IMODE(mode) == 0o755
    with open(echo.entrypoint, "rb") as fh:
        assert fh.readline() == b"#!/bin/sh\n"


async def test_poll_ok(echo: Plugin) -> None:
    r = await respond(echo, "poll", {"message": "hi"}, state={"count": 4}, payload={"a": 1})
    assert r.ok and r.result == "echo: hi"
    assert [e.type for e in r.events] == ["echo.poll"]
    assert r.events[0].payload == {"message": "hi", "payload": {"a": 1}, "command": "poll"}
    assert r.state_updates == {"last_command": "poll", "count": 5}


async def test_default_message_and_first_count(echo: Plugin) -> None:
    r = await respond(echo)
    assert r.result == "echo: hello"
    assert r.events[0].payload["payload"] == {}
    assert r.state_updates == {"last_command": "poll", "count": 1}


async def test_handle_echoes_the_event_payload(echo: Plugin) -> None:
    event = {"type": "src.done", "payload": {"text": "x"}}
    r = await respond(echo, "handle", payload={"type": "src.done", "payload": {"text": "x"}},
                      event=event)
    assert r.events[0].type == "echo.handle"
    assert r.events[0].payload == {
        "message": "hello", "payload": {"text": "x"}, "command": "handle",
    }


async def test_health(echo: Plugin) -> None:
    r = await respond(echo, "health", {"mode": "error"})
    assert (r.status, r.result, r.events, r.state_updates) == ("ok", "healthy", (), None)


async def test_error_modes(echo: Plugin) -> None:
    r = await respond(echo, "poll", {"mode": "error"})
    assert (r.status, r.error, r.retry) == ("error", "echo: configured to fail", None)
    r = await respond(echo, "poll", {"mode": "error", "message": "nope", "retry": False})
    assert (r.status, r.error, r.retry) == ("error", "nope", False)


async def test_exit_code_and_stderr_options(echo: Plugin) -> None:
    result = await call(echo, "poll", {"mode": "error", "exit_code": 78, "stderr": "why"})
    assert result.exit_code == 78 and result.stderr == b"why\n"
    assert decode_response(result.stdout).status == "error"


async def test_protocol_error_mode(echo: Plugin) -> None:
    result = await call(echo, "poll", {"mode": "protocol_error"})
    with pytest.raises(ProtocolError, match="^plugin output is not valid JSON"):
        decode_response(result.stdout)


async def test_hang_mode_times_out(echo: Plugin) -> None:
    result = await call(echo, "poll", {"mode": "hang"}, timeout=0.5)
    assert result.timed_out and result.signal == signal.SIGTERM and result.stdout == b""
