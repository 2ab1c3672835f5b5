"""The fields of a `config_snapshots` row: what config was live, without its secrets.

`config_hash` answers "did the effective config change?": it covers the sanitized config plus a
fingerprint of each secret, so rotating an API token changes the hash while the token itself is
never stored. `source_hash` answers "did the files change?" (a comment edit changes it but not
`config_hash`). Both are deterministic: the same config always hashes the same.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from ductile.config.durations import format_duration
from ductile.config.schema import ApiConfig, Config, PluginConf, ServiceConfig, SourceFile

SNAPSHOT_FORMAT = 1
HASH_PREFIX = "blake2b:"
FINGERPRINT_PREFIX = "secretfp_blake2b:"
FINGERPRINT_DOMAIN = b"ductile config secret fingerprint v1\0"
SECRET_MARKERS = ("token", "api_key", "secret", "password", "credential", "private_key")
SEMANTICS: dict[str, str] = {
    "baggage_bulk_import": "author_namespace_required",
    "baggage_durability": "author_explicit_claims",
    "baggage_immutability": "deep_accretion_immutable_paths",
    "baggage_transition": "explicit_claims_only",
    "plugin_retry_field": "v2_boundary_compatibility_signal",
    "retry_policy_owner": "core",
}
# Raw sections whose features are not built yet: hashed (redacted) so changing them still shows.
DEFERRED_SECTIONS = ("webhooks", "routes", "instances", "remote_ingress", "pipelines")
# (instances and remote_ingress are recorded as written, redacted: their secrets are refs.)


def snapshot_fields(cfg: Config, resolved: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values `store.snapshots.Snapshots.record` takes for this config."""
    sanitized = sanitized_config(cfg)
    fingerprints = secret_fingerprints(cfg, resolved or {})
    return {
        "config_hash": config_hash(sanitized, fingerprints),
        "source_hash": source_hash(cfg.source_files),
        "source_path": cfg.config_path,
        "source": cfg.source,
        "semantics": dict(SEMANTICS),
        "plugin_fingerprints": None,
        "sanitized_config": sanitized,
        "secret_fingerprints": fingerprints,
    }


def config_hash(sanitized: Mapping[str, Any], fingerprints: list[dict[str, Any]]) -> str:
    document = {
        "sanitized_config": sanitized,
        "secret_fingerprints": fingerprints,
        "snapshot_format": SNAPSHOT_FORMAT,
    }
    return HASH_PREFIX + _blake2b(canonical_json(document))


