"""Operating a cluster: `GET /system/nodes`, the `cluster` of `/healthz`, `ductile system
nodes` and the cluster line of `ductile system status`.

The answers' shapes are pure functions of a snapshot (tested first, with no database); the
cache under `/healthz` is tested on a real PostgreSQL with trio's manual clock; then real
gateways share one real database: both listed alive, a clean stop shows `stopped`, a SIGKILLed
node shows `dead` on the survivor once `state.dead_after` (2 s here) has passed. A SQLite
gateway answers that it is alone."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from ductile import __version__
from ductile.cli.nodes import SINGLE_GATEWAY_TEXT, format_age, render_nodes
from ductile.errors import StoreError
from ductile.planes.api.cluster import (CachedCluster, ClusterSnapshot, health_cluster, leader,
                                        nodes_answer)
from ductile.store.pg import cluster as pgc
from ductile.store.pg.cluster import LeaseRow, NodeIdentity, NodeRow, PgCluster
from ductile.store.pg.db import PgDatabase
from support.gateway import READ_TOKEN, Gateway, free_port, run_cli
from support.postgres import PgCluster as PgServer
from test_scale_out import node_config, shared_db  # noqa: F401 - shared_db is a fixture

ME = NodeIdentity("gw-a", 3)


def _row(node_id: str, incarnation: int, status: str, age: float = 0.25) -> NodeRow:
    return NodeRow(node_id, incarnation, status, f"{node_id}.host", 100 + incarnation, "1.2.3",
                   "2026-12-03T06:00:00.000000Z", "2026-12-03T06:10:00.000000Z", age)


def _lease(node_id: str | None, expires_in_s: float, *, incarnation: int = 1,
           term: int = 4, name: str = "scheduler") -> LeaseRow:
    return LeaseRow(name, node_id, incarnation if node_id else None, term, expires_in_s)


# -- the answers, from a snapshot ------------------------------------------------------------


def test_nodes_answer_lists_every_row_and_names_the_unexpired_leader() -> None:
    snapshot = ClusterSnapshot(ME, (_row("gw-a", 3, "alive"), _row("gw-b", 1, "stopped", 42.0),
                                    _row("gw-c", 2, "dead", -0.001)),
                               (_lease("gw-b", 7.25, incarnation=1),))
    answer = nodes_answer(snapshot)
    assert answer["backend"] == "postgresql"
    assert answer["node"] == {"node_id": "gw-a", "incarnation": 3}
    assert answer["leader"] == {"node_id": "gw-b", "incarnation": 1, "term": 4,
                                "expires_in_s": 7.25}
    assert [(n["node_id"], n["status"]) for n in answer["nodes"]] == [
        ("gw-a", "alive"), ("gw-b", "stopped"), ("gw-c", "dead")]
    assert answer["nodes"][0] == {
        "node_id": "gw-a", "incarnation": 3, "status": "alive", "hostname": "gw-a.host",
        "pid": 103, "version": "1.2.3", "started_at": "2026-12-03T06:00:00.000000Z",
        "heartbeat_at": "2026-12-03T06:10:00.000000Z", "heartbeat_age_s": 0.25}
    # Clocks read in one statement can put "now" a hair before the heartbeat: never negative.
    assert answer["nodes"][2]["heartbeat_age_s"] == 0.0


@pytest.mark.parametrize("lease", [
    _lease("gw-b", 0.0),            # expired (released at a clean stop, or freed as dead)
    _lease("gw-b", -3.0),           # lapsed
    _lease(None, 5.0),              # never held
    _lease("gw-b", 5.0, name="x"),  # another lease is not leadership
])
def test_no_leader_without_an_unexpired_scheduler_lease(lease: LeaseRow) -> None:
    snapshot = ClusterSnapshot(ME, (_row("gw-a", 3, "alive"),), (lease,))
    assert leader(snapshot) is None
    assert nodes_answer(snapshot)["leader"] is None
    assert health_cluster(snapshot)["leader_node_id"] is None


def test_health_cluster_counts_the_other_alive_nodes_only() -> None:
    snapshot = ClusterSnapshot(ME, (_row("gw-a", 3, "alive"), _row("gw-b", 1, "alive"),
                                    _row("gw-c", 1, "alive"), _row("gw-d", 5, "dead"),
                                    _row("gw-e", 1, "stopped")),
                               (_lease("gw-a", 9.0, incarnation=3),))
    assert health_cluster(snapshot) == {"backend": "postgresql", "node_id": "gw-a",
                                        "incarnation": 3, "peers_alive": 2,
                                        "leader_node_id": "gw-a"}


# -- the CLI's table, from an answer -------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0.04, "0.0s ago"), (-1.0, "0.0s ago"), (1.26, "1.3s ago"), (42.9, "42s ago"),
    (303, "5m03s ago"), (7500, "2h05m ago"), (2 * 86400 + 3 * 3600, "2d03h ago")])
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_render_nodes_marks_the_leader_and_this_gateway() -> None:
    snapshot = ClusterSnapshot(ME, (_row("gw-a", 3, "alive"), _row("gw-b", 1, "stopped", 75)),
                               (_lease("gw-a", 9.0, incarnation=3, term=2),))
    lines = render_nodes(nodes_answer(snapshot)).splitlines()
    assert lines[0] == ("Cluster (postgresql): 1 alive of 2 node(s); leader gw-a (incarnation "
                        "3, term 2); this gateway is gw-a (incarnation 3)")
    assert lines[1].split() == ["NODE", "INCARNATION", "STATUS", "HEARTBEAT", "HOST", "PID",
                                "VERSION", "LEADER"]
    assert lines[2].split() == ["gw-a", "(this)", "3", "alive", "0.2s", "ago", "gw-a.host",
                                "103", "1.2.3", "*"]
    assert lines[3].split() == ["gw-b", "1", "stopped", "1m15s", "ago", "gw-b.host", "101",
                                "1.2.3"]
    # The columns line up: every row's STATUS starts where the header's does.
    column = lines[1].index("STATUS")
    assert lines[2][column:].startswith("alive") and lines[3][column:].startswith("stopped")


def test_render_nodes_on_sqlite_says_single_gateway() -> None:
    assert render_nodes({"backend": "sqlite", "node": None, "leader": None,
                         "nodes": []}) == SINGLE_GATEWAY_TEXT


# -- the cache under /healthz, on a real database --------------------------------------------


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[PgDatabase]:
    database = await PgDatabase.open(pg_dsn, pool_size=4)
    yield database
    await database.close()


async def _join(db: PgDatabase, node_id: str) -> PgCluster:
    return await PgCluster.join(db, node_id, hostname="testhost", pid=1, version="0.1.0")


def _counting(db: PgDatabase) -> tuple[Callable[[], Any], list[int]]:
    """The supervisor's read (nodes and leases in one transaction), counting its calls."""
    reads = [0]

    async def read() -> Any:
        reads[0] += 1
        return await db.read(lambda conn: (pgc.nodes(conn), pgc.leases(conn)))

    return read, reads


