"""Protocol v2 envelopes: the request a plugin reads on stdin and the response it writes.

The request keeps the exact key order of the original gateway so plugins that
were written against it, including ones that parse with line-oriented tools, see the same bytes.
The response decoder is strict where the original is (exactly one JSON object, the required
fields, wrong types are errors) and is the only gate between untrusted plugin output and the
queue, so it raises `ProtocolError` and nothing else for any input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ductile.errors import ProtocolError
from ductile.plugin.manifest import quote

PROTOCOL_VERSION = 2
_JSON_WS = " \t\n\r"


@dataclass(frozen=True)
class Event:
    """One event a plugin emitted (routed by the router to the next pipeline steps)."""

    type: str
    payload: dict[str, Any]
    dedupe_key: str | None = None
    event_id: str | None = None
    timestamp: str | None = None
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object; absent optional fields are left out."""
        out: dict[str, Any] = {"type": self.type, "payload": self.payload}
        for key in ("dedupe_key", "source", "timestamp", "event_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class Response:
    """A decoded, validated plugin response."""

    status: str  # "ok" | "error"
    result: str | None = None
    error: str | None = None
    retry: bool | None = None  # only False matters: the failure is permanent
    events: tuple[Event, ...] = ()
    state_updates: dict[str, Any] | None = None
    logs: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --- request -------------------------------------------------------------------------------------


def build_request(
    *,
    job_id: str,
    command: str,
    config: Mapping[str, Any] | None,
    state: Mapping[str, Any] | None,
    payload: Any,
    context: Mapping[str, Any] | None,
    event: Mapping[str, Any] | Event | None,
    deadline_at: datetime,
    secrets: Mapping[str, str] | None = None,
) -> bytes:
    """The request envelope as compact JSON plus a newline, keys in the reference order.

    `payload` is included only when it is a non-empty object and `event` only for `handle`;
    `secrets` only when there are some. A naive `deadline_at` is taken as local time.
    """
    envelope: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "job_id": job_id,
        "command": command,
        "config": dict(config or {}),
    }
    if secrets:
        envelope["secrets"] = dict(secrets)
    envelope["state"] = dict(state or {})
    if isinstance(payload, Mapping) and payload:
        envelope["payload"] = dict(payload)
    envelope["context"] = dict(context or {})
    if command == "handle" and event is not None:
        envelope["event"] = event.to_json() if isinstance(event, Event) else dict(event)
    envelope["deadline_at"] = format_deadline(deadline_at)
    try:
        return _dumps(envelope)
    except ProtocolError as exc:
        raise ProtocolError(f"request for job {job_id} {exc}") from None


def format_deadline(when: datetime) -> str:
    """RFC 3339 to the second with a numeric offset (`Z` for UTC), like Go's time.RFC3339."""
    aware = when if when.tzinfo is not None else when.astimezone()
    text = aware.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# --- response ------------------------------------------------------------------------------------


def decode_response(stdout: bytes) -> Response:
    """Decode a plugin's whole stdout as exactly one protocol v2 response object."""
    data = _parse_one_object(stdout)
    status = _optional(data, "status", str)
    result = _optional(data, "result", str)
    error = _optional(data, "error", str)
    retry = _optional(data, "retry", bool)
    events = tuple(_event(i, item) for i, item in enumerate(_list(data, "events")))
    state_updates = _optional(data, "state_updates", dict)
    logs = tuple(_log(i, item) for i, item in enumerate(_list(data, "logs")))
    if not status:
        raise ProtocolError("response missing required field: status")
    if status not in ("ok", "error"):
        raise ProtocolError(f"invalid status value: {quote(status)} (must be 'ok' or 'error')")
    if status == "error" and not error:
        raise ProtocolError("response has status=error but no error message")
    if status == "ok" and not (result or "").strip():
        raise ProtocolError("response has status=ok but no result message")
    return Response(
        status=status, result=result, error=error, retry=retry, events=events,
        state_updates=state_updates, logs=logs,
    )


def encode_response(response: Response) -> bytes:
    """A response as the JSON a plugin would print (built-in nodes, tests)."""
    out: dict[str, Any] = {"status": response.status}
    if response.result is not None:
        out["result"] = response.result
    if response.error is not None:
        out["error"] = response.error
    if response.retry is not None:
        out["retry"] = response.retry
    if response.events:
        out["events"] = [event.to_json() for event in response.events]
    if response.state_updates is not None:
        out["state_updates"] = response.state_updates
    if response.logs:
        out["logs"] = list(response.logs)
    try:
        return _dumps(out)
    except ProtocolError as exc:
        raise ProtocolError(f"response {exc}") from None


def _dumps(obj: Any) -> bytes:
    """Compact JSON + newline. UTF-8 when possible; lone surrogates force \\u escapes so the
    bytes are always valid UTF-8 and valid JSON."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"is not JSON-serialisable: {exc}") from None
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _parse_one_object(stdout: bytes) -> dict[str, Any]:
    """Exactly one JSON object, surrounded only by JSON whitespace."""
    text = bytes(stdout).decode("utf-8", errors="replace").strip(_JSON_WS)
    if not text:
        raise ProtocolError("plugin produced no output on stdout")
    decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
    try:
        data, end = decoder.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"plugin output is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ProtocolError(f"plugin output is not valid JSON: {reason}") from None
    if end != len(text):
        rest = text[end:].lstrip(_JSON_WS)
        what = "a second JSON value" if rest[:1] in ('{', '[', '"') else "trailing data"
        raise ProtocolError(
            f"plugin output is not valid JSON: {what} follows the first JSON value (stdout must "
            "hold exactly one JSON object; write diagnostics to stderr)"
        )
    if not isinstance(data, dict):
        raise ProtocolError(
            f"plugin output is not valid JSON: response must be a JSON object, got {_kind(data)}"
        )
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_KIND_NAMES = {str: "a string", bool: "a boolean", dict: "an object", list: "an array"}


def _optional(data: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    """`data[key]` when present and of `kind`; None when absent or null; else ProtocolError."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ProtocolError(
            f"response field {where + key!r} must be {_KIND_NAMES[kind]}, got {_kind(value)}"
        )
    return value


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = _optional(data, key, list)
    return value or []


def _event(index: int, item: Any) -> Event:
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise ProtocolError(f"response field {where!r} must be an object, got {_kind(item)}")
    text = {key: _optional(item, key, str, where + ".")
            for key in ("type", "dedupe_key", "event_id", "timestamp", "source")}
    payload = _optional(item, "payload", dict, where + ".")
    return Event(
        type=text["type"] or "",
        payload=payload if payload is not None else {},
        dedupe_key=text["dedupe_key"],
        event_id=text["event_id"],
        timestamp=text["timestamp"],
        source=text["source"],
    )


def _log(index: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ProtocolError(f"response field 'logs[{index}]' must be an object, got {_kind(item)}")
    return item
