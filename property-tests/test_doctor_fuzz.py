"""The doctor over arbitrary configs: whatever the config, plugin registry, pipelines and source
documents, it answers a DoctorResult made of the documented categories (never an exception),
`valid` is exactly "no error", and the same input gives the same answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.doctor import DoctorResult, diagnose, ignored_keys, validation_refusal
from ductile.config.reader import UnknownKey
from ductile.config.schema import (ApiConfig, ApiToken, Config, PluginConf, ScheduleConf,
                                   ServiceConfig, SourceFile)
from ductile.config.webhooks import WebhookEndpoint, WebhooksConfig
from ductile.plugin.discovery import Plugin, Shadowed
from ductile.plugin.manifest import Command, Manifest

CATEGORIES = {"service", "plugin_refs", "api", "token_scopes", "webhooks", "pipelines",
              "hook_cycles", "unused", "shadowed", "env_vars", "schedule"}
NAMES = ["echo", "a", "b", "jobs", "system", "read", "x.y", ""]
COMMANDS = ["poll", "handle", "health", "*", ""]

names = st.sampled_from(NAMES)
words = st.text(alphabet="ab:*.${}_X[]0 ", max_size=12)


@dataclass(frozen=True)
class FakeNode:
    kind: str
    plugin: str
    call: str | None = None


@dataclass(frozen=True)
class FakePipeline:
    name: str
    file: str
    index: int
    on_hook: str | None
    from_plugin: str | None
    nodes: dict[str, FakeNode] = field(default_factory=dict)


@dataclass(frozen=True)
class FakePipelineSet:
    pipelines: dict[str, FakePipeline]


def plugins_conf() -> st.SearchStrategy[dict[str, PluginConf]]:
    schedule = st.builds(
        lambda sid, kind, value: ScheduleConf(id=sid, raw={kind: value}),
        st.sampled_from(["s", "t"]), st.sampled_from(["every", "cron", "at", "after", "x"]),
        st.one_of(st.sampled_from(["30s", "1m", "hourly", "0s", "-1m", "often", ""]),
                  st.integers(), st.none()))
    conf = st.builds(
        lambda name, enabled, uses, keys, notify, schedules: PluginConf(
            name=name, enabled=enabled, uses=uses, config=dict.fromkeys(keys, 1),
            notify_on_complete=notify, schedules=tuple(schedules)),
        names, st.booleans(), st.sampled_from(NAMES + [" a "]),
        st.lists(st.sampled_from(["command", "url", "k"]), max_size=2), st.booleans(),
        st.lists(schedule, max_size=2))
    return st.dictionaries(names, conf, max_size=5)


def registry() -> st.SearchStrategy[dict[str, Plugin]]:
    def build(name: str, commands: list[str], required: list[str]) -> Plugin:
        manifest = Manifest(name=name or "p", version="1", protocol=2, entrypoint="run",
                            commands=tuple(Command(c, "read") for c in commands if c),
                            config_keys={"required": tuple(required)})
        return Plugin(name=name, manifest=manifest, directory="/p", entrypoint="/p/run",
                      root="/p")

    plugin = st.builds(build, names, st.lists(st.sampled_from(COMMANDS), max_size=3),
                       st.lists(st.sampled_from(["command", "url"]), max_size=2))
    return st.dictionaries(names, plugin, max_size=5)


def pipelines() -> st.SearchStrategy[FakePipelineSet | None]:
    node = st.builds(FakeNode, st.sampled_from(["uses", "call", "switch", "relay"]), names,
                     st.one_of(st.none(), st.sampled_from(["p0", "p1", "p2"])))
    pipeline = st.builds(
        lambda name, hook, source, nodes: FakePipeline(
            name=name, file="pipelines.yaml", index=0, on_hook=hook, from_plugin=source,
            nodes={str(i): n for i, n in enumerate(nodes)}),
        st.sampled_from(["p0", "p1", "p2"]),
        st.one_of(st.none(), st.sampled_from(["job.completed", "job.failed"])),
        st.one_of(st.none(), names), st.lists(node, max_size=3))
    return st.one_of(st.none(), st.lists(pipeline, max_size=3).map(
        lambda ps: FakePipelineSet({p.name: p for p in ps})))


documents = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["api", "auth", "tokens", "plugins", "echo", "config",
                                       "webhooks", "endpoints", "service", "scopes"]),
                      inner, max_size=4),
    max_leaves=12,
).map(lambda doc: doc if isinstance(doc, dict) else {"plugins": doc})


@st.composite
def configs(draw: st.DrawFn) -> Config:
    tokens = draw(st.lists(st.builds(
        lambda ref, scopes: ApiToken(secret_ref=ref, scopes=tuple(scopes)),
        words, st.lists(words | st.sampled_from(["*", "plugin:ro", "echo:allow:poll",
                                                 "echo:deny:x", "jobs:status:ro"]),
                        max_size=3)), max_size=3))
    endpoints = draw(st.lists(st.builds(
        lambda path, plugin, ref: WebhookEndpoint(path=path, plugin=plugin, secret_ref=ref,
                                                  signature_header="X"),
        st.sampled_from(["/a", "/a/", "/", "/b"]), names, words), max_size=3))
    files = draw(st.lists(st.builds(
        lambda display, doc: SourceFile(path=f"/c/{display}", data=b"", display=display,
                                        document=doc),
        st.sampled_from(["config.yaml", "a.yaml", ""]), documents), max_size=3))
    warnings = draw(st.lists(st.one_of(
        words, st.builds(UnknownKey, st.sampled_from(["config.yaml", "a.yaml"]), words)),
        max_size=3))
    return Config(
        service=ServiceConfig(max_workers=1, tick_interval=draw(st.sampled_from(
            [-1.0, 0.0, 0.05, 0.1, 0.5, 1.0, 60.0]))),
        state_path=draw(st.sampled_from(["", "/s/state.db"])),
        api=ApiConfig(enabled=draw(st.booleans()), listen=draw(st.sampled_from(["", "h:1"])),
                      tokens=tuple(tokens)),
        plugin_roots=tuple(draw(st.lists(st.sampled_from(["/p", "/q"]), max_size=2))),
        plugins=draw(plugins_conf()),
        config_path="/c/config.yaml", config_dir="/c", source="explicit",
        source_files=tuple(files),
        webhooks=WebhooksConfig(None, tuple(endpoints)),
        warnings=tuple(warnings),
    )


@given(config=configs(), plugins=registry(), compiled=pipelines(), vault=st.booleans(),
       shadowed=st.lists(st.builds(Shadowed, names, words, words), max_size=2))
def test_the_doctor_answers_only_its_documented_result(
    config: Config, plugins: dict[str, Plugin], compiled: Any, vault: bool,
    shadowed: list[Shadowed],
) -> None:
    result = diagnose(config, plugins, pipelines=compiled, vault_present=vault,
                      shadowed=shadowed)
    assert isinstance(result, DoctorResult)
    assert result.valid == (not result.errors)
    for finding in (*result.errors, *result.warnings):
        assert finding.category in CATEGORIES
        assert isinstance(finding.message, str) and finding.message
        assert isinstance(finding.field, str) and isinstance(finding.file, str)
        assert not finding.file or finding.field or finding.category == "pipelines"
    json.dumps(result.as_dict())
    assert diagnose(config, plugins, pipelines=compiled, vault_present=vault,
                    shadowed=shadowed) == result
    refusal = validation_refusal(result, ignored_keys(config))
    if result.valid and not ignored_keys(config):
        assert refusal is None
    else:
        assert refusal is not None
        assert refusal.startswith("configuration validation failed: ")
        assert refusal.endswith("or disable service.admission.validate_config_on_boot")
