"""Fuzz the `POST /pipeline/{name}` body parser: only BodyError ever escapes, and a body is
accepted exactly when it is an object with an object (or absent) payload and baggage whose
top-level keys avoid the reserved ductile names. Its `sync` / `async` query flags too."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ductile.planes.api.bodies import BodyError
from ductile.planes.api.pipelines import (
    is_reserved_baggage_key,
    parse_pipeline_request,
    wants_wait,
)
from strategies import hostile_json_bytes, json_values

baggage_keys = st.one_of(st.text(max_size=10),
                         st.sampled_from(["ductile", "ductile.x", "ductile_plugin", "ductiles",
                                          "Ductile_x", "tenant"]))


@given(st.one_of(st.binary(max_size=300), hostile_json_bytes()))
def test_arbitrary_bytes_either_parse_or_raise_body_error(data: bytes) -> None:
    try:
        parsed = parse_pipeline_request(data)
    except BodyError as exc:
        assert str(exc)
        return
    assert isinstance(parsed.payload, dict)
    assert parsed.baggage is None or isinstance(parsed.baggage, dict)
    json.dumps([parsed.payload, parsed.baggage], allow_nan=False,
               ensure_ascii=False).encode("utf-8")


@given(st.dictionaries(st.sampled_from(["payload", "baggage", "other"]),
                       st.one_of(json_values, st.dictionaries(baggage_keys, json_values,
                                                              max_size=3)),
                       max_size=3))
def test_structured_bodies_are_accepted_exactly_when_well_typed(body: dict) -> None:
    baggage = body.get("baggage")
    well_typed = (
        set(body) <= {"payload", "baggage"}
        and (body.get("payload") is None or isinstance(body["payload"], dict))
        and (baggage is None or (isinstance(baggage, dict)
                                 and not any(is_reserved_baggage_key(k) for k in baggage)))
    )
    try:
        parsed = parse_pipeline_request(json.dumps(body).encode())
    except BodyError:
        assert not well_typed
        return
    assert well_typed
    assert parsed.payload == (body.get("payload") or {})


@given(st.sampled_from(["ductile", "ductile.route_depth", "ductile_plugin", "ductile_"]))
def test_reserved_baggage_keys_are_refused_by_name(key: str) -> None:
    try:
        parse_pipeline_request(json.dumps({"baggage": {key: 1}}).encode())
    except BodyError as exc:
        assert f"key {key!r} is reserved" in str(exc)
    else:
        raise AssertionError(f"baggage key {key!r} accepted")


query_values = st.one_of(st.none(), st.text(max_size=6),
                         st.sampled_from(["true", "True", "1", "false", "true "]))


@given(st.sampled_from(["asynchronous", "synchronous"]), query_values, query_values)
def test_the_wait_mode_follows_the_exact_query_flags_then_the_execution_mode(
    mode: str, async_value: str | None, sync_value: str | None
) -> None:
    """`?sync=true` waits, `?async=true` does not, both is a 400, and otherwise the pipeline's
    execution_mode decides; only the exact text `true` counts as a flag."""
    args = {k: v for k, v in (("async", async_value), ("sync", sync_value)) if v is not None}
    forced_async, forced_sync = async_value == "true", sync_value == "true"
    try:
        waits = wants_wait(mode, args)
    except BodyError as exc:
        assert forced_async and forced_sync
        assert "contradict" in str(exc)
        return
    assert not (forced_async and forced_sync)
    assert waits == (forced_sync or (mode == "synchronous" and not forced_async))
