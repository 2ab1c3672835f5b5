"""`GET /job/{id}/logs/stream` and `ductile job logs --follow` against the real gateway.

The plugin here writes its stderr lines in steps and, between steps, waits for a file named
after its job id that only the test creates (`Gates.open`). So "the follower saw the line while
the job was still running" holds by construction, not by timing: the job cannot go on until the
test, having read the line, lets it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ductile.boot.runtime import Process
from ductile.boot.supervisor import Supervisor
from ductile.cli.follow import SseEvent, SseParser
from ductile.logs import Logger
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, run_cli, write_config
from support.plugins import make_plugin

# Steps: say "first", wait for gate go1, say "second", wait for go2, say "third", answer. The
# payload's `mode` changes the script: `fail` says one line and fails for good; `flaky` fails its
# first attempt (after gate `retry`) and succeeds on the next.
PLUGIN = """
import json, os, sys, time
request = json.load(sys.stdin)
job = request["job_id"]
mode = (request.get("payload") or {{}}).get("mode", "ok")

def say(line):
    print(line, file=sys.stderr, flush=True)

def wait(gate):
    while not os.path.exists(os.path.join({gates!r}, job + "." + gate)):
        time.sleep(0.02)

def answer(body):
    print(json.dumps(body))
    sys.exit(0)

if mode == "fail":
    say("about to fail")
    answer({{"status": "error", "error": "it broke", "retry": False}})
if mode == "flaky":
    if not os.path.exists(os.path.join({gates!r}, job + ".tried")):
        open(os.path.join({gates!r}, job + ".tried"), "w").close()
        say("try one")
        wait("retry")
        answer({{"status": "error", "error": "try again"}})
    say("try two")
    answer({{"status": "ok", "result": "second time lucky"}})
say("first")
wait("go1")
say("second")
wait("go2")
say("third")
answer({{"status": "ok", "result": "done"}})
"""


class Gates:
    """The files the plugin waits for; every gate of every job is opened at teardown, so a
    failed test never leaves a job holding a worker of the shared gateway."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.jobs: set[str] = set()

    def open(self, job_id: str, *gates: str) -> None:
        for gate in gates:
            (self.directory / f"{job_id}.{gate}").touch()

    def open_all(self) -> None:
        for job_id in self.jobs:
            self.open(job_id, "go1", "go2", "retry")


@pytest.fixture(scope="module")
def follow_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    base = tmp_path_factory.mktemp("follow")
    gates = base / "gates"
    gates.mkdir()
    root = base / "plugins"
    script = PLUGIN.format(gates=str(gates))
    make_plugin(root, "steps", script, shebang=f"#!{sys.executable}")
    # Not concurrency-safe: one job at a time, so a second one stays queued behind the first.
    make_plugin(root, "serial", script, shebang=f"#!{sys.executable}", concurrency_safe=False)
    port = free_port()
    cfg = write_config(base / "cfg", port=port, plugin_roots=[str(root)], plugins={
        "steps": {"enabled": True, "retry": {"max_attempts": 2, "backoff_base": "0s"}},
        "serial": {"enabled": True},
    }, service={"max_workers": 4})
    gw = Gateway(cfg, port=port).start()
    yield gw, gates
    assert gw.stop() == 0, gw.stderr()


@pytest.fixture
def gw(follow_gateway: tuple[Gateway, Path]) -> Gateway:
    return follow_gateway[0]


@pytest.fixture
def gates(follow_gateway: tuple[Gateway, Path]) -> Iterator[Gates]:
    opened = Gates(follow_gateway[1])
    yield opened
    opened.open_all()


def enqueue(gw: Gateway, gates: Gates, plugin: str = "steps", mode: str = "ok") -> str:
    resp = gw.post(f"/plugin/{plugin}/poll", {"payload": {"mode": mode}})
    assert resp.status_code == 202, resp.text
    job_id: str = resp.json()["job_id"]
    gates.jobs.add(job_id)
    return job_id


def status(gw: Gateway, job_id: str) -> str:
    return str(gw.get(f"/job/{job_id}").json()["status"])


class Stream:
    """One follower: the events of an open stream, read one at a time."""

    def __init__(self, resp: httpx.Response) -> None:
        self.resp = resp
        self._events = self._read()

    def _read(self) -> Iterator[SseEvent]:
        parser = SseParser()
        for chunk in self.resp.iter_text():
            yield from parser.feed(chunk)

    def next(self) -> tuple[str, Any]:
        event = next(self._events)
        return event.event, event.data if event.event == "line" else json.loads(event.data)

    def rest(self) -> list[tuple[str, Any]]:
        """Every event up to the end of the stream."""
        return [(e.event, e.data if e.event == "line" else json.loads(e.data))
                for e in self._events]


