"""Fuzz the API's body, header and query parsers: only their own errors ever escape."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.schema import ApiToken
from ductile.planes.api.auth import AuthError, authenticate
from ductile.planes.api.bodies import (
    BodyError,
    event_payload,
    parse_enqueue_request,
    parse_json_object,
    parse_run_request,
)
from ductile.jsonbody import MAX_DEPTH, MAX_NUMBER
from strategies import hostile_json_bytes, json_values


def _assert_carriable(body: dict[str, Any]) -> None:
    """What a parser accepts can be stored and sent on: valid Unicode, numbers within the
    range of a double, at most MAX_DEPTH levels (the body's own object is level 1)."""
    json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            assert level <= MAX_DEPTH
            stack.extend((child, level + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, int) and not isinstance(item, bool):
            assert abs(item) <= MAX_NUMBER


@given(st.one_of(st.binary(max_size=300), hostile_json_bytes()))
def test_arbitrary_bytes_either_parse_or_raise_body_error(data: bytes) -> None:
    for parse in (parse_run_request, parse_enqueue_request):
        try:
            run = parse(data)
        except BodyError as exc:
            assert str(exc)
            continue
        assert isinstance(run.sync, bool)
    try:
        body = parse_json_object(data)
    except BodyError as exc:
        assert str(exc).startswith("invalid JSON body")
        return
    if body is not None:
        _assert_carriable(body)


@given(hostile_json_bytes())
def test_hostile_json_is_refused_naming_the_problem(data: bytes) -> None:
    try:
        body = parse_json_object(data)
    except BodyError as exc:
        message = str(exc)
        assert message.startswith("invalid JSON body: ")
        assert any(reason in message for reason in (
            "lone surrogate", "out-of-range number", "which is not JSON", "levels deep",
            "expected an object", "Expecting", "Extra data"))
        return
    assert body is not None
    _assert_carriable(body)


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
    except BodyError as exc:
        assert payload is not None and not isinstance(payload, dict)
        assert str(exc).startswith("field payload must be a JSON object")
        return
    assert payload is None or isinstance(payload, dict)
    if command == "handle":
        assert wrapped == {"type": "api.trigger", "payload": payload or {}}
    else:
        assert wrapped == payload


TOKENS = (ApiToken(token="s3cret-token", scopes=("*",)),)


@given(st.one_of(st.none(), st.text(max_size=60),
                 st.tuples(st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR", "Basic"]),
                           st.sampled_from([" ", "  ", "", "\t"]),
                           st.sampled_from(["s3cret-token", " s3cret-token ", "x", ""])
                           ).map("".join)))
def test_any_authorization_header_authenticates_only_the_real_token(header: str | None) -> None:
    try:
        principal = authenticate(header, TOKENS)
    except AuthError as exc:
        assert exc.status == 401
        return
    assert header is not None
    scheme, _, token = header.partition(" ")
    assert scheme.lower() == "bearer"
    assert token.strip() == "s3cret-token"
    assert principal.allows(["anything"])


@given(st.dictionaries(st.sampled_from(["limit", "status", "from", "to", "since", "until",
                                        "query", "plugin"]),
                       st.one_of(st.text(max_size=30),
                                 st.sampled_from(["²", "٣", "0", "201", "9" * 5000, "007",
                                                  "9999-12-31T23:59:59-23:59",
                                                  "0001-01-01T00:00:00+23:59",
                                                  "0500-01-01T00:00:00Z", "1" + "0" * 400 + "d",
                                                  "99999999999d", "-99999999999d", "1h"])),
                       max_size=5))
def test_log_query_parameters_parse_or_raise_body_error(args: dict) -> None:
    from ductile.planes.api.logquery import parse_log_filter

    try:
        where = parse_log_filter(args)
    except BodyError as exc:
        assert str(exc)
        return
    assert 1 <= where.limit <= 200
    for bound in (where.since, where.until):
        assert bound is None or (len(bound) == 27 and bound.endswith("Z"))


@given(st.one_of(st.binary(max_size=300), hostile_json_bytes(),
                 st.dictionaries(st.sampled_from(["payload", "command", "sync", "dedupe_key",
                                                  "other"]), json_values, max_size=5)
                 .map(lambda body: json.dumps(body).encode())))
def test_both_run_routes_answer_one_body_alike(data: bytes) -> None:
    """POST /plugin/{plugin}/{command} and POST /plugins/{name}/run accept exactly the same
    bodies, with the same meaning, and refuse the rest with the same message."""
    outcomes = []
    for parse in (parse_run_request, parse_enqueue_request):
        try:
            outcomes.append(("ok", parse(data)))
        except BodyError as exc:
            outcomes.append(("refused", str(exc)))
    assert outcomes[0] == outcomes[1]
