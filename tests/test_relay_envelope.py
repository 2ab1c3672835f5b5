"""The relay protocol: signing vectors, timestamps, and every refusal of the receiver in order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ductile.relay.envelope import (
    ED25519,
    HEADER_KEY_ID,
    HEADER_PEER,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HMAC,
    Envelope,
    IngressPolicy,
    PeerKey,
    Refused,
    build_envelope,
    check_request,
    format_timestamp,
    parse_timestamp,
    public_key_for,
    sign,
    signed_headers,
    signing_string,
)

UTC = timezone.utc
SECRET = b"relay-shared-secret"
SEED = bytes(range(32))
SENDER = "home-primary"
PATH = "/relay/v1/events"
NOW = datetime(2026, 12, 2, 19, 40, 1, 123456, tzinfo=UTC)
PEER = PeerKey(name=SENDER, secret=SECRET)
ED_PEER = PeerKey(name=SENDER, mode=ED25519, public_key=public_key_for(SEED))
POLICY = IngressPolicy()
BODY = build_envelope("backup.ready", {"archive_id": "nightly-2026-05-03"},
                      origin={"instance": SENDER, "event_id": "evt-456"})


def send(body: bytes = BODY, *, peer: PeerKey | None = PEER, policy: IngressPolicy = POLICY,
         peer_name: str = SENDER, now: datetime = NOW, drop: tuple[str, ...] = (),
         set_headers: dict[str, str] | None = None, mode: str = HMAC,
         key: bytes = SECRET) -> Envelope | Refused:
    """A request signed correctly over `body`, then altered as asked, checked at `now`."""
    headers = signed_headers(mode, key, sender=SENDER, method="POST", path=PATH, body=body,
                             now=NOW)
    for name in drop:
        del headers[name]
    headers.update(set_headers or {})
    return check_request(peer_name, peer, headers, "POST", PATH, body, now, policy)


def envelope_body(event: Any = None, **members: Any) -> bytes:
    """A hand-written body (build_envelope would not produce the malformed ones)."""
    document: dict[str, Any] = {"event": {"type": "backup.ready", "payload": {}}
                                if event is None else event}
    document.update(members)
    return json.dumps(document).encode()


# --- signing ----------------------------------------------------------------------------------


def test_hmac_signature_matches_an_independent_computation() -> None:
    timestamp = "2026-12-02T19:40:01.123456789Z"
    body = b'{"event":{"type":"backup.ready","payload":{}},"origin":{}}'
    message = b"POST\n/relay/v1/events\n" + timestamp.encode() + b"\n" + body
    expected = hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    assert signing_string("post", PATH, f"  {timestamp} ", body) == message
    assert sign(HMAC, SECRET, "post", PATH, timestamp, body) == expected
    assert sign(HMAC, SECRET, "POST", PATH, timestamp + "\t", body) == expected


@pytest.mark.parametrize("spell", [
    lambda hexsig: "sha256=" + hexsig,
    lambda hexsig: "SHA256=" + hexsig,
    lambda hexsig: hexsig.upper(),
    lambda hexsig: f"  {hexsig} ",
])
def test_hmac_signature_spellings_accepted_and_replay_key_is_canonical(spell: Any) -> None:
    hexsig = sign(HMAC, SECRET, "POST", PATH, format_timestamp(NOW), BODY)
    result = send(set_headers={HEADER_SIGNATURE: spell(hexsig)})
    assert isinstance(result, Envelope)
    assert result.signature == hexsig


def test_ed25519_round_trip() -> None:
    headers = signed_headers(ED25519, SEED, sender=SENDER, method="POST", path=PATH, body=BODY,
                             now=NOW, key_id="k1")
    signature = headers[HEADER_SIGNATURE]
    assert signature.startswith("ed25519=")
    assert len(base64.b64decode(signature.removeprefix("ed25519="), validate=True)) == 64
    assert len(public_key_for(SEED)) == 32
    result = check_request(SENDER, ED_PEER, headers, "POST", PATH, BODY, NOW, POLICY)
    assert isinstance(result, Envelope)
    assert result.signature == signature
    assert result.event_type == "backup.ready"
    assert result.payload == {"archive_id": "nightly-2026-05-03"}


def test_hmac_signature_refused_by_ed25519_peer_and_vice_versa() -> None:
    both = PeerKey(name=SENDER, mode=ED25519, public_key=public_key_for(SEED), secret=SECRET)
    assert send(peer=both) == Refused(403, "forbidden")
    assert send(peer=PeerKey(name=SENDER, secret=SECRET, public_key=public_key_for(SEED)),
                mode=ED25519, key=SEED) == Refused(403, "forbidden")


@pytest.mark.parametrize("public_key", [b"", b"\x01" * 31, b"\x01" * 33])
def test_ed25519_peer_with_unusable_public_key_just_fails(public_key: bytes) -> None:
    peer = PeerKey(name=SENDER, mode=ED25519, public_key=public_key)
    assert send(peer=peer, mode=ED25519, key=SEED) == Refused(403, "forbidden")


@pytest.mark.parametrize("signature", [
    "ed25519=", "ed25519=!!!!", "ed25519=" + base64.b64encode(b"\0" * 63).decode(),
    "ed25519=" + base64.b64encode(b"\0" * 64).decode(), "ed25519=" + "é" * 88, "0" * 128,
])
def test_malformed_ed25519_signatures_are_forbidden(signature: str) -> None:
    assert send(peer=ED_PEER, set_headers={HEADER_SIGNATURE: signature}) == \
        Refused(403, "forbidden")


@pytest.mark.parametrize("signature", [
    "sha256=", "0" * 63, "0" * 65, "g" * 64, "ab " * 21 + "a", "sha1=" + "0" * 40, "0" * 64,
])
def test_malformed_or_wrong_hmac_signatures_are_forbidden(signature: str) -> None:
    assert send(set_headers={HEADER_SIGNATURE: signature}) == Refused(403, "forbidden")


def test_any_single_byte_change_to_the_body_is_forbidden() -> None:
    headers = signed_headers(HMAC, SECRET, sender=SENDER, method="POST", path=PATH, body=BODY,
                             now=NOW)
    for index in (0, len(BODY) // 2, len(BODY) - 1):
        altered = bytearray(BODY)
        altered[index] ^= 0x01
        assert check_request(SENDER, PEER, headers, "POST", PATH, bytes(altered), NOW,
                             POLICY) == Refused(403, "forbidden")


def test_method_and_path_are_signed() -> None:
    headers = signed_headers(HMAC, SECRET, sender=SENDER, method="POST", path=PATH, body=BODY,
                             now=NOW)
    assert check_request(SENDER, PEER, headers, "PUT", PATH, BODY, NOW, POLICY) == \
        Refused(403, "forbidden")
    assert check_request(SENDER, PEER, headers, "POST", PATH + "x", BODY, NOW, POLICY) == \
        Refused(403, "forbidden")
    assert isinstance(check_request(SENDER, PEER, headers, "post", PATH, BODY, NOW, POLICY),
                      Envelope)


def test_empty_hmac_secret_never_verifies_and_cannot_sign() -> None:
    signature = hmac.new(b"", signing_string("POST", PATH, format_timestamp(NOW), BODY),
                         hashlib.sha256).hexdigest()
    peer = PeerKey(name=SENDER, secret=b"")
    assert send(peer=peer, set_headers={HEADER_SIGNATURE: signature}) == \
        Refused(403, "forbidden")
    with pytest.raises(ValueError, match="empty"):
        sign(HMAC, b"", "POST", PATH, "0", BODY)


def test_sign_refuses_unknown_mode_and_bad_seed() -> None:
    with pytest.raises(ValueError, match="unknown relay signature mode"):
        sign("rsa", SECRET, "POST", PATH, "0", BODY)
    with pytest.raises(ValueError, match="32"):
        sign(ED25519, b"short", "POST", PATH, "0", BODY)
    with pytest.raises(ValueError, match="32"):
        public_key_for(b"\0" * 31)


def test_unknown_peer_mode_is_forbidden() -> None:
    assert send(peer=PeerKey(name=SENDER, mode="rsa", secret=SECRET)) == \
        Refused(403, "forbidden")


def test_secret_stays_out_of_repr() -> None:
    assert "relay-shared-secret" not in repr(PEER)


# --- the refusals, in order -------------------------------------------------------------------

TOO_LARGE = IngressPolicy(max_body_size=len(BODY) - 1)
KEYED = PeerKey(name=SENDER, secret=SECRET, key_id="k1")
ACCEPTING = PeerKey(name=SENDER, secret=SECRET, accept=("backup.done", "other"))


@pytest.mark.parametrize(("kwargs", "status", "error"), [
    # 1. the peer
    ({"peer": None}, 403, "unknown relay peer"),
    ({"peer": PeerKey(name=SENDER, secret=SECRET, enabled=False)}, 403, "unknown relay peer"),
    # 2. the peer header
    ({"drop": (HEADER_PEER,)}, 403, "peer identity mismatch"),
    ({"set_headers": {HEADER_PEER: "vps-backup"}}, 403, "peer identity mismatch"),
    ({"peer_name": "vps-backup"}, 403, "peer identity mismatch"),
    # 3. the timestamp
    ({"drop": (HEADER_TIMESTAMP,)}, 403, "missing relay timestamp"),
    ({"set_headers": {HEADER_TIMESTAMP: "  "}}, 403, "missing relay timestamp"),
    ({"set_headers": {HEADER_TIMESTAMP: "yesterday"}}, 403, "invalid relay timestamp"),
    ({"now": NOW + timedelta(seconds=301)}, 403, "relay timestamp outside allowed clock skew"),
    ({"now": NOW - timedelta(seconds=301)}, 403, "relay timestamp outside allowed clock skew"),
    # 4. the key id
    ({"policy": IngressPolicy(require_key_id=True)}, 403, "missing relay key id"),
    ({"policy": IngressPolicy(require_key_id=True), "set_headers": {HEADER_KEY_ID: " "}}, 403,
     "missing relay key id"),
    ({"peer": KEYED, "set_headers": {HEADER_KEY_ID: "k2"}}, 403, "relay key id mismatch"),
    ({"peer": KEYED}, 403, "relay key id mismatch"),
    # 5. the signature's presence
    ({"drop": (HEADER_SIGNATURE,)}, 403, "missing relay signature"),
    ({"set_headers": {HEADER_SIGNATURE: " "}}, 403, "missing relay signature"),
    # 6. the size
    ({"policy": TOO_LARGE}, 413, "relay payload too large"),
    # 7. the signature
    ({"set_headers": {HEADER_SIGNATURE: "0" * 64}}, 403, "forbidden"),
    # 8. the body (each signed correctly)
    ({"body": b"not json"}, 400, "invalid JSON body"),
    ({"body": b""}, 400, "invalid JSON body"),
    ({"body": b"[1]"}, 400, "invalid JSON body"),
    ({"body": b'"event"'}, 400, "invalid JSON body"),
    ({"body": b'{"event":{"type":"a","payload":{"n":1e999}}}'}, 400, "invalid JSON body"),
    ({"body": b'{"event":{"type":"a\\ud800"}}'}, 400, "invalid JSON body"),
    ({"body": b"\xff{}"}, 400, "invalid JSON body"),
    ({"body": b"{}"}, 400, "event.type is required"),
    ({"body": envelope_body([])}, 400, "event.type is required"),
    ({"body": envelope_body({"payload": {}})}, 400, "event.type is required"),
    ({"body": envelope_body({"type": ""})}, 400, "event.type is required"),
    ({"body": envelope_body({"type": 5})}, 400, "event.type is required"),
    ({"body": envelope_body({"type": None})}, 400, "event.type is required"),
    ({"body": envelope_body({"type": "Backup.Ready"})}, 400,
     "event.type must use lower-case dotted form"),
    ({"body": envelope_body({"type": "backup..ready"})}, 400,
     "event.type must use lower-case dotted form"),
    ({"body": envelope_body({"type": "backup.ready\n"})}, 400,
     "event.type must use lower-case dotted form"),
    ({"body": envelope_body({"type": "backup ready"})}, 400,
     "event.type must use lower-case dotted form"),
    ({"body": envelope_body({"type": "a", "payload": []})}, 400,
     "event.payload must be a JSON object"),
    ({"body": envelope_body({"type": "a", "payload": "x"})}, 400,
     "event.payload must be a JSON object"),
    ({"body": envelope_body({"type": "a", "dedupe_key": 5})}, 400,
     "event.dedupe_key must be a string"),
    ({"body": envelope_body(origin=[])}, 400, "origin must be an object of strings"),
    ({"body": envelope_body(origin="home-primary")}, 400, "origin must be an object of strings"),
    ({"body": envelope_body(origin={"event_id": 7})}, 400, "origin must be an object of strings"),
    ({"body": envelope_body(origin={"instance": {"x": 1}})}, 400,
     "origin must be an object of strings"),
    ({"body": envelope_body(baggage=[])}, 400, "baggage must be a JSON object"),
    ({"body": envelope_body(baggage="x")}, 400, "baggage must be a JSON object"),
    # 9. the origin instance
    ({"body": envelope_body(origin={"instance": "vps-backup"})}, 403, "origin instance mismatch"),
    # 10. the peer's accepted types
    ({"peer": ACCEPTING}, 422, "event type not allowed for peer"),
])
def test_each_refusal_breaks_exactly_its_rule(kwargs: dict[str, Any], status: int,
                                              error: str) -> None:
    assert send(**kwargs) == Refused(status, error)


def test_the_first_failing_check_wins() -> None:
    # Everything is wrong at once: the earliest rule answers.
    everything = {"peer_name": "x", "drop": (HEADER_TIMESTAMP, HEADER_SIGNATURE),
                  "policy": IngressPolicy(max_body_size=0, require_key_id=True),
                  "body": b"garbage"}
    assert send(**everything) == Refused(403, "peer identity mismatch")
    assert send(**{**everything, "peer_name": SENDER}) == Refused(403, "missing relay timestamp")
    # Too large and badly signed: size first, before any hashing.
    assert send(policy=TOO_LARGE, set_headers={HEADER_SIGNATURE: "0" * 64}) == \
        Refused(413, "relay payload too large")
    # Badly signed garbage: the parser never sees an unauthenticated body.
    headers = signed_headers(HMAC, SECRET, sender=SENDER, method="POST", path=PATH, body=BODY,
                             now=NOW)
    assert check_request(SENDER, PEER, headers, "POST", PATH, b"garbage", NOW, POLICY) == \
        Refused(403, "forbidden")


def test_matching_key_id_and_accepted_type_pass() -> None:
    peer = PeerKey(name=SENDER, secret=SECRET, key_id="k1", accept=("backup.ready",))
    result = send(peer=peer, policy=IngressPolicy(require_key_id=True),
                  set_headers={HEADER_KEY_ID: "k1"})
    assert isinstance(result, Envelope)


def test_header_names_are_case_insensitive() -> None:
    headers = signed_headers(HMAC, SECRET, sender=SENDER, method="POST", path=PATH, body=BODY,
                             now=NOW)
    for fold in (str.lower, str.upper):
        folded = {fold(name): value for name, value in headers.items()}
        assert isinstance(check_request(SENDER, PEER, folded, "POST", PATH, BODY, NOW, POLICY),
                          Envelope)


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-02T19:40:01.123456789Z", datetime(2026, 12, 2, 19, 40, 1, 123456, tzinfo=UTC)),
    ("2026-12-02T19:40:01Z", datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)),
    ("2026-12-02t19:40:01.5z", datetime(2026, 12, 2, 19, 40, 1, 500000, tzinfo=UTC)),
    ("2026-12-02T19:40:01.1Z", datetime(2026, 12, 2, 19, 40, 1, 100000, tzinfo=UTC)),
    ("2026-12-02T21:40:01.25+02:00", datetime(2026, 12, 2, 19, 40, 1, 250000, tzinfo=UTC)),
    ("2026-12-02T14:10:01-05:30", datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)),
    ("2026-12-03T00:10:01+04:30", datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)),
    ("2026-12-02T19:40:01+00:00", datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)),
    ("  2026-12-02T19:40:01Z\t", datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)),
    ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    ("1796240401", datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)),
    ("+1796240401", datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)),
    ("-1", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
])
def test_parse_timestamp_accepts(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", [
    "", " ", "yesterday", "2026-12-02", "2026-12-02T19:40:01", "2026-12-02 19:40:01Z",
    "2026-12-02T19:40:01.Z", "2026-12-02T19:40:01.1234567890Z", "2026-13-02T19:40:01Z",
    "2026-02-30T19:40:01Z", "2026-12-02T24:00:00Z", "2026-12-02T19:40:60Z",
    "0000-01-01T00:00:00Z", "2026-12-02T19:40:01+24:00", "2026-12-02T19:40:01+02:60",
    "2026-12-02T19:40:01+0200", "2026-12-02T19:40:01ZZ", "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00", "12.5", "1e9", "--1", "+", "١٧٩٦٢٤٠٤٠١",
    "99999999999999999999", "9999999999999999999", "-9999999999999999999",
    "２０２６-12-02T19:40:01Z",
])
def test_parse_timestamp_refuses(text: str) -> None:
    assert parse_timestamp(text) is None


def test_format_timestamp_is_utc_nanoseconds_and_round_trips() -> None:
    assert format_timestamp(NOW) == "2026-12-02T19:40:01.123456000Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(NOW.astimezone(plus_two)) == "2026-12-02T19:40:01.123456000Z"
    assert format_timestamp(datetime(5, 1, 2, tzinfo=UTC)) == "0005-01-02T00:00:00.000000000Z"
    assert parse_timestamp(format_timestamp(NOW)) == NOW
    with pytest.raises(ValueError, match="aware"):
        format_timestamp(datetime(2026, 1, 1))


@pytest.mark.parametrize(("offset", "accepted"), [
    (timedelta(seconds=300), True),
    (timedelta(seconds=-300), True),
    (timedelta(seconds=300, microseconds=1), False),
    (timedelta(seconds=-300, microseconds=-1), False),
    (timedelta(0), True),
])
def test_clock_skew_boundaries(offset: timedelta, accepted: bool) -> None:
    result = send(now=NOW + offset)
    if accepted:
        assert isinstance(result, Envelope)
        assert result.timestamp == NOW
    else:
        assert result == Refused(403, "relay timestamp outside allowed clock skew")


def test_unix_seconds_and_offset_timestamps_are_signed_as_sent() -> None:
    for timestamp in ("1796240401", "2026-12-02T21:40:01+02:00"):
        signature = sign(HMAC, SECRET, "POST", PATH, timestamp, BODY)
        result = send(set_headers={HEADER_TIMESTAMP: timestamp, HEADER_SIGNATURE: signature})
        assert isinstance(result, Envelope)
        assert result.timestamp == datetime(2026, 12, 2, 19, 40, 1, tzinfo=UTC)


# --- the envelope -----------------------------------------------------------------------------


def test_accepted_envelope_fields_and_baggage_filtering() -> None:
    body = build_envelope(
        "backup.ready", {"archive_path": "/srv/backups/latest.tar.zst"},
        origin={"instance": SENDER, "plugin": "backup-runner", "job_id": "job-123",
                "event_id": "evt-456"},
        dedupe_key="backup.ready:nightly", baggage={"trace_id": "tr-789", "tenant": "x",
                                                    "nested": {"a": [1]}})
    peer = PeerKey(name=SENDER, secret=SECRET, baggage_allow=("trace_id", "nested", "absent"))
    result = send(body, peer=peer)
    assert result == Envelope(
        event_type="backup.ready", payload={"archive_path": "/srv/backups/latest.tar.zst"},
        dedupe_key="backup.ready:nightly", origin_instance=SENDER, origin_plugin="backup-runner",
        origin_job_id="job-123", origin_event_id="evt-456",
        baggage={"trace_id": "tr-789", "nested": {"a": [1]}},
        signature=sign(HMAC, SECRET, "POST", PATH, format_timestamp(NOW), body), timestamp=NOW)
    unfiltered = send(body)  # no baggage_allow: every key dropped
    assert isinstance(unfiltered, Envelope)
    assert unfiltered.baggage == {}


@pytest.mark.parametrize(("body", "payload", "origin_instance"), [
    (envelope_body({"type": "a"}), {}, None),
    (envelope_body({"type": "a", "payload": None}), {}, None),
    (envelope_body({"type": "a", "dedupe_key": None}, origin=None, baggage=None), {}, None),
    (envelope_body({"type": "a", "dedupe_key": ""}, origin={"instance": ""}), {}, None),
    (envelope_body({"type": "a"}, origin={"instance": None, "extra": 5}), {}, None),
    (envelope_body({"type": "a", "payload": {"k": [1, None]}}, origin={"instance": SENDER}),
     {"k": [1, None]}, SENDER),
])
def test_absent_null_and_empty_members(body: bytes, payload: dict[str, Any],
                                       origin_instance: str | None) -> None:
    result = send(body)
    assert isinstance(result, Envelope)
    assert result.payload == payload
    assert result.dedupe_key is None
    assert result.origin_instance == origin_instance
    assert result.baggage == {}


def _envelope(dedupe_key: str | None, instance: str | None, event_id: str | None) -> Envelope:
    return Envelope(event_type="a", payload={}, dedupe_key=dedupe_key, origin_instance=instance,
                    origin_plugin=None, origin_job_id=None, origin_event_id=event_id,
                    baggage={}, signature="s", timestamp=NOW)


def test_dedupe_derivation() -> None:
    assert _envelope("own-key", SENDER, "evt-1").dedupe("peer") == "own-key"
    assert _envelope(None, "origin-box", "evt-1").dedupe("peer") == "relay:peer:origin-box:evt-1"
    assert _envelope(None, None, "evt-1").dedupe("peer") == "relay:peer:peer:evt-1"
    assert _envelope(None, SENDER, None).dedupe("peer") is None


def test_build_envelope_shape() -> None:
    body = build_envelope("backup.ready", {"name": "café", "n": 1},
                          origin={"event_id": "e1", "instance": "home", "plugin": "p",
                                  "job_id": "j"},
                          dedupe_key="d1", baggage={"trace_id": "t"})
    assert body == ('{"event":{"type":"backup.ready","payload":{"name":"café","n":1},'
                    '"dedupe_key":"d1"},"origin":{"instance":"home","plugin":"p","job_id":"j",'
                    '"event_id":"e1"},"baggage":{"trace_id":"t"}}').encode()


def test_build_envelope_omissions() -> None:
    assert build_envelope("a", {}, origin={}) == b'{"event":{"type":"a","payload":{}},"origin":{}}'
    assert build_envelope("a", {}, origin={"instance": "", "plugin": "p"}, dedupe_key="",
                          baggage={}) == \
        b'{"event":{"type":"a","payload":{}},"origin":{"plugin":"p"}}'
    assert build_envelope("a", {}, origin={}, baggage=None, dedupe_key=None) == \
        b'{"event":{"type":"a","payload":{}},"origin":{}}'


def test_build_envelope_refuses_sender_bugs() -> None:
    with pytest.raises(ValueError, match="origin"):
        build_envelope("a", {}, origin={"instnace": "x"})
    with pytest.raises(ValueError):
        build_envelope("a", {"n": float("nan")}, origin={})


def test_signed_headers_shape() -> None:
    headers = signed_headers(HMAC, SECRET, sender=SENDER, method="POST", path=PATH, body=BODY,
                             now=NOW)
    assert headers == {
        "Content-Type": "application/json",
        HEADER_PEER: SENDER,
        HEADER_TIMESTAMP: "2026-12-02T19:40:01.123456000Z",
        HEADER_SIGNATURE: sign(HMAC, SECRET, "POST", PATH, "2026-12-02T19:40:01.123456000Z",
                               BODY),
    }
    keyed = signed_headers(HMAC, SECRET, sender=SENDER, method="POST", path=PATH, body=BODY,
                           now=NOW, key_id="k1")
    assert keyed[HEADER_KEY_ID] == "k1"


def test_target_path_defaults_to_the_listen_path_plus_our_name() -> None:
    from ductile.relay.sender import target_path

    assert target_path("", "gw-a") == "/ingest/peer/gw-a"
    # A Go config writes the receiver's full path; it is used as written.
    assert target_path("/relay/in/gw-a", "gw-a") == "/relay/in/gw-a"


def test_clients_pool_one_client_per_receiver_and_close_at_shutdown() -> None:
    import trio

    from ductile.relay.sender import Clients

    async def main() -> None:
        clients = Clients()
        first = clients.get("http://127.0.0.1:1", 10.0)
        assert clients.get("http://127.0.0.1:1", 10.0) is first
        other = clients.get("http://127.0.0.1:2", 10.0)
        assert other is not first and clients.get("http://127.0.0.1:1", 5.0) is not first
        await clients.aclose()
        assert first.is_closed and other.is_closed
        assert clients.get("http://127.0.0.1:1", 10.0) is not first  # reopened after close
        await clients.aclose()

    trio.run(main)
