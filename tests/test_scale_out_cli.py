"""The CLI's offline readers on a PostgreSQL store, against the same verbs on SQLite.

Two real gateways run the same jobs: one on SQLite (its state.path file), one on the shared
PostgreSQL database of the throwaway cluster (tests/support/postgres.py) as node gw-a. The
offline verbs (`job inspect`, `job list`, `job logs`, `system plugin-facts`,
`system vault-audit`, `system scheduler`, `system breaker`) then run as real `ductile`
subprocesses against each config, and must give the same output: the same JSON shape, and
the same text once ids, times and durations are masked. The verbs that only make sense on
SQLite's file say so and name PostgreSQL's tools.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import yaml

from ductile.store.pg.db import PgDatabase
from ductile.store.pg.migrations import PG_SCHEMA_VERSION

from support.gateway import BUNDLED_PLUGINS, Gateway, free_port, run_cli, write_config
from support.plugins import make_plugin, manifest_dict, respond_script
from support.postgres import PgCluster
from test_scale_out import node_config

PIPELINES = [{"name": "twostep", "on": "twostep.start", "steps": [
    {"id": "first", "uses": "echo", "baggage": {"order.id": "payload.order"}},
    {"id": "second", "uses": "echo"},
]}]
TERMINAL = ("succeeded", "failed", "timed_out", "dead", "skipped", "cancelled")


def _plugins() -> dict[str, Any]:
    return {"echo": {"enabled": True, "schedules": [{"id": "yearly", "cron": "0 3 1 1 *"}]},
            "counter": {"enabled": True}}


def _run_world(gw: Gateway) -> dict[str, str]:
    """The same work on either gateway: a lone job, a two-step run, a plugin fact."""
    lone = gw.post("/plugins/echo/run", {"payload": {"n": 1}, "sync": True})
    assert lone.status_code == 200, lone.text
    fact = gw.post("/plugins/counter/run", {"command": "poll", "sync": True})
    assert fact.status_code == 200, fact.text
    started = gw.post("/pipeline/twostep", {"payload": {"order": 7}, "baggage": {"t": "acme"}})
    assert started.status_code in (200, 202), started.text
    root = started.json()["job_id"]
    deadline = time.monotonic() + 20
    while True:
        tree = gw.get(f"/job/{root}/tree").json()
        if len(tree) >= 2 and all(n["status"] in TERMINAL for n in tree):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"run {root} did not settle: {tree}")
        time.sleep(0.05)
    second = next(n["job_id"] for n in tree if n["step_id"] == "second")
    return {"lone": lone.json()["job_id"], "fact": fact.json()["job_id"], "root": root,
            "second": second}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory,
           pg_cluster: PgCluster) -> Iterator[dict[str, Any]]:
    """A SQLite gateway and a PostgreSQL one, each having run the same work, both stopped
    (the verbs under test read the store with no gateway running)."""
    base = tmp_path_factory.mktemp("scale-cli")
    root = base / "plugins"
    counter = make_plugin(root, "counter", respond_script(
        {"status": "ok", "result": "counted", "state_updates": {"seen": 2}}))
    (counter / "manifest.yaml").write_text(yaml.safe_dump(manifest_dict(
        "counter", fact_outputs=[{"when": {"command": "poll"}, "from": "state_updates",
                                  "fact_type": "counter.snapshot"}])))
    extra = {"pipelines": PIPELINES, "plugin_roots": [str(BUNDLED_PLUGINS), str(root)]}
    dbname = pg_cluster.create_database()
    try:
        pg_dir, pg_port = node_config(base / "pg", pg_cluster, dbname, "gw-a",
                                      plugins=_plugins(), extra=extra)
        sq_port = free_port()
        sq_dir = write_config(base / "sqlite", port=sq_port, plugins=_plugins(),
                              plugin_roots=extra["plugin_roots"],
                              extra={"pipelines": PIPELINES})
        ids = {}
        for name, directory, port in (("pg", pg_dir, pg_port), ("sqlite", sq_dir, sq_port)):
            gw = Gateway(directory, port).start()
            try:
                ids[name] = _run_world(gw)
            finally:
                assert gw.stop() == 0, gw.stderr()
        yield {"pg": pg_dir, "sqlite": sq_dir, "ids": ids, "dbname": dbname,
               "cluster": pg_cluster}
    finally:
        pg_cluster.drop_database(dbname)


def cli(*args: str) -> Any:
    out = run_cli(*args)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


def shape(value: Any) -> Any:
    """The structure of a JSON document: keys kept, each scalar replaced by its type."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


