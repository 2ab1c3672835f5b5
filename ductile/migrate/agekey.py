"""The original's age identity file, and its vault decrypted with it.

An age identity file (what `age-keygen` and the Go gateway write) is text: `#` comment lines
(`# created: …`, `# public key: age1…`), blank lines, and one `AGE-SECRET-KEY-1…` line per
identity. `parse_identity_lines` reads that text without any cryptography (it is the parser the
property tests fuzz); `read_identities` turns the lines into pyrage identities, and
`decrypt_vault` opens the Go vault (ASCII-armored or binary age) with them.

pyrage is imported only here and only when a migration runs: nothing else needs it.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ductile.errors import MigrationRefused

IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
_BINARY = b"age-encryption.org/v1"
_MAX_FILE = 64 * 1024 * 1024


def parse_identity_lines(text: str, path: str) -> tuple[str, ...]:
    """The identity lines of an age identity file, in order; MigrationRefused naming `path`
    and the line for anything else (an identity file holds nothing but comments and keys)."""
    found: list[str] = []
    # Lines end at "\n" only (a "\r" before it is whitespace), as age's own reader has it:
    # str.splitlines would also split inside a comment at \x1c, \x85 or \u2028.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith(IDENTITY_PREFIX) or any(c.isspace() for c in line):
            raise MigrationRefused(
                f"age identity file {path!r} line {number} is neither a comment nor an "
                f"{IDENTITY_PREFIX}… key: pass the Go gateway's identity file with --age-key",
                path=path)
        found.append(line)
    if not found:
        raise MigrationRefused(f"age identity file {path!r} holds no {IDENTITY_PREFIX}… key: "
                               "pass the Go gateway's identity file with --age-key", path=path)
    return tuple(found)


def read_identities(path: str) -> list[Any]:
    """The pyrage X25519 identities in `path`; refuses a file readable by group or others (as
    the original does) and any malformed key, naming the file."""
    from pyrage import IdentityError, x25519

    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            text = handle.read(_MAX_FILE)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise MigrationRefused(f"cannot read age identity file {path!r}: {reason}",
                               path=path) from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise MigrationRefused(
            f"age identity file {path!r} has insecure permissions "
            f"{stat.S_IMODE(info.st_mode):04o}: must not be readable by group or others "
            f"(chmod 600 {path})", path=path)
    identities = []
    for line in parse_identity_lines(text, path):
        try:
            identities.append(x25519.Identity.from_str(line))
        except IdentityError:
            raise MigrationRefused(f"age identity file {path!r} holds a malformed "
                                   f"{IDENTITY_PREFIX}… key", path=path) from None
    return identities


def is_age_file(data: bytes) -> bool:
    """The original's own test: an age header or armor, leading whitespace ignored."""
    head = data.lstrip()
    return head.startswith(_ARMOR) or head.startswith(_BINARY)


def decrypt_vault(vault_path: str, identities: list[Any], identity_path: str) -> bytes:
    """The plaintext of the Go vault; MigrationRefused naming the file when it is not age, or
    when none of the identities opens it (the wrong identity file)."""
    from pyrage import DecryptError, decrypt

    try:
        with open(vault_path, "rb") as handle:
            data = handle.read(_MAX_FILE + 1)
    except OSError as exc:
        raise MigrationRefused(f"cannot read the Go vault {vault_path!r}: {exc.strerror}",
                               path=vault_path) from None
    if len(data) > _MAX_FILE or not is_age_file(data):
        raise MigrationRefused(f"the Go vault {vault_path!r} is not age-encrypted: pass the "
                               "original's vault (secrets.vault_file, default vault.age)",
                               path=vault_path)
    try:
        return decrypt(data.lstrip(), identities)
    except DecryptError as exc:
        if "no matching keys" in str(exc).lower():
            raise MigrationRefused(
                f"the age identity {identity_path!r} does not open the Go vault "
                f"{vault_path!r}: pass the identity the vault was encrypted to with --age-key "
                "(the Go gateway reads DUCTILE_AGE_KEY_FILE or secrets.age_key_file)",
                path=identity_path) from None
        raise MigrationRefused(f"the Go vault {vault_path!r} cannot be decrypted ({exc}): it "
                               "is truncated or damaged; restore it from a backup",
                               path=vault_path) from None