@contextmanager
def follow(gw: Gateway, job_id: str, token: str = TOKEN) -> Iterator[Stream]:
    # The read timeout only turns a bug (a stream that never speaks) into a failure.
    with httpx.stream("GET", f"{gw.url}/job/{job_id}/logs/stream", headers=gw.headers(token),
                      timeout=httpx.Timeout(30.0)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        yield Stream(resp)


def test_a_follower_sees_each_line_while_the_job_runs_then_its_outcome(
        gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates)
    with follow(gw, job_id, token=READ_TOKEN) as stream:  # jobs:ro is enough
        assert stream.next() == ("attempt", {"attempt": 1})
        assert stream.next() == ("line", "first")
        assert status(gw, job_id) == "running"
        gates.open(job_id, "go1")
        assert stream.next() == ("line", "second")
        assert status(gw, job_id) == "running"
        gates.open(job_id, "go2")
        assert stream.rest() == [
            ("line", "third"),
            ("end", {"job_id": job_id, "status": "succeeded", "attempt": 1}),
        ]


def test_a_late_follower_gets_the_earlier_lines_from_the_ring(gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates)
    with follow(gw, job_id) as early:
        assert [early.next(), early.next()] == [("attempt", {"attempt": 1}), ("line", "first")]
        gates.open(job_id, "go1")
        assert early.next() == ("line", "second")
        with follow(gw, job_id) as late:  # joins while the job waits for go2
            assert [late.next(), late.next(), late.next()] == [
                ("attempt", {"attempt": 1}), ("line", "first"), ("line", "second")]
            gates.open(job_id, "go2")
            end = ("end", {"job_id": job_id, "status": "succeeded", "attempt": 1})
            assert late.rest() == [("line", "third"), end]
        assert early.rest() == [("line", "third"), end]


def test_a_finished_job_gives_its_stored_stderr_and_outcome(gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates, mode="fail")
    with follow(gw, job_id) as stream:
        events = [stream.next(), stream.next()]
        events += stream.rest()
    assert events[:2] == [("attempt", {"attempt": 1}), ("line", "about to fail")]
    assert events[-1] == ("end", {"job_id": job_id, "status": "failed", "attempt": 1,
                                  "last_error": "it broke"})
    # Once it is over, every follower gets the ledger's copy: the same lines.
    with follow(gw, job_id) as stream:
        assert stream.rest() == events


def test_a_retried_job_continues_with_the_next_attempt(gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates, mode="flaky")
    with follow(gw, job_id) as stream:
        assert [stream.next(), stream.next()] == [("attempt", {"attempt": 1}),
                                                  ("line", "try one")]
        gates.open(job_id, "retry")
        assert stream.rest() == [
            ("attempt", {"attempt": 2}),
            ("line", "try two"),
            ("end", {"job_id": job_id, "status": "succeeded", "attempt": 2}),
        ]


def test_a_queued_job_is_followed_from_when_it_starts(gw: Gateway, gates: Gates) -> None:
    blocker = enqueue(gw, gates, plugin="serial")
    waiting = enqueue(gw, gates, plugin="serial")
    with follow(gw, blocker) as first:
        assert first.next() == ("attempt", {"attempt": 1})
        assert status(gw, waiting) == "queued"  # its lane holds one job, and that one waits
        with follow(gw, waiting) as stream:
            gates.open(waiting, "go1", "go2")
            gates.open(blocker, "go1", "go2")
            assert stream.rest() == [
                ("attempt", {"attempt": 1}),
                ("line", "first"), ("line", "second"), ("line", "third"),
                ("end", {"job_id": waiting, "status": "succeeded", "attempt": 1}),
            ]


def test_the_live_lines_survive_a_reload(gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates)
    with follow(gw, job_id) as stream:
        assert [stream.next(), stream.next()] == [("attempt", {"attempt": 1}), ("line", "first")]
        reloaded = len(reloads(gw))
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while len(reloads(gw)) == reloaded:
            assert time.monotonic() < deadline, gw.stdout()[-2000:]
            time.sleep(0.05)
        gates.open(job_id, "go1")
        assert stream.next() == ("line", "second")
        with follow(gw, job_id) as late:  # the new generation serves the same lines
            assert [late.next(), late.next(), late.next()] == [
                ("attempt", {"attempt": 1}), ("line", "first"), ("line", "second")]
        gates.open(job_id, "go2")
        assert stream.rest()[-1] == ("end", {"job_id": job_id, "status": "succeeded",
                                             "attempt": 1})


def reloads(gw: Gateway) -> list[dict[str, Any]]:
    return [r for r in gw.log_records() if r.get("msg") == "config reloaded successfully"]


def test_unknown_job_and_no_token(gw: Gateway) -> None:
    resp = gw.get("/job/no-such-job/logs/stream")
    assert resp.status_code == 404 and resp.json() == {"error": "job not found"}
    resp = httpx.get(f"{gw.url}/job/no-such-job/logs/stream", timeout=10.0)
    assert resp.status_code == 401
    cli = run_cli("job", "logs", "--follow", "no-such-job", "--config", str(gw.config_dir))
    assert cli.returncode == 1
    assert cli.stderr == "Error: job no-such-job not found\n"


def test_a_follower_that_goes_away_does_not_disturb_the_job(gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates)
    with follow(gw, job_id) as stream:
        assert [stream.next(), stream.next()] == [("attempt", {"attempt": 1}), ("line", "first")]
    # The connection is closed; the job runs on, and a new follower still works.
    gates.open(job_id, "go1", "go2")
    with follow(gw, job_id) as stream:
        events = stream.rest()
    assert events[-1] == ("end", {"job_id": job_id, "status": "succeeded", "attempt": 1})
    assert ("line", "third") in events
    assert gw.get("/healthz").status_code == 200


def cli_follow(gw: Gateway, job_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ductile", "job", "logs", "--follow", job_id, "--config",
         str(gw.config_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_cli_prints_lines_as_they_come_and_exits_0_on_success(
        gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates)
    proc = cli_follow(gw, job_id)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"  # printed while the job still runs
        assert status(gw, job_id) == "running"
        gates.open(job_id, "go1", "go2")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert out == "second\nthird\n"  # stdout holds the job's stderr and nothing else
    assert err == f"job {job_id} succeeded (attempt 1)\n"


def test_the_cli_exits_1_when_the_job_failed(gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates, mode="fail")
    cli = run_cli("job", "logs", "--follow", job_id, "--config", str(gw.config_dir))
    assert cli.returncode == 1
    assert cli.stdout == "about to fail\n"
    assert cli.stderr == f"job {job_id} failed (attempt 1): it broke\n"
    as_json = run_cli("job", "logs", "--follow", job_id, "--json", "--api-url", gw.url,
                      "--token", TOKEN)
    assert as_json.returncode == 1
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"event": "attempt", "attempt": 1},
        {"event": "line", "line": "about to fail"},
        {"event": "end", "job_id": job_id, "status": "failed", "attempt": 1,
         "last_error": "it broke"},
    ]


def test_ctrl_c_ends_the_cli_quietly_and_the_job_runs_on(gw: Gateway, gates: Gates) -> None:
    job_id = enqueue(gw, gates)
    proc = cli_follow(gw, job_id)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert out == "" and err == ""
    assert status(gw, job_id) == "running"
    gates.open(job_id, "go1", "go2")
    cli = run_cli("job", "logs", "--follow", job_id, "--config", str(gw.config_dir))
    assert cli.returncode == 0 and cli.stdout == "first\nsecond\nthird\n"


def test_a_follower_is_told_when_the_gateway_stops(tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    make_plugin(tmp_path / "plugins", "steps", PLUGIN.format(gates=str(gates)),
                shebang=f"#!{sys.executable}")
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(tmp_path / "plugins")],
                       plugins={"steps": {"enabled": True}}, service={"shutdown_grace": "1s"})
    gw = Gateway(cfg, port=port).start()
    try:
        job_id = gw.post("/plugin/steps/poll", {}).json()["job_id"]
        with follow(gw, job_id) as stream:
            assert [stream.next(), stream.next()] == [("attempt", {"attempt": 1}),
                                                      ("line", "first")]
            gw.signal(signal.SIGTERM)  # the job waits for a gate nobody opens
            assert stream.rest() == [("error", {"error": "the gateway is stopping; follow the "
                                                         "job again once it is back"})]
    finally:
        assert gw.stop() == 0, gw.stderr()


