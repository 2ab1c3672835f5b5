"""Structured logging: one JSON object per line on stdout, as the Go gateway does.

A `Logger` is a small value (component name plus a shared sink) handed to whoever needs it;
there is no module-level logger state. Children share their parent's sink, so applying
`service.log_level` after the config is read (and again on reload) reaches every component.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}

#: One compact encoder for every line (json.dumps with arguments builds a new one per call, and
#: the gateway logs on every request).
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode


#: (Unix second, its formatted `YYYY-mm-ddTHH:MM:SS`), replaced as one tuple so a logger on
#: another thread never pairs a second with another second's text.
_second: tuple[int, str] = (-1, "")


def _timestamp(now: float) -> str:
    """`now` as `YYYY-mm-ddTHH:MM:SS.fffZ`; the seconds part is formatted once per second (a
    busy gateway logs on every request)."""
    global _second
    second, text = _second
    if second != int(now):
        second = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    return f"{text}.{int(now * 1000) % 1000:03d}Z"


@dataclass
class LogSink:
    stream: TextIO
    level: str = "info"


class Logger:
    def __init__(
        self,
        component: str = "ductile",
        level: str = "info",
        stream: TextIO | None = None,
        *,
        sink: LogSink | None = None,
    ) -> None:
        self.component = component
        self.sink = sink or LogSink(stream=stream or sys.stdout, level=level)

    @property
    def stream(self) -> TextIO:
        return self.sink.stream

    def child(self, component: str) -> Logger:
        return Logger(component, sink=self.sink)

    def set_level(self, level: str) -> None:
        """Apply `service.log_level` to this logger and every child (unknown -> info)."""
        self.sink.level = level if level in LEVELS else "info"

    def log(self, level: str, msg: str, **fields: Any) -> None:
        if LEVELS.get(level, 20) < LEVELS.get(self.sink.level, 20):
            return
        record = {
            "time": _timestamp(time.time()),
            "level": level.upper(),
            "component": self.component,
            "msg": msg,
        }
        record.update(fields)
        try:
            self.sink.stream.write(_ENCODE(record) + "\n")
            self.sink.stream.flush()
        except (OSError, ValueError):
            # A closed stdout or a full log disk must never take the gateway down.
            pass

    def debug(self, msg: str, **fields: Any) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log("warn", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)
