"""`ductile job list|inspect`: read the ledger straight from the database (no daemon needed)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ductile.cli.common import config_option, emit_json, fail, json_option, load

if TYPE_CHECKING:
    from ductile.cli.store import Reader


@click.group()
def job() -> None:
    """List jobs and inspect one job's ledger; cancel or retry a job on the running gateway."""


def _connect(config_path: str | None) -> Reader:
    """The store the config names, read-only (SQLite's file or the shared PostgreSQL)."""
    from ductile.cli.store import open_reader

    return open_reader(load(config_path, validate=False))


@job.command("list")
@config_option
@click.option("--plugin", default=None, help="Only this plugin.")
@click.option("--status", default=None, help="queued, running, succeeded, failed, timed_out, "
                                             "dead, skipped or cancelled.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@json_option
def list_jobs(config_path: str | None, plugin: str | None, status: str | None, limit: int,
              as_json: bool) -> None:
    """List jobs, newest first."""
    from ductile.planes.api.bodies import BodyError
    from ductile.errors import StoreError
    from ductile.planes.api.logquery import parse_log_filter

    try:
        status = parse_log_filter({"status": status} if status else {}).status
    except BodyError as exc:
        from ductile.machines import job_statuses

        fail(f"{exc}; use one of {', '.join(job_statuses().all)}")
    with _connect(config_path) as store:
        try:
            jobs, total = store.jobs(plugin=plugin, status=status, limit=limit)
        except StoreError as exc:
            fail(f"cannot list the jobs of {store.label}: {exc}")
    if as_json:
        emit_json({"jobs": [_list_view(j) for j in jobs], "total": total})
        return
    click.echo(f"{'JOB ID':<36}  {'STATUS':<10} {'PLUGIN:COMMAND':<24} {'ATTEMPT':<7} CREATED")
    for j in jobs:
        click.echo(f"{j.id:<36}  {j.status:<10} {j.plugin + ':' + j.command:<24} "
                   f"{j.attempt:<7} {j.created_at}")
    click.echo(f"({len(jobs)} of {total})")


def _list_view(job: Any) -> dict[str, Any]:
    """One `job list --json` entry: `GET /jobs`'s names (`job_id`, ...), the payload as the
    JSON it is, and the rest of the row under the names `GET /job/{id}` uses."""
    view = {"job_id": job.id, "plugin": job.plugin, "command": job.command,
            "status": job.status, "created_at": job.created_at, "attempt": job.attempt}
    for key, value in job.to_api().items():
        if key not in view and value is not None:
            view[key] = value
    view["payload"] = _payload_view(job)
    for key in ("dedupe_key", "parent_job_id", "event_context_id", "next_retry_at"):
        if getattr(job, key) is not None:
            view[key] = getattr(job, key)
    return view


@job.command("logs")
@config_option
@click.option("--plugin", default=None, help="Only this plugin.")
@click.option("--command", "command_name", default=None, help="Only this command.")
@click.option("--status", default=None, help="Terminal status (succeeded, failed, ...).")
@click.option("--submitted-by", default=None, help="api, the service name, webhook:..., ...")
@click.option("--from", "from_", default=None,
              help="Completed at or after: RFC 3339 time, or a duration ago (1h, 7d).")
@click.option("--to", "to", default=None, help="Completed at or before (same forms as --from).")
@click.option("--since", default=None, help="The older name of --from.")
@click.option("--until", default=None, help="The older name of --to.")
@click.option("--query", default=None, help="Text to find in the error, stderr or result.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--include-result", is_flag=True, help="Show each attempt's result.")
@click.option("--follow", "follow_id", metavar="JOB_ID", default=None,
              help="Instead of searching: print JOB_ID's stderr live from the running gateway "
                   "(waiting while it is queued), then its outcome; exit 0 if it succeeded.")
@click.option("--api-url", default=None, help="With --follow: gateway URL "
                                              "(default http://<api.listen>).")
@click.option("--api-key", "--token", "api_key_opt", default=None,
              help="With --follow: API token with jobs:logs:ro (else $DUCTILE_API_KEY).")
@json_option
def logs(config_path: str | None, plugin: str | None, command_name: str | None,
         status: str | None, submitted_by: str | None, from_: str | None, to: str | None,
         since: str | None, until: str | None,
         query: str | None, limit: int, include_result: bool, follow_id: str | None,
         api_url: str | None, api_key_opt: str | None, as_json: bool) -> None:
    """Search terminal attempts in the job log, newest first; or, with --follow JOB_ID, print
    one job's stderr as it runs."""
    if follow_id is not None:
        from ductile.cli.follow import follow_job

        if any((plugin, command_name, status, submitted_by, from_, to, since, until, query,
                include_result)):
            raise click.UsageError("--follow shows one job; it takes no search filters")
        follow_job(follow_id, config_path=config_path, api_url=api_url,
                   api_key_opt=api_key_opt, as_json=as_json)
    if api_url or api_key_opt:
        raise click.UsageError("--api-url and --api-key go with --follow; the search reads the "
                               "database directly")
    from ductile.planes.api.bodies import BodyError
    from ductile.planes.api.logquery import parse_log_filter
    from ductile.errors import StoreError
    from ductile.store.joblog import log_view

    for new, old, name in ((from_, since, "from"), (to, until, "to")):
        if new and old:
            other = "since" if name == "from" else "until"
            raise click.UsageError(f"--{name} and --{other} are one option; give one of them")
    # Each bound goes in under the name it was given, so an error names the flag used.
    args = {"plugin": plugin, "command": command_name, "status": status,
            "submitted_by": submitted_by, "from": from_, "since": since, "to": to,
            "until": until, "query": query, "limit": str(limit)}
    try:
        where = parse_log_filter({k: v for k, v in args.items() if v})
    except BodyError as exc:
        fail(str(exc))
    with _connect(config_path) as store:
        try:
            entries, total = store.search_logs(where)
        except StoreError as exc:
            fail(f"cannot search the job log of {store.label}: {exc}")
    if as_json:
        emit_json({"logs": [log_view(e, include_result=include_result) for e in entries],
                   "total": total})
        return
    for e in entries:
        click.echo(f"- {e.completed_at} {e.status} {e.plugin}:{e.command} job={e.job_id} "
                   f"attempt={e.attempt} submitted_by={e.submitted_by}")
        if e.last_error:
            click.echo(f"    error: {e.last_error}")
        if e.stderr:
            click.echo("    stderr: " + e.stderr.strip()[-500:].replace("\n", "\n            "))
        if include_result and e.result:
            click.echo(f"    result: {e.result[:2000]}")
    click.echo(f"({len(entries)} of {total})")


_gateway_options = (
    click.option("--api-url", default=None, help="Gateway URL (default http://<api.listen>)."),
    click.option("--api-key", "api_key_opt", default=None,
                 help="Token with jobs:rw (else $DUCTILE_API_KEY, else the configured one)."),
)


def _gateway(command: Any) -> Any:
    for option in reversed(_gateway_options):
        command = option(command)
    return command


@job.command()
@click.argument("job_id")
@click.option("--reason", default=None, help="Why: recorded in the job's last_error.")
@_gateway
@config_option
@json_option
def cancel(job_id: str, reason: str | None, api_url: str | None, api_key_opt: str | None,
           config_path: str | None, as_json: bool) -> None:
    """Cancel JOB_ID on the running gateway: a queued job at once; a running job's plugin gets
    SIGTERM, then SIGKILL after the kill grace. Either ends `cancelled` (no retry, no hooks,
    nothing routed on)."""
    from urllib.parse import quote

    from ductile.cli.common import post_to_gateway

    status, data = post_to_gateway(f"/job/{quote(job_id, safe='')}/cancel",
                                   {"reason": reason} if reason else {}, api_url=api_url,
                                   api_key_opt=api_key_opt, config_path=config_path, wait=True)
    if as_json:
        emit_json(data)
    elif status == 202:
        click.echo(f"Cancel requested for job {job_id}: {data.get('message', '')}")
    else:
        click.echo(f"Cancelled job {job_id}: {data.get('last_error', '')}")


@job.command()
@click.argument("job_id")
@_gateway
@config_option
@json_option
def retry(job_id: str, api_url: str | None, api_key_opt: str | None, config_path: str | None,
          as_json: bool) -> None:
    """Enqueue a failed, timed_out, dead or cancelled JOB_ID again, as a new job with the same
    plugin, command, payload and pipeline context (linked both ways in the ledger)."""
    from urllib.parse import quote

    from ductile.cli.common import post_to_gateway

    _, data = post_to_gateway(f"/job/{quote(job_id, safe='')}/retry", {}, api_url=api_url,
                              api_key_opt=api_key_opt, config_path=config_path, wait=False)
    if as_json:
        emit_json(data)
        return
    click.echo(f"Retried job {job_id} as job {data['job_id']} ({data['status']})")
    click.echo(f"see: ductile job inspect {data['job_id']}")


@job.command()
@click.argument("job_id")
@config_option
@json_option
def inspect(job_id: str, config_path: str | None, as_json: bool) -> None:
    """Show everything the ledger knows about JOB_ID: attempts with timings and exit codes,
    transitions, result, stderr tail, who submitted it, and the config snapshot that was live
    when it was enqueued."""
    from ductile.errors import StoreError

    with _connect(config_path) as store:
        try:
            ledger, tree = store.inspect(job_id)
        except StoreError as exc:  # a damaged row (a context's baggage that is not JSON, ...)
            fail(f"Inspect failed: {exc}")
    if ledger is None:
        fail(f"Inspect failed: job {job_id} not found")
    report = _report(ledger)
    report["lineage"] = _lineage(tree) if tree is not None else None
    if as_json:
        emit_json(report)
        return
    _print_report(report)
    if report["lineage"] is not None:
        _print_lineage(report["lineage"], job_id)


def _lineage(tree: dict[str, Any]) -> dict[str, Any] | None:
    """The job tree this job belongs to (from its root), each step with its decision;
    None for a lone job outside any pipeline."""
    if not tree["children"] and tree.get("context") is None:
        return None
    return {"run_id": tree["job_id"], "root_job_id": tree["job_id"],
            "truncated": tree.get("truncated", False),
            "tree": _lineage_node(tree)}


def _lineage_node(node: dict[str, Any]) -> dict[str, Any]:
    context = node.get("context") or {}
    return {
        "job_id": node["job_id"], "plugin": node["plugin"], "command": node["command"],
        "status": node["status"], "pipeline": context.get("pipeline"),
        "step_id": context.get("step_id"), "decision": _step_decision(node),
        "route": node.get("route"), "baggage": context.get("baggage") or {},
        "result": node["result"], "last_error": node["last_error"],
        "children": [_lineage_node(child) for child in node["children"]],
    }


def _step_decision(node: dict[str, Any]) -> str:
    """What happened at this step, in words: ran, skipped and why, switch true/false, failed."""
    result = node.get("result")
    if node["plugin"] == "core.switch" and isinstance(result, dict) and "matched" in result:
        return f"switch {'true' if result['matched'] else 'false'}"
    if node["plugin"] == "core.split" and node.get("decision"):
        return str(node["decision"])  # a fanned-out run's root: "split into N branches"
    if node["status"] == "skipped":
        return node.get("decision") or "skipped"
    from ductile.machines import job_statuses

    if node["status"] in job_statuses().failure or node["status"] == "cancelled":
        return f"{node['status']}: {node.get('last_error') or node.get('decision') or ''}".strip()
    if node["status"] in job_statuses().live:
        return node["status"]
    return "ran"


def _print_lineage(lineage: dict[str, Any], focus: str) -> None:
    # The root job's id is the run's id (what `POST /pipeline/{name}` answered as run_id).
    click.echo(f"Lineage of run {lineage['root_job_id']} (its root job):")
    _print_lineage_node(lineage["tree"], focus, 1)
    if lineage["truncated"]:
        click.echo("  ... (tree truncated)")


def _print_lineage_node(node: dict[str, Any], focus: str, depth: int) -> None:
    pad = "  " * depth
    mark = "*" if node["job_id"] == focus else "-"
    where = f"{node['pipeline']}/{node['step_id']}" if node["step_id"] else "(root)"
    click.echo(f"{pad}{mark} {where}  {node['plugin']}  {node['status']}  "
               f"[{node['decision']}]  job {node['job_id']}")
    if node["route"]:
        click.echo(f"{pad}    routed: {node['route']}")
    if node["baggage"]:
        click.echo(f"{pad}    baggage: {json.dumps(node['baggage'], sort_keys=True)[:500]}")
    if node["result"] is not None:
        text = node["result"] if isinstance(node["result"], str) else json.dumps(node["result"])
        click.echo(f"{pad}    result: {text[:300]}")
    for child in node["children"]:
        _print_lineage_node(child, focus, depth + 1)


def _report(ledger: dict[str, Any]) -> dict[str, Any]:
    """The `job inspect --json` report: the Go gateway's lineage report (job_id ... steps,
    with its field names and types), plus what this gateway records beyond it (timings, exit
    codes, payload, result, stderr, retry/rerun links; `lineage` is added by the caller)."""
    job = ledger["job"]
    logs = ledger.get("logs") or []
    final = logs[-1] if logs else None
    result: Any = None
    if final is not None and final.result:
        try:
            result = json.loads(final.result)
        except (ValueError, RecursionError):
            result = final.result
    attempts = ledger.get("attempts") or []
    transitions = ledger.get("transitions") or []
    steps = ledger.get("steps") or []
    return {
        "job_id": job.id,
        "plugin": job.plugin,
        "command": job.command,
        "status": job.status,
        "attempt": job.attempt,
        "context_id": job.event_context_id or "",
        "hops": len(steps),
        "steps": [_step_view(step) for step in steps],
        "transitions": [_transition_view(t) for t in transitions],
        "attempts": [{**a.as_dict(), "at": a.created_at} for a in attempts],
        "consistency": _consistency(job, attempts, transitions),
        "config": _config_report(job, ledger.get("snapshot"), ledger.get("started_snapshot")),
        "max_attempts": job.max_attempts,
        "submitted_by": job.submitted_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "next_retry_at": job.next_retry_at,
        "last_error": job.last_error,
        "payload": _payload_view(job),
        "links": ledger["links"].as_dict() if ledger.get("links") is not None else {},
        "result": result,
        "stderr": final.stderr if final is not None else None,
    }


def _step_view(step: Any) -> dict[str, Any]:
    """One hop of the context lineage. `baggage` is the accumulated context as the original
    shows it (the `ductile` control block included); `ductile` repeats that block alone."""
    from ductile.store.tree import split_baggage

    context = step.context
    view: dict[str, Any] = {
        "hop": step.hop,
        "pipeline": context.pipeline_name or "<root>",
        "step_id": context.step_id or "<entry>",
        "context_id": context.id,
    }
    if context.parent_id:
        view["parent_id"] = context.parent_id
    if step.job is not None:
        view.update(job_id=step.job.id, plugin=step.job.plugin, command=step.job.command,
                    status=step.job.status)
    view["baggage"] = context.accumulated
    view["ductile"] = split_baggage(context.accumulated)[1]
    return view


def _transition_view(t: Any) -> dict[str, Any]:
    """`{from?, to, at, reason?}` as the original, with our column names kept beside them."""
    view: dict[str, Any] = {}
    if t.from_status:
        view["from"] = t.from_status
    view.update(to=t.to_status, at=t.created_at)
    if t.reason:
        view["reason"] = t.reason
    view.update(id=t.id, from_status=t.from_status, to_status=t.to_status,
                created_at=t.created_at)
    return view


def _consistency(job: Any, attempts: list[Any], transitions: list[Any]) -> dict[str, Any]:
    """The cached row against the append-only facts. A job's `attempt` moves on when a retry is
    scheduled and its attempt row is written when that attempt is claimed, so a queued job
    may be one attempt ahead of its facts; a job with no transition at all predates them."""
    latest = transitions[-1].to_status if transitions else None
    recorded = max((a.attempt for a in attempts), default=0)
    attempt_match = recorded == job.attempt or (job.status == "queued"
                                                and recorded == job.attempt - 1)
    view: dict[str, Any] = {}
    if latest:
        view["latest_transition_status"] = latest
    view.update(cached_status_matches=latest == job.status, attempt_facts_match=attempt_match,
                legacy_missing_data=not transitions)
    return view


#: The fields of a config snapshot the inspect report shows (never the config itself).
_SNAPSHOT_SUMMARY = ("id", "config_hash", "source_hash", "source_path", "source", "reason",
                     "loaded_at", "ductile_version", "binary_path", "snapshot_format",
                     "semantics")


def _config_report(job: Any, enqueued: dict[str, Any] | None,
                   started: dict[str, Any] | None) -> dict[str, Any]:
    """`config` as the original: the snapshots live at enqueue and at the last claim, whether
    the job crossed a reload, missing snapshot rows, and the secrets those configs used (by
    reference and fingerprint, never a value). Our earlier keys stay beside them."""
    enqueued_id, started_id = job.enqueued_config_snapshot_id, job.started_config_snapshot_id
    report: dict[str, Any] = {}
    missing = [ref for ref, row in ((enqueued_id, enqueued), (started_id, started))
               if ref and row is None]
    if enqueued is not None:
        report["enqueued"] = _summary(enqueued)
    if started is not None:
        report["started"] = _summary(started)
    report["crossed_reload_boundary"] = bool(enqueued_id and started_id
                                             and enqueued_id != started_id)
    report["legacy_missing_data"] = not enqueued_id or not started_id
    if missing:
        report["missing_snapshot_refs"] = list(dict.fromkeys(missing))
    uses = _secret_uses(enqueued)
    if started is not None and (enqueued is None or enqueued.get("id") != started.get("id")):
        seen = {(u["purpose"], u["ref"]) for u in uses}
        uses += [u for u in _secret_uses(started) if (u["purpose"], u["ref"]) not in seen]
    if uses:
        report["secret_uses"] = uses
    report.update(enqueued_snapshot_id=enqueued_id, started_snapshot_id=started_id,
                  snapshot=None if enqueued is None else {
                      key: enqueued.get(key)
                      for key in ("id", "config_hash", "source_hash", "source", "source_path",
                                  "reason", "loaded_at", "ductile_version")})
    return report


def _summary(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: snapshot.get(key) for key in _SNAPSHOT_SUMMARY
            if snapshot.get(key) is not None or key in ("id", "config_hash", "reason",
                                                        "loaded_at", "snapshot_format")}


def _secret_uses(snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`{purpose, ref, source, present, fingerprint?}` for each secret a snapshot recorded."""
    entries = snapshot.get("secret_fingerprints") if snapshot is not None else None
    uses = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        use = {"purpose": entry.get("purpose", ""),
               "ref": entry.get("ref", entry.get("secret_ref", "")),
               "source": entry.get("source", ""), "present": bool(entry.get("present"))}
        if entry.get("fingerprint"):
            use["fingerprint"] = entry["fingerprint"]
        uses.append(use)
    return uses


def _print_report(r: dict[str, Any]) -> None:
    echo = click.echo
    echo(f"Job {r['job_id']}")
    echo(f"  plugin:       {r['plugin']}")
    echo(f"  command:      {r['command']}")
    echo(f"  status:       {r['status']} (attempt {r['attempt']} of {r['max_attempts']})")
    echo(f"  submitted by: {r['submitted_by']} at {r['created_at']}")
    if r["next_retry_at"] and r["status"] == "queued":
        echo(f"  next retry:   {r['next_retry_at']}")
    if r["last_error"]:
        echo(f"  last error:   {r['last_error']}")
    for line in _link_lines(r["links"]):
        echo(line)
    for line in _relay_lines(r):
        echo(line)
    snap = r["config"]["snapshot"]
    if snap:
        echo(f"Config snapshot (live at enqueue): {snap['id']}")
        echo(f"  hash:      {snap['config_hash']}")
        echo(f"  source:    {snap['source']} {snap['source_path']}")
        echo(f"  loaded_at: {snap['loaded_at']} (reason {snap['reason']})")
    else:
        echo(f"Config snapshot: {r['config']['enqueued_snapshot_id'] or 'none recorded'}")
    if r["config"]["crossed_reload_boundary"]:
        echo(f"  started under a newer snapshot: {r['config']['started_snapshot_id']}")
    echo("Attempts:")
    for a in r["attempts"]:
        exit_code = a.get("exit_code")
        duration = a.get("duration_ms")
        echo(f"  #{a['attempt']}  started {a.get('started_at') or a.get('created_at')}  "
             f"finished {a.get('finished_at') or '-'}  "
             f"{'-' if duration is None else str(duration) + ' ms'}  "
             f"exit {'-' if exit_code is None else exit_code}  {a.get('outcome') or ''}")
        if a.get("error"):
            echo(f"      error: {a['error']}")
    echo("Transitions:")
    for t in r["transitions"]:
        reason = f"  ({t['reason']})" if t.get("reason") else ""
        echo(f"  {t['created_at']}  {t.get('from_status') or 'none'} -> {t['to_status']}{reason}")
    if r["result"] is not None:
        echo("Result:")
        text = r["result"] if isinstance(r["result"], str) else json.dumps(r["result"], indent=2)
        echo("  " + text.replace("\n", "\n  "))
    if r["stderr"]:
        echo("Stderr (tail):")
        echo("  " + r["stderr"][-2000:].replace("\n", "\n  "))


def _link_lines(links: dict[str, Any]) -> list[str]:
    """The operator's re-runs, both ways: `ductile job retry` and `ductile pipeline rerun`."""
    lines = []
    if links.get("retry_of"):
        lines.append(f"  retry of:     job {links['retry_of']}")
    if links.get("retried_as"):
        lines.append(f"  retried as:   job {links['retried_as']}")
    if links.get("rerun_of"):
        lines.append(f"  rerun of:     job {links['rerun_of']} (the root of the run repeated)")
    for rerun in links.get("rerun_as", ()):
        lines.append(f"  rerun as:     job {rerun}")
    return lines


def _relay_lines(r: dict[str, Any]) -> list[str]:
    """The other side of a relay: where a relayed job came from (its event's `origin`), or
    what the receiver answered a `core.relay` job (the `relay.accepted` of its result)."""
    lines = []
    payload = r.get("payload")
    origin = payload.get("origin") if isinstance(payload, dict) else None
    if str(r.get("submitted_by", "")).startswith("relay:") and isinstance(origin, dict):
        lines.append(f"  relayed from: {origin.get('instance', '?')} (job "
                     f"{origin.get('job_id') or '-'}, event {origin.get('event_id') or '-'}; "
                     f"here event {payload.get('event_id', '-')})")
    result = r.get("result")
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            result = None
    relay = result.get("relay") if isinstance(result, dict) else None
    accepted = relay.get("accepted") if isinstance(relay, dict) else None
    if isinstance(accepted, dict):
        lines.append(f"  relayed to:   {relay.get('to')} (receiver event "
                     f"{accepted.get('receiver_event_id') or '-'}, job "
                     f"{accepted.get('job_id') or 'none: no pipeline matched'})")
    return lines


def _payload_view(job: Any) -> Any:
    """The payload as JSON when it decodes; a damaged one is shown as the text it is, since
    inspecting the job that holds it is exactly what an operator needs to do."""
    from ductile.errors import StoreError

    try:
        return job.payload_obj()
    except StoreError:
        return job.payload if isinstance(job.payload, str) else repr(job.payload)
