"""The bundled sys_exec plugin end to end: discover it, build a real protocol v2 request, spawn
the real plugin process (which runs a real command), decode its response."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.plugins import bundled_root

from ductile.plugin.discovery import Plugin, discover
from ductile.plugin.protocol import Response, build_request, decode_response
from ductile.plugin.spawn import SpawnResult, child_env, spawn_plugin


@pytest.fixture(scope="module")
def sys_exec() -> Plugin:
    return discover([str(bundled_root())], allow_symlinks=False).plugins["sys_exec"]


async def call(
    plugin: Plugin,
    command: str,
    config: Any,
    *,
    payload: dict[str, Any] | None = None,
    event: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> SpawnResult:
    request = build_request(
        job_id="job-1", command=command, config=config, state={}, payload=payload,
        context=context or {"ductile_plugin": plugin.name}, event=event,
        deadline_at=datetime.now(UTC) + timedelta(seconds=timeout),
    )
    return await spawn_plugin(plugin.entrypoint, request, timeout=timeout, env=child_env(),
                              grace=0.3)


async def respond(plugin: Plugin, command: str, config: Any, **kw: Any) -> Response:
    """The decoded response; the plugin must exit 0 and say nothing on stderr (no traceback)."""
    result = await call(plugin, command, config, **kw)
    assert (result.exit_code, result.stderr) == (0, b""), result
    return decode_response(result.stdout)


async def handle(plugin: Plugin, config: dict[str, Any], payload: dict[str, Any],
                 **kw: Any) -> Response:
    event = {"type": "src.done", "payload": payload}
    return await respond(plugin, "handle", config, payload=event, event=event, **kw)


def env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_gone(pid: int) -> bool:
    """SIGKILL is delivered asynchronously; allow the kernel a moment to finish the process."""
    limit = time.monotonic() + 5
    while not gone(pid) and time.monotonic() < limit:
        time.sleep(0.01)
    return gone(pid)


# --- manifest ------------------------------------------------------------------------------------


def test_manifest_matches_the_original_commands_and_keys(sys_exec: Plugin) -> None:
    manifest = sys_exec.manifest
    assert [(c.name, c.type) for c in manifest.commands] == [
        ("poll", "write"), ("handle", "write"), ("health", "read"),
    ]
    assert manifest.config_keys["required"] == ("command",)
    assert set(manifest.config_keys["optional"]) == {
        "event_type", "timeout_seconds", "working_dir", "env", "retry_on_exit_codes",
        "success_exit_codes", "emit_event", "emit_event_on_exit_codes",
        "include_output_in_event", "stdout_max_bytes", "stderr_max_bytes",
    }
    assert stat.S_IMODE(os.stat(sys_exec.entrypoint).st_mode) == 0o755


# --- environment contract ------------------------------------------------------------------------


async def test_payload_keys_become_sanitised_env_vars(sys_exec: Plugin) -> None:
    payload = {
        "name": "ada", "a-b  c": 1, "nested": {"k": [1, 2]}, "flag": True, "none": None,
        "9lives": "cat", "Name": "clash", "ratio": 1.5, "--": "empty",
    }
    r = await handle(sys_exec, {"command": ["env"]}, payload)
    assert r.ok and r.result.startswith("command exited with code 0 in ")
    env = env_lines(r.events[0].payload["stdout"])
    assert {k: v for k, v in env.items() if k.startswith("DUCTILE_")} == {
        "DUCTILE_PAYLOAD_NAME": "ada",
        "DUCTILE_PAYLOAD_A_B_C": "1",
        "DUCTILE_PAYLOAD_NESTED": '{"k":[1,2]}',
        "DUCTILE_PAYLOAD_FLAG": "true",
        "DUCTILE_PAYLOAD_NONE": "",
        "DUCTILE_PAYLOAD__9LIVES": "cat",
        "DUCTILE_PAYLOAD_NAME_2": "clash",
        "DUCTILE_PAYLOAD_RATIO": "1.5",
        "DUCTILE_PAYLOAD_VALUE": "empty",
        "DUCTILE_JOB_ID": "job-1",
        "DUCTILE_COMMAND": "handle",
        "DUCTILE_EVENT_TYPE": "src.done",
    }


async def test_payload_is_never_run_by_a_shell_nor_put_in_argv(
    sys_exec: Plugin, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hostile = {"x": f"; touch {marker}", "y": f"$(touch {marker})", "z": f"`touch {marker}`"}
    quoted = 'printf "%s|%s|%s" "$DUCTILE_PAYLOAD_X" "$DUCTILE_PAYLOAD_Y" "$DUCTILE_PAYLOAD_Z"'
    r = await handle(sys_exec, {"command": ["sh", "-c", quoted]}, hostile)
    assert r.events[0].payload["stdout"] == "|".join(hostile.values())
    # A string command is split, not run by a shell, and payload variables are not expanded
    # into the argument list: echo receives the reference itself.
    r = await handle(sys_exec, {"command": "echo $DUCTILE_PAYLOAD_X ${DUCTILE_PAYLOAD_Y}"}, hostile)
    assert r.events[0].payload["stdout"] == "$DUCTILE_PAYLOAD_X ${DUCTILE_PAYLOAD_Y}\n"
    assert not marker.exists()


async def test_config_env_is_set_and_expanded_in_arguments(sys_exec: Plugin) -> None:
    config = {"command": "echo ${GREETING} $GREETING-$DUCTILE_COMMAND $NOT_SET",
              "env": {"GREETING": "hi", "COUNT": 3}}
    r = await handle(sys_exec, config, {})
    assert r.events[0].payload["stdout"] == "hi hi-handle $NOT_SET\n"
    assert r.events[0].payload["command"] == "echo hi hi-handle $NOT_SET"
    r = await handle(sys_exec, {"command": ["sh", "-c", 'echo "$COUNT"'], "env": {"COUNT": 3}}, {})
    assert r.events[0].payload["stdout"] == "3\n"


async def test_poll_feeds_the_request_payload(sys_exec: Plugin) -> None:
    r = await respond(sys_exec, "poll", {"command": ["sh", "-c", 'echo "$DUCTILE_PAYLOAD_WHO"']},
                      payload={"who": "scheduler"})
    assert r.events[0].payload["stdout"] == "scheduler\n"


async def test_upstream_pipeline_and_plugin_are_logged(sys_exec: Plugin) -> None:
    context = {"ductile_plugin": "sys_exec", "ductile_upstream_pipeline": "nightly",
               "ductile_upstream_plugin": "file_watch"}
    r = await handle(sys_exec, {"command": ["true"]}, {}, context=context)
    assert r.logs[0]["message"].endswith("(upstream nightly:file_watch)")


# --- completion event and working directory ------------------------------------------------------


async def test_completed_event_carries_the_reference_fields(
    sys_exec: Plugin, tmp_path: Path
) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\npwd\necho oops >&2\n")
    script.chmod(0o755)
    r = await handle(sys_exec, {"command": ["./tool.sh"], "working_dir": str(tmp_path)}, {})
    assert [e.type for e in r.events] == ["sys_exec.completed"]
    payload = r.events[0].payload
    assert set(payload) == {
        "command", "exit_code", "duration_ms", "stdout_truncated", "stderr_truncated",
        "working_dir", "executed_at", "stdout", "stderr",
    }
    real = os.path.realpath(tmp_path)
    assert (payload["command"], payload["exit_code"], payload["working_dir"]) == (
        "./tool.sh", 0, real,
    )
    assert (payload["stdout"], payload["stderr"]) == (real + "\n", "oops\n")
    assert payload["stdout_truncated"] is False and payload["stderr_truncated"] is False
    datetime.fromisoformat(payload["executed_at"])


async def test_event_options(sys_exec: Plugin) -> None:
    fail = ["sh", "-c", "echo out; exit 1"]
    r = await handle(sys_exec, {"command": fail, "success_exit_codes": [0, 1],
                                "event_type": "backup.done", "include_output_in_event": "no"}, {})
    assert r.ok and r.events[0].type == "backup.done"
    assert "stdout" not in r.events[0].payload and r.events[0].payload["exit_code"] == 1
    r = await handle(sys_exec, {"command": fail, "emit_event_on_exit_codes": [0]}, {})
    assert r.status == "error" and r.events == ()
    r = await handle(sys_exec, {"command": ["true"], "emit_event": False}, {})
    assert r.ok and r.events == ()


async def test_output_is_capped_and_flagged(sys_exec: Plugin) -> None:
    # A megabyte on each stream must neither block the command nor reach the response.
    big = ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' a; head -c 1000000 /dev/zero >&2"]
    r = await handle(sys_exec, {"command": big, "stdout_max_bytes": 100}, {})
    payload = r.events[0].payload
    assert payload["stdout"] == "a" * 100 and payload["stdout_truncated"] is True
    assert len(payload["stderr"]) == 16384 and payload["stderr_truncated"] is True
    assert {"level": "warn", "message": "stdout truncated"} in r.logs


# --- exit-code mapping ---------------------------------------------------------------------------


async def test_non_zero_exit_is_a_permanent_error_by_default(sys_exec: Plugin) -> None:
    r = await handle(sys_exec, {"command": ["sh", "-c", "echo disk full >&2; exit 3"]}, {})
    assert (r.status, r.error, r.retry) == ("error", "disk full", False)
    assert r.events[0].payload["exit_code"] == 3
    r = await handle(sys_exec, {"command": ["false"]}, {})
    assert (r.error, r.retry) == ("command failed with exit code 1", False)


async def test_listed_exit_codes_are_retried(sys_exec: Plugin) -> None:
    config = {"command": ["sh", "-c", "exit 75"], "retry_on_exit_codes": [75, "76"]}
    r = await handle(sys_exec, config, {})
    assert (r.status, r.retry) == ("error", True)


async def test_exit_78_is_permanent_even_when_listed_for_retry(sys_exec: Plugin) -> None:
    config = {"command": ["sh", "-c", "exit 78"], "retry_on_exit_codes": [78]}
    result = await call(sys_exec, "handle", config, payload={"type": "t", "payload": {}},
                        event={"type": "t", "payload": {}})
    assert result.exit_code == 0
    r = decode_response(result.stdout)
    assert (r.status, r.error, r.retry) == ("error", "command failed with exit code 78", False)


# --- timeouts and leftovers ----------------------------------------------------------------------


async def test_timeout_kills_the_command_and_its_children(
    sys_exec: Plugin, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    command = ["sh", "-c", f'sleep 30 & echo $! > {pidfile}; echo started >&2; wait']
    r = await handle(sys_exec, {"command": command, "timeout_seconds": 0.3}, {})
    assert (r.status, r.error, r.retry) == ("error", "command timed out after 0.300s", False)
    payload = r.events[0].payload
    assert (payload["exit_code"], payload["timed_out"], payload["stderr"]) == (-1, True,
                                                                               "started\n")
    assert wait_gone(int(pidfile.read_text()))


async def test_background_leftovers_are_killed_when_the_command_exits(
    sys_exec: Plugin,
) -> None:
    # The background sleep keeps stdout open; sys_exec must not wait for it.
    r = await handle(sys_exec, {"command": ["sh", "-c", "sleep 30 & echo $!"]}, {})
    assert r.ok
    assert wait_gone(int(r.events[0].payload["stdout"]))


async def test_gateway_timeout_takes_the_command_down_too(
    sys_exec: Plugin, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    command = ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"]
    event = {"type": "t", "payload": {}}
    result = await call(sys_exec, "handle", {"command": command}, payload=event, event=event,
                        timeout=0.5)
    assert result.timed_out
    assert wait_gone(int(pidfile.read_text()))


# --- bad config and bad requests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "sys_exec: config.command is required (a list of arguments or a string)"),
        ({"command": []}, "sys_exec: config.command is required (a list of arguments or a string)"),
        ({"command": {"run": "x"}}, "sys_exec: config.command must be a list of arguments or a "
                                    "string"),
        ({"command": "echo 'open"}, "sys_exec: config.command cannot be split into arguments: "
                                    "No closing quotation"),
        ({"command": ["echo", None]}, "sys_exec: config.command[1] must be a string or a number"),
        ({"command": ["true"], "timeout_seconds": "soon"},
         "sys_exec: config.timeout_seconds must be a number, got 'soon'"),
        ({"command": ["true"], "timeout_seconds": 0}, "sys_exec: config.timeout_seconds must be "
                                                      "at least 0.001"),
        ({"command": ["true"], "stdout_max_bytes": 10}, "sys_exec: config.stdout_max_bytes must "
                                                        "be at least 64"),
        ({"command": ["true"], "retry_on_exit_codes": "3"},
         "sys_exec: config.retry_on_exit_codes must be a list of exit codes"),
        ({"command": ["true"], "success_exit_codes": ["x"]},
         "sys_exec: config.success_exit_codes must hold whole numbers, got 'x'"),
        ({"command": ["true"], "env": ["A=1"]}, "sys_exec: config.env must be a mapping of "
                                                "NAME: value"),
        ({"command": ["true"], "env": {"A=B": "1"}}, "sys_exec: config.env has an invalid "
                                                     "variable name 'A=B'"),
        ({"command": ["true"], "emit_event": "maybe"}, "sys_exec: config.emit_event must be "
                                                       "true or false"),
        ({"command": ["true"], "event_type": 5}, "sys_exec: config.event_type must be a string"),
        ({"command": ["no-such-tool-here"]}, "sys_exec: executable not found: no-such-tool-here "
         "(config.command); use an absolute path or add its directory to PATH"),
    ],
)
async def test_bad_config_is_a_clear_permanent_error(
    sys_exec: Plugin, config: dict[str, Any], message: str
) -> None:
    r = await handle(sys_exec, config, {})
    assert (r.status, r.error, r.retry, r.events) == ("error", message, False, ())


async def test_missing_working_dir_is_reported(sys_exec: Plugin, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    r = await handle(sys_exec, {"command": ["true"], "working_dir": str(missing)}, {})
    assert (r.error, r.retry) == (f"sys_exec: config.working_dir is not a directory: {missing}",
                                  False)


async def test_nul_byte_in_payload_is_refused_by_name(sys_exec: Plugin) -> None:
    r = await handle(sys_exec, {"command": ["true"]}, {"bad": "a\u0000b"})
    assert r.error == ("sys_exec: payload key 'bad' holds a NUL byte and cannot be passed in the "
                       "environment")


async def test_file_without_interpreter_line_cannot_start(
    sys_exec: Plugin, tmp_path: Path
) -> None:
    script = tmp_path / "noshebang"
    script.write_bytes(b"\x7fELF-not-really")
    script.chmod(0o755)
    r = await handle(sys_exec, {"command": [str(script)]}, {})
    assert r.error == f"sys_exec: cannot start {script}: Exec format error" and r.retry is False


async def test_unsupported_command_and_unreadable_request(sys_exec: Plugin) -> None:
    r = await respond(sys_exec, "init", {"command": ["true"]})
    assert r.error == "sys_exec: unsupported command 'init' (supported: poll, handle, health)"
    result = await spawn_plugin(sys_exec.entrypoint, b"not json", timeout=10, env=child_env())
    r = decode_response(result.stdout)
    assert r.status == "error" and r.error.startswith("sys_exec: request is not JSON: ")


async def test_health(sys_exec: Plugin, tmp_path: Path) -> None:
    r = await respond(sys_exec, "health", {"command": "true", "working_dir": str(tmp_path)})
    assert (r.status, r.result) == ("ok", "sys_exec health check passed")
    r = await respond(sys_exec, "health", {})
    assert r.error == "sys_exec: config.command is required (a list of arguments or a string)"
    r = await respond(sys_exec, "health", {"command": ["no-such-tool-here"]})
    assert r.error.startswith("sys_exec: executable not found: no-such-tool-here")


# --- any config: an answer, never a traceback ----------------------------------------------------

CONFIG_KEYS = ["event_type", "timeout_seconds", "working_dir", "env", "retry_on_exit_codes",
               "success_exit_codes", "emit_event", "emit_event_on_exit_codes",
               "include_output_in_event", "stdout_max_bytes", "stderr_max_bytes"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(options=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=5),
       payload=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
async def test_any_config_and_payload_give_a_protocol_answer(
    sys_exec: Plugin, options: dict[str, Any], payload: dict[str, Any]
) -> None:
    # The command is fixed to `true`: random text must never choose what runs.
    config = {**options, "command": ["true"]}
    r = await handle(sys_exec, config, payload)
    assert r.status in ("ok", "error")
    if r.status == "error":
        assert r.error.startswith(("sys_exec: ", "command failed with exit code 0"))
    json.dumps(r.events[0].to_json() if r.events else {})
