"""`ductile vault <verb>` and `ductile system vault-audit`.

Three kinds of verb:

- local, key-touching, daemon stopped: `init`, `rotate-admin-token`, `rotate-key` (the last two
  take the PID lock to prove the daemon is not running), and `set --vault --key`;
- local read: `get` (audited; never prints the admin token);
- keyless API clients of the running daemon: `set`, `register-principal`, `roll`, `revoke`,
  `revoke-principal`, `purge-principal`, `roll-principal`. They find the daemon from the config
  (`--config`, else the usual search), as every verb that talks to a running gateway does: the
  management socket when the gateway serves one (management-only posture), else the API on
  `api.listen`; and the admin token from $DUCTILE_VAULT_TOKEN, the vault itself (when this user
  can read its key) or the `admin-token` file `config init` wrote. `--api-url` (http(s) or
  `unix:///path/to/vault-admin.sock`) and `--token` override either.

Values go to stdout only where the verb exists to print one (`init` and `rotate-admin-token`
print the admin token, `get` the value); every notice goes to stderr.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ductile.cli.common import config_option, emit_json, fail, json_option, load

if TYPE_CHECKING:
    from ductile.config.schema import Config
    from ductile.store.audit import AuditEvent
    from ductile.vault.owner import VaultOwner

TOKEN_ENV = "DUCTILE_VAULT_TOKEN"
CLI_ACTOR = "cli"

api_url_option = click.option("--api-url", default=None, metavar="URL",
                              help="The daemon: http(s)://host:port or unix:///path/to.sock "
                                   "(else found from the config).")
token_option = click.option("--token", default=None, metavar="TOKEN",
                            help=f"Vault admin token (else ${TOKEN_ENV}, the vault, or the "
                                 "admin-token file beside the config).")
name_option = click.option("--name", required=True, help="Secret or principal name.")


@click.group()
def vault() -> None:
    """Manage the vault: secrets, principals and the admin token (see docs/vault.md)."""


# -- local verbs -----------------------------------------------------------------------------


@vault.command("init")
@click.option("--vault", "vault_path", default=None, metavar="PATH", help="Vault file to create.")
@click.option("--key", "key_path", default=None, metavar="PATH",
              help="Key file (created 0600 when missing).")
def init(vault_path: str | None, key_path: str | None) -> None:
    """Create a vault; print its admin token once, alone on stdout."""
    from ductile.errors import VaultError
    from ductile.vault.keys import keygen, read_key_file
    from ductile.vault.owner import VaultOwner

    if not vault_path or not key_path:
        fail("vault init: --vault and --key are required")
    if os.path.lexists(vault_path):
        # Refused before the key is touched, so a refused init creates nothing.
        fail(f"vault: refusing to init — {vault_path!r} already exists")
    try:
        created = not os.path.lexists(key_path)
        key = keygen(key_path) if created else read_key_file(key_path, origin="--key")
        owner, admin_token = VaultOwner.create(vault_path, key)
    except VaultError as exc:
        fail(exc.message)
    if created:
        click.echo(f"Created vault key {key.path} (mode 0600; public key {key.public_text}). "
                   "Back it up: without it the vault cannot be opened.", err=True)
    click.echo(f"Created vault {owner.path}. The admin token follows on stdout, shown once: "
               "store it (it authenticates POST /vault/*).", err=True)
    click.echo(admin_token)


@vault.command("get")
@config_option
@name_option
def get(config_path: str | None, name: str) -> None:
    """Print one secret's value (audited). The admin token is never printed."""
    from ductile.errors import VaultError

    cfg = load(config_path, validate=False)
    owner = _open_owner(cfg)
    try:
        value = owner.readable_value(name)
    except VaultError as exc:
        _audit(cfg, _event("read", name, "denied", exc.message))
        fail(exc.message)
    _audit(cfg, _event("read", name, "ok"))
    click.echo(value)


