"""Shared helpers for the benchmarks: start a gateway with timestamps, read /proc, print lines."""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.gateway import TOKEN, free_port, write_config

ROOT = Path(__file__).resolve().parents[2]
ECHO_RUN = ROOT / "ductile" / "bundled" / "plugins" / "echo" / "run"


def warm_pyc_env(cache_dir: Path) -> dict[str, str]:
    """Environment overrides that let child interpreters write and reuse bytecode under
    `cache_dir` (outside the repo), as an installed gateway would have .pyc files. Without them
    a sandbox with PYTHONDONTWRITEBYTECODE=1 and no __pycache__ recompiles every module at each
    start."""
    return {"PYTHONPYCACHEPREFIX": str(cache_dir), "PYTHONDONTWRITEBYTECODE": ""}


def child_environ(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without NOTIFY_SOCKET, plus `overrides` (an empty value removes the name)."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    for key, value in (overrides or {}).items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def report(name: str, value: float, unit: str, goal: str, extra: str = "") -> None:
    """The one line each benchmark prints: `BENCH <name>: <value> <unit> (goal <goal>)`."""
    text = f"BENCH {name}: {value:.3f} {unit} (goal {goal})"
    if extra:
        text += f" [{extra}]"
    print(text, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class BenchGateway:
    """`python -m ductile system start` with stdout on a pipe, each log line timestamped on
    arrival (monotonic), so the time to "ductile running" is measured without clock skew."""

    config_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0
    lines: list[tuple[float, bytes]] = field(default_factory=list)
    _reader: threading.Thread | None = None
    _stderr: Any = None

    @classmethod
    def fresh(cls, directory: Path, env: dict[str, str] | None = None,
              **config: Any) -> BenchGateway:
        port = free_port()
        write_config(directory, port=port, **config)
        return cls(directory, port, env=dict(env or {}))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def spawn(self) -> None:
        self._stderr = (self.config_dir / "gateway.stderr").open("wb")
        env = child_environ(self.env)
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ductile", "system", "start", "--config",
             str(self.config_dir)],
            stdout=subprocess.PIPE, stderr=self._stderr, env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait_healthy(self, timeout: float = 15.0, interval: float = 0.005) -> float:
        """Poll GET /healthz every `interval`; return the monotonic time of the first 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}: {self.stderr()}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    return time.monotonic()
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(interval)
        raise AssertionError(f"gateway not healthy within {timeout}s: {self.stderr()}")

    def line_time(self, needle: bytes) -> float | None:
        for stamp, line in list(self.lines):
            if needle in line:
                return stamp
        return None

    def rss_kb(self) -> dict[str, int]:
        assert self.proc is not None
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[key] = int(value.split()[0])
        return out

    def stderr(self) -> str:
        path = self.config_dir / "gateway.stderr"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
        return self.proc.returncode

    def __enter__(self) -> BenchGateway:
        self.spawn()
        self.wait_healthy()
        return self

    def __exit__(self, *exc: object) -> None:
        code = self.stop()
        assert code == 0, f"gateway exited {code}: {self.stderr()}"
