"""Baggage: the durable context a pipeline carries from step to step.

Only explicit claims enter baggage. A `uses` step claims values from the event it receives:

    baggage:
      order.id: payload.id            # durable path <- source path (payload.* or context.*)
      customer: context.customer
      from: payload.meta              # bulk import: every key of payload.meta ...
      namespace: meta                 # ... under `meta.` (namespace is required with from)

and `POST /pipeline/{name}` may seed root baggage. Public surface:

    parse_baggage(raw) -> BaggageSpec                         compile time; BaggageError
    claim(spec, *, payload, context, lenient=False) -> dict   the updates a dispatch adds
    accrete(parent, updates) -> dict                          deep merge, inherited paths immutable
    check_size(accumulated) -> None                           ContextTooLarge over 1 MiB
    control(accumulated) -> Control                           the `ductile` control fields
    with_control(...) -> dict                                 set the control fields

Rules:

* Durable paths are dotted segments of letters, digits and `_`, not starting with a digit.
  `ductile`, `ductile.*` and `ductile_*` are reserved for the core and cannot be claimed.
* Deep accretion (`accrete`): a new key is added; an equal value is kept; two mappings merge
  recursively; `ductile.route_depth` may advance; any other change raises
  `baggage path "a.b" is immutable: inherited value differs from child value`. So
  `route_max_depth` cannot be widened down a tree, and a step cannot rewrite what an earlier step
  claimed. JSON null is a value, not a mapping.
* A claim whose source is absent raises BaggageError, except in lenient mode (routing after a
  skipped step), where that claim is left out.
* Claims are deep copies; writing under a path whose prefix holds a scalar raises
  `conflicts with scalar prefix`. Overlapping claims in one spec (`a` and `a.b`) are refused at
  compile time.
* The accumulated JSON (compact UTF-8) is capped at 1 MiB (`MAX_CONTEXT_BYTES`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ductile.errors import BaggageError, ContextTooLarge
from ductile.router.values import ABSENT, is_identifier_path, json_equal, json_size, resolve

MAX_CONTEXT_BYTES = 1024 * 1024
CONTROL = "ductile"
_SOURCE_ROOTS = ("payload", "context")


@dataclass(frozen=True)
class Claim:
    """`dest` (durable path segments) <- `source` (path segments under payload/context)."""

    dest: tuple[str, ...]
    source: tuple[str, ...]


@dataclass(frozen=True)
class BaggageSpec:
    claims: tuple[Claim, ...] = ()
    bulk_from: tuple[str, ...] | None = None
    bulk_namespace: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return not self.claims and self.bulk_from is None


@dataclass(frozen=True)
class Control:
    """The `ductile` control namespace of an accumulated context."""

    pipeline_instance_id: str | None
    route_depth: int
    route_max_depth: int  # 0 = unlimited
    hook_depth: int = 0


def parse_baggage(raw: Any) -> BaggageSpec:
    """Validate a `baggage:` mapping into a BaggageSpec, or raise BaggageError."""
    if not isinstance(raw, Mapping):
        raise BaggageError("baggage must be a mapping of durable.path: payload.* or context.*")
    claims: list[Claim] = []
    for key in raw:
        if key in ("from", "namespace"):
            continue
        if not isinstance(key, str) or not is_identifier_path(key):
            raise BaggageError(
                f"baggage key {key!r} must be dotted segments of letters, digits and _ "
                f"(not starting with a digit)")
        claims.append(Claim(_dest(key), _source(raw[key], f"baggage.{key}", bare_ok=False)))
    bulk_from = bulk_ns = None
    if "namespace" in raw and "from" not in raw:
        raise BaggageError("baggage.namespace requires baggage.from")
    if "from" in raw:
        bulk_from = _source(raw["from"], "baggage.from", bare_ok=True)
        namespace = raw.get("namespace")
        if not isinstance(namespace, str) or not is_identifier_path(namespace):
            raise BaggageError(
                "baggage.from needs baggage.namespace (dotted segments of letters, digits and "
                "_): bulk imports must land under a namespace")
        bulk_ns = _dest(namespace)
    _refuse_overlaps([c.dest for c in claims] + ([bulk_ns] if bulk_ns else []))
    return BaggageSpec(tuple(claims), bulk_from, bulk_ns)


def claim(
    spec: BaggageSpec,
    *,
    payload: Mapping[str, Any],
    context: Mapping[str, Any],
    lenient: bool = False,
) -> dict[str, Any]:
    """The nested updates `spec` claims from this payload and parent context."""
    scope = {"payload": payload, "context": context}
    updates: dict[str, Any] = {}
    for item in spec.claims:
        value = resolve(scope, item.source)
        if value is ABSENT:
            if lenient:
                continue
            raise BaggageError(f"claim {'.'.join(item.dest)}: {'.'.join(item.source)}: "
                               f"path not found")
        _set(updates, item.dest, copy.deepcopy(value))
    if spec.bulk_from is not None and spec.bulk_namespace is not None:
        source = resolve(scope, spec.bulk_from)
        if isinstance(source, Mapping):
            _set(updates, spec.bulk_namespace, copy.deepcopy(dict(source)))
        elif not (lenient and source is ABSENT):
            what = "path not found" if source is ABSENT else "must resolve to an object"
            raise BaggageError(f"bulk claim from {'.'.join(spec.bulk_from)}: {what}")
    return updates


def accrete(parent: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """A new accumulated map: `parent` deep-copied with `updates` accreted (see module doc)."""
    merged = copy.deepcopy(dict(parent))
    _accrete_into(merged, updates, ())
    return merged


def check_size(accumulated: Mapping[str, Any]) -> None:
    """Raise ContextTooLarge when the compact JSON exceeds MAX_CONTEXT_BYTES."""
    size = json_size(accumulated)
    if size > MAX_CONTEXT_BYTES:
        raise ContextTooLarge(size, MAX_CONTEXT_BYTES)


def control(accumulated: Mapping[str, Any]) -> Control:
    """Read the control fields; missing or malformed fields read as a root job's (None, 0, 0)."""
    raw = accumulated.get(CONTROL)
    raw = raw if isinstance(raw, Mapping) else {}
    instance = raw.get("pipeline_instance_id")
    return Control(
        pipeline_instance_id=instance if isinstance(instance, str) and instance else None,
        route_depth=_int(raw.get("route_depth")),
        route_max_depth=_int(raw.get("route_max_depth")),
        hook_depth=_int(raw.get("hook_depth")),
    )


