"""`ductile version [--json]`: what this installation is, for bug reports and fleet checks.

Kept cheap: it imports only the two modules that define the versions it reports, never the
gateway, the HTTP stack or the config loader.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import click

from ductile.cli.common import emit_json, json_option


def version_info() -> dict[str, Any]:
    """The facts `ductile version` prints; the keys are documented in docs/operator.md."""
    import ductile
    from ductile.plugin.protocol import PROTOCOL_VERSION
    from ductile.store.migrations import SCHEMA_VERSION

    return {
        "version": ductile.__version__,
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "schema_version": SCHEMA_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "install_path": os.path.dirname(os.path.abspath(ductile.__file__)),
    }


@click.command()
@json_option
def version(as_json: bool) -> None:
    """The ductile version, its Python, the state schema and plugin protocol versions it
    expects, and where it is installed."""
    info = version_info()
    if as_json:
        emit_json(info)
        return
    click.echo(f"ductile {info['version']}")
    click.echo(f"python {info['python_version']} ({info['python_executable']})")
    click.echo(f"state schema version {info['schema_version']}")
    click.echo(f"plugin protocol version {info['protocol_version']}")
    click.echo(f"installed at {info['install_path']}")
