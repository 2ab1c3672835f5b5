"""The relay configuration: `instances:` (peers this gateway sends to) and `remote_ingress:` (the
peers it accepts signed events from).

Relay is point to point: one gateway POSTs a signed event to a peer, which routes it locally.
The sender POSTs `base_url + ingress_path`, where an absent `ingress_path` means the default
listen path plus our own name (`/ingest/peer/<service.name>`); the receiver listens on
`remote_ingress.listen_path/{peer}`, so `service.name` is the sender's identity and must be a
lower-case hyphenated name whenever relay is configured.

Two steps, as for `webhooks:`:

- `decode_relay` turns the sections into the dataclasses below. It checks types only (a wrong
  type is a ConfigError naming the file and the dotted key, `config.yaml: instances[0].timeout:
  ...`); unknown keys are appended to `warnings`. Zero or absent values take the defaults, as
  Go's applyDefaults does (a `timeout: 0s` is the 10s default, not "no time at all").
- `validate_relay` applies the rules between values (names, URLs, signing modes, event-type
  grammar, reserved baggage keys), the first error winning, in a fixed order so an operator
  fixing one error at a time meets them in the same sequence every time. Disabled entries are
  validated too: a disabled entry is one `enabled: true` away from being used.

What is not checked here: whether a `secret_ref` resolves. Boot resolves `secret_refs()`
against the vault, as it does for webhook and API secrets.

`RetryConf` lives here, not in `schema.py`, because `schema.py` imports this module (for
`Config.relay`) and a relay instance has a retry policy too; `schema.py` re-exports it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ductile.config.reader import ConfigFile, Reader
from ductile.config.sizes import SizeError, parse_byte_size
from ductile.errors import ConfigError

SIGNING_MODES = ("hmac", "ed25519")
#: Instance and peer names and, when relay is configured, `service.name`.
NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
#: The event types `allow`/`accept` list (the receiver refuses other forms on the wire).
EVENT_TYPE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
ED25519_KEY_BYTES = 32

DEFAULT_INGRESS_PATH = "/ingest/peer"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
DEFAULT_CLOCK_SKEW = 300.0

INSTANCE_KEYS = frozenset({"name", "enabled", "base_url", "ingress_path", "secret_ref",
                           "signing", "key_id", "timeout", "allow", "retry"})
RETRY_KEYS = frozenset({"max_attempts", "backoff_base"})
INGRESS_KEYS = frozenset({"listen_path", "max_body_size", "allowed_clock_skew",
                          "require_key_id", "peers"})
PEER_KEYS = frozenset({"name", "enabled", "signing", "secret_ref", "public_key", "key_id",
                       "accept", "baggage"})
BAGGAGE_KEYS = frozenset({"allow"})


@dataclass(frozen=True)
class RetryConf:
    """A retry policy: of a plugin's jobs (`plugins.<name>.retry`) and of a relay instance's
    deliveries (`instances[].retry`)."""

    max_attempts: int = 4
    backoff_base: float = 30.0


@dataclass(frozen=True)
class RelayInstance:
    """A peer this gateway sends to (one `instances:` entry).

    `secret_ref` names the vault secret: the HMAC key, or (`signing: ed25519`) the base64 of the
    32-byte signing seed. `timeout` is seconds per request; `allow` the event types this
    instance may be sent (empty: any).
    """

    name: str
    enabled: bool = True
    base_url: str = ""
    # The receiver's full path for us, as Go configs write it; "" means the default listen
    # path plus our service.name (the sender resolves it, knowing the name).
    ingress_path: str = ""
    secret_ref: str = ""
    signing: str = "hmac"
    key_id: str = ""
    timeout: float = DEFAULT_TIMEOUT
    allow: tuple[str, ...] = ()
    retry: RetryConf = field(default_factory=RetryConf)


@dataclass(frozen=True)
class RelayPeer:
    """A peer this gateway accepts events from (one `remote_ingress.peers` entry).

    An `hmac` peer shares the secret named by `secret_ref`; an `ed25519` peer is verified with
    `public_key` (base64 of 32 bytes; not a secret, so it lives in the YAML). `accept` lists
    the event types taken from it (empty: any); `baggage_allow` (YAML `baggage: {allow: [...]}`)
    the baggage keys admitted with them (everything else is dropped).
    """

    name: str
    enabled: bool = True
    signing: str = "hmac"
    secret_ref: str = ""
    public_key: str = ""
    key_id: str = ""
    accept: tuple[str, ...] = ()
    baggage_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteIngress:
    """`remote_ingress:`: where the receiver listens and what it accepts."""

    listen_path: str = DEFAULT_INGRESS_PATH
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    allowed_clock_skew: float = DEFAULT_CLOCK_SKEW
    require_key_id: bool = False
    peers: tuple[RelayPeer, ...] = ()


@dataclass(frozen=True)
class RelayConfig:
    """Both sides of the relay; `ingress` is None when there is no `remote_ingress:` block."""

    instances: tuple[RelayInstance, ...] = ()
    ingress: RemoteIngress | None = None

    @property
    def configured(self) -> bool:
        """Whether relay is in use at all (then `service.name` is an identity and is checked)."""
        return bool(self.instances) or self.ingress is not None

    def instance(self, name: str) -> RelayInstance | None:
        """The enabled instance called `name`: a disabled one cannot be sent to."""
        return next((i for i in self.instances if i.name == name and i.enabled), None)

    def peer(self, name: str) -> RelayPeer | None:
        """The peer called `name`, enabled or not: the receiver tells the two apart itself."""
        peers = self.ingress.peers if self.ingress is not None else ()
        return next((p for p in peers if p.name == name), None)

    def secret_refs(self) -> tuple[tuple[str, str], ...]:
        """`(where, ref)` for every non-empty secret_ref, disabled entries included, for boot to
        resolve against the vault (`relay instance "b"`, `relay peer "a"`)."""
        refs = [(f"relay instance {_q(i.name)}", i.secret_ref)
                for i in self.instances if i.secret_ref]
        peers = self.ingress.peers if self.ingress is not None else ()
        refs += [(f"relay peer {_q(p.name)}", p.secret_ref) for p in peers if p.secret_ref]
        return tuple(refs)


# --------------------------------------------------------------------------- decoding


def decode_relay(
    instances: Any, ingress: Any, *, file: str, warnings: list[str]
) -> RelayConfig:
    """Typed relay config from the `instances:` and `remote_ingress:` values (None: absent).

    `file` is the label errors and warnings name (the file, or the files, holding the
    sections); unknown keys are appended to `warnings`.
    """
    r = Reader(ConfigFile(file, file), warnings)
    entries = r.sequence(instances, "instances")
    return RelayConfig(
        instances=tuple(_instance(r, entry, f"instances[{i}]") for i, entry in enumerate(entries)),
        ingress=None if ingress is None else _ingress(r, ingress),
    )


def _instance(r: Reader, value: Any, key: str) -> RelayInstance:
    if not isinstance(value, dict):
        raise r.fail(key, "a map such as {name: peer-b, base_url: https://..., secret_ref: x}",
                     value)
    m = r.section(value, key, INSTANCE_KEYS)
    enabled = r.boolean(m.get("enabled"), f"{key}.enabled")
    return RelayInstance(
        name=r.string(m.get("name"), f"{key}.name") or "",
        enabled=True if enabled is None else enabled,
        base_url=r.string(m.get("base_url"), f"{key}.base_url") or "",
        ingress_path=r.string(m.get("ingress_path"), f"{key}.ingress_path") or "",
        secret_ref=r.string(m.get("secret_ref"), f"{key}.secret_ref") or "",
        signing=r.string(m.get("signing"), f"{key}.signing") or "hmac",
        key_id=r.string(m.get("key_id"), f"{key}.key_id") or "",
        timeout=r.duration(m.get("timeout"), f"{key}.timeout") or DEFAULT_TIMEOUT,
        allow=_strings(r, m.get("allow"), f"{key}.allow"),
        retry=_retry(r, m.get("retry"), f"{key}.retry"),
    )


def _retry(r: Reader, value: Any, key: str) -> RetryConf:
    """Like a plugin's `retry:` block: a missing field is its default."""
    m = r.section(value, key, RETRY_KEYS)
    attempts = r.integer(m.get("max_attempts"), f"{key}.max_attempts")
    backoff = r.duration(m.get("backoff_base"), f"{key}.backoff_base")
    defaults = RetryConf()
    return RetryConf(
        max_attempts=defaults.max_attempts if attempts is None else attempts,
        backoff_base=defaults.backoff_base if backoff is None else backoff,
    )


