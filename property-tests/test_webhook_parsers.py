"""Fuzz the webhook plane's parsers of outside input: sizes, the `webhooks:` section,
signature headers, verification and body acceptance. Each either succeeds or fails in its
documented way; none raises anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.sizes import MAX_SIZE, SizeError, format_byte_size, parse_byte_size
from ductile.config.webhooks import decode_webhooks
from ductile.errors import ConfigError
from ductile.planes.webhook.payload import PayloadError, webhook_payload
from ductile.planes.webhook.verify import (
    SignatureFormatError,
    StripeSignature,
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
from strategies import hostile_json_bytes

UNITS = {"": 1, "B": 1, "kb": 1024, "KiB": 1024, "M": 1024**2, "MB": 1024**2, "mib": 1024**2,
         "GB": 1024**3, "Gib": 1024**3}

size_like = st.one_of(
    st.text(),
    st.text(alphabet=" \t0123456789.-+kKmMgGbBiIT"),
    st.integers(),
    st.booleans(),
    st.floats(),
    st.none(),
)


@given(size_like)
def test_size_parses_to_a_positive_int64_or_raises_size_error(value: Any) -> None:
    try:
        size = parse_byte_size(value)
    except SizeError as exc:
        assert "invalid size" in str(exc)
    else:
        assert isinstance(size, int) and 1 <= size <= MAX_SIZE


@given(st.integers(min_value=1, max_value=2**33 - 1), st.sampled_from(sorted(UNITS)),
       st.text(alphabet=" \t", max_size=3), st.text(alphabet=" \t", max_size=3))
def test_size_units_are_binary_multiples(number: int, unit: str, left: str, gap: str) -> None:
    assert parse_byte_size(f"{left}{number}{gap}{unit}{left}") == number * UNITS[unit]


@given(st.integers(min_value=1, max_value=MAX_SIZE))
def test_formatted_sizes_parse_back(size: int) -> None:
    assert parse_byte_size(format_byte_size(size)) == size


header_text = st.one_of(st.none(), st.text(), st.text(alphabet="tv01=,abcdef0123456789 "))


@given(st.text())
def test_stripe_header_parses_or_raises_format_error(value: str) -> None:
    try:
        parsed = parse_stripe_signature(value)
    except SignatureFormatError:
        return
    assert isinstance(parsed, StripeSignature) and parsed.v1
    assert all(len(digest) == 32 for digest in parsed.v1)


@given(st.binary(), header_text, header_text, st.binary(),
       st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_verification_never_raises_and_refuses_unsigned_input(
    secret: bytes, signature: str | None, timestamp: str | None, body: bytes, now: float
) -> None:
    verdicts = [
        verify_github(secret, signature, body),
        verify_stripe(secret, signature, body, now=now, tolerance=300),
        verify_slack(secret, signature, timestamp, body, now=now, tolerance=300),
    ]
    for verdict in verdicts:
        assert isinstance(verdict, Verdict)
        assert verdict.ok is False or secret  # an empty secret never verifies
    headers = {"x-sig": signature, "x-slack-request-timestamp": timestamp}
    for scheme in ("github", "stripe", "slack", "other"):
        verdict = verify_request(scheme, secret, lambda n: headers.get(n.lower()), body,
                                 signature_header="X-Sig", tolerance=300, now=now)
        assert isinstance(verdict, Verdict)


@given(st.binary(min_size=1), st.binary(), st.integers(min_value=0, max_value=10**11),
       st.binary(min_size=1))
def test_signed_input_verifies_and_any_other_body_does_not(
    secret: bytes, body: bytes, ts: int, extra: bytes
) -> None:
    assert verify_github(secret, sign_github(secret, body), body).ok
    assert verify_stripe(secret, sign_stripe(secret, body, ts), body, now=ts, tolerance=1).ok
    assert verify_slack(secret, sign_slack(secret, body, ts), str(ts), body, now=ts,
                        tolerance=1).ok
    other = body + extra
    assert not verify_github(secret, sign_github(secret, body), other).ok
    assert not verify_stripe(secret, sign_stripe(secret, body, ts), other, now=ts,
                             tolerance=1).ok


@given(st.one_of(st.binary(), hostile_json_bytes()), st.sampled_from(["handle", "poll"]))
def test_webhook_payload_is_the_exact_text_or_a_payload_error(body: bytes, command: str) -> None:
    try:
        payload = webhook_payload(body, command)
    except PayloadError as exc:
        assert str(exc).startswith("invalid JSON body: ")
        return
    assert payload.encode("utf-8") == body
    value = json.loads(payload)
    assert command != "handle" or isinstance(value, dict)
    # What is accepted can be encoded again, as the dispatcher does for the plugin.
    json.dumps(value, allow_nan=False).encode("utf-8")


@given(st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "-Infinity", '"\\ud800"',
                        '"\\udfff"', "1" + "0" * 400]),
       st.integers(min_value=0, max_value=3))
def test_hostile_values_are_refused_naming_their_field(literal: str, depth: int) -> None:
    body = ('{"a": ' * depth + '{"n": ' + literal + "}" + "}" * depth).encode()
    try:
        webhook_payload(body, "handle")
    except PayloadError as exc:
        assert "field " + "a." * depth + "n " in str(exc)
    else:
        raise AssertionError(f"accepted {body!r}")


@given(st.integers(min_value=1, max_value=200),
       st.sampled_from([("[", "]", 1), ('{"a":', "}", 1), ('{"[{": [', "]}", 2)]))
def test_nesting_is_refused_past_64_levels(levels: int, shape: tuple[str, str, int]) -> None:
    # Brackets inside strings do not nest: '{"[{": [' is two levels, not four.
    opener, closer, per_level = shape
    # Wrapped in one object (every body must be an object): that object is one more level.
    body = ('{"k":' + opener * levels + "1" + closer * levels + "}").encode()
    try:
        webhook_payload(body, "poll")
    except PayloadError as exc:
        assert levels * per_level + 1 > 64 and "at most 64 levels" in str(exc)
    else:
        assert levels * per_level + 1 <= 64


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)
endpoint_maps = st.fixed_dictionaries(
    {},
    optional={
        "path": st.one_of(st.sampled_from(["/a", "/a/", "/b", "x"]), json_values),
        "plugin": st.one_of(st.just("p"), json_values),
        "secret_ref": st.one_of(st.just("s"), json_values),
        "scheme": st.one_of(st.sampled_from(["github", "stripe", "slack", "x"]), json_values),
        "max_body_size": size_like,
        "tolerance": st.one_of(st.sampled_from(["5m", "0s", "-1s", "1x"]), json_values),
        "signature_header": st.one_of(st.just("X-Sig"), json_values),
        "dedupe_header": st.one_of(st.just("X-Id"), json_values),
        "command": json_values,
        "name": json_values,
        "match": st.one_of(st.just([{"header": "X-A", "equals": "b"}]),
                           st.just([{"payload": "a.0", "regex": "("}]), json_values),
        "refuse_status": st.one_of(st.sampled_from([200, 202, 403, 500]), json_values),
        "respond": st.one_of(st.sampled_from(["accepted", "result", "sync"]), json_values),
        "respond_timeout": st.one_of(st.sampled_from(["30s", "0s", "6m"]), json_values),
        "other": json_values,
    },
)
sections = st.one_of(
    json_values,
    st.lists(st.one_of(endpoint_maps, json_values), max_size=4),
    st.fixed_dictionaries({}, optional={
        "listen": st.one_of(st.sampled_from(["127.0.0.1:8091", "h:99999", "x"]), json_values),
        "endpoints": st.one_of(st.lists(endpoint_maps, max_size=4), json_values),
    }),
)


@given(sections)
def test_webhooks_section_decodes_or_raises_config_error(section: Any) -> None:
    warnings: list[str] = []
    try:
        config = decode_webhooks(section, file="webhooks.yaml", warnings=warnings)
    except ConfigError as exc:
        assert exc.path == "webhooks.yaml"
        assert exc.key is not None and exc.key.startswith("webhooks")
        assert str(exc).startswith(f"webhooks.yaml: {exc.key}: ")
        return
    paths = [endpoint.path.rstrip("/") for endpoint in config.endpoints]
    assert len(paths) == len(set(paths))
    for endpoint in config.endpoints:
        assert endpoint.path.startswith("/") and endpoint.plugin and endpoint.secret_ref
        assert endpoint.max_body_size >= 1 and endpoint.tolerance > 0
        assert endpoint.respond in ("accepted", "result") and 0 < endpoint.respond_timeout <= 300
    assert all(warning.startswith("webhooks.yaml: unknown key ")
               or warning.endswith(" (ignored)") and " has no effect without " in warning
               for warning in warnings)
