"""The view state of `ductile system watch` (cli/watch_state.py) on arbitrary input: any
sequence of events and snapshots, well-formed or not, never raises and always renders; and the
running set is exactly the jobs whose latest start-or-end event was a start."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.cli.watch_state import (
    ENDS_ATTEMPT,
    MAX_OUTCOMES,
    ViewState,
    apply,
    apply_snapshot,
    render_text,
    to_json,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
job_ids = st.sampled_from(["j1", "j2", "j3", "j4"])
kinds = st.sampled_from(sorted(ENDS_ATTEMPT | {
    "job.started", "job.enqueued", "router.enqueued", "pipeline.enqueued",
    "scheduler.scheduled", "scheduler.skipped", "scheduler.circuit_state_changed",
    "scheduler.tick", "reload.swapped", "posture.changed", "subscriber.dropped", "odd"}))
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                 st.text(max_size=30), st.lists(st.integers(), max_size=2))
times = st.one_of(st.sampled_from(["2026-06-01T11:59:00Z", "2026-06-01T12:30:00+02:00",
                                   "2026-06-01T11:00:00", "9999-12-31T23:59:59-23:59"]),
                  junk)
statuses = st.one_of(st.sampled_from(["succeeded", "failed", "timed_out", "dead",
                                      "cancelled", "skipped", "queued", "running", ""]), junk)


@st.composite
def well_formed(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"job_id": draw(job_ids), "plugin": draw(st.sampled_from("pq")),
                            "command": "poll", "at": draw(times)}
    for key, values in (("status", statuses), ("state", st.sampled_from(["open", "closed"])),
                        ("failure_count", st.integers(-3, 9)), ("next_run_at", times),
                        ("schedule_id", st.text(max_size=3)), ("error", junk)):
        if draw(st.booleans()):
            data[key] = draw(values)
    return {"type": draw(kinds), "id": draw(st.one_of(st.none(), st.text(max_size=4))),
            "data": data}


events = st.one_of(
    well_formed(),
    st.dictionaries(st.sampled_from(["type", "id", "data"]),
                    st.one_of(junk, st.dictionaries(st.text(max_size=8), junk, max_size=4)),
                    max_size=3),
)
snapshots = st.dictionaries(
    st.sampled_from(["healthz", "queued", "running", "recent", "schedules"]),
    st.one_of(junk, st.fixed_dictionaries({"jobs": st.one_of(junk, st.lists(
        st.dictionaries(st.sampled_from(["job_id", "plugin", "command", "status", "started_at",
                                         "completed_at", "next_run_at", "paused", "breaker",
                                         "schedule_id"]),
                        st.one_of(junk, job_ids, times, statuses,
                                  st.fixed_dictionaries({"state": statuses,
                                                         "failure_count": junk})),
                        max_size=6), max_size=4)), "total": junk}),
              st.dictionaries(st.text(max_size=12), junk, max_size=3)),
    max_size=5)


@given(st.lists(st.one_of(events, snapshots.map(lambda s: ("snapshot", s))), max_size=30))
def test_any_sequence_never_raises_and_always_renders(steps: list[Any]) -> None:
    state = ViewState()
    for step in steps:
        if isinstance(step, tuple):
            state = apply_snapshot(state, step[1], now=NOW)
        else:
            state = apply(state, step)
        assert state.queued >= 0 and len(state.outcomes) <= MAX_OUTCOMES
        assert not set(state.running) & state.queued_ids
    assert isinstance(render_text(state, NOW), str)
    assert isinstance(to_json(state, NOW), dict)


@given(st.lists(well_formed(), max_size=40))
def test_running_is_started_minus_ended(sequence: list[dict[str, Any]]) -> None:
    state = ViewState()
    latest: dict[str, str] = {}
    for event in sequence:
        state = apply(state, event)
        if event["type"] == "job.started":
            latest[event["data"]["job_id"]] = "started"
        elif event["type"] in ENDS_ATTEMPT:
            latest[event["data"]["job_id"]] = "ended"
    assert set(state.running) == {job for job, last in latest.items() if last == "started"}
