"""The vault: secrets, principals and the admin token, sealed to an X25519 key file.

Public surface (see docs/vault.md):

- `load_vault(config_dir, vault_file_setting, key_file_setting, environ, home) -> VaultLoad`
  once per boot or reload; `VaultLoad.owner` is the `VaultOwner` when the vault opened.
- `VaultOwner`: `compose`, `resolved_secrets`, `authenticate_admin`, `nonce`, and the
  mutations the management API and the CLI call.
- `bootstrap(config_dir)` for `ductile config init` (ductile/vault/bootstrap.py).
"""

from __future__ import annotations

from ductile.vault.model import Composition, ResolvedSecrets, RollReport, VaultModel
from ductile.vault.owner import VaultLoad, VaultOwner, load_vault, resolve_vault_path

__all__ = [
    "Composition",
    "ResolvedSecrets",
    "RollReport",
    "VaultLoad",
    "VaultModel",
    "VaultOwner",
    "load_vault",
    "resolve_vault_path",
]
