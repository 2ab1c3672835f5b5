"""The layers hold at run time too: running jobs needs nothing from boot or the planes.

`lint-imports` (run by `make test`) checks the layer contract in pyproject.toml statically; this
checks what a fresh interpreter actually loads.
"""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_after(module: str) -> list[str]:
    code = (f"import sys, json, {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ductile'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_the_dispatcher_imports_nothing_from_boot_or_the_planes() -> None:
    loaded = loaded_after("ductile.dispatch.dispatcher")
    assert not [m for m in loaded if m.startswith(("ductile.boot", "ductile.planes"))], loaded


def test_the_api_plane_imports_nothing_from_boot() -> None:
    loaded = loaded_after("ductile.planes.api.app")
    assert not [m for m in loaded if m.startswith("ductile.boot")], loaded


def test_no_module_spells_out_the_job_status_sets() -> None:
    """The terminal, live and failure sets come from states/job.yaml (machines.job_statuses);
    a hand-written copy would drift the day a status is added."""
    import re
    from pathlib import Path

    import ductile

    spelled = re.compile(r"""["']timed_out["'],\s*["']dead["']""")
    root = Path(ductile.__file__).parent
    offenders = [str(path.relative_to(root)) for path in root.rglob("*.py")
                 if "bundled" not in path.parts and path.name != "machines.py"
                 and spelled.search(path.read_text())]
    assert offenders == []
