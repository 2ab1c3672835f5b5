"""Which config file holds a dotted key (`plugins.echo.config.url`, `api.auth.tokens[1]`).

A finding about the merged config is only useful if it says where to edit. The loader keeps each
file's own document (`SourceFile.document`) in merge order, so the file can be found again by
walking the key through those documents with the merge's rules (`ductile/config/merge.py`):

- a list that includes append to (tokens, plugin roots, webhook endpoints) is their
  concatenation in merge order, so index `i` belongs to the file whose share covers it;
- a `plugins.<name>` stanza is replaced whole, so only the last file defining it counts;
- root-only keys (`secrets`, `service.max_workers`, ...) are read from the root file alone;
- anything else is held by the last file that sets it.

A key nobody wrote (a required plugin config key that is missing) is reported at the deepest
part that exists: the file of the `plugins.<name>` stanza that lacks it. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ductile.config.merge import ROOT_ONLY_SECTIONS, ROOT_ONLY_SERVICE_KEYS
from ductile.config.schema import SourceFile

_SEGMENT = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
# Read from every file although the merge treats them as root-only (collected, not merged).
_COLLECTED = frozenset({"pipelines"})

Candidate = tuple[str, Any]  # (file display name, the node at the walked path in that file)


def key_origin(files: Sequence[SourceFile], field: str) -> str:
    """The display name of the file holding `field` (or its deepest existing part), else ""."""
    segments = parse_field(field)
    if not files or not segments:
        return ""
    candidates = _starting_files(files, segments)
    holder = ""
    for depth, segment in enumerate(segments):
        candidates = _step(candidates, segment)
        if not candidates:
            break
        if segments[:1] == ["plugins"] and depth == 1:
            candidates = candidates[-1:]  # a plugin stanza is replaced whole
        holder = candidates[-1][0]
    return holder


def parse_field(field: str) -> list[str | int]:
    """`api.auth.tokens[1].scopes[0]` -> ["api", "auth", "tokens", 1, "scopes", 0]."""
    return [int(index) if index else name for index, name in _SEGMENT.findall(field)]


def _starting_files(files: Sequence[SourceFile], segments: list[str | int]) -> list[Candidate]:
    docs = [(f.display or f.path, _nested_webhooks(f.document)) for f in files]
    first = segments[0]
    second = segments[1] if len(segments) > 1 else None
    root_only = (first in ROOT_ONLY_SECTIONS and first not in _COLLECTED) or (
        first == "service" and second in ROOT_ONLY_SERVICE_KEYS)
    return docs[:1] if root_only else docs


def _nested_webhooks(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """A legacy flat `webhooks: [...]` list is the endpoints of the nested form."""
    if isinstance(document.get("webhooks"), list):
        return {**document, "webhooks": {"endpoints": document["webhooks"]}}
    return document


def _step(candidates: list[Candidate], segment: str | int) -> list[Candidate]:
    if isinstance(segment, int):
        return _nth(candidates, segment)
    return [(name, node[segment]) for name, node in candidates
            if isinstance(node, Mapping) and segment in node]


def _nth(candidates: list[Candidate], index: int) -> list[Candidate]:
    """Item `index` of the lists the candidates hold, concatenated in merge order."""
    for name, node in candidates:
        if not isinstance(node, list):
            continue
        if index < len(node):
            return [(name, node[index])]
        index -= len(node)
    return []