_MASKS = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"cfg_[0-9a-f]{32}"), "<snapshot>"),
    (re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<hash>"),
    (re.compile(r"\b\d+ ms\b"), "<ms>"),
    (re.compile(r"\S*/(pg|sqlite)/\S*"), "<path>"),
]


def masked(text: str) -> str:
    for pattern, mark in _MASKS:
        text = pattern.sub(mark, text)
    return text


def both(worlds: dict[str, Any], *args: str, job: str | None = None) -> tuple[Any, Any]:
    """The same verb against each store (`job` names an id key of `_run_world`, appended)."""
    outs = []
    for name in ("pg", "sqlite"):
        extra = (worlds["ids"][name][job],) if job else ()
        outs.append(cli(*args, *extra, "--config", str(worlds[name])))
    return outs[0], outs[1]


# -- the ledger ----------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["lone", "root", "second", "fact"])
def test_job_inspect_reads_postgresql_as_it_reads_sqlite(worlds: dict[str, Any],
                                                         job: str) -> None:
    pg, sq = both(worlds, "job", "inspect", "--json", job=job)
    report, expected = json.loads(pg.stdout), json.loads(sq.stdout)
    assert shape(report) == shape(expected)
    assert report["job_id"] == worlds["ids"]["pg"][job]
    assert report["status"] == expected["status"] == "succeeded"
    assert [t["to_status"] for t in report["transitions"]] == [
        t["to_status"] for t in expected["transitions"]]
    assert report["config"]["snapshot"]["id"].startswith("cfg_")
    if job in ("root", "second"):
        steps = report["lineage"]["tree"]
        assert report["lineage"]["root_job_id"] == worlds["ids"]["pg"]["root"]
        assert steps["step_id"] == "first"  # the run's root job is its first step
        assert [c["step_id"] for c in steps["children"]] == ["second"]
        assert report["lineage"]["tree"]["children"][0]["decision"] == "ran"
        assert report["hops"] == expected["hops"] >= 1
    else:
        assert report["lineage"] is expected["lineage"] is None
    text_pg, text_sq = both(worlds, "job", "inspect", job=job)
    assert masked(text_pg.stdout) == masked(text_sq.stdout)


def test_job_list_and_logs_read_postgresql_as_they_read_sqlite(worlds: dict[str, Any]) -> None:
    pg, sq = both(worlds, "job", "list", "--json")
    listed, expected = json.loads(pg.stdout), json.loads(sq.stdout)
    assert listed["total"] == expected["total"] == 4  # lone, fact, the run's two steps
    assert shape(listed["jobs"][0]) == shape(expected["jobs"][0])
    assert worlds["ids"]["pg"]["lone"] in {j["job_id"] for j in listed["jobs"]}
    assert masked(both(worlds, "job", "list")[0].stdout) == masked(
        both(worlds, "job", "list")[1].stdout)

    pg, sq = both(worlds, "job", "logs", "--json", "--plugin", "echo", "--include-result")
    logs, expected = json.loads(pg.stdout), json.loads(sq.stdout)
    assert logs["total"] == expected["total"] == 3  # the lone job, the run's two steps
    assert shape(logs) == shape(expected)
    pg, sq = both(worlds, "job", "logs", "--query", "counted")
    assert masked(pg.stdout) == masked(sq.stdout)
    assert "(1 of 1)" in pg.stdout


