"""Bundled switch plugin (protocol v2): the legacy classifier of the original gateway.

`handle` reads one field of the incoming event (`config.field`), walks `config.checks` in order
and re-emits the event's payload, unchanged, as the `emit` type of the first check that matches.
Each check holds exactly one condition:

  contains / startswith / endswith / equals   case-insensitive text comparison
  regex                                       Python `re.fullmatch`, case-sensitive
  default                                     always matches (put it last)

No match and no `default` is a permanent error (`retry: false`), as is any config problem; the
whole config is validated before the first check runs, so a bad regex in check 3 fails even when
check 1 would have matched. pipelines' built-in `if:` (core.switch) is the newer way to branch;
this plugin exists so configs that route on `switch` keep working.

Field values are compared as text: strings as they are, null as "", true/false as "true"/"false",
whole floats without the ".0" (so a YAML `equals: 1` matches a JSON 1.0), objects and lists as
compact JSON. The condition values in config go through the same conversion.
"""

import json
import re
import sys

CONDITIONS = ("contains", "startswith", "endswith", "equals", "regex", "default")


class ConfigProblem(Exception):
    """config.field or config.checks is missing or malformed."""


def main():
    try:
        req = json.loads(sys.stdin.buffer.read() or b"{}")
    except ValueError as exc:
        respond(error("switch: request is not JSON: " + str(exc)))
    if not isinstance(req, dict):
        respond(error("switch: request must be a JSON object"))
    command = str(req.get("command") or "").strip()
    config = req.get("config")
    config = {} if config is None else config
    if command not in ("handle", "health"):
        respond(error(f"switch: unsupported command {command!r} (supported: handle, health)"))
    try:
        if not isinstance(config, dict):
            raise ConfigProblem("request.config must be an object")
        field, checks = parse_config(config)
    except ConfigProblem as exc:
        respond(error("switch: " + str(exc)))
    if command == "health":
        respond(ok("config ok"))
    event = req.get("event")
    respond(classify(field, checks, event if isinstance(event, dict) else {}))


def respond(response):
    sys.stdout.write(json.dumps(response))
    sys.stdout.flush()
    sys.exit(0)


def ok(result, events=None):
    out = {"status": "ok", "result": result, "logs": [{"level": "info", "message": result}]}
    if events:
        out["events"] = events
    return out


def error(message):
    return {"status": "error", "error": message, "retry": False,
            "logs": [{"level": "error", "message": message}]}


# --- config --------------------------------------------------------------------------------------


def parse_config(config):
    """(field, [(condition, compiled value, emit type), ...]); every problem is reported at once."""
    problems = []
    field = config.get("field")
    if not isinstance(field, str) or not field.strip():
        problems.append("config.field is required (for example payload.status)")
    checks = config.get("checks")
    parsed = []
    if not isinstance(checks, list) or not checks:
        problems.append("config.checks must be a non-empty list")
        checks = []
    for index, check in enumerate(checks, start=1):
        try:
            parsed.append(parse_check(check))
        except ConfigProblem as exc:
            problems.append(f"config.checks #{index}: {exc}")
    if problems:
        raise ConfigProblem("; ".join(problems))
    return field.strip(), parsed


def parse_check(check):
    if not isinstance(check, dict):
        raise ConfigProblem("must be a mapping such as {equals: done, emit: job.done}")
    kinds = [kind for kind in CONDITIONS if kind in check]
    if len(kinds) != 1:
        raise ConfigProblem(
            "must hold exactly one condition of " + ", ".join(CONDITIONS)
            + (f" (found {', '.join(kinds)})" if kinds else "")
        )
    kind = kinds[0]
    emit = check.get("emit")
    if kind == "default" and emit is None:
        emit = check.get("default")  # the short form `- default: some.event`
    if not isinstance(emit, str) or not emit.strip():
        raise ConfigProblem(f"{kind} needs an `emit` event type")
    if kind == "default":
        return kind, None, emit.strip()
    value = check.get(kind)
    if value is None or as_text(value).strip() == "":
        raise ConfigProblem(f"{kind} needs a value")
    if kind == "regex":
        try:
            return kind, re.compile(as_text(value)), emit.strip()
        except re.error as exc:
            raise ConfigProblem(f"invalid regex {as_text(value)!r}: {exc}") from None
    return kind, as_text(value).casefold(), emit.strip()


# --- classification ------------------------------------------------------------------------------


def classify(field, checks, event):
    payload = event.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    text = field_value(event, payload, field)
    for kind, value, emit in checks:
        if matches(kind, value, text):
            out = {"type": emit, "payload": payload}
            dedupe = event.get("dedupe_key")
            if isinstance(dedupe, str) and dedupe:
                # Scoped by the emitted type, so two classifications of one source event
                # do not collide downstream and have one silently dropped.
                out["dedupe_key"] = f"{dedupe}:{emit}"
            return ok(f"matched {kind} -> {emit}", [out])
    return error(f"switch: no check matched {field} = {text[:200]!r} and no default is configured")


def field_value(event, payload, field):
    """`payload.a.b` or a bare `a.b` reads the event payload, `event.x` the event itself;
    `payload` and `event` alone give the whole object. A missing path reads as ""."""
    if field == "event":
        return as_text(event)
    if field == "payload":
        return as_text(payload)
    head, _, rest = field.partition(".")
    if head == "event":
        value, path = event, rest
    elif head == "payload":
        value, path = payload, rest
    else:
        value, path = payload, field
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    return as_text(value)


def matches(kind, value, text):
    if kind == "default":
        return True
    if kind == "regex":
        return value.fullmatch(text) is not None
    folded = text.casefold()
    if kind == "contains":
        return value in folded
    if kind == "startswith":
        return folded.startswith(value)
    if kind == "endswith":
        return folded.endswith(value)
    return folded == value


def as_text(value):
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


if __name__ == "__main__":
    main()
