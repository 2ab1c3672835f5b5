"""Fuzz the API's body and header parsers: only their own errors ever escape."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.schema import ApiToken
from ductile.planes.api.auth import AuthError, authenticate
from ductile.planes.api.bodies import BodyError, event_payload, parse_run_request
from strategies import json_values



@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_parse_or_raise_body_error(data: bytes) -> None:
    try:
        run = parse_run_request(data)
    except BodyError as exc:
        assert str(exc)
        return
    assert isinstance(run.sync, bool)


@given(st.dictionaries(st.sampled_from(["payload", "command", "sync", "dedupe_key", "other"]),
                       json_values, max_size=5))
def test_structured_bodies_are_accepted_exactly_when_well_typed(body: dict) -> None:
    data = json.dumps(body).encode()
    well_typed = (
        set(body) <= {"payload", "command", "sync", "dedupe_key"}
        and (body.get("command") is None or (isinstance(body["command"], str)
                                             and body["command"] != ""))
        and isinstance(body.get("sync", False), bool)
        and (body.get("dedupe_key") is None or (isinstance(body["dedupe_key"], str)
                                                and body["dedupe_key"].strip() != ""
                                                and len(body["dedupe_key"]) <= 256))
    )
    try:
        run = parse_run_request(data)
    except BodyError:
        assert not well_typed
        return
    assert well_typed
    assert run.payload == body.get("payload")


@given(st.sampled_from(["handle", "poll"]), json_values)
def test_handle_payloads_become_api_trigger_events(command: str, payload: object) -> None:
    try:
        wrapped = event_payload(command, payload)
    except BodyError:
        assert command == "handle" and payload is not None and not isinstance(payload, dict)
        return
    if command == "handle":
        assert wrapped == {"type": "api.trigger", "payload": payload or {}}
    else:
        assert wrapped == payload


TOKENS = (ApiToken(token="s3cret-token", scopes=("*",)),)


@given(st.one_of(st.none(), st.text(max_size=60)))
def test_any_authorization_header_authenticates_only_the_real_token(header: str | None) -> None:
    try:
        principal = authenticate(header, TOKENS)
    except AuthError as exc:
        assert exc.status == 401
        return
    assert header is not None and header.startswith("Bearer ")
    assert header[len("Bearer "):].strip() == "s3cret-token"
    assert principal.allows(["anything"])


@given(st.dictionaries(st.sampled_from(["limit", "status", "from", "to", "since", "query",
                                        "plugin"]),
                       st.one_of(st.text(max_size=30), st.sampled_from(["²", "٣", "0", "201"])),
                       max_size=5))
def test_log_query_parameters_parse_or_raise_body_error(args: dict) -> None:
    from ductile.planes.api.logquery import parse_log_filter

    try:
        where = parse_log_filter(args)
    except BodyError as exc:
        assert str(exc)
        return
    assert 1 <= where.limit <= 200
