"""Fuzz the relay receiver: whatever headers and body arrive, `check_request` answers with an
Envelope or one of its documented refusals and never raises; what a sender signs, the receiver
accepts unchanged; and no single flipped byte of a signed body gets through."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.relay.envelope import (
    ED25519,
    EVENT_TYPE,
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
    signed_headers,
)
from strategies import hostile_json_bytes, json_values

UTC = timezone.utc
SECRET = b"relay-shared-secret"
SEED = b"\x07" * 32
SENDER = "home-primary"
STATUSES = {400, 403, 413, 422}
HEADER_NAMES = (HEADER_PEER, HEADER_TIMESTAMP, HEADER_SIGNATURE, HEADER_KEY_ID)

peer_names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,19}", fullmatch=True)
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1),
                       timezones=st.just(UTC))
segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
event_types = st.builds(
    lambda first, rest: first + "".join(sep + seg for sep, seg in rest),
    segments, st.lists(st.tuples(st.sampled_from("._-"), segments), max_size=4))
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

peers = st.one_of(
    st.none(),
    st.just(PeerKey(name=SENDER, secret=SECRET)),
    st.just(PeerKey(name=SENDER, mode=ED25519, public_key=public_key_for(SEED))),
    st.builds(PeerKey, name=st.text(max_size=10), enabled=st.booleans(),
              mode=st.sampled_from([HMAC, ED25519, "other"]), secret=st.binary(max_size=40),
              public_key=st.binary(max_size=40), key_id=st.text(max_size=5),
              accept=st.lists(event_types, max_size=3).map(tuple),
              baggage_allow=st.lists(st.text(max_size=5), max_size=3).map(tuple)),
)
policies = st.builds(IngressPolicy, max_body_size=st.integers(min_value=0, max_value=1 << 21),
                     allowed_clock_skew=st.floats(min_value=0, allow_nan=False),
                     require_key_id=st.booleans())
header_names = st.one_of(
    st.sampled_from(HEADER_NAMES),
    st.sampled_from(HEADER_NAMES).map(str.lower),
    st.sampled_from(HEADER_NAMES).map(str.upper),
    st.text(max_size=20),
)
header_values = st.one_of(
    st.text(max_size=100),
    st.just(SENDER),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    moments.map(format_timestamp),
    st.binary(min_size=32, max_size=32).map(lambda raw: raw.hex()),
    st.binary(max_size=70).map(lambda raw: "ed25519=" + raw.hex()),
)
bodies = st.one_of(st.binary(max_size=300), hostile_json_bytes(),
                   json_values.map(lambda value: repr(value).encode()),
                   st.builds(lambda t, p: build_envelope(t, p, origin={"instance": SENDER}),
                             event_types, json_objects))


def _check_outcome(result: Envelope | Refused, peer: PeerKey | None) -> None:
    if isinstance(result, Refused):
        assert result.status in STATUSES
        assert result.error
        return
    assert isinstance(result, Envelope)
    assert peer is not None and peer.enabled
    assert EVENT_TYPE.fullmatch(result.event_type)
    assert isinstance(result.payload, dict)
    assert set(result.baggage) <= set(peer.baggage_allow)
    assert not peer.accept or result.event_type in peer.accept


@given(peer_name=st.one_of(st.just(SENDER), st.text(max_size=10)), peer=peers,
       headers=st.dictionaries(header_names, header_values, max_size=8), method=st.text(max_size=8),
       path=st.text(max_size=30), body=bodies, now=moments, policy=policies)
def test_check_request_never_raises_on_any_input(
    peer_name: str, peer: PeerKey | None, headers: dict[str, str], method: str, path: str,
    body: bytes, now: datetime, policy: IngressPolicy,
) -> None:
    _check_outcome(check_request(peer_name, peer, headers, method, path, body, now, policy), peer)


@given(mode=st.sampled_from([HMAC, ED25519]), body=bodies, now=moments,
       baggage_allow=st.lists(st.text(max_size=5), max_size=3).map(tuple),
       accept=st.lists(event_types, max_size=2).map(tuple))
def test_any_correctly_signed_body_gets_a_documented_answer(
    mode: str, body: bytes, now: datetime, baggage_allow: tuple[str, ...],
    accept: tuple[str, ...],
) -> None:
    # Signed, so the fuzzed body reaches the JSON parser and the envelope checks.
    peer, key = _peer(mode, baggage_allow=baggage_allow, accept=accept)
    headers = signed_headers(mode, key, sender=SENDER, method="POST", path="/relay", body=body,
                             now=now)
    result = check_request(SENDER, peer, headers, "POST", "/relay", body, now, IngressPolicy())
    _check_outcome(result, peer)
    if isinstance(result, Refused):
        assert result.status in {400, 403, 413, 422}
        assert result.error != "forbidden"


@given(mode=st.sampled_from([HMAC, ED25519]), sender=peer_names, event_type=event_types,
       payload=json_objects, dedupe_key=st.one_of(st.none(), st.text(max_size=20)),
       origin=st.fixed_dictionaries({}, optional={
           "plugin": st.text(max_size=10), "job_id": st.text(max_size=10),
           "event_id": st.text(max_size=10), "instance": st.sampled_from(["", "<sender>"])}),
       baggage=st.one_of(st.none(), json_objects),
       baggage_allow=st.lists(st.text(max_size=8), max_size=3).map(tuple),
       method=st.sampled_from(["POST", "post", "PUT"]), path=st.text(max_size=30),
       now=moments, skew=st.floats(min_value=-300, max_value=300))
def test_sign_then_check_round_trips(
    mode: str, sender: str, event_type: str, payload: dict[str, Any], dedupe_key: str | None,
    origin: dict[str, str], baggage: dict[str, Any] | None, baggage_allow: tuple[str, ...],
    method: str, path: str, now: datetime, skew: float,
) -> None:
    origin = {name: sender if value == "<sender>" else value for name, value in origin.items()}
    body = build_envelope(event_type, payload, origin=origin, dedupe_key=dedupe_key,
                          baggage=baggage)
    peer, key = _peer(mode, name=sender, baggage_allow=baggage_allow, accept=(event_type,))
    headers = signed_headers(mode, key, sender=sender, method=method, path=path, body=body,
                             now=now, key_id="k1")
    received_at = now + timedelta(seconds=skew)
    result = check_request(sender, peer, headers, method.upper(), path, body, received_at,
                           IngressPolicy(require_key_id=True))
    assert isinstance(result, Envelope), result
    assert result.event_type == event_type
    assert result.payload == payload
    assert result.dedupe_key == (dedupe_key or None)
    assert result.origin_instance == (origin.get("instance") or None)
    assert result.origin_plugin == (origin.get("plugin") or None)
    assert result.origin_job_id == (origin.get("job_id") or None)
    assert result.origin_event_id == (origin.get("event_id") or None)
    assert result.baggage == {k: v for k, v in (baggage or {}).items() if k in baggage_allow}
    assert result.signature == headers[HEADER_SIGNATURE]
    assert result.timestamp == now


@given(mode=st.sampled_from([HMAC, ED25519]), event_type=event_types, payload=json_objects,
       now=moments, data=st.data())
def test_flipping_any_byte_of_a_signed_body_is_forbidden(
    mode: str, event_type: str, payload: dict[str, Any], now: datetime, data: st.DataObject,
) -> None:
    body = build_envelope(event_type, payload, origin={"instance": SENDER})
    peer, key = _peer(mode)
    headers = signed_headers(mode, key, sender=SENDER, method="POST", path="/relay", body=body,
                             now=now)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    altered = bytearray(body)
    altered[index] ^= mask
    result = check_request(SENDER, peer, headers, "POST", "/relay", bytes(altered), now,
                           IngressPolicy())
    assert not isinstance(result, Envelope)
    assert result == Refused(403, "forbidden")


@given(st.one_of(st.text(), moments.map(format_timestamp),
                 st.integers(min_value=-(10**30), max_value=10**30).map(str)))
def test_parse_timestamp_never_raises(text: str) -> None:
    parsed = parse_timestamp(text)
    assert parsed is None or parsed.utcoffset() == timedelta(0)


@given(moments, st.integers(min_value=-23 * 60, max_value=23 * 60))
def test_format_then_parse_round_trips(moment: datetime, offset_minutes: int) -> None:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert parse_timestamp(format_timestamp(local)) == moment


def _peer(mode: str, *, name: str = SENDER, baggage_allow: tuple[str, ...] = (),
          accept: tuple[str, ...] = ()) -> tuple[PeerKey, bytes]:
    """A peer configured for `mode`, and the key its sender signs with."""
    if mode == HMAC:
        return PeerKey(name=name, secret=SECRET, baggage_allow=baggage_allow,
                       accept=accept), SECRET
    return PeerKey(name=name, mode=ED25519, public_key=public_key_for(SEED),
                   baggage_allow=baggage_allow, accept=accept), SEED
