"""Fuzz the query of GET /events (events/filters.py): only EventFilterError escapes, a refusal
names the parameter, and an accepted filter matches exactly what its parameters say."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.events.filters import KNOWN, EventFilterError, parse_filter, parse_last_event_id

names = st.one_of(st.sampled_from(sorted(KNOWN)), st.text(max_size=12))
values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["job.*", "job.completed", "*", "scheduler.*", "job.", "job.*x", " a",
                     "reload.swapped", "x" * 300]),
)
queries = st.lists(st.tuples(names, values), max_size=8)
kinds = st.sampled_from(["job.enqueued", "job.completed", "job.failed", "scheduler.tick",
                         "reload.kept", "router.enqueued", "subscriber.dropped"])
events = st.fixed_dictionaries({}, optional={
    "plugin": st.sampled_from(["echo", "quick", ""]),
    "job_id": st.sampled_from(["j1", "j2"]),
    "pipeline": st.sampled_from(["p1", "p2"]),
})


@given(queries, kinds, events)
def test_a_query_is_a_filter_or_refused_naming_the_parameter(
        query: list[tuple[str, str]], kind: str, data: dict[str, Any]) -> None:
    try:
        flt = parse_filter(query)
    except EventFilterError as exc:
        message = str(exc)
        assert any(repr(name) in message for name, _ in query)
        return
    assert {name for name, _ in query} <= KNOWN
    wanted: dict[str, set[str]] = {}
    for name, value in query:
        wanted.setdefault(name, set()).add(value)
    expected = True
    for name, key in (("plugin", "plugin"), ("job", "job_id"), ("pipeline", "pipeline")):
        if name in wanted and data.get(key) not in wanted[name]:
            expected = False
    if "type" in wanted and not any(
            kind.startswith(t[:-1]) if t.endswith("*") else kind == t for t in wanted["type"]):
        expected = False
    assert flt.matches(kind, data) is expected


@given(st.one_of(st.none(), st.text(max_size=25)), st.one_of(st.none(), st.text(max_size=25)))
def test_an_event_id_is_a_non_negative_integer_or_refused(header: str | None,
                                                         query: str | None) -> None:
    try:
        last = parse_last_event_id(header, query)
    except EventFilterError as exc:
        assert "Last-Event-ID" in str(exc) or "last_event_id" in str(exc)
        return
    source = header if header is not None else query
    assert last == (int(source.strip()) if source is not None else 0)
    assert last >= 0
