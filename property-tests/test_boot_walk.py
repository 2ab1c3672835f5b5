"""A stateful test of states/boot.yaml as driven by BootMachine: random facts, random order of
trigger attempts. The machine reaches `ready` only through every phase with every gate passing,
and any refusal lands in `refused` naming a gate of the transition that was fired."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from transitions.core import MachineError

from ductile.boot.gates import GATES, BootFacts
from ductile.boot.machine import BootMachine
from ductile.config.schema import ApiConfig, ApiToken, Config, PluginConf, ServiceConfig
from ductile.errors import BootRefused
from ductile.machines import load_machine

SPEC = load_machine("boot")
PHASES = [t for t in SPEC.transitions if t.trigger not in ("refuse",)]
ERROR_FIELDS = ["resolve_error", "load_error", "validate_error", "lock_error", "symlink_error",
                "discovery_error", "alias_error", "db_error", "recovery_error", "snapshot_error",
                "bind_error"]


class FakePlugin:
    def supports(self, name: str) -> bool:
        return name in ("poll", "handle")


def good_facts() -> BootFacts:
    cfg = Config(service=ServiceConfig(), state_path="/s/state.db",
                 api=ApiConfig(enabled=True, tokens=(ApiToken(token="t"),)),
                 plugin_roots=("/p",), plugins={"echo": PluginConf(name="echo", enabled=True)},
                 config_path="/c/config.yaml", config_dir="/c", source="explicit")
    return BootFacts(config=cfg, plugins={"echo": FakePlugin()}, snapshot_id="cfg_x")


class BootWalk(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.facts = good_facts()
        self.machine = BootMachine(self.facts)
        self.passed: list[str] = []
        self.refused_gate: str | None = None

    @rule(field=st.sampled_from(ERROR_FIELDS))
    def break_a_fact(self, field: str) -> None:
        setattr(self.facts, field, f"{field} went wrong")

    @rule()
    def remove_all_tokens(self) -> None:
        assert self.facts.config is not None
        self.facts.config = replace(self.facts.config, api=ApiConfig(enabled=True, tokens=()))

    @rule(trigger=st.sampled_from(sorted({t.trigger for t in PHASES})))
    def fire_any(self, trigger: str) -> None:
        self.fire(trigger)

    def fire(self, trigger: str) -> None:
        before = self.machine.state
        allowed = [t for t in SPEC.transitions if t.trigger == trigger
                   and (before in t.source or "*" in t.source)]
        try:
            self.machine.advance(trigger)
        except BootRefused as refusal:
            assert allowed, f"{trigger} from {before} should be invalid, not refused"
            assert refusal.gate in {g for t in allowed for g in t.conditions}
            assert GATES[refusal.gate](self.facts) is not None
            self.refused_gate = refusal.gate
            return
        except MachineError:
            assert not allowed
            return
        assert allowed
        for transition in allowed:
            for gate in transition.conditions:
                assert GATES[gate](self.facts) is None
        self.passed.append(trigger)

    @rule()
    def fire_the_next_phase(self) -> None:
        """Walk forward: fire a trigger whose source is the current state."""
        nexts = [t.trigger for t in PHASES if self.machine.state in t.source]
        if nexts:
            self.fire(nexts[0])

    @invariant()
    def state_is_declared(self) -> None:
        assert self.machine.state in SPEC.states

    @invariant()
    def refused_names_a_gate(self) -> None:
        if self.machine.state == "refused":
            assert self.refused_gate in GATES

    @precondition(lambda self: self.machine.state == "ready")
    @invariant()
    def ready_only_after_every_boot_phase(self) -> None:
        boot = ["load_config", "acquire_lock", "discover", "admit", "open_state", "plumb",
                "decide_posture", "gate_privsep", "open_planes"]
        assert [t for t in self.passed if t in boot][: len(boot)] == boot


BootWalk.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestBootWalk = BootWalk.TestCase
