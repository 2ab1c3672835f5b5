"""Job trees: shape, per-node fields, settledness for the sync wait, roots, cycles and bounds."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from ductile.store import Database, Queue
from ductile.store.context import ContextSpec
from ductile.store.jobs import Job
from ductile.store.queue import Successor
from ductile.store.tree import (
    MAX_TREE_DEPTH,
    MAX_TREE_NODES,
    SPLIT_ROOT_PLUGIN,
    TreeState,
    fetch_job_tree,
    root_of,
    split_run_root,
    tree_settled,
)
from support.store import Clock


@pytest.fixture
def queue(db: Database, clock: Clock) -> Queue:
    return Queue(db, snapshot_id=lambda: "cfg", dedupe_ttl=0, clock=clock)


def step(plugin: str, event: str, baggage: dict[str, Any] | None = None) -> Successor:
    context = None
    if baggage is not None:
        context = ContextSpec(None, "deploy", plugin, baggage)
    return Successor(
        plugin=plugin, command="handle", payload={}, submitted_by="route",
        source_event_id=event, context=context, max_attempts=4,
    )


async def run(
    queue: Queue, clock: Clock, job: Job, *successors: Successor, status: str = "succeeded",
    result: str | None = '{"ok":true}', decision: str | None = None,
) -> tuple[Job, ...]:
    """Claim `job` (it must be the next eligible), end it and return its successors."""
    clock.advance(0.001)
    claim = await queue.claim_next()
    assert claim is not None and claim.job.id == job.id
    clock.advance(0.25)
    done = await queue.complete_and_claim(
        claim.job, status, result=result, last_error="boom" if status == "failed" else None,
        stderr=None, exit_code=0, duration_ms=250, outcome="success", decision=decision,
        successors=successors,
    )
    return done.successors


async def settled(db: Database, root: str) -> TreeState:
    return await db.read(lambda conn: tree_settled(conn, root))


async def test_a_tree_nests_children_in_creation_order_with_their_context(
    queue: Queue, db: Database, clock: Clock
) -> None:
    root = await queue.enqueue("first", "handle", {}, "api")
    left, right = await run(
        queue, clock, root,
        step("left", "e1", {"ductile": {"route_depth": 1, "pipeline_instance_id": "i1"},
                            "user": "ann"}),
        step("right", "e1"),
    )
    [leaf] = await run(queue, clock, left, step("leaf", "e2"), result="plain text")
    await run(queue, clock, right, status="skipped", result=None, decision="if false: x")
    tree = await db.read(lambda conn: fetch_job_tree(conn, root.id))
    assert tree is not None
    assert tree["job_id"] == root.id and tree["truncated"] is False
    assert tree["result"] == {"ok": True} and tree["context"] is None
    assert tree["duration_ms"] == 250 and tree["attempt"] == 1
    assert [c["job_id"] for c in tree["children"]] == [left.id, right.id]
    left_node, right_node = tree["children"]
    assert left_node["context"] == {
        "context_id": left.event_context_id, "pipeline": "deploy", "step_id": "left",
        "baggage": {"user": "ann"},
        "ductile": {"route_depth": 1, "pipeline_instance_id": "i1"},
    }
    assert left_node["result"] == "plain text"
    assert [c["job_id"] for c in left_node["children"]] == [leaf.id]
    leaf_node = left_node["children"][0]
    assert leaf_node["status"] == "queued" and leaf_node["decision"] == "enqueued by route"
    assert leaf_node["started_at"] is None and leaf_node["duration_ms"] is None
    assert leaf_node["children"] == [] and "truncated" not in leaf_node
    assert right_node["status"] == "skipped" and right_node["decision"] == "if false: x"
    assert right_node["result"] is None


async def test_an_unknown_root_has_no_tree(db: Database) -> None:
    assert await db.read(lambda conn: fetch_job_tree(conn, "nope")) is None
    assert await settled(db, "nope") == TreeState(0, 0, False, False)


async def test_a_tree_settles_only_when_every_job_is_terminal(
    queue: Queue, db: Database, clock: Clock
) -> None:
    root = await queue.enqueue("first", "handle", {}, "api")
    assert await settled(db, root.id) == TreeState(1, 0, False, False)
    left, right = await run(queue, clock, root, step("left", "e1"), step("right", "e1"))
    assert await settled(db, root.id) == TreeState(3, 1, False, False)
    await run(queue, clock, left)
    await run(queue, clock, right, status="failed", result=None)
    assert await settled(db, root.id) == TreeState(3, 3, True, True)
    assert await settled(db, left.id) == TreeState(1, 1, True, False)


async def test_root_of_walks_up_to_the_top(queue: Queue, db: Database, clock: Clock) -> None:
    root = await queue.enqueue("first", "handle", {}, "api")
    [child] = await run(queue, clock, root, step("second", "e1"))
    [grandchild] = await run(queue, clock, child, step("third", "e2"))
    assert await db.read(lambda conn: root_of(conn, grandchild.id)) == root.id
    assert await db.read(lambda conn: root_of(conn, root.id)) == root.id
    assert await db.read(lambda conn: root_of(conn, "nope")) is None


def insert_raw(conn: sqlite3.Connection, rows: list[tuple[str, str | None]]) -> None:
    """Job rows written directly, as a hand-edited or foreign database might hold them."""
    conn.executemany(
        "INSERT INTO job_queue (id, plugin, command, status, submitted_by, created_at, "
        "parent_job_id) VALUES (?, 'p', 'handle', 'succeeded', 'test', "
        "printf('2026-03-01T12:00:00.%06dZ', ?), ?)",
        [(job_id, index, parent) for index, (job_id, parent) in enumerate(rows)],
    )


async def test_a_parent_cycle_ends_every_walk(db: Database) -> None:
    await db.write(lambda conn: insert_raw(conn, [("a", "c"), ("b", "a"), ("c", "b")]))
    tree = await db.read(lambda conn: fetch_job_tree(conn, "a"))
    assert tree is not None and tree["truncated"] is False
    assert tree["children"][0]["job_id"] == "b"
    assert tree["children"][0]["children"][0]["job_id"] == "c"
    assert tree["children"][0]["children"][0]["children"] == []
    assert await settled(db, "a") == TreeState(3, 3, True, False)
    assert await db.read(lambda conn: root_of(conn, "a")) in {"a", "b", "c"}


async def test_a_tree_wider_than_the_node_bound_is_cut_and_says_so(db: Database) -> None:
    rows = [("root", None)] + [(f"c{i}", "root") for i in range(MAX_TREE_NODES)]
    await db.write(lambda conn: insert_raw(conn, rows))
    tree = await db.read(lambda conn: fetch_job_tree(conn, "root"))
    assert tree is not None and tree["truncated"] is True
    assert len(tree["children"]) == MAX_TREE_NODES - 1
    state = await settled(db, "root")
    assert (state.total, state.truncated, state.all_terminal) == (MAX_TREE_NODES, True, False)


async def test_a_tree_deeper_than_the_depth_bound_is_cut_and_says_so(db: Database) -> None:
    chain = [("n0", None)] + [(f"n{i}", f"n{i - 1}") for i in range(1, MAX_TREE_DEPTH + 5)]
    await db.write(lambda conn: insert_raw(conn, chain))
    tree = await db.read(lambda conn: fetch_job_tree(conn, "n0"))
    assert tree is not None and tree["truncated"] is True
    depth, node = 0, tree
    while node["children"]:
        [node] = node["children"]
        depth += 1
    assert depth == MAX_TREE_DEPTH
    state = await settled(db, "n0")
    assert (state.total, state.truncated) == (MAX_TREE_DEPTH + 1, True)
    assert await db.read(lambda conn: root_of(conn, f"n{MAX_TREE_DEPTH}")) == "n0"


# --- a run that fans out at its first step: one root job, one tree ----------------------------


def split_run(instance: str = "i9") -> tuple[Successor, list[Successor]]:
    """A `core.split` root and two branch successors sharing one pipeline-instance root row,
    shaped the way `POST /pipeline/{name}` builds them."""
    shared = ContextSpec(None, "fan", "", {"tenant": "t1", "ductile": {
        "pipeline_instance_id": instance, "route_depth": 0}}, id=f"ctx-{instance}")
    branches = [
        Successor(plugin=plugin, command="handle", payload={"type": "go", "payload": {}},
                  submitted_by="api", source_event_id=source,
                  context=ContextSpec(None, "fan", step_id, {"tenant": "t1"}, parent=shared),
                  max_attempts=3)
        for plugin, step_id, source in (("left", "l", "ev"), ("right", "r", "ev"))
    ]
    root = Successor(plugin=SPLIT_ROOT_PLUGIN, command="handle",
                     payload={"type": "go", "payload": {}}, submitted_by="api",
                     source_event_id=None, context=shared, max_attempts=1)
    return root, branches


async def test_a_split_run_is_one_succeeded_root_with_its_branches_in_one_write(
    queue: Queue, db: Database,
) -> None:
    root, branches = split_run()
    started = await queue.start_run(root, branches, result='{"branches":["fan/l","fan/r"]}',
                                    reason="split into 2 branches")
    run = started.job
    assert (run.plugin, run.status, run.parent_job_id) == (SPLIT_ROOT_PLUGIN, "succeeded", None)
    assert run.event_context_id == "ctx-i9"
    assert [j.parent_job_id for j in started.successors] == [run.id, run.id]
    assert [j.status for j in started.successors] == ["queued", "queued"]
    # The machine's ordinary edges, each recorded; no attempt ran, so none is in the ledger.
    history = [(t.from_status, t.to_status) for t in await queue.transitions(run.id)]
    assert history == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
    assert await queue.attempts(run.id) == []
    [log] = await queue.log_entries(run.id)
    assert log.status == "succeeded" and log.result == '{"branches":["fan/l","fan/r"]}'
    # Every branch's context row grows from the instance root row the root job points at.
    parents = await db.read(lambda conn: [row[0] for row in conn.execute(
        "SELECT parent_id FROM event_context WHERE step_id != '' ORDER BY step_id")])
    assert parents == ["ctx-i9", "ctx-i9"]
    # The branches are claimable at once.
    claimed = await queue.claim_next()
    assert claimed is not None and claimed.job.id == started.successors[0].id


async def test_the_tree_of_any_job_of_a_split_run_is_the_whole_run(
    queue: Queue, db: Database, clock: Clock,
) -> None:
    root, branches = split_run()
    started = await queue.start_run(root, branches, result=None, reason="split into 2 branches")
    left, right = started.successors
    [leaf] = await run(queue, clock, left, step("leaf", "e1"))
    whole = await db.read(lambda conn: fetch_job_tree(conn, started.job.id))
    assert whole is not None and whole["job_id"] == started.job.id
    assert [c["job_id"] for c in whole["children"]] == [left.id, right.id]
    assert whole["decision"] == "split into 2 branches"
    assert whole["context"]["pipeline"] == "fan" and whole["context"]["step_id"] == ""
    assert whole["context"]["baggage"] == {"tenant": "t1"}
    for job_id in (left.id, right.id, leaf.id):
        assert await db.read(lambda conn, j=job_id: fetch_job_tree(conn, j)) == whole
        assert await db.read(lambda conn, j=job_id: split_run_root(conn, j)) == started.job.id
    # The job inspect lineage starts at the same root.
    assert await db.read(lambda conn: root_of(conn, leaf.id)) == started.job.id


async def test_a_job_outside_a_split_run_keeps_its_own_subtree(
    queue: Queue, db: Database, clock: Clock,
) -> None:
    top = await queue.enqueue("first", "handle", {}, "api")
    [child] = await run(queue, clock, top, step("second", "e1"))
    [grandchild] = await run(queue, clock, child, step("third", "e2"))
    tree = await db.read(lambda conn: fetch_job_tree(conn, child.id))
    assert tree is not None and tree["job_id"] == child.id
    assert [c["job_id"] for c in tree["children"]] == [grandchild.id]
    assert await db.read(lambda conn: split_run_root(conn, grandchild.id)) is None
    assert await db.read(lambda conn: split_run_root(conn, "nope")) is None


def test_the_router_and_the_store_name_the_split_root_alike() -> None:
    from ductile.router import SPLIT_PLUGIN

    assert SPLIT_PLUGIN == SPLIT_ROOT_PLUGIN
