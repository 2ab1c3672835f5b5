"""`ductile system start|status|reload` (and the refused `stop`/`restart`)."""

from __future__ import annotations

import os
import sys

import click

from ductile.cli.common import api_base, api_key, config_option, emit_json, fail, json_option


@click.group()
def system() -> None:
    """Run and inspect the gateway daemon."""


@system.command()
@config_option
def start(config_path: str | None) -> None:
    """Start the gateway in the foreground (systemd runs this; see docs/operator.md).

    Exits 0 after SIGTERM/SIGINT, 1 when a component fails, 78 when a boot gate refuses.
    """
    from ductile.boot.supervisor import run_gateway

    sys.exit(run_gateway(config_path))


@system.command()
@config_option
@json_option
def status(config_path: str | None, as_json: bool) -> None:
    """Check config, database, PID lock and a live /healthz probe. Exit 0 when healthy."""
    from ductile.cli.status import collect_status

    report = collect_status(config_path)
    if as_json:
        emit_json(report)
    else:
        click.echo("System Status: " + ("HEALTHY" if report["healthy"] else "DEGRADED"))
        for check in report["checks"]:
            line = f"- {check['name']}: {'OK' if check['ok'] else 'FAIL'}"
            if check.get("path"):
                line += f" (path={check['path']})"
            if check.get("detail"):
                line += f" - {check['detail']}"
            click.echo(line)
    sys.exit(0 if report["healthy"] else 1)


@system.command()
@config_option
@click.option("--api-url", help="Reload through the API instead of SIGHUP (needs system:rw).")
@click.option("--api-key", "api_key_opt", help="Token for --api-url (else $DUCTILE_API_KEY).")
@json_option
def reload(config_path: str | None, api_url: str | None, api_key_opt: str | None,
           as_json: bool) -> None:
    """Ask the running gateway to reload its config (SIGHUP via the PID file, or the API)."""
    if api_url:
        import httpx

        token = api_key(None, api_key_opt)
        if not token:
            fail("API key required for reload (set --api-key or DUCTILE_API_KEY)")
        try:
            resp = httpx.post(api_base(None, api_url) + "/system/reload",
                              headers={"Authorization": f"Bearer {token}"}, timeout=60)
        except httpx.HTTPError as exc:
            fail(f"Reload failed: {exc}")
        if resp.status_code != 200:
            fail(f"Reload failed ({resp.status_code}): {resp.text.strip()}")
        body = resp.json()
        if as_json:
            emit_json(body)
        else:
            click.echo(f"Reloaded at {body.get('reloaded_at')}: {body.get('message')}")
        return
    import signal

    from ductile.boot.pidlock import lock_path_for, pid_alive, read_pid
    from ductile.cli.common import load

    cfg = load(config_path, validate=False)
    path = lock_path_for(cfg.state_path)
    pid = read_pid(path)
    if pid is None:
        fail(f"Failed to read PID: no pid in {path}; is the gateway running?")
    if not pid_alive(pid):
        fail(f"Failed to signal PID {pid}: no such process (stale {path}); "
             "is the gateway running?")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        fail(f"Failed to signal PID {pid}: {exc.strerror}")
    if as_json:
        emit_json({"status": "ok", "message": f"SIGHUP sent to {pid}"})
    else:
        click.echo(f"Reload signal sent to PID {pid}")
        click.echo("The outcome is logged by the daemon ('config reloaded successfully' or "
                   "'config reload failed'); `--api-url` reports it directly.")


def _refuse_lifecycle(verb: str) -> None:
    click.echo(
        f"ductile system {verb} does not exist: the service manager owns the daemon lifecycle.\n"
        "  systemctl stop ductile | Ctrl-C (foreground)\n"
        "For an in-process config swap use: ductile system reload",
        err=True,
    )
    sys.exit(1)


@system.command(hidden=True)
def stop() -> None:
    """Refused: the service manager owns the lifecycle."""
    _refuse_lifecycle("stop")


@system.command(hidden=True)
def restart() -> None:
    """Refused: the service manager owns the lifecycle."""
    _refuse_lifecycle("restart")



@system.command()
@config_option
@json_option
def selfcheck(config_path: str | None, as_json: bool) -> None:
    """Check config, seal, vault, database integrity and schema, plugin entrypoints, disk space
    and the listeners. Read-only (no PID lock; the database opened read-only). Exit 0 on PASS."""
    from ductile.cli.selfcheck import collect_selfcheck

    report = collect_selfcheck(config_path)
    if as_json:
        emit_json(report)
    else:
        click.echo("Selfcheck: " + ("PASS" if report["ok"] else "FAIL"))
        for check in report["checks"]:
            mark = "FAIL" if not check["ok"] else (
                "WARN" if check["severity"] == "warning" else "OK")
            click.echo(f"- {check['name']}: {mark} - {check['detail']}")
    sys.exit(0 if report["ok"] else 1)


@system.command()
@config_option
@click.option("--out", "out", required=True, metavar="FILE",
              help="The .tar.gz to write (mode 0600).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@json_option
def backup(config_path: str | None, out: str, force: bool, as_json: bool) -> None:
    """Archive a consistent copy of the live database (SQLite online backup, safe while the
    gateway runs) and the config directory (never the vault key)."""
    run_backup(config_path, out, force=force, as_json=as_json, include_db=True)


def run_backup(config_path: str | None, out: str, *, force: bool, as_json: bool,
               include_db: bool) -> None:
    """Write a backup archive and report it: `system backup` (with the database) and
    `config backup` (without) differ only in `include_db`."""
    from ductile.cli.common import load
    from ductile.config.backup import write_backup
    from ductile.errors import BackupError

    cfg = load(config_path, validate=False)
    try:
        result = write_backup(cfg, out, include_db=include_db, force=force, environ=os.environ,
                              home=os.path.expanduser("~"))
    except BackupError as exc:
        fail(str(exc))
    report_backup(result, as_json)


def report_backup(result: object, as_json: bool) -> None:
    from dataclasses import asdict

    doc = asdict(result)  # type: ignore[call-overload]
    if as_json:
        emit_json(doc)
        return
    for entry in doc["files"]:
        click.echo(f"INCLUDED {entry['path']} ({entry['size']} bytes)")
    for entry in doc["excluded"]:
        click.echo(f"EXCLUDED {entry['path']} ({entry['reason']})")
    click.echo(f"backup written: {doc['path']} ({doc['size']} bytes)")
