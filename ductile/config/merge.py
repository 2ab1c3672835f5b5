"""How an included file's document merges into the accumulated config (pure functions on dicts).

The rules are explicit per section, not a generic deep merge, because they are Go ductile's
rules and a user's config directory must merge the same way here:

- scalars override only when the included value is non-zero (an include cannot blank a value);
- token, plugin-root, origin, route and relay lists are appended;
- a plugin stanza is replaced whole by a later file (no per-field merge), and so is an
  `api.tls` or `webhooks.tls` block (a certificate from one file and a key from another never
  meet);
- `api.enabled` only propagates `true` (an include cannot switch the API off);
- some keys are read only from the root file (`ROOT_ONLY_SERVICE_KEYS`, `ROOT_ONLY_SECTIONS`).

Inputs are never mutated; every function returns new containers for what it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ductile.config.durations import DurationError, parse_duration
from ductile.yamldoc import yaml_bool_word

SERVICE_MERGED_KEYS = (
    "name",
    "tick_interval",
    "log_level",
    "log_format",
    "dedupe_ttl",
    "job_log_retention",
    "job_queue_retention",
    "job_transitions_retention",
    "job_attempts_retention",
    "breaker_transitions_retention",
    "shutdown_grace",
)
ROOT_ONLY_SERVICE_KEYS = (
    "max_workers",
    "strict_mode",
    "allow_symlinks",
    "admission",
    "hook_max_depth",
    "max_route_depth",
    "max_outstanding_jobs",
    "plugin_env_passthrough",
    "unconfined",
)
# `include` and `environment_vars` are processed per file but never merged into the result.
ROOT_ONLY_SECTIONS = ("database", "secrets", "accounts", "tcc_paths", "pipelines")
NOT_MERGED_SECTIONS = ("include", "environment_vars", *ROOT_ONLY_SECTIONS)
# `tls` is a {cert_file, key_file} block: a non-empty one replaces the earlier block whole.
API_OVERRIDE_KEYS = ("listen", "management_socket", "max_concurrent_sync", "max_sync_timeout",
                     "max_body_size", "tls")
WEBHOOKS_OVERRIDE_KEYS = ("listen", "tls")
API_APPENDED_KEYS = ("allowed_origins",)
REMOTE_INGRESS_OVERRIDE_KEYS = ("listen_path", "max_body_size", "allowed_clock_skew")
_DURATION_KEYS = frozenset({
    "tick_interval", "dedupe_ttl", "job_log_retention", "job_queue_retention",
    "job_transitions_retention", "job_attempts_retention", "breaker_transitions_retention",
    "shutdown_grace", "max_sync_timeout", "allowed_clock_skew",
})


class _Absent:
    """Marks "neither document has this section" so the merged raw dict stays faithful."""


_ABSENT: Any = _Absent()


def merge_config(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overlay` (an included file's document) merged in by the section rules."""
    result = dict(base)
    _set(result, "service", _merge_service(base.get("service"), overlay.get("service")))
    _set(result, "state", _merge_state(base.get("state"), overlay.get("state")))
    _set(result, "api", _merge_api(base.get("api"), overlay.get("api")))
    _set(result, "plugins", _merge_plugins(base.get("plugins"), overlay.get("plugins")))
    for key in ("plugin_roots", "routes", "instances"):
        _set(result, key, _append(base.get(key), overlay.get(key)))
    _set(result, "remote_ingress",
         _merge_remote_ingress(base.get("remote_ingress"), overlay.get("remote_ingress")))
    _set(result, "webhooks", _merge_webhooks(base.get("webhooks"), overlay.get("webhooks")))
    return result


def ignored_include_keys(overlay: Mapping[str, Any]) -> list[str]:
    """Dotted keys an included file sets that the merge ignores (they are root-only).

    Go drops these silently; the loader turns each into a warning instead.
    """
    ignored = [key for key in ROOT_ONLY_SECTIONS if key in overlay]
    service = overlay.get("service")
    if isinstance(service, Mapping):
        ignored += [f"service.{key}" for key in ROOT_ONLY_SERVICE_KEYS if key in service]
    return ignored


