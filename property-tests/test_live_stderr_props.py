"""Live stderr (plugin/lines.py, dispatch/live.py), from untrusted plugin bytes to followers.

The line splitter cuts a plugin's stderr into the same lines however the pipe hands it over
(a read boundary may fall inside a CRLF or a multi-byte character), and those lines are the
ones a reference reading of the whole output gives. The ring gives every follower the lines in
the order they were published, and accounts for every line it could not give (`dropped`)."""

from __future__ import annotations

import re

import trio
from hypothesis import given
from hypothesis import strategies as st

from ductile.dispatch.live import AttemptFeed
from ductile.plugin.lines import LineSplitter

stderr_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"a", b"bc", "é".encode(), b"\xff",
                              b"\xe2\x82", b"\xac", "日本".encode()]), max_size=60
             ).map(b"".join),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def split(chunks: list[bytes], max_line: int) -> list[str]:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_line=max_line)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return lines


def reference(data: bytes, max_line: int) -> list[str]:
    """Decode it all, split at LF, drop one CR before each LF and at the end, cut long lines."""
    *complete, tail = data.decode("utf-8", errors="replace").split("\n")
    lines = [line.removesuffix("\r") for line in complete]
    if tail.removesuffix("\r"):
        lines.append(tail.removesuffix("\r"))
    out: list[str] = []
    for line in lines:
        out.extend(re.findall(f".{{1,{max_line}}}", line, flags=re.DOTALL) or [""])
    return out


@given(stderr_bytes, st.lists(st.integers(0, 300), max_size=12), st.integers(1, 8))
def test_lines_do_not_depend_on_where_reads_fall(data: bytes, cuts: list[int],
                                                 max_line: int) -> None:
    expected = reference(data, max_line)
    assert split(chunked(data, cuts), max_line) == expected
    assert split([data[i:i + 1] for i in range(len(data))], max_line) == expected


@given(st.lists(st.one_of(st.text(max_size=20), st.none()), max_size=80),
       st.integers(1, 10), st.integers(1, 200))
def test_a_follower_gets_every_line_in_order_or_counts_it_dropped(
        ops: list[str | None], max_lines: int, max_bytes: int) -> None:
    """`ops`: a line to publish, or None for the follower to read what is there."""

    async def main() -> None:
        feed = AttemptFeed("j", 1, max_lines=max_lines, max_bytes=max_bytes)
        cursor = feed.follow()
        published: list[str] = []
        received: list[tuple[int, str]] = []  # (line number, line)

        async def read() -> None:
            if feed.next_number <= cursor.number and not feed.ended:
                return  # nothing new: next() would wait
            start = cursor.number
            batch = await cursor.next()
            first = start + batch.dropped
            received.extend((first + i, line) for i, line in enumerate(batch.lines))
            assert len(batch.lines) <= max_lines

        for op in ops:
            if op is None:
                await read()
            else:
                feed.publish(op)
                published.append(op)
        feed.end()
        batch = await cursor.next()
        start = cursor.number - len(batch.lines)
        received.extend((start + i, line) for i, line in enumerate(batch.lines))
        assert batch.ended and cursor.number == len(published)
        numbers = [n for n, _ in received]
        assert numbers == sorted(set(numbers))  # in order, never twice
        assert all(published[n] == line for n, line in received)
        assert received and received[-1][0] == len(published) - 1 or not published

    trio.run(main)
