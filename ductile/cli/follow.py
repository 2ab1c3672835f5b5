"""`ductile job logs --follow ID`: print a job's stderr as it runs, then its outcome.

The client of `GET /job/{id}/logs/stream` (docs/api.md). stdout gets exactly the job's stderr
lines; the annotations (a new attempt, lines this follower missed) and the outcome go to
stderr, so `ductile job logs --follow ID > job.log` keeps the log clean. The exit code is 0
when the job succeeded and 1 for any other end. With `--json`, every event is one JSON object
per line on stdout instead.

The Server-Sent Events parser is written out here (a few dozen lines of the WHATWG rules) rather
than taken from a library: it is all the CLI needs, and it is property-tested against the
gateway's encoder (property-tests/test_sse_parser.py).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote

import click

from ductile.cli.common import fail, gateway_target

#: A line longer than this (characters) is cut there; the gateway never sends one.
MAX_LINE = 1024 * 1024
#: Seconds without a byte (the gateway sends a keep-alive every 15 s) before the connection
#: counts as lost.
READ_TIMEOUT = 60.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its type (`message` when the stream named none), its data (the
    `data:` lines joined with LF) and the last event id seen, if any."""

    event: str
    data: str
    id: str | None = None


class SseParser:
    """Incremental parser of a `text/event-stream` body, fed text as it arrives in chunks of
    any size. Follows the WHATWG HTML rules: lines end at CRLF, LF or CR (also split across
    chunks); `:` starts a comment; a blank line dispatches the event being built, unless it
    has no `data:` line; unknown fields are ignored. A line longer than `max_line` is cut
    there, however the chunks fall."""

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        self._max_line = max(1, max_line)
        self._buffer = ""
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next one is its pair
        self._started = False
        self._overlong = False  # dropping the rest of a line cut at MAX_LINE
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    def feed(self, text: str) -> list[SseEvent]:
        """The events the chunk completes, in order."""
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        buffer = self._buffer + text
        events: list[SseEvent] = []
        position = 0
        for match in _EOL.finditer(buffer):
            line = buffer[position:match.start()][: self._max_line]
            position = match.end()
            if match.group() == "\r" and position == len(buffer):
                self._skip_lf = True
            if self._overlong:
                self._overlong = False  # the end of the line that was cut: nothing to keep
                continue
            event = self._line(line)
            if event is not None:
                events.append(event)
        rest = buffer[position:]
        if self._overlong:
            rest = ""
        elif len(rest) > self._max_line:
            self._line(rest[: self._max_line])  # not blank, so it cannot dispatch an event
            rest, self._overlong = "", True
        self._buffer = rest
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event or "message", "\n".join(data), self._last_id)


def follow_job(job_id: str, *, config_path: str | None, api_url: str | None,
               api_key_opt: str | None, as_json: bool) -> NoReturn:
    """Follow JOB_ID on the running gateway until it ends; exit 0 if it succeeded, else 1."""
    import httpx

    target = gateway_target(config_path, api_url, api_key_opt)
    url = f"{target.base}/job/{quote(job_id, safe='')}/logs/stream"
    printer = _Printer(as_json)
    connected = False
    try:
        with httpx.stream("GET", url, headers={**target.headers, "Accept": "text/event-stream"},
                          timeout=httpx.Timeout(15.0, read=READ_TIMEOUT),
                          verify=target.verify) as resp:
            if resp.status_code != 200:
                fail(_refusal(resp, job_id))
            connected = True
            parser = SseParser()
            for chunk in resp.iter_text():
                for event in parser.feed(chunk):
                    printer.show(event)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except httpx.HTTPError as exc:
        what = "lost the stream from" if connected else "cannot reach"
        fail(f"{what} the gateway at {url}: {exc}; is it running (ductile system status)?")
    fail(f"the stream ended before job {job_id} did (the gateway stopped?); "
         f"see ductile job inspect {job_id}")


def _refusal(resp: Any, job_id: str) -> str:
    resp.read()
    try:
        error = resp.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if resp.status_code == 404 and error == "job not found":
        return f"job {job_id} not found"
    return f"API error ({resp.status_code}): {error or resp.text[:200]}"


class _Printer:
    """Shows each event; ends the process at `end` (exit 0/1) or `error` (exit 1)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.attempts_seen = 0

    def show(self, event: SseEvent) -> None:
        body: Any = event.data
        if event.event != "line":
            try:
                body = json.loads(event.data)
            except ValueError:
                return  # not ours to read: a newer gateway's event
            if not isinstance(body, dict):
                return
        if event.event == "error":
            fail(str(body.get("error", "the gateway ended the stream")))
        if self.as_json:
            self._show_json(event.event, body)
        else:
            self._show_text(event.event, body)
        if event.event == "end":
            sys.exit(0 if body.get("status") == "succeeded" else 1)

    def _show_json(self, kind: str, body: Any) -> None:
        if kind == "line":
            click.echo(json.dumps({"event": "line", "line": body}))
        elif kind in ("attempt", "dropped", "end"):
            click.echo(json.dumps({"event": kind, **body}))

    def _show_text(self, kind: str, body: Any) -> None:
        if kind == "line":
            click.echo(body)
        elif kind == "attempt":
            # The first attempt needs no banner; any later one (a retry, or a finished job's
            # last attempt) says which it is.
            self.attempts_seen += 1
            if self.attempts_seen > 1 or body.get("attempt", 1) != 1:
                click.echo(f"--- attempt {body.get('attempt')} ---", err=True)
        elif kind == "dropped":
            click.echo(f"[{body.get('dropped')} line(s) not shown: this follower fell behind, "
                       "or they scrolled out of the live buffer before it joined]", err=True)
        elif kind == "end":
            outcome = f"job {body.get('job_id')} {body.get('status')} " \
                      f"(attempt {body.get('attempt')})"
            if body.get("last_error"):
                outcome += f": {body['last_error']}"
            click.echo(outcome, err=True)
