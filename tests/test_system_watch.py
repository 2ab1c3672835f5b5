"""`ductile system watch` against a real gateway (real plugins, scheduler, breakers, SQLite),
its event-stream reader against a small SSE server, its view state, and `ductile version`."""

from __future__ import annotations

import http.server
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ductile.cli.watch import StreamNote, StreamReader, Target
from ductile.cli.watch_state import ViewState, apply, apply_snapshot, render_text, to_json
from support.gateway import TOKEN, Gateway, free_port, run_cli, write_config
from support.plugins import bundled_root, make_plugin, respond_script


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def busy_gateway(tmp_path: Path) -> Iterator[tuple[Gateway, Path, Path]]:
    """A gateway with a plugin that blocks until `release` exists (one job at a time), an
    hourly echo schedule, and a scheduled plugin that always fails behind a breaker that opens
    at the first failure."""
    root, release = tmp_path / "plugins", tmp_path / "release"
    make_plugin(root, "block", f'cat >/dev/null\nwhile [ ! -e "{release}" ]; do sleep 0.05; done\n'
                               'echo \'{"status":"ok","result":"released"}\'',
                concurrency_safe=False)
    make_plugin(root, "broken", respond_script({"status": "error", "error": "always down"}))
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(bundled_root()), str(root)],
                       service={"tick_interval": "1s"}, plugins={
        "echo": {"enabled": True, "schedules": [{"id": "hourly", "every": "1h"}]},
        "block": {"enabled": True, "timeouts": {"poll": "5m"}},
        "broken": {"enabled": True, "retry": {"max_attempts": 1},
                   "circuit_breaker": {"threshold": 1, "reset_after": "1h"},
                   "schedules": [{"id": "often", "every": "1s"}]},
    })
    gw = Gateway(cfg, port).start()
    try:
        yield gw, cfg, release
    finally:
        release.touch()
        gw.stop()


def breaker_open(gw: Gateway) -> bool:
    rows = gw.get("/scheduler/jobs").json()["jobs"]
    return any(r["plugin"] == "broken" and r["breaker"]["state"] == "open" for r in rows)


def start_blocked_jobs(gw: Gateway) -> tuple[str, str]:
    """Two jobs of the one-at-a-time plugin: the first runs (and blocks), the second queues."""
    first = gw.post("/plugins/block/run", {"payload": {}}).json()["job_id"]
    wait_for(lambda: gw.get(f"/job/{first}").json()["status"] == "running",
             what="the blocking job to start")
    second = gw.post("/plugins/block/run", {"payload": {}}).json()["job_id"]
    return first, second


