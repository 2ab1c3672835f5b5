"""Webhook signature schemes: pure functions over the raw body, the headers and a clock reading.

Three schemes, chosen per endpoint (`scheme:`):

- `github` (the default, and the only one Go ductile has): the signature header holds
  `sha256=<hex>` or bare `<hex>` of HMAC-SHA256(secret, raw body).
- `stripe`: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, each v1 an
  HMAC-SHA256(secret, `<t>.` + raw body); any one v1 may match (Stripe sends several while a
  secret is being rolled). Other items (`v0=`, unknown keys) are ignored, as Stripe asks.
- `slack`: `X-Slack-Signature: v0=<hex>` of HMAC-SHA256(secret, `v0:<ts>:` + raw body) where
  `<ts>` is the `X-Slack-Request-Timestamp` header.

Stripe and Slack carry a timestamp inside what is signed, so a captured delivery can only be
replayed within `tolerance` seconds of it; we refuse timestamps that far in the past *or* the
future (Stripe's own library only checks the past; a clock skewed ahead is as suspicious).

Every function returns a `Verdict` and never raises on any header or body: the caller answers
403 for every failure alike, and `reason` goes to the log only, so a prober learns nothing from
the response. Digests are compared with `hmac.compare_digest` on the decoded bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from ductile.errors import InputError

SLACK_TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
# Unix seconds, ASCII digits only; 12 digits reach the year 33658, far enough.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check. `reason` is for the log, never for the HTTP response."""

    ok: bool
    reason: str = ""


ACCEPTED = Verdict(True, "")


@dataclass(frozen=True)
class StripeSignature:
    """A parsed `Stripe-Signature` header: its timestamp and every v1 digest."""

    timestamp: int
    v1: tuple[bytes, ...]


class SignatureFormatError(InputError):
    """A signature header is not in the scheme's format (the message says which part)."""


def verify_request(
    scheme: str,
    secret: bytes,
    header: Callable[[str], str | None],
    body: bytes,
    *,
    signature_header: str,
    tolerance: float,
    now: float,
) -> Verdict:
    """Check one delivery against its endpoint's scheme.

    `header(name)` returns a request header (case-insensitive) or None. `now` is the clock
    reading in Unix seconds (injected so tests can move time).
    """
    signature = header(signature_header)
    if scheme == "github":
        return verify_github(secret, signature, body)
    if scheme == "stripe":
        return verify_stripe(secret, signature, body, now=now, tolerance=tolerance)
    if scheme == "slack":
        timestamp = header(SLACK_TIMESTAMP_HEADER)
        return verify_slack(secret, signature, timestamp, body, now=now, tolerance=tolerance)
    return Verdict(False, f"unknown scheme {scheme!r}")


def verify_github(secret: bytes, signature: str | None, body: bytes) -> Verdict:
    """`sha256=<hex>` or bare `<hex>` of HMAC-SHA256(secret, body)."""
    if not secret:
        return Verdict(False, "secret is empty")
    if not signature or not signature.strip():
        return Verdict(False, "signature missing")
    value = signature.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:]
    digest = _hex_digest(value)
    if digest is None:
        return Verdict(False, "malformed signature")
    return _compare(_hmac(secret, body), digest)


def verify_stripe(
    secret: bytes, signature: str | None, body: bytes, *, now: float, tolerance: float
) -> Verdict:
    """`t=<ts>,v1=<hex>...` where each v1 signs `<ts>.` + body; the timestamp within tolerance."""
    if not secret:
        return Verdict(False, "secret is empty")
    if not signature or not signature.strip():
        return Verdict(False, "signature missing")
    try:
        parsed = parse_stripe_signature(signature)
    except SignatureFormatError as exc:
        return Verdict(False, f"malformed signature: {exc}")
    window = _within_tolerance(parsed.timestamp, now, tolerance)
    if not window.ok:
        return window
    expected = _hmac(secret, str(parsed.timestamp).encode("ascii") + b"." + body)
    # Compare against every candidate so the time taken does not depend on which one matched.
    matched = False
    for candidate in parsed.v1:
        matched |= hmac.compare_digest(expected, candidate)
    return ACCEPTED if matched else Verdict(False, "signature mismatch")


