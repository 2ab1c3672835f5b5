"""Fuzz decode_response: any bytes give a Response or ProtocolError; valid responses round-trip."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ductile.errors import ProtocolError
from ductile.plugin.protocol import Event, Response, decode_response, encode_response

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
RESPONSE_KEYS = ["status", "result", "error", "retry", "events", "state_updates", "logs"]
response_like = st.dictionaries(
    st.sampled_from(RESPONSE_KEYS),
    st.one_of(json_values, st.sampled_from(["ok", "error", ""]),
              st.lists(st.dictionaries(st.sampled_from(["type", "payload", "source"]),
                                       json_values, max_size=3), max_size=3)),
    max_size=7,
)


def check(stdout: bytes) -> Response | None:
    try:
        response = decode_response(stdout)
    except ProtocolError:
        return None
    assert response.status in ("ok", "error")
    return response


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
@example(b"[" * 100_000)
@example(b'{"status":"ok","result":"r"} {"x":1}')
@example(b'{"a":' + b"9" * 5000 + b"}")
@example(b'{"status":"ok","result":"\\ud800"}')
@example(b"\xef\xbb\xbf{}")
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, response_like))
def test_arbitrary_json(value: Any) -> None:
    check(json.dumps(value).encode())


text = st.text(max_size=20)
events = st.builds(
    Event, type=text, payload=st.dictionaries(text, json_values, max_size=3),
    dedupe_key=st.none() | text, event_id=st.none() | text, timestamp=st.none() | text,
    source=st.none() | text,
)
valid_responses = st.one_of(
    st.builds(Response, status=st.just("ok"), result=text.filter(lambda s: s.strip() != ""),
              error=st.none() | text, retry=st.none() | st.booleans(),
              events=st.lists(events, max_size=3).map(tuple),
              state_updates=st.none() | st.dictionaries(text, json_values, max_size=3),
              logs=st.lists(st.dictionaries(text, json_values, max_size=2), max_size=2).map(tuple)),
    st.builds(Response, status=st.just("error"), result=st.none() | text,
              error=text.filter(bool), retry=st.none() | st.booleans(),
              events=st.lists(events, max_size=2).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(valid_responses)
def test_valid_responses_round_trip(response: Response) -> None:
    assert decode_response(encode_response(response)) == response
