"""The integrity seal: `<config dir>/.checksums`, its format, its files and its hashes.

`ductile config lock` records a hash of every sealed config file (and `ductile plugin lock` a
keyed fingerprint of each attested plugin) so a later boot or reload can tell that a file
changed without a lock. This module owns the file: which config files are sealed
(`discover_sealed_files`), the YAML layout (`Checksums`, `parse_checksums`), the atomic 0600
write, the hashes, and the load-time check of scope files (`check_scope_file`). Judging a seal
against the files is `config/integrity.py`'s job.

The layout is the Go ductile's version 2, with one deliberate difference: hashes are
blake2b-256 (`hashlib.blake2b(digest_size=32)`), not BLAKE3, so a Go seal does not verify
here (re-run `ductile config lock`). Plugin hashes are keyed with the vault's 32-byte nonce, so
only a holder of the vault can mint a fingerprint that verifies: editing `.checksums` by hand
cannot bless a replaced plugin.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import yaml

from ductile.atomicfile import write_atomic
from ductile.errors import ConfigError, IntegrityError
from ductile.yamldoc import YamlProblem, load_yaml

SEAL_NAME = ".checksums"
SEAL_VERSION = 2
ROOT_FILE = "config.yaml"
# Sealed when present, by fixed name in the config root only (other includes are not sealed).
OPTIONAL_FILES = ("webhooks.yaml", "routes.yaml", "relay-instances.yaml", "relay-ingress.yaml",
                  "tokens.yaml")
SCOPE_FILES = ("webhooks.yaml", "tokens.yaml")  # verified at every load when a seal is beside them
SCOPES_DIR = "scopes"
HIGH_SECURITY = "high-security"
OPERATIONAL = "operational"
NONCE_BYTES = 32
PREFIX_LEN = 12  # how much of a hash messages show
MAX_SEAL_BYTES = 16 * 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_TOP_KEYS = frozenset({"version", "generated_at", "hashes", "plugin_fingerprints"})
_PATH_FIELDS = ("manifest_path", "manifest_resolved_path", "entrypoint_path",
                "entrypoint_resolved_path")
_HASH_FIELDS = ("manifest_hash", "entrypoint_hash")
_PLUGIN_KEYS = frozenset({"name", "enabled", "uses", *_PATH_FIELDS, *_HASH_FIELDS})


@dataclass(frozen=True)
class SealedFile:
    """One config file the seal covers: absolute path and tier. A high-security file that
    drifts always refuses; an operational one only warns unless `fail_on_drift`."""

    path: str
    tier: str

    @property
    def high_security(self) -> bool:
        return self.tier == HIGH_SECURITY


@dataclass(frozen=True)
class PluginFingerprint:
    """What `plugin lock` attested about one configured plugin (an alias records its own name,
    `uses`, and its base plugin's files). Hashes are keyed with the vault nonce."""

    name: str
    enabled: bool
    uses: str
    manifest_path: str
    manifest_resolved_path: str
    manifest_hash: str
    entrypoint_path: str
    entrypoint_resolved_path: str
    entrypoint_hash: str

    def as_document(self) -> dict[str, Any]:
        """The YAML mapping, in the reference's field order (`uses` omitted when empty)."""
        doc: dict[str, Any] = {"name": self.name, "enabled": self.enabled}
        if self.uses:
            doc["uses"] = self.uses
        for key in (*_PATH_FIELDS[:2], "manifest_hash", *_PATH_FIELDS[2:], "entrypoint_hash"):
            doc[key] = getattr(self, key)
        return doc


@dataclass(frozen=True)
class Checksums:
    """A parsed `.checksums` file (always version 2 once parsed)."""

    generated_at: str
    hashes: Mapping[str, str]
    plugin_fingerprints: tuple[PluginFingerprint, ...] = ()
    version: int = SEAL_VERSION

    def plugin(self, name: str) -> PluginFingerprint | None:
        return next((fp for fp in self.plugin_fingerprints if fp.name == name), None)

    def to_bytes(self) -> bytes:
        """The file's bytes: plain YAML, hashes by path, fingerprints sorted by name."""
        doc: dict[str, Any] = {"version": self.version, "generated_at": self.generated_at,
                               "hashes": dict(sorted(self.hashes.items()))}
        if self.plugin_fingerprints:
            doc["plugin_fingerprints"] = [fp.as_document() for fp in
                                          sorted(self.plugin_fingerprints, key=lambda f: f.name)]
        # ASCII only: a non-ASCII character is escaped, so no line-break-like code point
        # (U+0085, U+2028) can be rewritten by the YAML reader on the way back in.
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False,
                              allow_unicode=False).encode("ascii")