def source_hash(files: tuple[SourceFile, ...]) -> str | None:
    """Over every source file sorted by path: `path\\0bytes\\0` each; None when there are none."""
    if not files:
        return None
    digest = hashlib.blake2b(digest_size=32)
    for source in sorted(files, key=lambda f: f.path):
        digest.update(source.path.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(source.data + b"\0")
    return HASH_PREFIX + digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: one byte string per value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode("utf-8", "surrogatepass")


def secret_fingerprints(cfg: Config, resolved: Mapping[str, str]) -> list[dict[str, Any]]:
    """One entry per API token: the vault secret it names and, when `resolved` (the vault's
    gateway-visible secrets) has it, a one-way fingerprint of its value, so a rolled token
    changes the config hash without the value ever reaching a snapshot."""
    entries: list[dict[str, Any]] = []
    for index, token in enumerate(cfg.api.tokens):
        purpose = f"api.auth.tokens[{index}]"
        value = resolved.get(token.secret_ref, "")
        entry: dict[str, Any] = {"purpose": purpose, "source": "vault",
                                 "secret_ref": token.secret_ref, "present": bool(value)}
        if value:
            entry["fingerprint"] = fingerprint(purpose, value)
        entries.append(entry)
    return entries


def fingerprint(purpose: str, value: str) -> str:
    data = FINGERPRINT_DOMAIN + purpose.encode() + b"\0" + value.encode("utf-8", "surrogatepass")
    return FINGERPRINT_PREFIX + _blake2b(data)


def _state(cfg: Config) -> dict[str, Any]:
    """The store's settings; PostgreSQL's connection string never holds a password (the
    loader refuses one), and its secret is named, never resolved."""
    if not cfg.state.shared:
        return {"path": cfg.state_path}
    return {"path": cfg.state_path, **dataclasses.asdict(cfg.state)}


def sanitized_config(cfg: Config) -> dict[str, Any]:
    """The effective config (defaults applied) as JSON, every secret replaced by its path."""
    sanitized: dict[str, Any] = {
        "service": _service(cfg.service),
        "state": _state(cfg),
        "api": _api(cfg.api),
        "plugin_roots": list(cfg.plugin_roots),
        "plugins": {name: _plugin(name, plugin) for name, plugin in sorted(cfg.plugins.items())},
    }
    if cfg.accounts:
        # Who plugins run as is part of what a job ran under: changing an account changes
        # the snapshot (and its hash), like any other setting.
        sanitized["accounts"] = {
            name: {"user": a.user, "uid": a.uid, "gid": a.gid,
                   "groups": list(a.groups) if a.groups is not None else None,
                   "state_dir": a.state_dir, "home": a.home}
            for name, a in sorted(cfg.accounts.items())}
    for section in DEFERRED_SECTIONS:
        if section in cfg.raw:
            sanitized[section] = redact(cfg.raw[section], section)
    return sanitized


def is_secret_key(key: Any) -> bool:
    normalized = str(key).lower().replace("-", "_")
    return any(marker in normalized for marker in SECRET_MARKERS)


def redact(value: Any, path: str) -> Any:
    """A JSON copy of `value` with each secret-named key's value replaced by
    `[redacted:<path>]`, at any depth."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            out[str(key)] = f"[redacted:{child}]" if is_secret_key(key) else redact(item, child)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    """JSON scalars as they are; anything else YAML can produce in an unchecked section gets a
    deterministic text form."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return sorted(str(item) for item in value)
    return str(value)


def _duration(seconds: float) -> str:
    return "" if seconds == 0 else format_duration(seconds)


def _service(service: ServiceConfig) -> dict[str, Any]:
    return {
        "name": service.name,
        "tick_interval": _duration(service.tick_interval),
        "log_level": service.log_level,
        "log_format": service.log_format,
        "dedupe_ttl": _duration(service.dedupe_ttl),
        "job_log_retention": _duration(service.job_log_retention),
        "job_queue_retention": _duration(service.job_queue_retention),
        "job_transitions_retention": _duration(service.job_transitions_retention),
        "job_attempts_retention": _duration(service.job_attempts_retention),
        "breaker_transitions_retention": _duration(service.breaker_transitions_retention),
        "max_workers": service.max_workers,
        "hook_max_depth": service.hook_max_depth,
        "max_route_depth": service.max_route_depth,
        "max_outstanding_jobs": service.max_outstanding_jobs,
        "plugin_env_passthrough": list(service.plugin_env_passthrough),
        "strict_mode": service.strict_mode,
        # The resolved switches, as the Go original renders them (no fail_on_sidedoor).
        "admission": {
            "verify_integrity_on_boot": service.admission.verify_integrity_on_boot,
            "fail_on_drift": service.admission.fail_on_drift,
            "validate_config_on_boot": service.admission.validate_config_on_boot,
            "require_api_auth": service.admission.require_api_auth,
        },
        "allow_symlinks": service.allow_symlinks,
        "unconfined": service.unconfined,
        "shutdown_grace": _duration(service.shutdown_grace),
    }


def _api(api: ApiConfig) -> dict[str, Any]:
    tokens = []
    for token in api.tokens:
        entry: dict[str, Any] = {"secret_ref": token.secret_ref, "scopes": list(token.scopes)}
        if token.name:
            entry["name"] = token.name
        tokens.append(entry)
    return {
        "enabled": api.enabled,
        "listen": api.listen,
        "management_socket": api.management_socket,
        "auth": {"tokens": tokens},
        "max_concurrent_sync": api.max_concurrent_sync,
        "max_sync_timeout": _duration(api.max_sync_timeout),
        "allowed_origins": list(api.allowed_origins),
        "max_body_size": api.max_body_size,
    }


def _plugin(name: str, plugin: PluginConf) -> dict[str, Any]:
    base = f"plugins.{name}"
    run_as = {"run_as": plugin.run_as} if plugin.run_as else {}
    return {
        **run_as,
        "enabled": plugin.enabled,
        "uses": plugin.uses,
        "config": redact(plugin.config, f"{base}.config"),
        "retry": {"max_attempts": plugin.retry.max_attempts,
                  "backoff_base": _duration(plugin.retry.backoff_base)},
        "timeouts": {command: _duration(seconds)
                     for command, seconds in sorted(plugin.timeouts.items())},
        "circuit_breaker": {"threshold": plugin.circuit_breaker.threshold,
                            "reset_after": _duration(plugin.circuit_breaker.reset_after)},
        "max_outstanding_polls": plugin.max_outstanding_polls,
        "parallelism": plugin.parallelism,
        "max_outstanding_jobs": plugin.max_outstanding_jobs,
        "notify_on_complete": plugin.notify_on_complete,
        "schedules": [
            {**redact(schedule.raw, f"{base}.schedules[{i}]"),
             "id": schedule.id, "command": schedule.command}
            for i, schedule in enumerate(plugin.schedules)
        ],
    }


def _blake2b(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()