@vault.command("rotate-admin-token")
@config_option
def rotate_admin_token(config_path: str | None) -> None:
    """A new admin token (daemon stopped), printed once on stdout; the old one stops working."""
    from ductile.errors import VaultError

    cfg = load(config_path, validate=False)
    with _daemon_stopped(cfg):
        owner = _open_owner(cfg)
        try:
            token = owner.rotate_admin_token()
        except VaultError as exc:
            _audit(cfg, _event("rotate-admin-token", "core-admin-token", "error", exc.message))
            fail(exc.message)
        _audit(cfg, _event("rotate-admin-token", "core-admin-token", "ok"))
    click.echo("Rotated the vault admin token; the old one no longer authenticates. The new "
               "one follows on stdout, shown once.", err=True)
    click.echo(token)


@vault.command("rotate-key")
@config_option
def rotate_key(config_path: str | None) -> None:
    """Re-seal the vault to a new key and replace the key file (daemon stopped)."""
    from ductile.errors import VaultError

    cfg = load(config_path, validate=False)
    with _daemon_stopped(cfg):
        owner = _open_owner(cfg)
        try:
            key = owner.rotate_key()
        except VaultError as exc:
            _audit(cfg, _event("rotate-key", "", "error", exc.message))
            fail(exc.message)
        _audit(cfg, _event("rotate-key", "", "ok", f"public key {key.public_text}"))
    click.echo(f"Re-sealed {owner.path} to a new key written to {key.path}. BACK IT UP NOW: "
               "the old key no longer opens the vault.", err=True)
    click.echo(key.public_text)


# -- set: through the daemon, or offline ----------------------------------------------------


@vault.command("set")
@config_option
@api_url_option
@token_option
@name_option
@click.option("--pattern", type=click.Choice(["manual", "auto"]), default=None,
              help="manual (value from stdin) or auto (minted by roll); default manual.")
@click.option("--principal", "principals", default=None, metavar="A,B",
              help="Grant to these principals (replaces); \"\" clears; omitted leaves them.")
@click.option("--vault", "vault_path", default=None, metavar="PATH",
              help="Offline mode (daemon stopped): the vault file.")
@click.option("--key", "key_path", default=None, metavar="PATH",
              help="Offline mode: the key file.")
def set_secret(config_path: str | None, api_url: str | None, token: str | None, name: str,
               pattern: str | None, principals: str | None, vault_path: str | None,
               key_path: str | None) -> None:
    """Create a secret or change its grants; the value is read from stdin."""
    offline = vault_path is not None or key_path is not None
    if (api_url or config_path) and offline:
        fail("vault set: choose one mode: --config or --api-url (through the daemon) or --vault "
             "with --key (offline, daemon stopped), not both")
    if offline and not (vault_path and key_path):
        fail("vault set offline needs BOTH --vault and --key (or use --api-url to go through "
             "the daemon)")
    value = _read_stdin_value(always=True)
    grants = _split_principals(principals)
    if offline:
        assert vault_path is not None and key_path is not None
        _offline_set(vault_path, key_path, name, value, grants, pattern)
        return
    body: dict[str, Any] = {"name": name, "value": value}
    if grants is not None:
        body["authorized_principals"] = list(grants)
    if pattern:
        body["pattern"] = pattern
    _api_post(_find_daemon(config_path, api_url, token), "/vault/secret", body)
    click.echo(f'Set secret "{name}" via the daemon.', err=True)


def _offline_set(vault_path: str, key_path: str, name: str, value: str,
                 grants: tuple[str, ...] | None, pattern: str | None) -> None:
    from ductile.errors import VaultError
    from ductile.vault.keys import read_key_file
    from ductile.vault.owner import VaultOwner

    try:
        owner = VaultOwner.open(vault_path, read_key_file(key_path, origin="--key"))
        owner.set_secret(name, value, principals=grants, pattern=pattern)
    except VaultError as exc:
        fail(exc.message)
    click.echo(f'Set secret "{name}" offline in {owner.path} (a running daemon would refuse its '
               "next vault write until it is reloaded or restarted).", err=True)


# -- the other API verbs ---------------------------------------------------------------------


@vault.command("register-principal")
@config_option
@api_url_option
@token_option
@name_option
@click.option("--kind", type=click.Choice(["plugin", "consumer", "gateway"]), default="plugin",
              show_default=True)
