"""The original's vault plaintext as our vault model.

The Go vault seals one YAML document with the same shape as ours (docs/vault.md): `secrets`
(value, authorized_principals, status, pattern, roll_count, created/updated/revoked_at,
description) and `principals` (kind, status, and the vault nonce on `core`). So every secret,
grant, principal, the admin token and the nonce (which keys plugin attestation) carry over as
they are; only timestamps are rewritten to our stored form. The document is checked by our own
model rules, so a Go vault we could not serve is refused here rather than at boot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import yaml

from ductile.errors import MigrationRefused, ValueProblem, VaultPolicyError
from ductile.migrate.gotime import to_stored_time
from ductile.vault.model import VaultModel, from_document

_TIME_FIELDS = ("created_at", "updated_at", "revoked_at")


def model_from_plaintext(plaintext: bytes, path: str) -> VaultModel:
    """Our model of the decrypted Go vault at `path`; MigrationRefused naming the file."""
    try:
        doc = yaml.safe_load(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        raise MigrationRefused(f"the Go vault {path!r} decrypted, but its content is not YAML",
                               path=path) from None
    if isinstance(doc, dict) and isinstance(doc.get("secrets"), dict):
        doc = {**doc, "secrets": {name: _times_as_text(entry)
                                  for name, entry in doc["secrets"].items()}}
    try:
        return from_document(doc)
    except VaultPolicyError as exc:
        raise MigrationRefused(f"the Go vault {path!r} breaks a vault rule: {exc.message}",
                               path=path) from None


def with_extra_secrets(model: VaultModel, extra: Mapping[str, str], *, now: str) -> VaultModel:
    """`model` plus the manual secrets the config rewrite moved out of the config files."""
    for name, value in sorted(extra.items()):
        model = model.set_secret(name, value, now=now,
                                 description="moved from the Go config by ductile migrate")
    return model


def _times_as_text(entry: Any) -> Any:
    """PyYAML reads an unquoted RFC3339 value as a datetime; our model wants our text form."""
    if not isinstance(entry, dict):
        return entry
    fixed = dict(entry)
    for key in _TIME_FIELDS:
        value = fixed.get(key)
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
            fixed[key] = to_stored_time(aware.isoformat())
        elif isinstance(value, str) and value:
            try:
                fixed[key] = to_stored_time(value)
            except ValueProblem:
                pass  # kept as written: a vault timestamp is informational only
    return fixed
