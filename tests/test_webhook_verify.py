"""Signature schemes (github, stripe, slack) as pure functions, against known vectors."""

from __future__ import annotations

import re

import hashlib
import hmac

import pytest

from ductile.planes.webhook.payload import PayloadError, RawJSON, webhook_payload
from ductile.planes.webhook.verify import (
    SignatureFormatError,
    Verdict,
    parse_stripe_signature,
    sign_github,
    sign_slack,
    sign_stripe,
    verify_github,
    verify_request,
    verify_slack,
    verify_stripe,
)

SECRET = b"It's a Secret to Everybody"
BODY = b"Hello, World!"
NOW = 1_700_000_000


def test_github_signature_matches_githubs_documented_example() -> None:
    # From GitHub's "Validating webhook deliveries" page.
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_github(SECRET, BODY) == "sha256=" + expected
    assert verify_github(SECRET, "sha256=" + expected, BODY).ok
    assert verify_github(SECRET, expected, BODY).ok  # bare hex, Go ductile accepts it too
    assert verify_github(SECRET, "SHA256=" + expected.upper(), BODY).ok


@pytest.mark.parametrize(("signature", "reason"), [
    (None, "signature missing"),
    ("", "signature missing"),
    ("   ", "signature missing"),
    ("sha256=", "malformed signature"),
    ("sha256=abc", "malformed signature"),
    ("sha256=" + "g" * 64, "malformed signature"),
    ("sha256=" + "ab " * 21 + "a", "malformed signature"),  # fromhex would take spaces
    ("sha1=" + "0" * 40, "malformed signature"),
    ("sha256=" + "0" * 64, "signature mismatch"),
])
def test_github_refusals_name_their_reason(signature: str | None, reason: str) -> None:
    assert verify_github(SECRET, signature, BODY) == Verdict(False, reason)


def test_github_tampered_body_wrong_secret_and_empty_secret_fail() -> None:
    signature = sign_github(SECRET, BODY)
    assert verify_github(SECRET, signature, BODY + b" ").reason == "signature mismatch"
    assert verify_github(b"other", signature, BODY).reason == "signature mismatch"
    assert verify_github(b"", sign_github(b"", BODY), BODY).reason == "secret is empty"


