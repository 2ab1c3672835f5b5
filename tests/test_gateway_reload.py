"""Reload: a new generation is built beside the serving one and swapped only when it is ready."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import yaml

from support.gateway import Gateway, run_cli


def set_echo_message(gw: Gateway, message: str) -> None:
    path = gw.config_dir / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["plugins"]["echo"]["config"]["message"] = message
    path.write_text(yaml.safe_dump(doc))


def echo_message(gw: Gateway) -> str:
    resp = gw.post("/plugins/echo/run", {"payload": {}, "command": "poll", "sync": True})
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]["events"][0]["payload"]["message"]


def wait_for_generation(gw: Gateway, generation: int) -> dict:
    for _ in range(500):
        health = gw.wait_healthy()
        if health["generation"] >= generation:
            return health
        time.sleep(0.01)
    raise AssertionError(f"generation {generation} never came up")


def test_sighup_swaps_in_the_new_config_and_a_new_snapshot(gateway: Gateway) -> None:
    before = gateway.wait_healthy()
    old_job = gateway.post("/plugins/echo/run", {"payload": {}, "sync": True}).json()
    set_echo_message(gateway, "after reload")
    gateway.signal(signal.SIGHUP)
    after = wait_for_generation(gateway, 2)
    assert after["snapshot_id"] != before["snapshot_id"]
    assert echo_message(gateway) == "after reload"
    ledger = run_cli("job", "inspect", old_job["job_id"], "--config", str(gateway.config_dir),
                     "--json")
    assert f'"id": "{before["snapshot_id"]}"' in ledger.stdout  # old job keeps its snapshot
    assert any(r.get("msg") == "config reloaded successfully" for r in gateway.log_records())


def test_cli_reload_signals_the_daemon_through_the_pid_file(gateway: Gateway) -> None:
    set_echo_message(gateway, "via cli")
    result = run_cli("system", "reload", "--config", str(gateway.config_dir))
    assert result.returncode == 0, result.stderr
    assert f"Reload signal sent to PID {gateway.proc.pid}" in result.stdout
    wait_for_generation(gateway, 2)
    assert echo_message(gateway) == "via cli"


def test_api_reload_reports_ok_with_the_new_snapshot(gateway: Gateway) -> None:
    resp = gateway.post("/system/reload")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok" and body["snapshot_id"].startswith("cfg_")
    assert gateway.wait_healthy()["snapshot_id"] == body["snapshot_id"]


def test_a_broken_config_is_refused_and_the_old_generation_keeps_serving(
    gateway: Gateway,
) -> None:
    before = gateway.wait_healthy()
    (gateway.config_dir / "config.yaml").write_text(
        (gateway.config_dir / "config.yaml").read_text() + "\nservice: [not, a, mapping\n")
    resp = gateway.post("/system/reload")
    assert resp.status_code == 409
    assert resp.json()["gate"] == "config_loaded"
    assert "config.yaml" in resp.json()["error"]
    health = gateway.wait_healthy()
    assert health["generation"] == before["generation"]
    assert echo_message(gateway) == "hi"
    assert any(r.get("msg") == "config reload failed" and r.get("gate") == "config_loaded"
               for r in gateway.log_records())


def test_moving_the_database_needs_a_restart(gateway: Gateway) -> None:
    path = gateway.config_dir / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["state"]["path"] = "./elsewhere/state.db"
    path.write_text(yaml.safe_dump(doc))
    resp = gateway.post("/system/reload")
    assert resp.status_code == 409
    body = resp.json()
    assert body["gate"] == "restart_only_keys_unchanged"
    assert "changes to state.path require a full restart" in body["error"]
    assert not (gateway.config_dir / "elsewhere").exists()


def test_reload_needs_system_rw_scope(gateway: Gateway) -> None:
    from support.gateway import READ_TOKEN

    resp = gateway.post("/system/reload", token=READ_TOKEN)
    assert resp.status_code == 403
    assert resp.json() == {"error": "insufficient scope"}


def test_twenty_reloads_under_continuous_traffic_drop_no_request(gateway: Gateway) -> None:
    errors: list[str] = []
    done = threading.Event()
    counts = {"fresh": 0, "kept": 0, "jobs": 0}

    def fresh_connections() -> None:
        while not done.is_set():
            try:
                resp = httpx.get(gateway.url + "/healthz", timeout=10)
                if resp.status_code != 200:
                    errors.append(f"healthz {resp.status_code}")
                counts["fresh"] += 1
            except httpx.HTTPError as exc:
                errors.append(f"fresh: {type(exc).__name__}: {exc}")

    def kept_alive_jobs() -> None:
        with httpx.Client(base_url=gateway.url, headers=gateway.headers(), timeout=30) as client:
            while not done.is_set():
                try:
                    resp = client.post("/plugins/echo/run",
                                       json={"payload": {"n": 1}, "sync": True})
                    if resp.status_code != 200 or resp.json()["status"] != "succeeded":
                        errors.append(f"job {resp.status_code} {resp.text[:200]}")
                    counts["jobs"] += 1
                except httpx.HTTPError as exc:
                    errors.append(f"kept: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=fresh_connections), threading.Thread(target=kept_alive_jobs)]
    for thread in threads:
        thread.start()
    try:
        for i in range(20):
            set_echo_message(gateway, f"round {i}")
            resp = gateway.post("/system/reload")
            assert resp.status_code == 200, resp.text
    finally:
        done.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert counts["fresh"] > 20 and counts["jobs"] > 0
    assert gateway.wait_healthy()["generation"] == 21
    assert echo_message(gateway) == "round 19"


def test_reload_applies_log_level_and_body_limit_and_keeps_uptime(gateway: Gateway) -> None:
    import httpx

    path = gateway.config_dir / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["service"]["log_level"] = "warn"
    doc["api"]["max_body_size"] = 4 * 1024 * 1024
    path.write_text(yaml.safe_dump(doc))
    big = b'{"payload": {"x": "' + b"a" * (2 * 1024 * 1024) + b'"}, "command": "poll"}'
    before = httpx.post(gateway.url + "/plugins/echo/run", content=big,
                        headers=gateway.headers(), timeout=30)
    assert before.status_code == 413
    time.sleep(1.1)
    assert gateway.post("/system/reload").status_code == 200
    after = httpx.post(gateway.url + "/plugins/echo/run", content=big,
                       headers=gateway.headers(), timeout=30)
    assert after.status_code == 202
    assert gateway.wait_healthy()["uptime_seconds"] >= 1  # process uptime, not generation
    lines_before = len(gateway.log_records())
    gateway.post("/plugins/echo/run", {"payload": {}, "sync": True})
    new = gateway.log_records()[lines_before:]
    assert not any(r["level"] == "INFO" for r in new), new
