"""Load the declared state machines in `states/*.yaml`.

The YAML files are the single source of truth for boot phases, job statuses and breaker states.
This module only reads them into plain data; `boot/machine.py`, `store/writes.py` and the
breaker build behaviour on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class Transition:
    trigger: str
    source: tuple[str, ...]
    dest: str
    conditions: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class MachineSpec:
    name: str
    initial: str
    states: tuple[str, ...]
    transitions: tuple[Transition, ...]
    terminal: tuple[str, ...] = ()
    descriptions: dict[str, str] = field(default_factory=dict)
    failure: tuple[str, ...] = ()  # the terminal states that count as a failure
    retryable: tuple[str, ...] = ()  # the terminal states an operator may enqueue again
    # Gates judged on facts gathered without side effects (boot: what `config check` runs).
    side_effect_free: tuple[str, ...] = ()

    def allowed(self, source: str | None, dest: str) -> bool:
        """True when some transition leads from `source` (None = the initial pseudo-state) to
        `dest`."""
        src = self.initial if source is None else source
        return any(dest == t.dest and (src in t.source or "*" in t.source) for t in self.transitions)

    def gates(self) -> list[str]:
        """Every gate (condition) named on any transition, in declaration order, once each."""
        seen: dict[str, None] = {}
        for transition in self.transitions:
            for gate in transition.conditions:
                seen.setdefault(gate, None)
        return list(seen)

    def as_transitions_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `transitions.Machine` (states, initial, transitions)."""
        return {
            "states": list(self.states),
            "initial": self.initial,
            "transitions": [
                {
                    "trigger": t.trigger,
                    "source": "*" if "*" in t.source else list(t.source),
                    "dest": t.dest,
                    "conditions": list(t.conditions),
                }
                for t in self.transitions
            ],
        }


def load_machine(name: str) -> MachineSpec:
    """Read `states/<name>.yaml` from the installed package."""
    text = (resources.files("ductile") / "states" / f"{name}.yaml").read_text(encoding="utf-8")
    return parse_machine(name, yaml.safe_load(text))


def parse_machine(name: str, doc: Any) -> MachineSpec:
    """Validate the shape of a machine document and return its spec."""
    if not isinstance(doc, dict):
        raise ValueError(f"states/{name}.yaml: top level must be a mapping")
    raw_states = doc.get("states") or []
    states: list[str] = []
    descriptions: dict[str, str] = {}
    for entry in raw_states:
        if isinstance(entry, dict):
            states.append(str(entry["name"]))
            if entry.get("description"):
                descriptions[str(entry["name"])] = str(entry["description"])
        else:
            states.append(str(entry))
    initial = str(doc.get("initial") or (states[0] if states else ""))
    if initial not in states:
        raise ValueError(f"states/{name}.yaml: initial state {initial!r} is not declared")
    transitions = []
    for i, t in enumerate(doc.get("transitions") or []):
        source = t.get("source")
        sources = tuple(source) if isinstance(source, list) else (str(source),)
        dest = str(t.get("dest"))
        for s in (*sources, dest):
            if s != "*" and s not in states:
                raise ValueError(f"states/{name}.yaml: transitions[{i}] names unknown state {s!r}")
        conditions = t.get("conditions") or []
        transitions.append(
            Transition(
                trigger=str(t["trigger"]),
                source=sources,
                dest=dest,
                conditions=tuple(str(c) for c in conditions),
                description=str(t.get("description") or ""),
            )
        )
    return MachineSpec(
        name=name,
        initial=initial,
        states=tuple(states),
        transitions=tuple(transitions),
        terminal=_declared(name, doc, "terminal", states),
        descriptions=descriptions,
        failure=_declared(name, doc, "failure", states),
        retryable=_declared(name, doc, "retryable", states),
        side_effect_free=_gates_listed(name, doc, transitions),
    )


def _gates_listed(name: str, doc: dict[str, Any], transitions: list[Transition]) -> tuple[str, ...]:
    listed = tuple(str(g) for g in doc.get("side_effect_free") or ())
    known = {gate for t in transitions for gate in t.conditions}
    for gate in listed:
        if gate not in known:
            raise ValueError(f"states/{name}.yaml: side_effect_free names {gate!r}, which no "
                             "transition lists as a condition")
    return listed


def _declared(name: str, doc: dict[str, Any], key: str, states: list[str]) -> tuple[str, ...]:
    listed = tuple(str(s) for s in doc.get(key) or ())
    for state in listed:
        if state not in states:
            raise ValueError(f"states/{name}.yaml: {key} names unknown state {state!r}")
    return listed


@dataclass(frozen=True)
class JobStatuses:
    """The job status sets, as `states/job.yaml` declares them."""

    all: tuple[str, ...]  # every real status, in declaration order (not the `new` pseudo-state)
    terminal: frozenset[str]  # nothing leaves these
    live: frozenset[str]  # queued or running: the job may still change
    failure: frozenset[str]  # the terminal statuses that count as a failure
    # What `ductile job retry` accepts: terminal statuses of a job that did not do its work.
    retryable: frozenset[str] = frozenset()

    def sql(self, which: str) -> str:
        """A set as an SQL list literal, e.g. `('failed', 'timed_out', 'dead')`."""
        ordered = [s for s in self.all if s in getattr(self, which)]
        return "(" + ", ".join(f"'{s}'" for s in ordered) + ")"


@cache
def job_statuses() -> JobStatuses:
    """Read once per process: the statuses every reader of the queue groups jobs by."""
    spec = load_machine("job")
    real = tuple(s for s in spec.states if s != spec.initial)
    terminal = frozenset(spec.terminal)
    return JobStatuses(all=real, terminal=terminal,
                       live=frozenset(s for s in real if s not in terminal),
                       failure=frozenset(spec.failure), retryable=frozenset(spec.retryable))
