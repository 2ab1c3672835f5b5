"""The vault file: a versioned header line, then a SealedBox of the model as canonical YAML.

    ductile-vault v1 sealedbox-x25519 recipient=<base64url public key>
    <base64 of the SealedBox ciphertext, wrapped at 76 columns>

Why this shape. A SealedBox (X25519 + XSalsa20-Poly1305 with an ephemeral sender key) needs
only the recipient's public key to write and its private key to read, and its MAC makes any
change to the ciphertext fail to open. The header is plain text so `head -1` says what the file
is, and it names the recipient so a wrong key is told apart from a damaged file. The header is
not authenticated; editing it can only change which error a broken file gets, never what loads.

Reading fails closed with exactly these errors (property-tests/test_vault_fileformat.py fuzzes
it): VaultFileError for anything that is not a complete, untampered vault, VaultWrongKey (a
VaultFileError) when the recipient is another key.

Writing is atomic: a temp file (mode 0600) in the same directory, fsync, rename over the
target, fsync the directory. A crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import yaml
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from ductile import atomicfile
from ductile.errors import VaultFileError, VaultPolicyError, VaultWrongKey
from ductile.vault.model import VaultModel, decode_b64url, encode_b64url, from_document, \
    to_document

MAGIC = "ductile-vault"
VERSION = "v1"
SCHEME = "sealedbox-x25519"
VAULT_FILENAME = "vault.nacl"
# 32-byte ephemeral public key + 16-byte Poly1305 tag: the smallest possible SealedBox.
_SEAL_OVERHEAD = 48
_MAX_FILE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Header:
    version: str
    scheme: str
    recipient: bytes


def canonical_yaml(model: VaultModel) -> bytes:
    """The one plaintext form of a model: sorted keys, block style, UTF-8."""
    text = yaml.safe_dump(to_document(model), sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=1 << 16)
    return text.encode("utf-8")


def seal(model: VaultModel, recipient: PublicKey) -> bytes:
    """The complete file bytes for `model` sealed to `recipient`."""
    ciphertext = SealedBox(recipient).encrypt(canonical_yaml(model))
    body = base64.encodebytes(ciphertext).decode("ascii")
    header = f"{MAGIC} {VERSION} {SCHEME} recipient={encode_b64url(bytes(recipient))}\n"
    return (header + body).encode("ascii")


def open_sealed(data: bytes, key: PrivateKey, path: str) -> VaultModel:
    """Parse, decrypt and validate file bytes; fail closed with a message naming `path`."""
    if len(data) > _MAX_FILE:
        raise VaultFileError(f"vault {path!r} is larger than {_MAX_FILE} bytes: it is not a "
                             "ductile vault file", path=path)
    first, newline, rest = data.partition(b"\n")
    header = parse_header(first, path)
    if not newline:
        raise VaultFileError(f"vault {path!r} is truncated (no ciphertext after the header); "
                             "restore it from a backup", path=path)
    if header.recipient != bytes(key.public_key):
        raise VaultWrongKey(
            f"vault {path!r} is sealed to public key {encode_b64url(header.recipient)} but the "
            f"resolved key file holds {encode_b64url(bytes(key.public_key))}: point "
            "DUCTILE_VAULT_KEY_FILE or secrets.key_file at the right key (after an interrupted "
            "rotate-key, the new key is in <key file>.rotate-new)", path=path)
    try:
        ciphertext = base64.b64decode(b"".join(rest.split()), validate=True)
    except (binascii.Error, ValueError):
        raise VaultFileError(f"vault {path!r} is damaged: the ciphertext is not valid base64 "
                             "(truncated or edited); restore it from a backup", path=path) \
            from None
    if len(ciphertext) <= _SEAL_OVERHEAD:
        raise VaultFileError(f"vault {path!r} is truncated (ciphertext too short); restore it "
                             "from a backup", path=path)
    try:
        plaintext = SealedBox(key).decrypt(ciphertext)
    except CryptoError:
        raise VaultFileError(f"vault {path!r} failed authentication: it was truncated or "
                             "tampered with; restore it from a backup", path=path) from None
    return parse_plaintext(plaintext, path)


def parse_header(line: bytes, path: str) -> Header:
    """The first line: `ductile-vault v1 sealedbox-x25519 recipient=<key>`."""
    try:
        words = line.decode("ascii").strip().split(" ")
    except UnicodeDecodeError:
        words = []
    if len(words) != 4 or words[0] != MAGIC:
        raise VaultFileError(f"vault {path!r} is not a ductile vault file (its first line must "
                             f"start with {MAGIC!r}); create one with ductile vault init",
                             path=path)
    if words[1] != VERSION or words[2] != SCHEME:
        raise VaultFileError(f"vault {path!r} has format {words[1]} {words[2]}; this ductile "
                             f"reads {VERSION} {SCHEME} only", path=path)
    label, _, value = words[3].partition("=")
    try:
        recipient = decode_b64url(value) if label == "recipient" else b""
    except ValueError:
        recipient = b""
    if len(recipient) != 32:
        raise VaultFileError(f"vault {path!r} has a malformed header (recipient=<32-byte "
                             "base64url key> expected)", path=path)
    return Header(version=words[1], scheme=words[2], recipient=recipient)


def parse_plaintext(plaintext: bytes, path: str) -> VaultModel:
    """The decrypted YAML to a model; an authenticated but invalid document still fails."""
    try:
        doc = yaml.safe_load(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError, TypeError):
        raise VaultFileError(f"vault {path!r}: the decrypted content is not YAML", path=path) \
            from None
    try:
        return from_document(doc)
    except VaultPolicyError as exc:
        raise VaultFileError(f"vault {path!r}: invalid vault model: {exc.message}", path=path) \
            from None


def digest(data: bytes) -> str:
    """The fingerprint the owner compares before each write to spot an out-of-band change."""
    return hashlib.sha256(data).hexdigest()


def read_file(path: str) -> bytes:
    """The bytes of the vault file; VaultFileError when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(_MAX_FILE + 1)
    except OSError as exc:
        raise VaultFileError(f"cannot read vault {path!r}: {exc.strerror}", path=path) from None


def write_atomic(path: str, data: bytes) -> None:
    """Replace the vault file with `data` (mode 0600), atomically (see ductile/atomicfile.py)."""
    try:
        atomicfile.write_atomic(path, data, mode=0o600, prefix=".vault-")
    except OSError as exc:
        raise VaultFileError(f"cannot write vault {path!r}: {exc.strerror}; the previous "
                             "file is unchanged", path=path) from None
