"""Several real gateways on one real PostgreSQL (state.backend postgresql).

Each gateway is a real `ductile system start` process with its own config directory, vault
(holding the database password) and node_id; they share one database of the throwaway cluster
the suite starts (tests/support/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.gateway import TOKEN, Gateway, free_port, make_vault, write_config
from support.postgres import PgCluster

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def shared_db(pg_cluster: PgCluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    try:
        yield name
    finally:
        pg_cluster.drop_database(name)


def node_config(directory: Path, cluster: PgCluster, dbname: str, node_id: str, *,
                plugins: dict[str, Any] | None = None, service: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None) -> tuple[Path, int]:
    """A gateway config dir on the shared database, as node `node_id`."""
    port = free_port()
    make_vault(directory, {"api-token": TOKEN, "read-token": "r" * 40,
                           "pg-password": cluster.password})
    state = {
        "path": "./data/state.db", "backend": "postgresql",
        "dsn": f"host={cluster.host} port={cluster.port} dbname={dbname} user=ductile",
        "secret_ref": "pg-password", "node_id": node_id, "pool_size": 4,
        "heartbeat_interval": "500ms", "dead_after": "2s",
    }
    write_config(directory, port=port, plugins=plugins, service=service,
                 extra={"state": state, **(extra or {})})
    return directory, port


def test_one_gateway_runs_jobs_on_postgresql(tmp_path: Path, pg_cluster: PgCluster,
                                             shared_db: str) -> None:
    directory, port = node_config(tmp_path / "a", pg_cluster, shared_db, "gw-a")
    gw = Gateway(directory, port)
    gw.start()
    try:
        health = gw.wait_healthy()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            answer = client.post("/plugins/echo/run", json={"payload": {"n": 1}, "sync": True})
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "succeeded"
        assert health["status"] == "ok"
    finally:
        gw.stop()


def _fires(cluster: PgCluster, dbname: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(cluster.dsn(dbname), row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT f.schedule, f.instant, f.node_id, f.term, "
            "(SELECT count(*) FROM job_queue q WHERE q.dedupe_key LIKE '%%' || f.instant) AS jobs "
            "FROM cluster_fires f ORDER BY f.instant").fetchall()


def test_only_the_leader_fires_and_a_successor_takes_over(
    tmp_path: Path, pg_cluster: PgCluster, shared_db: str
) -> None:
    """Two gateways, one schedule every second: one node leads and fires each instant once;
    when it is killed, the other takes the lease (term + 1) and goes on firing, and no
    instant is fired twice."""
    import signal
    import time

    # Catch-up fires of one pass overlap each other: queue them (the default, skip, would
    # skip a caught-up slot whose predecessor was just enqueued).
    plugins = {"echo": {"enabled": True, "max_outstanding_polls": 10, "schedules": [
        {"id": "tick", "every": "1s", "catch_up": "run_all", "if_running": "queue"}]}}
    gws = {}
    for node in ("gw-a", "gw-b"):
        directory, port = node_config(tmp_path / node, pg_cluster, shared_db, node,
                                      plugins=plugins)
        gws[node] = Gateway(directory, port)
        gws[node].start()
    try:
        for gw in gws.values():
            gw.wait_healthy()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_fires(pg_cluster, shared_db)) < 3:
            time.sleep(0.2)
        first = _fires(pg_cluster, shared_db)
        leaders = {row["node_id"] for row in first}
        assert len(first) >= 3 and len(leaders) == 1, first
        leader = leaders.pop()
        survivor = "gw-b" if leader == "gw-a" else "gw-a"
        gws[leader].proc.send_signal(signal.SIGKILL)
        gws[leader].proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                row["node_id"] == survivor for row in _fires(pg_cluster, shared_db)):
            time.sleep(0.2)
        time.sleep(2.5)
        fires = _fires(pg_cluster, shared_db)
        taken = [row for row in fires if row["node_id"] == survivor]
        assert taken and min(r["term"] for r in taken) > max(r["term"] for r in first), fires
        instants = [row["instant"] for row in fires]
        assert len(instants) == len(set(instants))  # each instant once (the key says so too)
        assert all(row["jobs"] == 1 for row in fires), fires  # one job per fire
        # No gap: the successor caught up the instants its predecessor did not live to fire.
        from datetime import datetime

        moments = [datetime.fromisoformat(i.replace("Z", "+00:00")) for i in instants]
        steps = {round((b - a).total_seconds(), 3) for a, b in zip(moments, moments[1:])}
        assert steps == {1.0}, instants
    finally:
        for gw in gws.values():
            if gw.proc is not None and gw.proc.poll() is None:
                gw.stop()


def test_boot_refuses_a_missing_password_secret_and_an_unreachable_database(
    tmp_path: Path, pg_cluster: PgCluster, shared_db: str
) -> None:
    """The password's secret_ref is judged with the other secrets; a database that does not
    answer refuses the boot at database_opened, naming it (never the password)."""
    import subprocess
    import sys

    directory, port = node_config(tmp_path / "a", pg_cluster, shared_db, "gw-a")
    text = (directory / "config.yaml").read_text().replace("secret_ref: pg-password",
                                                           "secret_ref: pg-missing")
    (directory / "config.yaml").write_text(text)
    done = subprocess.run([sys.executable, "-m", "ductile", "system", "start", "--config",
                           str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert "gate secret_refs_resolved" in done.stderr
    assert "state: secret_ref 'pg-missing' not found in the vault" in done.stderr

    closed = free_port()
    (directory / "config.yaml").write_text(
        text.replace("secret_ref: pg-missing", "secret_ref: pg-password")
            .replace(f"port={pg_cluster.port}", f"port={closed}")
            .replace("connect_timeout: 5s", "connect_timeout: 1s"))
    done = subprocess.run([sys.executable, "-m", "ductile", "system", "start", "--config",
                           str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert "gate database_opened" in done.stderr
    assert f"postgresql://ductile@{pg_cluster.host}:{closed}/{shared_db}" in done.stderr
    assert pg_cluster.password not in done.stderr + done.stdout
