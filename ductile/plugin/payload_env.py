"""The job's payload as environment variables, for plugins whose manifest says `payload_env:
true` (thin wrappers around a command, as the original's sys_exec is).

Every top-level key becomes `DUCTILE_PAYLOAD_<KEY>`: upper-cased, each run of other characters
one `_`, no `_` at either end, `VALUE` when nothing is left, `_` before a leading digit; a name
two keys share gets `_2`, `_3`, ... in payload order. Strings pass verbatim, null as empty,
anything else as compact JSON. `DUCTILE_JOB_ID`, `DUCTILE_COMMAND` and `DUCTILE_EVENT_TYPE`
come with them. The bundled sys_exec plugin applies the same rules for its own child command
(it is stdlib-only and keeps its own copy).

Values never reach an argument list, and secrets never travel this way: they stay in the
request's `secrets`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ductile.errors import ValueProblem

PREFIX = "DUCTILE_PAYLOAD_"
_NOT_KEY_CHAR = re.compile(r"[^A-Z0-9_]+")
_RUNS = re.compile(r"_+")


class PayloadEnvError(ValueProblem):
    """A payload value cannot be an environment variable (it holds a NUL byte)."""


def variable_name(key: Any) -> str:
    name = _RUNS.sub("_", _NOT_KEY_CHAR.sub("_", str(key).strip().upper())).strip("_")
    if not name:
        name = "VALUE"
    if name[0].isdigit():
        name = "_" + name
    return PREFIX + name


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def payload_environment(payload: Mapping[str, Any], *, job_id: str, command: str,
                        event_type: str = "") -> dict[str, str]:
    """The variables for one job. Raises PayloadEnvError naming the key that cannot pass."""
    out: dict[str, str] = {}
    for key, value in payload.items():
        base = name = variable_name(key)
        n = 1
        while name in out:
            n += 1
            name = f"{base}_{n}"
        text = text_of(value)
        if "\0" in text:
            raise PayloadEnvError(f"payload key {key!r} holds a NUL byte and cannot be passed "
                                  "in the environment (the manifest asks for payload_env)")
        out[name] = text
    out["DUCTILE_JOB_ID"] = job_id
    out["DUCTILE_COMMAND"] = command
    out["DUCTILE_EVENT_TYPE"] = event_type
    return out
