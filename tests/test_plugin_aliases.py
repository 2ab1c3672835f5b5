"""Aliases (`plugins.<alias>.uses: <base>`), with alias-of-alias made an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.plugins import make_plugin

from ductile.config.schema import PluginConf
from ductile.errors import DiscoveryError
from ductile.config.aliases import apply_aliases
from ductile.plugin.discovery import Plugin, discover

OK = "cat >/dev/null; echo '{\"status\":\"ok\",\"result\":\"ok\"}'"


@pytest.fixture
def plugins(tmp_path: Path) -> dict[str, Plugin]:
    make_plugin(tmp_path, "echo", OK, concurrency_safe=False)
    make_plugin(tmp_path, "other", OK)
    return discover([str(tmp_path)], allow_symlinks=False).plugins


def confs(**uses: str) -> dict[str, PluginConf]:
    return {name: PluginConf(name=name, uses=base) for name, base in uses.items()}


def test_alias_is_a_renamed_clone(plugins: dict[str, Plugin]) -> None:
    conf = {
        "echo": PluginConf(name="echo", enabled=True),
        "loud": PluginConf(name="loud", uses="echo", enabled=False),
    }
    registry = apply_aliases(plugins, conf)
    assert list(registry) == ["echo", "other", "loud"]
    loud, echo = registry["loud"], registry["echo"]
    assert loud.name == "loud" and loud.is_alias and not echo.is_alias
    assert loud.manifest is echo.manifest
    assert (loud.entrypoint, loud.directory, loud.root) == (
        echo.entrypoint, echo.directory, echo.root,
    )
    assert loud.concurrency_safe is False and loud.supports("handle")
    assert plugins.keys() == {"echo", "other"}  # input not modified


def test_no_aliases_returns_a_copy(plugins: dict[str, Plugin]) -> None:
    registry = apply_aliases(plugins, {"echo": PluginConf(name="echo")})
    assert registry == plugins and registry is not plugins


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (confs(loop="loop"), 'plugin "loop": uses must reference a different base plugin'),
        (confs(ghost="missing"), 'plugin "ghost": uses target "missing" was not discovered'),
        (confs(other="echo"), 'plugin "other": alias name conflicts with existing plugin'),
        (
            confs(first="echo", second="first"),
            'plugin "second": uses target "first" is itself an alias; '
            "point uses at the base plugin",
        ),
    ],
)
def test_alias_errors(
    plugins: dict[str, Plugin], conf: dict[str, PluginConf], message: str
) -> None:
    with pytest.raises(DiscoveryError) as info:
        apply_aliases(plugins, conf)
    assert str(info.value) == message


def test_first_error_is_deterministic(plugins: dict[str, Plugin]) -> None:
    a = {"zz": PluginConf(name="zz", uses="nope"), "aa": PluginConf(name="aa", uses="gone")}
    b = dict(reversed(list(a.items())))
    for conf in (a, b):
        with pytest.raises(DiscoveryError, match='^plugin "aa"'):
            apply_aliases(plugins, conf)


def test_several_aliases_of_one_base(plugins: dict[str, Plugin]) -> None:
    registry = apply_aliases(plugins, confs(b2="other", a1="other"))
    assert registry["a1"].manifest.name == "other" and registry["b2"].manifest.name == "other"