async def test_the_cache_answers_a_read_younger_than_max_age_again(
        pg: PgDatabase, mock_clock: trio.testing.MockClock) -> None:
    a = await _join(pg, "node-a")
    read, reads = _counting(pg)
    cache = CachedCluster(a.me, read)
    first = await cache.snapshot(1.0)
    assert [n.node_id for n in first.nodes] == ["node-a"] and reads == [1]
    await _join(pg, "node-b")
    mock_clock.jump(0.9)
    assert await cache.snapshot(1.0) is first and reads == [1]  # still fresh enough
    mock_clock.jump(0.2)
    second = await cache.snapshot(1.0)
    assert sorted(n.node_id for n in second.nodes) == ["node-a", "node-b"] and reads == [2]
    assert await cache.snapshot(0.0) is not second and reads == [3]  # 0: read now


async def test_concurrent_requests_for_a_stale_cache_share_one_read(
        pg: PgDatabase, mock_clock: trio.testing.MockClock) -> None:
    a = await _join(pg, "node-a")
    read, reads = _counting(pg)
    cache = CachedCluster(a.me, read)
    got: list[ClusterSnapshot] = []

    async def ask() -> None:
        got.append(await cache.snapshot(1.0))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert reads == [1] and len(got) == 5 and all(s is got[0] for s in got)


