"""Split a plugin's output, as it arrives in chunks, into decoded lines.

Used by the spawn's stderr tap (`plugin/spawn.py`) to hand each line to a live follower while
the plugin still runs. Plugin output is untrusted bytes: invalid UTF-8 becomes U+FFFD (a
multi-byte character split across two reads is decoded whole), a `\\r\\n` ending counts as `\\n`,
and a line that never ends is cut every `max_line` characters so one runaway line cannot grow
without bound.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

#: The longest line handed on whole; a longer one arrives as several lines of this length.
MAX_LINE = 16 * 1024


class LineSplitter:
    """Feed it chunks; it calls `emit` with each complete line (without its line ending)."""

    def __init__(self, emit: Callable[[str], None], *, max_line: int = MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be at least 1, got {max_line}")
        self._emit = emit
        self._max_line = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, chunk: bytes) -> None:
        """Take one chunk as read from the pipe; emit every line it completes."""
        self._split(self._partial + self._decoder.decode(chunk))

    def close(self) -> None:
        """The stream ended: emit what is left (an unfinished last line), if anything."""
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        self._split(rest)
        tail, self._partial = self._partial.removesuffix("\r"), ""
        if tail:
            self._emit_cut(tail)

    def _split(self, text: str) -> None:
        start = 0
        while True:
            end = text.find("\n", start)
            if end < 0:
                break
            self._emit_cut(text[start:end].removesuffix("\r"))
            start = end + 1
        rest = text[start:]
        # Cut an unfinished line that is already too long, but keep a last CR back: it may be
        # the first half of a CRLF split across two reads.
        while len(rest) > self._max_line and rest[self._max_line:] != "\r":
            self._emit(rest[: self._max_line])
            rest = rest[self._max_line:]
        self._partial = rest

    def _emit_cut(self, line: str) -> None:
        while len(line) > self._max_line:
            self._emit(line[: self._max_line])
            line = line[self._max_line:]
        self._emit(line)