def _ingress(r: Reader, value: Any) -> RemoteIngress:
    key = "remote_ingress"
    m = r.section(value, key, INGRESS_KEYS)
    path = r.string(m.get("listen_path"), f"{key}.listen_path") or DEFAULT_INGRESS_PATH
    peers = r.sequence(m.get("peers"), f"{key}.peers")
    return RemoteIngress(
        # "/ingest/peer/" and "/ingest/peer" are one path; "/" stays "/" for validation to refuse.
        listen_path=path.rstrip("/") or path,
        max_body_size=_size(r, m.get("max_body_size"), f"{key}.max_body_size"),
        allowed_clock_skew=(r.duration(m.get("allowed_clock_skew"), f"{key}.allowed_clock_skew")
                            or DEFAULT_CLOCK_SKEW),
        require_key_id=bool(r.boolean(m.get("require_key_id"), f"{key}.require_key_id")),
        peers=tuple(_peer(r, entry, f"{key}.peers[{i}]") for i, entry in enumerate(peers)),
    )


def _peer(r: Reader, value: Any, key: str) -> RelayPeer:
    if not isinstance(value, dict):
        raise r.fail(key, "a map such as {name: peer-a, secret_ref: x}", value)
    m = r.section(value, key, PEER_KEYS)
    enabled = r.boolean(m.get("enabled"), f"{key}.enabled")
    baggage = r.section(m.get("baggage"), f"{key}.baggage", BAGGAGE_KEYS)
    return RelayPeer(
        name=r.string(m.get("name"), f"{key}.name") or "",
        enabled=True if enabled is None else enabled,
        signing=r.string(m.get("signing"), f"{key}.signing") or "hmac",
        secret_ref=r.string(m.get("secret_ref"), f"{key}.secret_ref") or "",
        public_key=r.string(m.get("public_key"), f"{key}.public_key") or "",
        key_id=r.string(m.get("key_id"), f"{key}.key_id") or "",
        accept=_strings(r, m.get("accept"), f"{key}.accept"),
        baggage_allow=_strings(r, baggage.get("allow"), f"{key}.baggage.allow"),
    )


