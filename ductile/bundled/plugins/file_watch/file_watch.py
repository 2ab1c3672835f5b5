"""Bundled file_watch plugin (protocol v2): report files that were created, modified or deleted.

Each `poll` looks at every entry of `config.watches` (id, path, event_type, and optionally
strategy, emit_initial, emit_deleted, min_stable_age), compares it with what the previous poll
saw, and emits one event per change. What the previous poll saw travels in the protocol: it
arrives in `request.state` and the new snapshot leaves in `state_updates`
(`{"watches": {id: entry}, "last_poll_at": ...}`); the manifest's `fact_outputs` rule records
every snapshot as a `file_watch.snapshot` fact and mirrors it as the plugin state, so the plugin
itself keeps no files. Two polls running at once would both compare against the same old
snapshot and report one change twice, hence `concurrency_safe: false`.

Change rules, per watch:
  - first poll (no entry in state): remember the file silently, or emit `created` with
    `emit_initial: true`;
  - missing before, present now: `created`; present before, fingerprint differs: `modified`;
  - present before, missing now: `deleted` (unless `emit_deleted: false`);
  - a file younger than `min_stable_age` (a duration: 30s, 1m30s, 2h, 1d) is left for a later
    poll, so a file still being written is not reported half-written;
  - changing a watch's path or strategy starts it afresh instead of reporting a change.

Each event's dedupe_key names the watch, the fingerprint and the file's mtime, so the gateway
drops a change reported twice (a poll whose snapshot was lost) but not a file that returns to
earlier content later the same day (the original keyed on the fingerprint alone).

Stdlib only (hashlib, json, os, re, stat, sys, time), so a poll costs one interpreter start.
"""

import hashlib
import json
import os
import re
import stat
import sys
import time
from datetime import datetime, timezone

STRATEGIES = ("sha256", "mtime_size")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                 "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_HASH_CHUNK = 1024 * 1024


class ConfigProblem(Exception):
    """config.watches is malformed; the message lists every problem."""


def main():
    try:
        req = json.loads(sys.stdin.buffer.read() or b"{}")
    except ValueError as exc:
        respond(error("file_watch: request is not JSON: " + str(exc)))
    if not isinstance(req, dict):
        respond(error("file_watch: request must be a JSON object"))
    command = str(req.get("command") or "").strip()
    if command not in ("poll", "health"):
        respond(error(f"file_watch: unsupported command {command!r} (supported: poll, health)"))
    config = req.get("config")
    config = {} if config is None else config
    state = req.get("state")
    state = state if isinstance(state, dict) else {}
    try:
        if not isinstance(config, dict):
            raise ConfigProblem("request.config must be an object")
        watches = parse_watches(config.get("watches"))
    except ConfigProblem as exc:
        respond(error("file_watch: invalid config: " + str(exc)))
    respond(poll(watches, state) if command == "poll" else health(watches))


def respond(response):
    sys.stdout.write(json.dumps(response))
    sys.stdout.flush()
    sys.exit(0)


def error(message, logs=None):
    return {"status": "error", "error": message, "retry": False,
            "logs": logs or [{"level": "error", "message": message}]}


def now_iso():
    return datetime.now(timezone.utc).isoformat()


# --- config --------------------------------------------------------------------------------------


def parse_watches(raw):
    """The validated watch list; every problem in the list is reported in one message."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigProblem("config.watches must be a list of {id, path, event_type} entries")
    watches, problems, seen = [], [], set()
    for index, item in enumerate(raw):
        try:
            watch = parse_watch(item, f"config.watches[{index}]")
        except ConfigProblem as exc:
            problems.append(str(exc))
            continue
        if watch["id"] in seen:
            problems.append(f"config.watches[{index}].id {watch['id']!r} is used twice")
            continue
        seen.add(watch["id"])
        watches.append(watch)
    if problems:
        raise ConfigProblem("; ".join(problems))
    return watches


def parse_watch(item, where):
    if not isinstance(item, dict):
        raise ConfigProblem(f"{where} must be a mapping with id, path and event_type")
    fields = {}
    for key in ("id", "path", "event_type"):
        value = item.get(key)
        if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
            raise ConfigProblem(f"{where}.{key} is required")
        fields[key] = str(value).strip()
    strategy = item.get("strategy", "sha256")
    strategy = strategy.strip().lower() if isinstance(strategy, str) else strategy
    if strategy not in STRATEGIES:
        raise ConfigProblem(f"{where}.strategy must be one of {', '.join(STRATEGIES)}")
    return {
        "id": fields["id"],
        "path": os.path.realpath(os.path.expanduser(fields["path"])),
        "event_type": fields["event_type"],
        "strategy": strategy,
        "emit_initial": parse_bool(item.get("emit_initial"), False, f"{where}.emit_initial"),
        "emit_deleted": parse_bool(item.get("emit_deleted"), True, f"{where}.emit_deleted"),
        "min_stable_age": parse_duration(item.get("min_stable_age"), f"{where}.min_stable_age"),
    }


def parse_bool(value, default, where):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigProblem(f"{where} must be true or false")


def parse_duration(value, where):
    """Seconds from a number or a Go-style duration ("500ms", "1m30s", plus "d" and "w")."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        if text and _DURATION_PART.sub("", text) == "":
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    raise ConfigProblem(f"{where} must be a duration such as 30s, 5m or 1h (got {value!r})")