def control_fields(ctl: Control) -> dict[str, Any]:
    """The `ductile` mapping for `ctl` (hook_depth only when non-zero, to keep rows small)."""
    fields: dict[str, Any] = {
        "pipeline_instance_id": ctl.pipeline_instance_id,
        "route_depth": ctl.route_depth,
        "route_max_depth": ctl.route_max_depth,
    }
    if ctl.hook_depth:
        fields["hook_depth"] = ctl.hook_depth
    return fields


def check_root_baggage(raw: Any) -> dict[str, Any]:
    """Validate baggage seeded by an API caller: an object, without the reserved `ductile` key,
    within the size cap. Returns a deep copy."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise BaggageError("root baggage must be a JSON object")
    if CONTROL in raw:
        raise BaggageError("root baggage cannot set ductile.*: it is the control namespace")
    seeded = copy.deepcopy(dict(raw))
    check_size(seeded)
    return seeded


# --- helpers ------------------------------------------------------------------------------------


def _dest(path: str) -> tuple[str, ...]:
    segments = tuple(path.split("."))
    if segments[0] == CONTROL or segments[0].startswith("ductile_"):
        # `ductile` holds the control fields and `ductile_*` names the request-context keys the
        # core sets (ductile_plugin, ductile_step_id, ...); a claim there would shadow them.
        raise BaggageError(f"baggage path {path!r} is reserved: ductile and ductile_* belong "
                           f"to the core")
    return segments


def _source(raw: Any, where: str, *, bare_ok: bool) -> tuple[str, ...]:
    if not isinstance(raw, str) or not raw:
        raise BaggageError(f"{where} must be a path such as payload.id or context.customer")
    segments = tuple(raw.split("."))
    if segments[0] not in _SOURCE_ROOTS or any(not s for s in segments):
        raise BaggageError(f"{where}: {raw!r} must be a payload.* or context.* path")
    if len(segments) < 2 and not bare_ok:
        raise BaggageError(f"{where}: {raw!r} names a whole root; use from:/namespace: to "
                           f"import a whole object")
    return segments


def _refuse_overlaps(paths: list[tuple[str, ...]]) -> None:
    for i, a in enumerate(paths):
        for b in paths[i + 1:]:
            shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
            if longer[:len(shorter)] == shorter:
                raise BaggageError(f"baggage paths {'.'.join(a)!r} and {'.'.join(b)!r} overlap; "
                                   f"claim each durable path once")


def _set(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    current = target
    for i, segment in enumerate(path[:-1]):
        nxt = current.setdefault(segment, {})
        if not isinstance(nxt, dict):
            raise BaggageError(f"baggage path {'.'.join(path)!r} conflicts with scalar prefix "
                               f"{'.'.join(path[:i + 1])!r}")
        current = nxt
    current[path[-1]] = value


def _accrete_into(target: dict[str, Any], updates: Mapping[str, Any],
                  prefix: tuple[str, ...]) -> None:
    for key, value in updates.items():
        here = (*prefix, key)
        if key not in target:
            target[key] = copy.deepcopy(value)
            continue
        existing = target[key]
        if here == (CONTROL, "route_depth"):
            target[key] = value
        elif isinstance(existing, dict) and isinstance(value, Mapping):
            _accrete_into(existing, value, here)
        elif not json_equal(existing, value):
            raise BaggageError(f"baggage path {'.'.join(here)!r} is immutable: inherited value "
                               f"differs from child value")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
