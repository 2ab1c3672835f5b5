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
