"""What one request costs the gateway on its ingress paths: CPU ms per request and requests/s.

A real gateway (`ductile system start`) with a signed webhook endpoint (github scheme, its key
in the vault) and the API; `wrk -t2 -c4` drives each path for DURATION seconds after a one
second warm-up:

- `webhook`: signed delivery -> HMAC check -> durable enqueue -> 202
- `api`: `POST /plugin/echo/poll` with a bearer token -> durable enqueue -> 202
- `healthz`: `GET /healthz`, no token (measured first, on an empty queue)

The gateway's own CPU is read from /proc/<pid>/stat (utime + stime) before and after each run
and divided by the requests wrk counted: unlike requests/s, it barely moves with other load
on the machine. The jobs' plugin sleeps and one worker runs it, so the dispatcher stays idle
and the figure is the ingress path alone. The goal is the bare stack measured on the same
2-core machine (quart-trio + hypercorn, an HMAC check and one SQLite insert per request:
1.1 ms CPU per request); skipped without `wrk` on PATH.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.bench import report
from support.gateway import TOKEN, Gateway, free_port, make_vault, write_config

DURATION = int(os.environ.get("DUCTILE_BENCH_INGRESS_SECONDS", "6"))
SECRET = "bench-ingress-secret"
BODY = '{"action":"opened","number":1,"repository":{"full_name":"o/r"}}'
TICKS = os.sysconf("SC_CLK_TCK")
FLOOR_MS = 1.1

# Method, body, one extra header and the Authorization header, from the environment.
WRK_SCRIPT = """
wrk.method = os.getenv("WRK_METHOD")
local body = os.getenv("WRK_BODY")
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local header = os.getenv("WRK_HEADER")
if header ~= "" then wrk.headers[header] = os.getenv("WRK_VALUE") end
done = function(summary, latency, requests)
  io.write(string.format('{"requests":%d,"seconds":%.3f,"non2xx":%d}\\n', summary.requests,
    summary.duration / 1e6, summary.errors.status))
end
"""

MANIFEST = """manifest_spec: ductile.plugin
manifest_version: 1
name: echo
version: 1.0.0
protocol: 2
entrypoint: run
description: a plugin that holds its one worker, so the dispatcher stays idle
concurrency_safe: true
commands:
  - name: poll
    type: read
    description: sleep
  - name: handle
    type: write
    description: sleep
"""


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _wrk(script: Path, url: str, seconds: int, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        ["wrk", "-t2", "-c4", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
        timeout=seconds + 30)
    line = [text for text in done.stdout.splitlines() if text.startswith("{")][-1]
    result: dict[str, float] = json.loads(line)
    return result


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not on PATH")
def test_ingress_cpu_per_request(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins" / "echo"
    plugins.mkdir(parents=True)
    (plugins / "manifest.yaml").write_text(MANIFEST)
    (plugins / "run").write_text("#!/bin/sh\ncat >/dev/null\nsleep 600\n")
    (plugins / "run").chmod(0o755)
    port, hook_port = free_port(), free_port()
    cfg = tmp_path / "cfg"
    make_vault(cfg, {"api-token": TOKEN, "read-token": "r" * 32, "hook": SECRET})
    write_config(cfg, port=port, plugin_roots=[str(tmp_path / "plugins")],
                 plugins={"echo": {"enabled": True, "parallelism": 1}},
                 service={"max_workers": 1, "tick_interval": "60s",
                          "max_outstanding_jobs": 1_000_000},
                 extra={"webhooks": {"listen": f"127.0.0.1:{hook_port}", "endpoints": [
                     {"path": "/hooks/github", "plugin": "echo", "secret_ref": "hook",
                      "signature_header": "X-Hub-Signature-256"}]}})
    script = tmp_path / "ingress.lua"
    script.write_text(WRK_SCRIPT)
    signature = "sha256=" + hmac.new(SECRET.encode(), BODY.encode(), hashlib.sha256).hexdigest()
    paths = {
        "healthz": (f"http://127.0.0.1:{port}/healthz", {
            "WRK_METHOD": "GET", "WRK_BODY": "", "WRK_HEADER": ""}),
        "webhook": (f"http://127.0.0.1:{hook_port}/hooks/github", {
            "WRK_METHOD": "POST", "WRK_BODY": BODY, "WRK_HEADER": "X-Hub-Signature-256",
            "WRK_VALUE": signature}),
        "api": (f"http://127.0.0.1:{port}/plugin/echo/poll", {
            "WRK_METHOD": "POST", "WRK_BODY": '{"payload": {"n": 1}}',
            "WRK_HEADER": "Authorization", "WRK_VALUE": f"Bearer {TOKEN}"}),
    }
    gateway = Gateway(cfg, port=port).start()
    assert gateway.proc is not None
    try:
        for name, (url, env) in paths.items():
            _wrk(script, url, 1, env)  # warm-up
            before = _cpu_ticks(gateway.proc.pid)
            result = _wrk(script, url, DURATION, env)
            used_ms = (_cpu_ticks(gateway.proc.pid) - before) / TICKS * 1000
            assert result["non2xx"] == 0, f"{name}: {result}"
            requests = result["requests"]
            report(f"ingress {name}: gateway CPU per request", used_ms / requests, "ms",
                   f"<= {FLOOR_MS} (the bare stack)",
                   f"{requests / result['seconds']:.0f} requests/s at c4")
    finally:
        assert gateway.stop() == 0
