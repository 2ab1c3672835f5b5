"""`ductile plugin list|lock|run`."""

from __future__ import annotations

import json
import sys

import click

from ductile.cli.common import (config_option, emit_json, fail, json_option, load,
                                post_to_gateway)


@click.group()
def plugin() -> None:
    """Discover and run plugins."""


@plugin.command("list")
@config_option
@json_option
def list_plugins(config_path: str | None, as_json: bool) -> None:
    """List the plugins discovered under plugin_roots (read from disk; no daemon needed)."""
    from ductile.errors import DiscoveryError
    from ductile.config.aliases import apply_aliases
    from ductile.plugin.discovery import discover

    cfg = load(config_path, validate=False)
    try:
        found = discover(cfg.plugin_roots, allow_symlinks=cfg.service.allow_symlinks)
        plugins = apply_aliases(found.plugins, cfg.plugins)
    except DiscoveryError as exc:
        fail(str(exc))
    rows = [
        {"name": p.name, "version": p.manifest.version,
         "enabled": cfg.plugin(p.name).enabled, "description": p.manifest.description,
         "commands": [c.name for c in p.manifest.commands], "path": p.directory}
        for p in sorted(plugins.values(), key=lambda p: p.name)
    ]
    if as_json:
        emit_json({"plugins": rows, "warnings": list(found.warnings)})
        return
    click.echo(f"{'NAME':<20} {'VERSION':<10} {'ENABLED':<8} COMMANDS")
    for row in rows:
        click.echo(f"{row['name']:<20} {row['version'] or '-':<10} "
                   f"{'yes' if row['enabled'] else 'no':<8} {', '.join(row['commands'])}")
        if row["description"]:
            click.echo(f"    {row['description']}")
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)


@plugin.command("lock")
@click.argument("target", required=False, metavar="NAME | CODE")
@click.option("--all", "all_plugins", is_flag=True,
              help="Attest every configured plugin: preview, then commit with the code.")
@config_option
def lock(target: str | None, all_plugins: bool, config_path: str | None) -> None:
    """Attest plugins in the integrity seal (needs the vault: hashes are keyed with its nonce).

    `plugin lock NAME` attests one plugin. `plugin lock --all` previews every change (+ new,
    ~ changed, - removed) and prints a code; `plugin lock --all CODE` commits exactly that set.
    """
    from ductile.cli.locking import plugin_lock_all, plugin_lock_one

    if all_plugins:
        plugin_lock_all(config_path, target)
    elif target:
        plugin_lock_one(config_path, target)
    else:
        raise click.UsageError("name a plugin to attest, or use --all")


@plugin.command("run")
@click.argument("name")
@click.option("--command", "command", default="poll", show_default=True,
              help="Command to run (poll, as the Go CLI defaults to).")
@click.option("--payload", default=None, help="JSON object passed as the payload.")
@click.option("--payload-file", type=click.Path(dir_okay=False), default=None,
              help="Read the payload JSON object from a file ('-' for stdin).")
@click.option("--sync", is_flag=True, help="Wait for the result (up to api.max_sync_timeout).")
@click.option("--api-url", default=None, help="Gateway URL (default http://<api.listen>).")
@click.option("--api-key", "api_key_opt", default=None,
              help="Token (else $DUCTILE_API_KEY, else the first configured token).")
@config_option
@json_option
def run(name: str, command: str, payload: str | None, payload_file: str | None,
        sync: bool, api_url: str | None, api_key_opt: str | None, config_path: str | None,
        as_json: bool) -> None:
    """Enqueue a plugin command on the running gateway (POST /plugins/NAME/run)."""
    if payload and payload_file:
        fail("use only one of --payload or --payload-file")
    body: dict[str, object] = {"sync": sync}
    text = payload
    if payload_file:
        text = sys.stdin.read() if payload_file == "-" else open(payload_file).read()
    if text:
        try:
            body["payload"] = json.loads(text)
        except (ValueError, RecursionError) as exc:
            fail(f"--payload is not valid JSON: {exc}")
        if not isinstance(body["payload"], dict):
            fail("--payload must be a JSON object, such as '{\"message\": \"hi\"}'")
    if command:
        body["command"] = command
    status, data = post_to_gateway(f"/plugins/{name}/run", body, api_url=api_url,
                                   api_key_opt=api_key_opt, config_path=config_path, wait=sync)
    if as_json:
        emit_json(data)
        return
    if status == 202:
        click.echo(f"Queued job {data['job_id']} ({data['plugin']} {data['command']})")
        if data.get("timeout_exceeded"):
            click.echo("Still running after api.max_sync_timeout; "
                       f"see: ductile job inspect {data['job_id']}")
        return
    click.echo(f"Job {data['job_id']} {data['status']} ({data['plugin']} {data['command']})")
    if data.get("result") is not None:
        click.echo(json.dumps(data["result"], indent=2))
    if data.get("last_error"):
        click.echo(f"error: {data['last_error']}")
