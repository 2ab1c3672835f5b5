"""The vault owner: the model, its file and its key, and the only code that writes the file.

Every mutation runs under one lock: compute the new model, and if it differs from the current
one, check the file on disk is still the one we loaded or last wrote (its SHA-256), seal and
write it atomically, and only then adopt the new model. If any step fails the old model stays:
nothing to roll back. Reads (`compose`, `resolved_secrets`, `authenticate_admin`) take the
current model reference without the lock; a model is immutable, so they see one consistent
vault.

The lock is a `threading.Lock` so that mutations may run in a worker thread
(`trio.to_thread.run_sync`) to keep the fsyncs off the event loop.

`load_vault` is what boot and reload call, once per generation: it resolves the vault path and
the key ladder and reports one of three outcomes:

- `absent`: no vault file. The gateway may run without one.
- `blind`: a vault file but no key anywhere on the ladder (a keyless CLI or service).
- `loaded`: the vault decrypted; `owner` is set.

A vault that exists and has a key but cannot be opened raises: the gateway fails closed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nacl.public import PrivateKey

from ductile.atomicfile import fsync_directory
from ductile.errors import VaultExists, VaultFileError, VaultKeyError, VaultModifiedExternally
from ductile.store.jobs import utcnow_text
from ductile.vault import fileformat
from ductile.vault.keys import VaultKey, load_key, read_key_file, write_key_file
from ductile.vault.model import (Composition, Mint, ResolvedSecrets, RollReport, VaultModel,
                                 genesis, mint_token)

R = TypeVar("R")
Clock = Callable[[], str]


class VaultOwner:
    """One open vault. Build it with `VaultOwner.open` or `VaultOwner.create`."""

    def __init__(self, path: str, key: VaultKey, model: VaultModel, loaded_digest: str, *,
                 clock: Clock = utcnow_text, mint: Mint = mint_token) -> None:
        self.path = os.path.abspath(path)
        self._key = key
        self._model = model
        self._digest = loaded_digest
        self._clock = clock
        self._mint = mint
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VaultOwner(path={self.path!r}, key={self._key.path!r})"

    @classmethod
    def open(cls, path: str, key: VaultKey, *, clock: Clock = utcnow_text,
             mint: Mint = mint_token) -> VaultOwner:
        """Read and decrypt `path` with `key`; VaultFileError (or VaultWrongKey) on failure."""
        data = fileformat.read_file(path)
        model = fileformat.open_sealed(data, key.private, path)
        return cls(path, key, model, fileformat.digest(data), clock=clock, mint=mint)

    @classmethod
    def create(cls, path: str, key: VaultKey, *, clock: Clock = utcnow_text,
               mint: Mint = mint_token) -> tuple[VaultOwner, str]:
        """Genesis: a new vault at `path` (refusing an existing one) and its admin token."""
        if os.path.lexists(path):
            raise VaultExists(f"vault: refusing to init — {path!r} already exists", path=path)
        model, admin_token = genesis(now=clock(), mint=mint)
        data = fileformat.seal(model, key.private.public_key)
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        fileformat.write_atomic(path, data)
        return cls(path, key, model, fileformat.digest(data), clock=clock, mint=mint), admin_token

    # -- reads ---------------------------------------------------------------------------

    @property
    def model(self) -> VaultModel:
        return self._model

    @property
    def key_path(self) -> str:
        return self._key.path

    @property
    def public_key(self) -> str:
        return self._key.public_text

    @property
    def nonce(self) -> bytes:
        return self._model.nonce

    def compose(self, principal: str) -> Composition:
        return self._model.compose(principal)

    def resolved_secrets(self) -> ResolvedSecrets:
        return self._model.resolved_secrets()

    def authenticate_admin(self, token: str) -> bool:
        return self._model.authenticate_admin(token)

    def readable_value(self, name: str) -> str:
        return self._model.readable_value(name)

    # -- mutations (each persists or changes nothing) ------------------------------------

    def set_secret(self, name: str, value: str, *, principals: Sequence[str] | None = None,
                   pattern: str | None = None, description: str | None = None) -> None:
        self._apply(lambda m: (m.set_secret(name, value, principals=principals, pattern=pattern,
                                            description=description, now=self._clock()), None))

    def roll_secret(self, name: str, value: str | None = None) -> None:
        self._apply(lambda m: (m.roll_secret(name, value, now=self._clock(), mint=self._mint),
                               None))

    def revoke_secret(self, name: str) -> None:
        self._apply(lambda m: (m.revoke_secret(name, now=self._clock()), None))

    def register_principal(self, name: str, kind: str = "plugin") -> None:
        self._apply(lambda m: (m.register_principal(name, kind), None))

    def revoke_principal(self, name: str) -> None:
        self._apply(lambda m: (m.revoke_principal(name), None))

    def purge_principal(self, name: str) -> None:
        self._apply(lambda m: (m.purge_principal(name, now=self._clock()), None))

    def roll_principal(self, name: str) -> RollReport:
        """All of the principal's auto secrets roll in one write, or none do."""
        return self._apply(lambda m: m.roll_principal(name, now=self._clock(), mint=self._mint))

    def rotate_admin_token(self) -> str:
        """A new admin token (returned once); the old one stops authenticating."""
        return self._apply(lambda m: m.rotate_admin_token(now=self._clock(), mint=self._mint))

    def rotate_key(self) -> VaultKey:
        """Re-seal the vault to a new key and replace the key file (daemon stopped).

        Order matters for crash safety: the new key is staged and verified in
        `<key>.rotate-new`, the vault is re-sealed to it and verified, and only then is the
        staged key renamed over the old one. A crash between the two renames leaves a vault
        that opens with the `.rotate-new` file (the wrong-key error says so).
        """
        with self._lock:
            staged = self._key.path + ".rotate-new"
            fresh = PrivateKey.generate()
            write_key_file(staged, fresh, comment="created by ductile vault rotate-key",
                           exclusive=False)
            reread = read_key_file(staged, origin="staged key")
            if bytes(reread.private) != bytes(fresh):
                raise VaultKeyError(f"staged key {staged!r} did not read back intact; the "
                                    "vault is unchanged", path=staged)
            data = fileformat.seal(self._model, fresh.public_key)
            if fileformat.open_sealed(data, reread.private, self.path) != self._model:
                raise VaultFileError("re-sealed vault did not verify with the new key; the "
                                     "vault is unchanged", path=self.path)
            self._check_unchanged_on_disk()
            fileformat.write_atomic(self.path, data)
            self._digest = fileformat.digest(data)
            os.replace(staged, self._key.path)
            fsync_directory(os.path.dirname(self._key.path))
            self._key = VaultKey(path=self._key.path, origin=self._key.origin, private=fresh)
            return self._key

    def _apply(self, op: Callable[[VaultModel], tuple[VaultModel, R]]) -> R:
        with self._lock:
            new, result = op(self._model)
            if new == self._model:
                return result
            data = fileformat.seal(new, self._key.private.public_key)
            self._check_unchanged_on_disk()
            fileformat.write_atomic(self.path, data)
            self._digest = fileformat.digest(data)
            self._model = new
            return result

    def _check_unchanged_on_disk(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                current = fileformat.digest(handle.read())
        except FileNotFoundError:
            current = "missing"
        except OSError as exc:
            raise VaultFileError(f"cannot read vault {self.path!r} before writing it: "
                                 f"{exc.strerror}", path=self.path) from None
        if current != self._digest:
            raise VaultModifiedExternally(
                f"vault modified externally: {self.path!r} changed underneath the daemon; "
                "restart or reload to adopt the on-disk vault (this change was not saved)",
                path=self.path)


@dataclass(frozen=True)
class VaultLoad:
    """What `load_vault` found. `status` is `absent`, `blind` or `loaded`."""

    status: str
    vault_path: str
    key_path: str = ""
    owner: VaultOwner | None = None

    @property
    def present(self) -> bool:
        """A vault file exists (loaded or not): the management posture is possible."""
        return self.status != "absent"


def resolve_vault_path(config_dir: str, vault_file_setting: str) -> str:
    """`secrets.vault_file` (relative: the config dir), default `<config dir>/vault.nacl`."""
    if vault_file_setting:
        return os.path.abspath(os.path.join(config_dir, os.path.expanduser(vault_file_setting)))
    return os.path.abspath(os.path.join(config_dir, fileformat.VAULT_FILENAME))


def load_vault(config_dir: str, vault_file_setting: str, key_file_setting: str,
               environ: Mapping[str, str], home: str, *, clock: Clock = utcnow_text
               ) -> VaultLoad:
    """Open the configured vault once for a boot or reload generation (see module doc)."""
    path = resolve_vault_path(config_dir, vault_file_setting)
    key = load_key(config_dir, key_file_setting, environ, home)
    if not os.path.lexists(path):
        return VaultLoad(status="absent", vault_path=path, key_path=key.path if key else "")
    if key is None:
        return VaultLoad(status="blind", vault_path=path)
    owner = VaultOwner.open(path, key, clock=clock)
    return VaultLoad(status="loaded", vault_path=path, key_path=key.path, owner=owner)