def verify_slack(
    secret: bytes,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> Verdict:
    """`v0=<hex>` of `v0:<ts>:` + body, `<ts>` from X-Slack-Request-Timestamp within tolerance."""
    if not secret:
        return Verdict(False, "secret is empty")
    if not signature or not signature.strip():
        return Verdict(False, "signature missing")
    if not timestamp or not timestamp.strip():
        return Verdict(False, "timestamp missing")
    ts_text = timestamp.strip()
    if _UNIX_SECONDS.fullmatch(ts_text) is None:
        return Verdict(False, "malformed timestamp")
    value = signature.strip()
    if value[:3] != "v0=":
        return Verdict(False, "malformed signature: expected v0=<hex>")
    digest = _hex_digest(value[3:])
    if digest is None:
        return Verdict(False, "malformed signature")
    window = _within_tolerance(int(ts_text), now, tolerance)
    if not window.ok:
        return window
    return _compare(_hmac(secret, b"v0:" + ts_text.encode("ascii") + b":" + body), digest)


def parse_stripe_signature(value: str) -> StripeSignature:
    """Parse `t=<ts>,v1=<hex>[,v1=...]`; SignatureFormatError names what is wrong.

    Items are `key=value` separated by commas; whitespace around items is ignored. Exactly one
    `t` is required and at least one well-formed `v1`; other keys are ignored.
    """
    timestamp: int | None = None
    digests: list[bytes] = []
    for item in value.split(","):
        key, sep, text = item.strip().partition("=")
        if not sep:
            raise SignatureFormatError("items must be key=value")
        if key == "t":
            if timestamp is not None:
                raise SignatureFormatError("more than one t")
            if _UNIX_SECONDS.fullmatch(text) is None:
                raise SignatureFormatError("t must be Unix seconds")
            timestamp = int(text)
        elif key == "v1":
            digest = _hex_digest(text)
            if digest is None:
                raise SignatureFormatError("v1 must be 64 hex digits")
            digests.append(digest)
    if timestamp is None:
        raise SignatureFormatError("no t")
    if not digests:
        raise SignatureFormatError("no v1")
    return StripeSignature(timestamp=timestamp, v1=tuple(digests))


def sign_github(secret: bytes, body: bytes) -> str:
    """The header value a GitHub-style sender computes (for tests, docs and `ductile` senders)."""
    return "sha256=" + _hmac(secret, body).hex()


def sign_stripe(secret: bytes, body: bytes, timestamp: int) -> str:
    """A `Stripe-Signature` value for `body` sent at `timestamp`."""
    digest = _hmac(secret, str(timestamp).encode("ascii") + b"." + body)
    return f"t={timestamp},v1={digest.hex()}"


def sign_slack(secret: bytes, body: bytes, timestamp: int) -> str:
    """An `X-Slack-Signature` value for `body` sent at `timestamp`."""
    return "v0=" + _hmac(secret, b"v0:" + str(timestamp).encode("ascii") + b":" + body).hex()


def _hmac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def _hex_digest(text: str) -> bytes | None:
    # bytes.fromhex alone would accept spaces; the regex makes the format exact.
    if _HEX_DIGEST.fullmatch(text) is None:
        return None
    return bytes.fromhex(text)


def _compare(expected: bytes, presented: bytes) -> Verdict:
    if hmac.compare_digest(expected, presented):
        return ACCEPTED
    return Verdict(False, "signature mismatch")


def _within_tolerance(timestamp: int, now: float, tolerance: float) -> Verdict:
    if abs(now - timestamp) > tolerance:
        return Verdict(False, "timestamp outside tolerance")
    return ACCEPTED
