"""Render `states/*.yaml` as Mermaid state diagrams and keep `docs/states.md`-style pages fresh.

`python -m ductile.boot.diagram --write` regenerates the diagram blocks in the docs; the test
suite fails when a committed diagram differs from what the YAML produces.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ductile.machines import MachineSpec, load_machine

# Each doc page and the machine whose diagram it carries between the markers.
PAGES = {"boot": "docs/boot.md", "job": "docs/states.md", "breaker": "docs/scheduler.md"}
BEGIN = "<!-- BEGIN GENERATED {name} DIAGRAM (make diagrams) -->"
END = "<!-- END GENERATED {name} DIAGRAM -->"


def mermaid(spec: MachineSpec) -> str:
    """A deterministic `stateDiagram-v2` for the spec; gates appear as edge labels."""
    lines = ["```mermaid", "stateDiagram-v2"]
    lines.append(f"    [*] --> {spec.initial}")
    for t in spec.transitions:
        sources = spec.states if "*" in t.source else t.source
        label = t.trigger
        if t.conditions:
            label += ": " + ", ".join(t.conditions)
        for source in sources:
            if "*" in t.source and source in (t.dest, *spec.terminal):
                continue
            lines.append(f"    {source} --> {t.dest}: {label}")
    for state in spec.terminal:
        lines.append(f"    {state} --> [*]")
    lines.append("```")
    return "\n".join(lines)


def render_block(name: str) -> str:
    return "\n".join(
        [BEGIN.format(name=name), mermaid(load_machine(name)), END.format(name=name)]
    )


def refresh(text: str, name: str) -> str:
    """Replace the generated block for `name` in a page's text."""
    pattern = re.compile(
        re.escape(BEGIN.format(name=name)) + r".*?" + re.escape(END.format(name=name)), re.S
    )
    if not pattern.search(text):
        raise ValueError(f"no generated {name} diagram markers found")
    return pattern.sub(lambda _m: render_block(name), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the docs in place")
    parser.add_argument("--root", default=".", help="repository root")
    args = parser.parse_args(argv)
    stale = []
    for name, page in PAGES.items():
        path = Path(args.root) / page
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        fresh = refresh(text, name)
        if fresh != text:
            stale.append(page)
            if args.write:
                path.write_text(fresh, encoding="utf-8")
    if stale and not args.write:
        print("stale diagrams: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
