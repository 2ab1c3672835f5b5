"""The checks behind `ductile system selfcheck` and `GET /system/selfcheck`.

Each check is a plain dict `{name, ok, severity, detail}`: severity `error` fails the check and
the report, `warning` passes with a finding, `info` only reports. The CLI and the API plane
gather their inputs differently (the CLI opens files itself, read-only; the API plane uses the
serving generation and its store reader) and share these functions, so both judge alike.

Nothing here writes: the database is only read (`PRAGMA integrity_check`, the schema version),
the seal is verified with `ductile/config/integrity.py` and never rewritten.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ductile.errors import StoreError

if TYPE_CHECKING:
    from ductile.config.schema import Config
    from ductile.store.health import DatabaseHealth

#: Free space under the state directory below which the disk check warns / fails.
DISK_WARN_BYTES = 100 * 1024 * 1024
DISK_FAIL_BYTES = 10 * 1024 * 1024

Check = dict[str, Any]


def check(name: str, ok: bool, detail: str, *, severity: str | None = None, **extra: Any) -> Check:
    return {"name": name, "ok": ok, "severity": severity or ("info" if ok else "error"),
            "detail": detail, **extra}


def report(checks: list[Check]) -> dict[str, Any]:
    """The whole report: it passes when no check failed."""
    return {"ok": all(c["ok"] for c in checks), "checks": checks}


def seal_check(cfg: Config, plugins: Mapping[str, Any], nonce: bytes | None,
               nonce_problem: str | None = None) -> Check:
    """Verify the `.checksums` seal when present (a missing seal is only reported)."""
    from ductile.config.integrity import collect_seal_facts, verify_integrity
    from ductile.config.seal import seal_path

    path = seal_path(cfg.config_dir)
    if not os.path.lexists(path):
        return check("seal", True, f"no .checksums seal at {path} (nothing to verify)",
                     path=path)
    facts = collect_seal_facts(cfg.config_dir, cfg.config_path, plugin_confs=cfg.plugins,
                               plugins=plugins, nonce=nonce, nonce_problem=nonce_problem)
    verdict = verify_integrity(facts)
    if verdict.errors:
        return check("seal", False, "; ".join(verdict.errors), path=path)
    if verdict.warnings:
        return check("seal", True, "; ".join(verdict.warnings), severity="warning", path=path)
    return check("seal", True, "every sealed file matches", path=path)


def database_findings(conn: sqlite3.Connection, path: str) -> Check:
    """`PRAGMA integrity_check` and the schema version over an open (read) SQLite connection."""
    from ductile.store.health import sqlite_health

    return health_check(sqlite_health(conn, path), path)


def health_check(health: DatabaseHealth, where: str) -> Check:
    """The `database` check of a backend's health finding (store/health.py); `where` is the
    file path or the DSN's description."""
    extra: dict[str, Any] = {"path": where}
    if health.ok and health.schema_version is not None:
        extra["schema_version"] = health.schema_version
    return check("database", health.ok, health.detail, **extra)


def database_check(path: str) -> Check:
    """Open the database read-only (the CLI beside a running daemon) and check it."""
    from ductile.store.db import open_readonly

    if not os.path.exists(path):
        return check("database", True, "database file does not exist yet (created on first "
                     "start)", severity="warning", path=path)
    conn = None
    try:
        conn = open_readonly(path)
        return database_findings(conn, path)
    except StoreError as exc:
        return check("database", False, str(exc), path=path)
    except sqlite3.Error as exc:
        return check("database", False, f"database {path}: {exc}", path=path)
    finally:
        if conn is not None:
            conn.close()


def plugin_checks(cfg: Config, plugins: Mapping[str, Any],
                  discovery_warnings: tuple[str, ...] = ()) -> list[Check]:
    """One check per enabled plugin: discovered, and its entrypoint an executable file. A
    plugin discovery skipped is explained by the discovery warnings that name its directory."""
    out = []
    for name, conf in sorted(cfg.plugins.items()):
        if not conf.enabled:
            continue
        plugin = plugins.get(name)
        if plugin is None:
            why = [w for w in discovery_warnings if f"{os.sep}{name}{os.sep}" in w]
            out.append(check(f"plugin:{name}", False,
                             "; ".join(["enabled but not discovered under plugin_roots", *why])))
            continue
        entry = plugin.entrypoint
        if not os.path.isfile(entry):
            out.append(check(f"plugin:{name}", False, f"entrypoint missing: {entry}", path=entry))
        elif not os.access(entry, os.X_OK):
            out.append(check(f"plugin:{name}", False, f"entrypoint is not executable: {entry}",
                             path=entry))
        else:
            out.append(check(f"plugin:{name}", True, "entrypoint is executable", path=entry))
    return out


def plugin_checks_from_errors(cfg: Config, plugins: Mapping[str, Any],
                              discovery_error: str | None,
                              discovery_warnings: tuple[str, ...] = ()) -> list[Check]:
    if discovery_error is not None:
        return [check("plugins", False, discovery_error)]
    return plugin_checks(cfg, plugins, discovery_warnings)


def disk_check(state_path: str) -> Check:
    """Free space on the filesystem holding state.path."""
    where = os.path.dirname(os.path.abspath(state_path))
    probe = where
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return check("disk", False, f"cannot stat {probe}: {exc.strerror or exc}", path=where)
    mib = free / (1024 * 1024)
    if free < DISK_FAIL_BYTES:
        return check("disk", False, f"{mib:.1f} MiB free under {probe} (fails below 10 MiB)",
                     path=where, free_bytes=free)
    if free < DISK_WARN_BYTES:
        return check("disk", True, f"{mib:.1f} MiB free under {probe} (warns below 100 MiB)",
                     severity="warning", path=where, free_bytes=free)
    return check("disk", True, f"{mib:.0f} MiB free under {probe}", path=where, free_bytes=free)
