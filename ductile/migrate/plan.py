"""`ductile migrate from-go` as a plan: everything read and checked first, then written.

`prepare` reads the whole Go installation and refuses (MigrationRefused, naming the file) a
wrong age identity, a damaged or unknown state database, a config our loader refuses in a way
no mechanical rewrite fixes, or a target that already exists, all before a byte is written.
It converts the state into an in-memory database, so a row we cannot carry is found too.
`apply` then writes, each file whole and atomically:

1. our state database, built in a temp file beside its target;
2. our vault key (`vault.key`, kept when one exists) and our vault, sealed to it;
3. the state swapped in: when it replaces the Go database at the same path, that database is
   first copied (SQLite online backup, its WAL included) to `<state>.go-backup`;
4. each rewritten config file, the original first saved as `<file>.go-backup`.

The Go gateway must be stopped first: its database is read once, for the plan.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ductile import atomicfile
from ductile.errors import MigrationRefused, VaultKeyError
from ductile.migrate.agekey import decrypt_vault, read_identities
from ductile.migrate.goconfig import ConfigRewrite, plan_config
from ductile.migrate.gostate import (Copied, GoState, copy_state, create_target,
                                     inspect_go_state, open_go_state)
from ductile.migrate.govault import model_from_plaintext, with_extra_secrets
from ductile.store.jobs import utcnow_text
from ductile.store.migrations import SCHEMA_VERSION
from ductile.vault import fileformat
from ductile.vault.keys import KEY_FILENAME, keygen, read_key_file, resolve_key_source
from ductile.vault.model import VaultModel, genesis
from ductile.vault.owner import resolve_vault_path

GO_VAULT_FILENAME = "vault.age"
GO_AGE_KEY_FILENAME = "age.key"
GO_STATE_DEFAULT = "./data/state.db"
BACKUP_SUFFIX = ".go-backup"


@dataclass(frozen=True)
class Paths:
    config_dir: str
    config_file: str
    age_key: str
    go_vault: str
    go_state: str
    vault: str
    key: str
    key_exists: bool
    state: str


@dataclass
class MigrationPlan:
    paths: Paths
    config: ConfigRewrite
    vault_model: VaultModel | None = field(default=None, repr=False)
    go_state: GoState | None = None
    copied: Copied | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan, one action per line, for the operator to read before anything happens."""
        p = self.paths
        out = [f"Go installation: {p.config_file}"]
        if self.vault_model is not None:
            model = self.vault_model
            active = sum(1 for s in model.secrets.values() if s.active)
            revoked = len(model.secrets) - active
            out.append(f"vault: {p.go_vault} (age, opened with {p.age_key}) -> {p.vault}: "
                       f"{len(model.secrets)} secrets ({active} active, {revoked} revoked), "
                       f"{len(model.principals)} principals, admin token and vault nonce kept")
            out.append(f"vault key: {p.key} ({'kept' if p.key_exists else 'created, 0600'})")
            for name in sorted(self.config.secrets):
                out.append(f"vault: secret {name} added (a literal token moved out of the "
                           "config)")
        if self.go_state is not None and self.copied is not None:
            rows = ", ".join(f"{t} {n}" for t, n in self.copied.counts.items() if n)
            out.append(f"state: {p.go_state} -> {p.state} (schema version "
                       f"{SCHEMA_VERSION}): {rows or 'no rows'}")
            if self.copied.renamed["dead->cancelled"]:
                out.append(f"state: {self.copied.renamed['dead->cancelled']} job(s) the "
                           "scheduler cancelled (Go status dead) recorded as cancelled")
            if _same(p.go_state, p.state):
                out.append(f"state: the Go database is kept as {p.state}{BACKUP_SUFFIX}")
            for table, count in self.go_state.left_behind.items():
                out.append(f"state: {table}: {count} row(s) not imported (not kept by this "
                           "gateway)")
        for change in self.config.changes:
            out.append(f"config: {change}")
        for path in sorted(self.config.texts):
            out.append(f"config: {path} saved first as {path}{BACKUP_SUFFIX}")
        if not self.config.changes:
            out.append("config: unchanged (our loader accepts it as it is)")
        out.extend(self.notes)
        return out


