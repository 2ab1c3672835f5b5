"""The webhook body as the job payload: the exact bytes that were signed, stored as JSON text.

Go ductile stores the raw body verbatim as the job payload (a `json.RawMessage`), so the plugin
sees exactly what the sender signed: key order, whitespace, number spellings and `\\u` escapes
are kept. We do the same, with one rule Go left implicit: the body must be JSON the gateway can
carry to the plugin, because the payload column holds JSON and the dispatcher decodes it to
build the request. The body is checked as every API body is (`ductile.jsonbody`): UTF-8
without a byte-order mark, at most 64 levels of nesting, finite numbers (no NaN, Infinity,
1e999), no lone surrogate escapes. And where the command is `handle`, the body becomes the
event's payload, so it must be an object. A body that breaks a rule gets 400 after the signature
check, instead of a job that can only fail (or lose its content) at dispatch.

`RawJSON` marks text that the queue must store as it is instead of encoding it again.
`parse_webhook_body` also returns the decoded value, for the endpoint's trigger rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ductile.errors import InputError
from ductile.jsonbody import JsonInputError, json_type, loads
from ductile.store.queue import RawJSON

__all__ = ["PayloadError", "RawJSON", "WebhookBody", "parse_webhook_body", "webhook_payload"]


class PayloadError(InputError):
    """A signed body refused with 400; the message is the JSON `error`."""


@dataclass(frozen=True)
class WebhookBody:
    """An accepted body: `value` decoded (what the trigger rules read), `payload` the exact
    text that is stored."""

    value: dict[str, Any]
    payload: RawJSON


def webhook_payload(body: bytes, command: str) -> RawJSON:
    """The body as RawJSON (its exact text) when `command` can run it, else PayloadError."""
    return parse_webhook_body(body, command).payload


def parse_webhook_body(body: bytes, command: str) -> WebhookBody:
    """The body decoded and as RawJSON when `command` can run it, else PayloadError."""
    try:
        value = loads(body)
    except JsonInputError as exc:
        raise PayloadError(f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):
        why = ("for command handle (it becomes the event's payload)" if command == "handle"
               else "(a plugin receives its payload as a JSON object)")
        raise PayloadError(f"invalid JSON body: the body must be a JSON object {why}; got "
                           f"{json_type(value)}")
    return WebhookBody(value, RawJSON(body.decode("utf-8")))
