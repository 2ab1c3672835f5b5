"""Ductile: an integration gateway for personal and small-team automation.

Plugins are executables speaking protocol v2; the core owns orchestration. Keep this module
free of imports so `ductile --help` starts fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
