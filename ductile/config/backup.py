"""Backup archives of a config directory (and the state database), and their restore.

An archive is one `.tar.gz` (mode 0600) holding:

    MANIFEST.json           kind, created_at, ductile version, schema version, config_dir,
                            every file with its blake2b-256 and size, what was left out and why
    config/<relative path>  every file of `Config.source_files`, the sealed files
                            (`scopes/*.json`, ...), `.checksums` if present and the vault file;
                            never the vault key (back it up apart from the vault)
    db/<state file name>    (system backups) a consistent copy of the live database made with
                            SQLite's online backup API from a read-only connection

Restore extracts into a temporary directory beside the target, verifies every file against the
manifest and, when the archive holds one, the `.checksums` seal; only then are the files moved
into place. Any refusal (an unsafe member, a mismatch, an existing file without --force)
leaves the target untouched.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ductile import __version__
from ductile.config.seal import SEAL_NAME, digest_bytes, discover_sealed_files, file_digest
from ductile.errors import BackupError, ConfigError, IntegrityError, RestoreRefused, StoreError

if TYPE_CHECKING:
    from ductile.config.schema import Config

MANIFEST = "MANIFEST.json"
CONFIG_PREFIX = "config/"
DB_PREFIX = "db/"
FORMAT_VERSION = 1


@dataclass
class BackupResult:
    path: str
    files: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    schema_version: int | None = None
    size: int = 0


@dataclass
class RestoreResult:
    directory: str
    restored: list[str] = field(default_factory=list)
    seal_verified: bool = False
    skipped: list[str] = field(default_factory=list)  # archive members not restored (the db)
    sealed_dir: str | None = None  # the directory the seal was written for


# --------------------------------------------------------------------------- what goes in


def config_files(cfg: Config, environ: Mapping[str, str], home: str
                 ) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """(absolute path, archive-relative path) of every config file to back up, and what was
    left out with the reason. The vault key is never included."""
    from ductile.vault.keys import KEY_FILENAME, resolve_key_source
    from ductile.vault.owner import resolve_vault_path

    base = os.path.abspath(cfg.config_dir)
    key = resolve_key_source(cfg.config_dir, cfg.secrets.key_file, environ, home)
    key_paths = {os.path.realpath(key.path)} if key is not None else set()
    candidates = [os.path.abspath(f.path) for f in cfg.source_files]
    try:
        candidates += [f.path for f in discover_sealed_files(cfg.config_dir, cfg.config_path)]
    except ConfigError:
        pass
    seal = os.path.join(base, SEAL_NAME)
    if os.path.isfile(seal):
        candidates.append(seal)
    vault = resolve_vault_path(cfg.config_dir, cfg.secrets.vault_file)
    if os.path.isfile(vault):
        candidates.append(vault)
    chosen: list[tuple[str, str]] = []
    excluded: list[dict[str, str]] = []
    seen: set[str] = set()
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        if os.path.realpath(path) in key_paths or os.path.basename(path) == KEY_FILENAME:
            excluded.append({"path": path, "reason": "the vault key is never archived"})
            continue
        rel = os.path.relpath(path, base)
        if rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
            excluded.append({"path": path, "reason": "outside the config directory"})
            continue
        chosen.append((path, rel.replace(os.sep, "/")))
    return chosen, excluded


# --------------------------------------------------------------------------- writing


def snapshot_database(state_path: str, dest: str) -> int:
    """Copy the live database to `dest` with the online backup API from a read-only source
    connection (consistent while the gateway writes); returns its schema version. The copy is
    switched to rollback-journal mode so it is one self-contained file."""
    from ductile.store.db import open_readonly
    from ductile.store.migrations import stored_version

    src = open_readonly(state_path)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")
            rows = [r[0] for r in out.execute("PRAGMA integrity_check").fetchall()]
            if rows != ["ok"]:
                raise BackupError(f"the copy of {state_path} fails integrity_check: "
                                  f"{'; '.join(map(str, rows[:3]))}")
            return stored_version(out)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot copy the database {state_path}: {exc}") from exc
        finally:
            out.close()
    finally:
        src.close()


def write_backup(cfg: Config, out: str, *, include_db: bool, force: bool,
                 environ: Mapping[str, str], home: str) -> BackupResult:
    """Write the archive to `out` (0600); refuses an existing file unless `force`, and a
    system backup (`include_db`) of a PostgreSQL store, which is not a file."""
    if include_db and cfg.state.shared:
        raise BackupError(
            "state.backend is postgresql: the database is not a file this command can copy; "
            "back it up with PostgreSQL's own tools (pg_dump for the one database, "
            "pg_basebackup with WAL archiving for point-in-time recovery, or the managed "
            "service's snapshots), and archive the config and vault with: ductile config "
            "backup --out FILE")
    out = os.path.abspath(out)
    if os.path.lexists(out) and not force:
        raise BackupError(f"{out} already exists (use --force to overwrite)")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise BackupError(f"directory {parent} does not exist")
    files, excluded = config_files(cfg, environ, home)
    result = BackupResult(out, excluded=excluded)
    with tempfile.TemporaryDirectory(prefix=".ductile-backup-", dir=parent) as work:
        members: list[tuple[str, str]] = [(path, CONFIG_PREFIX + rel) for path, rel in files]
        if include_db:
            copy = os.path.join(work, os.path.basename(cfg.state_path) or "state.db")
            try:
                result.schema_version = snapshot_database(cfg.state_path, copy)
            except StoreError as exc:
                raise BackupError(f"cannot back up the database: {exc}") from exc
            members.append((copy, DB_PREFIX + os.path.basename(copy)))
        for path, name in members:
            try:
                result.files.append({"path": name, "blake2b": file_digest(path),
                                     "size": os.path.getsize(path)})
            except OSError as exc:
                raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from exc
        manifest = {
            "format": FORMAT_VERSION,
            "kind": "system" if include_db else "config",
            "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "ductile_version": __version__,
            "schema_version": result.schema_version,
            "config_dir": os.path.abspath(cfg.config_dir),
            "files": result.files,
            "excluded": excluded,
        }
        tmp_archive = os.path.join(work, "archive.tar.gz")
        fd = os.open(tmp_archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
            for path, name in members:
                with open(path, "rb") as handle:
                    info = tarfile.TarInfo(name)
                    info.size = os.fstat(handle.fileno()).st_size
                    info.mode, info.mtime = 0o600, int(time.time())
                    tar.addfile(info, handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp_archive, 0o600)
        if force:
            os.replace(tmp_archive, out)
        else:
            try:
                os.link(tmp_archive, out)  # never replaces a file created meanwhile
            except FileExistsError:
                raise BackupError(f"{out} already exists (use --force to overwrite)") from None
    result.size = os.path.getsize(out)
    return result


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------- restore


def safe_member_name(member: tarfile.TarInfo) -> str:
    """The member's normalised relative name, or RestoreRefused for anything unsafe."""
    name = member.name
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise RestoreRefused(f"archive member {name!r} has an absolute path; nothing was written")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RestoreRefused(f"archive member {name!r} escapes the target with '..'; nothing "
                             "was written")
    if not (member.isfile() or member.isdir()):
        raise RestoreRefused(f"archive member {name!r} is not a regular file (links and devices "
                             "are refused); nothing was written")
    return "/".join(parts)