def _strings(r: Reader, value: Any, key: str) -> tuple[str, ...]:
    """A list of strings; empty entries pass, so validation can say what is wrong with them."""
    items = r.sequence(value, key)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise r.fail(f"{key}[{index}]", "a string", item)
    return tuple(items)


def _size(r: Reader, value: Any, key: str) -> int:
    if value is None or value == "":
        return DEFAULT_MAX_BODY_SIZE
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise r.fail(key, "a size such as 512KB or 1MB, or a number of bytes", value)
    try:
        return parse_byte_size(value)
    except SizeError as exc:
        raise r.error(key, str(exc)) from exc


# --------------------------------------------------------------------------- validation


def validate_relay(relay: RelayConfig, service_name: str) -> None:
    """Raise ConfigError for the first structural problem of the relay config, if any."""
    if not relay.configured:
        return
    if NAME.fullmatch(service_name) is None:
        raise ConfigError(f"service.name {_q(service_name)} must use lower-case hyphenated form "
                          "(a-z, 0-9, single hyphens) when relay is configured",
                          key="service.name")
    _check_instances(relay.instances)
    if relay.ingress is not None:
        _check_ingress(relay.ingress)


def _check_instances(instances: tuple[RelayInstance, ...]) -> None:
    seen: set[str] = set()
    for index, instance in enumerate(instances):
        key = f"instances[{index}]"
        if NAME.fullmatch(instance.name) is None:
            raise ConfigError(f"{key}.name {_q(instance.name)} must use lower-case hyphenated "
                              "form (a-z, 0-9, single hyphens)", key=f"{key}.name")
        if instance.name in seen:
            raise ConfigError(f"instances: name {_q(instance.name)} is used twice",
                              key=f"{key}.name")
        seen.add(instance.name)
        _check_instance(instance, key)


