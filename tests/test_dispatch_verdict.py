"""`dispatch.verdict.decide`: what one attempt records, as a pure function (no database, no
plugin, no clock)."""

from __future__ import annotations

import json
from typing import Any

from ductile.config.schema import PluginConf, RetryConf
from ductile.dispatch.attempt import NotRunnable, Ran, Verdict
from ductile.dispatch.outcome import Outcome
from ductile.dispatch.routing import Step
from ductile.dispatch.verdict import Routes, decide, fault
from ductile.plugin.protocol import Event, Response
from ductile.store.jobs import Job
from support.router import compile_text, ids

HOOKS = """
pipelines:
  - name: on-fail
    on-hook: job.failed
    steps: [{id: page, uses: notify}]
  - name: on-ok
    on-hook: job.completed
    steps: [{id: page, uses: notify}]
  - name: chain
    on: echo.poll
    steps: [{id: next, uses: py}]
"""


def routes(*, notify: bool = True, max_attempts: int = 3) -> Routes:
    confs = {name: PluginConf(name=name, enabled=True, notify_on_complete=notify,
                              retry=RetryConf(max_attempts=max_attempts, backoff_base=2.0))
             for name in ("echo", "notify", "py")}
    return Routes(compile_text(HOOKS), confs.__getitem__, lambda name: (), new_id=ids("ev"),
                  backoff=lambda base, attempt: base * attempt)


def job(attempt: int = 1, max_attempts: int = 3, context: str | None = None) -> Job:
    return Job(id="j1", plugin="echo", command="poll", payload='{"n": 1}', status="running",
               attempt=attempt, max_attempts=max_attempts, submitted_by="api", dedupe_key=None,
               created_at="t", started_at="t", completed_at=None, next_retry_at=None,
               last_error=None, parent_job_id=None, source_event_id=None,
               event_context_id=context, enqueued_config_snapshot_id=None,
               started_config_snapshot_id=None)


ROOT = Step(None, None, None)


def ran(outcome: Outcome, stdout: bytes = b"{}") -> Ran:
    return Ran(outcome, stdout, 0, b"some stderr", 12)


def hook_plugins(record: Any) -> list[tuple[str, str]]:
    return [(s.plugin, s.context.pipeline_name) for s in record.successors]


def test_a_job_that_cannot_run_fails_at_once_and_fires_its_failed_hook() -> None:
    rec = decide(routes(), job(), ROOT, NotRunnable("plugin 'x' not found in registry"))
    assert (rec.status, rec.outcome, rec.retry_in) == ("failed", "not_runnable", None)
    assert json.loads(rec.result) == {"status": "error",
                                      "error": "plugin 'x' not found in registry"}
    assert hook_plugins(rec) == [("notify", "on-fail")]


def test_a_retryable_failure_with_attempts_left_is_queued_after_the_backoff() -> None:
    outcome = Outcome("failed", "plugin_error", True, "nope")
    rec = decide(routes(), job(attempt=2), ROOT, ran(outcome))
    assert (rec.status, rec.retry_in, rec.last_error, rec.successors) == ("queued", 4.0,
                                                                          "nope", ())
    assert [line.msg for line in rec.after] == ["job retry scheduled"]


def test_the_last_retryable_failure_ends_with_attempts_exhausted_and_its_hook() -> None:
    outcome = Outcome("timed_out", "timeout", True, "too slow")
    rec = decide(routes(), job(attempt=3), ROOT, ran(outcome))
    assert (rec.status, rec.outcome, rec.decision) == ("timed_out", "timeout",
                                                      "attempts_exhausted")
    assert rec.retry_in is None and rec.stderr == "some stderr"
    assert [line.msg for line in rec.after] == ["job timed out"]


def test_a_success_routes_its_events_then_fires_its_completed_hook() -> None:
    response = Response("ok", result="fine", events=(Event("echo.poll", {"a": 1}),),
                        state_updates={"count": 1})
    rec = decide(routes(), job(), ROOT, ran(Outcome("succeeded", "ok", False, None, response)))
    assert (rec.status, rec.state_update, rec.facts) == ("succeeded", {"count": 1}, None)
    assert [(s.plugin, s.context.pipeline_name) for s in rec.successors] == [
        ("py", "chain"), ("notify", "on-ok")]


def test_an_event_that_cannot_be_routed_fails_the_success() -> None:
    response = Response("ok", events=(Event("", {"a": 1}),))  # an event with no type
    rec = decide(routes(), job(), ROOT, ran(Outcome("succeeded", "ok", False, None, response)))
    assert (rec.status, rec.outcome) == ("failed", "route_error")
    assert rec.last_error.startswith("route events: ")


def test_a_pipeline_step_fires_no_hooks() -> None:
    step = Step(None, "ctx-1", None)
    rec = decide(routes(), job(context="ctx-1"), step, NotRunnable("bad"))
    assert rec.successors == ()


def test_a_fail_verdict_is_recorded_without_a_spawn_or_hooks() -> None:
    rec = decide(routes(), job(), ROOT, Verdict("fail", "route depth 33 exceeds 32"))
    assert (rec.status, rec.outcome, rec.last_error) == ("failed", "route_refused",
                                                         "route depth 33 exceeds 32")
    assert rec.successors == ()


def test_plugin_logs_are_said_before_the_write() -> None:
    response = Response("ok", logs=({"level": "info", "message": "hello"},))
    rec = decide(routes(notify=False), job(), ROOT,
                 ran(Outcome("succeeded", "ok", False, None, response)))
    assert [(line.msg, line.fields["message"]) for line in rec.before] == [("plugin log",
                                                                             "hello")]


def test_a_fault_is_a_permanent_failure_that_fires_the_hook() -> None:
    rec = fault(routes(), job(), "job fault while spawning the plugin: RuntimeError: x", 7)
    assert (rec.status, rec.outcome, rec.retry_in, rec.duration_ms) == ("failed", "job_fault",
                                                                        None, 7)
    assert hook_plugins(rec) == [("notify", "on-fail")]
