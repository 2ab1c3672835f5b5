"""Request bodies of the API, parsed without the HTTP framework (and fuzzed in
property-tests/test_api_bodies.py).

Every rejection is a `BodyError` whose message names the field and what is allowed; nothing else
escapes, whatever bytes arrive. The JSON itself is read by `ductile.jsonbody.loads`
(UTF-8, at most 64 levels deep, finite numbers, no lone surrogates).

What `payload` may be (docs/api.md, "Payload types"): a JSON object, or absent/null for none.
A protocol v2 request carries the payload as an object and has no place for any other value (the
Go gateway silently dropped one), so a number, string, list or boolean is refused with 400
rather than accepted and lost on its way to the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ductile.errors import InputError
from ductile.jsonbody import JsonInputError, json_type, loads

RUN_FIELDS = ("payload", "command", "sync", "dedupe_key")
MAX_DEDUPE_KEY = 256


class BodyError(InputError):
    """A body the API refuses with 400; the message is the JSON `error`."""


@dataclass(frozen=True)
class RunRequest:
    payload: Any = None
    command: str | None = None
    sync: bool = False
    dedupe_key: str | None = None


def parse_json_object(data: bytes) -> dict[str, Any] | None:
    """An empty body is None; otherwise the body must be one JSON object."""
    if not data or not data.strip():
        return None
    try:
        body = loads(data)
    except JsonInputError as exc:
        raise BodyError(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise BodyError('invalid JSON body: expected an object such as {"payload": {...}}, '
                        f"got {json_type(body)}")
    return body


def parse_run_request(data: bytes) -> RunRequest:
    """`POST /plugins/{name}/run`: `{"payload": ..., "command"?: str, "sync"?: bool}`."""
    body = parse_json_object(data) or {}
    unknown = sorted(set(body) - set(RUN_FIELDS))
    if unknown:
        raise BodyError(f"unknown field(s) in body: {', '.join(unknown)[:200]}; "
                        f"allowed: {', '.join(RUN_FIELDS)}")
    command = body.get("command")
    if command is not None and (not isinstance(command, str) or not command):
        raise BodyError("field command must be a non-empty string")
    sync = body.get("sync", False)
    if not isinstance(sync, bool):
        raise BodyError("field sync must be true or false")
    return RunRequest(payload=body.get("payload"), command=command, sync=sync,
                      dedupe_key=parse_dedupe_key(body))


def parse_enqueue_request(data: bytes) -> RunRequest:
    """`POST /plugin/{plugin}/{command}`: the same body as `POST /plugins/{name}/run`, so the
    two routes answer one body alike (an unknown field is refused, where the Go gateway dropped
    it silently; `sync` is honoured). The route checks that a `command` field, when present,
    names the command of its path."""
    return parse_run_request(data)


def parse_dedupe_key(body: dict[str, Any]) -> str | None:
    """An optional non-blank string: duplicates of an outstanding job, or of a success inside
    `service.dedupe_ttl`, with the same plugin, command and key are not enqueued again."""
    key = body.get("dedupe_key")
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        raise BodyError("field dedupe_key must be a non-empty string")
    if len(key) > MAX_DEDUPE_KEY:
        raise BodyError(f"field dedupe_key must be at most {MAX_DEDUPE_KEY} characters")
    return key.strip()


PLUGIN_PAYLOAD = "(a plugin receives its payload as a JSON object)"


def event_payload(command: str, payload: Any) -> Any:
    """`handle` receives its payload wrapped as an `api.trigger` event (absent or null: `{}`);
    other commands receive it as is (absent or null: no payload). Either way an object."""
    if command != "handle":
        return None if payload is None else object_payload(payload, PLUGIN_PAYLOAD)
    return {"type": "api.trigger",
            "payload": object_payload(payload, "for command handle (it becomes the payload of "
                                               "an api.trigger event)")}


def object_payload(payload: Any, why: str) -> dict[str, Any]:
    """`payload` where an event is built from it: an object; absent or null is `{}`."""
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise BodyError(f"field payload must be a JSON object {why}; got {json_type(payload)}")
    return payload
