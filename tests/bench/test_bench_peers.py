"""The gateway beside its peers: one pass of the shared benchmark harness (`run-all gateway`
plus each installed peer: adnanh/webhook, Huey, Node-RED), then the table of targets with the
gateway's figure, the peer's figure from the same pass, the ratio and the goal.

The harness lives outside the repository ($DUCTILE_BENCH_HARNESS, else ../shared/bench); its
README describes the workloads. This test fails only when the pass itself fails or measures no
gateway row: goals not met are printed (and written to ratios.md), not asserted, because a
benchmark on a shared machine is a measurement, not a verdict. See docs/benchmarks.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ductile.privsep.posture import read_capability
from support.bench import ROOT, child_environ, warm_pyc_env
from support.benchharness import (
    HARNESS_ENV,
    PEERS_ENV,
    ba_root,
    choose_peers,
    find_harness,
    gw_venv_source,
    harness_command,
    harness_problem,
    installed_peers,
    results_stamp,
)
from support.benchratios import evaluate, gateway_rows, load_results, render

SETUP_TIMEOUT_S = 900  # setup may apt-get or npm install the peers on a fresh machine


def _pass_timeout(runs: int) -> float:
    """A bound on one pass: RUNS=1 with every peer takes about 10 minutes on a quiet box; the
    quiet-box gate may wait up to QUIET_MAX_WAIT (180 s) before each measured run."""
    return float(os.environ.get("DUCTILE_BENCH_TIMEOUT", 1200 + 900 * runs))


def _stdout_of(command: list[str]) -> str | None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout if done.returncode == 0 else None


def _run_bounded(command: list[str], env: dict[str, str], timeout: float) -> int:
    """Run `command` from the project root, its output on ours (the harness reports progress
    as it goes); on timeout SIGTERM its process group, so the harness's EXIT trap stops the
    servers it started, then fail."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pytest.fail(f"{command[0]} ... did not finish in {timeout:.0f} s (DUCTILE_BENCH_TIMEOUT)")


def _fresh_results_dir(root: Path) -> Path:
    """results/<UTC stamp> as run-all names it, a new one (a pass started in the same second
    elsewhere would otherwise share, and append to, its results.jsonl)."""
    while True:
        candidate = root / "results" / results_stamp(datetime.now(timezone.utc))
        if not candidate.exists():
            return candidate
        time.sleep(1.0)


def test_gateway_beside_its_peers(tmp_path: Path) -> None:
    harness = find_harness(os.environ, ROOT)
    if harness is None:
        pytest.skip(f"shared benchmark harness not found: set {HARNESS_ENV} to its directory "
                    "(the one holding run-all), or place it at ../shared/bench beside the repo")
    problem = harness_problem(harness)
    if problem is not None:
        if os.environ.get(HARNESS_ENV):
            pytest.fail(problem)
        pytest.skip(problem)

    # The gateway refuses to boot as a root that can change uid with the harness's config (no
    # accounts, no service.unconfined). Without CAP_SETUID/CAP_SETGID it is hygiene-only.
    setpriv = None
    if read_capability().can_switch:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running with the capability to change uid (root) and setpriv "
                        "(util-linux) is not installed: the gateway would refuse the harness's "
                        "config; install util-linux or run as an unprivileged user")

    root = ba_root(os.environ)
    try:
        choice = choose_peers(os.environ.get(PEERS_ENV), installed_peers(root))
    except ValueError as exc:
        pytest.fail(str(exc))
    gw_src = Path(os.environ.get("GW_SRC") or ROOT).resolve()
    source = gw_venv_source(root / "gw-venv" / "bin" / "python", _stdout_of)
    if source is not None and gw_src not in source.parents:
        pytest.fail(f"the harness's gateway venv {root / 'gw-venv'} imports ductile from "
                    f"{source}, not from {gw_src}: remove that venv (bench-gateway rebuilds it "
                    "from the current checkout) or set BA_ROOT to another directory")

    try:
        runs = int(os.environ.get("RUNS") or 1)
    except ValueError:
        pytest.fail(f"RUNS={os.environ['RUNS']!r}: give a whole number of measured runs")
    given = os.environ.get("BA_RESULTS")
    results = Path(given) if given else _fresh_results_dir(root)
    # A bytecode cache for every Python the pass starts: an installed gateway has .pyc files,
    # and without them (PYTHONDONTWRITEBYTECODE=1, no __pycache__) each boot compiles ductile.
    env = child_environ({**warm_pyc_env(tmp_path / "pycache"), "RUNS": str(runs),
                         "BA_ROOT": str(root), "BA_RESULTS": str(results),
                         "GW_SRC": str(gw_src)})
    print(f"\n[bench] harness {harness}; peers: {' '.join(choice.run) or 'none'}"
          + (f" (not installed, left out: {' '.join(choice.not_installed)})"
             if choice.not_installed else "")
          + f"; RUNS={runs}; results {results}"
          + (f"; without CAP_SETUID/CAP_SETGID via {setpriv}" if setpriv else ""), flush=True)

    if setpriv:
        # setup may need apt-get, whose sandbox changes uid: run it before dropping the
        # capability, so run-all's own call to it finds everything installed.
        status = _run_bounded([str(harness / "setup")], env, SETUP_TIMEOUT_S)
        assert status == 0, f"{harness / 'setup'} exited {status}; its output is above"
    status = _run_bounded(harness_command(harness, choice.run, setpriv), env,
                          _pass_timeout(runs))

    jsonl = results / "results.jsonl"
    rows = load_results(jsonl) if jsonl.is_file() else []
    if rows:
        table = render(evaluate(rows), results)
        (results / "ratios.md").write_text(table, encoding="utf-8")
        print("\n" + table, flush=True)
    print(f"[bench] results directory: {results}", flush=True)
    assert gateway_rows(rows), f"{jsonl} has no gateway rows: bench-gateway measured nothing"
    missing = [o.target.name for o in evaluate(rows) if o.gateway is None]
    assert not missing, (f"run-all exited {status} and the gateway figures for {missing} are "
                         f"missing (see its output above and {results / 'logs'})")
    if status != 0:
        # A peer's script failed (the harness's own Node-RED spawn-floor step needs a file it
        # does not ship, for one): its rows are missing or partial, the gateway's are whole.
        print(f"[bench] warning: run-all exited {status}: a peer's bench script failed; the "
              f"gateway figures are complete (see {results / 'logs'})", flush=True)
