"""The gateway's performance targets against its peers, read from one pass of the shared
benchmark harness (its `results.jsonl`) and rendered as one Markdown table.

Why a module of its own: the harness writes one JSON line per measured configuration, and which
line and which field carry each target's figure is the knowledge worth testing without a
ten-minute pass (tests/test_benchratios.py feeds it recorded lines). Ratios are only meaningful
within one pass: absolute numbers drift between machines and passes, which is why the harness
measures the peers beside the gateway. A goal that is not met is a number for the reader, not
an assertion: nothing here raises on a slow figure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]

# The harness's names for the systems it measures (the `system` field of a row).
GATEWAY = "gateway"
HUEY = "huey"
WEBHOOK = "webhook"
NODE_RED = "node-red"

NO_FIGURE = "—"


def load_results(path: Path) -> list[Row]:
    """The rows of a results.jsonl, in file order. Blank lines are skipped; anything else that
    is not a JSON object is an error naming the file and line (a truncated pass shows up here
    rather than as a wrong ratio)."""
    rows: list[Row] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg}); the pass that "
                             "wrote it was probably cut short") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def gateway_rows(rows: Iterable[Row]) -> list[Row]:
    """The measured rows of the gateway (its `versions` line records no measurement)."""
    return [r for r in rows if r.get("system") == GATEWAY and r.get("workload") != "versions"]


@dataclass(frozen=True)
class Figure:
    """One number from a pass, with how many of its runs saw someone else's load."""

    value: float
    unit: str
    contended: int = 0

    def text(self) -> str:
        mark = "*" if self.contended else ""
        digits = 2 if abs(self.value) < 10 else 1  # CPU and latency in ms need two
        return f"{self.value:,.{digits}f} {self.unit}{mark}"


