"""Pipelines end to end with the real gateway: routing, baggage, `if`, split, call, sync runs,
hooks, the depth limit, `GET /job/{id}/tree`, and the boot refusals of gate pipelines_compiled.

One gateway serves the whole module (a bash plugin that reports the request it received, a
bash plugin that fails, and the bundled Python echo); each test starts its own pipeline run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.gateway import BUNDLED_PLUGINS, Gateway, free_port, write_config
from support.plugins import make_plugin, manifest_dict, respond_script

# Reports the whole request it got (context included) in its emitted event and its result.
DUMPER = ("req=$(cat)\n"
          "printf '{\"status\":\"ok\",\"result\":\"dumped\",\"events\":[{\"type\":\"dumped\","
          "\"payload\":{\"request\":%s}}]}' \"$req\"")

PIPELINES: list[dict[str, Any]] = [
    {"name": "chain", "execution_mode": "synchronous", "timeout": "20s", "steps": [
        {"id": "first", "uses": "dumper", "baggage": {"order.id": "payload.order"}},
        {"id": "middle", "uses": "echo"},
        {"id": "last", "uses": "dumper"},
    ]},
    {"name": "guarded", "execution_mode": "sync", "steps": [
        {"id": "maybe", "uses": "echo", "if": {"path": "payload.go", "op": "eq", "value": True}},
        {"id": "after", "uses": "dumper"},
    ]},
    {"name": "fan", "execution_mode": "synchronous", "steps": [
        {"id": "head", "uses": "echo"},
        {"split": [{"id": "left", "uses": "echo"}, {"id": "right", "uses": "dumper"}]},
        {"id": "tail", "uses": "dumper"},
    ]},
    {"name": "caller", "execution_mode": "synchronous", "steps": [
        {"id": "a", "uses": "echo"},
        {"call": "callee"},
    ]},
    {"name": "callee", "steps": [{"id": "z", "uses": "dumper"}]},
    {"name": "shallow", "execution_mode": "synchronous", "max_depth": 1, "steps": [
        {"id": "one", "uses": "echo"},
        {"id": "two", "uses": "echo"},
    ]},
    {"name": "background", "steps": [{"id": "only", "uses": "echo"}]},
    {"name": "quiet", "execution_mode": "synchronous", "steps": [
        {"id": "hush", "uses": "counter"},
        {"id": "next", "uses": "dumper"},
    ]},
    # Split at the first step: one run, one root job (core.split), every branch under it.
    {"name": "forked", "steps": [
        {"split": [{"id": "l", "uses": "echo"},
                   {"steps": [{"id": "r1", "uses": "dumper"}, {"id": "r2", "uses": "echo"}]}]},
        {"id": "join", "uses": "dumper"},
    ]},
    {"name": "forked-sync", "execution_mode": "synchronous", "steps": [
        {"split": [{"id": "a", "uses": "echo"}, {"id": "b", "uses": "echo"}]},
    ]},
    {"name": "orders", "on": "order.placed", "from_plugin": "emitter", "steps": [
        {"id": "record", "uses": "dumper", "baggage": {"order.id": "payload.id"}},
    ]},
    {"name": "on-broken", "on-hook": "job.failed", "from_plugin": "broken", "steps": [
        {"id": "page", "uses": "dumper"},
    ]},
]
for _entry in PIPELINES:
    if "on-hook" not in _entry:
        _entry.setdefault("on", f"{_entry['name']}.start")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("pipelines")
    root = base / "plugins"
    make_plugin(root, "dumper", DUMPER)
    counter = make_plugin(root, "counter", respond_script(
        {"status": "ok", "result": "counted", "state_updates": {"seen": 2, "tag": "x"}}))
    (counter / "manifest.yaml").write_text(yaml.safe_dump(manifest_dict(
        "counter", fact_outputs=[{"when": {"command": "poll"}, "from": "state_updates",
                                  "fact_type": "counter.snapshot",
                                  "compatibility_view": "mirror_object"}])))
    make_plugin(root, "emitter", respond_script(
        {"status": "ok", "result": "placed",
         "events": [{"type": "order.placed", "payload": {"id": "O-7"}}]}))
    make_plugin(root, "broken", respond_script(
        {"status": "error", "error": "disk on fire", "retry": False}))
    port = free_port()
    cfg = write_config(
        base / "cfg", port=port, plugin_roots=[str(BUNDLED_PLUGINS), str(root)],
        plugins={"echo": {"enabled": True}, "dumper": {"enabled": True},
                 "counter": {"enabled": True}, "emitter": {"enabled": True},
                 "broken": {"enabled": True, "notify_on_complete": True}},
        service={"max_workers": 3},
        # Bodies larger than the 1 MiB baggage cap, so the cap itself can be tested.
        api={"max_body_size": 4 * 1024 * 1024},
        extra={"pipelines": PIPELINES},
    )
    gateway = Gateway(cfg, port=port).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def run(gw: Gateway, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = gw.post(f"/pipeline/{name}", body or {"payload": {}})
    assert resp.status_code == 200, resp.text
    return resp.json()


def steps(view: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for node in view["tree"]:
        out.setdefault(node["step_id"] or "", []).append(node)
    return out


def settled_tree(gw: Gateway, job_id: str, size: int, within: float = 20.0) -> list[dict]:
    """Poll GET /job/{id}/tree until it holds `size` terminal jobs (or give up)."""
    deadline = time.monotonic() + within
    while True:
        tree = gw.get(f"/job/{job_id}/tree").json()
        done = [n for n in tree if n["status"] not in ("queued", "running")]
        if len(tree) >= size and len(done) == len(tree) or time.monotonic() > deadline:
            return tree
        time.sleep(0.05)


def test_baggage_claimed_in_step_one_reaches_step_three_across_bash_and_python(
    gw: Gateway,
) -> None:
    view = run(gw, "chain", {"payload": {"order": "A-1"}})
    assert view["status"] == "succeeded"
    by_step = steps(view)
    assert [n["plugin"] for n in view["tree"]] == ["dumper", "echo", "dumper"]
    assert [n["parent_job_id"] for n in view["tree"]][1:] == [
        view["tree"][0]["job_id"], view["tree"][1]["job_id"]]
    last = by_step["last"][0]
    context = last["result"]["events"][0]["payload"]["request"]["context"]
    assert context["order"] == {"id": "A-1"}
    assert context["ductile_pipeline"] == "chain" and context["ductile_step_id"] == "last"
    assert context["ductile_route_depth"] == 3
    assert last["baggage"] == {"order": {"id": "A-1"}}
    # The sync answer's result is the terminal step's.
    assert view["result"] == last["result"]
    # The baggage is merged into the event payload where the payload lacks the key.
    event = last["result"]["events"][0]["payload"]["request"]["event"]
    assert event["payload"]["order"] == {"id": "A-1"}
    assert event["payload"]["ductile_upstream_step_id"] == "middle"


def test_false_if_skips_the_step_and_its_successor_still_runs(gw: Gateway) -> None:
    view = run(gw, "guarded", {"payload": {"go": False, "n": 1}})
    assert view["status"] == "succeeded"
    by_step = steps(view)
    switch = by_step["maybe__switch"][0]
    assert switch["plugin"] == "core.switch" and switch["result"] == {
        "matched": False, "event": "ductile.switch.false"}
    skipped = by_step["maybe"][0]
    assert skipped["status"] == "skipped"
    assert "if false" in skipped["decision"]
    after = by_step["after"][0]
    assert after["status"] == "succeeded" and after["parent_job_id"] == skipped["job_id"]
    # The skipped step re-emitted the event it got, so its successor sees the original payload.
    seen = after["result"]["events"][0]["payload"]["request"]["event"]["payload"]
    assert seen["go"] is False and seen["n"] == 1


def test_true_if_runs_the_step(gw: Gateway) -> None:
    view = run(gw, "guarded", {"payload": {"go": True}})
    by_step = steps(view)
    assert by_step["maybe__switch"][0]["result"]["matched"] is True
    assert by_step["maybe"][0]["status"] == "succeeded"
    assert by_step["maybe"][0]["plugin"] == "echo"
    assert "if true" in by_step["maybe"][0]["route"]
    assert by_step["after"][0]["status"] == "succeeded"


def test_split_runs_both_branches_and_the_next_step_once_per_branch(gw: Gateway) -> None:
    view = run(gw, "fan", {"payload": {"x": 1}})
    assert view["status"] == "succeeded"
    by_step = steps(view)
    head = by_step["head"][0]["job_id"]
    assert by_step["left"][0]["parent_job_id"] == head
    assert by_step["right"][0]["parent_job_id"] == head
    tails = by_step["tail"]
    assert len(tails) == 2
    assert {t["parent_job_id"] for t in tails} == {by_step["left"][0]["job_id"],
                                                   by_step["right"][0]["job_id"]}


FORKED_STEPS = ["", "l", "r1", "join", "r2", "join"]  # the root first, then by depth


def tree_ids(gw: Gateway, job_id: str) -> list[str]:
    resp = gw.get(f"/job/{job_id}/tree")
    assert resp.status_code == 200, resp.text
    return [node["job_id"] for node in resp.json()]


def test_a_split_run_has_one_id_and_every_job_of_it_answers_the_whole_tree(
    gw: Gateway,
) -> None:
    resp = gw.post("/pipeline/forked?sync=true", {"payload": {"n": 1},
                                                  "baggage": {"tenant": "t1"}})
    assert resp.status_code == 200, resp.text
    view = resp.json()
    run_id = view["run_id"]
    assert view["job_id"] == run_id and view["status"] == "succeeded"
    # ?sync=true waited for both branches and what follows each of them.
    assert sorted(n["step_id"] for n in view["tree"]) == sorted(FORKED_STEPS)
    assert all(n["status"] == "succeeded" for n in view["tree"])
    root, *rest = view["tree"]
    assert (root["job_id"], root["plugin"], root["parent_job_id"]) == (run_id, "core.split", None)
    assert root["pipeline"] == "forked" and root["baggage"] == {"tenant": "t1"}
    assert root["result"] == {"branches": ["forked/l", "forked/r1"]}
    assert root["decision"] == "split into 2 branches"
    assert root["route"] == "started: forked"
    by_step = steps(view)
    assert {by_step["l"][0]["parent_job_id"], by_step["r1"][0]["parent_job_id"]} == {run_id}
    assert all(n["parent_job_id"] is not None for n in rest)
    assert by_step["r2"][0]["baggage"] == {"tenant": "t1"}
    # The tree of the run, of each branch's first job and of a job deep in a branch is the
    # same whole run.
    whole = tree_ids(gw, run_id)
    assert whole == [n["job_id"] for n in view["tree"]]
    for job in (by_step["l"][0], by_step["r1"][0], by_step["r2"][0], by_step["join"][1]):
        assert tree_ids(gw, job["job_id"]) == whole


def test_a_split_run_started_asynchronously_answers_its_run_id_and_its_branch_jobs(
    gw: Gateway,
) -> None:
    resp = gw.post("/pipeline/forked", {"payload": {"n": 2}})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["job_id"] == body["run_id"] and body["status"] == "queued"
    assert len(body["job_ids"]) == 2 and body["run_id"] not in body["job_ids"]
    tree = settled_tree(gw, body["run_id"], len(FORKED_STEPS))
    assert sorted(n["step_id"] for n in tree) == sorted(FORKED_STEPS)
    entries = [n for n in tree if n["parent_job_id"] == body["run_id"]]
    assert [n["job_id"] for n in entries] == body["job_ids"]


def test_a_synchronous_pipeline_that_splits_first_waits_for_every_branch(gw: Gateway) -> None:
    view = run(gw, "forked-sync", {"payload": {"k": "v"}})
    assert view["status"] == "succeeded" and view["run_id"] == view["job_id"]
    assert [n["step_id"] for n in view["tree"]] == ["", "a", "b"]
    assert [n["plugin"] for n in view["tree"]] == ["core.split", "echo", "echo"]
    # The root's result stands in only when no terminal step succeeded; here both did.
    assert view["result"] in (steps(view)["a"][0]["result"], steps(view)["b"][0]["result"])


def test_a_run_with_one_entry_keeps_its_entry_job_as_its_id_and_subtrees_stay_subtrees(
    gw: Gateway,
) -> None:
    resp = gw.post("/pipeline/background", {"payload": {}})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["run_id"] == body["job_id"] and body["job_ids"] == [body["job_id"]]
    view = run(gw, "chain", {"payload": {"order": "S-1"}})
    assert view["run_id"] == view["job_id"] == view["tree"][0]["job_id"]
    middle, last = view["tree"][1]["job_id"], view["tree"][2]["job_id"]
    assert tree_ids(gw, middle) == [middle, last]


def test_async_and_sync_together_are_refused(gw: Gateway) -> None:
    resp = gw.post("/pipeline/forked?async=true&sync=true", {"payload": {}})
    assert resp.status_code == 400, resp.text
    assert "async=true and sync=true contradict each other" in resp.json()["error"]


def test_call_continues_in_the_called_pipeline(gw: Gateway) -> None:
    view = run(gw, "caller", {"payload": {"k": "v"}})
    assert view["status"] == "succeeded"
    called = [n for n in view["tree"] if n["pipeline"] == "callee"]
    assert [n["step_id"] for n in called] == ["z"]
    assert called[0]["status"] == "succeeded"
    assert "call callee" in called[0]["route"]


def test_a_step_that_emits_nothing_still_lets_its_successor_run(gw: Gateway) -> None:
    view = run(gw, "quiet", {"payload": {"q": 1}})
    assert view["status"] == "succeeded"
    nxt = steps(view)["next"][0]
    event = nxt["result"]["events"][0]["payload"]["request"]["event"]
    assert event["type"] == "ductile.step.succeeded"
    assert event["payload"]["result"] == "counted"
    assert event["payload"]["ductile_upstream_plugin"] == "counter"


def test_depth_limit_fails_the_step_past_it_with_a_clear_reason(gw: Gateway) -> None:
    view = run(gw, "shallow")
    assert view["status"] == "failed"
    two = steps(view)["two"][0]
    assert two["status"] == "failed"
    assert two["last_error"] == "depth limit reached: 2 > max_depth 1"


def test_async_pipeline_answers_202_and_the_tree_settles(gw: Gateway) -> None:
    resp = gw.post("/pipeline/background", {"payload": {"a": 1}})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "queued" and body["command"] == "background"
    tree = settled_tree(gw, body["job_id"], 1)
    assert tree[0]["status"] == "succeeded" and tree[0]["step_id"] == "only"


def test_an_event_from_a_plain_job_starts_the_pipeline_listening_for_it(gw: Gateway) -> None:
    resp = gw.post("/plugins/emitter/run", {"command": "poll", "sync": True})
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    tree = settled_tree(gw, resp.json()["job_id"], 2)
    assert len(tree) == 2, tree
    record = tree[1]
    assert (record["pipeline"], record["step_id"], record["status"]) == (
        "orders", "record", "succeeded")
    assert record["route"] == "matched on: order.placed"
    assert record["baggage"] == {"order": {"id": "O-7"}}
    event = record["result"]["events"][0]["payload"]["request"]["event"]
    assert event["type"] == "order.placed" and event["source"] == "emitter"
    assert event["payload"]["result"] == "placed"


def test_hook_pipeline_runs_when_a_notifying_plugin_fails(gw: Gateway) -> None:
    resp = gw.post("/plugins/broken/run", {"payload": {"x": 1}, "sync": True})
    assert resp.status_code == 200 and resp.json()["status"] == "failed", resp.text
    job_id = resp.json()["job_id"]
    tree = settled_tree(gw, job_id, 2)
    assert len(tree) == 2, tree
    hook = tree[1]
    assert hook["parent_job_id"] == job_id and hook["plugin"] == "dumper"
    assert hook["status"] == "succeeded" and hook["pipeline"] == "on-broken"
    event = hook["result"]["events"][0]["payload"]["request"]["event"]
    assert event["type"] == "job.failed"
    assert event["payload"]["job_id"] == job_id and event["payload"]["error"] == "disk on fire"


def test_fact_outputs_record_a_fact_and_mirror_it_into_plugin_state(gw: Gateway) -> None:
    import sqlite3

    resp = gw.post("/plugins/counter/run", {"command": "poll", "sync": True})
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    job_id = resp.json()["job_id"]
    db = sqlite3.connect(f"file:{gw.config_dir / 'data' / 'state.db'}?mode=ro", uri=True)
    try:
        facts = db.execute("SELECT fact_type, fact_json, seq FROM plugin_facts "
                           "WHERE job_id = ?", (job_id,)).fetchall()
        state = db.execute("SELECT state FROM plugin_state WHERE plugin_name = 'counter'"
                           ).fetchone()
    finally:
        db.close()
    assert [(f[0], json.loads(f[1])) for f in facts] == [
        ("counter.snapshot", {"seen": 2, "tag": "x"})]
    assert facts[0][2] is not None
    assert state is not None and json.loads(state[0]) == {"seen": 2, "tag": "x"}


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"payload": [1]}, 400, "field payload must be a JSON object (it becomes the payload of "
                            "the pipeline's trigger event); got an array"),
    ({"payload": "x"}, 400, "field payload must be a JSON object"),
    ({"payload": 3}, 400, "field payload must be a JSON object"),
    ({"payload": {}, "extra": 1}, 400, "unknown field(s) in body: extra"),
    ({"payload": {}}, 400, "root baggage claims failed"),
    ({"payload": {"order": 1}, "baggage": {"ductile": {}}}, 400,
     "field baggage: key 'ductile' is reserved (ductile, ductile.* and ductile_* belong to "
     "the core)"),
    ({"payload": {"order": 1}, "baggage": {"ductile_plugin": "x"}}, 400,
     "field baggage: key 'ductile_plugin' is reserved"),
    ({"payload": {"order": 1}, "baggage": {"ductile.route_depth": 0}}, 400,
     "field baggage: key 'ductile.route_depth' is reserved"),
    ({"payload": {"order": 1}, "baggage": [1]}, 400, "field baggage must be a JSON object"),
])
def test_bad_pipeline_requests_are_refused_with_json_errors(
    gw: Gateway, body: dict[str, Any], status: int, needle: str
) -> None:
    resp = gw.post("/pipeline/chain", body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]


@pytest.mark.parametrize("levels", [64, 900, 950, 980, 1200])
def test_deep_root_baggage_is_refused_with_400_naming_the_limit(gw: Gateway,
                                                                levels: int) -> None:
    import httpx

    baggage = b'{"a":' * levels + b"1" + b"}" * levels
    raw = b'{"payload": {"order": 1}, "baggage": ' + baggage + b"}"
    resp = httpx.post(gw.url + "/pipeline/chain", content=raw, headers=gw.headers(), timeout=30)
    assert resp.status_code == 400, resp.text
    assert f"the body nests objects/arrays {levels + 1} levels deep; at most 64 levels are " \
           "allowed" in resp.json()["error"]


def test_the_deepest_accepted_root_baggage_runs_through_every_step(gw: Gateway) -> None:
    import httpx

    levels = 62  # the body, `baggage`, then 62 objects: 64 levels in all
    baggage = b'{"deep": ' + b'{"a":' * levels + b"1" + b"}" * levels + b"}"
    raw = b'{"payload": {"order": 5}, "baggage": ' + baggage + b"}"
    resp = httpx.post(gw.url + "/pipeline/chain", content=raw, headers=gw.headers(), timeout=30)
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    last = steps(resp.json())["last"][0]
    assert last["baggage"]["order"] == {"id": 5}
    inner = last["baggage"]["deep"]
    for _ in range(levels - 1):
        inner = inner["a"]
    assert inner == {"a": 1}


def test_oversized_root_baggage_is_413_naming_the_limit(gw: Gateway) -> None:
    resp = gw.post("/pipeline/chain", {"payload": {"order": 1},
                                       "baggage": {"blob": "x" * (1024 * 1024)}})
    assert resp.status_code == 413, resp.text
    body = resp.json()
    assert body["bytes_limit"] == 1024 * 1024 and body["bytes_actual"] > 1024 * 1024
    assert body["error"].startswith("pipeline baggage exceeds maximum context size: the run's "
                                    f"baggage would be {body['bytes_actual']} bytes as compact "
                                    "JSON, limit 1048576 bytes")
    # Baggage that fits on its own but not with what the entry step claims from the payload.
    half = "y" * (600 * 1024)
    claimed = gw.post("/pipeline/chain", {"payload": {"order": half},
                                          "baggage": {"blob": half}})
    assert claimed.status_code == 413, claimed.text
    assert gw.get("/healthz").status_code == 200


def test_unknown_pipeline_and_tree_are_404_and_scopes_apply(gw: Gateway) -> None:
    from support.gateway import READ_TOKEN

    assert gw.post("/pipeline/nope", {}).status_code == 404
    assert "not found" in gw.post("/pipeline/nope", {}).json()["error"]
    assert gw.get("/job/no-such-job/tree").status_code == 404
    assert gw.post("/pipeline/chain", {"payload": {"order": 1}},
                   token=READ_TOKEN).status_code == 403


# --- boot refusals (no traffic: the gateway exits before it opens a port) -------------------


REFUSALS = [
    ("unknown plugin", [{"name": "p", "on": "x", "steps": [{"uses": "nope"}]}],
     "unknown plugin"),
    ("unknown call target", [{"name": "p", "on": "x", "steps": [{"call": "ghost"}]}], "ghost"),
    ("call cycle", [{"name": "a", "on": "x", "steps": [{"call": "b"}]},
                    {"name": "b", "steps": [{"call": "a"}]}], "cycle"),
    ("invalid if", [{"name": "p", "on": "x", "steps": [
        {"uses": "echo", "if": {"path": "payload.n", "op": "gt", "value": "ten"}}]}], "if"),
    ("invalid with", [{"name": "p", "on": "x", "steps": [
        {"uses": "echo", "with": {"a": "{payload.x"}}]}], "with"),
    ("invalid baggage", [{"name": "p", "on": "x", "steps": [
        {"uses": "echo", "baggage": {"ductile.x": "payload.a"}}]}], "reserved"),
    ("relay step", [{"name": "p", "on": "x", "steps": [
        {"relay": {"to": "peer", "event": "e"}}]}], "relay"),
    ("hook cycle", [
        {"name": "h1", "on-hook": "job.failed", "from_plugin": "echo",
         "steps": [{"uses": "dumper"}]},
        {"name": "h2", "on-hook": "job.failed", "from_plugin": "dumper",
         "steps": [{"uses": "echo"}]}], "hook"),
]


@pytest.mark.parametrize(("pipelines", "needle"), [(p, n) for _, p, n in REFUSALS],
                         ids=[name for name, _, _ in REFUSALS])
def test_every_compile_time_refusal_exits_78_naming_gate_pipelines_compiled(
    tmp_path: Path, pipelines: list[dict[str, Any]], needle: str
) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "dumper", DUMPER)
    cfg = write_config(tmp_path / "cfg", plugin_roots=[str(BUNDLED_PLUGINS), str(root)],
                       plugins={"echo": {"enabled": True}, "dumper": {"enabled": True}})
    (cfg / "pipelines.yaml").write_text(yaml.safe_dump({"pipelines": pipelines}))
    doc = yaml.safe_load((cfg / "config.yaml").read_text())
    doc["include"] = ["pipelines.yaml"]
    (cfg / "config.yaml").write_text(yaml.safe_dump(doc))
    gateway = Gateway(cfg).start(wait=False)
    code = gateway.wait_exit(30)
    assert code == 78, gateway.stderr()
    records = [r for r in gateway.log_records() if r.get("msg") == "boot refused"]
    assert records and records[0]["gate"] == "pipelines_compiled", gateway.stdout()
    assert "pipelines.yaml" in records[0]["reason"]
    assert needle in records[0]["reason"]
    assert "gate pipelines_compiled" in gateway.stderr()


# --- CLI -----------------------------------------------------------------------------------


def test_cli_pipeline_list_shows_name_trigger_mode_and_steps(gw: Gateway) -> None:
    from support.gateway import run_cli

    result = run_cli("pipeline", "list", "--config", str(gw.config_dir), "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["pipelines"]}
    assert rows["chain"]["trigger"] == "chain.start"
    assert rows["chain"]["mode"] == "synchronous"
    assert rows["chain"]["steps"] == ["first:uses dumper", "middle:uses echo", "last:uses dumper"]
    assert rows["guarded"]["mode"] == "synchronous"
    assert rows["on-broken"]["trigger"] == "hook job.failed from broken"
    assert rows["fan"]["steps"][1] == "split[left:uses echo | right:uses dumper]"
    text = run_cli("pipeline", "list", "--config", str(gw.config_dir))
    assert text.returncode == 0 and "background" in text.stdout


def test_cli_pipeline_run_then_job_inspect_renders_the_lineage(gw: Gateway) -> None:
    from support.gateway import TOKEN, run_cli

    result = run_cli("pipeline", "run", "guarded", "--payload", '{"go": false, "who": "cli"}',
                     "--baggage", '{"tenant": "t1"}', "--sync", "--api-url", gw.url,
                     "--api-key", TOKEN, "--json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["status"] == "succeeded" and len(view["tree"]) == 3
    after = view["tree"][2]["job_id"]
    inspect = run_cli("job", "inspect", after, "--config", str(gw.config_dir))
    assert inspect.returncode == 0, inspect.stderr
    out = inspect.stdout
    assert f"Lineage of run {view['job_id']} (its root job):" in out
    assert "guarded/maybe__switch  core.switch  succeeded  [switch false]" in out
    assert "guarded/maybe  echo  skipped  [skipped: if false]" in out
    assert f"* guarded/after  dumper  succeeded  [ran]  job {after}" in out
    assert 'baggage: {"tenant": "t1"}' in out
    data = json.loads(run_cli("job", "inspect", after, "--config", str(gw.config_dir),
                              "--json").stdout)
    skipped = data["lineage"]["tree"]["children"][0]
    assert skipped["decision"] == "skipped: if false" and skipped["baggage"] == {"tenant": "t1"}


def test_cli_sync_run_of_a_split_pipeline_waits_for_every_branch_and_inspect_names_the_run(
    gw: Gateway,
) -> None:
    from support.gateway import TOKEN, run_cli

    # `forked` is asynchronous: --sync alone makes the gateway wait for the whole run.
    result = run_cli("pipeline", "run", "forked", "--payload", '{"who": "cli"}', "--sync",
                     "--api-url", gw.url, "--api-key", TOKEN, "--json")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["status"] == "succeeded" and view["run_id"] == view["job_id"]
    assert sorted(n["step_id"] for n in view["tree"]) == sorted(FORKED_STEPS)
    assert all(n["status"] == "succeeded" for n in view["tree"])
    r2 = steps(view)["r2"][0]["job_id"]
    inspect = run_cli("job", "inspect", r2, "--config", str(gw.config_dir))
    assert inspect.returncode == 0, inspect.stderr
    out = inspect.stdout
    assert f"Lineage of run {view['run_id']} (its root job):" in out
    assert f"core.split  succeeded  [split into 2 branches]  job {view['run_id']}" in out
    assert "forked/l  echo  succeeded  [ran]" in out
    assert f"* forked/r2  echo  succeeded  [ran]  job {r2}" in out
    data = json.loads(run_cli("job", "inspect", r2, "--config", str(gw.config_dir),
                              "--json").stdout)
    assert data["lineage"]["run_id"] == view["run_id"]
    assert len(data["lineage"]["tree"]["children"]) == 2
    text = run_cli("pipeline", "run", "forked", "--sync", "--api-url", gw.url,
                   "--api-key", TOKEN)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("Pipeline forked succeeded in ")
    assert text.stdout.count("succeeded ") == 1 + len(FORKED_STEPS)


def test_cli_async_run_of_a_split_pipeline_prints_the_run_and_its_branches(
    gw: Gateway,
) -> None:
    from support.gateway import TOKEN, run_cli

    result = run_cli("pipeline", "run", "forked", "--api-url", gw.url, "--api-key", TOKEN)
    assert result.returncode == 0, result.stderr
    first, split, see = result.stdout.splitlines()
    run_id = first.removeprefix("Started pipeline forked: job ").removesuffix(" (queued)")
    assert split.startswith("Split into 2 branches: jobs ")
    assert see == f"see: ductile job inspect {run_id}"
    branches = split.removeprefix("Split into 2 branches: jobs ").split(", ")
    tree = settled_tree(gw, run_id, len(FORKED_STEPS))
    assert [n["job_id"] for n in tree if n["parent_job_id"] == run_id] == branches


def test_cli_pipeline_run_async_prints_the_job_and_bad_payload_fails(gw: Gateway) -> None:
    from support.gateway import TOKEN, run_cli

    result = run_cli("pipeline", "run", "background", "--payload", '{"a": 1}',
                     "--api-url", gw.url, "--api-key", TOKEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Started pipeline background: job ")
    bad = run_cli("pipeline", "run", "background", "--payload", "[1]", "--api-url", gw.url,
                  "--api-key", TOKEN)
    assert bad.returncode == 1 and "--payload must be a JSON object" in bad.stderr
    missing = run_cli("pipeline", "run", "nope", "--api-url", gw.url, "--api-key", TOKEN)
    assert missing.returncode == 1 and "API error (404)" in missing.stderr


def test_reload_with_a_bad_pipeline_is_refused_and_the_old_pipelines_keep_running(
    gw: Gateway,
) -> None:
    path = gw.config_dir / "config.yaml"
    good = path.read_text()
    doc = yaml.safe_load(good)
    doc["pipelines"] = [*doc["pipelines"],
                        {"name": "typo", "on": "x", "steps": [{"uses": "ehco"}]}]
    try:
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        resp = gw.post("/system/reload")
        assert resp.status_code == 409, resp.text
        assert resp.json()["gate"] == "pipelines_compiled"
        assert "unknown plugin 'ehco'" in resp.json()["error"]
    finally:
        path.write_text(good)
    assert run(gw, "guarded", {"payload": {"go": True}})["status"] == "succeeded"
