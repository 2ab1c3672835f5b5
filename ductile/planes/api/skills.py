"""What an agent can do on this gateway: `GET /skills`, `ductile skills`, and the fixed
`/.well-known/ai-plugin.json`.

Built from the plugin registry and the compiled pipelines alone (no request, no database), so
the route and the CLI answer the same document for the same config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ductile.plugin.manifest import expand_schema

if TYPE_CHECKING:
    from ductile.plugin.discovery import Plugin
    from ductile.router.dsl import Pipeline, PipelineSet


def skills(plugins: Iterable[Plugin], pipelines: PipelineSet | None) -> dict[str, Any]:
    """`{"skills": [...]}`: each plugin command (plugins and commands sorted by name), then
    each pipeline (sorted by name), in the Go gateway's shape plus each one's inputs."""
    ordered = sorted(plugins, key=lambda p: p.name)
    out: list[dict[str, Any]] = []
    for plugin in ordered:
        for command in sorted(plugin.manifest.commands, key=lambda c: c.name):
            entry: dict[str, Any] = {
                "name": f"plugin.{plugin.name}.{command.name}", "kind": "plugin",
                "description": command.description, "endpoint":
                    f"/plugin/{plugin.name}/{command.name}",
                "tier": "READ" if command.type == "read" else "WRITE",
                "plugin": plugin.name, "command": command.name,
            }
            schema = expand_schema(command.input_schema)
            if schema is not None:
                entry["input_schema"] = schema
            output = expand_schema(command.output_schema)
            if output is not None:
                entry["output_schema"] = output
            out.append(entry)
    found: Mapping[str, Pipeline] = pipelines.pipelines if pipelines is not None else {}
    by_name = {p.name: p for p in ordered}
    for name in sorted(found):
        out.append(_pipeline_skill(found[name], by_name))
    return {"skills": out}


def _pipeline_skill(pipeline: Pipeline, plugins: Mapping[str, Plugin]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"pipeline.{pipeline.name}", "kind": "pipeline",
        "endpoint": f"/pipeline/{pipeline.name}", "pipeline": pipeline.name,
        "trigger": pipeline.trigger, "execution_mode": pipeline.execution_mode or "asynchronous",
    }
    if pipeline.timeout > 0:
        entry["timeout_secs"] = int(pipeline.timeout)
    entry["entry_steps"] = [_entry_step(pipeline, step) for step in pipeline.entries]
    schema = _entry_input(pipeline, plugins)
    if schema is not None:
        entry["input_schema"] = schema
    return entry


def _entry_step(pipeline: Pipeline, step: str) -> dict[str, Any]:
    node = pipeline.nodes.get(step)
    if node is None:
        return {"id": step}
    return {"id": node.id, "kind": node.kind, "plugin": node.plugin}


def _entry_input(pipeline: Pipeline, plugins: Mapping[str, Plugin]) -> dict[str, Any] | None:
    """The input schema of the run's payload: the `handle` input of its one entry plugin
    (the trigger event's payload reaches it), when that plugin declares one."""
    if len(pipeline.entries) != 1:
        return None
    node = pipeline.nodes.get(pipeline.entries[0])
    plugin = plugins.get(node.plugin) if node is not None and node.kind == "uses" else None
    command = plugin.manifest.command("handle") if plugin is not None else None
    return expand_schema(command.input_schema) if command is not None else None


def ai_plugin() -> dict[str, Any]:
    """`/.well-known/ai-plugin.json`: where an agent finds the API and how it authenticates."""
    return {
        "schema_version": "v1",
        "name_for_human": "Ductile Gateway",
        "name_for_model": "ductile",
        "description_for_human": "Run plugins and pipelines, and follow their jobs, on this "
                                 "Ductile gateway.",
        "description_for_model": (
            "An integration gateway. GET /skills lists what can be run here: plugin commands "
            "(POST /plugin/{plugin}/{command} with {\"payload\": {...}}; tier READ or WRITE) "
            "and pipelines (POST /pipeline/{name}). Every run is a job: GET /job/{id} for its "
            "status and result, GET /job/{id}/tree for a pipeline run, GET /jobs and "
            "GET /job-logs to search. GET /system/doctor and GET /system/selfcheck review the "
            "configuration and the host; GET /system/nodes lists the gateways sharing "
            "this store. GET /openapi.json describes every route; "
            "GET /plugin/{plugin}/openapi.json one plugin's commands."),
        "auth": {"type": "bearer"},
        "api": {"type": "openapi", "url": "/openapi.json"},
    }


def skills_markdown(doc: Mapping[str, Any]) -> str:
    """The human form of `ductile skills`: one line per skill, with its route and inputs."""
    lines = ["# Ductile skills", "",
             "Each line: the skill, its HTTP method and path, and what it takes. Send "
             '`{"payload": {...}}` with a bearer token; WRITE commands and pipelines need '
             "plugin:rw.", "", "## Plugins", ""]
    plugin_lines = [s for s in doc["skills"] if s["kind"] == "plugin"]
    pipeline_lines = [s for s in doc["skills"] if s["kind"] == "pipeline"]
    for skill in plugin_lines:
        line = (f"- {skill['plugin']}.{skill['command']} m=POST p={skill['endpoint']} "
                f"tier={skill['tier']} mut={int(skill['tier'] == 'WRITE')}")
        if "input_schema" in skill:
            line += f" in={_quoted(_fields(skill['input_schema']))}"
        if skill.get("description"):
            line += f" d={_quoted(skill['description'])}"
        lines.append(line)
    if not plugin_lines:
        lines.append("(no plugin loaded)")
    lines += ["", "## Pipelines", ""]
    for skill in pipeline_lines:
        mode = "sync" if skill["execution_mode"] == "synchronous" else "async"
        line = (f"- {skill['pipeline']} m=POST p={skill['endpoint']} "
                f"trigger={_quoted(skill['trigger'])} mode={mode}")
        if "timeout_secs" in skill:
            line += f" timeout={skill['timeout_secs']}s"
        if "input_schema" in skill:
            line += f" in={_quoted(_fields(skill['input_schema']))}"
        lines.append(line)
    if not pipeline_lines:
        lines.append("(no pipeline configured)")
    lines += ["", "Follow a job: GET /job/{id}; a pipeline run: GET /job/{id}/tree. Every "
                  "route: GET /openapi.json."]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A value in double quotes, its quotes and line breaks escaped (JSON's rules)."""
    return json.dumps(text, ensure_ascii=False)


def _fields(schema: Mapping[str, Any]) -> str:
    """`url:string, depth:integer` from an object schema; its type otherwise."""
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and properties:
        return ", ".join(f"{name}:{(spec or {}).get('type', 'any')}"
                         if isinstance(spec, Mapping) else f"{name}:any"
                         for name, spec in properties.items())
    return str(schema.get("type", "any"))
