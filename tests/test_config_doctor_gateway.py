"""The doctor on the real gateway: `service.admission.validate_config_on_boot` refuses a boot
(exit 78, gate config_doctor_passed) or a reload (409) over a doctor error or an ignored key;
with the switch off the gateway boots and `GET /system/doctor` reports the same findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, make_vault, run_cli, \
    write_config

STRICT = {"admission": {"validate_config_on_boot": True}}
SYSTEM_TOKEN = "system-read-token-0123456789abcdef"


def deep_include(cfg: Path) -> Path:
    """A doctor error (sys_exec enabled without its required `command`) three includes deep."""
    (cfg / "levels").mkdir()
    (cfg / "levels" / "one.yaml").write_text("include: [two.yaml]\n")
    (cfg / "levels" / "two.yaml").write_text("include: [three.yaml]\n")
    (cfg / "levels" / "three.yaml").write_text("plugins:\n  sys_exec: {enabled: true}\n")
    path = cfg / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["include"] = ["levels/one.yaml"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return cfg


def refused(cfg: Path) -> tuple[int, str]:
    gw = Gateway(cfg, env={"HOME": str(cfg.parent)}).start(wait=False)
    code = gw.wait_exit(60)
    return code, gw.stderr()


def test_a_doctor_error_three_includes_deep_refuses_the_boot_naming_the_file(
    tmp_path: Path,
) -> None:
    cfg = deep_include(write_config(tmp_path / "cfg", port=free_port(), service=STRICT))
    code, stderr = refused(cfg)
    assert code == 78, stderr
    assert "(gate config_doctor_passed)" in stderr
    assert ('levels/three.yaml: plugins.sys_exec.config.command: plugin "sys_exec" requires '
            'config key "command"') in stderr
    check = run_cli("config", "check", "--config", str(cfg), "--format", "json",
                    env={"HOME": str(tmp_path)})
    assert check.returncode == 1
    report = json.loads(check.stdout)
    assert "config_doctor_passed" in [e["category"] for e in report["errors"]]
    assert {"category": "plugin_refs", "field": "plugins.sys_exec.config.command",
            "file": "levels/three.yaml",
            "message": 'plugin "sys_exec" requires config key "command"'} in report["errors"]


def test_an_unknown_key_refuses_the_boot_under_strict_decode(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg", port=free_port(),
                       service={**STRICT, "log_levle": "debug"})
    code, stderr = refused(cfg)
    assert code == 78, stderr
    assert "(gate config_doctor_passed)" in stderr
    assert ("configuration validation failed: 1 ignored config key(s): config.yaml: unknown key "
            "service.log_levle; fix or remove the keys, or disable "
            "service.admission.validate_config_on_boot") in stderr


def _with_system_token(cfg: Path, **kw: Any) -> Path:
    make_vault(cfg, {"api-token": TOKEN, "read-token": READ_TOKEN, "sys-token": SYSTEM_TOKEN})
    return write_config(cfg, api={"auth": {"tokens": [
        {"secret_ref": "api-token", "scopes": ["*"]},
        {"secret_ref": "read-token", "scopes": ["plugin:ro", "jobs:ro"]},
        {"secret_ref": "sys-token", "scopes": ["system:ro"]},
    ]}}, **kw)


def test_with_the_switch_off_it_boots_and_system_doctor_reports_the_error(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = deep_include(_with_system_token(tmp_path / "cfg", port=port))
    gw = Gateway(cfg, port=port, env={"HOME": str(tmp_path)}).start()
    try:
        resp = gw.get("/system/doctor", token=SYSTEM_TOKEN)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["ok"] is False and body["captured_at"].endswith("Z")
        assert {"name": "plugin_refs", "ok": False, "severity": "error",
                "detail": 'plugin "sys_exec" requires config key "command"',
                "field": "plugins.sys_exec.config.command",
                "file": "levels/three.yaml"} in body["checks"]
        warnings = [c for c in body["checks"] if c["severity"] == "warning"]
        assert warnings and all(c["ok"] for c in warnings)
        assert gw.get("/system/doctor").status_code == 200  # "*"
        denied = gw.get("/system/doctor", token=READ_TOKEN)
        assert denied.status_code == 403 and denied.json() == {"error": "insufficient scope"}
        assert any(r.get("msg", "").startswith("doctor: configuration problem")
                   and r.get("file") == "levels/three.yaml" for r in gw.log_records())
    finally:
        gw.stop()


def test_a_reload_with_a_doctor_error_is_refused_and_the_old_generation_serves(
    tmp_path: Path,
) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, service=STRICT)
    gw = Gateway(cfg, port=port, env={"HOME": str(tmp_path)}).start()
    try:
        before = gw.wait_healthy()
        deep_include(cfg)
        resp = gw.post("/system/reload")
        assert resp.status_code == 409, resp.text
        assert resp.json()["gate"] == "config_doctor_passed"
        assert "levels/three.yaml" in resp.json()["error"]
        assert gw.wait_healthy()["generation"] == before["generation"]
        run = gw.post("/plugins/echo/run", {"payload": {}, "command": "poll", "sync": True})
        assert run.status_code == 200, run.text
        assert run.json()["result"]["events"][0]["payload"]["message"] == "hi"
    finally:
        gw.stop()
