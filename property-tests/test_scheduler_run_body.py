"""Fuzz the body of POST /scheduler/run: only BodyError escapes, and what is accepted names
exactly one schedule."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ductile.planes.api.bodies import BodyError
from ductile.planes.api.routes.scheduler import parse_run_target
from strategies import hostile_json_bytes, json_values

targets = st.one_of(json_values, st.text(max_size=30),
                    st.builds(lambda a, b: f"{a}/{b}", st.text(max_size=10), st.text(max_size=10)))


@given(st.one_of(st.binary(max_size=300), hostile_json_bytes(),
                 st.dictionaries(st.sampled_from(["target", "other"]), targets, max_size=2)
                 .map(lambda body: json.dumps(body).encode())))
def test_a_run_body_names_one_schedule_or_is_refused_naming_the_field(data: bytes) -> None:
    try:
        plugin, schedule_id = parse_run_target(data)
    except BodyError as exc:
        message = str(exc)
        assert message.startswith(("invalid JSON body", "unknown field(s) in body",
                                   "field target"))
        return
    body = json.loads(data)
    assert set(body) == {"target"}
    assert body["target"].strip() == f"{plugin}/{schedule_id}"
    assert plugin and schedule_id and "/" not in schedule_id


@given(st.text(min_size=1, max_size=10).filter(lambda t: "/" not in t and t.strip() == t),
       st.text(min_size=1, max_size=10).filter(lambda t: "/" not in t and t.strip() == t))
def test_a_well_formed_target_round_trips(plugin: str, schedule_id: str) -> None:
    body = json.dumps({"target": f"{plugin}/{schedule_id}"}).encode()
    assert parse_run_target(body) == (plugin, schedule_id)
