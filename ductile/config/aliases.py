"""Register aliases: `plugins.<alias>.uses: <base>` runs the base plugin under another name.

An alias is the base's registry entry with the alias's name, so everything keyed by plugin name
(config, state, facts, breakers, parallelism lane, queue rows) is separate per alias while the
code executed is the same.

The Go original resolved alias-of-alias in map order, so the outcome varied between runs. Here an
alias may only point at a discovered *base* plugin; pointing at another alias is an error that
says where to point instead. Aliases are processed in name order, so the first error reported is
the same on every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ductile.config.schema import PluginConf
from ductile.errors import DiscoveryError
from ductile.plugin.discovery import Plugin
from ductile.plugin.manifest import quote


def apply_aliases(
    plugins: Mapping[str, Plugin], confs: Mapping[str, PluginConf]
) -> dict[str, Plugin]:
    """The discovered plugins plus one clone per configured alias (enabled or not)."""
    aliases = {name: conf.uses.strip() for name, conf in confs.items() if conf.uses.strip()}
    registry = dict(plugins)
    for alias in sorted(aliases):
        base = _check_alias(alias, aliases[alias], plugins, aliases)
        registry[alias] = dataclasses.replace(base, name=alias)
    return registry


def _check_alias(
    alias: str, target: str, plugins: Mapping[str, Plugin], aliases: Mapping[str, str]
) -> Plugin:
    """The base plugin `alias` clones, or DiscoveryError naming what is wrong."""
    if target == alias:
        raise DiscoveryError(f"plugin {quote(alias)}: uses must reference a different base plugin")
    if alias in plugins:
        raise DiscoveryError(f"plugin {quote(alias)}: alias name conflicts with existing plugin")
    base = plugins.get(target)
    if base is None:
        if target in aliases:
            raise DiscoveryError(
                f"plugin {quote(alias)}: uses target {quote(target)} is itself an alias; "
                "point uses at the base plugin"
            )
        raise DiscoveryError(
            f"plugin {quote(alias)}: uses target {quote(target)} was not discovered"
        )
    return base
