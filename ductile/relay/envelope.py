"""The relay wire protocol, pure: signing, timestamps, and the receiver's ordered validation.

A relay request is `POST <path>` with a JSON envelope body and four headers: `X-Ductile-Peer`
(the sender's name), `X-Ductile-Timestamp`, `X-Ductile-Signature` and, optionally,
`X-Ductile-Key-Id`. Both modes sign the same bytes, `signing_string()`:

    UPPER(method) "\\n" path "\\n" timestamp.strip() "\\n" body

so a signature cannot be lifted onto another endpoint, another moment or another body.

- `hmac` (Go ductile's only mode): lowercase hex of HMAC-SHA256(secret, signing string); the
  receiver also takes a `sha256=` prefix, as Go ductile does.
- `ed25519` (ours): `ed25519=<standard padded base64 of the 64-byte signature>`. The receiver
  holds only the sender's public key, so a leaked receiver config cannot forge deliveries.

A peer accepts only its own mode: an HMAC signature sent to an Ed25519 peer (or the reverse)
is refused like any other bad signature, so a downgrade gains nothing.

`check_request` runs the checks in a fixed order and returns the first failure as `Refused`
(status and message are part of the wire contract, shared with Go ductile), or the parsed
`Envelope`. The cheap, body-free checks (identity, clock, key id, signature present, size) run
before the signature is verified, and the body is parsed only once its signature holds, so an
unauthenticated sender never reaches the JSON parser. Nothing here raises on any header or body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import nacl.exceptions
import nacl.signing

from ductile.jsonbody import JsonInputError, loads

HEADER_PEER = "X-Ductile-Peer"
HEADER_TIMESTAMP = "X-Ductile-Timestamp"
HEADER_SIGNATURE = "X-Ductile-Signature"
HEADER_KEY_ID = "X-Ductile-Key-Id"

#: Event types are lower-case dotted (`backup.ready`); match with `fullmatch` (`$` alone would
#: let a trailing newline through).
EVENT_TYPE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")

HMAC = "hmac"
ED25519 = "ed25519"
MODES = (HMAC, ED25519)

ED25519_PREFIX = "ed25519="
_SHA256_PREFIX = "sha256="
_SEED_SIZE = 32
_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64

_ORIGIN_FIELDS = ("instance", "plugin", "job_id", "event_id")

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
# Unix seconds: ASCII digits with an optional sign; 19 digits is past any datetime anyway, and
# the bound keeps int() far from the interpreter's digit limit.
_UNIX_SECONDS = re.compile(r"[+-]?[0-9]{1,19}")
# RFC 3339 date-time; `t`/`z` in lower case are allowed by its section 5.6 note. ASCII digits
# only (`\d` would take any Unicode digit).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class PeerKey:
    """What the receiver knows about one sending peer (from its `remote_ingress.peers` entry).

    `accept` limits the event types the peer may send (empty: any); `baggage_allow` names the
    baggage keys kept (all others are dropped, so a peer cannot inject context we never asked
    for). The secret stays out of `repr` so a logged PeerKey leaks nothing."""

    name: str
    enabled: bool = True
    mode: str = HMAC
    secret: bytes = field(default=b"", repr=False)
    public_key: bytes = b""
    key_id: str = ""
    accept: tuple[str, ...] = ()
    baggage_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngressPolicy:
    """Limits common to every peer: body size in bytes, clock skew in seconds either way, and
    whether every request must name its key (`X-Ductile-Key-Id`)."""

    max_body_size: int = 1024 * 1024
    allowed_clock_skew: float = 300.0
    require_key_id: bool = False


@dataclass(frozen=True)
class Envelope:
    """An accepted relay request: the event, where it came from, and the kept baggage.

    `signature` is the receiver's replay key. It is the signature in the canonical form that
    `sign()` produces (lower-case hex, or `ed25519=` with canonical base64): for any conforming
    sender that is the header value as received, and a replay cannot dodge the key by
    re-spelling the same signature (`sha256=` prefix, upper-case hex, stray base64 bits)."""

    event_type: str
    payload: dict[str, Any]
    dedupe_key: str | None
    origin_instance: str | None
    origin_plugin: str | None
    origin_job_id: str | None
    origin_event_id: str | None
    baggage: dict[str, Any]
    signature: str
    timestamp: datetime

    def dedupe(self, peer: str) -> str | None:
        """The key that makes a re-sent event a no-op: the sender's own dedupe key, else one
        derived from the origin event id (scoped by peer and origin instance, since event ids
        are only unique per instance), else None (no deduplication)."""
        if self.dedupe_key is not None:
            return self.dedupe_key
        if self.origin_event_id is not None:
            instance = self.origin_instance or peer
            return f"relay:{peer}:{instance}:{self.origin_event_id}"
        return None


@dataclass(frozen=True)
class Refused:
    """A refused relay request: the HTTP status and the message for the response body."""

    status: int
    error: str


class _BodyRefused(Exception):
    """Internal: carries a 4xx refusal out of the body parser's helpers."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.refused = Refused(status, error)


