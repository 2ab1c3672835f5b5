"""`ductile config init|check`."""

from __future__ import annotations

import os
import sys

import click

from ductile.cli.common import config_option, emit_json, fail, json_option


@click.group()
def config() -> None:
    """Create and validate configuration."""


@config.command()
@click.option("--dir", "--config-dir", "directory", default=None, metavar="DIR",
              help="Directory to create (default ~/.config/ductile).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(directory: str | None, force: bool) -> None:
    """Write a working config directory: echo plugin enabled, API on 127.0.0.1:8080, and the
    credential ladder (vault key, vault, a minted API token referenced by secret_ref)."""
    from importlib import resources

    from ductile.config.init import init_config_dir
    from ductile.errors import ConfigError

    target = os.path.abspath(directory or os.path.expanduser("~/.config/ductile"))
    plugin_root = str(resources.files("ductile") / "bundled" / "plugins")
    try:
        result = init_config_dir(target, force=force, plugin_root=plugin_root)
    except ConfigError as exc:
        fail(str(exc))
    click.echo(f"Initialized: {target}")
    for path in result.written:
        click.echo(f"Created: {path}")
    if not result.vault_created:
        click.echo("Kept the existing vault and key (--force never replaces a vault).")
    click.echo(f"Start it:    ductile system start --config {target}")
    click.echo(f"API token:   in {result.api_token_file} (mode 0600; the vault holds it as "
               "secret api-token)")
    click.echo(f"Admin token: in {result.admin_token_file} (mode 0600; for ductile vault "
               "commands and /vault/*; move it somewhere safe)")


@config.command()
@config_option
@json_option
@click.option("--strict", is_flag=True, help="Exit 2 when there are warnings.")
def check(config_path: str | None, as_json: bool, strict: bool) -> None:
    """Load and validate the config and discover its plugins, as boot would (no side effects).

    Exit 0 valid, 1 invalid, 2 valid with warnings under --strict.
    """
    from ductile.cli.checks import check_config

    report = check_config(config_path)
    if as_json:
        emit_json(report)
    else:
        for error in report["errors"]:
            click.echo(f"ERROR [{error['category']}] {error['message']}")
        for warning in report["warnings"]:
            click.echo(f"WARN [{warning['category']}] {warning['message']}")
        if report["valid"]:
            suffix = f" ({len(report['warnings'])} warning(s))" if report["warnings"] else ""
            click.echo(f"Configuration valid{suffix}: {report.get('path')}")
        else:
            click.echo("Configuration invalid.")
    if not report["valid"]:
        sys.exit(1)
    if strict and report["warnings"]:
        sys.exit(2)