def register_principal(config_path: str | None, api_url: str | None, token: str | None,
                       name: str, kind: str) -> None:
    """Register a principal that secrets can be granted to."""
    _api_post(_find_daemon(config_path, api_url, token), "/vault/principal",
              {"name": name, "kind": kind})
    click.echo(f'Registered principal "{name}" ({kind}) via the daemon.', err=True)


@vault.command("roll")
@config_option
@api_url_option
@token_option
@name_option
def roll(config_path: str | None, api_url: str | None, token: str | None, name: str) -> None:
    """Roll a secret: auto ones are minted; a manual one takes the new value from piped stdin."""
    body: dict[str, Any] = {"name": name}
    value = _read_stdin_value(always=False)
    if value:
        body["value"] = value
    _api_post(_find_daemon(config_path, api_url, token), "/vault/secret/roll", body)
    click.echo(f'Rolled secret "{name}" via the daemon (run ductile system reload for API, '
               "webhook and relay secrets to take effect).", err=True)


def _simple_verb(verb: str, path: str, notice: str, help_text: str) -> None:
    @vault.command(verb, help=help_text)
    @config_option
    @api_url_option
    @token_option
    @name_option
    def command(config_path: str | None, api_url: str | None, token: str | None,
                name: str) -> None:
        _api_post(_find_daemon(config_path, api_url, token), path, {"name": name})
        click.echo(notice.format(name=name), err=True)


_simple_verb("revoke", "/vault/secret/revoke", 'Revoked secret "{name}" via the daemon.',
             "Revoke a secret for good (its value is cleared).")
_simple_verb("revoke-principal", "/vault/principal/revoke",
             'Revoked principal "{name}" via the daemon.',
             "Revoke a principal: its plugin spawns get no secrets (fail closed).")
_simple_verb("purge-principal", "/vault/principal/purge",
             'Purged principal "{name}" via the daemon.',
             "Delete a principal and strip it from every grant.")


@vault.command("roll-principal")
@config_option
@api_url_option
@token_option
@name_option
@json_option
def roll_principal(config_path: str | None, api_url: str | None, token: str | None, name: str,
                   as_json: bool) -> None:
    """Roll every auto secret granted to a principal (manual ones are skipped)."""
    answer = _api_post(_find_daemon(config_path, api_url, token), "/vault/principal/roll",
                       {"name": name})
    if as_json:
        emit_json(answer)
        return
    rolled = ", ".join(answer.get("rolled", [])) or "none"
    skipped = ", ".join(answer.get("skipped", [])) or "none"
    click.echo(f'Rolled the secrets of principal "{name}" via the daemon: rolled {rolled}; '
               f"skipped (manual) {skipped}.", err=True)


# -- system vault-audit ----------------------------------------------------------------------