@dataclass(frozen=True)
class ScopeFileHash:
    """A scope file (`webhooks.yaml`, `tokens.yaml`) of a directory without its own
    config.yaml, for `config lock` of a scope-only directory."""

    name: str
    path: str
    digest: str | None  # None: not present (optional)


# --------------------------------------------------------------------------- paths and files


def seal_path(config_dir: str) -> str:
    return os.path.join(os.path.abspath(config_dir), SEAL_NAME)


def short(digest: str) -> str:
    """The 12-character prefix messages show."""
    return digest[:PREFIX_LEN]


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def discover_sealed_files(config_dir: str, root_file: str | None = None) -> tuple[SealedFile, ...]:
    """The files a seal of `config_dir` covers, in a fixed order.

    The root config file is mandatory (`config.yaml`, or the file `--config` named); then the
    optional fixed names in the root (`OPTIONAL_FILES`) and `scopes/*.json`, sorted. Other
    includes (plugins.yaml, api.yaml, include directories) are not sealed, as in Go ductile.
    Raises ConfigError when the root file is missing.
    """
    directory = os.path.abspath(config_dir)
    root = os.path.abspath(root_file) if root_file else os.path.join(directory, ROOT_FILE)
    if not os.path.isfile(root):
        raise ConfigError(f"{os.path.basename(root)} not found in {directory}: the seal needs the "
                          "root config file", path=root)
    files = [SealedFile(root, OPERATIONAL)]
    for name in OPTIONAL_FILES:
        path = os.path.join(directory, name)
        if path != root and os.path.isfile(path):
            tier = HIGH_SECURITY if name in SCOPE_FILES else OPERATIONAL
            files.append(SealedFile(path, tier))
    scopes = os.path.join(directory, SCOPES_DIR)
    if os.path.isdir(scopes):
        for name in sorted(os.listdir(scopes)):
            path = os.path.join(scopes, name)
            if name.endswith(".json") and os.path.isfile(path):
                files.append(SealedFile(path, HIGH_SECURITY))
    return tuple(files)


def digest_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def file_digest(path: str) -> str:
    """blake2b-256 of the file's bytes, lowercase hex. Raises OSError."""
    return _hash_file(path, hashlib.blake2b(digest_size=32))


