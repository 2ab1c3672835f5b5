"""Helpers for the router tests: compile YAML text the way boot does."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from ductile.config.schema import PipelineSource
from ductile.router import PipelineSet, compile_pipelines

CATALOG: Mapping[str, set[str]] = {
    "echo": {"poll", "handle", "health"},
    "py": {"handle"},
    "notify": {"handle"},
    "poller": {"poll"},
}


def sources(text: str, file: str = "pipelines.yaml") -> list[PipelineSource]:
    doc = yaml.safe_load(text)
    return [PipelineSource(file=file, index=i, raw=raw) for i, raw in enumerate(doc["pipelines"])]


def compile_text(text: str, *, default_max_depth: int = 0, hook_max_depth: int = 4,
                 catalog: Mapping[str, set[str]] = CATALOG,
                 relay_instances: tuple[str, ...] | None = None) -> PipelineSet:
    return compile_pipelines(sources(text), catalog, default_max_depth=default_max_depth,
                             hook_max_depth=hook_max_depth, relay_instances=relay_instances)


def ids(prefix: str = "id") -> Callable[[], str]:
    """Deterministic ids so assertions can name pipeline instances."""
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def event(kind: str, payload: dict[str, Any] | None = None, event_id: str = "ev-1") -> dict:
    return {"type": kind, "payload": payload or {}, "event_id": event_id}
