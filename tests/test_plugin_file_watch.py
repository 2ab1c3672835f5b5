"""The bundled file_watch plugin end to end: discover it, build real protocol v2 poll requests,
spawn the real plugin process against real files, decode its responses.

Between polls the tests carry `state_updates` into the next request's `state`, which is what the
gateway does with the manifest's `mirror_object` fact rule.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.plugins import bundled_root

from ductile.plugin.discovery import Plugin, discover
from ductile.plugin.manifest import FactOutput
from ductile.plugin.protocol import Response, build_request, decode_response
from ductile.plugin.spawn import child_env, spawn_plugin


@pytest.fixture(scope="module")
def file_watch() -> Plugin:
    return discover([str(bundled_root())], allow_symlinks=False).plugins["file_watch"]


async def respond(plugin: Plugin, config: Any, state: dict[str, Any] | None = None,
                  command: str = "poll") -> Response:
    """Spawn once; the plugin must exit 0 and say nothing on stderr (no traceback)."""
    request = build_request(
        job_id="job-1", command=command, config=config, state=state or {}, payload=None,
        context={"ductile_plugin": plugin.name}, event=None,
        deadline_at=datetime.now(UTC) + timedelta(seconds=10),
    )
    result = await spawn_plugin(plugin.entrypoint, request, timeout=10, env=child_env())
    assert (result.exit_code, result.stderr) == (0, b""), result
    return decode_response(result.stdout)


class Watcher:
    """Polls one config repeatedly, feeding each snapshot into the next poll like the gateway."""

    def __init__(self, plugin: Plugin, watches: list[dict[str, Any]]) -> None:
        self.plugin = plugin
        self.config = {"watches": watches}
        self.state: dict[str, Any] = {}

    async def poll(self) -> Response:
        r = await respond(self.plugin, self.config, self.state)
        assert r.ok and r.state_updates is not None
        self.state = r.state_updates
        return r


def changes(r: Response) -> list[tuple[str, str, str]]:
    return [(e.type, e.payload["watch_id"], e.payload["change_type"]) for e in r.events]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def age(path: Path, seconds: float) -> None:
    """Give `path` an mtime `seconds` in the past (a distinct mtime without sleeping)."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_manifest_declares_facts_and_no_concurrency(file_watch: Plugin) -> None:
    manifest = file_watch.manifest
    assert manifest.concurrency_safe is False
    assert [(c.name, c.type) for c in manifest.commands] == [("poll", "write"),
                                                              ("health", "read")]
    assert manifest.fact_outputs == (
        FactOutput(command="poll", source="state_updates", fact_type="file_watch.snapshot",
                   compatibility_view="mirror_object"),
    )
    assert manifest.config_keys == {"required": (), "optional": ("watches",)}


