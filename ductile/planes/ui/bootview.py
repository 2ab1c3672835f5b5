"""The boot machine (`states/boot.yaml`) as rows for the `/ui/boot` page.

Rendered on the server from the declared machine rather than from the mermaid source in
docs/boot.md: drawing mermaid needs a script from the network (or a build step), and reading the
YAML the boot driver itself reads means the page cannot drift from what boot judges.
"""

from __future__ import annotations

from dataclasses import dataclass

from ductile.machines import MachineSpec


@dataclass(frozen=True)
class Gate:
    name: str
    side_effect_free: bool  # judged by `ductile config check` too


@dataclass(frozen=True)
class Phase:
    trigger: str
    sources: tuple[str, ...]
    dest: str
    description: str
    gates: tuple[Gate, ...]


@dataclass(frozen=True)
class BootView:
    initial: str
    phases: tuple[Phase, ...]
    terminal: tuple[str, ...]
    descriptions: dict[str, str]


def boot_view(spec: MachineSpec) -> BootView:
    """Every transition of the machine in declaration order, each with its gates."""
    free = set(spec.side_effect_free)
    phases = tuple(
        Phase(trigger=t.trigger, sources=t.source, dest=t.dest,
              description=spec.descriptions.get(t.dest, ""),
              gates=tuple(Gate(g, g in free) for g in t.conditions))
        for t in spec.transitions
    )
    return BootView(initial=spec.initial, phases=phases, terminal=spec.terminal,
                    descriptions=dict(spec.descriptions))
