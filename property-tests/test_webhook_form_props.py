"""Fuzz the webhook plane's form-body parser and content-type choice: whatever bytes or header
arrive, the answer is a documented value or PayloadError / UnsupportedContentType, never
anything else; and an encoded form decodes back to its fields, repeated keys as lists."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from ductile.planes.webhook.payload import (
    FORM,
    MAX_FORM_FIELDS,
    PayloadError,
    UnsupportedContentType,
    body_kind,
    parse_form,
    parse_webhook_body,
)

# Field text as a sender could encode it: any character UTF-8 can carry (no lone surrogates).
field_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
form_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet="ab=&%+;2F0eE9\u00e9 ", max_size=60).map(lambda t: t.encode()),
)


@given(form_bytes)
def test_any_bytes_parse_to_string_fields_or_a_payload_error(body: bytes) -> None:
    try:
        fields = parse_form(body)
    except PayloadError as exc:
        assert str(exc).startswith("invalid form body: ")
        return
    for key, value in fields.items():
        assert isinstance(key, str)
        values = value if isinstance(value, list) else [value]
        assert len(values) >= 1 and (not isinstance(value, list) or len(values) >= 2)
        assert all(isinstance(v, str) for v in values)
    json.dumps(fields, ensure_ascii=False).encode()  # always storable as a payload


@given(st.lists(st.tuples(field_text.filter(bool), field_text), max_size=15))
def test_an_encoded_form_decodes_to_its_fields_with_repeats_as_lists(
        pairs: list[tuple[str, str]]) -> None:
    expected: dict[str, list[str]] = {}
    for key, value in pairs:
        expected.setdefault(key, []).append(value)
    fields = parse_form(urlencode(pairs).encode())
    assert {k: v if isinstance(v, list) else [v] for k, v in fields.items()} == expected
    assert all(isinstance(fields[k], str) for k, vs in expected.items() if len(vs) == 1)


@given(st.lists(st.tuples(field_text.filter(bool), field_text), max_size=8))
def test_a_form_payload_keeps_the_exact_body(pairs: list[tuple[str, str]]) -> None:
    body = urlencode(pairs).encode()
    parsed = parse_webhook_body(body, "handle", f"{FORM}; charset=utf-8")
    assert parsed.payload == parsed.value
    assert parsed.value["raw_body"] == body.decode()
    assert parsed.value["form"] == parse_form(body)


def test_too_many_fields_is_a_payload_error() -> None:
    body = "&".join(f"k{i}=v" for i in range(MAX_FORM_FIELDS + 1)).encode()
    try:
        parse_form(body)
    except PayloadError as exc:
        assert str(MAX_FORM_FIELDS) in str(exc)
    else:
        raise AssertionError("a form over the field cap was accepted")


@given(st.one_of(st.none(), st.text(max_size=60)))
def test_content_type_is_json_form_or_refused(header: str | None) -> None:
    try:
        kind = body_kind(header)
    except UnsupportedContentType as exc:
        assert "unsupported Content-Type" in str(exc) and FORM in str(exc)
        return
    assert kind in ("json", "form")
    media = (header or "").split(";", 1)[0].strip().lower()
    assert (kind == "form") == (media == FORM)