@dataclass(frozen=True)
class Metric:
    """Where one figure lives in results.jsonl: the row (system, workload and, for wrk series,
    conns) and the key, read under the row's `median` when the row has one (wrk series and
    repeated phases) and at its top level otherwise (Huey, idle latency, RSS)."""

    system: str
    workload: str
    key: str
    unit: str
    conns: int | None = None
    scale: float = 1.0  # multiplies the stored value, e.g. kB to MiB

    def label(self) -> str:
        at = f" c{self.conns}" if self.conns is not None else ""
        return f"{self.system} {self.workload}{at}"

    def find(self, rows: Sequence[Row]) -> Figure | None:
        """The figure from the last matching row (a pass records each configuration once; the
        last wins if a results file was appended to twice), or None when absent."""
        for row in reversed(rows):
            if row.get("system") != self.system or row.get("workload") != self.workload:
                continue
            if self.conns is not None and row.get("conns") != self.conns:
                continue
            median = row.get("median")
            value = median.get(self.key) if isinstance(median, dict) else None
            if value is None:
                value = row.get(self.key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return None
            contended = row.get("contended_runs", int(bool(row.get("contended"))))
            return Figure(value * self.scale, self.unit, int(contended or 0))
        return None


@dataclass(frozen=True)
class Target:
    """One line of the performance goals: a gateway figure and either a peer figure from the
    same pass with a floor on the ratio gateway/peer (`peer` set), or a ceiling on the gateway
    figure itself (`peer` None)."""

    name: str
    gateway: Metric
    goal: float
    peer: Metric | None = None
    peer_name: str = ""

    def goal_text(self) -> str:
        if self.peer is None:
            return f"≤ {self.goal:g} {self.gateway.unit}"
        return f"≥ {self.goal:.1f}x"


# The targets, each naming the rows the harness writes for it (bench-gateway, bench-huey,
# bench-webhook, bench-nodered). Where the harness measures both gateway plugins, the rows of
# `echob` (dash builtins only, the same echo.sh the peers run) are compared, so each side
# spawns the same program. The webhook → job row exists only with `echo`, which runs `cat`
# too (one exec more per job than the peers): that comparison errs against the gateway.
TARGETS: tuple[Target, ...] = (
    Target("burst: 2,000 queued jobs completed/s",
           Metric(GATEWAY, "burst-e2e-sh", "per_s", "jobs/s"), 1.2,
           Metric(HUEY, "e2e-spawn-sh-processx2", "per_s", "tasks/s"), "Huey processx2"),
    Target("burst: gateway CPU per job (plugin CPU included)",
           Metric(GATEWAY, "burst-e2e-sh", "cpu_ms_per_job", "ms"), 2.0),
    Target("webhook → job succeeded/s (c4, then drain)",
           Metric(GATEWAY, "webhook-e2e-sh-cat", "per_s", "jobs/s"), 1.2,
           Metric(HUEY, "e2e-spawn-sh-processx2", "per_s", "tasks/s"), "Huey processx2"),
    Target("sync run at c4 (HTTP → spawn → answer) vs Node-RED",
           Metric(GATEWAY, "sync-run-spawn-sh", "rps", "req/s", conns=4), 1.0,
           Metric(NODE_RED, "spawn-sh", "rps", "req/s", conns=4), "Node-RED spawn-sh c4"),
    Target("sync run at c4 (HTTP → spawn → answer) vs adnanh/webhook",
           Metric(GATEWAY, "sync-run-spawn-sh", "rps", "req/s", conns=4), 0.4,
           Metric(WEBHOOK, "hmac+spawn-sh", "rps", "req/s", conns=4),
           "adnanh/webhook hmac+spawn-sh c4"),
    Target("signed webhook → 202 at c4",
           Metric(GATEWAY, "webhook-hmac+enqueue", "rps", "req/s", conns=4), 0.6,
           Metric(WEBHOOK, "hmac+spawn-sh", "rps", "req/s", conns=4),
           "adnanh/webhook hmac+spawn-sh c4"),
    Target("idle single job: gateway adds over a bare spawn (p50)",
           Metric(GATEWAY, "idle-latency-sync-sh", "gateway_overhead_p50_ms", "ms"), 2.0),
    Target("boot: exec → first 200 on /healthz (median)",
           Metric(GATEWAY, "boot", "boot_ms", "ms"), 500.0),
    Target("RSS: max under load",
           Metric(GATEWAY, "rss", "rss_load_max_kb", "MiB", scale=1 / 1024), 60.0),
)

PASS, FAIL, NO_DATA = "pass", "FAIL", "no data"


@dataclass(frozen=True)
class Outcome:
    """A target with the figures one pass gave it."""

    target: Target
    gateway: Figure | None
    peer: Figure | None

    @property
    def ratio(self) -> float | None:
        if self.target.peer is None or self.gateway is None or self.peer is None:
            return None
        return self.gateway.value / self.peer.value if self.peer.value else None

    @property
    def verdict(self) -> str:
        """`pass`/`FAIL`, `no data` when the gateway's figure is missing, and the placeholder
        when the peer was not part of the pass (no ratio, so no verdict)."""
        if self.gateway is None:
            return NO_DATA
        if self.target.peer is None:
            return PASS if self.gateway.value <= self.target.goal else FAIL
        ratio = self.ratio
        if ratio is None:
            return NO_FIGURE
        return PASS if ratio >= self.target.goal else FAIL


def evaluate(rows: Sequence[Row], targets: Sequence[Target] = TARGETS) -> list[Outcome]:
    """Every target with its figures from `rows` (one pass)."""
    return [Outcome(t, t.gateway.find(rows), t.peer.find(rows) if t.peer else None)
            for t in targets]


def render(outcomes: Sequence[Outcome], results_dir: Path | None = None) -> str:
    """The Markdown table, a tally and the notes a reader needs to read it."""
    lines = ["### ductile gateway against its peers (one pass of the shared harness)", "",
             "| target | gateway | peer (same pass) | ratio | goal | result |",
             "|---|---:|---:|---:|---|---|"]
    for o in outcomes:
        gw = o.gateway.text() if o.gateway else NO_FIGURE
        if o.target.peer is None:
            peer = "n/a"
        else:
            peer = f"{o.target.peer_name}: {o.peer.text() if o.peer else NO_FIGURE}"
        ratio = f"{o.ratio:.2f}x" if o.ratio is not None else NO_FIGURE
        lines.append(f"| {o.target.name} (`{o.target.gateway.workload}`) | {gw} | {peer} "
                     f"| {ratio} | {o.target.goal_text()} | {o.verdict} |")
    met = sum(o.verdict == PASS for o in outcomes)
    judged = sum(o.verdict in (PASS, FAIL) for o in outcomes)
    lines += ["", f"{met} of {judged} goals met"
              + (f"; {len(outcomes) - judged} not judged (peer not in this pass, or no "
                 "gateway figure)" if judged < len(outcomes) else "") + ".", "",
              "- CPU per job is the gateway process's CPU time plus that of the plugin "
              "processes it reaped (utime+stime+cutime+cstime), so it includes each plugin's "
              "own `sh` and `cat`.",
              "- Ratios are gateway / peer from this pass only; `—`: the peer was not "
              "installed or not selected, so there is no ratio.",
              "- `*`: some runs of that figure saw someone else's load (`contended_runs`)."]
    if results_dir is not None:
        lines.append(f"- Results: `{results_dir}` (results.jsonl, summary.md, logs/).")
    return "\n".join(lines) + "\n"
