"""Helpers for writing throwaway plugins in temporary directories (used across the test suite).

    root = tmp_path / "plugins"
    make_plugin(root, "greet", 'cat >/dev/null; echo \'{"status":"ok","result":"hi"}\'')

writes `root/greet/manifest.yaml` and an executable `root/greet/run` holding the shebang and the
script. Plugin roots made here are never world-writable, so they pass the trust checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ductile.bundled import plugins_root

READ_COMMANDS = frozenset({"poll", "health", "init"})


def bundled_root() -> Path:
    """The bundled plugin root (holds `echo/`)."""
    return Path(plugins_root())


def echo_entrypoint() -> str:
    return str(bundled_root() / "echo" / "run")


def manifest_dict(
    name: str,
    *,
    commands: Iterable[str] = ("poll", "handle", "health"),
    concurrency_safe: bool = True,
    entrypoint: str = "run",
    **extra: Any,
) -> dict[str, Any]:
    """A valid manifest as a dict; `extra` adds or overrides top-level keys."""
    data: dict[str, Any] = {
        "manifest_spec": "ductile.plugin",
        "manifest_version": 1,
        "name": name,
        "version": "0.0.1",
        "protocol": 2,
        "entrypoint": entrypoint,
        "concurrency_safe": concurrency_safe,
        "commands": [
            {"name": c, "type": "read" if c in READ_COMMANDS else "write"} for c in commands
        ],
    }
    data.update(extra)
    return data


def make_plugin(
    root: Path,
    name: str,
    script: str,
    *,
    commands: Iterable[str] = ("poll", "handle", "health"),
    concurrency_safe: bool = True,
    shebang: str = "#!/bin/sh",
    directory: str | None = None,
    mode: int = 0o755,
) -> Path:
    """Write `root/<directory or name>/` with manifest.yaml and an executable `run`.

    An empty `shebang` writes the script without one (exec then fails with ENOEXEC).
    Returns the plugin directory.
    """
    plugin_dir = Path(root) / (directory or name)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(plugin_dir, 0o755)
    manifest = manifest_dict(name, commands=commands, concurrency_safe=concurrency_safe)
    (plugin_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    body = f"{shebang}\n{script}\n" if shebang else f"{script}\n"
    entry = plugin_dir / "run"
    entry.write_text(body)
    os.chmod(entry, mode)
    return plugin_dir


def respond_script(response: dict[str, Any], *, exit_code: int = 0) -> str:
    """A /bin/sh body that drains stdin, prints `response` as JSON and exits with `exit_code`."""
    text = json.dumps(response).replace("'", "'\\''")
    return f"cat >/dev/null\nprintf '%s' '{text}'\nexit {exit_code}"
