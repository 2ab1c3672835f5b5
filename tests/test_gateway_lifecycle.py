"""The real gateway process: boot to READY, refusals with exit 78, stop, crash, systemd notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest
import yaml

from ductile.store.migrations import SCHEMA_VERSION
from support.gateway import BUNDLED_PLUGINS, TOKEN, Gateway, free_port, run_cli, write_config
from support.plugins import make_plugin
from support.store import build_v1_database


def refused(gw: Gateway) -> tuple[int, str, dict]:
    """Start a gateway expected to refuse; return (exit code, stderr, the refusal log record)."""
    gw.start(wait=False)
    code = gw.wait_exit(30)
    records = [r for r in gw.log_records() if r.get("msg") == "boot refused"]
    return code, gw.stderr(), records[0] if records else {}


def test_config_init_then_start_serves_healthz_and_runs_a_sync_job(tmp_path: Path) -> None:
    cfg = tmp_path / "demo"
    init = run_cli("config", "init", "--dir", str(cfg))
    assert init.returncode == 0, init.stderr
    assert stat.S_IMODE(os.stat(cfg / "api-token").st_mode) == 0o600
    port = free_port()
    api = (cfg / "api.yaml").read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    (cfg / "api.yaml").write_text(api)
    token = (cfg / "api-token").read_text().strip()
    gw = Gateway(cfg, port=port).start()
    try:
        health = gw.wait_healthy(token=token)
        assert health["status"] == "ok" and health["posture"] == "gateway"
        assert health["plugins_loaded"] >= 1
        assert health["config_path"] == str(cfg / "config.yaml")
        resp = gw.post("/plugins/echo/run", {"payload": {"hello": "world"}, "sync": True},
                       token=token)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "succeeded"
        assert body["result"]["events"][0]["payload"]["payload"] == {"hello": "world"}
        inspect = run_cli("job", "inspect", body["job_id"], "--config", str(cfg), "--json")
        assert inspect.returncode == 0, inspect.stderr
        ledger = json.loads(inspect.stdout)
        assert ledger["submitted_by"] == "api"
        assert ledger["attempts"][0]["exit_code"] == 0
        assert ledger["config"]["snapshot"]["id"] == health["snapshot_id"]
        assert ledger["config"]["snapshot"]["source"] == "explicit"
        assert [t["to_status"] for t in ledger["transitions"]] == ["queued", "running",
                                                                   "succeeded"]
    finally:
        assert gw.stop() == 0


def test_second_instance_is_refused_with_exit_78(gateway: Gateway) -> None:
    second = Gateway(gateway.config_dir, port=gateway.port)
    code, stderr, record = refused(second)
    assert code == 78
    assert "another instance may be running" in stderr
    assert record["gate"] == "pid_lock_acquired"
    assert gateway.wait_healthy()["status"] == "ok"  # the first one is untouched


def test_no_config_found_is_refused_naming_the_gate(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "DUCTILE_CONFIG_DIR": str(tmp_path / "nowhere")}
    result = run_cli("system", "start", env=env)
    # /etc/ductile may not exist here; the refusal names every place checked.
    assert result.returncode == 78, result.stderr
    assert "gate config_found" in result.stderr
    assert "no config found" in result.stderr


@pytest.mark.parametrize(
    ("mutate", "gate", "needle"),
    [
        (lambda d: (d / "config.yaml").write_text("service:\n  name: x\n  tick: 1: 2\n"),
         "config_loaded", "config.yaml:3:"),
        (lambda d: _patch(d, service={"max_workers": "two"}), "config_loaded",
         "service.max_workers"),
        (lambda d: _patch(d, include=["a.yaml"], files={"a.yaml": "include: [config.yaml]\n"}),
         "config_loaded", "circular dependency detected"),
        (lambda d: _patch(d, api_token="not-minted"), "api_tokens_resolved",
         "secret_ref 'not-minted' not found in the vault"),
        (lambda d: (d / "config.yaml").write_text((d / "config.yaml").read_text().replace(
            "secret_ref: api-token", "token: literal-value")), "config_loaded",
         "a literal token value is not allowed"),
        (lambda d: _patch(d, plugin_roots=[str(d / "missing-root")]), "plugins_discovered",
         "plugin root does not exist"),
        (lambda d: _patch(d, plugins={"ghost": {"enabled": True}}),
         "enabled_plugins_discoverable", "'ghost' is configured but not discoverable"),
    ],
    ids=["yaml-syntax", "wrong-type", "include-cycle", "unminted-token", "literal-token",
         "missing-root", "undiscoverable"],
)
def test_bad_config_refuses_with_exit_78_naming_gate_and_reason(
    tmp_path: Path, mutate, gate: str, needle: str
) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port)
    mutate(cfg)
    code, stderr, record = refused(Gateway(cfg, port=port))
    assert code == 78, stderr
    assert record.get("gate") == gate, (record, stderr)
    assert needle in stderr
    assert f"gate {gate}" in stderr


def _patch(d: Path, *, service=None, include=None, files=None, api_token=None,
           plugin_roots=None, plugins=None) -> None:
    doc = yaml.safe_load((d / "config.yaml").read_text())
    if service:
        doc["service"].update(service)
    if include:
        doc["include"] = include
    if api_token:
        doc["api"]["auth"]["tokens"][0]["secret_ref"] = api_token
    if plugin_roots:
        doc["plugin_roots"] = plugin_roots
    if plugins:
        doc["plugins"].update(plugins)
    for name, text in (files or {}).items():
        (d / name).write_text(text)
    (d / "config.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize("defect", ["not-executable", "world-writable", "bad-manifest"])
def test_untrusted_enabled_plugin_refuses_boot(tmp_path: Path, defect: str) -> None:
    root = tmp_path / "plugins"
    plugin_dir = make_plugin(root, "shady", 'echo \'{"status":"ok","result":"x"}\'')
    if defect == "not-executable":
        for entry in plugin_dir.iterdir():
            if entry.name != "manifest.yaml":
                entry.chmod(0o644)
        needle = "entrypoint is not executable"
    elif defect == "world-writable":
        plugin_dir.chmod(0o777)
        needle = "plugin directory is world-writable"
    else:
        (plugin_dir / "manifest.yaml").write_text(
            (plugin_dir / "manifest.yaml").read_text().replace("protocol: 2", "protocol: 1"))
        needle = "unsupported protocol version 1"
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, plugin_roots=[str(root)],
                       plugins={"shady": {"enabled": True}})
    code, stderr, record = refused(Gateway(cfg, port=port))
    assert code == 78
    assert record["gate"] == "enabled_plugins_discoverable"
    # The trust failure itself is logged as a warning naming the plugin's path.
    log = (cfg / "gateway.stdout").read_text()
    assert needle in log, log


def test_port_in_use_refuses_at_listeners_bound(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = write_config(tmp_path / "cfg", port=port)
        code, stderr, record = refused(Gateway(cfg, port=port))
    assert code == 78
    assert record["gate"] == "listeners_bound"
    assert f"127.0.0.1:{port}" in stderr


def test_a_version_1_database_is_migrated_at_boot_and_its_queued_job_runs(
    tmp_path: Path,
) -> None:
    """The crash this migration fixes: version 1 stored the payload `42` as an SQLite integer,
    which reached json.loads as an int. Migrated at boot, the queued job runs."""
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port)
    db = cfg / "data" / "state.db"
    build_v1_database(db, {"job-int": "42", "job-object": '{"n":1.50}'})
    before = run_cli("job", "list", "--config", str(cfg))
    assert before.returncode == 1, before.stderr
    assert "start the gateway once (ductile system start) to migrate it" in before.stderr
    gw = Gateway(cfg, port=port).start()
    try:
        bodies = {job_id: _wait_finished(gw, job_id) for job_id in ("job-int", "job-object")}
    finally:
        assert gw.stop() == 0
    assert {job_id: body["status"] for job_id, body in bodies.items()} == {
        "job-int": "succeeded", "job-object": "succeeded"}
    # An object payload reaches the plugin (protocol v2 sends only non-empty objects).
    assert bodies["job-object"]["result"]["events"][0]["payload"]["payload"] == {"n": 1.5}
    [migrated] = [r for r in gw.log_records() if r.get("msg") == "state database migrated"]
    assert (migrated["from_version"], migrated["to_version"]) == (1, SCHEMA_VERSION)
    backup = Path(migrated["backup"])
    assert backup.parent == db.parent and backup.name.startswith("state.db.v1-")
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    listed = run_cli("job", "list", "--config", str(cfg), "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(j["job_id"] for j in json.loads(listed.stdout)["jobs"]) == ["job-int", "job-object"]


def _wait_finished(gw: Gateway, job_id: str) -> dict:
    for _ in range(500):
        body = gw.get(f"/job/{job_id}").json()
        if body.get("status") not in ("queued", "running"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def test_a_database_from_a_newer_release_refuses_boot_and_is_left_untouched(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port)
    db = cfg / "data" / "state.db"
    build_v1_database(db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = db.read_bytes()
    code, stderr, record = refused(Gateway(cfg, port=port))
    assert code == 78, stderr
    assert record["gate"] == "schema_migrated"
    assert "gate schema_migrated" in stderr
    assert (f"state database {db} has schema version {SCHEMA_VERSION + 1} but this ductile "
            f"supports up to {SCHEMA_VERSION}: it was written by a newer release") in stderr
    assert db.read_bytes() == before
    assert not [p for p in db.parent.iterdir() if p.name.endswith(".bak")]
    listed = run_cli("job", "list", "--config", str(cfg))
    assert listed.returncode == 1 and "written by a newer release" in listed.stderr


def test_api_disabled_boots_closed_posture_and_still_runs_jobs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")  # no api block: closed posture, no listener
    gw = Gateway(cfg).start(wait=False)
    try:
        deadline = 100
        while deadline and not any(r.get("msg", "").startswith("ductile running")
                                   for r in gw.log_records()):
            time.sleep(0.05)
            deadline -= 1
        running = [r for r in gw.log_records() if r.get("msg", "").startswith("ductile running")]
        assert running and running[0]["posture"] == "closed" and running[0]["listen"] is None
    finally:
        assert gw.stop() == 0


def test_ready_is_notified_only_after_the_listener_is_bound(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(20)
        port = free_port()
        gw = Gateway(write_config(tmp_path / "cfg", port=port), port=port,
                     env={"NOTIFY_SOCKET": address})
        gw.start(wait=False)
        try:
            message = server.recv(4096).decode()
            assert message.startswith("READY=1")
            # READY means serving: the very first request after it must succeed.
            assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
            gw.signal(signal.SIGTERM)
            assert server.recv(4096).decode().startswith("STOPPING=1")
            assert gw.wait_exit() == 0
        finally:
            gw.stop()


def test_sigterm_lets_a_running_plugin_finish_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port,
                       plugins={"echo": {"enabled": True, "config": {"sleep": 1.5}}})
    gw = Gateway(cfg, port=port).start()
    job_id = gw.post("/plugin/echo/poll", {}).json()["job_id"]
    for _ in range(200):  # wait until it is running
        if gw.get(f"/job/{job_id}").json()["status"] == "running":
            break
        time.sleep(0.01)
    gw.signal(signal.SIGTERM)
    assert gw.wait_exit(30) == 0
    listed = run_cli("job", "list", "--config", str(cfg), "--json")
    jobs = {j["job_id"]: j for j in json.loads(listed.stdout)["jobs"]}
    assert jobs[job_id]["status"] == "succeeded"
    assert any(r.get("msg") == "ductile stopped" for r in gw.log_records())


def test_unit_file_declares_notify_reload_and_no_restart_on_refusal() -> None:
    unit = (Path(__file__).resolve().parent.parent / "docs" / "deploy" / "ductile.service")
    text = unit.read_text()
    for line in ("Type=notify", "Restart=on-failure", "RestartPreventExitStatus=78",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text.splitlines(), line


def test_system_stop_is_refused_because_the_service_manager_owns_it() -> None:
    result = run_cli("system", "stop")
    assert result.returncode == 1
    assert "service manager owns the daemon lifecycle" in result.stderr


def test_help_lists_the_nouns() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for noun in ("system", "config", "plugin", "job"):
        assert noun in result.stdout


def test_bundled_plugins_root_exists() -> None:
    assert (BUNDLED_PLUGINS / "echo" / "manifest.yaml").exists()
    assert TOKEN


def test_plugins_inherit_no_socket_from_the_gateway(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    make_plugin(root, "fdspy",
                'cat >/dev/null; n=$(ls -l /proc/$$/fd | grep -c "socket:\\["); '
                'echo "{\\"status\\":\\"ok\\",\\"result\\":\\"sockets=$n\\"}"')
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port,
                       plugin_roots=[str(root), str(BUNDLED_PLUGINS)],
                       plugins={"fdspy": {"enabled": True}})
    gw = Gateway(cfg, port=port).start()
    try:
        body = gw.post("/plugins/fdspy/run", {"command": "poll", "sync": True}).json()
        assert body["result"]["result"] == "sockets=0", body
    finally:
        gw.stop()
