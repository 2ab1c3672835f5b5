"""Bundled echo plugin (protocol v2): the reference plugin for tests, demos and benchmarks.

Reads one request on stdin and writes one response on stdout. `config.mode` selects:
  ok (default)    status ok, one `echo.<command>` event, state_updates {last_command, count}
  error           status error with config.message (retry:false when config.retry is false)
  hang            never answers (timeout tests)
  protocol_error  writes output that is not JSON (decode-failure tests)
Other config: `exit_code` (exit status after answering), `sleep` (seconds before answering),
`stderr` (a line written to stderr). `health` always answers ok "healthy".

Stdlib only and only json/sys/os/time, so a spawn costs one interpreter start and little else.
"""

import json
import os
import sys
import time


def respond(obj, code=0):
    sys.stdout.write(json.dumps(obj))
    sys.stdout.flush()
    os._exit(code)


def ok_response(req, config, command):
    message = config.get("message")
    message = "hello" if message is None else str(message)
    if command == "handle":
        event = req.get("event") or {}
        echoed = event.get("payload", {})
    else:
        echoed = req.get("payload", {})
    state = req.get("state") or {}
    previous = state.get("count", 0)
    if not isinstance(previous, int) or isinstance(previous, bool):
        previous = 0
    payload = {"message": message, "payload": echoed, "command": command}
    secrets = req.get("secrets")
    if isinstance(secrets, dict) and secrets:
        # Names only, never values: lets an operator (and the tests) see what the vault
        # delivered to this principal.
        payload["secret_names"] = sorted(secrets)
    return {
        "status": "ok",
        "result": "echo: " + message,
        "events": [{"type": "echo." + command, "payload": payload}],
        "state_updates": {"last_command": command, "count": previous + 1},
    }


def main():
    try:
        req = json.loads(sys.stdin.buffer.read() or b"{}")
    except ValueError as exc:
        error = "echo: request is not JSON: " + str(exc)
        respond({"status": "error", "error": error, "retry": False})
    if not isinstance(req, dict):
        respond({"status": "error", "error": "echo: request is not an object", "retry": False})
    command = str(req.get("command") or "")
    config = req.get("config")
    if not isinstance(config, dict):
        config = {}
    code = config.get("exit_code", 0)
    code = code if isinstance(code, int) and not isinstance(code, bool) else 0
    if config.get("stderr"):
        sys.stderr.write(str(config["stderr"]) + "\n")
        sys.stderr.flush()
    if command == "health":
        respond({"status": "ok", "result": "healthy"}, code)
    mode = config.get("mode") or "ok"
    if mode == "hang":
        while True:
            time.sleep(3600)
    delay = config.get("sleep")
    if isinstance(delay, (int, float)) and not isinstance(delay, bool) and delay > 0:
        time.sleep(delay)
    if mode == "protocol_error":
        sys.stdout.write('{"status": "ok", "result": "echo: trunc')
        sys.stdout.write("\nthis is not JSON\n")
        sys.stdout.flush()
        os._exit(code)
    if mode == "error":
        message = config.get("message") or "echo: configured to fail"
        response = {"status": "error", "error": str(message)}
        if config.get("retry") is False:
            response["retry"] = False
        respond(response, code)
    respond(ok_response(req, config, command), code)


main()
