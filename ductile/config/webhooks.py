"""Decode the `webhooks:` section into typed endpoints.

Both shapes Go ductile accepts are read: the documented `webhooks: {listen, endpoints: [...]}`
and the legacy flat list `webhooks: [...]` (endpoints only). Decode the *merged* section (after
`include:`), so `listen` from config.yaml and endpoints from webhooks.yaml meet here.

What is checked here (each error is a ConfigError naming the file and the dotted key):
types, required fields (`path`, `plugin`, `secret_ref`), `path` starting with `/`, sizes
(`ductile.config.sizes`), durations, the scheme, header names, duplicate paths (a trailing `/`
is ignored when comparing, as in Go), and `listen` being `host:port` when endpoints exist.
What is not: whether the plugin exists and whether `secret_ref` resolves; the loader
cross-checks those against the discovered plugins and the vault.

Unknown keys do not fail the decode; they are appended to `warnings`, like the rest of the
loader does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ductile.config.durations import DurationError, parse_duration
from ductile.config.sizes import SizeError, parse_byte_size
from ductile.config.reader import ConfigFile, Reader

SCHEMES = ("github", "stripe", "slack")
# The header each sender puts its signature in, when `signature_header` is not set.
DEFAULT_SIGNATURE_HEADERS = {
    "github": "X-Hub-Signature-256",
    "stripe": "Stripe-Signature",
    "slack": "X-Slack-Signature",
}
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
DEFAULT_COMMAND = "handle"
DEFAULT_SCHEME = "github"
DEFAULT_TOLERANCE = 300.0

SECTION_KEYS = frozenset({"listen", "endpoints"})
ENDPOINT_KEYS = frozenset({"name", "path", "plugin", "command", "secret_ref", "signature_header",
                           "max_body_size", "scheme", "tolerance", "dedupe_header"})

# RFC 9110 token characters: what a header name may contain.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class WebhookEndpoint:
    """One configured webhook: where it listens, what it runs, and how it is verified.

    `tolerance` (seconds) bounds the signed timestamp of the `stripe` and `slack` schemes;
    `github` has no timestamp and ignores it. `dedupe_header` names a request header whose value
    becomes the job's dedupe key, so a redelivery does not run twice.
    """

    path: str
    plugin: str
    secret_ref: str
    signature_header: str
    command: str = DEFAULT_COMMAND
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    scheme: str = DEFAULT_SCHEME
    tolerance: float = DEFAULT_TOLERANCE
    dedupe_header: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class WebhooksConfig:
    """The webhook listener address (None when not set) and its endpoints, in config order."""

    listen: str | None
    endpoints: tuple[WebhookEndpoint, ...]


def decode_webhooks(
    value: Any, *, file: str, warnings: list[str] | None = None
) -> WebhooksConfig:
    """Typed webhooks from the `webhooks:` section; unknown keys are appended to `warnings`."""
    reader = Reader(ConfigFile(file, file), warnings if warnings is not None else [])
    if value is None:
        return WebhooksConfig(listen=None, endpoints=())
    if isinstance(value, list):
        section: dict[str, Any] = {"endpoints": value}
    elif isinstance(value, dict):
        section = value
        reader.unknown_keys(section, "webhooks", SECTION_KEYS)
    else:
        raise reader.fail("webhooks", "a map with listen and endpoints, or a list", value)
    items = section.get("endpoints")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise reader.fail("webhooks.endpoints", "a list", items)
    endpoints = tuple(_endpoint(reader, item, f"webhooks.endpoints[{i}]")
                      for i, item in enumerate(items))
    _refuse_duplicate_paths(reader, endpoints)
    listen = _listen(reader, section.get("listen"), required=bool(endpoints))
    return WebhooksConfig(listen=listen, endpoints=endpoints)


def _endpoint(r: Reader, value: Any, key: str) -> WebhookEndpoint:
    if not isinstance(value, dict):
        raise r.fail(key, "a map", value)
    r.unknown_keys(value, key, ENDPOINT_KEYS)
    path = r.required_string(value, "path", key)
    if not path.startswith("/") or any(c.isspace() or c in "?#" for c in path):
        raise r.error(f"{key}.path", f"webhook path {path!r} must start with / and contain no "
                      "spaces, ? or #; for example /webhook/github")
    label = f'webhook endpoint "{path}"'
    plugin = r.required_string(value, "plugin", key)
    if value.get("secret_ref") in (None, ""):
        raise r.error(f"{key}.secret_ref", f"{label}: secret_ref is required (the name of the "
                      "vault secret holding the HMAC key)")
    secret_ref = r.required_string(value, "secret_ref", key)
    scheme = r.optional_string(value, "scheme", key) or DEFAULT_SCHEME
    if scheme not in SCHEMES:
        raise r.error(f"{key}.scheme", f"{label}: unknown scheme {scheme!r}; use one of "
                      + ", ".join(SCHEMES))
    command = r.optional_string(value, "command", key) or DEFAULT_COMMAND
    return WebhookEndpoint(
        path=path,
        plugin=plugin,
        command=command,
        secret_ref=secret_ref,
        signature_header=(_header_name(r, value, "signature_header", key)
                          or DEFAULT_SIGNATURE_HEADERS[scheme]),
        max_body_size=_size(r, value.get("max_body_size"), f"{key}.max_body_size", label),
        scheme=scheme,
        tolerance=_tolerance(r, value.get("tolerance"), f"{key}.tolerance", label),
        dedupe_header=_header_name(r, value, "dedupe_header", key),
        name=r.optional_string(value, "name", key),
    )


def _size(r: Reader, value: Any, key: str, label: str) -> int:
    if value is None or value == "":
        return DEFAULT_MAX_BODY_SIZE
    try:
        return parse_byte_size(value)
    except SizeError as exc:
        raise r.error(key, f"{label}: invalid max_body_size: {exc}") from exc


def _tolerance(r: Reader, value: Any, key: str, label: str) -> float:
    if value is None:
        return DEFAULT_TOLERANCE
    if not isinstance(value, str):
        raise r.fail(key, "a duration such as 5m or 300s", value)
    try:
        seconds = parse_duration(value)
    except DurationError as exc:
        raise r.error(key, f"{label}: {exc}") from exc
    if not math.isfinite(seconds) or seconds <= 0:
        raise r.error(key, f"{label}: tolerance must be a positive duration such as 5m")
    return seconds


def _listen(r: Reader, value: Any, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise r.error("webhooks.listen", "webhooks.listen is required when webhook "
                          "endpoints are configured (for example 127.0.0.1:8091)")
        return None
    if not isinstance(value, str):
        raise r.fail("webhooks.listen", "a host:port string such as 127.0.0.1:8091", value)
    host, sep, port = value.rpartition(":")
    if not sep or _PORT.fullmatch(port) is None or int(port) > 65535:
        raise r.error("webhooks.listen", f"listen address {value!r} must be host:port, "
                      "for example 127.0.0.1:8091")
    return value


def _refuse_duplicate_paths(r: Reader, endpoints: tuple[WebhookEndpoint, ...]) -> None:
    seen: dict[str, int] = {}
    for index, endpoint in enumerate(endpoints):
        normal = endpoint.path.rstrip("/") or "/"
        if normal in seen:
            raise r.error(f"webhooks.endpoints[{index}].path",
                          f'webhook path "{endpoint.path}" conflicts with '
                          f"webhooks.endpoints[{seen[normal]}]; give each endpoint its own path")
        seen[normal] = index


def _header_name(r: Reader, section: dict[str, Any], name: str, key: str) -> str | None:
    value = r.optional_string(section, name, key)
    if value is not None and _HEADER_NAME.fullmatch(value) is None:
        raise r.error(f"{key}.{name}", f"{value!r} is not an HTTP header name; "
                      "for example X-Hub-Signature-256")
    return value