@click.command("vault-audit")
@config_option
@click.option("--principal", default=None, help="Only rows naming this actor or target.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@json_option
def vault_audit(config_path: str | None, principal: str | None, limit: int,
                as_json: bool) -> None:
    """List the append-only vault audit (names and outcomes, never values), newest first."""
    from ductile.cli.store import open_reader
    from ductile.errors import StoreError

    with open_reader(load(config_path, validate=False)) as store:
        try:
            rows = store.audit(principal=principal, limit=limit)
        except StoreError as exc:
            fail(str(exc))
    if as_json:
        emit_json({"events": [row.as_dict() for row in rows], "count": len(rows)})
        return
    click.echo(f"{'ID':<6} {'CREATED':<28} {'ACTOR':<18} {'OP':<20} {'TARGET':<24} OUTCOME")
    for row in rows:
        click.echo(f"{row.id:<6} {row.created_at:<28} {row.actor:<18} {row.op:<20} "
                   f"{row.target:<24} {row.outcome}" + (f"  ({row.detail})" if row.detail else ""))


# -- helpers ---------------------------------------------------------------------------------


def _open_owner(cfg: Config) -> VaultOwner:
    """The config's vault with the key of the ladder, or exit 1 saying which piece is missing."""
    from ductile.errors import VaultError
    from ductile.vault.owner import load_vault

    try:
        loaded = load_vault(cfg.config_dir, cfg.secrets.vault_file, cfg.secrets.key_file,
                            os.environ, os.path.expanduser("~"))
    except VaultError as exc:
        fail(exc.message)
    if loaded.status == "absent":
        fail(f"no vault at {loaded.vault_path}; create one with ductile vault init "
             "(or ductile config init)")
    if loaded.owner is None:
        fail(f"vault {loaded.vault_path} exists but no key was found: set "
             "DUCTILE_VAULT_KEY_FILE or secrets.key_file, or put vault.key in the config dir")
    return loaded.owner


@contextmanager
def _daemon_stopped(cfg: Config) -> Iterator[None]:
    """Hold the PID lock for the duration: the daemon is the vault's only writer while up."""
    from ductile.boot.pidlock import acquire, lock_path_for
    from ductile.errors import LockError

    try:
        lock = acquire(lock_path_for(cfg.state_path))
    except LockError as exc:
        fail(f"the daemon appears to be running (could not take the lock): {exc}; stop it "
             "first (the service manager owns it), then retry")
    try:
        yield
    finally:
        lock.release()


def _event(op: str, target: str, outcome: str, detail: str = "") -> AuditEvent:
    from ductile.store.audit import AuditEvent

    return AuditEvent(actor=CLI_ACTOR, op=op, target=target, outcome=outcome, detail=detail)


def _audit(cfg: Config, event: AuditEvent) -> None:
    from ductile.errors import StoreError
    from ductile.store.audit import append_offline

    if cfg.state.shared:
        _audit_shared(cfg, event)
        return
    try:
        written = append_offline(cfg.state_path, event)
    except StoreError as exc:
        click.echo(f"Warning: the vault audit row was not written: {exc}", err=True)
        return
    if not written:
        click.echo(f"Note: no database at {cfg.state_path} yet, so this vault operation is not "
                   "in the audit trail.", err=True)


def _audit_shared(cfg: Config, event: AuditEvent) -> None:
    """The audit row in the shared PostgreSQL store; the vault operation stands either way,
    so a database that cannot take it is a warning, not a failure."""
    from ductile.cli.store import write_shared
    from ductile.errors import StoreError
    from ductile.store.jobs import utcnow_text
    from ductile.store.pg.backend import POSTGRESQL_BACKEND

    insert = POSTGRESQL_BACKEND.audit.insert_event

    def refuse(message: str) -> NoReturn:
        raise StoreError(message)

    try:
        write_shared(cfg, lambda conn: insert(conn, event, utcnow_text()), on_error=refuse)
    except StoreError as exc:
        click.echo(f"Warning: the vault audit row was not written: {exc}", err=True)


def _read_stdin_value(*, always: bool) -> str:
    """The value from stdin with trailing CR/LF trimmed (`always`: even from a terminal)."""
    stream = click.get_text_stream("stdin")
    if not always and stream.isatty():
        return ""
    return stream.read().rstrip("\r\n")


def _split_principals(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    return tuple(p.strip() for p in raw.split(",") if p.strip())


@dataclass(frozen=True)
class _Daemon:
    """Where the vault writes go, and the admin token they carry (excluded from repr)."""

    url: str
    token: str = field(repr=False)


def _find_daemon(config_path: str | None, api_url: str | None,
                 token: str | None) -> _Daemon:
    """The running daemon and the admin token, from the flags or else from the config (see the
    module docstring); exit 1 naming what is missing and how to give it."""
    from ductile.config.init import ADMIN_TOKEN_FILE

    admin = token or os.environ.get(TOKEN_ENV, "")
    cfg = None if (api_url and admin) else _config_for_daemon(config_path, api_url)
    url = api_url or _daemon_url(cfg)
    if not admin and cfg is not None:
        admin = _admin_token(cfg)
    if not admin:
        where = f" or an {ADMIN_TOKEN_FILE} file in {cfg.config_dir}" if cfg is not None else ""
        fail(f"vault admin token required: --token, ${TOKEN_ENV}, the vault itself (readable "
             f"with its key){where}; ductile config init writes {ADMIN_TOKEN_FILE}")
    return _Daemon(url, admin)


def _config_for_daemon(config_path: str | None, api_url: str | None) -> Config | None:
    """The config the daemon runs with. An explicit --config must load; a searched one may be
    missing when --api-url already says where the daemon is."""
    from ductile.config.load import parse_config
    from ductile.config.resolve import resolve_config
    from ductile.errors import ConfigError

    if config_path is not None:
        return load(config_path, validate=False)
    try:
        path, source = resolve_config(None, os.environ, os.path.expanduser("~"))
        return parse_config(path, source=source, environ=os.environ)
    except ConfigError as exc:
        if api_url:
            return None
        fail(f"no gateway to talk to: pass --config PATH (the daemon's address and the admin "
             f"token are read from its config) or --api-url URL; offline `vault set` takes "
             f"--vault and --key ({exc})")


def _daemon_url(cfg: Config | None) -> str:
    """The management socket while the gateway serves one, else the API on api.listen."""
    import stat

    from ductile.cli.common import api_base
    from ductile.planes.api.management import management_socket_path

    assert cfg is not None  # _config_for_daemon returns None only when --api-url is given
    sock = management_socket_path(cfg.api.management_socket, cfg.state_path)
    try:
        if stat.S_ISSOCK(os.stat(sock).st_mode):
            return f"unix://{sock}"
    except OSError:
        pass
    if not cfg.api.enabled:
        fail(f"{cfg.config_path}: api.enabled is false, so no running gateway serves /vault/*; "
             "with the gateway stopped, use vault set --vault FILE --key FILE")
    if not cfg.api.tokens:
        fail(f"no management socket at {sock}: the config has no API token, so the gateway "
             "serves /vault/* only there; is it running (ductile system status)?")
    return api_base(cfg, None)


def _admin_token(cfg: Config) -> str:
    """The admin token from the vault (when this user can read its key), else from the
    admin-token file beside the config; "" when neither has it."""
    from ductile.config.init import ADMIN_TOKEN_FILE
    from ductile.errors import VaultError
    from ductile.vault.model import ADMIN_TOKEN
    from ductile.vault.owner import load_vault

    try:
        loaded = load_vault(cfg.config_dir, cfg.secrets.vault_file, cfg.secrets.key_file,
                            os.environ, os.path.expanduser("~"))
    except (VaultError, OSError):
        loaded = None
    if loaded is not None and loaded.owner is not None:
        secret = loaded.owner.model.secrets.get(ADMIN_TOKEN)
        if secret is not None and secret.active and secret.value:
            return secret.value
    try:
        with open(os.path.join(cfg.config_dir, ADMIN_TOKEN_FILE), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _api_post(daemon: _Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a `/vault/*` body to the daemon with the admin token; exit 1 on any failure."""
    import httpx

    base, transport = vault_transport(daemon.url)
    try:
        with httpx.Client(base_url=base, transport=transport, timeout=30.0) as client:
            response = client.post(path, json=body,
                                   headers={"Authorization": f"Bearer {daemon.token}"})
    except httpx.HTTPError as exc:
        fail(f"cannot reach the daemon at {daemon.url}: {exc}; is it running (ductile system "
             "status)?")
    if response.status_code != 200:
        _fail_response(path, response.status_code, response.text)
    try:
        answer = response.json()
    except ValueError:
        fail(f"{path}: the daemon answered 200 with a body that is not JSON")
    return answer if isinstance(answer, dict) else {}


def vault_transport(api_url: str) -> tuple[str, Any]:
    """(base URL, httpx transport or None) for http(s)://… or unix:///path.sock."""
    import httpx

    if api_url.startswith("unix://"):
        socket_path = api_url[len("unix://"):]
        if not socket_path:
            fail("--api-url unix:// needs a socket path, e.g. "
                 "unix:///var/lib/ductile/vault-admin.sock")
        return "http://localhost", httpx.HTTPTransport(uds=socket_path)
    if api_url.startswith(("http://", "https://")):
        return api_url.rstrip("/"), None
    fail(f"--api-url {api_url!r} must start with http://, https:// or unix://")


def _fail_response(path: str, status: int, text: str) -> NoReturn:
    try:
        message = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        message = text
    fail(f"{path} failed ({status}): {str(message).strip()}")
