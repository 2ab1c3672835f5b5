"""Root of the click tree: `ductile <noun> <verb>`."""

from __future__ import annotations

import click

from ductile import __version__
from ductile.cli import config_cmd, config_edit, job, pipeline, plugin, relay, system
from ductile.cli import migrate as migrate_cmd
from ductile.cli import api_client, introspect
from ductile.cli import nodes as nodes_cmd
from ductile.cli import scheduler as scheduler_cmd
from ductile.cli import secrets as secrets_cmd
from ductile.cli import skills as skills_cmd
from ductile.cli import vault as vault_cmd
from ductile.cli import version as version_cmd
from ductile.cli import watch as watch_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ductile", message="%(prog)s %(version)s")
def cli() -> None:
    """Ductile: an integration gateway. Plugins are executables speaking protocol v2; the core
    owns the queue, retries, pipelines and the trigger planes.

    Exit codes: 0 ok, 1 error or failed check, 2 usage error or warnings under --strict,
    78 the gateway refused to start (a boot gate failed).
    """


# `system` verbs whose code lives with the noun that owns the data they read.
system.system.add_command(vault_cmd.vault_audit)
system.system.add_command(scheduler_cmd.scheduler)
system.system.add_command(scheduler_cmd.breaker)
system.system.add_command(scheduler_cmd.reset)
system.system.add_command(introspect.plugin_facts)
system.system.add_command(watch_cmd.watch)
system.system.add_command(nodes_cmd.nodes)
# `config show|get|set|schema|validate` (reading and editing the config) beside init/check.
for command in config_edit.COMMANDS:
    config_cmd.config.add_command(command)
cli.add_command(system.system)
cli.add_command(config_cmd.config)
cli.add_command(plugin.plugin)
cli.add_command(pipeline.pipeline)
cli.add_command(job.job)
cli.add_command(relay.relay)
cli.add_command(vault_cmd.vault)
cli.add_command(secrets_cmd.secrets)
cli.add_command(migrate_cmd.migrate)
cli.add_command(version_cmd.version)
cli.add_command(api_client.api)
cli.add_command(skills_cmd.skills)


def main() -> None:
    cli(prog_name="ductile")
