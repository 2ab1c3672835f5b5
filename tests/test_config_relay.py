"""The relay config (`instances:` and `remote_ingress:`): decoding from real config directories,
the merge across included files, every validation message, unknown keys, and the JSON schema."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.gateway import write_config

from ductile.config.filecheck import check_text
from ductile.config.json_schema import config_schema
from ductile.config.load import load_config
from ductile.config.relay import (
    RelayConfig,
    RelayInstance,
    RelayPeer,
    RemoteIngress,
    RetryConf,
    validate_relay,
)
from ductile.config.schema import Config
from ductile.config.schema import RetryConf as SchemaRetryConf
from ductile.errors import ConfigError

PUBLIC_KEY = base64.b64encode(bytes(range(32))).decode()
INSTANCE: dict[str, Any] = {"name": "peer-b", "base_url": "https://b.example:8443",
                            "secret_ref": "relay-b"}
PEER: dict[str, Any] = {"name": "peer-a", "secret_ref": "relay-a"}


def load(directory: Path, service: dict[str, Any] | None = None, **extra: Any) -> Config:
    write_config(directory, service=service, extra=extra)
    return load_config(str(directory), environ={})


def refusal(directory: Path, service: dict[str, Any] | None = None, **extra: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(directory, service, **extra)
    return info.value


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(textwrap.dedent(text))


# --------------------------------------------------------------------------- decoding


def test_a_full_relay_config_decodes_into_the_dataclasses(tmp_path: Path) -> None:
    cfg = load(tmp_path, instances=[
        {"name": "peer-b", "enabled": False, "base_url": "http://10.0.0.2:8080",
         "ingress_path": "/relay/in", "secret_ref": "relay-b-seed", "signing": "ed25519",
         "key_id": "k1", "timeout": "1m30s", "allow": ["backup.ready", "job_done"],
         "retry": {"max_attempts": 7, "backoff_base": "10s"}},
        {"name": "peer-c", "base_url": "https://c.example", "secret_ref": "relay-c"},
    ], remote_ingress={
        "listen_path": "/ingest/peers/", "max_body_size": "512KB", "allowed_clock_skew": "2m",
        "require_key_id": True,
        "peers": [{**PEER, "key_id": "k2", "accept": ["backup.ready"],
                   "baggage": {"allow": ["trace_id", "tenant.id"]}},
                  {"name": "peer-d", "enabled": False, "signing": "ed25519",
                   "public_key": PUBLIC_KEY, "key_id": "k3"}],
    })
    assert cfg.warnings == ()
    assert cfg.relay == RelayConfig(
        instances=(
            RelayInstance(name="peer-b", enabled=False, base_url="http://10.0.0.2:8080",
                          ingress_path="/relay/in", secret_ref="relay-b-seed", signing="ed25519",
                          key_id="k1", timeout=90.0, allow=("backup.ready", "job_done"),
                          retry=RetryConf(max_attempts=7, backoff_base=10.0)),
            RelayInstance(name="peer-c", base_url="https://c.example", secret_ref="relay-c"),
        ),
        ingress=RemoteIngress(
            listen_path="/ingest/peers", max_body_size=512 * 1024, allowed_clock_skew=120.0,
            require_key_id=True,
            peers=(RelayPeer(name="peer-a", secret_ref="relay-a", key_id="k2",
                             accept=("backup.ready",), baggage_allow=("trace_id", "tenant.id")),
                   RelayPeer(name="peer-d", enabled=False, signing="ed25519",
                             public_key=PUBLIC_KEY, key_id="k3"))),
    )


def test_defaults_fill_what_is_not_written(tmp_path: Path) -> None:
    relay = load(tmp_path, instances=[INSTANCE], remote_ingress={}).relay
    (instance,) = relay.instances
    assert (instance.enabled, instance.ingress_path, instance.signing, instance.key_id,
            instance.timeout, instance.allow) == (True, "", "hmac", "", 10.0, ())
    assert instance.retry == RetryConf() == SchemaRetryConf()
    assert relay.ingress == RemoteIngress(listen_path="/ingest/peer", max_body_size=1024 * 1024,
                                          allowed_clock_skew=300.0, require_key_id=False,
                                          peers=())
    assert relay.configured


def test_no_relay_sections_is_an_unconfigured_relay(tmp_path: Path) -> None:
    relay = load(tmp_path, remote_ingress=None).relay
    assert relay == RelayConfig() and not relay.configured and relay.ingress is None


def test_zero_durations_take_the_defaults_and_sizes_take_integers(tmp_path: Path) -> None:
    relay = load(tmp_path, instances=[{**INSTANCE, "timeout": "0s"}],
                 remote_ingress={"max_body_size": 2048, "allowed_clock_skew": "0s",
                                 "listen_path": "/in//"}).relay
    assert relay.instances[0].timeout == 10.0
    assert relay.ingress is not None
    assert (relay.ingress.max_body_size, relay.ingress.allowed_clock_skew,
            relay.ingress.listen_path) == (2048, 300.0, "/in")


def test_instances_and_peers_from_included_files_are_appended(tmp_path: Path) -> None:
    write_config(tmp_path, extra={
        "include": ["relay-instances.yaml", "relay-ingress.yaml"],
        "instances": [INSTANCE],
        "remote_ingress": {"listen_path": "/root", "peers": [PEER]},
    })
    write(tmp_path, "relay-instances.yaml", """\
        instances:
          - {name: peer-c, base_url: "http://c:8080", secret_ref: relay-c, timeout: 3s}
        """)
    write(tmp_path, "relay-ingress.yaml", """\
        remote_ingress:
          listen_path: /from-include
          require_key_id: false
          peers: [{name: peer-e, secret_ref: relay-e}]
        """)
    cfg = load_config(str(tmp_path), environ={})
    assert [i.name for i in cfg.relay.instances] == ["peer-b", "peer-c"]
    assert cfg.relay.instances[1].timeout == 3.0
    assert cfg.relay.ingress is not None
    assert cfg.relay.ingress.listen_path == "/from-include"
    assert [p.name for p in cfg.relay.ingress.peers] == ["peer-a", "peer-e"]
    assert cfg.warnings == ()


def test_the_helpers_find_instances_peers_and_secret_refs(tmp_path: Path) -> None:
    relay = load(tmp_path, instances=[INSTANCE, {**INSTANCE, "name": "off", "enabled": False,
                                                  "secret_ref": "relay-off"}],
                 remote_ingress={"peers": [PEER, {"name": "quiet", "enabled": False,
                                                  "secret_ref": "relay-q"}]}).relay
    assert relay.instance("peer-b") is relay.instances[0]
    assert relay.instance("off") is None and relay.instance("nobody") is None
    assert relay.peer("quiet") is not None and relay.peer("quiet").enabled is False
    assert relay.peer("nobody") is None
    assert relay.secret_refs() == (('relay instance "peer-b"', "relay-b"),
                                   ('relay instance "off"', "relay-off"),
                                   ('relay peer "peer-a"', "relay-a"),
                                   ('relay peer "quiet"', "relay-q"))
    assert RelayConfig().peer("x") is None and RelayConfig().secret_refs() == ()


# --------------------------------------------------------------------------- types and keys


@pytest.mark.parametrize(("extra", "message"), [
    ({"instances": "peer-b"}, "config.yaml: instances: expected a list"),
    ({"instances": ["peer-b"]}, "config.yaml: instances[0]: expected a map"),
    ({"instances": [{**INSTANCE, "timeout": 5}]},
     "config.yaml: instances[0].timeout: expected a duration"),
    ({"instances": [{**INSTANCE, "timeout": "soon"}]}, "config.yaml: instances[0].timeout: "),
    ({"instances": [{**INSTANCE, "enabled": "maybe"}]},
     "config.yaml: instances[0].enabled: expected true or false"),
    ({"instances": [{**INSTANCE, "allow": [1]}]},
     "config.yaml: instances[0].allow[0]: expected a string, got 1"),
    ({"instances": [{**INSTANCE, "retry": {"max_attempts": "two"}}]},
     'config.yaml: instances[0].retry.max_attempts: expected an integer, got "two"'),
    ({"remote_ingress": ["x"]}, "config.yaml: remote_ingress: expected a map"),
    ({"remote_ingress": {"max_body_size": "lots"}},
     "config.yaml: remote_ingress.max_body_size: invalid size 'lots'"),
    ({"remote_ingress": {"max_body_size": 0}},
     "config.yaml: remote_ingress.max_body_size: invalid size 0: must be greater than 0"),
    ({"remote_ingress": {"allowed_clock_skew": 300}},
     "config.yaml: remote_ingress.allowed_clock_skew: expected a duration"),
    ({"remote_ingress": {"peers": [{**PEER, "baggage": ["x"]}]}},
     "config.yaml: remote_ingress.peers[0].baggage: expected a map"),
    ({"remote_ingress": {"peers": [{**PEER, "public_key": 5}]}},
     "config.yaml: remote_ingress.peers[0].public_key: expected a string, got 5"),
])
def test_a_wrong_type_names_the_file_and_key(tmp_path: Path, extra: dict[str, Any],
                                             message: str) -> None:
    assert refusal(tmp_path, **extra).message.startswith(message)


def test_a_wrong_type_in_an_include_names_that_file(tmp_path: Path) -> None:
    write_config(tmp_path, extra={"include": ["relay-instances.yaml"]})
    write(tmp_path, "relay-instances.yaml", """\
        instances:
          - {name: peer-b, base_url: "http://b", secret_ref: r, timeout: [1]}
        """)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path), environ={})
    assert info.value.message.startswith(
        "relay-instances.yaml: instances[0].timeout: expected a duration")


def test_unknown_keys_warn_naming_their_file(tmp_path: Path) -> None:
    write_config(tmp_path, extra={
        "include": ["relay-ingress.yaml"],
        "instances": [{**INSTANCE, "colour": "red", "retry": {"attempts": 3}}],
    })
    write(tmp_path, "relay-ingress.yaml", """\
        remote_ingress:
          listen: /x
          peers: [{name: peer-a, secret_ref: r, baggage: {deny: [x]}, accepts: [a]}]
        """)
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.warnings == (
        "config.yaml: unknown key instances[0].colour (ignored)",
        "config.yaml: unknown key instances[0].retry.attempts (ignored)",
        "relay-ingress.yaml: unknown key remote_ingress.listen (ignored)",
        "relay-ingress.yaml: unknown key remote_ingress.peers[0].accepts (ignored)",
        "relay-ingress.yaml: unknown key remote_ingress.peers[0].baggage.deny (ignored)",
    )
    assert not any("not supported yet" in w for w in cfg.warnings)


# --------------------------------------------------------------------------- validation

BAD = "Bad Name"
ED25519_PEER: dict[str, Any] = {"name": "peer-a", "signing": "ed25519", "public_key": PUBLIC_KEY}


@pytest.mark.parametrize(("service", "extra", "message"), [
    ({"name": "Ductile_Main"}, {"instances": [INSTANCE]},
     'service.name "Ductile_Main" must use lower-case hyphenated form (a-z, 0-9, single hyphens) '
     "when relay is configured"),
    ({"name": "two--hyphens"}, {"remote_ingress": {}},
     'service.name "two--hyphens" must use lower-case hyphenated form'),
    (None, {"instances": [{**INSTANCE, "name": BAD}]},
     'instances[0].name "Bad Name" must use lower-case hyphenated form'),
    (None, {"instances": [{**INSTANCE, "name": None}]},
     'instances[0].name "" must use lower-case hyphenated form'),
    (None, {"instances": [INSTANCE, {**INSTANCE, "enabled": False}]},
     'instances: name "peer-b" is used twice'),
    (None, {"instances": [{**INSTANCE, "base_url": "b.example:8443"}]},
     'relay instance "peer-b": base_url must be an absolute http or https URL'),
    (None, {"instances": [{**INSTANCE, "base_url": "ftp://b.example"}]},
     'relay instance "peer-b": base_url must be an absolute http or https URL'),
    (None, {"instances": [{**INSTANCE, "base_url": "https://"}]},
     'relay instance "peer-b": base_url must be an absolute http or https URL'),
    (None, {"instances": [{**INSTANCE, "base_url": "http://b:port"}]},
     'relay instance "peer-b": base_url must be an absolute http or https URL'),
    (None, {"instances": [{**INSTANCE, "ingress_path": "ingest"}]},
     'relay instance "peer-b": ingress_path must start with / and contain no spaces'),
    (None, {"instances": [{**INSTANCE, "ingress_path": "/in gest"}]},
     'relay instance "peer-b": ingress_path must start with / and contain no spaces'),
    (None, {"instances": [{**INSTANCE, "secret_ref": ""}]},
     'relay instance "peer-b": secret_ref is required'),
    (None, {"instances": [{**INSTANCE, "signing": "rsa"}]},
     'relay instance "peer-b": signing must be hmac or ed25519'),
    (None, {"instances": [{**INSTANCE, "timeout": "-5s"}]},
     'relay instance "peer-b": timeout must be >= 0'),
    (None, {"instances": [{**INSTANCE, "allow": [""]}]},
     'relay instance "peer-b": allow entries must not be empty'),
    (None, {"instances": [{**INSTANCE, "allow": ["Backup.Ready"]}]},
     'relay instance "peer-b": allow: "Backup.Ready" must use lower-case dotted form'),
    (None, {"instances": [{**INSTANCE, "allow": ["a..b"]}]},
     'relay instance "peer-b": allow: "a..b" must use lower-case dotted form'),
    (None, {"instances": [{**INSTANCE, "allow": ["a.b", "a.b"]}]},
     'relay instance "peer-b": allow: "a.b" is listed twice'),
    (None, {"instances": [{**INSTANCE, "retry": {"max_attempts": 0}}]},
     'relay instance "peer-b": retry.max_attempts must be >= 1'),
    (None, {"instances": [{**INSTANCE, "retry": {"backoff_base": "-1s"}}]},
     'relay instance "peer-b": retry.backoff_base must be >= 0'),
    (None, {"remote_ingress": {"listen_path": "ingest"}},
     'remote_ingress.listen_path "ingest" must start with / and contain no spaces'),
    (None, {"remote_ingress": {"listen_path": "/in gest"}},
     'remote_ingress.listen_path "/in gest" must start with / and contain no spaces'),
    (None, {"remote_ingress": {"listen_path": "/"}},
     "remote_ingress.listen_path must not be / alone"),
    (None, {"remote_ingress": {"allowed_clock_skew": "-1m"}},
     "remote_ingress.allowed_clock_skew must be >= 0"),
    (None, {"remote_ingress": {"peers": [{**PEER, "name": "Peer"}]}},
     'remote_ingress.peers[0].name "Peer" must use lower-case hyphenated form'),
    (None, {"remote_ingress": {"peers": [PEER, PEER]}},
     'remote_ingress.peers: name "peer-a" is used twice'),
    (None, {"remote_ingress": {"peers": [{**PEER, "signing": "rsa"}]}},
     'relay peer "peer-a": signing must be hmac or ed25519'),
    (None, {"remote_ingress": {"peers": [{"name": "peer-a"}]}},
     'relay peer "peer-a": secret_ref is required'),
    (None, {"remote_ingress": {"peers": [{**PEER, "public_key": PUBLIC_KEY}]}},
     'relay peer "peer-a": public_key is only used with signing: ed25519'),
    (None, {"remote_ingress": {"peers": [{**ED25519_PEER, "public_key": None}]}},
     'relay peer "peer-a": public_key must be the base64 of a 32-byte Ed25519 public key'),
    (None, {"remote_ingress": {"peers": [{**ED25519_PEER, "public_key": "not base64!"}]}},
     'relay peer "peer-a": public_key must be the base64 of a 32-byte Ed25519 public key'),
    (None, {"remote_ingress": {"peers": [{**ED25519_PEER,
                                          "public_key": base64.b64encode(b"x" * 31).decode()}]}},
     'relay peer "peer-a": public_key must be the base64 of a 32-byte Ed25519 public key'),
    (None, {"remote_ingress": {"peers": [{**ED25519_PEER, "secret_ref": "relay-a"}]}},
     'relay peer "peer-a": secret_ref is not used with signing: ed25519'),
    (None, {"remote_ingress": {"require_key_id": True, "peers": [PEER]}},
     'relay peer "peer-a": key_id is required because remote_ingress.require_key_id is true'),
    (None, {"remote_ingress": {"peers": [{**PEER, "accept": ["a b"]}]}},
     'relay peer "peer-a": accept: "a b" must use lower-case dotted form'),
    (None, {"remote_ingress": {"peers": [{**PEER, "accept": ["x", "x"]}]}},
     'relay peer "peer-a": accept: "x" is listed twice'),
    (None, {"remote_ingress": {"peers": [{**PEER, "baggage": {"allow": [" "]}}]}},
     'relay peer "peer-a": baggage.allow entries must not be empty'),
    (None, {"remote_ingress": {"peers": [{**PEER, "baggage": {"allow": ["ductile"]}}]}},
     'relay peer "peer-a": baggage.allow: "ductile" is reserved'),
    (None, {"remote_ingress": {"peers": [{**PEER, "baggage": {"allow": ["ductile.step"]}}]}},
     'relay peer "peer-a": baggage.allow: "ductile.step" is reserved'),
    (None, {"remote_ingress": {"peers": [{**PEER, "baggage": {"allow": ["ductile_plugin"]}}]}},
     'relay peer "peer-a": baggage.allow: "ductile_plugin" is reserved'),
    (None, {"remote_ingress": {"peers": [{**PEER, "baggage": {"allow": ["t", "t"]}}]}},
     'relay peer "peer-a": baggage.allow: "t" is listed twice'),
])
def test_each_validation_message(tmp_path: Path, service: dict[str, Any] | None,
                                 extra: dict[str, Any], message: str) -> None:
    error = refusal(tmp_path, service, **extra)
    assert error.message.startswith(message), error.message
    assert error.key is not None


def test_validation_messages_carry_the_dotted_key(tmp_path: Path) -> None:
    error = refusal(tmp_path, instances=[INSTANCE, {**INSTANCE, "name": "c", "timeout": "-1s"}])
    assert error.key == "instances[1].timeout"
    error = refusal(tmp_path, remote_ingress={"peers": [PEER, {"name": "b"}]})
    assert error.key == "remote_ingress.peers[1].secret_ref"


def test_what_validation_accepts(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"name": ""}, instances=[
        {**INSTANCE, "base_url": "http://[::1]:9000/base", "allow": ["a.b_c-d", "x9"],
         "signing": "ed25519"}],
        remote_ingress={"require_key_id": True, "peers": [
            {**PEER, "key_id": "k", "baggage": {"allow": ["trace_id", "ductilex"]}},
            {**ED25519_PEER, "name": "peer-e", "key_id": "k"}]})
    assert cfg.service.name == "ductile"  # the default name is a valid relay identity
    assert cfg.relay.configured


def test_a_name_outside_the_grammar_is_fine_without_relay(tmp_path: Path) -> None:
    assert load(tmp_path, {"name": "Not A Relay Name"}).service.name == "Not A Relay Name"


def test_checks_only_reachable_from_code() -> None:
    ingress = RemoteIngress(max_body_size=0)
    with pytest.raises(ConfigError, match=r"^remote_ingress.max_body_size must be > 0$"):
        validate_relay(RelayConfig(ingress=ingress), "gw")
    validate_relay(RelayConfig(), "Anything Goes")  # unconfigured: nothing to check


def test_the_relay_check_runs_after_the_other_checks(tmp_path: Path) -> None:
    error = refusal(tmp_path, {"log_level": "loud"}, instances=[{**INSTANCE, "name": BAD}])
    assert error.message.startswith("service.log_level must be one of")


# --------------------------------------------------------------------------- json schema


GOOD_FRAGMENT = f"""\
instances:
  - name: peer-b
    enabled: true
    base_url: https://b.example:8443
    ingress_path: /ingest/peer/peer-a
    secret_ref: relay-b
    signing: hmac
    key_id: k1
    timeout: 10s
    allow: [backup.ready]
    retry: {{max_attempts: 3, backoff_base: 5s}}