def test_follow_takes_no_search_filters(gw: Gateway) -> None:
    cli = run_cli("job", "logs", "--follow", "x", "--status", "failed", "--config",
                  str(gw.config_dir))
    assert cli.returncode == 2 and "--follow shows one job" in cli.stderr


# --- in-process: what the stream task does on the gateway's side --------------------------------


async def serving(tmp_path: Path, during: Callable[[Process, str, Path], Awaitable[None]]) -> str:
    """The real supervisor in this process (so the test can look at its state), with the API on
    loopback and the stepped plugin; `during(proc, url, gates_dir)` runs once it serves.
    Returns the gateway's log."""
    gates = tmp_path / "gates"
    gates.mkdir()
    root = tmp_path / "plugins"
    script = PLUGIN.format(gates=str(gates))
    make_plugin(root, "steps", script, shebang=f"#!{sys.executable}")
    make_plugin(root, "serial", script, shebang=f"#!{sys.executable}", concurrency_safe=False)
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(root)], plugins={
        "steps": {"enabled": True}, "serial": {"enabled": True}})
    stream = io.StringIO()
    proc = Process(explicit_config=str(cfg), environ=dict(os.environ), log=Logger(stream=stream))
    supervisor = Supervisor(proc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.run)
        with trio.fail_after(20):
            await supervisor.ready.wait()
        try:
            with trio.fail_after(60):
                await during(proc, f"http://127.0.0.1:{port}", gates)
        finally:
            supervisor.request_stop()
    return stream.getvalue()