def test_once_shows_running_queued_outcomes_schedules_and_breakers(
        busy_gateway: tuple[Gateway, Path, Path]) -> None:
    gw, cfg, _ = busy_gateway
    assert gw.post("/plugins/echo/run", {"payload": {}, "sync": True}).status_code == 200
    wait_for(lambda: breaker_open(gw), what="the broken plugin's breaker to open")
    running, queued = start_blocked_jobs(gw)

    out = run_cli("system", "watch", "--once", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Queued: 1" in text, text
    assert f"{running}  block/handle  running for " in text, text
    assert queued not in text.split("Recent outcomes:")[0].split("Running jobs:")[1]
    hourly = next(line for line in text.splitlines() if "echo/hourly" in line)
    assert "(in " in hourly and "59m" in hourly, hourly  # fires in about an hour
    breakers = text.split("Open breakers:")[1]
    assert "broken/poll  open  failures=1" in breakers, text
    outcomes = text.split("Recent outcomes:")[1].split("Next schedules:")[0]
    assert "succeeded  echo/handle" in outcomes and "failed     broken/poll" in outcomes, text

    as_json = run_cli("system", "watch", "--once", "--json", "--api-url", gw.url,
                      "--token", TOKEN)
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["queued"] == 1
    assert [(j["job_id"], j["plugin"]) for j in body["running"]] == [(running, "block")]
    assert body["running"][0]["age_seconds"] >= 0
    assert {"plugin": "broken", "command": "poll", "state": "open",
            "failure_count": 1} in body["open_breakers"]
    hourly_row = next(s for s in body["schedules"] if s["schedule_id"] == "hourly")
    assert hourly_row["next_run_at"].endswith("Z") and hourly_row["paused"] is False
    assert {"succeeded", "failed"} <= {o["status"] for o in body["outcomes"]}


def test_once_errors_name_what_to_fix(tmp_path: Path) -> None:
    port = free_port()
    out = run_cli("system", "watch", "--once", "--api-url", f"http://127.0.0.1:{port}",
                  "--token", "x")
    assert out.returncode == 1 and "cannot reach the gateway" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    usage = run_cli("system", "watch", "--json", "--api-url", "http://127.0.0.1:1", "--token", "x")
    assert usage.returncode == 2 and "use it with --once" in usage.stderr


def test_once_refused_token_says_which_scope(busy_gateway: tuple[Gateway, Path, Path]) -> None:
    gw, _, _ = busy_gateway
    out = run_cli("system", "watch", "--once", "--api-url", gw.url, "--token", "wrong-token")
    assert out.returncode == 1, out.stdout
    assert "refused the token" in out.stderr and "jobs:ro" in out.stderr, out.stderr


class Lines:
    """A child's stdout read line by line in a thread, so the test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream],
                         daemon=True).start()

    def until(self, check: Callable[[str], bool], timeout: float = 40.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if check(line):
                return line
        raise AssertionError("no such line; output so far:\n" + "".join(self.seen))


def test_live_mode_follows_jobs_survives_the_gateway_going_and_exits_0_on_sigint(
        busy_gateway: tuple[Gateway, Path, Path]) -> None:
    gw, cfg, release = busy_gateway
    proc = subprocess.Popen([sys.executable, "-m", "ductile", "system", "watch", "--config",
                             str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = Lines(proc)
        lines.until(lambda line: line.startswith("Queued: "))
        running, _ = start_blocked_jobs(gw)
        lines.until(lambda line: f"{running}  block/handle  running for" in line)
        release.touch()
        lines.until(lambda line: "succeeded  block/handle" in line and running in line)
        gw.stop()  # the gateway goes away: the watch says so and keeps trying
        lines.until(lambda line: "disconnected, retrying" in line)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # waits and closes both pipes


def test_live_screen_on_a_terminal_draws_tables_and_exits_0_on_ctrl_c(
        busy_gateway: tuple[Gateway, Path, Path]) -> None:
    import pty

    gw, cfg, _ = busy_gateway
    parent, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ductile", "system", "watch", "--config",
                             str(cfg)], stdin=child, stdout=child, stderr=child,
                            env={**os.environ, "COLUMNS": "120", "LINES": "50",
                                 "TERM": "xterm"})
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + 40
        while b"Open breakers" not in seen and time.monotonic() < deadline:
            if not select.select([parent], [], [], 0.2)[0]:
                continue
            try:
                seen += os.read(parent, 65536)
            except OSError:
                break
        assert b"Open breakers" in seen and b"Running" in seen, seen.decode(errors="replace")
        proc.send_signal(signal.SIGINT)
        # Keep reading while it stops: its last frame must not block on a full terminal.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if select.select([parent], [], [], 0.2)[0]:
                try:
                    chunk = os.read(parent, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(parent)
    assert b"Traceback" not in seen and b"Aborted" not in seen


# -- the event stream reader, against a small SSE server --------------------------------------


class _SseHandler(http.server.BaseHTTPRequestHandler):
    """First connection: two events, then the stream ends. Later ones: one more event, then
    the connection stays open until the test is done."""

    server: _SseServer

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.server.requests.append((self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if len(self.server.requests) == 1:
            for n, job in ((1, "a"), (2, "b")):
                data = json.dumps({"at": "2026-01-01T00:00:00Z", "job_id": job,
                                   "plugin": "p", "command": "poll"})
                self.wfile.write(f"id: {n}\nevent: job.started\ndata: {data}\n\n".encode())
            self.wfile.write(b": keep-alive\n\n")
            return
        data = json.dumps({"job_id": "a", "plugin": "p", "status": "succeeded"})
        self.wfile.write(f"id: 3\nevent: job.completed\ndata: {data}\n\n".encode())
        self.wfile.flush()
        self.server.done.wait(10)

    def log_message(self, *args: Any) -> None:
        pass


class _SseServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SseHandler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.done = threading.Event()


def test_stream_reader_reconnects_with_last_event_id() -> None:
    server = _SseServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notes: queue.Queue[StreamNote] = queue.Queue()
    reader = StreamReader(Target(f"http://127.0.0.1:{server.server_address[1]}", "tok", True),
                          notes)
    reader.start()
    got: list[StreamNote] = []
    try:
        while not any(n.event and n.event["id"] == "3" for n in got):
            got.append(notes.get(timeout=20))
    finally:
        reader.stop.set()
        server.done.set()
        server.shutdown()
        server.server_close()
    links = [n.link for n in got if n.event is None]
    assert links == ["live", "disconnected", "live"]
    assert [n.event["id"] for n in got if n.event] == ["1", "2", "3"]
    first, second = server.requests
    assert first[0] == "/events" and first[1]["Authorization"] == "Bearer tok"
    assert "Last-Event-ID" not in first[1] and second[1]["Last-Event-ID"] == "2"
    state = ViewState()
    for note in got:
        if note.event:
            state = apply(state, note.event)
    assert set(state.running) == {"b"} and state.outcomes[0].job_id == "a"
    assert state.last_event_id == "3"


# -- the view state ---------------------------------------------------------------------------


def test_snapshot_then_events() -> None:
    now = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    state = apply_snapshot(ViewState(), {
        "healthz": {"status": "ok", "version": "0.1.0", "queue_depth": 3},
        "queued": {"jobs": [{"job_id": "q1"}, {"job_id": "q2"}], "total": 5},
        "running": {"jobs": [{"job_id": "r1", "plugin": "p", "command": "poll",
                              "started_at": "2026-01-01T00:07:55Z"}]},
        "recent": {"jobs": [{"job_id": "d1", "plugin": "p", "command": "poll",
                             "status": "dead", "completed_at": "2026-01-01T00:01:00Z"},
                            {"job_id": "r1", "status": "running"}]},
        "schedules": {"jobs": [{"plugin": "p", "schedule_id": "s", "command": "poll",
                                "next_run_at": "2026-01-01T01:00:00Z", "paused": False,
                                "breaker": {"state": "half_open", "failure_count": 2}}]},
    }, now=now)
    assert state.queued == 5
    text = render_text(state, now)
    assert "r1  p/poll  running for 2m05s" in text
    assert "p/s (poll)  2026-01-01T01:00:00Z (in 50m00s)" in text
    assert "p/poll  half_open  failures=2" in text
    state = apply(state, {"type": "job.started", "id": "9",
                          "data": {"job_id": "q1", "plugin": "p", "command": "handle",
                                   "at": "2026-01-01T00:09:00Z"}})
    state = apply(state, {"type": "job.timed_out", "id": "10",
                          "data": {"job_id": "r1", "plugin": "p", "at": "2026-01-01T00:09:30Z"}})
    state = apply(state, {"type": "scheduler.circuit_state_changed", "id": "11",
                          "data": {"plugin": "p", "command": "poll", "state": "closed",
                                   "previous_state": "half_open", "failure_count": 0}})
    assert state.queued == 4 and set(state.running) == {"q1"}
    body = to_json(state, now)
    assert body["outcomes"][0] == {"job_id": "r1", "plugin": "p", "command": "poll",
                                   "status": "timed_out", "at": "2026-01-01T00:09:30Z",
                                   "error": None}
    assert body["open_breakers"] == [] and body["running"][0]["age_seconds"] == 60


def test_version_text_and_json() -> None:
    from ductile import __version__
    from ductile.plugin.protocol import PROTOCOL_VERSION
    from ductile.store.migrations import SCHEMA_VERSION

    out = run_cli("version", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["version"] == __version__ and info["schema_version"] == SCHEMA_VERSION
    assert info["protocol_version"] == PROTOCOL_VERSION
    assert info["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert Path(info["install_path"], "__init__.py").is_file()
    text = run_cli("version").stdout
    assert text.startswith(f"ductile {__version__}\n")
    assert f"state schema version {SCHEMA_VERSION}" in text


def test_version_imports_no_http_or_screen_stack() -> None:
    code = ("import sys; from ductile.cli.main import cli\n"
            "try:\n    cli(['version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('httpx', 'rich', 'quart', 'hypercorn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