# --- poll ----------------------------------------------------------------------------------------


def poll(watches, state):
    previous_all = state.get("watches")
    previous_all = previous_all if isinstance(previous_all, dict) else {}
    snapshot, events, logs = {}, [], []
    now = time.time()
    for watch in watches:
        previous = previous_all.get(watch["id"])
        previous = previous if isinstance(previous, dict) else None
        if previous is not None and not same_target(previous, watch):
            logs.append(info(f"{watch['id']}: path or strategy changed; starting afresh"))
            previous = None
        entry, change, note = observe(watch, previous, now)
        if note:
            logs.append(note)
        if entry is not None:
            snapshot[watch["id"]] = entry
        if change:
            events.append(change_event(watch, change, entry, previous))
            logs.append(info(f"{watch['id']}: detected {change}"))
    summary = f"file_watch poll complete: watches={len(watches)} events={len(events)}"
    logs.append(info(summary))
    response = {"status": "ok", "result": summary, "logs": logs,
                "state_updates": {"watches": snapshot, "last_poll_at": now_iso()}}
    if events:
        response["events"] = events
    return response


def same_target(previous, watch):
    """A snapshot entry describes this watch unless its recorded path or strategy differ."""
    path, strategy = previous.get("path"), previous.get("strategy")
    if isinstance(path, str) and path != watch["path"]:
        return False
    return not (previous.get("exists") and isinstance(strategy, str)
                and strategy != watch["strategy"])


def observe(watch, previous, now):
    """(new snapshot entry, change type or None, a log entry or None) for one watch.

    When the file cannot be judged this poll (unstable, unreadable) the previous entry is kept,
    so the change is reported by a later poll instead of being lost.
    """
    path = watch["path"]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return previous, None, warn(f"{watch['id']}: cannot stat {path}: {exc.strerror}")
    if st is None or not stat.S_ISREG(st.st_mode):
        was_there = bool(previous and previous.get("exists"))
        entry = {"exists": False, "path": path, "updated_at": now_iso()}
        return entry, ("deleted" if was_there and watch["emit_deleted"] else None), None
    age = now - st.st_mtime
    if watch["min_stable_age"] > 0 and age < watch["min_stable_age"]:
        note = info(f"{watch['id']}: file not stable yet ({age:.3f}s < "
                    f"{watch['min_stable_age']:.3f}s)")
        return previous, None, note
    try:
        fingerprint = fingerprint_of(path, st, watch["strategy"])
    except OSError as exc:
        return previous, None, warn(f"{watch['id']}: cannot read {path}: {exc.strerror}")
    entry = {"exists": True, "fingerprint": fingerprint, "size": st.st_size,
             "mtime_ns": st.st_mtime_ns, "path": path, "strategy": watch["strategy"],
             "updated_at": now_iso()}
    if previous is None:
        return entry, ("created" if watch["emit_initial"] else None), None
    if not previous.get("exists"):
        return entry, "created", None
    if previous.get("fingerprint") != fingerprint:
        return entry, "modified", None
    return entry, None, None


def fingerprint_of(path, st, strategy):
    if strategy == "mtime_size":
        return f"{st.st_mtime_ns}:{st.st_size}"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def change_event(watch, change, entry, previous):
    payload = {"watch_id": watch["id"], "path": watch["path"], "change_type": change,
               "changed_at": now_iso()}
    if change == "deleted":
        before = previous.get("fingerprint") if previous else ""
        before = before if isinstance(before, str) else ""
        payload["previous_fingerprint"] = before
        mtime = previous.get("mtime_ns", "") if previous else ""
        dedupe = f"file_watch:{watch['id']}:deleted:{before}:{mtime}"
    else:
        payload.update(fingerprint=entry["fingerprint"], size=entry["size"],
                       mtime_ns=entry["mtime_ns"])
        if previous and isinstance(previous.get("fingerprint"), str):
            payload["previous_fingerprint"] = previous["fingerprint"]
        dedupe = f"file_watch:{watch['id']}:{entry['fingerprint']}:{entry['mtime_ns']}"
    return {"type": watch["event_type"], "payload": payload, "dedupe_key": dedupe}


def info(message):
    return {"level": "info", "message": message}


def warn(message):
    return {"level": "warn", "message": message}


# --- health --------------------------------------------------------------------------------------


def health(watches):
    problems = []
    for watch in watches:
        path = watch["path"]
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            problems.append(f"{watch['id']}: directory {parent} does not exist")
        elif os.path.isdir(path):
            problems.append(f"{watch['id']}: {path} is a directory; file_watch watches files")
        elif os.path.exists(path) and not os.access(path, os.R_OK):
            problems.append(f"{watch['id']}: {path} exists but is not readable")
    if problems:
        return error("file_watch: health check failed: " + "; ".join(problems))
    result = f"file_watch health OK (watches={len(watches)})"
    return {"status": "ok", "result": result, "logs": [info(result)]}


if __name__ == "__main__":
    main()
