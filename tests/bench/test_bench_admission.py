"""What the admission phase costs at boot: the `.checksums` seal verified (config files and every
plugin's keyed fingerprint) and the doctor run, against the same config with both switched off.

A realistic config: 20 enabled plugins, 10 pipelines. The goal is at most 50 ms added to boot.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from support.bench import BenchGateway, median, report, warm_pyc_env
from support.plugins import make_plugin

PLUGINS = 20
PIPELINES = 10
RUNS = 7
OK = "cat >/dev/null; echo '{\"status\":\"ok\",\"result\":\"ok\"}'"


def _config(directory: Path, admission: bool) -> BenchGateway:
    root = directory / "plugins"
    for i in range(PLUGINS):
        make_plugin(root, f"p{i:02d}", OK)
    plugins: dict[str, Any] = {f"p{i:02d}": {"enabled": True} for i in range(PLUGINS)}
    pipelines = [{"name": f"flow{i}", "on": f"p{i:02d}.done",
                  "steps": [{"id": "a", "uses": f"p{(i + 1) % PLUGINS:02d}"},
                            {"id": "b", "uses": f"p{(i + 2) % PLUGINS:02d}"}]}
                 for i in range(PIPELINES)]
    service: dict[str, Any] = {}
    if admission:
        service["admission"] = {"verify_integrity_on_boot": True, "fail_on_drift": True,
                                "validate_config_on_boot": True, "require_api_auth": True}
    gw = BenchGateway.fresh(directory / "cfg", plugins=plugins, plugin_roots=[str(root)],
                            service=service, extra={"pipelines": pipelines})
    if admission:
        _seal(gw.config_dir)
    return gw


def _seal(config_dir: Path) -> None:
    """`ductile config lock`, then attest every plugin (preview, then commit with its code)."""
    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ductile", *args, "--config",
                               str(config_dir)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    cli("config", "lock")
    preview = cli("plugin", "lock", "--all")
    code = re.search(r"ductile plugin lock --all (\w+)", preview)
    assert code is not None, preview
    cli("plugin", "lock", "--all", code.group(1))


def _boot_times(gw: BenchGateway, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(RUNS):
        gw.env = env
        gw.spawn()
        try:
            times.append(gw.wait_healthy(interval=0.005) - gw.spawned_at)
        finally:
            assert gw.stop() == 0, gw.stderr()
    return times


def test_bench_admission_boot_cost(tmp_path: Path) -> None:
    env = warm_pyc_env(tmp_path / "pycache")
    off = _config(tmp_path / "off", admission=False)
    on = _config(tmp_path / "on", admission=True)
    doc = yaml.safe_load((on.config_dir / "config.yaml").read_text())
    assert doc["service"]["admission"]["verify_integrity_on_boot"] is True
    _boot_times(off, env)  # warm the bytecode cache and the page cache
    plain = median(_boot_times(off, env))
    guarded = median(_boot_times(on, env))
    added_ms = (guarded - plain) * 1000
    report("admission_boot_added", added_ms, "ms", "<= 50 ms",
           f"{PLUGINS} plugins, {PIPELINES} pipelines; boot to /healthz median of {RUNS}: "
           f"{plain * 1000:.0f} ms with admission off, {guarded * 1000:.0f} ms with the seal "
           "verified (files and keyed plugin fingerprints) and the doctor on")
