"""The result-class rule (planes/api/resultscope.py) over any scopes and any event data: a
token without `jobs:result:ro` never gets a result-class field, one with it gets everything
unchanged, and a re-encoded event frame is still one frame with single-line JSON data."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.scopes import GRANTED, WILDCARD, effective
from ductile.events.hub import Event
from ductile.planes.api.auth import Principal
from ductile.planes.api.resultscope import (EVENT_FIELDS, TREE_FIELDS, event_frame,
                                            may_see_results, strip_result_class,
                                            transition_view)

scopes = st.lists(st.sampled_from(sorted(GRANTED | {WILDCARD, "job:ro", ""})), max_size=4)
keys = st.one_of(st.sampled_from(sorted(EVENT_FIELDS | TREE_FIELDS | {"job_id", "status"})),
                 st.text(max_size=8))
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
json_values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
views = st.dictionaries(keys, json_values, max_size=8)


def _holds(granted: list[str]) -> bool:
    held = effective(granted)
    return WILDCARD in held or "jobs:result:ro" in held


@given(scopes, views)
def test_strip_is_all_or_only_the_fields(granted: list[str], view: dict[str, Any]) -> None:
    principal = Principal("t", effective(granted))
    assert may_see_results(principal) is _holds(granted)
    out = strip_result_class(view, principal, TREE_FIELDS)
    if _holds(granted):
        assert out == view
    else:
        assert out == {k: v for k, v in view.items() if k not in TREE_FIELDS}


@given(scopes, st.integers(min_value=1, max_value=2**53),
       st.sampled_from(["job.failed", "job.retry_exhausted", "reload.kept", "x"]), views)
def test_a_frame_stays_one_frame(granted: list[str], number: int, kind: str,
                                 data: dict[str, Any]) -> None:
    data = {"at": "2026-01-01T00:00:00Z", **data}
    event = Event(number, kind, data["at"], json.dumps(data, separators=(",", ":")), data)
    frame = event_frame(event, Principal("t", effective(granted)))
    head, event_line, data_line, blank, end = frame.split("\n")
    assert (head, event_line, blank, end) == (f"id: {number}", f"event: {kind}", "", "")
    shown = json.loads(data_line.removeprefix("data: "))
    if _holds(granted):
        assert frame == event.frame()
    else:
        assert shown == {k: v for k, v in data.items() if k not in EVENT_FIELDS}


@given(scopes, st.one_of(st.none(), st.text(max_size=40)))
def test_a_transition_reason_is_cut_to_its_code(granted: list[str], reason: str | None) -> None:
    row = {"to_status": "failed", "reason": reason}
    out = transition_view(row, Principal("t", effective(granted)))
    if _holds(granted) or reason is None:
        assert out == row
    else:
        assert ": " not in out["reason"] and reason.startswith(out["reason"])
