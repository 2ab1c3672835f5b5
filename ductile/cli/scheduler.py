"""`ductile system scheduler [list|pause|resume|run]`, `system breaker [PLUGIN]`,
`system reset PLUGIN`.

These read the database directly, so they work with or without a running daemon, except `run`,
which needs the gateway (`POST /scheduler/run`: it enqueues the job and applies if_running,
cancelling running jobs through the dispatcher). Pause and resume go through the running gateway's API when it answers (`POST /scheduler/pause|resume`:
the daemon writes and wakes its scheduler at once); otherwise they write the database directly
and take effect at the daemon's next wake (at the latest after service.tick_interval). Reset
writes directly, beside the daemon's own writer, for a moment.

The command objects are registered on the `system` group by ductile/cli/system.py:
`system.add_command(scheduler)`, `system.add_command(breaker)`, `system.add_command(reset)`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ductile.cli.common import config_option, emit_json, fail, json_option, load

if TYPE_CHECKING:
    from ductile.cli.store import Reader
    from ductile.config.schema import Config
    from ductile.store.backend import Backend

T = TypeVar("T")


@click.group(invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def scheduler(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """List schedules (next run, paused, breaker); pause, resume or fire them now."""
    if ctx.invoked_subcommand is None:
        _list(config_path, as_json)


@scheduler.command("list")
@config_option
@json_option
def list_schedules(config_path: str | None, as_json: bool) -> None:
    """Every schedule with its next run, and the scheduler's outstanding jobs."""
    _list(config_path, as_json)


@scheduler.command()
@click.argument("target", required=False, metavar="[PLUGIN[/ID]]")
@config_option
@json_option
def pause(target: str | None, config_path: str | None, as_json: bool) -> None:
    """Pause every schedule, a plugin's, or one (persisted until resumed)."""
    _pause_or_resume(target, config_path, as_json, paused=True)


@scheduler.command()
@click.argument("target", required=False, metavar="[PLUGIN[/ID]]")
@config_option
@json_option
def resume(target: str | None, config_path: str | None, as_json: bool) -> None:
    """Resume paused schedules; runs missed while paused are not caught up."""
    _pause_or_resume(target, config_path, as_json, paused=False)


@scheduler.command("run")
@click.argument("target", metavar="PLUGIN/ID")
@config_option
@click.option("--api-url", default=None, metavar="URL",
              help="The gateway (else api.listen from the config).")
@click.option("--api-key", "api_key_opt", default=None, metavar="TOKEN",
              help="A token with system:rw (else $DUCTILE_API_KEY, the vault, the api-token "
                   "file).")
@json_option
def run_schedule(target: str, config_path: str | None, api_url: str | None,
                 api_key_opt: str | None, as_json: bool) -> None:
    """Fire one schedule now, through the running gateway: its command and payload, its
    if_running policy, submitted by scheduler:manual. Its next regular fire does not move."""
    from ductile.cli.common import post_to_gateway

    plugin, _, schedule_id = target.strip().partition("/")
    if not plugin or not schedule_id:
        raise click.BadParameter("name one schedule as PLUGIN/ID (ductile system scheduler "
                                 "lists them)", param_hint="PLUGIN/ID")
    _, answer = post_to_gateway("/scheduler/run", {"target": target.strip()}, api_url=api_url,
                                api_key_opt=api_key_opt, config_path=config_path, wait=False)
    if as_json:
        emit_json(answer)
        return
    click.echo(f"Fired {answer['plugin']}/{answer['schedule_id']} now: job {answer['job_id']} "
               f"({answer['command']}, submitted by {answer['submitted_by']}); its next "
               "regular fire is unchanged")
    if answer.get("cancelled"):
        click.echo(f"Cancelled first (if_running: cancel): {', '.join(answer['cancelled'])}")


@click.command()
@click.argument("plugin", required=False)
@click.option("--command", "command_name", default="poll", show_default=True,
              help="The breaker's command.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Transitions to show.")
