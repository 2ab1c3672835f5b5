"""Start-up benchmarks: boot to first healthy /healthz, `ductile --help`, idle RSS.

Boot and --help are measured twice: with the environment as it is (in a sandbox with
PYTHONDONTWRITEBYTECODE=1 and no __pycache__, every start compiles all imported modules) and with
a warm bytecode cache under the pytest tmp dir (what an installed gateway sees)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from support.bench import ROOT, BenchGateway, child_environ, median, report, warm_pyc_env

BOOT_RUNS = 5
HELP_RUNS = 10


@pytest.fixture(scope="module")
def pyc_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return warm_pyc_env(tmp_path_factory.mktemp("pycache"))


def _boot_runs(base: Path, env: dict[str, str]) -> tuple[list[float], list[float]]:
    to_health: list[float] = []
    to_running: list[float] = []
    for i in range(BOOT_RUNS):
        gw = BenchGateway.fresh(base / f"cfg{i}", env=env)
        gw.spawn()
        try:
            healthy_at = gw.wait_healthy(interval=0.005)
            to_health.append(healthy_at - gw.spawned_at)
            deadline = time.monotonic() + 2.0
            while gw.line_time(b"ductile running") is None and time.monotonic() < deadline:
                time.sleep(0.005)
            running_at = gw.line_time(b"ductile running")
            assert running_at is not None, "no 'ductile running' log line"
            to_running.append(running_at - gw.spawned_at)
        finally:
            code = gw.stop()
        assert code == 0, gw.stderr()
    return to_health, to_running


def _runs(values: list[float]) -> str:
    return " ".join(f"{t:.3f}" for t in values)


def test_boot_to_healthz(tmp_path: Path, pyc_env: dict[str, str]) -> None:
    health, running = _boot_runs(tmp_path / "asis", {})
    dont_write = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    report("boot_to_healthz", median(health), "s", "<= 1.0 s",
           f"median of {BOOT_RUNS}, fresh config+db each, environment as is "
           f"(PYTHONDONTWRITEBYTECODE={dont_write!r}); runs {_runs(health)}")
    report("boot_to_running_log", median(running), "s", "n/a",
           f"spawn -> 'ductile running' log line; runs {_runs(running)}")
    warm = BenchGateway.fresh(tmp_path / "warmup", env=pyc_env)  # fills the bytecode cache
    warm.spawn()
    warm.wait_healthy()
    assert warm.stop() == 0, warm.stderr()
    health, running = _boot_runs(tmp_path / "warm", pyc_env)
    report("boot_to_healthz_warm_pyc", median(health), "s", "<= 1.0 s",
           f"bytecode cache warm; runs {_runs(health)}; "
           f"'ductile running' median {median(running):.3f} s")


def _help_times(env: dict[str, str]) -> list[float]:
    exe = ROOT / ".venv" / "bin" / "ductile"
    assert exe.exists(), f"{exe} missing (pip install -e .)"
    times: list[float] = []
    for _ in range(HELP_RUNS):
        start = time.monotonic()
        done = subprocess.run([str(exe), "--help"], capture_output=True, timeout=30,
                              env=child_environ(env))
        times.append(time.monotonic() - start)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert done.stdout.strip()
    return times


def test_cli_help(pyc_env: dict[str, str]) -> None:
    times = _help_times({})
    report("cli_help", median(times), "s", "<= 0.3 s",
           f"median of {HELP_RUNS}, environment as is; min {min(times):.3f} max {max(times):.3f}")
    _help_times(pyc_env)  # warm the cache
    times = _help_times(pyc_env)
    report("cli_help_warm_pyc", median(times), "s", "<= 0.3 s",
           f"bytecode cache warm; min {min(times):.3f} max {max(times):.3f}")


def test_idle_rss(tmp_path: Path) -> None:
    with BenchGateway.fresh(tmp_path / "cfg") as gw:
        time.sleep(2.0)
        rss = gw.rss_kb()
    report("idle_rss", rss["VmRSS"] / 1024, "MB", "<= 80 MB",
           f"after boot + 2 s idle; VmHWM {rss['VmHWM'] / 1024:.1f} MB, "
           f"RssAnon {rss.get('RssAnon', 0) / 1024:.1f} MB, "
           f"RssFile {rss.get('RssFile', 0) / 1024:.1f} MB, threads {rss.get('Threads')}")
