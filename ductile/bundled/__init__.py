"""Plugins and templates that ship inside the wheel.

`plugins/` is a plugin root like any other (each plugin a directory with `manifest.yaml` and an
executable entrypoint); `config init` points new configs at it so a fresh install has something
to run.
"""

from __future__ import annotations

from pathlib import Path


def plugins_root() -> str:
    """Absolute path of the bundled plugin root."""
    return str(Path(__file__).resolve().parent / "plugins")
