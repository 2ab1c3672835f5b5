"""Start-up benchmarks: boot to first healthy /healthz, `ductile --help`, idle RSS."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench_util import ROOT, BenchGateway, median, report

BOOT_RUNS = 5
HELP_RUNS = 10


def test_boot_to_healthz(tmp_path: Path) -> None:
    to_health: list[float] = []
    to_running: list[float] = []
    for i in range(BOOT_RUNS):
        gw = BenchGateway.fresh(tmp_path / f"cfg{i}")
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
    report("boot_to_healthz", median(to_health), "s", "<= 1.0 s",
           f"median of {BOOT_RUNS}, fresh config+db each; runs "
           + " ".join(f"{t:.3f}" for t in to_health))
    report("boot_to_running_log", median(to_running), "s", "n/a",
           "spawn -> 'ductile running' log line; runs "
           + " ".join(f"{t:.3f}" for t in to_running))


def test_cli_help() -> None:
    exe = ROOT / ".venv" / "bin" / "ductile"
    assert exe.exists(), f"{exe} missing (pip install -e .)"
    times: list[float] = []
    for _ in range(HELP_RUNS):
        start = time.monotonic()
        done = subprocess.run([str(exe), "--help"], capture_output=True, timeout=30)
        times.append(time.monotonic() - start)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert done.stdout.strip()
    report("cli_help", median(times), "s", "<= 0.3 s",
           f"median of {HELP_RUNS}; min {min(times):.3f} max {max(times):.3f}")


def test_idle_rss(tmp_path: Path) -> None:
    with BenchGateway.fresh(tmp_path / "cfg") as gw:
        time.sleep(2.0)
        rss = gw.rss_kb()
    report("idle_rss", rss["VmRSS"] / 1024, "MB", "<= 80 MB",
           f"VmHWM {rss['VmHWM'] / 1024:.1f} MB, RssAnon {rss.get('RssAnon', 0) / 1024:.1f} MB, "
           f"RssFile {rss.get('RssFile', 0) / 1024:.1f} MB, threads {rss.get('Threads')}")