def prepare(config_dir: str, *, age_key: str | None, state: str | None,
            environ: Mapping[str, str], home: str) -> MigrationPlan:
    """Read and check everything; MigrationRefused before anything is written."""
    config_dir = os.path.realpath(config_dir)
    config_file = os.path.join(config_dir, "config.yaml")
    if not os.path.isfile(config_file):
        raise MigrationRefused(f"no config.yaml in {config_dir!r}: --config-dir names the Go "
                               "gateway's config directory", path=config_file)
    raw = _raw_root(config_file)
    secrets = raw.get("secrets") if isinstance(raw.get("secrets"), dict) else {}
    go_vault = _under(config_dir, secrets.get("vault_file") or GO_VAULT_FILENAME)
    age_path = _age_key_path(config_dir, age_key, secrets.get("age_key_file"), environ, home)
    go_state = _go_state_path(config_dir, raw, state)

    model: VaultModel | None = None
    if os.path.exists(go_vault):
        if age_path is None:
            raise MigrationRefused(
                f"the Go vault {go_vault!r} needs its age identity: pass --age-key FILE (none "
                "at secrets.age_key_file, DUCTILE_AGE_KEY_FILE, <config dir>/age.key or "
                "~/.config/ductile/age.key)", path=go_vault)
        plaintext = decrypt_vault(go_vault, read_identities(age_path), age_path)
        model = model_from_plaintext(plaintext, go_vault)

    taken = tuple(model.secrets) if model is not None else ()
    rewrite = plan_config(config_file, vault_setting=str(secrets.get("vault_file") or ""),
                          taken_names=taken, environ=environ)
    if rewrite.secrets:
        base = model if model is not None else genesis(now=utcnow_text())[0]
        model = with_extra_secrets(base, rewrite.secrets, now=utcnow_text())

    vault = resolve_vault_path(config_dir, rewrite.vault_file)
    source = resolve_key_source(config_dir, rewrite.key_file, environ, home)
    key = source.path if source is not None else os.path.join(config_dir, KEY_FILENAME)
    paths = Paths(config_dir=config_dir, config_file=config_file, age_key=age_path or "",
                  go_vault=go_vault, go_state=go_state or "", vault=vault, key=key,
                  key_exists=source is not None, state=rewrite.state_path)
    plan = MigrationPlan(paths=paths, config=rewrite, vault_model=model)
    _refuse_existing_targets(plan)
    if model is not None and source is not None:
        try:
            read_key_file(source.path, origin=source.origin)  # a bad key is refused now
        except VaultKeyError as exc:
            raise MigrationRefused(exc.message, path=source.path) from None
    if model is None:
        plan.notes.append(f"vault: no Go vault at {go_vault}: none imported")
    elif not os.path.exists(go_vault):
        plan.notes.append("vault: no Go vault: a new one is created for the moved tokens; get "
                          "its admin token with ductile vault rotate-admin-token")
    if go_state is None:
        plan.notes.append("state: no Go state database found: no history imported")
    else:
        conn = open_go_state(go_state)
        try:
            plan.go_state = inspect_go_state(conn, go_state)
            target = sqlite3.connect(":memory:")
            try:
                create_target(target)
                plan.copied = copy_state(conn, target, go_state)
            finally:
                target.close()
        finally:
            conn.close()
    for warning in rewrite.warnings:
        plan.notes.append(f"config warning (left as is): {warning}")
    return plan


def apply(plan: MigrationPlan) -> list[str]:
    """Write what `plan` says; returns a line per file written."""
    p = plan.paths
    done: list[str] = []
    temp_state = _build_state(plan) if plan.go_state is not None else None
    try:
        if plan.vault_model is not None:
            key = read_key_file(p.key, origin="vault key") if p.key_exists else keygen(
                p.key, comment="created by ductile migrate from-go")
            if not p.key_exists:
                done.append(f"wrote {p.key} (mode 0600): back it up, it opens the vault")
            os.makedirs(os.path.dirname(p.vault), mode=0o700, exist_ok=True)
            fileformat.write_atomic(p.vault, fileformat.seal(plan.vault_model,
                                                             key.private.public_key))
            done.append(f"wrote {p.vault}")
        if temp_state is not None:
            if _same(p.go_state, p.state):
                _keep_go_database(p.go_state, p.state + BACKUP_SUFFIX)
                done.append(f"kept the Go database as {p.state}{BACKUP_SUFFIX}")
            os.replace(temp_state, p.state)
            temp_state = None
            atomicfile.fsync_directory(os.path.dirname(p.state))
            done.append(f"wrote {p.state}")
    except VaultKeyError as exc:
        raise MigrationRefused(exc.message, path=p.key) from None
    finally:
        if temp_state is not None:
            _unlink(temp_state)
    for path, text in sorted(plan.config.texts.items()):
        mode = os.stat(path).st_mode & 0o777
        atomicfile.write_atomic(path + BACKUP_SUFFIX, plan.config.originals[path].encode(),
                                mode=mode, prefix=".go-backup-")
        atomicfile.write_atomic(path, text.encode("utf-8"), mode=mode, prefix=".migrate-")
        done.append(f"rewrote {path} (the original is {path}{BACKUP_SUFFIX})")
    return done


