"""The CLI's Server-Sent Events parser (cli/follow.py) against the gateway's encoder
(planes/api/routes/live.py): whatever the events and however the bytes are cut into chunks on
the way, the follower reads back exactly what was sent; and on any text at all, the parser
never raises and does not depend on where the chunks fall."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from ductile.cli.follow import SseEvent, SseParser
from ductile.planes.api.routes.live import KEEP_ALIVE, sse_event

event_names = st.text(min_size=1).filter(lambda s: "\r" not in s and "\n" not in s)
sse_ish = st.text(alphabet="\r\n: \ufeffdataeventidretry\x00xé", max_size=200)


def chunked(text: str, cuts: list[int]) -> list[str]:
    """`text` cut at the given offsets (in any order, repeats allowed)."""
    points = sorted({min(max(c, 0), len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


def parse(chunks: list[str], **kw: int) -> list[SseEvent]:
    parser = SseParser(**kw)
    return [event for chunk in chunks for event in parser.feed(chunk)]


@given(st.lists(st.tuples(event_names, st.text()), max_size=8),
       st.lists(st.booleans(), max_size=8), st.lists(st.integers(0, 4000), max_size=12))
def test_what_the_gateway_sends_is_what_the_follower_reads(
        events: list[tuple[str, str]], heartbeats: list[bool], cuts: list[int]) -> None:
    body = ""
    for i, (name, data) in enumerate(events):
        if i < len(heartbeats) and heartbeats[i]:
            body += KEEP_ALIVE
        body += sse_event(name, data)
    got = parse(chunked(body, cuts))
    # A line break inside a value travels as a second `data:` line and comes back as LF.
    assert [(e.event, e.data) for e in got] == [
        (name, re.sub(r"\r\n|\r", "\n", data)) for name, data in events]


@given(st.one_of(sse_ish, st.text(max_size=200)), st.lists(st.integers(0, 200), max_size=10),
       st.integers(1, 12))
def test_any_text_parses_the_same_however_it_is_chunked(
        text: str, cuts: list[int], max_line: int) -> None:
    whole = parse([text], max_line=max_line)
    assert parse(chunked(text, cuts), max_line=max_line) == whole
    assert parse(list(text), max_line=max_line) == whole  # one character at a time
    for event in whole:
        assert event.event  # a stream that names no type gets "message"
        assert all(len(line) <= max_line for line in event.data.split("\n"))


def test_the_rules_on_a_few_spelled_out_cases() -> None:
    text = ("\ufeff: comment\r\nid: 7\nevent: line\ndata:a\ndata:  b\n\n"
            "data\n\nevent: empty\n\nevent: x\rdata: y\r\r")
    assert parse([text]) == [SseEvent("line", "a\n b", "7"), SseEvent("message", "", "7"),
                             SseEvent("x", "y", "7")]
