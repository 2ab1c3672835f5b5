"""Config snapshot fields: deterministic hashes, redaction, secret fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ductile.config.load import load_config
from ductile.config.snapshot import (
    SEMANTICS,
    canonical_json,
    fingerprint,
    redact,
    snapshot_fields,
)
from ductile.store.snapshots import JSON_FIELDS, TEXT_FIELDS

SECRET_TOKEN = "tok-SECRET-0123456789"
PLUGIN_PASSWORD = "hunter2-SECRET"

CONFIG = f"""\
service: {{name: snap, max_workers: 2, job_log_retention: 30d}}
plugin_roots: [plugins]
api:
  enabled: true
  auth:
    tokens:
      - {{secret_ref: "${{TOKEN_REF}}", scopes: ["*"]}}
      - {{secret_ref: ro-token, scopes: [read], name: ro}}
plugins:
  echo:
    enabled: true
    config:
      message: hi
      password: {PLUGIN_PASSWORD}
      Client-Secret: also-secret
      nested: {{api_key: k-SECRET, items: [{{private_key: pk-SECRET}}, plain]}}
    schedules:
      - {{every: 5m, payload: {{auth_token: sched-SECRET, n: 1}}}}
webhooks:
  listen: 127.0.0.1:9000
  endpoints: [{{path: /hook, plugin: echo, secret_ref: gh, signature_header: X-Sig}}]
"""


def write(tmp_path: Path, text: str = CONFIG) -> Path:
    (tmp_path / "config.yaml").write_text(text)
    return tmp_path


def fields(directory: Path, token: str = SECRET_TOKEN) -> dict:
    cfg = load_config(str(directory), environ={"TOKEN_REF": "api-token"})
    return snapshot_fields(cfg, {"api-token": token, "ro-token": "other-token-value"})


def test_shape_and_store_compatibility(tmp_path: Path) -> None:
    snap = fields(write(tmp_path))
    assert set(snap) == set(TEXT_FIELDS) | set(JSON_FIELDS)
    assert snap["config_hash"].startswith("blake2b:") and len(snap["config_hash"]) == 8 + 64
    assert snap["source_path"] == str(tmp_path / "config.yaml")
    assert snap["source"] == "explicit"
    assert snap["semantics"] == SEMANTICS
    assert snap["plugin_fingerprints"] is None
    json.dumps(snap)  # every field is JSON


def test_sanitized_config_shape(tmp_path: Path) -> None:
    sanitized = fields(write(tmp_path))["sanitized_config"]
    assert sanitized["service"]["name"] == "snap"
    assert sanitized["service"]["tick_interval"] == "1m0s"
    assert sanitized["service"]["job_log_retention"] == "720h0m0s"
    assert sanitized["state"] == {"path": str(tmp_path / "data" / "state.db")}
    assert sanitized["api"]["auth"]["tokens"] == [
        {"secret_ref": "api-token", "scopes": ["*"]},
        {"secret_ref": "ro-token", "scopes": ["read"], "name": "ro"},
    ]
    echo = sanitized["plugins"]["echo"]
    assert echo["config"] == {
        "message": "hi",
        "password": "[redacted:plugins.echo.config.password]",
        "Client-Secret": "[redacted:plugins.echo.config.Client-Secret]",
        "nested": {
            "api_key": "[redacted:plugins.echo.config.nested.api_key]",
            "items": [{"private_key": "[redacted:plugins.echo.config.nested.items[0].private_key]"},
                      "plain"],
        },
    }
    assert echo["schedules"][0]["payload"] == {
        "auth_token": "[redacted:plugins.echo.schedules[0].payload.auth_token]", "n": 1}
    assert echo["retry"] == {"max_attempts": 4, "backoff_base": "30s"}
    assert sanitized["webhooks"]["endpoints"][0]["secret_ref"] == (
        "[redacted:webhooks.endpoints[0].secret_ref]")


def test_secrets_never_appear(tmp_path: Path) -> None:
    snap = fields(write(tmp_path))
    text = json.dumps(snap)
    for secret in (SECRET_TOKEN, "other-token-value", PLUGIN_PASSWORD, "also-secret",
                   "k-SECRET", "pk-SECRET", "sched-SECRET"):
        assert secret not in text


def test_secret_fingerprints(tmp_path: Path) -> None:
    prints = fields(write(tmp_path))["secret_fingerprints"]
    expected = "secretfp_blake2b:" + hashlib.blake2b(
        b"ductile config secret fingerprint v1\0api.auth.tokens[0]\0" + SECRET_TOKEN.encode(),
        digest_size=32).hexdigest()
    assert prints[0] == {"purpose": "api.auth.tokens[0]", "source": "vault",
                         "secret_ref": "api-token", "present": True, "fingerprint": expected}
    assert prints[1]["fingerprint"] == fingerprint("api.auth.tokens[1]", "other-token-value")
    assert len(prints) == 2


def test_unresolved_token_has_no_fingerprint(tmp_path: Path) -> None:
    write(tmp_path, "plugin_roots: [p]\napi: {auth: {tokens: [{secret_ref: unminted}]}}\n")
    assert fields(tmp_path)["secret_fingerprints"] == [
        {"purpose": "api.auth.tokens[0]", "source": "vault", "secret_ref": "unminted",
         "present": False}]


def test_hashes_deterministic(tmp_path: Path) -> None:
    write(tmp_path)
    assert fields(tmp_path) == fields(tmp_path)


def test_config_hash_changes_with_config_and_secret(tmp_path: Path) -> None:
    base = fields(write(tmp_path))
    rotated = fields(tmp_path, token="a-new-token")
    assert rotated["config_hash"] != base["config_hash"]
    assert rotated["sanitized_config"] == base["sanitized_config"]
    assert rotated["source_hash"] == base["source_hash"]  # the files did not change
    changed = fields(write(tmp_path, CONFIG.replace("message: hi", "message: bye")))
    assert changed["config_hash"] != base["config_hash"]
    assert changed["source_hash"] != base["source_hash"]


def test_comment_changes_source_hash_only(tmp_path: Path) -> None:
    base = fields(write(tmp_path))
    commented = fields(write(tmp_path, "# a comment\n" + CONFIG))
    assert commented["config_hash"] == base["config_hash"]
    assert commented["source_hash"] != base["source_hash"]


def test_source_hash_covers_includes_sorted(tmp_path: Path) -> None:
    write(tmp_path, "plugin_roots: [p]\ninclude: [b.yaml, a.yaml]\n")
    (tmp_path / "a.yaml").write_text("{}\n")
    (tmp_path / "b.yaml").write_text("{}\n")
    digest = hashlib.blake2b(digest_size=32)
    for name in ("a.yaml", "b.yaml", "config.yaml"):
        path = tmp_path / name
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    assert fields(tmp_path)["source_hash"] == "blake2b:" + digest.hexdigest()


def test_redact_and_canonical_json() -> None:
    assert redact({"db_password": {"x": 1}, "ok": [{"TOKEN_x": 1}]}, "root") == {
        "db_password": "[redacted:root.db_password]",
        "ok": [{"TOKEN_x": "[redacted:root.ok[0].TOKEN_x]"}]}
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()
