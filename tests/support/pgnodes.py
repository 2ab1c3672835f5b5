"""Several real gateways on one real PostgreSQL database: configs, recording plugins, probes.

Used by the scale-out chaos test and the scale-out benchmark. Each node is a real `ductile
system start` process with its own config directory and vault (holding the database
password) and its own `state.node_id`, on a database of the suite's throwaway cluster
(support/postgres.py). The database is read straight with psycopg as the password role,
never through a gateway, so a check does not depend on the nodes it checks.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.gateway import TOKEN, Gateway, free_port, make_vault, write_config
from support.plugins import make_plugin
from support.postgres import PgCluster

#: Job statuses that end a job (states/job.yaml).
TERMINAL = ("succeeded", "failed", "timed_out", "dead", "cancelled")


def node_config(directory: Path, cluster: PgCluster, dbname: str, node_id: str, *,
                plugins: dict[str, Any], plugin_roots: list[str],
                service: dict[str, Any] | None = None, api: dict[str, Any] | None = None,
                heartbeat_interval: str = "500ms",
                dead_after: str = "2s", pool_size: int = 4) -> Gateway:
    """A gateway (not started) on the shared database as node `node_id`."""
    port = free_port()
    make_vault(directory, {"api-token": TOKEN, "read-token": "r" * 40,
                           "pg-password": cluster.password})
    state = {
        "path": "./data/state.db", "backend": "postgresql",
        "dsn": f"host={cluster.host} port={cluster.port} dbname={dbname} user=ductile",
        "secret_ref": "pg-password", "node_id": node_id, "pool_size": pool_size,
        "heartbeat_interval": heartbeat_interval, "dead_after": dead_after,
    }
    write_config(directory, port=port, plugins=plugins, plugin_roots=plugin_roots,
                 service=service, api=api, extra={"state": state})
    return Gateway(directory, port)


def recording_plugin(root: Path, name: str, record: Path, *, sleep_s: float) -> Path:
    """A /bin/sh plugin that sleeps `sleep_s` and appends one line per run to `record`:
    `<job_id> <node> <gateway pid> <start ns> <end ns>` (node from its config key `node`).

    The line is written with `>>` (O_APPEND) in one write of well under PIPE_BUF, so lines of
    concurrent runs from any node never interleave. It is written after the sleep: a line is a
    run that got to the end, and its start/end bracket the whole run, so overlapping lines of
    one plugin are runs that really were concurrent."""
    script = (
        "req=$(cat)\n"
        "start=$(date +%s%N)\n"
        # The request is compact JSON: job_id comes before config (protocol.build_request).
        "ids=$(printf '%s' \"$req\" | "
        "sed -n 's/.*\"job_id\":\"\\([^\"]*\\)\".*\"node\":\"\\([^\"]*\\)\".*/\\1 \\2/p')\n"
        f"sleep {sleep_s:g}\n"
        f"echo \"$ids $PPID $start $(date +%s%N)\" >> '{record}'\n"
        "printf '%s' '{\"status\":\"ok\",\"result\":\"ran\"}'\n"
    )
    return make_plugin(root, name, script)


@dataclass(frozen=True)
class Run:
    """One line of a recording plugin's file."""

    job_id: str
    node: str
    gateway_pid: int
    start_ns: int
    end_ns: int


def read_runs(record: Path) -> list[Run]:
    runs = []
    if not record.exists():
        return runs
    for line in record.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            # The request did not parse: the plugin got a truncated one (its gateway was
            # killed while writing it) and ran anyway; job_id and node are "".
            parts = ["", "", *parts]
        if len(parts) != 5:
            raise AssertionError(f"malformed record line in {record}: {line!r}")
        runs.append(Run(parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4])))
    return runs


def max_overlap(runs: list[Run]) -> int:
    """The most runs in progress at one instant (an end at t frees its slot before a start
    at t)."""
    edges = sorted([(r.start_ns, 1) for r in runs] + [(r.end_ns, -1) for r in runs])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def connect(cluster: PgCluster, dbname: str) -> Any:
    """An autocommit psycopg connection as the password role, rows as dicts."""
    import psycopg
    from psycopg.rows import dict_row

    return psycopg.connect(cluster.dsn(dbname), autocommit=True, row_factory=dict_row)


@dataclass
class RunningSampler:
    """A thread counting a plugin's `running` rows in the database every `every_s` seconds,
    keeping the maximum and a histogram (the cluster-wide cap as the store sees it)."""

    cluster: PgCluster
    dbname: str
    plugin: str
    every_s: float = 0.01
    peak: int = 0
    samples: int = 0
    histogram: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RunningSampler:
        self._thread = threading.Thread(target=self._run, name="running-sampler", daemon=True)
        self._thread.start()
        return self

    def halt(self) -> None:
        """Stop sampling without waiting or reporting (a test's cleanup)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop sampling; AssertionError when the sampler itself failed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.error is not None:
            raise AssertionError(f"the sampler failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            with connect(self.cluster, self.dbname) as conn:
                while not self._stop.is_set():
                    row = conn.execute(
                        "SELECT count(*) AS n FROM job_queue "
                        "WHERE plugin = %s AND status = 'running'", (self.plugin,)).fetchone()
                    n = int(row["n"])
                    self.peak = max(self.peak, n)
                    self.histogram[n] += 1
                    self.samples += 1
                    time.sleep(self.every_s)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `predicate()` until it returns a truthy value; AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def backend_pids(db: Any, pid: int, pg_port: int) -> list[int]:
    """The PostgreSQL backends serving process `pid`'s connections: its TCP sockets to
    `pg_port` (from /proc), matched to pg_stat_activity by client port."""
    import os

    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], cols[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == pg_port:
                ports.append(int(local.rsplit(":", 1)[1], 16))
    if not ports:
        return []
    rows = db.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)",
                      (ports,)).fetchall()
    return [int(r["pid"]) for r in rows]


def node_row_locked_by(db: Any, backends: list[int]) -> list[int]:
    """Those of `backends` inside a transaction that read a node row FOR SHARE (a claim or an
    outcome checking that its life is live, cluster.py `is_live`), not yet ended."""
    if not backends:
        return []
    rows = db.execute(
        "SELECT DISTINCT pid FROM pg_locks WHERE pid = ANY(%s) AND granted "
        "AND mode = 'RowShareLock' AND relation = 'cluster_nodes'::regclass",
        (backends,)).fetchall()
    return [int(r["pid"]) for r in rows]


def freeze_mid_write(gw: Gateway, db: Any, pg_port: int, timeout: float = 15.0) -> int:
    """SIGSTOP `gw` while one of its transactions holds its node row FOR SHARE (the worst
    moment to freeze: a peer cannot declare it dead until that transaction ends). Retries,
    with a few milliseconds' freeze each, until the lock is seen held after the stop; returns
    the backend pid holding it."""
    import signal

    assert gw.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backends = backend_pids(db, gw.proc.pid, pg_port)
        if node_row_locked_by(db, backends):
            gw.signal(signal.SIGSTOP)
            held = node_row_locked_by(db, backends)
            if held:
                return held[0]
            gw.signal(signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError(f"{gw.config_dir.name} never seen inside a write within {timeout:g}s")
