"""`ductile secrets keygen`: a new vault key file."""

from __future__ import annotations

import click

from ductile.cli.common import fail


@click.group()
def secrets() -> None:
    """Key files for the vault (see docs/vault.md)."""


@secrets.command()
@click.option("--out", "out", required=True, metavar="PATH",
              help="Where to write the private key (mode 0600; refuses an existing file).")
def keygen(out: str) -> None:
    """Generate an X25519 vault key. The public key is printed to stderr."""
    from ductile.errors import VaultKeyError
    from ductile.vault.keys import keygen as make_key

    try:
        key = make_key(out)
    except VaultKeyError as exc:
        fail(exc.message)
    click.echo(f"Wrote vault key {key.path} (mode 0600). Back it up: without it the vault "
               "cannot be opened.", err=True)
    click.echo(f"public key: {key.public_text}", err=True)
