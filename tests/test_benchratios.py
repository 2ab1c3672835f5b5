"""The table `make bench` prints from a pass of the shared harness (support/benchratios.py) and
the decisions that start the pass (support/benchharness.py), fed recorded lines of a real pass
(tests/data/bench_peers_results.jsonl: gateway, adnanh/webhook, Huey and Node-RED, RUNS=1) and
small directories laid out as the harness's setup leaves them. No pass is run here."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from support.benchharness import (
    HARNESS_ENV,
    PEERS_ENV,
    SETPRIV_ARGS,
    choose_peers,
    find_harness,
    gw_venv_source,
    harness_command,
    harness_problem,
    installed_peers,
    results_stamp,
)
from support.benchratios import (
    FAIL,
    NO_DATA,
    NO_FIGURE,
    PASS,
    TARGETS,
    Row,
    evaluate,
    gateway_rows,
    load_results,
    render,
)

RECORDED = Path(__file__).resolve().parent / "data" / "bench_peers_results.jsonl"


@pytest.fixture
def rows() -> list[Row]:
    return load_results(RECORDED)


def _outcome(rows: list[Row], name: str):
    return next(o for o in evaluate(rows) if o.target.name == name)


def _row(rows: list[Row], system: str, workload: str, conns: int | None = None) -> Row:
    return next(r for r in rows if r["system"] == system and r["workload"] == workload
                and (conns is None or r.get("conns") == conns))


# --------------------------------------------------------------------------- figures and ratios


def test_each_target_reads_its_figure_from_the_recorded_pass(rows: list[Row]) -> None:
    got = {o.target.name: (o.gateway.value if o.gateway else None,
                           o.peer.value if o.peer else None) for o in evaluate(rows)}
    assert got["burst: 2,000 queued jobs completed/s"] == (337.8, 862.8)
    assert got["burst: gateway CPU per job (plugin CPU included)"] == (3.32, None)
    assert got["webhook → job succeeded/s (c4, then drain)"] == (334.5, 862.8)
    # c4, not the c2 line recorded before it
    assert got["sync run at c4 (HTTP → spawn → answer) vs Node-RED"] == (209.0, 487.3)
    assert got["sync run at c4 (HTTP → spawn → answer) vs adnanh/webhook"] == (209.0, 1720.8)
    assert got["signed webhook → 202 at c4"] == (518.9, 1720.8)
    assert got["idle single job: gateway adds over a bare spawn (p50)"] == (5.41, None)
    assert got["boot: exec → first 200 on /healthz (median)"] == (574.1, None)
    rss = got["RSS: max under load"][0]
    assert rss is not None and abs(rss - 69468 / 1024) < 1e-9


def test_ratio_is_gateway_over_peer_and_judged_against_the_floor(rows: list[Row]) -> None:
    burst = _outcome(rows, "burst: 2,000 queued jobs completed/s")
    assert burst.ratio == pytest.approx(337.8 / 862.8)
    assert burst.verdict == FAIL
    _row(rows, "gateway", "burst-e2e-sh")["median"]["per_s"] = 1.2 * 862.8  # exactly the goal
    assert _outcome(rows, "burst: 2,000 queued jobs completed/s").verdict == PASS


def test_ceiling_goal_passes_at_or_under_the_bound(rows: list[Row]) -> None:
    boot = "boot: exec → first 200 on /healthz (median)"
    assert _outcome(rows, boot).verdict == FAIL
    _row(rows, "gateway", "boot")["median"]["boot_ms"] = 500.0
    assert _outcome(rows, boot).verdict == PASS
    _row(rows, "gateway", "rss")["rss_load_max_kb"] = 50 * 1024
    assert _outcome(rows, "RSS: max under load").verdict == PASS


def test_missing_peer_gives_no_ratio_and_no_verdict(rows: list[Row]) -> None:
    only_gateway = [r for r in rows if r["system"] == "gateway"]
    outcomes = evaluate(only_gateway)
    with_peer = [o for o in outcomes if o.target.peer is not None]
    assert with_peer and all(o.peer is None and o.ratio is None and o.verdict == NO_FIGURE
                             for o in with_peer)
    # absolute goals are still judged
    assert {o.verdict for o in outcomes if o.target.peer is None} == {FAIL}
    table = render(outcomes)
    assert "| Huey processx2: — | — | ≥ 1.2x | — |" in table
    assert "0 of 4 goals met; 5 not judged" in table


def test_missing_gateway_row_is_no_data_not_a_failure(rows: list[Row]) -> None:
    without_boot = [r for r in rows if r["workload"] != "boot"]
    boot = _outcome(without_boot, "boot: exec → first 200 on /healthz (median)")
    assert boot.gateway is None and boot.verdict == NO_DATA


def test_contended_figure_is_marked(rows: list[Row]) -> None:
    _row(rows, "node-red", "spawn-sh", 4)["contended_runs"] = 1
    table = render(evaluate(rows))
    assert "Node-RED spawn-sh c4: 487.3 req/s*" in table


def test_table_has_a_row_per_target_the_results_dir_and_the_cpu_note(rows: list[Row]) -> None:
    table = render(evaluate(rows), Path("results") / "20261203T035748Z")
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(body) == 1 + len(TARGETS)
    assert ("| burst: 2,000 queued jobs completed/s (`burst-e2e-sh`) | 337.8 jobs/s "
            "| Huey processx2: 862.8 tasks/s | 0.39x | ≥ 1.2x | FAIL |") in table
    assert ("| burst: gateway CPU per job (plugin CPU included) (`burst-e2e-sh`) | 3.32 ms "
            "| n/a | — | ≤ 2 ms | FAIL |") in table
    assert "includes each plugin's own" in table
    assert f"Results: `{Path('results') / '20261203T035748Z'}`" in table
    assert "0 of 9 goals met." in table


def test_gateway_rows_ignore_the_versions_line_and_the_peers(rows: list[Row]) -> None:
    assert len(gateway_rows(rows)) == 13
    assert gateway_rows([{"system": "gateway", "workload": "versions", "versions": "x"}]) == []


def test_a_cut_short_results_file_names_its_line(tmp_path: Path, rows: list[Row]) -> None:
    broken = tmp_path / "results.jsonl"
    broken.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1])[:40] + "\n")
    with pytest.raises(ValueError, match=r"results\.jsonl:3: not a JSON line"):
        load_results(broken)
    broken.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r":1: expected a JSON object, got list"):
        load_results(broken)


# --------------------------------------------------------------------------- starting a pass


def _executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_harness_from_env_else_beside_the_repo(tmp_path: Path) -> None:
    repo = tmp_path / "work" / "repo"
    repo.mkdir(parents=True)
    assert find_harness({}, repo) is None
    beside = tmp_path / "work" / "shared" / "bench"
    beside.mkdir(parents=True)
    assert find_harness({}, repo) == beside
    elsewhere = tmp_path / "elsewhere"
    assert find_harness({HARNESS_ENV: str(elsewhere)}, repo) == elsewhere


def test_harness_problem_names_the_missing_script_and_the_variable(tmp_path: Path) -> None:
    for name in ("run-all", "setup"):
        _executable(tmp_path / name)
    problem = harness_problem(tmp_path)
    assert problem is not None and "bench-gateway" in problem and HARNESS_ENV in problem
    _executable(tmp_path / "bench-gateway")
    assert harness_problem(tmp_path) is None


def test_installed_peers_as_setup_leaves_them(tmp_path: Path) -> None:
    on_path = {"webhook": "/usr/bin/webhook", "node": "/usr/bin/node"}
    assert installed_peers(tmp_path, on_path.get) == ["webhook"]
    _executable(tmp_path / "venv" / "bin" / "huey_consumer")
    package = tmp_path / "node-red" / "node_modules" / "node-red" / "package.json"
    package.parent.mkdir(parents=True)
    package.write_text('{"version": "4.1.15"}')
    assert installed_peers(tmp_path, on_path.get) == ["webhook", "huey", "nodered"]
    assert installed_peers(tmp_path, {}.get) == ["huey"]  # Node-RED needs node on PATH


def test_peer_choice_from_the_environment() -> None:
    installed = ["webhook", "huey"]
    assert choose_peers(None, installed).run == ("webhook", "huey")
    assert choose_peers("none", installed).run == ()
    chosen = choose_peers("nodered, huey", installed)
    assert chosen.run == ("huey",) and chosen.not_installed == ("nodered",)
    with pytest.raises(ValueError, match=f"{PEERS_ENV}='hue': unknown peer hue"):
        choose_peers("hue", installed)


def test_command_runs_gateway_first_and_drops_setuid_under_setpriv(tmp_path: Path) -> None:
    assert harness_command(tmp_path, ["huey"], None) == [str(tmp_path / "run-all"), "gateway",
                                                         "huey"]
    wrapped = harness_command(tmp_path, [], "/usr/bin/setpriv")
    assert wrapped == ["/usr/bin/setpriv", *SETPRIV_ARGS, str(tmp_path / "run-all"), "gateway"]
    assert "--bounding-set=-setuid,-setgid" in SETPRIV_ARGS


def test_results_stamp_is_run_alls_utc_name() -> None:
    later = datetime(2026, 12, 3, 7, 57, 48, tzinfo=timezone(timedelta(hours=4)))
    assert results_stamp(later) == "20261203T035748Z"


def test_gw_venv_source_reads_the_installed_package(tmp_path: Path) -> None:
    assert gw_venv_source(tmp_path / "gw-venv" / "bin" / "python", lambda _: "x") is None
    python = _executable(tmp_path / "gw-venv" / "bin" / "python")
    seen: list[list[str]] = []

    def run(command: list[str]) -> str | None:
        seen.append(command)
        return f"{tmp_path / 'repo' / 'ductile'}\n"

    assert gw_venv_source(python, run) == (tmp_path / "repo" / "ductile").resolve()
    assert seen[0][0] == str(python)
    assert gw_venv_source(python, lambda _: None) is None


def test_the_real_interpreter_answers_the_source_probe() -> None:
    """The probe's one-liner, run by this venv's Python, finds this checkout's package."""

    def run(command: list[str]) -> str | None:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else None

    found = gw_venv_source(Path(sys.executable), run)
    assert found == (Path(__file__).resolve().parents[1] / "ductile")