@config_option
@json_option
def breaker(plugin: str | None, command_name: str, limit: int, config_path: str | None,
            as_json: bool) -> None:
    """Show a circuit breaker's state and history (or every breaker, without PLUGIN)."""
    from ductile.schedule.views import breaker_report, breakers_overview

    with _read(load(config_path, validate=False)) as store:
        backend = store.backend
        if plugin is None:
            overview = store.read(lambda conn: breakers_overview(conn, backend=backend))
        else:
            report = store.read(lambda conn: breaker_report(conn, plugin, command_name, limit,
                                                            backend=backend))
    if plugin is None:
        if as_json:
            emit_json(overview)
            return
        if not overview["breakers"]:
            click.echo("No circuit breakers recorded yet.")
        for b in overview["breakers"]:
            click.echo(f"{b['plugin']}/{b['command']}: {b['state']} "
                       f"(failures {b['failure_count']}, updated {b['updated_at']})")
        return
    if as_json:
        emit_json(report)
        return
    click.echo(f"Circuit breaker {plugin}/{command_name}: {report['state']} "
               f"(failures {report['failure_count']})")
    for key in ("opened_at", "last_failure_at", "last_job_id"):
        if key in report:
            click.echo(f"  {key}: {report[key]}")
    for t in report["transitions"]:
        job = f" job={t['job_id']}" if "job_id" in t else ""
        click.echo(f"- {t['created_at']} {t.get('from_state', '-')} -> {t['to_state']} "
                   f"reason={t['reason']} failures={t['failure_count']}{job}")


@click.command()
@click.argument("plugin")
@click.option("--command", "command_name", default="poll", show_default=True,
              help="The breaker's command.")
@config_option
@json_option
def reset(plugin: str, command_name: str, config_path: str | None, as_json: bool) -> None:
    """Close a plugin's circuit breaker and clear its failure count."""
    from ductile.errors import UnknownSchedule
    from ductile.schedule.control import reset_breaker
    from ductile.store.jobs import utcnow_text

    cfg = load(config_path, validate=False)
    if plugin not in cfg.plugins:
        fail(f"Unknown plugin: {plugin}")
    try:
        result = _write(cfg, lambda conn, backend: reset_breaker(
            conn, cfg, plugin, command_name, utcnow_text(), backend=backend))
    except UnknownSchedule as exc:
        fail(str(exc))
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"Reset circuit breaker for {plugin} ({command_name})")


# -- helpers -------------------------------------------------------------------------------------


def _list(config_path: str | None, as_json: bool) -> None:
    from ductile.schedule.views import active_polls, scheduler_jobs
    from ductile.store.jobs import utcnow

    cfg = load(config_path, validate=False)
    with _read(cfg) as store:
        backend = store.backend
        jobs, polls = store.read(lambda conn: (
            scheduler_jobs(conn, cfg, backend=backend, now=utcnow())["jobs"],
            active_polls(conn, cfg.service.name, backend=backend)))
    if as_json:
        emit_json({"schedules": jobs, **polls})
        return
    if not jobs:
        click.echo("No schedules configured (plugins.<name>.schedules[]).")
    else:
        click.echo(f"{'SCHEDULE':<28} {'COMMAND':<10} {'MODE':<6} {'STATUS':<10} "
                   f"{'NEXT RUN':<28} BREAKER")
        for j in jobs:
            click.echo(f"{j['plugin'] + '/' + j['schedule_id']:<28} {j['command']:<10} "
                       f"{j['mode']:<6} {j['status']:<10} {j.get('next_run_at', '-'):<28} "
                       f"{j['breaker']['state']}")
            if j["status"] == "invalid":
                click.echo(f"    {j.get('reason', '')}")
    click.echo(f"Outstanding scheduler jobs ({polls['service_name']}): {polls['count']}")
    for p in polls["active_polls"]:
        click.echo(f"- {p['job_id']} {p['plugin']} {p['status']} attempt={p['attempt']}")


