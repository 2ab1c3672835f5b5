"""`ductile system watch`: a live view of the running gateway, and `--once` for scripts.

The I/O shell around cli/watch_state.py (which holds every decision about what is shown):

* the JSON API gives the state: `/healthz`, `GET /jobs` (queued, running, latest) and
  `GET /scheduler/jobs` (schedules and their breakers), at start, every RESYNC_SECONDS and at
  once after the event stream reconnects;
* `GET /events` (Server-Sent Events) keeps it current between two snapshots. A reader thread
  holds the stream and hands parsed events to the main loop through a queue; when the stream
  drops it reconnects with `Last-Event-ID`, so the gateway replays what was missed, and the
  screen says "disconnected, retrying" meanwhile. A gateway without the route is watched by
  polling alone: the stream only makes the view quicker, the snapshots make it right.

On a terminal the view is drawn with rich's Live display; when stdout is not a terminal, each
change is printed as a plain-text frame instead (for logs and tests). Ctrl-C exits 0.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ductile.errors import DuctileError
from ductile.cli.common import GatewayTarget, fail, gateway_target
from ductile.cli.watch_state import (
    ViewState,
    apply,
    apply_snapshot,
    render,
    render_text,
    to_json,
    with_link,
)

if TYPE_CHECKING:
    import httpx

#: Seconds between two snapshots of the JSON API.
RESYNC_SECONDS = 10.0
#: Seconds after the stream (re)connects before the snapshot that follows its replay.
REPLAY_SETTLE = 1.0
#: Seconds without a byte on the stream (the gateway sends a keep-alive every 15 s) before it
#: counts as dropped.
STREAM_READ_TIMEOUT = 45.0
#: Longest wait between two attempts to reconnect the stream.
MAX_BACKOFF = 10.0
#: Seconds before asking again for an event stream the gateway does not have (404).
NO_STREAM_RETRY = 60.0
#: Listing limit of GET /jobs (its maximum).
LIST_LIMIT = 200
#: What StreamReader._once answers when the next try should back off.
_BACK_OFF = -1.0


#: The running gateway: its base URL, token and certificate trust (cli/common.py).
Target = GatewayTarget


class GatewayUnreachable(DuctileError):
    """No API answer at all (a refused connection, a TLS failure, a timeout)."""


def resolve_target(config_path: str | None, api_url: str | None,
                   token_opt: str | None) -> Target:
    """The gateway from --api-url/--token, else from the config as the other verbs find it."""
    return gateway_target(config_path, api_url, token_opt,
                          missing="API token required (jobs:ro): use --token, $DUCTILE_API_KEY, "
                                  "or --config with a readable vault or api-token file.")


def fetch_snapshot(client: httpx.Client, target: Target) -> dict[str, Any]:
    """The API answers apply_snapshot reads; a request that fails is left out. Raises
    GatewayUnreachable when none answered, and exits 1 when the token is refused."""
    import httpx

    requests = {
        "healthz": ("/healthz", None),
        "queued": ("/jobs", {"status": "queued", "limit": str(LIST_LIMIT)}),
        "running": ("/jobs", {"status": "running", "limit": str(LIST_LIMIT)}),
        "recent": ("/jobs", {"limit": "50"}),
        "schedules": ("/scheduler/jobs", None),
    }
    snapshot: dict[str, Any] = {}
    last_error: Exception | None = None
    for key, (path, params) in requests.items():
        try:
            resp = client.get(target.base + path, params=params, headers=target.headers)
        except httpx.HTTPError as exc:
            last_error = exc
            continue
        if resp.status_code in (401, 403):
            fail(f"the gateway refused the token on GET {path} ({resp.status_code}): "
                 f"{_error_of(resp)}; system watch needs a token with jobs:ro")
        if resp.status_code == 200:
            try:
                snapshot[key] = resp.json()
            except ValueError:
                continue
    if not snapshot:
        raise GatewayUnreachable(f"cannot reach the gateway at {target.base}: {last_error}")
    return snapshot


def _error_of(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


_FIXED_NOW = datetime(2000, 1, 1, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def watch_once(target: Target, *, as_json: bool) -> NoReturn:
    """Print one snapshot and exit: 0 when the gateway answered, 1 when it did not."""
    import httpx

    with httpx.Client(verify=target.verify, timeout=15.0) as client:
        try:
            snapshot = fetch_snapshot(client, target)
        except GatewayUnreachable as exc:
            fail(f"{exc}; is it running (ductile system status)?")
    state = with_link(apply_snapshot(ViewState(), snapshot, now=_now()), "snapshot")
    if as_json:
        click.echo(json.dumps(to_json(state, _now()), indent=2))
    else:
        click.echo(render_text(state, _now()))
    sys.exit(0)


# -- the live view ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamNote:
    """What the stream reader tells the main loop: an event, or a change of the link."""

    event: dict[str, Any] | None = None
    link: str = ""
    detail: str = ""


class StreamReader:
    """Holds `GET /events` open in a daemon thread, reconnecting with Last-Event-ID, and
    puts StreamNotes on `notes`. Stops when `stop` is set (at its next event or timeout)."""

    def __init__(self, target: Target, notes: queue.Queue[StreamNote]) -> None:
        self.target = target
        self.notes = notes
        self.stop = threading.Event()
        self.last_event_id: str | None = None
        self.thread = threading.Thread(target=self._run, name="ductile-watch-stream",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            wait = self._once()
            if wait is None:  # it was live, then ended: try again soon
                backoff = 1.0
                wait = backoff
            elif wait == _BACK_OFF:  # unreachable: wait longer each time, up to MAX_BACKOFF
                wait, backoff = backoff, min(MAX_BACKOFF, backoff * 2)
            self.stop.wait(wait)

    def _once(self) -> float | None:
        """One connection: None after it was live, _BACK_OFF when it could not be made or
        broke, else the seconds to wait before asking again."""
        import httpx

        from ductile.cli.follow import SseParser

        headers = {**self.target.headers, "Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            with httpx.stream("GET", self.target.base + "/events", headers=headers,
                              verify=self.target.verify,
                              timeout=httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT)) as resp:
                if resp.status_code == 404:
                    self.notes.put(StreamNote(link="polling",
                                              detail="this gateway has no event stream"))
                    return NO_STREAM_RETRY
                if resp.status_code != 200:
                    resp.read()
                    self.notes.put(StreamNote(
                        link="polling",
                        detail=f"event stream refused ({resp.status_code}: {_error_of(resp)})"))
                    return NO_STREAM_RETRY
                self.notes.put(StreamNote(link="live"))
                parser = SseParser()
                for chunk in resp.iter_text():
                    if self.stop.is_set():
                        return None
                    for sse in parser.feed(chunk):
                        if sse.id is not None:
                            self.last_event_id = sse.id
                        self.notes.put(StreamNote(event=_event_of(sse)))
        except httpx.HTTPError as exc:
            self.notes.put(StreamNote(link="disconnected", detail=_short(exc)))
            return _BACK_OFF
        self.notes.put(StreamNote(link="disconnected", detail="the event stream ended"))
        return None


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _event_of(sse: Any) -> dict[str, Any]:
    try:
        data = json.loads(sse.data)
    except (ValueError, RecursionError):
        data = None  # not ours to read; apply() skips it
    return {"type": sse.event, "id": sse.id, "data": data}


class _Screen:
    """Draws the state: rich Live on a terminal, plain frames on anything else."""

    def __init__(self) -> None:
        self.live: Any = None
        self.last_text = ""

    def __enter__(self) -> _Screen:
        if sys.stdout.isatty():
            from rich.live import Live

            self.live = Live(auto_refresh=False, screen=False, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def draw(self, state: ViewState) -> None:
        now = _now()
        if self.live is not None:
            self.live.update(render(state, now), refresh=True)
            return
        # A new frame when something changed, not each second an age moves: compare the
        # frames as they would be drawn at one fixed instant.
        key = render_text(state, _FIXED_NOW)
        if key != self.last_text:
            self.last_text = key
            click.echo(f"--- {now.strftime('%Y-%m-%dT%H:%M:%SZ')}\n{render_text(state, now)}\n")


def watch_live(target: Target) -> NoReturn:
    """The live view until Ctrl-C (exit 0)."""
    try:
        _loop(target)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


def _loop(target: Target) -> None:
    import httpx

    notes: queue.Queue[StreamNote] = queue.Queue()
    reader = StreamReader(target, notes)
    state = ViewState()
    # The link shown is the stream's, unless the API itself stopped answering.
    stream_link, stream_detail = "polling", ""
    with httpx.Client(verify=target.verify, timeout=10.0) as client, _Screen() as screen:
        state, api_ok = _resync(client, target, state)
        screen.draw(state)
        reader.start()
        next_sync = time.monotonic() + RESYNC_SECONDS
        try:
            while True:
                timeout = max(0.0, min(1.0, next_sync - time.monotonic()))
                try:
                    note = notes.get(timeout=timeout)
                except queue.Empty:
                    note = None
                if note is not None and note.event is not None:
                    state = apply(state, note.event)
                elif note is not None:
                    if note.link == "live" and stream_link != "live":
                        # A (re)connected stream first replays what it holds, events the
                        # last snapshot may already be past: take a new one once they are in.
                        next_sync = min(next_sync, time.monotonic() + REPLAY_SETTLE)
                    stream_link, stream_detail = note.link, note.detail
                if time.monotonic() >= next_sync:
                    state, api_ok = _resync(client, target, state)
                    next_sync = time.monotonic() + RESYNC_SECONDS
                if api_ok:
                    state = with_link(state, stream_link, stream_detail)
                screen.draw(state)  # also every second, so the ages move
        finally:
            reader.stop.set()


def _resync(client: httpx.Client, target: Target,
            state: ViewState) -> tuple[ViewState, bool]:
    """The state after a snapshot, and whether the API answered."""
    try:
        snapshot = fetch_snapshot(client, target)
    except GatewayUnreachable as exc:
        return with_link(state, "disconnected", str(exc)), False
    return apply_snapshot(state, snapshot, now=_now()), True


@click.command()
@click.option("--config", "config_path", metavar="PATH",
              help="Config file or directory: the gateway is its api.listen, over TLS when "
                   "api.tls is set (else $DUCTILE_CONFIG_DIR, ~/.config/ductile, /etc/ductile).")
@click.option("--api-url", default=None, metavar="URL",
              help="The gateway's API (else api.listen from the config).")
@click.option("--token", "--api-key", "token_opt", default=None, metavar="TOKEN",
              help="A token with jobs:ro (else $DUCTILE_API_KEY, the vault, the api-token file).")
@click.option("--once", is_flag=True, help="Print one snapshot as plain text and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the snapshot as JSON.")
def watch(config_path: str | None, api_url: str | None, token_opt: str | None, once: bool,
          as_json: bool) -> None:
    """Watch the running gateway live: queue depth, running jobs and their age, recent
    outcomes, the schedules due next and open circuit breakers. Ctrl-C exits."""
    if as_json and not once:
        raise click.UsageError("--json prints one snapshot: use it with --once")
    target = resolve_target(config_path, api_url, token_opt)
    if once:
        watch_once(target, as_json=as_json)
    watch_live(target)
