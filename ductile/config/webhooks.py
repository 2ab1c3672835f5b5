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
from ductile.config.webhook_match import (
    DEFAULT_REFUSE_STATUS,
    HEADER_NAME,
    MatchItem,
    decode_match,
    decode_refuse_status,
)
from ductile.config.tls import TlsConfig, decode_tls

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
#: `respond:` how a delivery is answered: 202 once queued, or the job's outcome once it ends.
RESPOND_MODES = ("accepted", "result")
DEFAULT_RESPOND = "accepted"
DEFAULT_RESPOND_TIMEOUT = 30.0
#: The longest `respond_timeout`: the default of `api.max_sync_timeout`, the API's own bound on a
#: synchronous wait. The webhook listener keeps a silent connection open this long (server.py).
MAX_RESPOND_TIMEOUT = 300.0

SECTION_KEYS = frozenset({"listen", "endpoints", "tls"})
ENDPOINT_KEYS = frozenset({"name", "path", "plugin", "command", "secret_ref", "signature_header",
                           "max_body_size", "scheme", "tolerance", "dedupe_header",
                           "match", "refuse_status", "respond", "respond_timeout"})

_HEADER_NAME = HEADER_NAME
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class WebhookEndpoint:
    """One configured webhook: where it listens, what it runs, and how it is verified.

    `tolerance` (seconds) bounds the signed timestamp of the `stripe` and `slack` schemes;
    `github` has no timestamp and ignores it. `dedupe_header` names a request header whose value
    becomes the job's dedupe key, so a redelivery does not run twice.

    `match` are the trigger rules (config/webhook_match.py): a verified delivery they do not all
    hold for is answered `refuse_status` and nothing is queued. `respond` is `accepted` (202 once
    queued) or `result` (wait up to `respond_timeout` seconds for the job's outcome).
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
    match: tuple[MatchItem, ...] = ()
    refuse_status: int = DEFAULT_REFUSE_STATUS
    respond: str = DEFAULT_RESPOND
    respond_timeout: float = DEFAULT_RESPOND_TIMEOUT


@dataclass(frozen=True)
class WebhooksConfig:
    """The webhook listener address (None when not set) and its endpoints, in config order;
    `tls` is the listener's certificate and key (config/tls.py), None for plain HTTP."""

    listen: str | None
    endpoints: tuple[WebhookEndpoint, ...]
    tls: TlsConfig | None = None


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
    tls = decode_tls(reader, section.get("tls"), "webhooks.tls")
    return WebhooksConfig(listen=listen, endpoints=endpoints, tls=tls)


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
    match = decode_match(r, value.get("match"), f"{key}.match")
    respond = _respond(r, value, key, label)
    _warn_idle_keys(r, value, key, match=bool(match), respond=respond)
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
        match=match,
        refuse_status=decode_refuse_status(r, value.get("refuse_status"),
                                           f"{key}.refuse_status", label),
        respond=respond,
        respond_timeout=_respond_timeout(r, value.get("respond_timeout"),
                                         f"{key}.respond_timeout", label),
    )


def _respond(r: Reader, value: dict[str, Any], key: str, label: str) -> str:
    respond = r.optional_string(value, "respond", key) or DEFAULT_RESPOND
    if respond not in RESPOND_MODES:
        raise r.error(f"{key}.respond", f"{label}: unknown respond mode {respond!r}; use "
                      "accepted (202 once queued) or result (wait for the plugin's result)")
    return respond


def _warn_idle_keys(r: Reader, value: dict[str, Any], key: str, *, match: bool,
                    respond: str) -> None:
    """A key that cannot take effect is a warning, as an unknown key is: `refuse_status`
    without `match`, `respond_timeout` without `respond: result`."""
    for name, idle, needs in (("refuse_status", not match, "match rules"),
                              ("respond_timeout", respond != "result", "respond: result")):
        if idle and value.get(name) is not None:
            r.warnings.append(f"{r.file.display}: {key}.{name} has no effect without {needs} "
                              "(ignored)")


def _respond_timeout(r: Reader, value: Any, key: str, label: str) -> float:
    seconds = r.duration(value, key)
    if seconds is None:
        return DEFAULT_RESPOND_TIMEOUT
    if not 0 < seconds <= MAX_RESPOND_TIMEOUT:
        raise r.error(key, f"{label}: respond_timeout must be a positive duration of at most "
                           "5m, for example 30s; the job keeps running after it, and the sender "
                           "gets 202 with its id")
    return seconds


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
