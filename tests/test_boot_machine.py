"""The boot machine: states/boot.yaml and ductile/boot/gates.py agree, diagrams are fresh, and a
failing gate refuses with its own name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ductile.boot import gates
from ductile.boot.diagram import PAGES, refresh
from ductile.boot.machine import BootMachine
from ductile.errors import BootRefused
from ductile.machines import load_machine

ROOT = Path(__file__).resolve().parent.parent


def test_every_gate_named_in_the_yaml_is_implemented_and_vice_versa() -> None:
    declared = set(load_machine("boot").gates())
    implemented = set(gates.GATES)
    assert declared - implemented == set(), "gates declared in states/boot.yaml but not written"
    assert implemented - declared == set(), "gates written but not declared in states/boot.yaml"


def test_gate_functions_module_has_no_undeclared_gate_shaped_functions() -> None:
    # Every public function taking BootFacts and returning Refusal | None must be registered.
    import inspect

    for name, fn in inspect.getmembers(gates, inspect.isfunction):
        hints = getattr(fn, "__annotations__", {})
        if hints.get("f") == "BootFacts":
            assert name in gates.GATES, f"{name} looks like a gate but is not in GATES"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_committed_state_diagrams_are_fresh(name: str) -> None:
    page = ROOT / PAGES[name]
    text = page.read_text(encoding="utf-8")
    assert refresh(text, name) == text, f"{page} is stale: run `make diagrams`"


def test_a_failing_gate_refuses_with_its_name_and_moves_to_refused() -> None:
    facts = gates.BootFacts(resolve_error="no config found (checked: ...)")
    machine = BootMachine(facts)
    with pytest.raises(BootRefused) as caught:
        machine.advance("load_config")
    assert caught.value.gate == "config_found"
    assert "no config found" in caught.value.reason
    assert machine.state == "refused"


def test_the_first_failing_gate_of_a_transition_is_the_one_named() -> None:
    facts = gates.BootFacts(load_error="bad yaml", validate_error="also invalid")
    machine = BootMachine(facts)
    with pytest.raises(BootRefused) as caught:
        machine.advance("load_config")
    assert caught.value.gate == "config_loaded"


def test_lifecycle_reload_keep_and_stop_edges_exist() -> None:
    machine = BootMachine(gates.BootFacts(), initial="ready")
    machine.trigger("reload")
    assert machine.state == "reloading"
    machine.trigger("keep")
    machine.trigger("stop")
    machine.trigger("stopped")
    assert machine.state == "stopped"
