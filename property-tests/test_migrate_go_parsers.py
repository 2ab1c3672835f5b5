"""The parsers of the Go original's formats that `ductile migrate from-go` reads.

- `to_stored_time`: any RFC3339Nano time the original writes (trailing zeros trimmed, any
  offset) becomes our fixed-width form of the same instant (to the microsecond), so imported
  rows keep their order as text; anything else raises GoTimeError, nothing else.
- `parse_identity_lines`: an age identity file is comments, blank lines and keys; the keys come
  back in order, and any other text is refused with MigrationRefused naming the file.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from ductile.errors import MigrationRefused
from ductile.migrate.agekey import IDENTITY_PREFIX, parse_identity_lines
from ductile.migrate.gotime import GoTimeError, to_stored_time
from ductile.store.jobs import format_time

STORED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30),
                       timezones=st.just(timezone.utc))
OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)
PATH = "/fuzz/age.key"


def go_format(moment: datetime, offset_minutes: int, nanos: int) -> str:
    """How Go's RFC3339Nano writes `moment` in a zone `offset_minutes` from UTC."""
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.astimezone(zone)
    fraction = f"{local.microsecond:06d}{nanos:03d}".rstrip("0")
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "")
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@given(MOMENTS, OFFSETS, st.integers(min_value=0, max_value=999))
def test_every_go_time_becomes_the_same_instant_in_our_form(
        moment: datetime, offset: int, nanos: int) -> None:
    assert to_stored_time(go_format(moment, offset, nanos)) == format_time(moment)


@given(MOMENTS, MOMENTS)
def test_imported_times_keep_their_order_as_text(a: datetime, b: datetime) -> None:
    left, right = to_stored_time(go_format(a, 0, 0)), to_stored_time(go_format(b, 0, 0))
    assert (left < right) == (a < b)


@given(st.text(max_size=40))
def test_any_text_is_a_stored_time_or_a_go_time_error(text: str) -> None:
    try:
        result = to_stored_time(text)
    except GoTimeError:
        return
    assert STORED.fullmatch(result)


KEY = st.from_regex(r"AGE-SECRET-KEY-1[0-9A-Z]{10,60}", fullmatch=True)
COMMENT = st.from_regex(r"#[^\n\r]{0,30}", fullmatch=True)
LINES = st.lists(st.one_of(KEY.map(lambda k: ("key", k)), COMMENT.map(lambda c: ("other", c)),
                           st.just(("other", "")), st.just(("other", "   "))), max_size=8)


@given(LINES)
def test_identity_files_give_back_their_keys_in_order(lines: list[tuple[str, str]]) -> None:
    text = "\n".join(line for _, line in lines) + "\n"
    keys = tuple(line for kind, line in lines if kind == "key")
    try:
        found = parse_identity_lines(text, PATH)
    except MigrationRefused as exc:
        assert not keys and PATH in exc.message
        return
    assert found == keys


@given(st.text(max_size=200))
def test_any_text_is_keys_or_a_refusal_naming_the_file(text: str) -> None:
    try:
        found = parse_identity_lines(text, PATH)
    except MigrationRefused as exc:
        assert PATH in exc.message and exc.path == PATH
        return
    assert found and all(k.upper().startswith(IDENTITY_PREFIX) for k in found)
