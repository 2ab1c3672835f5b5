"""Scheduler leadership through two leader kills: each (schedule, instant) fires exactly once.

Three real gateways (gw-a, gw-b, gw-c; heartbeat 500 ms, dead after 2 s) on one real
PostgreSQL share an `every: 1s` schedule. Only the holder of the `scheduler` lease fires. The
test finds the leader in the database (cluster_leases), SIGKILLs it, waits for a peer to take
the lease over, starts the killed node again (as systemd would), and does it once more; then
stops every node cleanly. From the database and nothing else:

- each instant fired exactly once: one cluster_fires row and one job (its dedupe key is the
  fire key `plugin:command:id:<instant>`) per instant, and the two sets agree;
- no instant in the window is missing: from the first fire to the last, the instants are the
  1 s grid without a gap, though no node led for a while after each kill (a missed fire is at
  most 60 s late, so the next leader fires it: docs/scheduler.md);
- the lease really moved: the fires were made under at least three terms, by at least two
  nodes.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.gateway import Gateway
from support.pgnodes import connect, node_config, recording_plugin, wait_for
from support.postgres import PgCluster

NODES = ("gw-a", "gw-b", "gw-c")
PLUGIN = "tick"
KILLS = 2
SETTLE_S = 8.0  # of leading after each takeover before the next kill


@pytest.fixture
def shared_db(pg_cluster: PgCluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    try:
        yield name
    finally:
        pg_cluster.drop_database(name)


def leader(db: Any) -> tuple[str, int, int] | None:
    """(node_id, incarnation, term) of the unexpired scheduler lease, or None."""
    row = db.execute("SELECT node_id, incarnation, term FROM cluster_leases "
                     "WHERE name = 'scheduler' AND expires_at > now()").fetchone()
    return (row["node_id"], int(row["incarnation"]), int(row["term"])) if row else None


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_each_instant_fires_once_through_two_leader_kills(
        tmp_path: Path, pg_cluster: PgCluster, shared_db: str) -> None:
    roots = tmp_path / "plugins"
    recording_plugin(roots, PLUGIN, tmp_path / "runs.log", sleep_s=0.01)
    plugin = {
        "enabled": True,
        # queue, not skip: the fires a new leader makes up for must not be skipped because
        # the previous one is still outstanding.
        "max_outstanding_polls": 50,
        "schedules": [{"every": "1s", "catch_up": "run_all", "if_running": "queue"}],
    }
    gateways = {node: node_config(tmp_path / node, pg_cluster, shared_db, node,
                                  plugin_roots=[str(roots)],
                                  plugins={PLUGIN: {**plugin, "config": {"node": node}}})
                for node in NODES}
    db = connect(pg_cluster, shared_db)
    events: list[str] = []
    try:
        for gw in gateways.values():
            gw.start(wait=False)
        for gw in gateways.values():
            gw.wait_healthy(30)
        first = wait_for(lambda: leader(db), 10, "a scheduler leader")
        events.append(f"leader {first}")
        time.sleep(SETTLE_S)
        for _ in range(KILLS):
            holder = leader(db)
            assert holder is not None
            victim = gateways[holder[0]]
            victim.signal(signal.SIGKILL)
            victim.wait_exit(10)
            killed = time.monotonic()

            def successor(killed_holder: tuple[str, int, int] = holder) -> Any:
                now = leader(db)
                return now if now is not None and now != killed_holder else None

            after = wait_for(successor, 15, f"a new leader after {holder} was killed")
            events.append(f"killed leader {holder}; {after} took over after "
                          f"{time.monotonic() - killed:.1f}s")
            victim.start(wait=True, timeout=30)  # as systemd would
            time.sleep(SETTLE_S)
        for gw in gateways.values():
            assert gw.stop() == 0, gw.stderr()[-2000:]

        fires = db.execute("SELECT schedule, instant, node_id, term FROM cluster_fires "
                           "ORDER BY instant").fetchall()
        jobs = db.execute("SELECT dedupe_key, status, submitted_by FROM job_queue "
                          "WHERE plugin = %s", (PLUGIN,)).fetchall()
    finally:
        for gw in gateways.values():
            gw.stop()
        db.close()
        print("\n".join(events))

    # Exactly once: one fire row per (schedule, instant) (its primary key) and one job per
    # fire, nothing else enqueued for the plugin.
    assert fires
    keys = Counter(j["dedupe_key"] for j in jobs)
    assert all(n == 1 for n in keys.values()), [k for k, n in keys.items() if n > 1]
    instants = [_instant(f["instant"]) for f in fires]
    assert len(set(instants)) == len(instants)
    prefix = f"{PLUGIN}:poll:default:"
    assert all(k.startswith(prefix) for k in keys), list(keys)[:5]
    job_instants = {_instant(k.removeprefix(prefix)) for k in keys}
    assert job_instants == set(instants), sorted(job_instants ^ set(instants))[:5]
    # None missing: the 1 s grid from the first fire to the last.
    gaps = [(a, b) for a, b in zip(instants, instants[1:]) if b - a != timedelta(seconds=1)]
    assert not gaps, gaps
    span = (instants[-1] - instants[0]).total_seconds()
    assert span >= KILLS * SETTLE_S, span
    # The lease moved twice, and fires followed it.
    terms = {f["term"] for f in fires}
    assert len(terms) >= KILLS + 1, terms
    assert len({f["node_id"] for f in fires}) >= 2
    events.append(f"{len(fires)} instants over {span:.0f}s, terms {sorted(terms)}, fired by "
                  f"{dict(Counter(f['node_id'] for f in fires))}")
    print(events[-1])
