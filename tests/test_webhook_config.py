"""The `webhooks:` section decoder and the byte-size grammar."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from ductile.config.sizes import SizeError, format_byte_size, parse_byte_size
from ductile.config.webhooks import (
    WebhookEndpoint,
    WebhooksConfig,
    decode_webhooks,
)
from ductile.errors import ConfigError

FILE = "/etc/ductile/webhooks.yaml"
MIB = 1024 * 1024


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [
    (1024, 1024), ("1024", 1024), ("1KB", 1024), ("2kb", 2048), ("1MB", MIB),
    ("1GB", 1024**3), ("  2 MB  ", 2 * MIB), ("512KB", 512 * 1024), ("1MiB", MIB),
    ("3 gib", 3 * 1024**3), ("100B", 100), ("7k", 7 * 1024), ("1m", MIB),
    (2**63 - 1, 2**63 - 1), ("8589934591GB", 8589934591 * 1024**3),
])
def test_sizes_parse_with_binary_multiples(text: Any, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", [0, "0", "0MB", -1, "-1", "abc", "1.5MB", "1TB", "MB", "",
                                  "1 M B", True, 1.0, None, [1], "9223372036854775808",
                                  "8589934592GB", 2**63, "١٠٢٤"])
def test_sizes_refuse_with_a_message_that_shows_valid_ones(text: Any) -> None:
    with pytest.raises(SizeError, match="invalid size"):
        parse_byte_size(text)


def test_size_formatting_is_exact() -> None:
    assert [format_byte_size(n) for n in (MIB, 1536 * 1024, 100, 1024**3)] == \
        ["1MiB", "1536KiB", "100B", "1GiB"]


# -- decoder ----------------------------------------------------------------------------------


def decode(text: str, warnings: list[str] | None = None) -> WebhooksConfig:
    return decode_webhooks(yaml.safe_load(text)["webhooks"], file=FILE, warnings=warnings)


def test_nested_shape_with_defaults() -> None:
    config = decode("""
webhooks:
  listen: 127.0.0.1:8091
  endpoints:
    - path: /webhook/github
      plugin: github-handler
      secret_ref: github_webhook
""")
    assert config == WebhooksConfig(listen="127.0.0.1:8091", endpoints=(WebhookEndpoint(
        path="/webhook/github", plugin="github-handler", secret_ref="github_webhook",
        signature_header="X-Hub-Signature-256", command="handle", max_body_size=MIB,
        scheme="github", tolerance=300.0, dedupe_header=None, name=None),))


def test_every_field_and_the_per_scheme_signature_header() -> None:
    config = decode("""
webhooks:
  listen: "[::1]:9000"
  endpoints:
    - name: billing
      path: /hooks/stripe
      plugin: billing
      command: ingest
      secret_ref: stripe_key
      max_body_size: 2MB
      scheme: stripe
      tolerance: 10m
      dedupe_header: Idempotency-Key
    - {path: /hooks/slack, plugin: chat, secret_ref: s, scheme: slack, max_body_size: 4096}
    - {path: /hooks/x, plugin: x, secret_ref: x, signature_header: X-Ductile-Signature-256}
""")
    stripe, slack, custom = config.endpoints
    assert (stripe.name, stripe.command, stripe.max_body_size, stripe.tolerance) == \
        ("billing", "ingest", 2 * MIB, 600.0)
    assert (stripe.signature_header, stripe.dedupe_header) == ("Stripe-Signature",
                                                               "Idempotency-Key")
    assert (slack.signature_header, slack.max_body_size) == ("X-Slack-Signature", 4096)
    assert custom.signature_header == "X-Ductile-Signature-256"
    assert config.listen == "[::1]:9000"


def test_flat_list_shape_and_empty_sections() -> None:
    assert decode("webhooks: []") == WebhooksConfig(listen=None, endpoints=())
    assert decode("webhooks:") == WebhooksConfig(listen=None, endpoints=())
    assert decode("webhooks: {listen: 'localhost:1'}").endpoints == ()
    with pytest.raises(ConfigError, match="webhooks.listen is required"):
        decode("webhooks: [{path: /a, plugin: p, secret_ref: s}]")


def test_unknown_keys_are_warnings_not_errors() -> None:
    warnings: list[str] = []
    decode("""
webhooks:
  listen: 127.0.0.1:8091
  extra: 1
  endpoints: [{path: /a, plugin: p, secret_ref: s, secret: oops}]
