"""Structured logging: one JSON object per line on stdout, as the Go gateway does.

A `Logger` is a small value (component name, level threshold, stream) handed to whoever needs it;
there is no module-level logger state to mutate.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}


def _default_stream() -> TextIO:
    return sys.stdout


@dataclass(frozen=True)
class Logger:
    component: str = "ductile"
    level: str = "info"
    stream: TextIO = field(default_factory=_default_stream)

    def child(self, component: str) -> Logger:
        return Logger(component=component, level=self.level, stream=self.stream)

    def log(self, level: str, msg: str, **fields: Any) -> None:
        if LEVELS.get(level, 20) < LEVELS.get(self.level, 20):
            return
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            + f".{int(time.time() * 1000) % 1000:03d}Z",
            "level": level.upper(),
            "component": self.component,
            "msg": msg,
        }
        record.update(fields)
        try:
            self.stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            # A closed stdout must never take the gateway down.
            pass

    def debug(self, msg: str, **fields: Any) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log("warn", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)
