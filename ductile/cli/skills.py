"""`ductile skills [--json]`: what an agent can do on this gateway, read from the config.

The same document as `GET /skills` on a gateway serving that config (plugins discovered under
`plugin_roots`, pipelines compiled as boot compiles them), without a running daemon. Markdown
by default, one line per skill; `--json` prints `{"skills": [...]}` exactly as the route does.
"""

from __future__ import annotations

import click

from ductile.cli.common import config_option, emit_json, fail, json_option, load


@click.command("skills")
@config_option
@json_option
def skills(config_path: str | None, as_json: bool) -> None:
    """List the plugin commands and pipelines an agent can run here, with their inputs."""
    from ductile.config.aliases import apply_aliases
    from ductile.errors import DiscoveryError, PipelineCompileError
    from ductile.planes.api.skills import skills as build, skills_markdown
    from ductile.plugin.discovery import discover
    from ductile.router.dsl import compile_pipelines

    cfg = load(config_path, validate=False)
    try:
        found = discover(cfg.plugin_roots, allow_symlinks=cfg.service.allow_symlinks)
        plugins = apply_aliases(found.plugins, cfg.plugins)
    except DiscoveryError as exc:
        fail(f"plugin discovery failed: {exc}")
    catalog = {name: {c.name for c in plugin.manifest.commands}
               for name, plugin in plugins.items() if cfg.plugin(name).enabled}
    try:
        pipelines = compile_pipelines(cfg.pipelines, catalog,
                                      default_max_depth=cfg.service.max_route_depth,
                                      hook_max_depth=cfg.service.hook_max_depth,
                                      relay_instances=[i.name for i in cfg.relay.instances
                                                       if i.enabled])
    except PipelineCompileError as exc:
        fail(f"pipelines do not compile: {exc}; ductile config check shows every problem")
    doc = build(plugins.values(), pipelines)
    if as_json:
        emit_json(doc)
        return
    click.echo(skills_markdown(doc), nl=False)