# -- steps -----------------------------------------------------------------------------------


def _build_state(plan: MigrationPlan) -> str:
    """Our database, complete, in a temp file beside the target; the caller renames it."""
    p = plan.paths
    directory = os.path.dirname(p.state)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".state-migrate-", dir=directory)
    os.close(fd)
    try:
        source = open_go_state(p.go_state)
        target = sqlite3.connect(temp, isolation_level=None)
        try:
            create_target(target)
            target.execute("BEGIN IMMEDIATE")
            copy_state(source, target, p.go_state)
            target.execute("COMMIT")
        finally:
            target.close()
            source.close()
        os.chmod(temp, 0o600)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        _unlink(temp)
        raise
    return temp


def _keep_go_database(go_state: str, backup: str) -> None:
    """A consistent copy of the Go database (its WAL folded in), then its WAL files removed so
    they can never be replayed into the database that replaces it."""
    fd, temp = tempfile.mkstemp(prefix=".go-backup-", dir=os.path.dirname(backup))
    os.close(fd)
    try:
        source = open_go_state(go_state)
        copy = sqlite3.connect(temp)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        os.chmod(temp, 0o600)
        os.replace(temp, backup)
    except BaseException:
        _unlink(temp)
        raise
    for suffix in ("-wal", "-shm"):
        _unlink(go_state + suffix)


def _refuse_existing_targets(plan: MigrationPlan) -> None:
    p = plan.paths
    if plan.vault_model is not None and os.path.lexists(p.vault):
        raise MigrationRefused(f"our vault {p.vault!r} already exists: a migration never "
                               "replaces a vault (move it aside to migrate again)", path=p.vault)
    if p.go_state:
        if _same(p.go_state, p.state):
            if os.path.lexists(p.state + BACKUP_SUFFIX):
                raise MigrationRefused(f"{p.state + BACKUP_SUFFIX!r} already exists: move it "
                                       "aside to migrate again", path=p.state + BACKUP_SUFFIX)
        elif os.path.lexists(p.state):
            raise MigrationRefused(f"our state database {p.state!r} already exists: a "
                                   "migration never merges into one (move it aside)",
                                   path=p.state)
    for path in plan.config.texts:
        if os.path.lexists(path + BACKUP_SUFFIX):
            raise MigrationRefused(f"{path + BACKUP_SUFFIX!r} already exists: move it aside to "
                                   "migrate again", path=path + BACKUP_SUFFIX)


# -- paths -----------------------------------------------------------------------------------


def _raw_root(config_file: str) -> dict[str, Any]:
    """The root file as plain YAML, for the Go-only keys our loader does not keep."""
    try:
        with open(config_file, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _age_key_path(config_dir: str, explicit: str | None, setting: Any,
                  environ: Mapping[str, str], home: str) -> str | None:
    """The original's ladder: --age-key, $DUCTILE_AGE_KEY_FILE, secrets.age_key_file, then the
    default files; an explicit path that does not exist is refused."""
    for origin, value in (("--age-key", explicit),
                          ("DUCTILE_AGE_KEY_FILE", environ.get("DUCTILE_AGE_KEY_FILE")),
                          ("secrets.age_key_file", setting)):
        if value:
            path = _under(config_dir, str(value))
            if not os.path.exists(path):
                raise MigrationRefused(f"{origin}: age identity file {path!r} does not exist",
                                       path=path)
            return path
    defaults = [os.path.join(config_dir, GO_AGE_KEY_FILENAME)]
    if home:
        defaults.append(os.path.join(home, ".config", "ductile", GO_AGE_KEY_FILENAME))
    return next((path for path in defaults if os.path.exists(path)), None)


def _go_state_path(config_dir: str, raw: dict[str, Any], explicit: str | None) -> str | None:
    if explicit:
        path = os.path.abspath(os.path.expanduser(explicit))
        if not os.path.isfile(path):
            raise MigrationRefused(f"--state: the Go state database {path!r} does not exist",
                                   path=path)
        return path
    configured = ""
    for section in ("state", "database"):
        block = raw.get(section)
        if isinstance(block, dict) and isinstance(block.get("path"), str) and block["path"]:
            configured = block["path"]
            break
    path = _under(config_dir, configured or GO_STATE_DEFAULT)
    return path if os.path.isfile(path) else None


def _under(config_dir: str, value: str) -> str:
    return os.path.abspath(os.path.join(config_dir, os.path.expanduser(value)))


def _same(a: str, b: str) -> bool:
    return bool(a) and os.path.realpath(a) == os.path.realpath(b)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
