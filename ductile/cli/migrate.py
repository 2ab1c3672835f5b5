"""`ductile migrate from-go`: move a Go ductile installation over (docs/migrate.md)."""

from __future__ import annotations

import os

import click

from ductile.cli.common import fail


@click.group()
def migrate() -> None:
    """Move an installation of another gateway over to this one."""


@migrate.command("from-go")
@click.option("--config-dir", "config_dir", required=True, metavar="DIR",
              help="The Go gateway's config directory (its config.yaml, vault.age, data/).")
@click.option("--age-key", "age_key", metavar="FILE",
              help="The age identity that opens the Go vault (else DUCTILE_AGE_KEY_FILE, "
                   "secrets.age_key_file, DIR/age.key, ~/.config/ductile/age.key).")
@click.option("--state", "state", metavar="PATH",
              help="The Go state database (else state.path of the Go config, "
                   "default DIR/data/state.db).")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
def from_go(config_dir: str, age_key: str | None, state: str | None, dry_run: bool) -> None:
    """Import a Go installation's age vault and SQLite state; rewrite only what our loader
    refuses in its config (each original kept as <file>.go-backup). Stop the Go gateway first."""
    from ductile.errors import MigrationRefused, StoreError, VaultError
    from ductile.migrate.plan import apply, prepare

    try:
        plan = prepare(config_dir, age_key=age_key, state=state, environ=os.environ,
                       home=os.path.expanduser("~"))
    except (MigrationRefused, VaultError, StoreError) as exc:
        fail(f"migrate: {exc} (nothing was written)")
    click.echo("Plan:" if not dry_run else "Plan (dry run: nothing is written):")
    for line in plan.lines():
        click.echo(f"  {line}")
    if dry_run:
        return
    try:
        done = apply(plan)
    except (MigrationRefused, VaultError, StoreError, OSError) as exc:
        fail(f"migrate: {exc}")
    click.echo("Done:")
    for line in done:
        click.echo(f"  {line}")
    click.echo(f"Next: ductile config check --config {plan.paths.config_dir}")