def keyed_file_digest(path: str, nonce: bytes) -> str:
    """blake2b-256 of the file's bytes keyed with the vault nonce ("keyed or nothing": a nonce
    that is not exactly 32 bytes raises ValueError instead of hashing unkeyed). Raises OSError."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"attestation requires the {NONCE_BYTES}-byte vault fingerprint nonce "
                         f"(got {len(nonce)} bytes); ensure the vault is initialized and loaded")
    return _hash_file(path, hashlib.blake2b(digest_size=32, key=nonce))


def _hash_file(path: str, digest: Any) -> str:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return str(digest.hexdigest())


def fingerprint_plugin(name: str, *, enabled: bool, uses: str, directory: str, entrypoint: str,
                       nonce: bytes) -> PluginFingerprint:
    """Fingerprint a discovered plugin as it is on disk now: its manifest and entrypoint, each
    resolved through symlinks and hashed keyed with the vault nonce. Raises OSError (a file is
    gone or unreadable) or ValueError (no usable nonce)."""
    manifest = os.path.join(directory, "manifest.yaml")
    manifest_real = os.path.realpath(manifest, strict=True)
    entry_real = os.path.realpath(entrypoint, strict=True)
    return PluginFingerprint(
        name=name, enabled=enabled, uses=uses,
        manifest_path=manifest, manifest_resolved_path=manifest_real,
        manifest_hash=keyed_file_digest(manifest_real, nonce),
        entrypoint_path=entrypoint, entrypoint_resolved_path=entry_real,
        entrypoint_hash=keyed_file_digest(entry_real, nonce),
    )


# --------------------------------------------------------------------------- reading


def read_checksums(path: str) -> Checksums:
    """Read and parse the seal at `path`. IntegrityError says whether it is missing
    (`kind == "missing"`), unreadable, writable by others, unparsable or of another version, so
    a caller never mistakes an unusable seal for an absent one."""
    try:
        # Non-blocking so a FIFO planted at the path is refused, not waited on.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise IntegrityError(f"checksums file not found: {path} (run 'ductile config lock')",
                             path=path, kind="missing") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(f"failed to read checksums {path}: it is a symlink; the seal "
                                 "must be a regular file in the config directory (remove the "
                                 "link and run 'ductile config lock')", path=path,
                                 kind="unreadable") from exc
        raise _unreadable(path, exc) from exc
    try:
        info = os.fstat(fd)
        mode = info.st_mode
        if not stat.S_ISREG(mode):
            raise IntegrityError(f"failed to read checksums {path}: not a regular file",
                                 path=path, kind="unreadable")
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise IntegrityError(
                f"checksums file {path} is writable by group or others (mode "
                f"{stat.S_IMODE(mode):04o}): anyone who can rewrite it can bless any change; "
                f"chmod 600 {path} and run 'ductile config lock' to re-seal what you reviewed",
                path=path, kind="permissions")
        if info.st_uid not in (os.geteuid(), 0):
            raise IntegrityError(
                f"checksums file {path} is owned by uid {info.st_uid}, neither this user "
                f"({os.geteuid()}) nor root: another account could rewrite it to bless any "
                f"change; chown it to the account that runs ductile and run 'ductile config "
                "lock'", path=path, kind="permissions")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_SEAL_BYTES + 1)
        if len(data) > MAX_SEAL_BYTES:
            raise IntegrityError(f"failed to read checksums {path}: larger than "
                                 f"{MAX_SEAL_BYTES} bytes, which no seal is", path=path,
                                 kind="unreadable")
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    finally:
        os.close(fd)
    return parse_checksums(data, path)


def _unreadable(path: str, exc: OSError) -> IntegrityError:
    return IntegrityError(f"failed to read checksums {path}: {exc.strerror or exc}",
                          path=path, kind="unreadable")


def parse_checksums(data: bytes, path: str) -> Checksums:
    """The seal in `data` (the bytes of the file at `path`, named in every message), or
    IntegrityError: `unparsable` for anything that is not a well-formed version-2 seal,
    `version` for another version. Never raises anything else."""
    try:
        doc = load_yaml(data)
    except YamlProblem as exc:
        where = path if exc.line is None else f"{path}:{exc.line}:{exc.column}"
        raise IntegrityError(f"failed to parse checksums {where}: {exc.problem}", path=path,
                             kind="unparsable") from None
    if not isinstance(doc, dict):
        raise _unparsable(path, "expected a map with version, generated_at and hashes")
    unknown = sorted(str(key) for key in doc if key not in _TOP_KEYS)
    if unknown:
        raise _unparsable(path, f"unknown key {unknown[0]!r}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _unparsable(path, "version must be an integer")
    if version != SEAL_VERSION:
        raise IntegrityError(
            f"unsupported checksums version in {path}: {version} (this ductile reads version "
            f"{SEAL_VERSION}; run 'ductile config lock' to rewrite it)", path=path, kind="version")
    generated = doc.get("generated_at")
    if generated is not None and not isinstance(generated, str):
        raise _unparsable(path, "generated_at must be a timestamp string")
    return Checksums(generated_at=generated or "", hashes=_hashes(path, doc.get("hashes")),
                     plugin_fingerprints=_fingerprints(path, doc.get("plugin_fingerprints")))


def _unparsable(path: str, problem: str) -> IntegrityError:
    return IntegrityError(f"failed to parse checksums {path}: {problem}", path=path,
                          kind="unparsable")


def _hashes(path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _unparsable(path, "hashes must be a map of absolute path to hash")
    hashes: dict[str, str] = {}
    for key, digest in value.items():
        if not isinstance(key, str) or not os.path.isabs(key):
            raise _unparsable(path, f"hashes: {key!r} is not an absolute path")
        if not isinstance(digest, str) or not _HEX.fullmatch(digest):
            raise _unparsable(path, f"hashes[{key!r}]: expected 64 lowercase hex characters")
        hashes[key] = digest
    return hashes


def _fingerprints(path: str, value: Any) -> tuple[PluginFingerprint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _unparsable(path, "plugin_fingerprints must be a list")
    found: dict[str, PluginFingerprint] = {}
    for index, entry in enumerate(value):
        fp = _fingerprint(path, f"plugin_fingerprints[{index}]", entry)
        if fp.name in found:
            raise _unparsable(path, f"plugin_fingerprints[{index}]: plugin {fp.name!r} is "
                                    "listed twice")
        found[fp.name] = fp
    return tuple(found[name] for name in sorted(found))  # one order, as written


def _fingerprint(path: str, where: str, entry: Any) -> PluginFingerprint:
    if not isinstance(entry, dict):
        raise _unparsable(path, f"{where}: expected a map")
    unknown = sorted(str(key) for key in entry if key not in _PLUGIN_KEYS)
    if unknown:
        raise _unparsable(path, f"{where}: unknown key {unknown[0]!r}")
    name, enabled, uses = entry.get("name"), entry.get("enabled"), entry.get("uses", "")
    if not isinstance(name, str) or not name:
        raise _unparsable(path, f"{where}.name: expected a plugin name")
    if not isinstance(enabled, bool):
        raise _unparsable(path, f"{where}.enabled: expected true or false")
    if uses is None:
        uses = ""
    if not isinstance(uses, str):
        raise _unparsable(path, f"{where}.uses: expected a plugin name")
    values: dict[str, str] = {}
    for key in _PATH_FIELDS:
        item = entry.get(key)
        if not isinstance(item, str) or not os.path.isabs(item):
            raise _unparsable(path, f"{where}.{key}: expected an absolute path")
        values[key] = item
    for key in _HASH_FIELDS:
        item = entry.get(key)
        if not isinstance(item, str) or not _HEX.fullmatch(item):
            raise _unparsable(path, f"{where}.{key}: expected 64 lowercase hex characters")
        values[key] = item
    return PluginFingerprint(name=name, enabled=enabled, uses=uses, **values)


# --------------------------------------------------------------------------- writing


def write_checksums(path: str, checksums: Checksums) -> None:
    """Replace the seal atomically (mode 0600; see ductile/atomicfile.py): a crash leaves the old
    seal or the new one, never half of either."""
    write_atomic(path, checksums.to_bytes(), mode=0o600, prefix=f"{SEAL_NAME}.tmp-")


# --------------------------------------------------------------------------- scope files


def scope_files(directory: str) -> tuple[ScopeFileHash, ...]:
    """The scope files of a directory sealed without a config.yaml (an include directory
    holding webhooks.yaml), hashed; an absent one has no digest. Raises OSError."""
    found = []
    for name in SCOPE_FILES:
        path = os.path.join(os.path.abspath(directory), name)
        found.append(ScopeFileHash(name, path, file_digest(path) if os.path.isfile(path)
                                   else None))
    return tuple(found)


def check_scope_file(path: str, data: bytes, *, display: str) -> None:
    """An included scope file (`webhooks.yaml`, `tokens.yaml`) with a seal beside it must match
    its sealed hash, at every load and whatever the admission switches say: these files decide
    who may trigger what. `data` is the bytes the loader read (so what is checked is what is
    used). Raises ConfigError naming the file and the lock command."""
    name = os.path.basename(path)
    if name not in SCOPE_FILES:
        return
    directory = os.path.dirname(os.path.abspath(path))
    seal = os.path.join(directory, SEAL_NAME)
    if not os.path.lexists(seal):
        return
    rerun = f"run: ductile config lock --config-dir {directory}"
    try:
        checksums = read_checksums(seal)
    except IntegrityError as exc:
        raise ConfigError(f"{display}: checksum verification failed in {directory}: {exc}; "
                          f"scope files ({', '.join(SCOPE_FILES)}) are verified at every load; "
                          f"{rerun}", path=path) from exc
    sealed = checksums.hashes.get(os.path.abspath(path))
    if sealed is None:
        raise ConfigError(f"{display}: scope file {name} has no hash in {seal}; {rerun}",
                          path=path)
    actual = digest_bytes(data)
    if sealed != actual:
        raise ConfigError(
            f"{display}: scope file verification failed: hash mismatch for {path} (sealed "
            f"{short(sealed)}, now {short(actual)}): it changed after the last lock, which "
            f"suggests tampering; if you edited it on purpose, {rerun}", path=path)