remote_ingress:
  listen_path: /ingest/peer
  max_body_size: 1MB
  allowed_clock_skew: 5m
  require_key_id: true
  peers:
    - {{name: peer-a, secret_ref: relay-a, key_id: k2, accept: [backup.ready],
       baggage: {{allow: [trace_id]}}}}
    - {{name: peer-c, signing: ed25519, public_key: "{PUBLIC_KEY}", key_id: k3}}
"""


def test_the_schema_documents_the_relay_sections() -> None:
    schema = config_schema()
    assert {"RelayConfig", "RelayInstance", "RelayPeer", "RemoteIngress"} <= set(schema["$defs"])
    assert schema["properties"]["instances"]["items"] == {"$ref": "#/$defs/RelayInstance"}
    assert schema["properties"]["remote_ingress"]["$ref"] == "#/$defs/RemoteIngress"
    peer = schema["$defs"]["RelayPeer"]["properties"]
    assert "baggage" in peer and "baggage_allow" not in peer
    assert set(peer["baggage"]["properties"]) == {"allow"}
    assert schema["$defs"]["RelayInstance"]["required"] == ["name", "base_url", "secret_ref"]
    assert not schema["properties"]["instances"].get("deprecated")


def test_the_schema_accepts_a_good_relay_config() -> None:
    assert check_text(GOOD_FRAGMENT, config_schema(), display="relay.yaml") == []


@pytest.mark.parametrize(("replace", "key"), [
    ("timeout: 10s", "instances[0].timeout"),
    ("signing: hmac", "instances[0].signing"),
    ("max_body_size: 1MB", "remote_ingress.max_body_size"),
    ("allow: [backup.ready]", "instances[0].allow[0]"),
    ("baggage: {allow: [trace_id]}", "remote_ingress.peers[0].baggage.allow[0]"),
    ("name: peer-b", "instances[0].name"),
])
def test_the_schema_rejects_a_wrong_value(replace: str, key: str) -> None:
    wrong = {"timeout: 10s": "timeout: 10", "signing: hmac": "signing: rsa",
             "max_body_size: 1MB": "max_body_size: lots",
             "allow: [backup.ready]": "allow: [Backup Ready]",
             "baggage: {allow: [trace_id]}": "baggage: {allow: [1]}",
             "name: peer-b": "name: Peer B"}[replace]
    assert replace in GOOD_FRAGMENT
    problems = check_text(GOOD_FRAGMENT.replace(replace, wrong), config_schema(),
                          display="relay.yaml")
    assert [p.key for p in problems if p.severity == "error"] == [key]
