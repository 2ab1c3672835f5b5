"""Drive a `transitions.Machine` built from `states/boot.yaml`.

The machine is plain and synchronous: the driver awaits the I/O for a phase in trio, stores the
results in `BootFacts`, then fires the phase's trigger. The trigger's conditions are the gates of
`gates.GATES`; the first one that refuses is remembered so the driver can name it.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine

from ductile.boot.gates import GATES, BootFacts, Refusal
from ductile.errors import BootRefused
from ductile.machines import MachineSpec, load_machine


class BootMachine:
    """One generation's walk through the boot phases."""

    def __init__(
        self, facts: BootFacts, spec: MachineSpec | None = None, *, initial: str | None = None
    ) -> None:
        self.facts = facts
        self.spec = spec or load_machine("boot")
        self.refusal: Refusal | None = None
        kwargs = self.spec.as_transitions_kwargs()
        if initial is not None:
            kwargs["initial"] = initial
        for transition in kwargs["transitions"]:
            transition["conditions"] = [self._gate(name) for name in transition["conditions"]]
        self.machine = Machine(
            model=self, auto_transitions=False, ignore_invalid_triggers=False, **kwargs
        )

    state: str  # set by transitions

    def _gate(self, name: str) -> Any:
        if name not in GATES:
            raise KeyError(f"states/boot.yaml names gate {name!r} but ductile/boot/gates.py lacks it")
        gate = GATES[name]

        def check(*_args: Any, **_kwargs: Any) -> bool:
            if self.refusal is not None:
                return False
            refusal = gate(self.facts)
            if refusal is not None:
                self.refusal = refusal
                return False
            return True

        return check

    def advance(self, trigger: str) -> None:
        """Fire `trigger`; on a refusal move to `refused` and raise BootRefused naming the gate."""
        before = self.state
        if self.trigger(trigger):  # type: ignore[attr-defined]
            return
        refusal = self.refusal or Refusal(trigger, f"transition {trigger} refused in {before}")
        self.trigger("refuse")  # type: ignore[attr-defined]
        raise BootRefused(refusal.gate, refusal.reason)
