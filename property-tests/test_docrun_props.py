"""The docs runner's markdown parsing (tests/support/docrun.py) on arbitrary text: it never
raises on a page, finds every fenced block exactly once with its line number, body and marker,
and an expected output always matches the text it was written from."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from support.docrun import (
    Bindings,
    DocFormatError,
    OutputPattern,
    find_fences,
    find_markers,
    parse_console,
    parse_directive,
)

# Prose and body lines that cannot open or close a fence nor look like a marker.
_PLAIN = st.text(st.characters(blacklist_characters="`~\n\r<", blacklist_categories=("Cs",)),
                 max_size=30)
_INFO = st.text(st.characters(blacklist_characters="`~\n\r", blacklist_categories=("Cs",)),
                max_size=12)
_MARKER = st.sampled_from(["run scenario=x", "skip (reason)", "config root", "manifest",
                           "run scenario=a id=b", "config plugins=a,b wrap=step"])


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[tuple[int, str, str, str | None]]]:
    """A page of prose and fenced blocks, and the blocks it holds:
    (line of the opening fence, info string, body, marker)."""
    lines: list[str] = []
    blocks: list[tuple[int, str, str, str | None]] = []
    for _ in range(draw(st.integers(0, 6))):
        lines += draw(st.lists(_PLAIN, max_size=3))
        if not draw(st.booleans()):
            continue
        marker = draw(st.one_of(st.none(), _MARKER))
        if marker is not None:
            lines.append(f"<!-- doc: {marker} -->")
        char = draw(st.sampled_from("`~"))
        fence = char * draw(st.integers(3, 5))
        info = draw(_INFO).strip()
        body = draw(st.lists(_PLAIN, max_size=4))
        lines.append(fence + info)
        blocks.append((len(lines), info, "\n".join(body), marker))
        lines += body
        lines.append(fence + char * draw(st.integers(0, 2)))
    return "\n".join(lines), blocks


@given(st.text())
def test_find_fences_never_raises_and_reports_lines_inside_the_page(text: str) -> None:
    fences = find_fences(text)
    count = len(text.split("\n"))
    assert all(1 <= f.line <= count for f in fences)
    assert [f.line for f in fences] == sorted({f.line for f in fences})
    assert all(1 <= line <= count for line in find_markers(text))


@given(documents())
def test_every_fenced_block_is_found_once_with_its_line_body_and_marker(
        doc: tuple[str, list[tuple[int, str, str, str | None]]]) -> None:
    text, expected = doc
    found = find_fences(text)
    assert [(f.line, f.info, f.body, f.marker) for f in found] == expected
    assert all(f.closed for f in found)
    lines = text.split("\n")
    assert all(re.match(r"^ {0,3}(`{3,}|~{3,})", lines[f.line - 1]) for f in found)


@given(st.text())
def test_a_marker_parses_or_is_refused_with_a_doc_format_error(text: str) -> None:
    try:
        directive = parse_directive(text)
    except DocFormatError:
        return
    assert directive.kind in ("run", "config", "manifest", "plugin", "skip")
    if directive.kind == "skip":
        assert directive.reason


@given(st.lists(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                        max_size=20), max_size=12), st.integers(1, 500))
def test_console_commands_come_from_the_block_in_order(lines: list[str], first: int) -> None:
    commands = parse_console("\n".join(lines), first)
    numbers = [c.line for c in commands]
    assert numbers == sorted(set(numbers))
    assert all(first <= n < first + max(len(lines), 1) for n in numbers)
    prompts = {first + i for i, line in enumerate(lines) if line.startswith("$ ") or line == "$"}
    if prompts:
        # With prompts, every command starts at one; a prompt is only missed when a
        # backslash continuation swallowed it.
        assert set(numbers) <= prompts
        continued = {first + i for i, line in enumerate(lines)
                     if i and lines[i - 1].endswith("\\")}
        assert prompts - set(numbers) <= continued


@given(st.lists(st.text(st.characters(blacklist_characters="\n\r",
                                      blacklist_categories=("Cs",)), max_size=40),
                max_size=8))
def test_an_expected_output_matches_the_text_it_was_written_from(lines: list[str]) -> None:
    """Whatever a page shows (ids, times, `...`), it matches the very output it was copied
    from: the volatile parts and wildcards only ever widen a literal match."""
    assert OutputPattern(lines, Bindings()).match("\n".join(lines)) is not None