def is_zero(value: Any, *, duration: bool = False) -> bool:
    """Go's zero value test on a decoded YAML value (`0s` is zero for a duration key)."""
    if value is None or value is False or value == "" or value == [] or value == {}:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return True
    if duration and isinstance(value, str):
        try:
            return parse_duration(value) == 0
        except DurationError:
            return False
    return False


def _set(result: dict[str, Any], key: str, value: Any) -> None:
    """Store a merged section, leaving the key absent when neither side had it."""
    if value is _ABSENT:
        result.pop(key, None)
    else:
        result[key] = value


def _map(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _override_nonzero(
    target: dict[str, Any], overlay: Mapping[str, Any], keys: tuple[str, ...]
) -> None:
    for key in keys:
        if key in overlay and not is_zero(overlay[key], duration=key in _DURATION_KEYS):
            target[key] = overlay[key]


def _merge_service(base: Any, overlay: Any) -> Any:
    if base is None and overlay is None:
        return _ABSENT
    merged = _map(base)
    _override_nonzero(merged, _map(overlay), SERVICE_MERGED_KEYS)
    return merged


#: `state:` keys an included file may set (each overrides the earlier value when non-empty).
STATE_MERGED_KEYS = ("path", "backend", "dsn", "secret_ref", "pool_size", "connect_timeout",
                     "statement_timeout", "lock_timeout", "node_id", "heartbeat_interval",
                     "dead_after")


def _merge_state(base: Any, overlay: Any) -> Any:
    if base is None and overlay is None:
        return _ABSENT
    merged = _map(base)
    _override_nonzero(merged, _map(overlay), STATE_MERGED_KEYS)
    return merged




def _merge_api(base: Any, overlay: Any) -> Any:
    if base is None and overlay is None:
        return _ABSENT
    merged = _map(base)
    extra = _map(overlay)
    enabled = extra.get("enabled")
    if enabled is True or yaml_bool_word(enabled) is True:
        merged["enabled"] = True
    _override_nonzero(merged, extra, API_OVERRIDE_KEYS)
    for key in API_APPENDED_KEYS:
        appended = _append(merged.get(key), extra.get(key))
        if appended is not _ABSENT:
            merged[key] = appended
    tokens = _append(_map(merged.get("auth")).get("tokens"), _map(extra.get("auth")).get("tokens"))
    if tokens is not _ABSENT:
        merged["auth"] = {**_map(merged.get("auth")), "tokens": tokens}
    return merged


def _merge_plugins(base: Any, overlay: Any) -> Any:
    if base is None and overlay is None:
        return _ABSENT
    return {**_map(base), **_map(overlay)}


def _append(base: Any, overlay: Any) -> Any:
    """Concatenate two lists; a non-list side counts as empty (types were checked per file)."""
    if base is None and overlay is None:
        return _ABSENT
    left = list(base) if isinstance(base, list) else []
    right = list(overlay) if isinstance(overlay, list) else []
    return left + right


def _merge_remote_ingress(base: Any, overlay: Any) -> Any:
    if base is None and overlay is None:
        return _ABSENT
    merged = _map(base)
    extra = _map(overlay)
    _override_nonzero(merged, extra, REMOTE_INGRESS_OVERRIDE_KEYS)
    if extra.get("require_key_id") is True:
        merged["require_key_id"] = True
    peers = _append(merged.get("peers"), extra.get("peers"))
    if peers is not _ABSENT:
        merged["peers"] = peers
    return merged


def _merge_webhooks(base: Any, overlay: Any) -> Any:
    """Webhooks in the nested form `{listen, endpoints}`; a legacy flat list is its endpoints."""
    if base is None and overlay is None:
        return _ABSENT
    merged = _webhooks_nested(base)
    extra = _webhooks_nested(overlay)
    _override_nonzero(merged, extra, WEBHOOKS_OVERRIDE_KEYS)
    endpoints = _append(merged.get("endpoints"), extra.get("endpoints"))
    if endpoints is not _ABSENT:
        merged["endpoints"] = endpoints
    return merged


def _webhooks_nested(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {"endpoints": list(value)}
    return _map(value)