def test_facts_audit_and_schedules_read_postgresql_as_they_read_sqlite(
    worlds: dict[str, Any],
) -> None:
    pg, sq = both(worlds, "system", "plugin-facts", "counter", "--json")
    facts, expected = json.loads(pg.stdout), json.loads(sq.stdout)
    assert shape(facts) == shape(expected)
    assert facts["facts"][0]["job_id"] == worlds["ids"]["pg"]["fact"]
    assert facts["facts"][0]["fact"] == {"seen": 2}

    pg, sq = both(worlds, "system", "scheduler", "--json")
    schedules, expected = json.loads(pg.stdout), json.loads(sq.stdout)
    assert shape(schedules) == shape(expected)
    assert [(s["plugin"], s["schedule_id"]) for s in schedules["schedules"]] == [
        ("echo", "yearly")]
    assert masked(both(worlds, "system", "breaker")[0].stdout) == "No circuit breakers " \
        "recorded yet.\n"
    pg, sq = both(worlds, "system", "vault-audit", "--json")
    assert shape(json.loads(pg.stdout)) == shape(json.loads(sq.stdout))


def test_offline_pause_and_resume_write_the_shared_database(worlds: dict[str, Any]) -> None:
    """No gateway answers, so pause and resume write the database themselves: here the
    shared one, with the answers and listings SQLite gives."""
    def statuses() -> tuple[str, str]:
        pg, sq = both(worlds, "system", "scheduler", "--json")
        return (json.loads(pg.stdout)["schedules"][0]["status"],
                json.loads(sq.stdout)["schedules"][0]["status"])

    before = statuses()
    pg, sq = both(worlds, "system", "scheduler", "pause", "echo", "--json")
    assert [r["status"] for r in json.loads(pg.stdout)["paused"]] == ["paused_manual"]
    assert shape(json.loads(pg.stdout)) == shape(json.loads(sq.stdout))
    assert statuses() == ("paused", "paused")
    pg, sq = both(worlds, "system", "scheduler", "resume", "echo")
    assert masked(pg.stdout) == masked(sq.stdout)
    assert statuses() == before and before[0] != "paused"


def test_an_offline_vault_read_is_audited_in_the_shared_database(
    worlds: dict[str, Any],
) -> None:
    config = str(worlds["pg"])
    got = cli("vault", "get", "--name", "read-token", "--config", config)
    assert got.stdout.strip() == "r" * 40
    assert "Note: no database" not in got.stderr and "Warning" not in got.stderr, got.stderr
    audit = json.loads(cli("system", "vault-audit", "--json", "--config", config).stdout)
    newest = audit["events"][0]
    assert (newest["op"], newest["target"], newest["outcome"]) == ("read", "read-token", "ok")
    assert not (worlds["pg"] / "data" / "state.db").exists()


def test_the_reader_leaves_no_sqlite_file_and_never_migrates(worlds: dict[str, Any],
                                                            tmp_path: Path) -> None:
    """The PostgreSQL reader creates nothing beside state.path, and an empty database is
    refused, not given a schema (only a gateway's boot creates or migrates one)."""
    assert not (worlds["pg"] / "data" / "state.db").exists()
    cluster: PgCluster = worlds["cluster"]
    empty = cluster.create_database()
    try:
        directory, _ = node_config(tmp_path / "empty", cluster, empty, "gw-x")
        out = run_cli("job", "list", "--config", str(directory))
        assert out.returncode == 1
        assert "no ductile schema in this database yet" in out.stderr, out.stderr
        assert f"/{empty}" in out.stderr and "Traceback" not in out.stderr
        with psycopg.connect(cluster.admin_dsn(empty)) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables "
                                  "WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
    finally:
        cluster.drop_database(empty)


