"""`ductile config show|get|set|schema|validate`: read and edit the config from the CLI.

These verbs live apart from `config_cmd.py` (init, check, and the seal and doctor verbs) and are
added to the `config` group in `main.py`. The work is done in `ductile.config` (`view`,
`edit`, `yamledit`, `json_schema`, `filecheck`); this module parses arguments and prints.
Heavy modules are imported inside the commands so `ductile --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ductile.cli.common import config_option, emit_json, fail, json_option

_NO_DEFAULTS = click.option("--no-defaults", is_flag=True,
                            help="Only what the files say (merged), without the defaults in force.")


@click.command()
@click.argument("path", required=False, metavar="[PATH]")
@config_option
@json_option
@_NO_DEFAULTS
def show(path: str | None, config_path: str | None, as_json: bool, no_defaults: bool) -> None:
    """Print the merged config (includes, ${VAR}, defaults) as YAML, or the subtree at PATH
    (service, plugins.echo, api.auth.tokens[0]).

    A value taken from the environment is shown as its ${VAR} reference, never the value.
    """
    _print(_value(config_path, path, defaults=not no_defaults), as_json=as_json)


@click.command()
@click.argument("key")
@config_option
@json_option
@_NO_DEFAULTS
def get(key: str, config_path: str | None, as_json: bool, no_defaults: bool) -> None:
    """Print the value at KEY (service.max_workers, plugins.echo.retry.max_attempts).

    Exit 1 when KEY does not exist; the message names the first missing part and the keys
    that exist there.
    """
    _print(_value(config_path, key, defaults=not no_defaults), as_json=as_json)


@click.command(name="set")
@click.argument("key")
@click.argument("value")
@config_option
@json_option
@click.option("--dry-run", is_flag=True, help="Check the edit and print the change; write nothing.")
@click.option("--strict", is_flag=True, help="Exit 2 when the new config has warnings.")
def set_(key: str, value: str, config_path: str | None, as_json: bool, dry_run: bool,
         strict: bool) -> None:
    """Set KEY to VALUE in the file that defines it, keeping its comments and layout.

    VALUE is read as YAML (4, true, 30s, "quoted text", [a, b]); put -- before a VALUE
    that starts with a dash. The whole config is loaded and validated with the edit before
    the file is replaced; on any refusal no file changes. A sealed directory (.checksums) is
    re-locked. A running gateway applies the change at its next reload.
    """
    import os

    from ductile.cli.common import resolve
    from ductile.config.edit import set_config_value
    from ductile.errors import ConfigError

    path, source = resolve(config_path)
    try:
        result = set_config_value(path, key, value, source=source, environ=os.environ,
                                  dry_run=dry_run)
    except ConfigError as exc:
        fail(str(exc))
    if as_json:
        emit_json({"key": result.key, "file": result.file, "file_key": result.file_key,
                   "before": result.before, "after": result.after, "added": result.inserted,
                   "written": not dry_run, "seal": result.seal, "diff": result.diff,
                   "warnings": list(result.warnings)})
    else:
        _report_set(result, dry_run=dry_run)
    if strict and result.warnings:
        sys.exit(2)


@click.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of a config file, generated from the config
    model, for editors (e.g. yaml-language-server: # $schema=<file>)."""
    emit_json(_schema())


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@click.option("--strict", is_flag=True, help="Exit 2 when there are warnings.")
def validate(file: str, as_json: bool, strict: bool) -> None:
    """Check one YAML file on its own (config.yaml or an include fragment) against the
    schema, reporting every problem with its line and key. Exit 1 when invalid.

    Cross-file rules, plugins and the vault are not checked: use ductile config check.
    """
    from ductile.config.filecheck import ERROR, check_file
    from ductile.errors import ConfigError

    try:
        problems = check_file(file, _schema(), display=file)
    except ConfigError as exc:
        fail(str(exc))
    errors = [p for p in problems if p.severity == ERROR]
    warnings = [p for p in problems if p.severity != ERROR]
    if as_json:
        emit_json({"file": file, "valid": not errors,
                   "errors": [p.as_dict() for p in errors],
                   "warnings": [p.as_dict() for p in warnings]})
    else:
        for problem in problems:
            click.echo(str(problem))
        if errors:
            click.echo(f"INVALID: {file} ({len(errors)} error(s), {len(warnings)} warning(s))")
        else:
            suffix = f" ({len(warnings)} warning(s))" if warnings else ""
            click.echo(f"OK: {file} is valid{suffix}")
    if errors:
        sys.exit(1)
    if strict and warnings:
        sys.exit(2)


COMMANDS = (show, get, set_, schema, validate)


# --------------------------------------------------------------------------- helpers


def _value(config_path: str | None, key: str | None, *, defaults: bool) -> Any:
    from ductile.cli.common import load
    from ductile.config.dotpath import lookup, parse_path
    from ductile.config.view import config_view
    from ductile.errors import ConfigError

    cfg = load(config_path, validate=False)
    view = config_view(cfg, defaults=defaults)
    if key is None:
        return view
    try:
        return lookup(view, parse_path(key))
    except ConfigError as exc:
        fail(str(exc))


def _print(value: Any, *, as_json: bool) -> None:
    """JSON with --json; else a scalar as its bare text and a map or list as block YAML."""
    import yaml

    if as_json:
        click.echo(json.dumps(value, indent=2, ensure_ascii=False))
    elif isinstance(value, (dict, list)):
        click.echo(yaml.safe_dump(value, sort_keys=False, allow_unicode=True,
                                  default_flow_style=False, width=100).rstrip("\n"))
    elif isinstance(value, bool) or value is None:
        click.echo({True: "true", False: "false", None: "null"}[value])
    else:
        click.echo(str(value))


def _report_set(result: Any, *, dry_run: bool) -> None:
    before = "added" if result.inserted else f"was {_inline(result.before)}"
    verb = "Would set" if dry_run else "Set"
    where = result.file if result.file_key == result.key else \
        f"{result.file} (as {result.file_key})"
    click.echo(f"{verb} {result.key} = {_inline(result.after)} in {where} ({before})")
    if dry_run:
        click.echo(result.diff.rstrip("\n"))
    for warning in result.warnings:
        click.echo(f"WARN [config] {warning}")
    if result.seal == "relocked":
        click.echo(f"{'Would update' if dry_run else 'Updated'} the .checksums seal for "
                   f"{result.file}.")
    elif result.seal == "stale" and not dry_run:
        click.echo(f"WARNING: the .checksums seal covering {result.file} was not updated: it "
                   "did not match the file before this edit, or it cannot be read; review the "
                   "files and run: ductile config lock", err=True)
    if not dry_run:
        click.echo("Apply it to a running gateway with: ductile system reload")


def _inline(value: Any) -> str:
    from ductile.config.yamledit import render_value
    from ductile.errors import ConfigEditRefused

    try:
        return render_value(value)
    except ConfigEditRefused:
        return repr(value)


def _schema() -> dict[str, Any]:
    from ductile.config.json_schema import config_schema
    from ductile.schedule.expr import CATCH_UP, IF_RUNNING

    return config_schema(choices={"catch_up": CATCH_UP, "if_running": IF_RUNNING})
