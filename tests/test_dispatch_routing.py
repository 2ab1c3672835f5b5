"""The dispatcher's routing glue (ductile/dispatch/routing.py): dispatches become queue
successors with their context rows, a split of one event into two branches of the same plugin
stays deliverable, and a claimed job's step and verdict are read back from its envelope."""

from __future__ import annotations

from ductile.dispatch.routing import (DECISION_KEY, VERDICT_KEY, hook_payload, hook_signal,
                                      read_step, stamp_event, successors)
from ductile.router import route, start
from ductile.store.context import fetch_context
from ductile.store.db import Database
from ductile.store.queue import Queue
from support.router import compile_text, event, ids

SPLIT = """
pipelines:
  - name: fan
    on: go
    steps:
      - id: head
        uses: echo
      - split:
          - {id: left, uses: echo}
          - {id: right, uses: echo, if: {path: payload.n, op: gt, value: 1}}
"""


def attempts(_plugin: str) -> int:
    return 3


def test_entry_dispatches_share_one_new_instance_root_row() -> None:
    ps = compile_text(SPLIT)
    routing = start(ps, "fan", {"n": 2}, {"tenant": "t"}, new_id=ids("e"))
    made = successors(routing.dispatches, None, attempts, submitted_by="api", new_id=ids("r"))
    assert len(made) == 1
    ctx = made[0].context
    assert ctx is not None and ctx.parent is not None and ctx.parent.id == "r-1"
    assert ctx.parent.step_id == "" and ctx.step_id == "head"
    assert made[0].payload[DECISION_KEY].startswith("started: fan")
    assert made[0].max_attempts == 3 and made[0].submitted_by == "api"


def test_split_into_two_branches_of_one_plugin_gets_distinct_source_event_ids() -> None:
    ps = compile_text(SPLIT)
    entry = start(ps, "fan", {"n": 2}, new_id=ids("e")).dispatches[0]
    emitted = event("echo.handle", {"n": 2}, event_id="ev-9")
    routing = route(ps, entry.position, "echo", emitted, new_id=ids("x"))
    made = successors(routing.dispatches, "ctx-head", attempts)
    targets = sorted((s.plugin, s.source_event_id) for s in made)
    assert targets == [("core.switch", "ev-9"), ("echo", "ev-9")]
    assert all(s.context is not None and s.context.parent_id == "ctx-head" for s in made)


def test_two_same_plugin_dispatches_of_one_event_do_not_collide() -> None:
    ps = compile_text("""
pipelines:
  - name: twin
    on: go
    steps:
      - split:
          - {id: a, uses: echo}
          - {id: b, uses: echo}
""")
    made = successors(start(ps, "twin", {}, new_id=ids("e")).dispatches, None, attempts)
    assert [s.source_event_id for s in made] == ["e-1", "e-1@twin/b"]


async def test_successors_are_written_with_their_contexts_and_read_back_as_steps(
    db: Database,
) -> None:
    ps = compile_text(SPLIT)
    queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
    made = successors(start(ps, "fan", {"n": 2}, {"tenant": "t"}).dispatches, None,
                      attempts, submitted_by="api")
    job = await queue.enqueue(made[0].plugin, made[0].command, made[0].payload, "api",
                              context=made[0].context)
    claim = await queue.claim_next()
    assert claim is not None and claim.job.id == job.id
    assert claim.context is not None and claim.context.step_id == "head"
    step = read_step(claim.job.payload_obj(), claim.context)
    assert step.position is not None and step.position.pipeline == "fan"
    assert step.position.accumulated["tenant"] == "t"
    assert step.event is not None and DECISION_KEY not in step.event
    assert step.event["payload"] == {"n": 2} and step.verdict is None
    root = await db.read(lambda conn: fetch_context(conn, claim.context.parent_id))
    assert root is not None and root.step_id == "" and root.parent_id is None


def test_a_verdict_is_honoured_only_for_a_routed_job() -> None:
    envelope = {"type": "x", "payload": {}, VERDICT_KEY: {"action": "skip", "decision": "d"}}
    assert read_step(envelope, None).verdict is None  # hand-made payloads cannot skip jobs


def test_stamp_event_fills_only_what_is_missing() -> None:
    stamped = stamp_event({"type": "t", "payload": {}}, "echo", lambda: "new")
    assert stamped["event_id"] == "new" and stamped["source"] == "echo"
    assert stamped["timestamp"].endswith("Z")
    kept = stamp_event({"type": "t", "event_id": "mine", "source": "s", "timestamp": "x"},
                       "echo", lambda: "new")
    assert (kept["event_id"], kept["source"], kept["timestamp"]) == ("mine", "s", "x")


def test_hook_signal_and_payload_follow_the_terminal_status() -> None:
    assert [hook_signal(s) for s in ("succeeded", "failed", "dead", "timed_out")] == [
        "job.completed", "job.failed", "job.failed", "job.timed_out"]
    assert hook_payload("j", "p", "poll", "succeeded", result="r", reason=None, error=None) == {
        "job_id": "j", "plugin": "p", "command": "poll", "status": "succeeded", "result": "r"}
    failed = hook_payload("j", "p", "poll", "failed", result=None, reason="plugin_error",
                          error="boom")
    assert failed["reason"] == "plugin_error" and failed["error"] == "boom"
