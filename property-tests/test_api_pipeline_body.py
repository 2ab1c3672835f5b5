"""Fuzz the `POST /pipeline/{name}` body parser: only BodyError ever escapes, and a body is
accepted exactly when it is an object with an object (or absent) payload and baggage."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ductile.planes.api.bodies import BodyError
from ductile.planes.api.pipelines import parse_pipeline_request
from strategies import json_values



@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_body_error(data: bytes) -> None:
    try:
        parsed = parse_pipeline_request(data)
    except BodyError as exc:
        assert str(exc)
        return
    assert isinstance(parsed.payload, dict)
    assert parsed.baggage is None or isinstance(parsed.baggage, dict)


@given(st.dictionaries(st.sampled_from(["payload", "baggage", "other"]), json_values,
                       max_size=3))
def test_structured_bodies_are_accepted_exactly_when_well_typed(body: dict) -> None:
    well_typed = (
        set(body) <= {"payload", "baggage"}
        and (body.get("payload") is None or isinstance(body["payload"], dict))
        and (body.get("baggage") is None or isinstance(body["baggage"], dict))
    )
    try:
        parsed = parse_pipeline_request(json.dumps(body).encode())
    except BodyError:
        assert not well_typed
        return
    assert well_typed
    assert parsed.payload == (body.get("payload") or {})