def test_a_newer_schema_is_refused_before_anything_is_read(pg_cluster: PgCluster,
                                                           tmp_path: Path) -> None:
    """A database a newer release migrated: the reader names both versions and reads nothing
    (only a gateway's boot migrates, and never backwards)."""
    name = pg_cluster.create_database()
    try:
        trio.run(_create_schema, pg_cluster.dsn(name))
        with psycopg.connect(pg_cluster.admin_dsn(name), autocommit=True) as conn:
            conn.execute("INSERT INTO schema_version (version, applied_at, description) "
                         "VALUES (%s, 'now', 'a newer release')", (PG_SCHEMA_VERSION + 1,))
        directory, _ = node_config(tmp_path / "newer", pg_cluster, name, "gw-n")
        out = run_cli("job", "inspect", "some-job", "--config", str(directory))
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert (f"has schema version {PG_SCHEMA_VERSION + 1} but this ductile supports up to "
                f"{PG_SCHEMA_VERSION}") in out.stderr, out.stderr
    finally:
        pg_cluster.drop_database(name)


async def _create_schema(dsn: str) -> None:
    db = await PgDatabase.open(dsn, pool_size=1)
    await db.close()


def test_a_wrong_or_missing_password_is_named_not_a_traceback(worlds: dict[str, Any],
                                                              tmp_path: Path) -> None:
    cluster: PgCluster = worlds["cluster"]
    directory, _ = node_config(tmp_path / "wrong", cluster, worlds["dbname"], "gw-w")
    doc = yaml.safe_load((directory / "config.yaml").read_text())
    doc["state"]["secret_ref"] = "no-such-secret"
    (directory / "config.yaml").write_text(yaml.safe_dump(doc))
    out = run_cli("job", "list", "--config", str(directory))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "state.secret_ref names the vault secret no-such-secret" in out.stderr
    assert "ductile vault set --name no-such-secret" in out.stderr


# -- the verbs that are SQLite's file only -------------------------------------------------


def test_system_backup_on_postgresql_names_pg_dump(worlds: dict[str, Any],
                                                   tmp_path: Path) -> None:
    out = run_cli("system", "backup", "--out", str(tmp_path / "b.tar.gz"),
                  "--config", str(worlds["pg"]))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "state.backend is postgresql" in out.stderr
    assert "pg_dump" in out.stderr and "pg_basebackup" in out.stderr
    assert not (tmp_path / "b.tar.gz").exists()
    # The config and vault archive has no database in it: it works on either backend.
    cli("config", "backup", "--out", str(tmp_path / "c.tar.gz"), "--config", str(worlds["pg"]))
    assert (tmp_path / "c.tar.gz").stat().st_size > 0


def test_selfcheck_checks_the_shared_database_and_names_amcheck(worlds: dict[str, Any],
                                                                tmp_path: Path) -> None:
    out = run_cli("system", "selfcheck", "--json", "--config", str(worlds["pg"]))
    report = json.loads(out.stdout)
    database = next(c for c in report["checks"] if c["name"] == "database")
    assert database["ok"], database
    assert "schema version" in database["detail"] and "amcheck" in database["detail"]
    assert database["path"].startswith("postgresql://ductile@")

    cluster: PgCluster = worlds["cluster"]
    directory, _ = node_config(tmp_path / "down", cluster, worlds["dbname"], "gw-d")
    doc = yaml.safe_load((directory / "config.yaml").read_text())
    doc["state"]["dsn"] = doc["state"]["dsn"].replace(f"port={cluster.port}",
                                                      f"port={free_port()}")
    (directory / "config.yaml").write_text(yaml.safe_dump(doc))
    out = run_cli("system", "selfcheck", "--json", "--config", str(directory))
    assert out.returncode == 1, out.stdout
    database = next(c for c in json.loads(out.stdout)["checks"] if c["name"] == "database")
    assert not database["ok"] and "cannot connect" in database["detail"], database
    assert "Traceback" not in out.stderr
