"""The webhook body as the job payload: the exact bytes that were signed, stored as JSON text.

Go ductile stores the raw body verbatim as the job payload (a `json.RawMessage`), so the plugin
sees exactly what the sender signed: key order, whitespace, number spellings and `\\u` escapes
are kept. We do the same, with one rule Go left implicit: the body must be JSON (UTF-8, no BOM,
no NaN/Infinity), because the payload column holds JSON and the dispatcher decodes it to build
the `handle` event. A body that is not JSON gets 400 after the signature check, instead of a
job that can only fail at dispatch.

`RawJSON` marks text that the queue must store as it is instead of encoding it again.
"""

from __future__ import annotations

import json
from typing import NoReturn

from ductile.store.queue import RawJSON

__all__ = ["RawJSON", "json_body"]


def json_body(body: bytes) -> RawJSON | None:
    """The body as RawJSON when it is one valid UTF-8 JSON document, else None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        # RecursionError: a deeply nested body ([[[[...]]]]) is refused, not a crash.
        return None
    return RawJSON(text)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")
