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

Form bodies (`application/x-www-form-urlencoded`: Slack slash commands and interactive
messages, Twilio, many older senders) cannot be stored verbatim, since the payload column holds
a JSON object. They become `{"form": {field: value}, "raw_body": "<the exact text>"}`: the
fields decoded (a key sent once is a string, a key sent twice or more is a list of strings in
the order sent, an empty value is ""), and the body as it was signed, for a plugin that checks
a signature itself or needs the original order. The fields sit under `form` rather than at the
top so that no field name can collide with `raw_body`. Trigger rules read the same object
(`payload: form.command`).

The content type picks the parser: JSON when it is absent, `application/json` or any
`application/*+json`; a form for `application/x-www-form-urlencoded`; anything else is refused
with 415, so a sender learns what to send instead of getting a job that cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ductile.errors import InputError
from ductile.jsonbody import JsonInputError, json_type, loads
from ductile.store.queue import RawJSON

__all__ = ["FORM", "MAX_FORM_FIELDS", "PayloadError", "RawJSON", "UnsupportedContentType",
           "WebhookBody", "body_kind", "parse_form", "parse_webhook_body", "webhook_payload"]

#: The form content type (its parameters, such as `charset=utf-8`, are ignored: UTF-8 is read).
FORM = "application/x-www-form-urlencoded"
#: Fields a form body may carry: Slack sends about a dozen; the cap bounds the work one body
#: can cause (the body size limit already bounds its bytes).
MAX_FORM_FIELDS = 1000


class PayloadError(InputError):
    """A signed body refused with 400; the message is the JSON `error`."""


class UnsupportedContentType(InputError):
    """A signed body of a content type the gateway cannot read: 415."""


def body_kind(content_type: str | None) -> str:
    """"json" or "form" for a `Content-Type` header value, else UnsupportedContentType.

    No header is read as JSON, as before form bodies were accepted (many senders omit it)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media or media == "application/json" or (
            media.startswith("application/") and media.endswith("+json")):
        return "json"
    if media == FORM:
        return "form"
    raise UnsupportedContentType(
        f"unsupported Content-Type {media!r}: a webhook body must be application/json or "
        f"{FORM}")


def parse_form(body: bytes) -> dict[str, str | list[str]]:
    """The fields of a form body: a key sent once maps to its string, a key sent more often to
    the list of its values in order. PayloadError when the body (or a percent-escape in it) is
    not UTF-8, or it has more than MAX_FORM_FIELDS fields."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"invalid form body: not UTF-8 (byte {exc.start})") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict",
                          max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        raise PayloadError("invalid form body: a percent-escape does not decode as "
                           "UTF-8") from None
    except ValueError:
        raise PayloadError(f"invalid form body: more than {MAX_FORM_FIELDS} fields") from None
    fields: dict[str, str | list[str]] = {}
    for key, value in pairs:
        seen = fields.get(key)
        if seen is None:
            fields[key] = value
        elif isinstance(seen, list):
            seen.append(value)
        else:
            fields[key] = [seen, value]
    return fields


@dataclass(frozen=True)
class WebhookBody:
    """An accepted body: `value` decoded (what the trigger rules read), `payload` what is
    stored: the exact text of a JSON body, or `value` itself for a form body."""

    value: dict[str, Any]
    payload: RawJSON | dict[str, Any]


def webhook_payload(body: bytes, command: str) -> RawJSON | dict[str, Any]:
    """The JSON body as RawJSON (its exact text) when `command` can run it, else PayloadError."""
    return parse_webhook_body(body, command).payload


def parse_webhook_body(body: bytes, command: str, content_type: str | None = None) -> WebhookBody:
    """The body decoded, and what to store, by its content type: PayloadError when it does not
    parse (or a JSON body is not an object), UnsupportedContentType for another type."""
    if body_kind(content_type) == "form":
        form: dict[str, Any] = {"form": parse_form(body), "raw_body": body.decode("utf-8")}
        return WebhookBody(form, form)
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
