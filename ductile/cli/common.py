"""Helpers shared by the CLI nouns: config resolution, JSON output, error exits."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    import ssl

    from ductile.config.schema import Config

config_option = click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file or directory (else $DUCTILE_CONFIG_DIR, ~/.config/ductile, /etc/ductile).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def resolve(config_path: str | None) -> tuple[str, str]:
    from ductile.config.resolve import resolve_config
    from ductile.errors import ConfigError

    try:
        return resolve_config(config_path, os.environ, os.path.expanduser("~"))
    except ConfigError as exc:
        fail(str(exc))


def load(config_path: str | None, *, validate: bool = True) -> Config:
    """Resolve and load the config the way `system start` does, or exit 1 with the reason."""
    from ductile.config.load import parse_config, validate_config
    from ductile.errors import ConfigError

    path, source = resolve(config_path)
    try:
        cfg = parse_config(path, source=source, environ=os.environ)
        if validate:
            validate_config(cfg)
    except ConfigError as exc:
        fail(f"Failed to load config: {exc}")
    return cfg


def api_base(cfg: Config | None, api_url: str | None) -> str:
    """--api-url, else the configured API listener: https:// when `api.tls` is set."""
    if api_url:
        return api_url.rstrip("/")
    listen = cfg.api.listen if cfg is not None else "127.0.0.1:8080"
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    scheme = "https" if cfg is not None and cfg.api.tls is not None else "http"
    return f"{scheme}://{host}:{port}"


def api_verify(cfg: Config | None, api_url: str | None) -> bool | ssl.SSLContext:
    """httpx's `verify=`: how to trust the gateway's certificate. Talking to the configured
    listener (no --api-url) with `api.tls` set: exactly the certificate in `api.tls.cert_file`
    (the gateway's own, so no CA or host name is needed; ductile.planes.tls). Otherwise the
    system trust store. Raises TlsMaterialError when that certificate cannot be read."""
    if api_url or cfg is None or cfg.api.tls is None:
        return True
    from ductile.planes.tls import pinned_client_context

    return pinned_client_context(cfg.api.tls.cert_file, key="api.tls")


def _certificate_hint(exc: BaseException, cfg: Config | None, api_url: str | None) -> str:
    """What to do when the failure is the gateway's certificate failing verification."""
    import ssl

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return ""
    if api_url or cfg is None or cfg.api.tls is None:  # verified against the system store
        return ("the gateway's certificate is not trusted by this system; use the configured "
                "listener (--config, without --api-url) to trust exactly api.tls.cert_file")
    return ("the gateway serves another certificate than api.tls.cert_file; after renewing "
            "the files, run ductile system reload")


def api_key(cfg: Config | None, explicit: str | None) -> str | None:
    """--api-key, else $DUCTILE_API_KEY, else the first configured token resolved from the vault
    (when this user can read its key), else the `api-token` file `config init` wrote."""
    if explicit:
        return explicit
    if os.environ.get("DUCTILE_API_KEY"):
        return os.environ["DUCTILE_API_KEY"]
    if cfg is None:
        return None
    if cfg.api.tokens:
        value = _token_from_vault(cfg)
        if value:
            return value
    try:
        with open(os.path.join(cfg.config_dir, "api-token"), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _token_from_vault(cfg: Config) -> str | None:
    from ductile.errors import VaultError
    from ductile.vault.owner import load_vault

    try:
        loaded = load_vault(cfg.config_dir, cfg.secrets.vault_file, cfg.secrets.key_file,
                            os.environ, os.path.expanduser("~"))
    except (VaultError, OSError):
        return None
    if loaded.owner is None:
        return None
    return loaded.owner.resolved_secrets().values.get(cfg.api.tokens[0].secret_ref) or None


def json_object_option(text: str | None, flag: str) -> dict[str, Any] | None:
    """The JSON object given to `flag` (`-` reads stdin), or a usage failure naming the flag."""
    import json

    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        fail(f"{flag} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        fail(f"{flag} must be a JSON object, such as '{{\"message\": \"hi\"}}'")
    return value


@dataclass(frozen=True)
class GatewayTarget:
    """Where the running gateway answers and how to talk to it: the base URL, the token and
    how to trust its certificate. `cfg` is the loaded config (None when --api-url and a key
    from the command line or the environment made it unnecessary)."""

    base: str
    token: str
    verify: bool | ssl.SSLContext
    cfg: Config | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MISSING_KEY = ("API key required: use --api-key (or --token), $DUCTILE_API_KEY, or --config "
               "with a readable vault or api-token file")


def gateway_target(config_path: str | None, api_url: str | None, api_key_opt: str | None,
                   *, missing: str = MISSING_KEY) -> GatewayTarget:
    """The running gateway as every verb that talks to it finds it: --api-url, else the
    configured listener (https when `api.tls` is set); the key from --api-key,
    $DUCTILE_API_KEY, the vault or the api-token file. Fails, saying what to do, when there is
    no key or the configured certificate cannot be read."""
    from ductile.errors import TlsMaterialError

    # With an address and a key from the command line or environment, no config is needed.
    needs_config = not (api_url and (api_key_opt or os.environ.get("DUCTILE_API_KEY")))
    cfg = load(config_path, validate=False) if needs_config else None
    token = api_key(cfg, api_key_opt)
    if not token:
        fail(missing)
    try:
        verify = api_verify(cfg, api_url)
    except TlsMaterialError as exc:
        fail(f"cannot trust the gateway's certificate: {exc}")
    return GatewayTarget(api_base(cfg, api_url), token, verify, cfg)


def post_to_gateway(path: str, body: Any, *, api_url: str | None, api_key_opt: str | None,
                    config_path: str | None, wait: bool,
                    params: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST `body` to the running gateway; (status, JSON answer), or a failure that says what
    to check. `wait` lifts the client timeout (the server caps a sync wait itself)."""
    import httpx

    target = gateway_target(config_path, api_url, api_key_opt)
    url = f"{target.base}{path}"
    try:
        resp = httpx.post(url, json=body, params=params, verify=target.verify,
                          headers=target.headers, timeout=None if wait else 15.0)
    except httpx.HTTPError as exc:
        hint = (_certificate_hint(exc, target.cfg, api_url)
                or "is it running (ductile system status)?")
        fail(f"cannot reach the gateway at {url}: {exc}; {hint}")
    try:
        data = resp.json()
    except ValueError:
        data = {"error": resp.text}
    if resp.status_code >= 400:
        fail(f"API error ({resp.status_code}): "
             f"{data.get('error', data) if isinstance(data, dict) else data}")
    return resp.status_code, data