# --- signing ----------------------------------------------------------------------------------


def signing_string(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    """The bytes both modes sign. `surrogatepass` so no header text can make this raise (a
    string with a lone surrogate simply signs to something no honest sender produced)."""
    head = f"{method.upper()}\n{path}\n{timestamp.strip()}\n"
    return head.encode("utf-8", "surrogatepass") + body


def sign(mode: str, key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    """The `X-Ductile-Signature` value. `key` is the shared secret (hmac) or the 32-byte seed
    (ed25519). Raises ValueError for an unknown mode, an empty secret or a seed of the wrong
    size: those are the sender's configuration errors, not input."""
    message = signing_string(method, path, timestamp, body)
    if mode == HMAC:
        if not key:
            raise ValueError("relay HMAC secret is empty")
        return _hmac(key, message).hex()
    if mode == ED25519:
        signature = _signing_key(key).sign(message).signature
        return ED25519_PREFIX + base64.b64encode(signature).decode("ascii")
    raise ValueError(f"unknown relay signature mode {mode!r}; expected one of {MODES}")


def public_key_for(seed: bytes) -> bytes:
    """The 32-byte Ed25519 verify key for a seed: what the receiving peer is configured with."""
    return bytes(_signing_key(seed).verify_key)


def verify(peer: PeerKey, signature: str, message: bytes) -> bool:
    """Whether `signature` (a header value) signs `message` under the peer's mode. Malformed
    values, the other mode's format and unusable keys are all just False."""
    return _verified(peer, signature, message) is not None


def _verified(peer: PeerKey, signature: str, message: bytes) -> str | None:
    """The signature in `sign()`'s canonical form when it verifies, else None."""
    if peer.mode == HMAC:
        return _verify_hmac(peer.secret, signature, message)
    if peer.mode == ED25519:
        return _verify_ed25519(peer.public_key, signature, message)
    return None


def _signing_key(seed: bytes) -> nacl.signing.SigningKey:
    if len(seed) != _SEED_SIZE:
        raise ValueError(f"relay Ed25519 seed is {len(seed)} bytes; it must be {_SEED_SIZE}")
    return nacl.signing.SigningKey(seed)


def _hmac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def _hmac_digest(signature: str) -> bytes | None:
    """The 32 digest bytes of `[sha256=]<64 hex>`, or None."""
    value = signature.strip()
    if value[:len(_SHA256_PREFIX)].lower() == _SHA256_PREFIX:
        value = value[len(_SHA256_PREFIX):]
    # bytes.fromhex alone would accept spaces; the regex makes the format exact.
    if _HEX_DIGEST.fullmatch(value) is None:
        return None
    return bytes.fromhex(value)


def _ed25519_signature(signature: str) -> bytes | None:
    """The 64 signature bytes of `ed25519=<base64>`, or None."""
    value = signature.strip()
    if value[:len(ED25519_PREFIX)].lower() != ED25519_PREFIX:
        return None
    try:
        raw = base64.b64decode(value[len(ED25519_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _SIGNATURE_SIZE else None


def _verify_hmac(secret: bytes, signature: str, message: bytes) -> str | None:
    # An empty secret signs nothing: anyone could compute it.
    digest = _hmac_digest(signature)
    if not secret or digest is None:
        return None
    if not hmac.compare_digest(_hmac(secret, message), digest):
        return None
    return digest.hex()


def _verify_ed25519(public_key: bytes, signature: str, message: bytes) -> str | None:
    raw = _ed25519_signature(signature)
    if raw is None or len(public_key) != _PUBLIC_KEY_SIZE:
        return None
    try:
        nacl.signing.VerifyKey(public_key).verify(message, raw)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError,
            TypeError):
        return None
    return ED25519_PREFIX + base64.b64encode(raw).decode("ascii")


# --- timestamps -------------------------------------------------------------------------------


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with nine fractional digits and `Z` (Go's wire form; Python keeps only
    microseconds, so the last three digits are zero). A naive `moment` is refused with
    ValueError rather than guessed to be local time or UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("relay timestamps need an aware datetime")
    utc = moment.astimezone(timezone.utc)
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{utc.microsecond:06d}000Z")


def parse_timestamp(text: str) -> datetime | None:
    """An aware UTC datetime, or None when `text` is not a timestamp we take.

    Accepted (surrounding whitespace ignored): Unix seconds (ASCII digits, optional sign), and
    RFC 3339 with 0 to 9 fractional digits and `Z` or a `±HH:MM` offset. Fractions beyond
    microseconds are truncated. Out-of-range dates (year 0, month 13, second 60) are None."""
    value = text.strip()
    if _UNIX_SECONDS.fullmatch(value):
        try:
            return _EPOCH + timedelta(seconds=int(value))
        except (OverflowError, ValueError):
            return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    return _rfc3339(match)


def _rfc3339(match: re.Match[str]) -> datetime | None:
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction = match.group(7) or ""
    microsecond = int(fraction[:6].ljust(6, "0"))
    if match.group(8):
        offset = timedelta(0)
    else:
        off_hours, off_minutes = int(match.group(10)), int(match.group(11))
        if off_hours > 23 or off_minutes > 59:
            return None
        offset = timedelta(hours=off_hours, minutes=off_minutes)
        if match.group(9) == "-":
            offset = -offset
    try:
        local = datetime(year, month, day, hour, minute, second, microsecond,
                         tzinfo=timezone(offset))
        return local.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        return None


# --- the receiver -----------------------------------------------------------------------------


def check_request(peer_name: str, peer: PeerKey | None, headers: Mapping[str, str], method: str,
                  path: str, body: bytes, now: datetime, policy: IngressPolicy
                  ) -> Envelope | Refused:
    """Validate one relay request for the peer named in the URL or route (`peer_name`, whose
    configuration is `peer`, None when unknown). `now` is an aware datetime (injected so tests
    can move time). Header names are matched case-insensitively.

    The first failing check wins (see the module docstring for why this order); never raises on
    any headers or body."""
    lowered = {name.lower(): value for name, value in headers.items()}

    def header(name: str) -> str:
        return lowered.get(name.lower(), "").strip()

    if peer is None or not peer.enabled:
        return Refused(403, "unknown relay peer")
    if header(HEADER_PEER) != peer_name:
        return Refused(403, "peer identity mismatch")
    timestamp = _check_timestamp(header(HEADER_TIMESTAMP), now, policy)
    if isinstance(timestamp, Refused):
        return timestamp
    refused = _check_key_id(peer, header(HEADER_KEY_ID), policy)
    if refused is not None:
        return refused
    signature = header(HEADER_SIGNATURE)
    if not signature:
        return Refused(403, "missing relay signature")
    if len(body) > policy.max_body_size:
        return Refused(413, "relay payload too large")
    message = signing_string(method, path, header(HEADER_TIMESTAMP), body)
    canonical = _verified(peer, signature, message)
    if canonical is None:
        return Refused(403, "forbidden")
    try:
        envelope = _parse_body(body, peer, canonical, timestamp)
    except _BodyRefused as exc:
        return exc.refused
    if envelope.origin_instance is not None and envelope.origin_instance != peer_name:
        return Refused(403, "origin instance mismatch")
    if peer.accept and envelope.event_type not in peer.accept:
        return Refused(422, "event type not allowed for peer")
    return envelope


def _check_timestamp(text: str, now: datetime, policy: IngressPolicy) -> datetime | Refused:
    if not text:
        return Refused(403, "missing relay timestamp")
    timestamp = parse_timestamp(text)
    if timestamp is None:
        return Refused(403, "invalid relay timestamp")
    if abs((now - timestamp).total_seconds()) > policy.allowed_clock_skew:
        return Refused(403, "relay timestamp outside allowed clock skew")
    return timestamp


def _check_key_id(peer: PeerKey, key_id: str, policy: IngressPolicy) -> Refused | None:
    if policy.require_key_id and not key_id:
        return Refused(403, "missing relay key id")
    if peer.key_id and key_id != peer.key_id:
        return Refused(403, "relay key id mismatch")
    return None


def _parse_body(body: bytes, peer: PeerKey, signature: str, timestamp: datetime) -> Envelope:
    """The envelope in a verified body, or _BodyRefused. A JSON null counts as an absent
    member and an empty string as an absent optional string, as Go's decoder (which fills
    zero values and omits empty ones) treats them."""
    try:
        document = loads(body)
    except JsonInputError:
        raise _BodyRefused(400, "invalid JSON body") from None
    if not isinstance(document, dict):
        raise _BodyRefused(400, "invalid JSON body")
    event = document.get("event")
    if not isinstance(event, dict):
        raise _BodyRefused(400, "event.type is required")
    event_type = _event_type(event.get("type"))
    payload = _object(event.get("payload"), "event.payload must be a JSON object")
    dedupe_key = event.get("dedupe_key")
    if dedupe_key is not None and not isinstance(dedupe_key, str):
        raise _BodyRefused(400, "event.dedupe_key must be a string")
    origin = _origin(document.get("origin"))
    baggage = _object(document.get("baggage"), "baggage must be a JSON object")
    return Envelope(
        event_type=event_type,
        payload=payload,
        dedupe_key=dedupe_key or None,
        origin_instance=origin.get("instance") or None,
        origin_plugin=origin.get("plugin") or None,
        origin_job_id=origin.get("job_id") or None,
        origin_event_id=origin.get("event_id") or None,
        baggage={key: value for key, value in baggage.items() if key in peer.baggage_allow},
        signature=signature,
        timestamp=timestamp,
    )


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _BodyRefused(400, "event.type is required")
    if EVENT_TYPE.fullmatch(value) is None:
        raise _BodyRefused(400, "event.type must use lower-case dotted form")
    return value


def _object(value: Any, error: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BodyRefused(400, error)
    return value


def _origin(value: Any) -> dict[str, str]:
    """The known origin fields; unknown members are ignored, as Go's decoder ignores them."""
    origin = _object(value, "origin must be an object of strings")
    known = {name: origin.get(name) for name in _ORIGIN_FIELDS}
    if any(item is not None and not isinstance(item, str) for item in known.values()):
        raise _BodyRefused(400, "origin must be an object of strings")
    return {name: item for name, item in known.items() if item is not None}


# --- the sender -------------------------------------------------------------------------------


def build_envelope(event_type: str, payload: Mapping[str, Any], *, origin: Mapping[str, str],
                   dedupe_key: str | None = None,
                   baggage: Mapping[str, Any] | None = None) -> bytes:
    """The body a sender POSTs: compact UTF-8 JSON, members in Go's order. Empty dedupe key,
    baggage and origin fields are left out (Go's `omitempty`); `origin` itself is always sent.

    Raises ValueError for an origin key outside instance/plugin/job_id/event_id (a sender bug
    the receiver would silently drop) or a payload holding NaN or infinity (not JSON)."""
    unknown = sorted(set(origin) - set(_ORIGIN_FIELDS))
    if unknown:
        raise ValueError(f"unknown relay origin field(s) {unknown}; expected {_ORIGIN_FIELDS}")
    event: dict[str, Any] = {"type": event_type, "payload": dict(payload)}
    if dedupe_key:
        event["dedupe_key"] = dedupe_key
    document: dict[str, Any] = {
        "event": event,
        "origin": {name: origin[name] for name in _ORIGIN_FIELDS if origin.get(name)},
    }
    if baggage:
        document["baggage"] = dict(baggage)
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def signed_headers(mode: str, key: bytes, *, sender: str, method: str, path: str, body: bytes,
                   now: datetime, key_id: str = "") -> dict[str, str]:
    """Every header a relay request needs, the signature computed over `body` at `now`."""
    timestamp = format_timestamp(now)
    headers = {
        "Content-Type": "application/json",
        HEADER_PEER: sender,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(mode, key, method, path, timestamp, body),
    }
    if key_id:
        headers[HEADER_KEY_ID] = key_id
    return headers
