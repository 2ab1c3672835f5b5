"""The CLI as an operator runs it: real subprocesses against real config dirs."""

from __future__ import annotations

import json
from pathlib import Path

from support.gateway import Gateway, run_cli, write_config


def test_config_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    assert run_cli("config", "init", "--dir", str(target)).returncode == 0
    again = run_cli("config", "init", "--dir", str(target))
    assert again.returncode == 1
    assert "already exists; pass --force to overwrite" in again.stderr
    assert run_cli("config", "init", "--dir", str(target), "--force").returncode == 0


def test_config_check_accepts_the_init_config_and_names_errors(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    run_cli("config", "init", "--dir", str(target))
    ok = run_cli("config", "check", "--config", str(target), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["valid"] is True
    (target / "plugins.yaml").write_text("plugins:\n  ghost:\n    enabled: true\n")
    bad = run_cli("config", "check", "--config", str(target))
    assert bad.returncode == 1
    assert "'ghost' is configured but not discoverable" in bad.stdout


def test_config_check_judges_the_vault_and_posture_as_boot_would(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    run_cli("config", "init", "--dir", str(target))
    ok = json.loads(run_cli("config", "check", "--config", str(target), "--json").stdout)
    assert ok["valid"] and ok["posture"] == "gateway"
    # No token but a vault: the management-only posture, not an error.
    (target / "api.yaml").write_text("api: {enabled: true}\n")
    mgmt = json.loads(run_cli("config", "check", "--config", str(target), "--json").stdout)
    assert mgmt["valid"] and mgmt["posture"] == "management-only"
    (target / "api.yaml").write_text(
        "api: {enabled: true, auth: {tokens: [{secret_ref: nope, scopes: ['*']}]}}\n")
    bad = run_cli("config", "check", "--config", str(target))
    assert bad.returncode == 1
    assert "secret_ref 'nope' not found in the vault" in bad.stdout
    # Without the key this user is vault-blind: unresolved refs are warnings, not errors.
    (target / "vault.key").rename(tmp_path / "elsewhere.key")
    blind = json.loads(run_cli("config", "check", "--config", str(target), "--json",
                               env={"HOME": str(tmp_path)}).stdout)
    assert blind["valid"], blind
    assert any("nope" in w["message"] for w in blind["warnings"])


def test_config_check_strict_exits_2_on_warnings(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", service={"log_levle": "debug"})
    loose = run_cli("config", "check", "--config", str(cfg))
    assert loose.returncode == 0 and "log_levle" in loose.stdout
    assert run_cli("config", "check", "--config", str(cfg), "--strict").returncode == 2


def test_commands_without_a_config_say_where_they_looked(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "DUCTILE_CONFIG_DIR": str(tmp_path / "none")}
    for args in (["job", "list"], ["plugin", "list"], ["config", "check"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, args
        assert "no config found" in (result.stderr + result.stdout), args


def test_job_commands_before_the_first_start_explain_the_missing_database(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path / "cfg")
    result = run_cli("job", "list", "--config", str(cfg))
    assert result.returncode == 1
    assert "start the gateway once" in result.stderr


def test_job_inspect_unknown_id_fails_cleanly(gateway: Gateway) -> None:
    result = run_cli("job", "inspect", "nope", "--config", str(gateway.config_dir))
    assert result.returncode == 1
    assert "Inspect failed: job nope not found" in result.stderr


def test_plugin_run_and_job_list_against_the_running_gateway(gateway: Gateway) -> None:
    cfg = str(gateway.config_dir)
    run = run_cli("plugin", "run", "echo", "--config", cfg, "--payload", '{"x": 1}', "--sync",
                  "--json")
    assert run.returncode == 0, run.stderr
    job_id = json.loads(run.stdout)["job_id"]
    assert json.loads(run.stdout)["command"] == "poll"  # the Go CLI's default command
    listed = run_cli("job", "list", "--config", cfg)
    assert job_id in listed.stdout and "succeeded" in listed.stdout
    human = run_cli("job", "inspect", job_id, "--config", cfg)
    for needle in ("plugin:       echo", "Attempts:", "exit 0", "Config snapshot (live at enqueue)",
                   "none -> queued"):
        assert needle in human.stdout, needle


def test_plugin_run_rejects_a_non_object_payload(gateway: Gateway) -> None:
    result = run_cli("plugin", "run", "echo", "--config", str(gateway.config_dir),
                     "--payload", "[1]")
    assert result.returncode == 1
    assert "--payload must be a JSON object" in result.stderr


def test_plugin_run_reports_a_stopped_gateway(tmp_path: Path) -> None:
    from support.gateway import free_port

    cfg = write_config(tmp_path / "cfg", port=free_port())
    result = run_cli("plugin", "run", "echo", "--config", str(cfg))
    assert result.returncode == 1
    assert "cannot reach the gateway" in result.stderr


def test_plugin_list_reads_from_disk(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    result = run_cli("plugin", "list", "--config", str(cfg), "--json")
    assert result.returncode == 0
    rows = json.loads(result.stdout)["plugins"]
    assert rows[0]["name"] == "echo" and rows[0]["enabled"] is True


def test_system_status_healthy_when_serving_and_degraded_when_stopped(gateway: Gateway) -> None:
    cfg = str(gateway.config_dir)
    up = run_cli("system", "status", "--config", cfg, "--json")
    assert up.returncode == 0, up.stdout
    checks = {c["name"]: c for c in json.loads(up.stdout)["checks"]}
    assert checks["pid_lock"]["active_pid"] == gateway.proc.pid
    assert checks["healthz"]["ok"] is True
    gateway.stop()
    down = run_cli("system", "status", "--config", cfg)
    assert down.returncode == 1
    assert "System Status: DEGRADED" in down.stdout
    assert "the gateway is not running" in down.stdout


def test_system_status_is_degraded_for_a_stopped_closed_gateway(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")  # API disabled: nothing to probe over HTTP
    result = run_cli("system", "status", "--config", str(cfg), "--json")
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["pid_lock"]["ok"] is False
    assert checks["state_db"]["ok"] is True  # not created yet, which is fine


def test_system_reload_without_a_daemon_fails_cleanly(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")
    result = run_cli("system", "reload", "--config", str(cfg))
    assert result.returncode == 1
    assert "is the gateway running?" in result.stderr


def test_job_logs_filters_by_status_text_and_time(gateway: Gateway) -> None:
    cfg = str(gateway.config_dir)
    ok = gateway.post("/plugins/echo/run", {"payload": {}, "sync": True}).json()
    result = run_cli("job", "logs", "--config", cfg, "--status", "ok", "--since", "1h", "--json",
                     "--include-result")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["total"] >= 1
    assert body["logs"][0]["job_id"] == ok["job_id"] and "result" in body["logs"][0]
    none = run_cli("job", "logs", "--config", cfg, "--query", "no-such-text-anywhere", "--json")
    assert json.loads(none.stdout)["total"] == 0
    future = run_cli("job", "logs", "--config", cfg, "--since", "2999-01-01T00:00:00Z", "--json")
    assert json.loads(future.stdout)["total"] == 0
    human = run_cli("job", "logs", "--config", cfg)
    assert f"job={ok['job_id']}" in human.stdout
    bad = run_cli("job", "logs", "--config", cfg, "--since", "yesterday")
    assert bad.returncode == 1 and "invalid since timestamp" in bad.stderr
