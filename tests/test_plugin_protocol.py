"""Protocol v2 request encoding and response decoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ductile.errors import ProtocolError
from ductile.plugin.protocol import (
    Event,
    Response,
    build_request,
    decode_response,
    encode_response,
    format_deadline,
)

DEADLINE = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def request(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "job_id": "job-1",
        "command": "poll",
        "config": {"b": 1, "a": 2},
        "state": {"count": 1},
        "payload": {"x": 1},
        "context": {"ductile_plugin": "echo"},
        "event": None,
        "deadline_at": DEADLINE,
    }
    args.update(overrides)
    raw = build_request(**args)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert b": " not in raw and b", " not in raw  # compact
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


def test_key_order_for_poll() -> None:
    req = request()
    assert list(req) == [
        "protocol", "job_id", "command", "config", "state", "payload", "context", "deadline_at",
    ]
    assert req["protocol"] == 2
    assert list(req["config"]) == ["b", "a"]  # operator order kept
    assert req["deadline_at"] == "2026-03-04T05:06:07Z"


def test_key_order_for_handle_with_secrets() -> None:
    event = {"type": "src.done", "payload": {"k": "v"}, "source": "src", "timestamp": "t"}
    req = request(command="handle", event=event, secrets={"token": "s3cret"})
    assert list(req) == [
        "protocol", "job_id", "command", "config", "secrets", "state", "payload", "context",
        "event", "deadline_at",
    ]
    assert req["event"] == event and req["secrets"] == {"token": "s3cret"}


def test_event_object_and_event_only_for_handle() -> None:
    event = Event(type="t", payload={"a": 1}, dedupe_key="d", event_id="e", timestamp="ts")
    assert request(command="handle", event=event)["event"] == {
        "type": "t", "payload": {"a": 1}, "dedupe_key": "d", "timestamp": "ts", "event_id": "e",
    }
    assert "event" not in request(command="poll", event=event)
    assert "event" not in request(command="handle", event=None)


@pytest.mark.parametrize("payload", [None, {}, [], [1], "text", 3, True])
def test_payload_left_out_unless_a_non_empty_object(payload: Any) -> None:
    assert "payload" not in request(payload=payload)


def test_empty_secrets_and_none_maps() -> None:
    req = request(secrets={}, config=None, state=None, context=None)
    assert "secrets" not in req
    assert (req["config"], req["state"], req["context"]) == ({}, {}, {})


def test_unicode_is_utf8_and_lone_surrogates_stay_valid() -> None:
    raw = build_request(
        job_id="j", command="poll", config={"m": "héllo"}, state={}, payload={"s": "\ud800"},
        context={}, event=None, deadline_at=DEADLINE,
    )
    raw.decode("utf-8")  # always valid UTF-8
    assert json.loads(raw)["payload"]["s"] == "\ud800"
    raw = build_request(
        job_id="j", command="poll", config={"m": "héllo"}, state={}, payload={}, context={},
        event=None, deadline_at=DEADLINE,
    )
    assert "héllo".encode() in raw


def test_unserialisable_request_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="job-9 is not JSON-serialisable"):
        build_request(
            job_id="job-9", command="poll", config={"x": object()}, state={}, payload={},
            context={}, event=None, deadline_at=DEADLINE,
        )
    with pytest.raises(ProtocolError):
        build_request(
            job_id="job-9", command="poll", config={"x": float("nan")}, state={}, payload={},
            context={}, event=None, deadline_at=DEADLINE,
        )


def test_deadline_formats() -> None:
    plus10 = timezone(timedelta(hours=10))
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=plus10)
    assert format_deadline(aware) == "2026-01-02T03:04:05+10:00"
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert format_deadline(naive).startswith("2026-01-02T03:04:05")


# --- responses -----------------------------------------------------------------------------------

DECODE_ERRORS = [
    (b"", "plugin produced no output on stdout"),
    (b" \n\t\r\n", "plugin produced no output on stdout"),
    (b"hello", "plugin output is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (b'{"status":"ok"', "plugin output is not valid JSON: "),
    (b'{"status":"ok","result":"a"}{"status":"ok","result":"b"}',
     "plugin output is not valid JSON: a second JSON value follows the first JSON value"),
    (b'{"status":"ok","result":"a"}\ndone\n',
     "plugin output is not valid JSON: trailing data follows the first JSON value"),
    (b"[1,2]", "plugin output is not valid JSON: response must be a JSON object, got array"),
    (b'{"status":NaN}', "plugin output is not valid JSON: NaN is not valid JSON"),
    (b'{"status":1e999}', "plugin output is not valid JSON: number 1e999 is out of range"),
    (b"{}", "response missing required field: status"),
    (b'{"status":""}', "response missing required field: status"),
    (b'{"status":null,"result":"x"}', "response missing required field: status"),
    (b'{"status":"x"}', "invalid status value: \"x\" (must be 'ok' or 'error')"),
    (b'{"status":"OK","result":"r"}', "invalid status value: \"OK\" (must be 'ok' or 'error')"),
    (b'{"status":"error"}', "response has status=error but no error message"),
    (b'{"status":"error","error":""}', "response has status=error but no error message"),
    (b'{"status":"ok"}', "response has status=ok but no result message"),
    (b'{"status":"ok","result":"  "}', "response has status=ok but no result message"),
    (b'{"status":1}', "response field 'status' must be a string, got number"),
    (b'{"status":"ok","result":{"a":1}}', "response field 'result' must be a string, got object"),
    (b'{"status":"error","error":"e","retry":"no"}',
     "response field 'retry' must be a boolean, got string"),
    (b'{"status":"ok","result":"r","events":{}}',
     "response field 'events' must be an array, got object"),
    (b'{"status":"ok","result":"r","events":[1]}',
     "response field 'events[0]' must be an object, got number"),
    (b'{"status":"ok","result":"r","events":[{"type":5}]}',
     "response field 'events[0].type' must be a string, got number"),
    (b'{"status":"ok","result":"r","events":[{"type":"t","payload":[]}]}',
     "response field 'events[0].payload' must be an object, got array"),
    (b'{"status":"ok","result":"r","state_updates":[]}',
     "response field 'state_updates' must be an object, got array"),
    (b'{"status":"ok","result":"r","state_updates":true}',
     "response field 'state_updates' must be an object, got boolean"),
    (b'{"status":"ok","result":"r","logs":"x"}',
     "response field 'logs' must be an array, got string"),
    (b'{"status":"ok","result":"r","logs":["x"]}',
     "response field 'logs[0]' must be an object, got string"),
]


@pytest.mark.parametrize(("stdout", "message"), DECODE_ERRORS)
def test_decode_errors(stdout: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_response(stdout)
    assert str(info.value).startswith(message), str(info.value)


def test_decode_full_response() -> None:
    stdout = json.dumps(
        {
            "status": "ok",
            "result": "done",
            "events": [
                {"type": "a.b", "payload": {"k": 1}, "dedupe_key": "d", "event_id": "e",
                 "timestamp": "2026-01-01T00:00:00Z", "source": "s"},
                {"type": "c"},
            ],
            "state_updates": {"n": 2},
            "logs": [{"level": "info", "message": "hi"}],
            "unknown": {"ignored": True},
            "ductile_stopwatch_subs": [],
        }
    ).encode()
    r = decode_response(b"\n  " + stdout + b"\n\n")
    assert r.ok and r.result == "done" and r.error is None and r.retry is None
    assert r.events[0] == Event("a.b", {"k": 1}, "d", "e", "2026-01-01T00:00:00Z", "s")
    assert r.events[1] == Event("c", {})
    assert r.state_updates == {"n": 2}
    assert r.logs == ({"level": "info", "message": "hi"},)


def test_decode_error_response_with_retry_false() -> None:
    r = decode_response(b'{"status":"error","error":"boom","retry":false,"result":"partial"}')
    assert (r.status, r.error, r.retry, r.result) == ("error", "boom", False, "partial")
    assert not r.ok
    assert r.events == () and r.state_updates is None


def test_nulls_mean_absent() -> None:
    r = decode_response(
        b'{"status":"ok","result":"r","error":null,"retry":null,"events":null,'
        b'"state_updates":null,"logs":null}'
    )
    assert r == Response(status="ok", result="r")


def test_invalid_utf8_inside_strings_is_replaced() -> None:
    r = decode_response(b'{"status":"ok","result":"caf\xe9"}')
    assert r.result == "caf\ufffd"


def test_encode_round_trip() -> None:
    original = Response(
        status="ok", result="r", retry=True, events=(Event("t", {"a": [1]}, dedupe_key="k"),),
        state_updates={}, logs=({"level": "warn", "message": "m"},),
    )
    assert decode_response(encode_response(original)) == original