def restore_config(archive: str, target: str, *, force: bool) -> RestoreResult:
    """Restore the config files of `archive` into `target` (see the module docstring)."""
    target = os.path.abspath(target)
    result = RestoreResult(target)
    try:
        tar = tarfile.open(archive, mode="r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"cannot read archive {archive}: {exc}") from exc
    with tar:
        members = {}
        try:
            for member in tar.getmembers():
                members[safe_member_name(member)] = member
        except tarfile.TarError as exc:
            raise BackupError(f"cannot read archive {archive}: {exc}") from exc
        if MANIFEST not in members:
            raise RestoreRefused(f"{archive} has no {MANIFEST}: not a ductile backup; nothing "
                                 "was written")
        manifest = _read_manifest(tar, members[MANIFEST], archive)
        listed = {f["path"]: f for f in manifest.get("files", []) if isinstance(f, dict)}
        wanted = {name: m for name, m in members.items()
                  if name.startswith(CONFIG_PREFIX) and m.isfile()}
        result.skipped = sorted(n for n, m in members.items()
                                if m.isfile() and n != MANIFEST and n not in wanted)
        if not wanted:
            raise RestoreRefused(f"{archive} holds no config files; nothing was written")
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".ductile-restore-", dir=parent)
        try:
            staged: dict[str, str] = {}
            for name, member in sorted(wanted.items()):
                rel = name[len(CONFIG_PREFIX):]
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                entry = listed.get(name)
                if entry is None:
                    raise RestoreRefused(f"{rel}: not listed in {MANIFEST}; nothing was written")
                if entry.get("blake2b") != digest_bytes(data):
                    raise RestoreRefused(f"{rel}: does not match its hash in {MANIFEST} (the "
                                         "archive was altered or damaged); nothing was written")
                path = os.path.join(staging, *rel.split("/"))
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                staged[rel] = path
            for name in listed:
                if name.startswith(CONFIG_PREFIX) and name[len(CONFIG_PREFIX):] not in staged:
                    raise RestoreRefused(f"{name[len(CONFIG_PREFIX):]}: listed in {MANIFEST} but "
                                         "missing from the archive; nothing was written")
            if SEAL_NAME in staged:
                result.sealed_dir = str(manifest.get("config_dir") or "")
                _verify_against_seal(staged, result.sealed_dir)
                result.seal_verified = True
            existing = sorted(rel for rel in staged
                              if os.path.lexists(os.path.join(target, *rel.split("/"))))
            if existing and not force:
                raise RestoreRefused(f"{target} already holds {', '.join(existing)} (use --force "
                                     "to overwrite); nothing was written")
            os.makedirs(target, mode=0o700, exist_ok=True)
            for rel, path in sorted(staged.items()):
                dest = os.path.join(target, *rel.split("/"))
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                os.replace(path, dest)
                result.restored.append(rel)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return result


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: str) -> dict[str, Any]:
    handle = tar.extractfile(member)
    try:
        doc = json.loads(handle.read() if handle is not None else b"")
    except ValueError as exc:
        raise RestoreRefused(f"{archive}: {MANIFEST} is not JSON ({exc}); nothing was "
                             "written") from exc
    if not isinstance(doc, dict):
        raise RestoreRefused(f"{archive}: {MANIFEST} is not an object; nothing was written")
    return doc


def _verify_against_seal(staged: Mapping[str, str], sealed_dir: str) -> None:
    """Every staged file the seal covers must match it (the seal names files by their path in
    the directory it was written for, `sealed_dir`)."""
    from ductile.config.seal import read_checksums

    try:
        seal = read_checksums(staged[SEAL_NAME])
    except IntegrityError as exc:
        raise RestoreRefused(f"{SEAL_NAME}: {exc}; nothing was written") from exc
    matched = 0
    for sealed_path, digest in seal.hashes.items():
        rel = os.path.relpath(sealed_path, sealed_dir).replace(os.sep, "/") if sealed_dir else ""
        if not sealed_dir or rel.startswith("../") or rel == "..":
            continue
        staged_path = staged.get(rel)
        if staged_path is None:
            continue
        matched += 1
        if file_digest(staged_path) != digest:
            raise RestoreRefused(f"{rel}: does not match the {SEAL_NAME} seal in the archive "
                                 "(changed after it was sealed); nothing was written")
    if matched == 0:
        raise RestoreRefused(f"the {SEAL_NAME} seal in the archive covers none of its files "
                             f"(written for {sealed_dir or 'an unknown directory'}); nothing "
                             "was written")
