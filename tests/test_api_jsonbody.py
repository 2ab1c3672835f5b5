"""The strict JSON reader shared by every HTTP plane, and the API's query parsers (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ductile.planes.api.bodies import BodyError, parse_json_object, parse_run_request
from ductile.planes.api.logquery import int_param, parse_log_filter
from ductile.planes.api.pipelines import parse_pipeline_request
from ductile.jsonbody import (
    MAX_DEPTH,
    JsonInputError,
    JsonSyntaxError,
    format_path,
    loads,
    nesting_depth,
)


def nested(levels: int, leaf: str = "1") -> bytes:
    return ('{"a":' * levels + leaf + "}" * levels).encode()


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"payload": "\\ud800"}',
     "field payload contains a lone surrogate \\ud800, which is not valid Unicode"),
    (b'{"payload": {"x": ["ok", "a\\uDFFFb"]}}',
     "field payload.x[1] contains a lone surrogate \\udfff, which is not valid Unicode"),
    (b'{"payload": {"\\ud800": 1}}',
     "field payload has a key that contains a lone surrogate \\ud800, which is not valid "
     "Unicode"),
    (b'{"payload": {"n": 1e999}}',
     "field payload.n holds the out-of-range number 1e999; numbers must be finite, at most "
     "1.7976931348623157e+308 in magnitude"),
    (b'{"payload": [-1e999]}', "field payload[0] holds the out-of-range number -1e999"),
    (b'{"payload": NaN}', "field payload holds NaN, which is not JSON; numbers must be finite"),
    (b'{"a b": {"c": -Infinity}}', 'field ["a b"].c holds -Infinity, which is not JSON'),
    (b'{"n": 1' + b"0" * 5000 + b"}",
     "field n holds the out-of-range number 1000000000000000000000000000000000000000... "
     "(5001 characters)"),
    (b"\xff{}", "the body is not UTF-8 (invalid byte at offset 0)"),
    (nested(65), "the body nests objects/arrays 65 levels deep; at most 64 levels are allowed"),
    (nested(950), "the body nests objects/arrays 950 levels deep; at most 64"),
])
def test_refusals_name_the_field_and_what_is_allowed(raw: bytes, message: str) -> None:
    with pytest.raises(JsonInputError) as caught:
        loads(raw)
    assert message in str(caught.value)


def test_what_is_accepted() -> None:
    assert loads(b'"\\ud83d\\ude00"') == "\U0001F600"  # a surrogate pair is one character
    assert loads(nested(MAX_DEPTH - 1, "[]"))  # 64 levels exactly
    assert loads(b"1.7976931348623157e308") == 1.7976931348623157e308
    assert loads(b"-" + str(int(1.7976931348623157e308)).encode()) < 0
    assert loads(b"1e-999") == 0.0  # underflow is a finite number
    assert loads(b'{"s": "[[[[{{{{"}') == {"s": "[[[[{{{{"}


def test_syntax_errors_are_their_own_subclass() -> None:
    with pytest.raises(JsonSyntaxError, match="Expecting"):
        loads(b"{not json")
    with pytest.raises(JsonSyntaxError):
        loads(b"\xef\xbb\xbf{}")  # a byte-order mark


@pytest.mark.parametrize(("raw", "depth"), [
    (b"", 0), (b"1", 0), (b"[]", 1), (b'[[], {"a": [1]}]', 3), (b'["[[[", "\\"[["]', 1),
    (b"[" * 100_000, 100_000),
])
def test_nesting_depth_ignores_brackets_inside_strings(raw: bytes, depth: int) -> None:
    assert nesting_depth(raw) == depth


def test_value_free_messages_keep_the_path_and_drop_the_value() -> None:
    with pytest.raises(JsonInputError) as caught:
        loads(b'{"value": "secret\\udc00"}')
    assert caught.value.message(show_values=False) == (
        "field value contains a lone surrogate, which is not valid Unicode")


def test_paths_are_ascii_safe_and_short() -> None:
    assert format_path(("payload", "items", 2, "n")) == "payload.items[2].n"
    assert format_path(("x" * 100,)).startswith('["xxxx')
    assert "(100 characters)" in format_path(("x" * 100,))


def test_api_bodies_prefix_the_json_problem() -> None:
    with pytest.raises(BodyError, match=r"^invalid JSON body: field payload contains a lone "):
        parse_run_request(b'{"payload": "\\ud800"}')
    with pytest.raises(BodyError, match="got an array"):
        parse_json_object(b"[1]")


@pytest.mark.parametrize(("body", "message"), [
    (b'{"payload": [1]}', "field payload must be a JSON object (it becomes the payload of the "
                          "pipeline's trigger event); got an array"),
    (b'{"payload": 3}', "got a number"),
    (b'{"baggage": "x"}', "field baggage must be a JSON object (root baggage for the run); "
                          "got a string"),
    (b'{"baggage": {"ductile_plugin": "x"}}', "field baggage: key 'ductile_plugin' is reserved"),
    (b'{"baggage": {"ductile.route_depth": 0}}', "key 'ductile.route_depth' is reserved"),
    (b'{"baggage": {"ductile": {}}}', "key 'ductile' is reserved"),
    (b'{"baggage": ' + nested(64) + b"}", "at most 64 levels"),
])
def test_pipeline_bodies(body: bytes, message: str) -> None:
    with pytest.raises(BodyError) as caught:
        parse_pipeline_request(body)
    assert message in str(caught.value)


def test_pipeline_baggage_may_use_names_that_only_look_reserved() -> None:
    parsed = parse_pipeline_request(b'{"baggage": {"ductiles": 1, "x": {"ductile_a": 2}}}')
    assert parsed.baggage == {"ductiles": 1, "x": {"ductile_a": 2}}
    assert parse_pipeline_request(b'{"payload": null}').payload == {}


@pytest.mark.parametrize(("text", "message"), [
    ("0", "limit must be an integer from 1 to 200, got '0'"),
    ("201", "limit must be an integer from 1 to 200, got '201'"),
    ("abc", "limit must be an integer from 1 to 200, got 'abc'"),
    ("-1", "limit must be an integer from 1 to 200"),
    ("1.5", "limit must be an integer from 1 to 200"),
    ("٣", "limit must be an integer from 1 to 200"),  # digits, but not ASCII ones
    ("9" * 5000, "limit must be an integer from 1 to 200, got '9999"),
])
def test_integer_query_parameters_name_their_range(text: str, message: str) -> None:
    with pytest.raises(BodyError) as caught:
        int_param({"limit": text}, "limit", 50, 1, 200)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 200


def test_integer_query_parameters_accept_their_range() -> None:
    assert int_param({}, "limit", 50, 1, 200) == 50
    assert int_param({"limit": ""}, "limit", 50, 1, 200) == 50
    assert int_param({"limit": "007"}, "limit", 50, 1, 200) == 7
    assert int_param({"limit": "200"}, "limit", 50, 1, 200) == 200


NOW = datetime(2026, 1, 2, 15, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(("args", "message"), [
    ({"from": "9999-12-31T23:59:59-23:59"},
     "from timestamp 9999-12-31T23:59:59-23:59 is out of range: it must lie in "
     "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z once converted to UTC"),
    ({"since": "0001-01-01T00:00:00+01:00"}, "since timestamp 0001-01-01T00:00:00+01:00 is out"),
    ({"to": "9999-12-31T23:59:59-00:01"}, "to timestamp"),
    ({"until": "0001-01-01T00:30:00+01:00"}, "until timestamp"),
    ({"from": "99999999999d"}, "from duration 99999999999d reaches outside 0001-01-01T00:00:00Z"),
    ({"until": "-99999999999d"}, "until duration -99999999999d reaches outside"),
    ({"from": "1" + "0" * 400 + "s"}, "from duration 1000"),
    ({"from": "nope"}, "invalid from timestamp: use RFC 3339"),
])
def test_date_parameters_out_of_range_name_the_parameter(args: dict, message: str) -> None:
    with pytest.raises(BodyError) as caught:
        parse_log_filter(args, now=NOW)
    assert message in str(caught.value)


def test_date_parameters_at_the_edges() -> None:
    where = parse_log_filter({"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
                             now=NOW)
    assert (where.since, where.until) == ("0001-01-01T00:00:00.000000Z",
                                          "9999-12-31T23:59:59.000000Z")
    assert parse_log_filter({"since": "1h"}, now=NOW).since == "2026-01-02T14:04:05.000000Z"
    assert parse_log_filter({"from": "2026-01-02T16:04:05+01:00"}, now=NOW).since == (
        "2026-01-02T15:04:05.000000Z")
