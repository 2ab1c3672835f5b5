"""The layers above the store reach backend SQL only through the Backend they are given.

Every function of SQLITE_BACKEND's tables is SQLite's SQL; a module above the store that
imported one (or called it through its module, `brk.fetch_breakers`) would run SQLite
statements on whatever connection it holds, a PostgreSQL one included. This walks the source
of every module outside ductile/store and fails naming the module and the function. The
CLI's read-only SQLite readers (ductile/cli, the `database_check` of config/selfcheck.py) and
the Go importer (ductile/migrate) are SQLite by design and exempt.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import fields
from pathlib import Path

import ductile
from ductile.store.backend import SQLITE_BACKEND

ROOT = Path(ductile.__file__).parent
EXEMPT = ("store", "cli", "migrate", "bundled", "config/selfcheck.py")


def sqlite_functions() -> dict[str, set[str]]:
    """Per store module: the names under which it exposes a function of a SQLite table."""
    tables = [getattr(SQLITE_BACKEND, f.name) for f in fields(SQLITE_BACKEND)
              if f.name not in ("name", "queue")]
    found: dict[str, set[str]] = {}
    for table in tables:
        module = importlib.import_module(type(table).__module__)
        values = [getattr(table, f.name) for f in fields(table)]
        names = {name for name, value in vars(module).items()
                 if callable(value) and any(value is v for v in values)}
        found.setdefault(module.__name__, set()).update(names)
    return found


def offences(path: Path, forbidden: dict[str, set[str]]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}  # local name -> store module
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in forbidden:
                    aliases[alias.asname or alias.name] = full
                elif alias.name in forbidden.get(node.module, ()):
                    out.append(f"imports {node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in forbidden and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr in forbidden[aliases[node.value.id]]):
            out.append(f"uses {aliases[node.value.id]}.{node.attr}")
    return out


def test_the_check_knows_the_sqlite_functions() -> None:
    """The scan below is only as good as this list: it must name the functions a route or the
    scheduler used to call directly."""
    forbidden = sqlite_functions()
    assert {"fetch_breakers", "fold_outcomes", "open_circuit_count"} <= forbidden[
        "ductile.store.breakers"]
    assert {"fetch_entries", "save_entry", "outstanding_jobs"} <= forbidden[
        "ductile.store.schedules"]
    assert {"queue_figures", "status_counts"} <= forbidden["ductile.store.analytics"]
    assert {"append", "after", "max_id"} <= forbidden["ductile.store.events"]
    assert {"fetch_snapshot", "insert_event", "load_state"} <= (
        forbidden["ductile.store.snapshots"] | forbidden["ductile.store.audit"]
        | forbidden["ductile.store.state"])


def test_the_scan_finds_a_direct_call(tmp_path: Path) -> None:
    source = tmp_path / "route.py"
    source.write_text("from ductile.store import breakers as brk\n"
                      "from ductile.store.analytics import queue_figures\n"
                      "x = brk.fetch_breakers\ny = brk.OPEN\n")
    assert offences(source, sqlite_functions()) == [
        "imports ductile.store.analytics.queue_figures",
        "uses ductile.store.breakers.fetch_breakers"]


def test_no_layer_above_the_store_calls_sqlite_statements_directly() -> None:
    forbidden = sqlite_functions()
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(EXEMPT):
            continue
        found += [f"{relative}: {what}" for what in offences(path, forbidden)]
    assert found == [], ("take these from the Backend you are given (rt.backend...), not from "
                         f"the SQLite module: {found}")