def _check_instance(instance: RelayInstance, key: str) -> None:
    label = f"relay instance {_q(instance.name)}"
    if not _absolute_http_url(instance.base_url):
        raise ConfigError(f"{label}: base_url must be an absolute http or https URL "
                          f"(got {_q(instance.base_url)})", key=f"{key}.base_url")
    if instance.ingress_path and not _is_path(instance.ingress_path):
        raise ConfigError(f"{label}: ingress_path must start with / and contain no spaces "
                          f"(got {_q(instance.ingress_path)})", key=f"{key}.ingress_path")
    if not instance.secret_ref.strip():
        raise ConfigError(f"{label}: secret_ref is required (the vault secret holding the "
                          "HMAC key or the ed25519 signing seed)", key=f"{key}.secret_ref")
    if instance.signing not in SIGNING_MODES:
        raise ConfigError(f"{label}: signing must be hmac or ed25519 "
                          f"(got {_q(instance.signing)})", key=f"{key}.signing")
    if instance.timeout < 0:
        raise ConfigError(f"{label}: timeout must be >= 0", key=f"{key}.timeout")
    _check_event_types(label, "allow", instance.allow, f"{key}.allow")
    if instance.retry.max_attempts < 1:
        raise ConfigError(f"{label}: retry.max_attempts must be >= 1",
                          key=f"{key}.retry.max_attempts")
    if instance.retry.backoff_base < 0:
        raise ConfigError(f"{label}: retry.backoff_base must be >= 0",
                          key=f"{key}.retry.backoff_base")


def _check_ingress(ingress: RemoteIngress) -> None:
    key = "remote_ingress"
    if not _is_path(ingress.listen_path):
        raise ConfigError(f"{key}.listen_path {_q(ingress.listen_path)} must start with / and "
                          "contain no spaces", key=f"{key}.listen_path")
    if ingress.listen_path.rstrip("/") == "":
        raise ConfigError(f"{key}.listen_path must not be / alone: the receiver needs a path "
                          f"of its own, such as {DEFAULT_INGRESS_PATH}",
                          key=f"{key}.listen_path")
    if ingress.allowed_clock_skew < 0:
        raise ConfigError(f"{key}.allowed_clock_skew must be >= 0",
                          key=f"{key}.allowed_clock_skew")
    if ingress.max_body_size <= 0:
        raise ConfigError(f"{key}.max_body_size must be > 0", key=f"{key}.max_body_size")
    seen: set[str] = set()
    for index, peer in enumerate(ingress.peers):
        where = f"{key}.peers[{index}]"
        if NAME.fullmatch(peer.name) is None:
            raise ConfigError(f"{where}.name {_q(peer.name)} must use lower-case hyphenated "
                              "form (a-z, 0-9, single hyphens)", key=f"{where}.name")
        if peer.name in seen:
            raise ConfigError(f"{key}.peers: name {_q(peer.name)} is used twice",
                              key=f"{where}.name")
        seen.add(peer.name)
        _check_peer(peer, where, require_key_id=ingress.require_key_id)


