"""`ductile config init|check|lock|backup|restore`."""

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
    from ductile.privsep.posture import read_capability

    target = os.path.abspath(directory or os.path.expanduser("~/.config/ductile"))
    plugin_root = str(resources.files("ductile") / "bundled" / "plugins")
    privileged = read_capability().can_switch
    try:
        result = init_config_dir(target, force=force, plugin_root=plugin_root,
                                 unconfined=privileged)
    except ConfigError as exc:
        fail(str(exc))
    click.echo(f"Initialized: {target}")
    for path in result.written:
        click.echo(f"Created: {path}")
    if result.vault_created:
        _audit_init(target)
    else:
        click.echo("Kept the existing vault and key (--force never replaces a vault).")
    if privileged:
        click.echo("Note:        this account can change uid, so service.unconfined: true was "
                   "written (plugins run as the gateway, warned at every boot); define "
                   "accounts: to confine them (docs/operator.md)")
    click.echo(f"Start it:    ductile system start --config {target}")
    click.echo(f"API token:   in {result.api_token_file} (mode 0600; the vault holds it as "
               "secret api-token)")
    click.echo(f"Admin token: in {result.admin_token_file} (mode 0600; for ductile vault "
               "commands and /vault/*; move it somewhere safe)")


def _audit_init(target: str) -> None:
    """Record the vault writes `config init` made (the genesis with its admin token, the
    api-token secret set and minted) in the state database of the new config, creating it: every
    vault write is audited, and this one happens before any gateway. Names only, never values."""
    from ductile.config.load import parse_config
    from ductile.errors import ConfigError, StoreError
    from ductile.store.audit import AuditEvent, append_creating_database
    from ductile.vault.bootstrap import API_TOKEN_SECRET
    from ductile.vault.model import ADMIN_TOKEN

    why = "ductile config init"
    events = (AuditEvent("cli", "init", ADMIN_TOKEN, "ok", f"{why}: new vault and admin token"),
              AuditEvent("cli", "set", API_TOKEN_SECRET, "ok", f"{why}: pattern auto"),
              AuditEvent("cli", "roll", API_TOKEN_SECRET, "ok", f"{why}: minted"))
    try:
        state_path = parse_config(os.path.join(target, "config.yaml"), environ=os.environ).state_path
        append_creating_database(state_path, events)
    except (ConfigError, StoreError) as exc:
        click.echo(f"Warning: the vault audit rows of this init were not written: {exc}",
                   err=True)
        return
    click.echo(f"Created: {state_path} (the state database; it holds the vault audit of this "
               "init)")


@config.command()
@config_option
@click.option("--format", "output_format", type=click.Choice(["human", "json"]),
              default="human", show_default=True, help="Output format.")
@json_option
@click.option("--fail-on-warnings", is_flag=True, help="Exit 2 when valid but with warnings.")
@click.option("--strict", is_flag=True, help="Deprecated alias of --fail-on-warnings.")
def check(config_path: str | None, output_format: str, as_json: bool, fail_on_warnings: bool,
          strict: bool) -> None:
    """Run boot's side-effect-free gates and the doctor over the config (no side effects).

    Exit 0 valid, 1 invalid, 2 valid with warnings under --fail-on-warnings.
    """
    from ductile.cli.checks import check_config, human_report

    if strict:
        click.echo("Note: --strict is deprecated; use --fail-on-warnings", err=True)
    report = check_config(config_path)
    if as_json or output_format == "json":
        emit_json(report)
    else:
        for line in human_report(report):
            click.echo(line)
    if not report["valid"]:
        sys.exit(1)
    if (fail_on_warnings or strict) and report["warnings"]:
        sys.exit(2)


@config.command("lock")
@config_option
@click.option("--config-dir", "config_dir", default=None, metavar="DIR",
              help="Seal this directory only (exclusive with --config).")
@click.option("--dry-run", is_flag=True, help="Show what would be sealed; write nothing.")
@click.option("-v", "--verbose", is_flag=True, help="List every file and plugin record.")
def lock(config_path: str | None, config_dir: str | None, dry_run: bool, verbose: bool) -> None:
    """Seal the config files in <config dir>/.checksums (mode 0600), keeping the plugin
    attestations of plugins still configured (see `ductile plugin lock`)."""
    from ductile.cli.locking import config_lock

    if config_path and config_dir:
        raise click.UsageError("use only one of --config or --config-dir")
    config_lock(config_path, config_dir, dry_run=dry_run, verbose=verbose)


@config.command("backup")
@config_option
@click.option("--out", "out", required=True, metavar="FILE",
              help="The .tar.gz to write (mode 0600).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backup(config_path: str | None, out: str, force: bool, as_json: bool) -> None:
    """Archive the config directory (config files, .checksums, the vault file; never the vault
    key). Same format as `system backup`, without the database."""
    from ductile.cli.system import run_backup

    run_backup(config_path, out, force=force, as_json=as_json, include_db=False)


@config.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--dir", "directory", required=True, metavar="DIR",
              help="The config directory to restore into.")
@click.option("--force", is_flag=True, help="Overwrite files already in DIR.")
def restore(archive: str, directory: str, force: bool) -> None:
    """Restore the config files of a backup archive into DIR. Every file is checked against the
    archive's manifest and, when present, its .checksums seal before anything is written."""
    from ductile.config.backup import restore_config
    from ductile.errors import BackupError

    try:
        result = restore_config(archive, directory, force=force)
    except BackupError as exc:
        fail(str(exc))
    for rel in result.restored:
        click.echo(f"Restored: {os.path.join(result.directory, rel)}")
    for name in result.skipped:
        click.echo(f"Not restored: {name} (config restore writes config files only)")
    if result.seal_verified:
        click.echo("Seal: every sealed file matches the archived .checksums")
        if result.sealed_dir and os.path.abspath(result.sealed_dir) != result.directory:
            click.echo(f"The seal names {result.sealed_dir}: review the files, then run "
                       f"ductile config lock --config-dir {result.directory}")
    click.echo("The vault key is not in backups: put it in place before starting the gateway.")
