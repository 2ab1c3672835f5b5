"""The credential ladder in one call, for `ductile config init`.

A fresh config directory gets a key (`vault.key`, 0600), a vault sealed to it (`vault.nacl`),
and an auto secret `api-token`, minted and granted to nobody, so it is visible to the gateway
(`resolved_secrets`) and `api.auth.tokens: [{secret_ref: api-token, ...}]` resolves at the
first boot. The caller gets the admin token and the API token once, to store or show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ductile.errors import VaultError, VaultExists
from ductile.vault.fileformat import VAULT_FILENAME
from ductile.vault.keys import KEY_FILENAME, keygen, read_key_file
from ductile.vault.owner import VaultOwner

API_TOKEN_SECRET = "api-token"


@dataclass(frozen=True)
class BootstrapResult:
    """Paths written and the two credentials (excluded from repr)."""

    vault_path: str
    key_path: str
    api_token_secret: str
    admin_token: str = field(repr=False)
    api_token: str = field(repr=False)
    key_created: bool = True


def bootstrap(config_dir: str, *, api_token_secret: str = API_TOKEN_SECRET) -> BootstrapResult:
    """Key, vault and a minted API token inside `config_dir`.

    An existing `vault.key` is reused (it must be 0600); an existing `vault.nacl` is refused
    (VaultExists): re-running init must never replace a vault and lose its secrets.
    """
    directory = os.path.abspath(config_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key_path = os.path.join(directory, KEY_FILENAME)
    vault_path = os.path.join(directory, VAULT_FILENAME)
    if os.path.lexists(vault_path):
        # Refused before touching the key, so a refused run changes nothing.
        raise VaultExists(f"vault: refusing to init — {vault_path!r} already exists (keep it, "
                          "or move it aside to start a new vault)", path=vault_path)
    created = not os.path.lexists(key_path)
    owner_key = keygen(key_path) if created else read_key_file(key_path, origin="<config dir>")
    owner, admin_token = VaultOwner.create(vault_path, owner_key)
    owner.set_secret(api_token_secret, "", pattern="auto",
                     description="API bearer token minted by ductile config init")
    owner.roll_secret(api_token_secret)
    api_token = owner.resolved_secrets().values.get(api_token_secret, "")
    if not api_token:
        raise VaultError(f"vault {vault_path!r}: the minted {api_token_secret!r} is not "
                         "gateway-visible", path=vault_path)
    return BootstrapResult(vault_path=vault_path, key_path=key_path,
                           api_token_secret=api_token_secret, admin_token=admin_token,
                           api_token=api_token, key_created=created)


def write_secret_file(path: str, value: str) -> None:
    """Write one credential to `path` as a 0600 file (created 0600, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (value + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
