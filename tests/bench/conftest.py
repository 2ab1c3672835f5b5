"""Benchmarks run only when DUCTILE_BENCH=1 (`make bench` sets it); a plain `pytest tests` skips
them so the normal suite stays short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DUCTILE_BENCH") == "1":
        return
    skip = pytest.mark.skip(reason="benchmark: set DUCTILE_BENCH=1 (make bench) to run")
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)
