"""The bundled switch plugin (legacy classifier) end to end: discover it, build a real protocol v2
request, spawn the real plugin process, decode its response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.plugins import bundled_root

from ductile.plugin.discovery import Plugin, discover
from ductile.plugin.protocol import Response, build_request, decode_response
from ductile.plugin.spawn import child_env, spawn_plugin

CHECKS = [
    {"regex": "fail(ed|ure)", "emit": "build.failed"},
    {"startswith": "OK", "emit": "build.ok"},
    {"contains": "warn", "emit": "build.warned"},
    {"endswith": ".TMP", "emit": "build.temp"},
    {"equals": "Skipped", "emit": "build.skipped"},
    {"default": "build.other"},
]


@pytest.fixture(scope="module")
def switch() -> Plugin:
    return discover([str(bundled_root())], allow_symlinks=False).plugins["switch"]


async def respond(
    plugin: Plugin, config: Any, event: dict[str, Any] | None = None, command: str = "handle"
) -> Response:
    """Spawn once; the plugin must exit 0 and say nothing on stderr (no traceback)."""
    request = build_request(
        job_id="job-1", command=command, config=config, state={}, payload=event,
        context={"ductile_plugin": plugin.name}, event=event,
        deadline_at=datetime.now(UTC) + timedelta(seconds=10),
    )
    result = await spawn_plugin(plugin.entrypoint, request, timeout=10, env=child_env())
    assert (result.exit_code, result.stderr) == (0, b""), result
    return decode_response(result.stdout)


async def classify(plugin: Plugin, field: str, payload: dict[str, Any],
                   checks: list[Any] = CHECKS, **event: Any) -> Response:
    return await respond(plugin, {"field": field, "checks": checks},
                         {"type": "ci.finished", "payload": payload, **event})


def test_manifest_matches_the_original(switch: Plugin) -> None:
    manifest = switch.manifest
    assert [(c.name, c.type) for c in manifest.commands] == [("handle", "write"),
                                                              ("health", "read")]
    assert manifest.config_keys == {"required": ("field", "checks"), "optional": ()}


@pytest.mark.parametrize(
    ("status", "emitted", "why"),
    [
        ("failure", "build.failed", "matched regex -> build.failed"),
        ("ok: all green", "build.ok", "matched startswith -> build.ok"),
        ("some WARNings", "build.warned", "matched contains -> build.warned"),
        ("out.tmp", "build.temp", "matched endswith -> build.temp"),
        ("SKIPPED", "build.skipped", "matched equals -> build.skipped"),
        ("unknown", "build.other", "matched default -> build.other"),
        # regex is case-sensitive and must match the whole value
        ("FAILED", "build.other", "matched default -> build.other"),
        ("it failed", "build.other", "matched default -> build.other"),
    ],
)
async def test_first_matching_check_emits_its_type_with_the_payload_unchanged(
    switch: Plugin, status: str, emitted: str, why: str
) -> None:
    payload = {"status": status, "run": {"id": 7}}
    r = await classify(switch, "payload.status", payload)
    assert (r.status, r.result) == ("ok", why)
    assert [(e.type, e.payload) for e in r.events] == [(emitted, payload)]


async def test_earlier_check_wins(switch: Plugin) -> None:
    checks = [{"contains": "a", "emit": "first"}, {"contains": "ab", "emit": "second"}]
    r = await classify(switch, "status", {"status": "abc"}, checks)
    assert r.events[0].type == "first"


async def test_field_paths(switch: Plugin) -> None:
    checks = [{"equals": "deep", "emit": "hit"}, {"default": True, "emit": "miss"}]
    payload = {"a": {"b": "deep"}, "x": "deep"}
    assert (await classify(switch, "payload.a.b", payload, checks)).events[0].type == "hit"
    assert (await classify(switch, "a.b", payload, checks)).events[0].type == "hit"
    assert (await classify(switch, "payload.a.c", payload, checks)).events[0].type == "miss"
    type_checks = [{"equals": "CI.FINISHED", "emit": "by-type"}]
    assert (await classify(switch, "event.type", {}, type_checks)).events[0].type == "by-type"
    whole = [{"contains": '"x":"deep"', "emit": "json"}]
    assert (await classify(switch, "payload", payload, whole)).events[0].type == "json"


async def test_values_compare_as_text(switch: Plugin) -> None:
    # A YAML 1 matches a JSON 1.0; true matches true (as text "true").
    checks = [{"equals": 1, "emit": "one"}, {"equals": True, "emit": "yes"},
              {"default": "other"}]
    assert (await classify(switch, "n", {"n": 1.0}, checks)).events[0].type == "one"
    assert (await classify(switch, "n", {"n": True}, checks)).events[0].type == "yes"
    assert (await classify(switch, "n", {"n": 1.5}, checks)).events[0].type == "other"


async def test_dedupe_key_is_scoped_by_the_emitted_type(switch: Plugin) -> None:
    r = await classify(switch, "status", {"status": "ok"}, dedupe_key="src-42")
    assert r.events[0].dedupe_key == "src-42:build.ok"
    r = await classify(switch, "status", {"status": "ok"})
    assert r.events[0].dedupe_key is None


async def test_no_match_without_default_is_a_permanent_error(switch: Plugin) -> None:
    r = await classify(switch, "payload.status", {"status": "meh"}, CHECKS[:-1])
    assert (r.status, r.retry, r.events) == ("error", False, ())
    assert r.error == ("switch: no check matched payload.status = 'meh' and no default is "
                       "configured")


async def test_bad_config_lists_every_problem(switch: Plugin) -> None:
    checks = [{"regex": "(", "emit": "x"}, "equals: y", {"equals": "a", "contains": "b",
                                                          "emit": "y"},
              {"equals": "a"}, {"contains": "", "emit": "z"}, {"sometimes": "a", "emit": "q"}]
    r = await respond(switch, {"checks": checks}, {"type": "t", "payload": {"a": 1}})
    assert (r.status, r.retry) == ("error", False)
    assert r.error == (
        "switch: config.field is required (for example payload.status); "
        "config.checks #1: invalid regex '(': missing ), unterminated subpattern at position 0; "
        "config.checks #2: must be a mapping such as {equals: done, emit: job.done}; "
        "config.checks #3: must hold exactly one condition of contains, startswith, endswith, "
        "equals, regex, default (found contains, equals); "
        "config.checks #4: equals needs an `emit` event type; "
        "config.checks #5: contains needs a value; "
        "config.checks #6: must hold exactly one condition of contains, startswith, endswith, "
        "equals, regex, default"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "switch: config.field is required (for example payload.status); "
             "config.checks must be a non-empty list"),
        ({"field": "x", "checks": []}, "switch: config.checks must be a non-empty list"),
        ({"field": 3, "checks": [{"default": "d"}]},
         "switch: config.field is required (for example payload.status)"),
    ],
)
async def test_missing_config_is_refused_by_health_and_handle(
    switch: Plugin, config: Any, message: str
) -> None:
    for command in ("health", "handle"):
        r = await respond(switch, config, {"type": "t", "payload": {}}, command=command)
        assert (r.status, r.error, r.retry) == ("error", message, False)


async def test_health_accepts_a_valid_config(switch: Plugin) -> None:
    r = await respond(switch, {"field": "payload.status", "checks": CHECKS}, command="health")
    assert (r.status, r.result, r.events) == ("ok", "config ok", ())


async def test_unsupported_command_and_a_handle_without_event(switch: Plugin) -> None:
    r = await respond(switch, {"field": "x", "checks": CHECKS}, command="poll")
    assert r.error == "switch: unsupported command 'poll' (supported: handle, health)"
    r = await respond(switch, {"field": "x", "checks": CHECKS})  # no event: empty payload
    assert [(e.type, e.payload) for e in r.events] == [("build.other", {})]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
check_like = st.dictionaries(
    st.sampled_from(["contains", "startswith", "endswith", "equals", "regex", "default", "emit"]),
    json_values, max_size=3,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(field=json_values, checks=st.one_of(st.lists(check_like, max_size=4), json_values),
       payload=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
async def test_any_config_and_event_give_a_protocol_answer(
    switch: Plugin, field: Any, checks: Any, payload: dict[str, Any]
) -> None:
    r = await respond(switch, {"field": field, "checks": checks}, {"type": "t", "payload": payload})
    if r.status == "ok":
        assert len(r.events) == 1 and r.events[0].payload == payload
    else:
        assert r.error.startswith("switch: ") and r.retry is False