def test_stripe_signs_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_stripe(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"
    assert verify_stripe(SECRET, f"t={NOW},v1={expected}", BODY, now=NOW, tolerance=300).ok


def test_stripe_accepts_any_matching_v1_and_ignores_other_schemes() -> None:
    good = sign_stripe(SECRET, BODY, NOW).split(",")[1]
    header = f"t={NOW},v1={'0' * 64},v0={'1' * 64},{good},x=y"
    assert verify_stripe(SECRET, header, BODY, now=NOW, tolerance=300).ok
    assert parse_stripe_signature(header).v1[0] == bytes(32)


@pytest.mark.parametrize(("now", "ok"), [(NOW, True), (NOW + 300, True), (NOW - 300, True),
                                         (NOW + 301, False), (NOW - 301, False)])
def test_stripe_tolerance_window_is_symmetric(now: int, ok: bool) -> None:
    verdict = verify_stripe(SECRET, sign_stripe(SECRET, BODY, NOW), BODY, now=now, tolerance=300)
    assert verdict.ok is ok
    if not ok:
        assert verdict.reason == "timestamp outside tolerance"


@pytest.mark.parametrize(("header", "problem"), [
    ("v1=" + "0" * 64, "no t"),
    (f"t={NOW}", "no v1"),
    (f"t={NOW},v1=abc", "v1 must be 64 hex digits"),
    (f"t=-5,v1={'0' * 64}", "t must be Unix seconds"),
    (f"t=1e9,v1={'0' * 64}", "t must be Unix seconds"),
    (f"t=١٢٣,v1={'0' * 64}", "t must be Unix seconds"),  # non-ASCII digits
    (f"t={NOW},t={NOW},v1={'0' * 64}", "more than one t"),
    (f"t={NOW},garbage", "items must be key=value"),
])
def test_stripe_header_format_errors(header: str, problem: str) -> None:
    with pytest.raises(SignatureFormatError, match=problem):
        parse_stripe_signature(header)
    verdict = verify_stripe(SECRET, header, BODY, now=NOW, tolerance=300)
    assert not verdict.ok and problem in verdict.reason


def test_slack_signs_v0_timestamp_body() -> None:
    expected = hmac.new(SECRET, f"v0:{NOW}:".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_slack(SECRET, BODY, NOW) == "v0=" + expected
    assert verify_slack(SECRET, "v0=" + expected, str(NOW), BODY, now=NOW, tolerance=300).ok


@pytest.mark.parametrize(("signature", "timestamp", "now", "reason"), [
    (None, str(NOW), NOW, "signature missing"),
    ("v0=" + "0" * 64, None, NOW, "timestamp missing"),
    ("v0=" + "0" * 64, "soon", NOW, "malformed timestamp"),
    ("v1=" + "0" * 64, str(NOW), NOW, "malformed signature: expected v0=<hex>"),
    ("v0=xyz", str(NOW), NOW, "malformed signature"),
    ("v0=" + "0" * 64, str(NOW), NOW, "signature mismatch"),
    ("good", str(NOW), NOW + 301, "timestamp outside tolerance"),
    ("good", str(NOW - 1), NOW, "signature mismatch"),  # the timestamp is signed
])
def test_slack_refusals(signature: str | None, timestamp: str | None, now: int,
                        reason: str) -> None:
    if signature == "good":
        signature = sign_slack(SECRET, BODY, NOW)
    verdict = verify_slack(SECRET, signature, timestamp, BODY, now=now, tolerance=300)
    assert verdict == Verdict(False, reason)


def test_verify_request_reads_the_configured_headers_case_insensitively() -> None:
    headers = {"x-custom-sig": sign_github(SECRET, BODY)}

    def header(name: str) -> str | None:
        return headers.get(name.lower())

    assert verify_request("github", SECRET, header, BODY, signature_header="X-Custom-Sig",
                          tolerance=300, now=NOW).ok
    slack = {"x-slack-signature": sign_slack(SECRET, BODY, NOW),
             "x-slack-request-timestamp": str(NOW)}
    assert verify_request("slack", SECRET, lambda n: slack.get(n.lower()), BODY,
                          signature_header="X-Slack-Signature", tolerance=300, now=NOW).ok
    assert verify_request("hmac-md5", SECRET, header, BODY, signature_header="X-Custom-Sig",
                          tolerance=300, now=NOW) == Verdict(False, "unknown scheme 'hmac-md5'")


def test_webhook_payload_keeps_the_exact_text_and_refuses_what_cannot_be_carried() -> None:
    text = '{ "b": 1.50,\n "a": "\\u00e9", "e": "\\ud83d\\ude00" }'
    payload = webhook_payload(text.encode(), "handle")
    assert isinstance(payload, RawJSON) and payload == text
    for bad, message in (
        (b"", "Expecting value"), (b"nope", "Expecting value"),
        (b'{"a": NaN}', "field a holds NaN"), (b"[Infinity]", "field [0] holds Infinity"),
        (b'{"a": 1e999}', "field a holds the out-of-range number 1e999"),
        (b'{"a": "\\ud800"}', "field a contains a lone surrogate \\ud800"),
        (b"\xef\xbb\xbf{}", "BOM"), (b"\xff", "not UTF-8"),
        (b"[" * 50_000 + b"]" * 50_000, "50000 levels deep; at most 64"),
    ):
        with pytest.raises(PayloadError) as caught:
            webhook_payload(bad, "poll")
        assert caught.value.args[0].startswith("invalid JSON body: ")
        assert message in str(caught.value), bad[:20]


@pytest.mark.parametrize(("body", "accepted"), [
    (b"{}", True), (b'{"type": "x", "payload": {}}', True), (b"[1]", False), (b'"s"', False),
    (b"1", False), (b"null", False), (b"true", False),
])
def test_every_command_needs_an_object_body(body: bytes, accepted: bool) -> None:
    for command, why in (("handle", "for command handle"),
                         ("poll", "(a plugin receives its payload as a JSON object)")):
        if accepted:
            assert webhook_payload(body, command) == body.decode()
        else:
            with pytest.raises(PayloadError, match=f"must be a JSON object {re.escape(why)}"):
                webhook_payload(body, command)
