"""`ductile pipeline list|run|rerun`.

`list` reads the `pipelines:` entries straight from the config files (no daemon, no plugin
discovery), so it also works on a config the gateway would refuse; the gateway's boot gate
`pipelines_compiled` is what checks them. `run` goes through the API (POST /pipeline/NAME),
`rerun` too (POST /job/ROOT_JOB_ID/rerun).
"""

from __future__ import annotations

import json
from typing import Any

import click

from ductile.cli.common import (config_option, emit_json, json_object_option, json_option, load,
                                post_to_gateway)

_MODES = {"sync": "synchronous", "async": "asynchronous"}
_KINDS = ("uses", "call", "relay", "steps", "split")


@click.group()
def pipeline() -> None:
    """List and run the configured pipelines; rerun a finished run."""


@pipeline.command("list")
@config_option
@json_option
def list_pipelines(config_path: str | None, as_json: bool) -> None:
    """List the configured pipelines: name, trigger, execution mode and steps."""
    cfg = load(config_path, validate=False)
    rows = [_summary(source.raw, source.file) for source in cfg.pipelines
            if isinstance(source.raw, dict)]
    if as_json:
        emit_json({"pipelines": rows})
        return
    if not rows:
        click.echo("no pipelines configured")
        return
    click.echo(f"{'NAME':<24} {'TRIGGER':<28} {'MODE':<13} STEPS")
    for row in rows:
        click.echo(f"{row['name']:<24} {row['trigger']:<28} {row['mode']:<13} "
                   f"{' -> '.join(row['steps'])}")


@pipeline.command("run")
@click.argument("name")
@click.option("--payload", default=None, help="JSON object: the payload of the trigger event.")
@click.option("--baggage", default=None, help="JSON object: root baggage for the run.")
@click.option("--sync", is_flag=True,
              help="Wait for the whole run, every branch of it, and print its job tree (up to "
                   "the pipeline's timeout); without --sync an asynchronous answer is "
                   "requested, whatever the pipeline's execution_mode.")
@click.option("--api-url", default=None, help="Gateway URL (default http://<api.listen>).")
@click.option("--api-key", "api_key_opt", default=None,
              help="Token (else $DUCTILE_API_KEY, else the first configured token).")
@config_option
@json_option
def run(name: str, payload: str | None, baggage: str | None, sync: bool, api_url: str | None,
        api_key_opt: str | None, config_path: str | None, as_json: bool) -> None:
    """Start a pipeline run on the running gateway (POST /pipeline/NAME)."""
    body: dict[str, Any] = {"payload": json_object_option(payload, "--payload") or {}}
    if baggage is not None:
        body["baggage"] = json_object_option(baggage, "--baggage")
    status, data = post_to_gateway(f"/pipeline/{name}", body, api_url=api_url,
                                   api_key_opt=api_key_opt, config_path=config_path, wait=sync,
                                   params={"sync": "true"} if sync else {"async": "true"})
    if as_json:
        emit_json(data)
        return
    if status == 202:
        click.echo(f"Started pipeline {name}: job {data['job_id']} ({data['status']})")
        branches = [job for job in data.get("job_ids") or () if job != data["job_id"]]
        if branches:
            # A run that fans out at its first step: one root job, one branch job each.
            click.echo(f"Split into {len(branches)} branches: jobs {', '.join(branches)}")
        if data.get("timeout_exceeded"):
            click.echo("Still running after the pipeline timeout.")
        click.echo(f"see: ductile job inspect {data['job_id']}")
        return
    click.echo(f"Pipeline {name} {data['status']} in {data.get('duration_ms')} ms "
               f"(job {data['job_id']})")
    for node in data.get("tree", []):
        where = f"{node.get('pipeline')}/{node.get('step_id')}" if node.get("step_id") else "-"
        click.echo(f"  {node['status']:<10} {where:<30} {node['plugin']}")
    if data.get("result") is not None:
        click.echo(json.dumps(data["result"], indent=2))


@pipeline.command("rerun")
@click.argument("root_job_id")
@click.option("--api-url", default=None, help="Gateway URL (default http://<api.listen>).")
@click.option("--api-key", "api_key_opt", default=None,
              help="Token with jobs:rw (else $DUCTILE_API_KEY, else the configured one).")
@config_option
@json_option
def rerun(root_job_id: str, api_url: str | None, api_key_opt: str | None,
          config_path: str | None, as_json: bool) -> None:
    """Start the finished pipeline run rooted at ROOT_JOB_ID again, as a new run with the same
    trigger event (POST /job/ROOT_JOB_ID/rerun). A step that is not the root is refused with
    the root's id; `ductile job inspect` shows a run's root."""
    from urllib.parse import quote

    _, data = post_to_gateway(f"/job/{quote(root_job_id, safe='')}/rerun", {}, api_url=api_url,
                              api_key_opt=api_key_opt, config_path=config_path, wait=False)
    if as_json:
        emit_json(data)
        return
    entries = data.get("job_ids") or [data["job_id"]]
    click.echo(f"Rerun of the run rooted at job {root_job_id} started: job {data['job_id']} "
               f"({data['status']}{f', {len(entries)} entry jobs' if len(entries) > 1 else ''})")
    click.echo(f"see: ductile job inspect {data['job_id']}")


def _summary(raw: dict[str, Any], file: str) -> dict[str, Any]:
    hook = raw.get("on-hook")
    trigger = f"hook {hook}" if hook else str(raw.get("on") or "api.pipeline.trigger")
    if raw.get("from_plugin"):
        trigger += f" from {raw['from_plugin']}"
    mode = str(raw.get("execution_mode") or "asynchronous")
    return {"name": str(raw.get("name", "?")), "trigger": trigger,
            "mode": _MODES.get(mode, mode), "steps": _steps(raw.get("steps")), "file": file}


def _steps(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [_step(item) for item in items]


def _step(item: Any) -> str:
    if not isinstance(item, dict):
        return "?"
    kind = next((k for k in _KINDS if k in item), None)
    label = f"{item['id']}:" if item.get("id") else ""
    guard = " (if)" if "if" in item else ""
    if kind in ("steps", "split"):
        inner = _steps(item[kind])
        joiner = " -> " if kind == "steps" else " | "
        return f"{label}{kind}[{joiner.join(inner)}]{guard}"
    if kind == "relay":
        target = item["relay"].get("to") if isinstance(item["relay"], dict) else "?"
        return f"{label}relay {target}{guard}"
    return f"{label}{kind} {item.get(kind)}{guard}" if kind else f"{label}?"