def _check_peer(peer: RelayPeer, key: str, *, require_key_id: bool) -> None:
    label = f"relay peer {_q(peer.name)}"
    if peer.signing not in SIGNING_MODES:
        raise ConfigError(f"{label}: signing must be hmac or ed25519 (got {_q(peer.signing)})",
                          key=f"{key}.signing")
    if peer.signing == "hmac":
        if not peer.secret_ref.strip():
            raise ConfigError(f"{label}: secret_ref is required (the vault secret holding the "
                              "shared HMAC key)", key=f"{key}.secret_ref")
        if peer.public_key:
            raise ConfigError(f"{label}: public_key is only used with signing: ed25519; "
                              "remove it or set signing: ed25519", key=f"{key}.public_key")
    else:
        if not _is_ed25519_key(peer.public_key):
            raise ConfigError(f"{label}: public_key must be the base64 of a 32-byte Ed25519 "
                              "public key", key=f"{key}.public_key")
        if peer.secret_ref:
            raise ConfigError(f"{label}: secret_ref is not used with signing: ed25519 (the "
                              "public_key verifies); remove it", key=f"{key}.secret_ref")
    if require_key_id and not peer.key_id.strip():
        raise ConfigError(f"{label}: key_id is required because remote_ingress.require_key_id "
                          "is true", key=f"{key}.key_id")
    _check_event_types(label, "accept", peer.accept, f"{key}.accept")
    _check_baggage_keys(label, peer.baggage_allow, f"{key}.baggage.allow")


def _check_event_types(label: str, name: str, types: Iterable[str], key: str) -> None:
    """Non-empty, the event-type grammar, no duplicates (a duplicate is usually a typo)."""
    seen: set[str] = set()
    for index, event_type in enumerate(types):
        if not event_type:
            raise ConfigError(f"{label}: {name} entries must not be empty",
                              key=f"{key}[{index}]")
        if EVENT_TYPE.fullmatch(event_type) is None:
            raise ConfigError(f"{label}: {name}: {_q(event_type)} must use lower-case dotted "
                              "form (a-z, 0-9, separated by single . _ or -)",
                              key=f"{key}[{index}]")
        if event_type in seen:
            raise ConfigError(f"{label}: {name}: {_q(event_type)} is listed twice",
                              key=f"{key}[{index}]")
        seen.add(event_type)


def _check_baggage_keys(label: str, keys: Iterable[str], key: str) -> None:
    """`ductile`, `ductile.*` and `ductile_*` belong to the core (the router refuses claims
    there); a peer must not be able to seed them."""
    seen: set[str] = set()
    for index, name in enumerate(keys):
        if not name.strip():
            raise ConfigError(f"{label}: baggage.allow entries must not be empty",
                              key=f"{key}[{index}]")
        head = name.split(".", 1)[0]
        if head == "ductile" or head.startswith("ductile_"):
            raise ConfigError(f"{label}: baggage.allow: {_q(name)} is reserved (ductile, "
                              "ductile.* and ductile_* belong to the core)",
                              key=f"{key}[{index}]")
        if name in seen:
            raise ConfigError(f"{label}: baggage.allow: {_q(name)} is listed twice",
                              key=f"{key}[{index}]")
        seen.add(name)


def _absolute_http_url(url: str) -> bool:
    if not url or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_path(path: str) -> bool:
    return path.startswith("/") and not any(c.isspace() for c in path)


def _is_ed25519_key(text: str) -> bool:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == ED25519_KEY_BYTES


def _q(text: str) -> str:
    """A string quoted as Go's %q does for ordinary text (validate.go_quote; not imported from
    there because validate.py imports this module)."""
    return json.dumps(text, ensure_ascii=False)
