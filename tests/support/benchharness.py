"""Finding and driving the shared benchmark harness (`run-all` and its `bench-*` scripts), which
lives outside this repository and measures the gateway beside its peers in one pass.

The decisions here (where the harness is, which peers are installed, how the command is wrapped
for root, where a pass writes) are pure functions of the environment and the file system, so
tests/test_benchratios.py checks them without a pass; tests/bench/test_bench_peers.py runs one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HARNESS_ENV = "DUCTILE_BENCH_HARNESS"
PEERS_ENV = "DUCTILE_BENCH_PEERS"
# The harness's own default for BA_ROOT (its README and lib.sh): where setup installs the peers
# and run-all writes results/<stamp>/. We pass BA_ROOT explicitly so both sides agree.
HARNESS_DEFAULT_BA_ROOT = "/tmp/bench-anchors"
# run-all's names for the peers, in the order a pass runs them.
PEERS = ("webhook", "huey", "nodered")
# Root without these two in its bounding set cannot change uid after exec, which the gateway's
# privsep gate accepts as hygiene-only (docs/operator.md, "The three postures").
SETPRIV_ARGS = ("--bounding-set=-setuid,-setgid", "--inh-caps=-all", "--")


def find_harness(environ: Mapping[str, str], repo_root: Path) -> Path | None:
    """$DUCTILE_BENCH_HARNESS when set (even if wrong: `harness_problem` says why), else
    `../shared/bench` beside the repository when it exists, else None."""
    explicit = environ.get(HARNESS_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    default = (repo_root / ".." / "shared" / "bench").resolve()
    return default if default.is_dir() else None


def harness_problem(harness: Path) -> str | None:
    """Why `harness` cannot be run, or None when it looks like the harness."""
    for name in ("run-all", "setup", "bench-gateway"):
        if not os.access(harness / name, os.X_OK):
            return (f"{harness} has no executable {name}: point {HARNESS_ENV} at the "
                    "directory holding the shared harness's run-all")
    return None


def ba_root(environ: Mapping[str, str]) -> Path:
    """Where the harness installs peers and writes results: $BA_ROOT, else its default."""
    return Path(environ.get("BA_ROOT") or HARNESS_DEFAULT_BA_ROOT)


def installed_peers(root: Path, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The peers the harness could run now, judged as its setup leaves them: `webhook` on PATH
    (Debian package), Huey's consumer in $BA_ROOT/venv, Node-RED's package under
    $BA_ROOT/node-red with `node` on PATH."""
    found = []
    if which("webhook"):
        found.append("webhook")
    if os.access(root / "venv" / "bin" / "huey_consumer", os.X_OK):
        found.append("huey")
    node_red = root / "node-red" / "node_modules" / "node-red" / "package.json"
    if which("node") and node_red.is_file():
        found.append("nodered")
    return found


@dataclass(frozen=True)
class PeerChoice:
    """The peers a pass runs, and the requested ones left out because they are not installed."""

    run: tuple[str, ...]
    not_installed: tuple[str, ...]


def choose_peers(requested: str | None, installed: Sequence[str]) -> PeerChoice:
    """$DUCTILE_BENCH_PEERS: unset or `installed` runs every installed peer, `none` none, and
    a comma list those of them that are installed. An unknown name is a ValueError naming the
    variable and the names it takes (a typo would otherwise silently drop a peer)."""
    text = (requested or "installed").strip()
    if text == "installed":
        wanted = list(PEERS)
    elif text == "none":
        wanted = []
    else:
        wanted = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in PEERS]
        if unknown:
            raise ValueError(f"{PEERS_ENV}={requested!r}: unknown peer {', '.join(unknown)}; "
                             f"use 'installed', 'none' or a comma list of {', '.join(PEERS)}")
    run = tuple(name for name in PEERS if name in wanted and name in installed)
    missing = tuple(name for name in PEERS if name in wanted and name not in installed)
    explicit = text not in ("installed", "none")
    return PeerChoice(run, missing if explicit else ())


def harness_command(harness: Path, peers: Sequence[str], setpriv: str | None) -> list[str]:
    """`run-all gateway PEER...`, under `setpriv` without CAP_SETUID/CAP_SETGID when given."""
    command = [str(harness / "run-all"), "gateway", *peers]
    return [setpriv, *SETPRIV_ARGS, *command] if setpriv else command


def results_stamp(now: datetime) -> str:
    """run-all's name for a pass's results directory (UTC, to the second)."""
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def gw_venv_source(python: Path, run: Callable[[list[str]], str | None]) -> Path | None:
    """The ductile package the harness's gateway venv imports (`python` is its interpreter),
    or None when there is no such venv yet (bench-gateway then builds it from GW_SRC). `run`
    executes a command and returns its stdout, or None if it failed."""
    if not os.access(python, os.X_OK):
        return None
    out = run([str(python), "-c", "import ductile, os; print(os.path.dirname(ductile.__file__))"])
    return Path(out.strip()).resolve() if out and out.strip() else None