def _pause_or_resume(target: str | None, config_path: str | None, as_json: bool, *,
                     paused: bool) -> None:
    from ductile.errors import UnknownSchedule
    from ductile.schedule import control
    from ductile.store.jobs import utcnow_text

    cfg = load(config_path, validate=False)
    key = "paused" if paused else "resumed"
    rows = _through_daemon(cfg, "pause" if paused else "resume", target)
    if rows is None:
        action = control.pause if paused else control.resume
        try:
            entries = _write(cfg, lambda conn, backend: action(conn, cfg, target, utcnow_text(),
                                                               backend=backend))
        except UnknownSchedule as exc:
            fail(str(exc))
        rows = [e.as_dict() for e in entries]
    if as_json:
        emit_json({key: rows})
        return
    verb = "Paused" if paused else "Resumed"
    if not rows:
        click.echo(f"Nothing to {'pause' if paused else 'resume'}.")
    for row in rows:
        click.echo(f"{verb} {row['plugin']}/{row['schedule_id']} (status {row['status']})")


def _through_daemon(cfg: Config, action: str, target: str | None) -> list[dict] | None:
    """The rows the running gateway changed, or None when it is not reachable (then the
    caller writes the database itself). A refusal by a reachable gateway is final."""
    import httpx

    from ductile.cli.common import api_base, api_key, api_verify
    from ductile.errors import TlsMaterialError

    token = api_key(cfg, None)
    if not cfg.api.enabled or not token:
        return None
    try:
        resp = httpx.post(f"{api_base(cfg, None)}/scheduler/{action}",
                          verify=api_verify(cfg, None),
                          json={"target": target} if target else {},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    except (httpx.HTTPError, TlsMaterialError):  # unreachable, or its certificate unreadable
        return None
    if resp.status_code == 200:
        return list(resp.json().get("paused" if action == "pause" else "resumed", []))
    if resp.status_code in (401, 403):
        return None  # not our gateway's token (or not this gateway): write directly
    try:
        message = resp.json().get("error", resp.text)
    except ValueError:
        message = resp.text
    fail(f"{action} refused by the gateway ({resp.status_code}): {message}")
    return None


def _read(cfg: Config) -> Reader:
    from ductile.cli.store import open_reader

    return open_reader(cfg)


def _write(cfg: Config, fn: Callable[[Any, Backend], T]) -> T:
    """Run `fn(conn, backend)` in one write transaction beside a possibly running daemon:
    an immediate transaction on SQLite's file, a transaction on the shared PostgreSQL."""
    from ductile.errors import StoreError
    from ductile.store.backend import SQLITE_BACKEND
    from ductile.store.db import BUSY_TIMEOUT_MS, verify_schema

    if cfg.state.shared:
        from ductile.cli.store import write_shared
        from ductile.store.pg.backend import POSTGRESQL_BACKEND

        try:
            return write_shared(cfg, lambda conn: fn(conn, POSTGRESQL_BACKEND))
        except StoreError as exc:  # UnknownSchedule is no StoreError: it reaches the verb
            fail(f"cannot write the PostgreSQL store (state.dsn): {exc}")
    _require_db(cfg)
    conn = sqlite3.connect(cfg.state_path, isolation_level=None,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.row_factory = sqlite3.Row
        verify_schema(conn, cfg.state_path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, SQLITE_BACKEND)
            conn.execute("COMMIT")
            return result
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except (StoreError, sqlite3.Error) as exc:
        fail(f"cannot write {cfg.state_path}: {exc}")
    finally:
        conn.close()


def _require_db(cfg: Config) -> None:
    if not os.path.exists(cfg.state_path):
        fail(f"no database at {cfg.state_path} yet; start the gateway once "
             "(ductile system start) to create it")