async def test_created_modified_deleted_created(file_watch: Plugin, tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    watcher = Watcher(file_watch, [{"id": "notes", "path": str(target),
                                    "event_type": "notes.changed"}])
    r = await watcher.poll()  # nothing there yet: remembered as absent
    assert r.events == () and r.result == "file_watch poll complete: watches=1 events=0"
    assert watcher.state["watches"]["notes"]["exists"] is False

    target.write_text("one")
    r = await watcher.poll()
    assert changes(r) == [("notes.changed", "notes", "created")]
    payload = r.events[0].payload
    st = target.stat()
    assert payload["path"] == str(target.resolve())
    assert (payload["fingerprint"], payload["size"], payload["mtime_ns"]) == (
        sha("one"), 3, st.st_mtime_ns,
    )
    assert r.events[0].dedupe_key == f"file_watch:notes:{sha('one')}:{st.st_mtime_ns}"
    datetime.fromisoformat(payload["changed_at"])

    assert (await watcher.poll()).events == ()  # unchanged

    target.write_text("two!")
    r = await watcher.poll()
    assert changes(r) == [("notes.changed", "notes", "modified")]
    assert (r.events[0].payload["fingerprint"], r.events[0].payload["previous_fingerprint"]) == (
        sha("two!"), sha("one"),
    )

    mtime = target.stat().st_mtime_ns
    target.unlink()
    r = await watcher.poll()
    assert changes(r) == [("notes.changed", "notes", "deleted")]
    assert r.events[0].payload["previous_fingerprint"] == sha("two!")
    assert r.events[0].dedupe_key == f"file_watch:notes:deleted:{sha('two!')}:{mtime}"
    assert "fingerprint" not in r.events[0].payload

    target.write_text("one")
    assert changes(await watcher.poll()) == [("notes.changed", "notes", "created")]


async def test_first_poll_is_silent_unless_emit_initial(file_watch: Plugin, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    quiet = {"id": "q", "path": str(tmp_path / "a"), "event_type": "a.changed"}
    loud = {**quiet, "id": "l", "emit_initial": True}
    r = await Watcher(file_watch, [quiet, loud]).poll()
    assert changes(r) == [("a.changed", "l", "created")]
    assert set(r.state_updates["watches"]) == {"q", "l"}
    assert r.state_updates["watches"]["q"]["fingerprint"] == sha("a")


async def test_emit_deleted_false_stays_quiet(file_watch: Plugin, tmp_path: Path) -> None:
    target = tmp_path / "gone"
    target.write_text("x")
    watcher = Watcher(file_watch, [{"id": "g", "path": str(target), "event_type": "g",
                                    "emit_deleted": "false"}])
    await watcher.poll()
    target.unlink()
    r = await watcher.poll()
    assert r.events == () and watcher.state["watches"]["g"]["exists"] is False


async def test_strategies(file_watch: Plugin, tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("same")
    age(target, 100)
    watcher = Watcher(file_watch, [
        {"id": "hash", "path": str(target), "event_type": "e"},
        {"id": "stat", "path": str(target), "event_type": "e", "strategy": "MTIME_SIZE"},
    ])
    r = await watcher.poll()
    st = target.stat()
    assert watcher.state["watches"]["stat"]["fingerprint"] == f"{st.st_mtime_ns}:{st.st_size}"
    target.write_text("same")  # same bytes, new mtime: only mtime_size notices
    r = await watcher.poll()
    assert changes(r) == [("e", "stat", "modified")]


async def test_unstable_file_waits_for_a_later_poll(file_watch: Plugin, tmp_path: Path) -> None:
    target = tmp_path / "upload.bin"
    watcher = Watcher(file_watch, [{"id": "up", "path": str(target), "event_type": "up",
                                    "min_stable_age": "1h30m"}])
    await watcher.poll()
    target.write_text("partial")
    r = await watcher.poll()
    assert r.events == ()
    assert watcher.state["watches"]["up"]["exists"] is False  # still the old snapshot
    assert any("file not stable yet" in log["message"] for log in r.logs)
    age(target, 2 * 3600)
    assert changes(await watcher.poll()) == [("up", "up", "created")]


async def test_changing_a_watch_path_starts_afresh(file_watch: Plugin, tmp_path: Path) -> None:
    (tmp_path / "old").write_text("old")
    (tmp_path / "new").write_text("new")
    watcher = Watcher(file_watch, [{"id": "w", "path": str(tmp_path / "old"), "event_type": "e"}])
    await watcher.poll()
    watcher.config = {"watches": [{"id": "w", "path": str(tmp_path / "new"), "event_type": "e"}]}
    r = await watcher.poll()
    assert r.events == ()
    assert watcher.state["watches"]["w"]["fingerprint"] == sha("new")
    assert {"level": "info", "message": "w: path or strategy changed; starting afresh"} in r.logs


async def test_removed_watches_leave_the_snapshot(file_watch: Plugin, tmp_path: Path) -> None:
    watcher = Watcher(file_watch, [{"id": "a", "path": str(tmp_path / "a"), "event_type": "e"},
                                   {"id": "b", "path": str(tmp_path / "b"), "event_type": "e"}])
    await watcher.poll()
    watcher.config["watches"].pop()
    await watcher.poll()
    assert set(watcher.state["watches"]) == {"a"}
    assert set(watcher.state) == {"watches", "last_poll_at"}


async def test_garbage_state_is_treated_as_a_first_poll(file_watch: Plugin, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    config = {"watches": [{"id": "f", "path": str(tmp_path / "f"), "event_type": "e"}]}
    for state in ({"watches": "nope"}, {"watches": {"f": 7}}, {"watches": {"f": {"exists": 1}}}):
        r = await respond(file_watch, config, state)
        assert r.ok
    # {"exists": 1} without a fingerprint reads as "present before, now different"
    assert changes(r) == [("e", "f", "modified")]


async def test_no_watches_is_a_quiet_success(file_watch: Plugin) -> None:
    r = await respond(file_watch, {})
    assert (r.status, r.events, r.state_updates["watches"]) == ("ok", (), {})


async def test_bad_config_lists_every_problem(file_watch: Plugin) -> None:
    watches = [
        {"path": "/tmp/x", "event_type": "e"},
        {"id": "a", "event_type": "e"},
        {"id": "b", "path": "/tmp/x"},
        {"id": "c", "path": "/tmp/x", "event_type": "e", "strategy": "md5"},
        {"id": "d", "path": "/tmp/x", "event_type": "e", "min_stable_age": "soon"},
        {"id": "e", "path": "/tmp/x", "event_type": "e", "emit_initial": "perhaps"},
        {"id": "f", "path": "/tmp/x", "event_type": "e"},
        {"id": "f", "path": "/tmp/y", "event_type": "e"},
        "just a path",
    ]
    for command in ("poll", "health"):
        r = await respond(file_watch, {"watches": watches}, command=command)
        assert (r.status, r.retry) == ("error", False)
        assert r.error == (
            "file_watch: invalid config: config.watches[0].id is required; "
            "config.watches[1].path is required; config.watches[2].event_type is required; "
            "config.watches[3].strategy must be one of sha256, mtime_size; "
            "config.watches[4].min_stable_age must be a duration such as 30s, 5m or 1h "
            "(got 'soon'); config.watches[5].emit_initial must be true or false; "
            "config.watches[7].id 'f' is used twice; "
            "config.watches[8] must be a mapping with id, path and event_type"
        )
    r = await respond(file_watch, {"watches": {"id": "x"}})
    assert r.error == ("file_watch: invalid config: config.watches must be a list of "
                       "{id, path, event_type} entries")


async def test_health(file_watch: Plugin, tmp_path: Path) -> None:
    ok = [{"id": "ok", "path": str(tmp_path / "later.txt"), "event_type": "e"}]
    r = await respond(file_watch, {"watches": ok}, command="health")
    assert (r.status, r.result) == ("ok", "file_watch health OK (watches=1)")
    bad = [{"id": "nodir", "path": str(tmp_path / "missing" / "f"), "event_type": "e"},
           {"id": "dir", "path": str(tmp_path), "event_type": "e"}]
    r = await respond(file_watch, {"watches": bad}, command="health")
    assert r.error == (
        f"file_watch: health check failed: nodir: directory {tmp_path / 'missing'} does not "
        f"exist; dir: {tmp_path} is a directory; file_watch watches files"
    )


async def test_unsupported_command(file_watch: Plugin) -> None:
    r = await respond(file_watch, {}, command="handle")
    assert (r.error, r.retry) == ("file_watch: unsupported command 'handle' (supported: poll, "
                                  "health)", False)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
watch_like = st.dictionaries(
    st.sampled_from(["id", "path", "event_type", "strategy", "emit_initial", "emit_deleted",
                     "min_stable_age"]),
    json_values, max_size=6,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(watches=st.one_of(st.lists(watch_like, max_size=3), json_values),
       state=st.dictionaries(st.sampled_from(["watches", "last_poll_at", "x"]), json_values))
async def test_any_config_and_state_give_a_protocol_answer(
    file_watch: Plugin, watches: Any, state: dict[str, Any]
) -> None:
    r = await respond(file_watch, {"watches": watches}, state)
    if r.ok:
        assert set(r.state_updates) == {"watches", "last_poll_at"}
    else:
        assert r.error.startswith("file_watch: invalid config: ") and r.retry is False
