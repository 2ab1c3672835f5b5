"""Helpers shared by the CLI nouns: config resolution, JSON output, error exits."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
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
    if api_url:
        return api_url.rstrip("/")
    listen = cfg.api.listen if cfg is not None else "127.0.0.1:8080"
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def api_key(cfg: Config | None, explicit: str | None) -> str | None:
    """--api-key, else $DUCTILE_API_KEY, else the first configured token."""
    if explicit:
        return explicit
    if os.environ.get("DUCTILE_API_KEY"):
        return os.environ["DUCTILE_API_KEY"]
    if cfg is not None and cfg.api.tokens:
        return cfg.api.tokens[0].token
    return None
