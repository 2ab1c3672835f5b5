"""`ductile system selfcheck`: every check of `ductile/config/selfcheck.py`, gathered from the
files themselves. Read-only: no PID lock, the database opened `mode=ro`, nothing written."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, NoReturn

from ductile.config import selfcheck as sc

if TYPE_CHECKING:
    from ductile.config.schema import Config


def collect_selfcheck(config_path: str | None) -> dict[str, Any]:
    from ductile.boot.gates import BootFacts
    from ductile.boot.gather import gather_plugins, gather_vault_facts
    from ductile.config.load import parse_config, validate_config
    from ductile.config.resolve import resolve_config
    from ductile.errors import ConfigError, VaultError

    home = os.path.expanduser("~")
    checks: list[dict[str, Any]] = []
    try:
        path, source = resolve_config(config_path, os.environ, home)
        cfg = parse_config(path, source=source, environ=os.environ)
        validate_config(cfg)
    except ConfigError as exc:
        checks.append(sc.check("config", False, str(exc)))
        return sc.report(checks)
    checks.append(sc.check("config", True, f"loaded and valid ({cfg.config_path})",
                           path=cfg.config_path))

    facts = BootFacts()
    loaded, _warnings = gather_vault_facts(cfg, facts, os.environ, home)
    nonce, nonce_problem = None, None
    if facts.vault_error is not None:
        checks.append(sc.check("vault", False, facts.vault_error))
        nonce_problem = "the vault cannot be opened"
    elif facts.vault_status == "absent":
        checks.append(sc.check("vault", True, f"no vault at {facts.vault_path}",
                               path=facts.vault_path))
    elif facts.vault_status == "blind":
        checks.append(sc.check("vault", True, f"vault {facts.vault_path} present but no key "
                               "found: the gateway cannot open it", severity="warning",
                               path=facts.vault_path))
        nonce_problem = "the vault cannot be opened without its key"
    else:
        checks.append(sc.check("vault", True, f"opened ({len(facts.secrets)} gateway-visible "
                               "secret(s))", path=facts.vault_path))
        if loaded is not None and loaded.owner is not None:
            try:
                nonce = loaded.owner.nonce
            except VaultError as exc:
                nonce_problem = str(exc)

    discovery_warnings = gather_plugins(cfg, facts)
    checks.append(sc.seal_check(cfg, facts.plugins, nonce, nonce_problem))
    checks.append(_database_check(cfg))
    checks.extend(sc.plugin_checks_from_errors(cfg, facts.plugins,
                                               facts.discovery_error or facts.alias_error,
                                               discovery_warnings))
    checks.append(sc.disk_check(cfg.state_path))
    if cfg.api.enabled:
        checks.append(_listener_check("listener:api", cfg.api.listen))
    else:
        checks.append(sc.check("listener:api", True, "API disabled"))
    return sc.report(checks)


def _database_check(cfg: Config) -> dict[str, Any]:
    """SQLite: the file's integrity_check and schema. PostgreSQL: the shared database reached
    read-only with the configured DSN and vault password, and its schema; the pages' integrity
    is the server's business (the detail names the tools)."""
    if not cfg.state.shared:
        return sc.database_check(cfg.state_path)
    from ductile.cli.store import PG_INTEGRITY_TOOLS, open_reader
    from ductile.errors import StoreError
    from ductile.store.pg.db import describe_dsn

    label = describe_dsn(cfg.state.dsn)

    def refuse(message: str) -> NoReturn:
        raise StoreError(message)

    try:
        with open_reader(cfg, on_error=refuse) as store:
            found = sc.health_check(store.health(), label)
    except StoreError as exc:
        return sc.check("database", False, str(exc), path=label)
    if found["ok"]:
        found["detail"] += (f"; PostgreSQL checks its own pages (no integrity_check here): "
                            f"use {PG_INTEGRITY_TOOLS}")
    return found


def _listener_check(name: str, listen: str) -> dict[str, Any]:
    """Informational: whether something (a running gateway) accepts on the address."""
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    try:
        port = int(port_text)
    except ValueError:
        return sc.check(name, True, f"cannot parse {listen!r}", address=listen)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            pass
    except OSError:
        return sc.check(name, True, f"{listen} is not bound (no gateway serving)",
                        address=listen, bound=False)
    return sc.check(name, True, f"{listen} is bound (a gateway is serving)", address=listen,
                    bound=True)
