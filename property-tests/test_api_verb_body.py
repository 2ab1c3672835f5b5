"""Fuzz the body parser of `POST /job/{id}/cancel`, `/retry` and `/rerun`: only BodyError ever
escapes, and a body is accepted exactly when it holds only the verb's fields (`reason` for a
cancel: one non-blank line of at most 500 characters), which come back trimmed."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ductile.planes.api.bodies import BodyError
from ductile.planes.api.jobverbs import MAX_REASON, VERB_FIELDS, parse_verb_body
from strategies import hostile_json_bytes, json_values

verbs = st.sampled_from(sorted(VERB_FIELDS))
reasons = st.one_of(
    json_values,
    st.text(max_size=30),
    st.text(min_size=MAX_REASON - 2, max_size=MAX_REASON + 2),
    st.sampled_from(["", "   ", "a\nb", "tab\there", "del\x7f", " stuck plugin ", "é ünïcode"]),
)


def acceptable(reason: object) -> bool:
    return (isinstance(reason, str) and bool(reason.strip()) and len(reason) <= MAX_REASON
            and not any(ord(ch) < 32 or ord(ch) == 127 for ch in reason))


@given(verbs, st.one_of(st.binary(max_size=300), hostile_json_bytes()))
def test_arbitrary_bytes_either_parse_or_raise_body_error(verb: str, data: bytes) -> None:
    try:
        parsed = parse_verb_body(data, verb)
    except BodyError as exc:
        assert str(exc)
        return
    assert parsed.reason is None or acceptable(parsed.reason)


@given(verbs, st.dictionaries(st.sampled_from(["reason", "force", "payload"]), reasons,
                              max_size=3))
def test_structured_bodies_are_accepted_exactly_when_well_typed(verb: str, body: dict) -> None:
    allowed = set(VERB_FIELDS[verb])
    well_typed = set(body) <= allowed and ("reason" not in body or body["reason"] is None
                                           or acceptable(body["reason"]))
    try:
        parsed = parse_verb_body(json.dumps(body).encode(), verb)
    except BodyError as exc:
        assert not well_typed, str(exc)
        unknown = sorted(set(body) - allowed)
        if unknown:
            assert str(exc).startswith(f"unknown field(s) in body: {unknown[0]}")
        return
    assert well_typed
    reason = body.get("reason")
    assert parsed.reason == (reason.strip() if isinstance(reason, str) else None)


@given(verbs)
def test_an_empty_body_asks_for_nothing(verb: str) -> None:
    assert parse_verb_body(b"", verb).reason is None
    assert parse_verb_body(b"  \n", verb).reason is None
    assert parse_verb_body(b"{}", verb).reason is None
