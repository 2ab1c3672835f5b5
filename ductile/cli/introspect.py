"""`ductile system plugin-facts [PLUGIN]`: the facts plugins recorded, newest first, read
straight from the database (read-only, safe beside a running gateway).

A plugin records a fact when its manifest's `fact_outputs` rule matches a successful command
(`ductile/store/facts.py`). Without PLUGIN, the newest facts of every plugin, merged.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ductile.cli.common import config_option, emit_json, fail, json_option, load


@click.command("plugin-facts")
@click.argument("plugin", required=False)
@click.option("--fact-type", help="Only facts of this type.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000),
              help="Facts to show.")
@config_option
@json_option
def plugin_facts(plugin: str | None, fact_type: str | None, limit: int,
                 config_path: str | None, as_json: bool) -> None:
    """Show the facts plugins recorded (one plugin's, or every plugin's), newest first."""
    from ductile.cli.store import open_reader
    from ductile.errors import StoreError

    with open_reader(load(config_path, validate=False)) as store:
        try:
            facts = store.facts(plugin, limit, fact_type)
        except StoreError as exc:
            fail(f"cannot read the facts from {store.label}: {exc}")
    rows: list[dict[str, Any]] = [
        {"id": f.id, "seq": f.seq, "plugin": f.plugin_name, "fact_type": f.fact_type,
         "job_id": f.job_id, "command": f.command, "fact": f.fact, "created_at": f.created_at}
        for f in facts]
    if as_json:
        emit_json({"plugin": plugin, "fact_type": fact_type, "facts": rows})
        return
    if not rows:
        whose = f"plugin {plugin}" if plugin else "any plugin"
        kind = f" of type {fact_type}" if fact_type else ""
        click.echo(f"No facts recorded by {whose}{kind}.")
        return
    for row in rows:
        click.echo(f"- {row['created_at']} {row['plugin']} {row['fact_type']} "
                   f"job={row['job_id']} command={row['command']} "
                   f"{json.dumps(row['fact'], ensure_ascii=False, sort_keys=True)}")
