"""Vault key files: generate, read (refusing loose permissions) and find one.

A key file holds one X25519 private key (pynacl `PrivateKey`) as base64url text, after comment
lines naming its public key, so an operator can tell keys apart without decrypting anything:

    # created by ductile secrets keygen
    # public key: <base64url of the 32-byte public key>
    <base64url of the 32-byte private key>

Resolution ladder (first hit wins; the Go original's ladder with our file names):

1. `$DUCTILE_VAULT_KEY_FILE`                 explicit: missing or bad is an error
2. `secrets.key_file` (relative: config dir)  explicit: missing or bad is an error
3. `$CREDENTIALS_DIRECTORY/vault.key`         systemd `LoadCredential=vault.key:...`
4. `<config dir>/vault.key`
5. `~/.config/ductile/vault.key`

Steps 3-5 are defaults: a missing file there means "no key" (a keyless CLI, a vault-blind
load), never an error. A file that exists but is unreadable, malformed or open to group/others
is an error at every step.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from nacl.public import PrivateKey

from ductile.errors import VaultKeyError
from ductile.vault.model import decode_b64url, encode_b64url

KEY_ENV = "DUCTILE_VAULT_KEY_FILE"
KEY_FILENAME = "vault.key"
KEY_BYTES = 32


@dataclass(frozen=True)
class KeySource:
    """Where a key path came from; `origin` names the ladder step for error messages."""

    path: str
    origin: str
    explicit: bool


@dataclass(frozen=True)
class VaultKey:
    """A loaded private key and the file it came from. The key bytes never appear in repr."""

    path: str
    origin: str
    private: PrivateKey

    def __repr__(self) -> str:
        return f"VaultKey(path={self.path!r}, origin={self.origin!r}, public={self.public_text})"

    @property
    def public_text(self) -> str:
        return encode_b64url(bytes(self.private.public_key))


def keygen(path: str, *, comment: str = "created by ductile secrets keygen") -> VaultKey:
    """Write a new key to `path` (mode 0600, refusing to overwrite) and return it."""
    private = PrivateKey.generate()
    write_key_file(path, private, comment=comment, exclusive=True)
    return VaultKey(path=os.path.abspath(path), origin="generated", private=private)


def render_key(private: PrivateKey, *, comment: str) -> bytes:
    """The text of a key file for `private`."""
    public = encode_b64url(bytes(private.public_key))
    return (f"# {comment}\n# public key: {public}\n"
            f"{encode_b64url(bytes(private))}\n").encode("ascii")


def write_key_file(path: str, private: PrivateKey, *, comment: str, exclusive: bool) -> None:
    """Create `path` with mode 0600 and fsync it; `exclusive` refuses an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise VaultKeyError(f"vault key file {path!r} already exists; refusing to overwrite it "
                            "(move it aside first if you really mean to replace it)",
                            path=path) from None
    except OSError as exc:
        raise VaultKeyError(f"cannot create vault key file {path!r}: {exc.strerror}",
                            path=path) from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, render_key(private, comment=comment))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: str, *, origin: str = "key file") -> VaultKey:
    """Load a key file, refusing group/other permission bits, with the chmod to run."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise VaultKeyError(f"{origin}: vault key file {path!r} does not exist", path=path) \
            from None
    except OSError as exc:
        raise VaultKeyError(f"{origin}: cannot open vault key file {path!r}: {exc.strerror}",
                            path=path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise VaultKeyError(f"{origin}: vault key file {path!r} is not a regular file",
                                path=path)
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise VaultKeyError(
                f"vault key file {path!r} has insecure permissions {mode:04o}: must not be "
                f"readable by group or others (chmod 600 {path})", path=path)
        data = os.read(fd, 4097)
    finally:
        os.close(fd)
    return VaultKey(path=os.path.abspath(path), origin=origin, private=parse_key(data, path))


def parse_key(data: bytes, path: str) -> PrivateKey:
    """The private key in a key file's bytes; VaultKeyError for anything else."""
    bad = VaultKeyError(f"vault key file {path!r} is not a ductile vault key (expected one "
                        "base64url line of 32 bytes after optional # comments; create one "
                        "with ductile secrets keygen --out PATH)", path=path)
    if len(data) > 4096:
        raise bad
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise bad from None
    lines = [ln.strip() for ln in text.splitlines()]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(body) != 1:
        raise bad
    try:
        raw = decode_b64url(body[0])
    except ValueError:
        raise bad from None
    if len(raw) != KEY_BYTES:
        raise bad
    return PrivateKey(raw)


def resolve_key_source(config_dir: str, key_file_setting: str, environ: Mapping[str, str],
                       home: str) -> KeySource | None:
    """The first step of the ladder that names a key; None when no default file exists."""
    from_env = environ.get(KEY_ENV, "")
    if from_env:
        return KeySource(os.path.abspath(from_env), KEY_ENV, True)
    if key_file_setting:
        path = os.path.join(config_dir, os.path.expanduser(key_file_setting))
        return KeySource(os.path.abspath(path), "secrets.key_file", True)
    defaults = []
    credentials = environ.get("CREDENTIALS_DIRECTORY", "")
    if credentials:
        defaults.append((os.path.join(credentials, KEY_FILENAME),
                         "$CREDENTIALS_DIRECTORY/vault.key"))
    defaults.append((os.path.join(config_dir, KEY_FILENAME), "<config dir>/vault.key"))
    if home:
        defaults.append((os.path.join(home, ".config", "ductile", KEY_FILENAME),
                         "~/.config/ductile/vault.key"))
    for path, origin in defaults:
        if os.path.lexists(path):
            return KeySource(os.path.abspath(path), origin, False)
    return None


def load_key(config_dir: str, key_file_setting: str, environ: Mapping[str, str],
             home: str) -> VaultKey | None:
    """Walk the ladder and read the key it finds; None only when no step names one."""
    source = resolve_key_source(config_dir, key_file_setting, environ, home)
    if source is None:
        return None
    return read_key_file(source.path, origin=source.origin)