async def test_a_failed_read_is_not_cached(pg_dsn: str) -> None:
    database = await PgDatabase.open(pg_dsn, pool_size=2)
    a = await _join(database, "node-a")
    read, reads = _counting(database)
    cache = CachedCluster(a.me, read)
    await database.close()
    with pytest.raises(StoreError, match="is closed"):
        await cache.snapshot(1.0)
    with pytest.raises(StoreError, match="is closed"):  # asked again at once: read again
        await cache.snapshot(1.0)
    assert reads == [2]


# -- real gateways on one database ------------------------------------------------------------


def _wait_for(probe: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `probe` until it answers something truthy; fail naming `what` and the last
    answer seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s; last: {last!r}")


def _nodes(gw: Gateway) -> dict[str, Any]:
    answer = gw.get("/system/nodes")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _status_of(gw: Gateway, node_id: str) -> str | None:
    return next((n["status"] for n in _nodes(gw)["nodes"] if n["node_id"] == node_id), None)


def _with_leader(cluster: dict[str, Any]) -> dict[str, Any] | None:
    return cluster if cluster["leader_node_id"] else None


def _start(directory: Path, port: int) -> Gateway:
    gw = Gateway(directory, port)
    gw.start()
    return gw


def test_two_gateways_list_each_other_and_a_clean_stop_shows_stopped(
        tmp_path: Path, pg_cluster: PgServer, shared_db: str) -> None:
    dir_a, port_a = node_config(tmp_path / "a", pg_cluster, shared_db, "gw-a")
    dir_b, port_b = node_config(tmp_path / "b", pg_cluster, shared_db, "gw-b")
    a = _start(dir_a, port_a)
    b: Gateway | None = None
    try:
        b = _start(dir_b, port_b)
        answer = _nodes(a)
        assert answer["backend"] == "postgresql"
        assert answer["node"] == {"node_id": "gw-a", "incarnation": 1}
        rows = {n["node_id"]: n for n in answer["nodes"]}
        assert sorted(rows) == ["gw-a", "gw-b"]
        for node_id, gw in (("gw-a", a), ("gw-b", b)):
            row = rows[node_id]
            assert row["status"] == "alive" and row["incarnation"] == 1
            assert row["pid"] == gw.proc.pid  # type: ignore[union-attr]
            assert row["hostname"] == socket.gethostname()
            assert row["version"] == __version__
            assert 0 <= row["heartbeat_age_s"] < 2.0  # beats every 500 ms
        # Leadership is the scheduler lease's unexpired holder: one of the two, renewed at
        # every heartbeat.
        lead = _wait_for(lambda: _nodes(a)["leader"], "a scheduler leader")
        assert lead["node_id"] in rows and lead["term"] >= 1 and lead["expires_in_s"] > 0
        # B's view: the same rows, B as this node.
        assert _nodes(b)["node"] == {"node_id": "gw-b", "incarnation": 1}

        # /healthz reads through a cache of about a second: it may predate the lease.
        health = _wait_for(lambda: _with_leader(b.get("/healthz").json()["cluster"]),
                           "a leader in B's healthz")
        assert health == {"backend": "postgresql", "node_id": "gw-b", "incarnation": 1,
                          "peers_alive": 1, "leader_node_id": lead["node_id"]}
        # The probe without a token says no more than before.
        assert "cluster" not in httpx.get(b.url + "/healthz", timeout=5.0).json()

        printed = run_cli("system", "nodes", "--config", str(dir_a))
        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.splitlines()
        assert lines[0].startswith("Cluster (postgresql): 2 alive of 2 node(s);")
        table = {line.split()[0]: line for line in lines[2:]}
        assert sorted(table) == ["gw-a", "gw-b"]
        assert "(this)" in table["gw-a"] and "(this)" not in table["gw-b"]
        assert all(" alive " in line for line in table.values())
        assert [n for n, line in table.items() if line.endswith(" *")] == [lead["node_id"]]
        as_json = run_cli("system", "nodes", "--config", str(dir_a), "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert sorted(n["node_id"] for n in json.loads(as_json.stdout)["nodes"]) == [
            "gw-a", "gw-b"]

        status = run_cli("system", "status", "--config", str(dir_a))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "- cluster: OK - node gw-a (incarnation 1), 1 other node(s) alive" in \
            status.stdout
        assert "shared PostgreSQL store postgresql://ductile@" in status.stdout

        assert b.stop() == 0
        assert _status_of(a, "gw-b") == "stopped"  # retired at the stop, not after dead_after
        # /healthz reads through a cache of about a second.
        _wait_for(lambda: a.get("/healthz").json()["cluster"]["peers_alive"] == 0,
                  "A's healthz counts no alive peer after B stopped")
        after = run_cli("system", "nodes", "--config", str(dir_a))
        assert after.returncode == 0, after.stderr
        assert " stopped " in next(line for line in after.stdout.splitlines()
                                   if line.startswith("gw-b"))
        # B released the lease if it held it: A leads (at once, not after it expires).
        assert _wait_for(lambda: (_nodes(a)["leader"] or {}).get("node_id") == "gw-a",
                         "gw-a leading alone", timeout=2.0)
    finally:
        if b is not None:
            b.stop()
        a.stop()


def test_a_killed_gateway_shows_dead_on_the_survivor_after_dead_after(
        tmp_path: Path, pg_cluster: PgServer, shared_db: str) -> None:
    dir_a, port_a = node_config(tmp_path / "a", pg_cluster, shared_db, "gw-a")
    dir_c, port_c = node_config(tmp_path / "c", pg_cluster, shared_db, "gw-c")
    a = _start(dir_a, port_a)
    c: Gateway | None = None
    try:
        c = _start(dir_c, port_c)
        assert _status_of(a, "gw-c") == "alive"
        c.signal(signal.SIGKILL)
        c.wait_exit()
        killed_at = time.monotonic()
        # Silent, but not for long enough yet (dead_after is 2 s): still alive.
        assert _status_of(a, "gw-c") == "alive"
        _wait_for(lambda: _status_of(a, "gw-c") == "dead", "gw-c declared dead on gw-a")
        # Declared within a few of the survivor's heartbeats once dead_after had passed...
        assert time.monotonic() - killed_at < 2.0 + 4.0
        # ...and not before: by the database's clock, its last beat is older than dead_after.
        row = next(n for n in _nodes(a)["nodes"] if n["node_id"] == "gw-c")
        assert row["heartbeat_age_s"] >= 2.0
        assert _status_of(a, "gw-a") == "alive"
        # A dead leader's lease is freed with the declaration: the survivor leads.
        assert _wait_for(lambda: (_nodes(a)["leader"] or {}).get("node_id") == "gw-a",
                         "gw-a leading after gw-c died", timeout=3.0)
    finally:
        if c is not None:
            c.stop()
        a.stop()


# -- a SQLite gateway is alone ------------------------------------------------------------------


def test_a_sqlite_gateway_answers_that_it_is_alone(gateway: Gateway) -> None:
    answer = gateway.get("/system/nodes")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"backend": "sqlite", "node": None, "leader": None, "nodes": []}
    assert gateway.get("/system/nodes", token=READ_TOKEN).status_code == 403  # system:ro
    assert gateway.get("/system/nodes", token="not-a-token").status_code == 401
    assert "cluster" not in gateway.get("/healthz").json()

    config = str(gateway.config_dir)
    printed = run_cli("system", "nodes", "--config", config)
    assert (printed.returncode, printed.stdout.strip()) == (0, SINGLE_GATEWAY_TEXT)
    as_json = run_cli("system", "nodes", "--config", config, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["backend"] == "sqlite"
    status = run_cli("system", "status", "--config", config)
    assert "- cluster:" not in status.stdout and "- healthz: OK" in status.stdout
    refused = run_cli("system", "nodes", "--config", config, "--api-key", READ_TOKEN)
    assert refused.returncode == 1
    assert "system nodes needs a token with system:ro" in refused.stderr


def test_system_nodes_says_what_to_check_when_no_gateway_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_cli("system", "nodes", "--api-url", url, "--api-key", "any-token")
    assert done.returncode == 1 and done.stdout == ""
    assert f"cannot reach the gateway at {url}/system/nodes" in done.stderr
    assert "is it running (ductile system status)?" in done.stderr