""", warnings)
    assert warnings == [f"{FILE}: unknown key webhooks.extra (ignored)",
                        f"{FILE}: unknown key webhooks.endpoints[0].secret (ignored)"]


@pytest.mark.parametrize(("endpoint", "key", "message"), [
    ("{plugin: p, secret_ref: s}", "path", "path is required"),
    ("{path: 5, plugin: p, secret_ref: s}", "path", "expected a string, got 5"),
    ("{path: hook, plugin: p, secret_ref: s}", "path", "must start with /"),
    ("{path: '/a b', plugin: p, secret_ref: s}", "path", "must start with /"),
    ("{path: /a, secret_ref: s}", "plugin", "plugin is required"),
    ("{path: /a, plugin: p}", "secret_ref",
     'webhook endpoint "/a": secret_ref is required'),
    ("{path: /a, plugin: p, secret_ref: [s]}", "secret_ref", "expected a string, got a list"),
    ("{path: /a, plugin: p, secret_ref: s, max_body_size: 1.5MB}", "max_body_size",
     'webhook endpoint "/a": invalid max_body_size: invalid size'),
    ("{path: /a, plugin: p, secret_ref: s, max_body_size: 0}", "max_body_size",
     "must be greater than 0"),
    ("{path: /a, plugin: p, secret_ref: s, scheme: gitlab}", "scheme",
     "unknown scheme 'gitlab'; use one of github, stripe, slack"),
    ("{path: /a, plugin: p, secret_ref: s, tolerance: 300}", "tolerance",
     "expected a duration such as 5m or 300s, got 300"),
    ("{path: /a, plugin: p, secret_ref: s, tolerance: soon}", "tolerance", "invalid duration"),
    ("{path: /a, plugin: p, secret_ref: s, tolerance: 0s}", "tolerance",
     "must be a positive duration"),
    ("{path: /a, plugin: p, secret_ref: s, signature_header: 'X Sig'}", "signature_header",
     "is not an HTTP header name"),
    ("{path: /a, plugin: p, secret_ref: s, dedupe_header: 'a:b'}", "dedupe_header",
     "is not an HTTP header name"),
    ("{path: /a, plugin: p, secret_ref: s, command: 7}", "command", "expected a string, got 7"),
])
def test_endpoint_errors_name_the_file_and_key(endpoint: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode(f"webhooks: {{listen: '127.0.0.1:1', endpoints: [{{path: /ok, plugin: p, "
               f"secret_ref: s}}, {endpoint}]}}")
    error = info.value
    assert error.key == f"webhooks.endpoints[1].{key}"
    assert error.path == FILE
    assert str(error).startswith(f"{FILE}: webhooks.endpoints[1].{key}: ")
    assert message in str(error)


def test_duplicate_paths_are_refused_ignoring_a_trailing_slash() -> None:
    with pytest.raises(ConfigError) as info:
        decode("""
webhooks:
  listen: 127.0.0.1:8091
  endpoints:
    - {path: /hook, plugin: a, secret_ref: s}
    - {path: /other, plugin: b, secret_ref: s}
    - {path: /hook/, plugin: c, secret_ref: s}
""")
    assert info.value.key == "webhooks.endpoints[2].path"
    assert 'webhook path "/hook/" conflicts with webhooks.endpoints[0]' in str(info.value)


@pytest.mark.parametrize(("section", "key", "message"), [
    ("webhooks: 5", "webhooks", "expected a map with listen and endpoints, or a list, got 5"),
    ("webhooks: {endpoints: {a: 1}}", "webhooks.endpoints", "expected a list, got a map"),
    ("webhooks: {endpoints: [hook]}", "webhooks.endpoints[0]", 'expected a map, got "hook"'),
    ("webhooks: {listen: 8091, endpoints: [{path: /a, plugin: p, secret_ref: s}]}",
     "webhooks.listen", "expected a host:port string"),
    ("webhooks: {listen: 'localhost', endpoints: [{path: /a, plugin: p, secret_ref: s}]}",
     "webhooks.listen", "must be host:port"),
    ("webhooks: {listen: 'h:70000', endpoints: [{path: /a, plugin: p, secret_ref: s}]}",
     "webhooks.listen", "must be host:port"),
])
def test_section_errors(section: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode(section)
    assert info.value.key == key
    assert message in str(info.value)