async def enqueue_async(client: httpx.AsyncClient, url: str, plugin: str,
                        mode: str = "ok") -> str:
    resp = await client.post(f"{url}/plugin/{plugin}/poll", json={"payload": {"mode": mode}},
                             headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])


async def test_a_client_that_goes_away_ends_its_stream_task(tmp_path: Path) -> None:
    """The follower of a queued job waits on the gateway's side; when its client disconnects,
    that wait is cancelled and it unregisters (nothing is left behind per follower)."""

    async def during(proc: Process, url: str, gates: Path) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(timeout=30.0) as client:
            blocker = await enqueue_async(client, url, "serial")
            waiting = await enqueue_async(client, url, "serial")
            async with client.stream("GET", f"{url}/job/{blocker}/logs/stream",
                                     headers=headers) as running:
                lines = running.aiter_lines()
                while await lines.__anext__() != "data: first":
                    pass
                async with client.stream("GET", f"{url}/job/{waiting}/logs/stream",
                                         headers=headers) as queued:
                    assert queued.status_code == 200
                    while proc.live.watching(waiting) != 1:
                        await trio.sleep(0.01)
                # The client closed the connection: the server-side follower is gone.
                while proc.live.watching(waiting) != 0:
                    await trio.sleep(0.01)
                for job in (blocker, waiting):
                    for gate in ("go1", "go2"):
                        (gates / f"{job}.{gate}").touch()
                assert "event: end" in [line async for line in lines]
            done = await client.get(f"{url}/job/{waiting}", headers=headers)
            while done.json()["status"] != "succeeded":
                await trio.sleep(0.02)
                done = await client.get(f"{url}/job/{waiting}", headers=headers)

    await serving(tmp_path, during)


async def test_a_fault_while_streaming_ends_that_stream_with_an_error_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status line is sent before the body: a fault in the stream cannot be a 500, so it is
    an `error` event (the traceback goes to the log) and the gateway serves on."""
    from ductile.planes.api.routes import live

    def fault(*_args: Any) -> Any:
        raise RuntimeError("injected stream fault")

    async def during(_proc: Process, url: str, _gates: Path) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(timeout=30.0) as client:
            job_id = await enqueue_async(client, url, "steps", mode="fail")
            while (await client.get(f"{url}/job/{job_id}", headers=headers)).json()[
                    "status"] != "failed":
                await trio.sleep(0.02)
            monkeypatch.setattr(live, "_outcome", fault)
            resp = await client.get(f"{url}/job/{job_id}/logs/stream", headers=headers)
            parser = SseParser()
            events = parser.feed(resp.text)
            assert [e.event for e in events] == ["attempt", "line", "error"]
            assert json.loads(events[-1].data) == {
                "error": "internal error; see the gateway log"}
            monkeypatch.undo()
            resp = await client.get(f"{url}/job/{job_id}/logs/stream", headers=headers)
            assert [e.event for e in SseParser().feed(resp.text)][-1] == "end"

    log = await serving(tmp_path, during)
    failed = [json.loads(line) for line in log.splitlines() if '"stream failed"' in line]
    assert len(failed) == 1 and failed[0]["error"] == "RuntimeError: injected stream fault"
    assert "Traceback" in failed[0]["traceback"]
