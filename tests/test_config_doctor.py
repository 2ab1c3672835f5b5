"""The doctor (ductile/config/doctor.py): every check with its message and field, the file a
finding names, strict decode, and the gate config_doctor_passed that enforces both."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ductile.boot import gates
from ductile.boot.gates import BootFacts
from ductile.cli.checks import human_report
from ductile.config.doctor import (DoctorResult, Finding, diagnose, find_cycle, ignored_keys,
                                   validation_refusal)
from ductile.config.load import parse_config
from ductile.config.origin import key_origin, parse_field
from ductile.config.schema import (AdmissionConfig, ApiConfig, ApiToken, Config, PipelineSource,
                                   PluginConf, ScheduleConf, ServiceConfig)
from ductile.config.webhooks import WebhookEndpoint, WebhooksConfig
from ductile.plugin.discovery import Plugin, Shadowed
from ductile.plugin.manifest import Command, Manifest
from ductile.router.dsl import compile_pipelines


def plugin(name: str, commands: tuple[str, ...] = ("poll", "handle"),
           required: tuple[str, ...] = ()) -> Plugin:
    manifest = Manifest(name=name, version="1.0.0", protocol=2, entrypoint="run",
                        commands=tuple(Command(c, "read") for c in commands),
                        config_keys={"required": required, "optional": ()})
    return Plugin(name=name, manifest=manifest, directory=f"/p/{name}",
                  entrypoint=f"/p/{name}/run", root="/p")


def make_config(**changes: Any) -> Config:
    base = Config(
        service=ServiceConfig(max_workers=2),
        state_path="/srv/d/state.db",
        api=ApiConfig(enabled=True, listen="127.0.0.1:8080",
                      tokens=(ApiToken(secret_ref="api-token", scopes=("*",)),)),
        plugin_roots=("/p",),
        plugins={"echo": PluginConf(name="echo", enabled=True)},
        config_path="/srv/c/config.yaml",
        config_dir="/srv/c",
        source="explicit",
    )
    return replace(base, **changes)


REGISTRY = {"echo": plugin("echo")}


def found(result: DoctorResult) -> list[tuple[str, str, str]]:
    return [(f.category, f.field, f.message) for f in (*result.errors, *result.warnings)]


def test_a_sound_config_has_no_finding() -> None:
    result = diagnose(make_config(), REGISTRY)
    assert result == DoctorResult(True, (), ())


# ----------------------------------------------------------------------------------- service


def test_service_requires_roots_state_and_a_positive_tick() -> None:
    cfg = make_config(plugin_roots=(), state_path="",
                      service=ServiceConfig(max_workers=2, tick_interval=0))
    result = diagnose(cfg, REGISTRY)
    assert not result.valid
    assert [(f.category, f.field, f.message) for f in result.errors] == [
        ("service", "plugin_roots", "plugin_roots is required"),
        ("service", "state.path", "state.path is required"),
        ("service", "service.tick_interval", "tick_interval must be positive"),
    ]


def test_a_tick_below_one_second_is_a_warning() -> None:
    cfg = make_config(service=ServiceConfig(max_workers=2, tick_interval=0.5))
    result = diagnose(cfg, REGISTRY)
    assert result.valid
    assert found(result) == [("service", "service.tick_interval",
                              "tick_interval 500ms is below recommended (1s); chatty service "
                              "polls can flood dispatch")]


# ---------------------------------------------------------------------------- plugin refs


def test_plugin_refs_uses_itself_not_discovered_and_required_keys() -> None:
    cfg = make_config(plugins={
        "echo": PluginConf(name="echo", enabled=True),
        "self": PluginConf(name="self", enabled=True, uses="self"),
        "ghost": PluginConf(name="ghost", enabled=True),
        "shadow": PluginConf(name="shadow", enabled=True, uses="phantom"),
        "runner": PluginConf(name="runner", enabled=True, config={"command": "ls"}),
        "bare": PluginConf(name="bare", enabled=True, uses="runner"),
        "off": PluginConf(name="off", enabled=False),
    })
    registry = {"echo": plugin("echo"), "runner": plugin("runner", required=("command",)),
                "bare": plugin("runner", required=("command",))}
    result = diagnose(cfg, registry)
    assert [(f.category, f.field, f.message) for f in result.errors] == [
        ("plugin_refs", "plugins.bare.config.command",
         'plugin "runner" requires config key "command"'),
        ("plugin_refs", "plugins.ghost",
         'plugin "ghost" in config but not found in configured plugin roots'),
        ("plugin_refs", "plugins.self.uses",
         'plugin "self": uses must reference a different base plugin'),
        ("plugin_refs", "plugins.shadow.uses",
         'plugin "phantom" in config but not found in configured plugin roots'),
    ]


def test_a_uses_cycle_is_named_once() -> None:
    cfg = make_config(plugins={"a": PluginConf(name="a", enabled=True, uses="b"),
                               "b": PluginConf(name="b", enabled=True, uses="a")})
    result = diagnose(cfg, {"a": plugin("a"), "b": plugin("b")})
    cycles = [f for f in result.errors if "circular" in f.message]
    assert [(f.category, f.field, f.message) for f in cycles] == [
        ("plugin_refs", "plugins", 'circular uses dependency detected involving plugin "a"')]


def test_find_cycle_reports_a_path_on_the_cycle_or_none() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c"]
    assert find_cycle({"a": ["a"]}) == ["a"]
    assert find_cycle({"a": ["b"], "b": []}) is None
    long_chain = {str(i): [str(i + 1)] for i in range(5000)}
    assert find_cycle(long_chain) is None


# ----------------------------------------------------------------------------------- api


def test_an_enabled_api_needs_a_listen_address_and_a_token_unless_a_vault_is_open() -> None:
    cfg = make_config(api=ApiConfig(enabled=True, listen="", tokens=()))
    assert [(f.field, f.message) for f in diagnose(cfg, REGISTRY).errors] == [
        ("api.listen", "api.listen is required when API is enabled"),
        ("api.auth.tokens", "api.auth.tokens must be configured when API is enabled"),
    ]
    # A vault and no token: the management-only posture, not an error.
    assert [f.field for f in diagnose(cfg, REGISTRY, vault_present=True).errors] == [
        "api.listen"]
    assert diagnose(make_config(api=ApiConfig(enabled=False)), REGISTRY).valid


# ----------------------------------------------------------------------------- token scopes


@pytest.mark.parametrize(("scope", "severity", "message"), [
    ("*", None, None),
    ("plugin:ro", None, None),
    ("system:rw", None, None),
    ("jobs:ro", None, None),
    ("bogus", "error",
     'invalid scope "bogus" (expected format: resource:access or action:resource:command)'),
    ("ghost:ro", "error", 'scope "ghost:ro" references unknown plugin "ghost"'),
    ("echo:allow:nope", "error", 'scope "echo:allow:nope": plugin "echo" has no command "nope"'),
    ("echo:deny:nope", "warning",
     'scope "echo:deny:nope": plugin "echo" has no command "nope" (deny is a no-op)'),
    ("echo:sideways", "error", 'scope "echo:sideways": invalid access type "sideways" '
                               "(expected ro, rw, allow:cmd, or deny:cmd)"),
    ("echo:allow", "error", 'scope "echo:allow": invalid access type "allow" '
                            "(expected ro, rw, allow:cmd, or deny:cmd)"),
    ("echo:ro", "warning", None),
    ("echo:allow:poll", "warning", None),
    ("echo:allow:*", "warning", None),
    ("read:echo", "warning", None),
    ("jobs:queue:ro", "warning", None),
    # The newest scope names are granted, so the doctor has nothing to say about them.
    ("jobs:status:ro", None, None),
    ("plugin:invoke:ro", None, None),
    ("metrics:ro", None, None),
])
def test_token_scopes(scope: str, severity: str | None, message: str | None) -> None:
    cfg = make_config(api=ApiConfig(enabled=True, tokens=(
        ApiToken(secret_ref="a", scopes=("*",)), ApiToken(secret_ref="b", scopes=("x:ro", scope)),
    )))
    result = diagnose(cfg, {**REGISTRY, "x": plugin("x")})
    scoped = [(sev, f) for sev, fs in (("error", result.errors), ("warning", result.warnings))
              for f in fs if f.category == "token_scopes" and f.field.endswith("scopes[1]")]
    if severity is None:
        assert scoped == []
        return
    [(sev, finding)] = scoped
    assert sev == severity and finding.field == "api.auth.tokens[1].scopes[1]"
    if message is not None:
        assert finding.message == message
    else:
        assert finding.message.startswith(f'scope "{scope}" grants nothing on this gateway')


# ----------------------------------------------------------------------------- webhooks


def test_webhooks_target_conflict_and_secret() -> None:
    def endpoint(path: str, target: str = "echo", ref: str = "hook-key") -> WebhookEndpoint:
        return WebhookEndpoint(path=path, plugin=target, secret_ref=ref, signature_header="X")

    cfg = make_config(webhooks=WebhooksConfig("127.0.0.1:9000", (
        endpoint("/a"), endpoint("/b", target="ghost"), endpoint("/a/"), endpoint("/c", ref=""),
    )))
    assert [(f.field, f.message) for f in diagnose(cfg, REGISTRY).errors] == [
        ("webhooks.endpoints[1].plugin",
         'webhook "/b" targets plugin "ghost" which was not discovered'),
        ("webhooks.endpoints[2].path", 'webhook path "/a/" conflicts with webhooks.endpoints[0]'),
        ("webhooks.endpoints[3]", 'webhook "/c": secret_ref is required'),
    ]


def test_an_unset_variable_left_in_a_secret_name_is_a_warning() -> None:
    cfg = make_config(api=ApiConfig(enabled=True, tokens=(
        ApiToken(secret_ref="${TOKEN_NAME}", scopes=("*",)),)))
    assert found(diagnose(cfg, REGISTRY)) == [
        ("env_vars", "api.auth.tokens[0].secret_ref", "environment variable ${TOKEN_NAME} not set")]


def test_an_unset_variable_in_a_relay_secret_name_is_a_warning() -> None:
    from ductile.config.relay import RelayConfig, RelayInstance, RelayPeer, RemoteIngress

    relay = RelayConfig(
        instances=(RelayInstance(name="gw-b", base_url="http://b:1", secret_ref="${TO_B}"),),
        ingress=RemoteIngress(peers=(RelayPeer(name="gw-a", secret_ref="from-${PEER}"),)))
    assert found(diagnose(make_config(relay=relay), REGISTRY)) == [
        ("env_vars", "instances[0].secret_ref", "environment variable ${TO_B} not set"),
        ("env_vars", "remote_ingress.peers[0].secret_ref", "environment variable ${PEER} not set")]


# ------------------------------------------------------------------ pipelines and hook cycles


def compiled(*raw: dict[str, Any], catalog: dict[str, set[str]]) -> Any:
    sources = [PipelineSource(file="pipelines.yaml", index=i, raw=r) for i, r in enumerate(raw)]
    return compile_pipelines(sources, catalog, default_max_depth=32, hook_max_depth=4)


def test_a_hook_pipeline_that_can_trigger_itself_is_a_warning() -> None:
    cfg = make_config(plugins={"echo": PluginConf(name="echo", enabled=True,
                                                  notify_on_complete=True)})
    pipelines = compiled({"name": "again", "on-hook": "job.completed",
                          "steps": [{"id": "s", "uses": "echo"}]},
                         catalog={"echo": {"poll", "handle"}})
    result = diagnose(cfg, REGISTRY, pipelines=pipelines)
    assert result.valid
    assert found(result) == [("hook_cycles", "", 'reciprocal notify_on_complete hook cycle '
                              'detected involving plugin "echo"; review pipelines with on-hook '
                              "triggers")]
    # A step that calls another pipeline counts the callee's plugins too.
    pipelines = compiled(
        {"name": "hook", "on-hook": "job.failed", "steps": [{"id": "c", "call": "inner"}]},
        {"name": "inner", "on": "never.emitted", "steps": [{"id": "s", "uses": "echo"}]},
        catalog={"echo": {"poll", "handle"}})
    assert [f.category for f in diagnose(cfg, REGISTRY, pipelines=pipelines).warnings] == [
        "hook_cycles"]
    # No notify_on_complete: the plugin's jobs never fire hooks, so no cycle.
    quiet = diagnose(make_config(), REGISTRY, pipelines=pipelines)
    assert found(quiet) == [("pipelines", "pipelines[0]", 'hook pipeline "hook" never fires: '
                             "no enabled plugin sets notify_on_complete: true")]


def test_a_hook_pipeline_waiting_for_a_plugin_that_never_notifies_is_a_warning() -> None:
    pipelines = compiled({"name": "page", "on-hook": "job.failed", "from_plugin": "echo",
                          "steps": [{"id": "s", "uses": "pager"}]},
                         catalog={"echo": {"poll", "handle"}, "pager": {"handle"}})
    cfg = make_config(plugins={"echo": PluginConf(name="echo", enabled=True),
                               "pager": PluginConf(name="pager", enabled=True)})
    registry = {**REGISTRY, "pager": plugin("pager")}
    [finding] = diagnose(cfg, registry, pipelines=pipelines).warnings
    assert finding == Finding("pipelines", 'hook pipeline "page" never fires: plugin "echo" '
                              "does not set notify_on_complete: true", "pipelines[0]",
                              "pipelines.yaml")


# ------------------------------------------------------------------ unused, shadowed, schedule


def test_unused_and_shadowed_plugins_are_warnings() -> None:
    cfg = make_config(plugins={"echo": PluginConf(name="echo", enabled=True),
                               "loud": PluginConf(name="loud", enabled=True, uses="base")})
    registry = {"echo": plugin("echo"), "base": plugin("base"), "loud": plugin("base"),
                "spare": plugin("spare")}
    shadowed = [Shadowed("echo", kept="/p/echo/manifest.yaml", ignored="/q/echo/manifest.yaml")]
    result = diagnose(cfg, registry, shadowed=shadowed)
    assert result.valid
    assert found(result) == [
        ("unused", "", 'plugin "spare" discovered but not referenced in config'),
        ("shadowed", "plugin_roots", 'plugin "echo" is provided by more than one plugin root: '
                                     "/p/echo/manifest.yaml is used and /q/echo/manifest.yaml "
                                     "is ignored"),
    ]


def test_schedules_every_must_parse_and_a_short_one_is_warned() -> None:
    schedules = (ScheduleConf(id="bad", raw={"every": "often"}),
                 ScheduleConf(id="fast", raw={"every": "30s"}),
                 ScheduleConf(id="ok", raw={"every": "hourly"}),
                 ScheduleConf(id="cron", raw={"cron": "* * * * *"}),
                 ScheduleConf(id="once", raw={"at": "2030-01-01T00:00:00Z"}))
    cfg = make_config(plugins={"echo": PluginConf(name="echo", enabled=True,
                                                  schedules=schedules)})
    result = diagnose(cfg, REGISTRY)
    [error] = result.errors
    assert error.field == "plugins.echo.schedules[0].every"
    assert error.message.startswith('invalid schedule interval "often": ')
    assert found(result)[1:] == [("schedule", "plugins.echo.schedules[1].every",
                                  'schedule interval "30s" is very short (< 1m)')]


# ----------------------------------------------------------------------- the file of a field


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_finding_names_the_file_that_holds_its_key_even_three_includes_deep(
    tmp_path: Path,
) -> None:
    write(tmp_path / "config.yaml", "plugin_roots: [plugins]\ninclude: [one/a.yaml]\n"
          "api: {enabled: true, auth: {tokens: [{secret_ref: r0, scopes: ['*']}]}}\n")
    (tmp_path / "plugins").mkdir()
    write(tmp_path / "one" / "a.yaml", "include: [../two/b.yaml]\n"
          "plugins: {runner: {enabled: false}}\n")
    write(tmp_path / "two" / "b.yaml", "include: [../three/c.yaml]\n"
          "api: {auth: {tokens: [{secret_ref: r1, scopes: ['jobs:ro', 'ghost:ro']}]}}\n")
    write(tmp_path / "three" / "c.yaml", "plugins:\n  runner: {enabled: true, config: {}}\n")
    cfg = parse_config(str(tmp_path))
    result = diagnose(cfg, {"runner": plugin("runner", required=("command",))},
                      vault_present=True)
    assert [(f.file, f.field) for f in result.errors] == [
        ("three/c.yaml", "plugins.runner.config.command"),
        ("two/b.yaml", "api.auth.tokens[1].scopes[1]"),
    ]
    assert result.errors[0].describe() == ('three/c.yaml: plugins.runner.config.command: '
                                           'plugin "runner" requires config key "command"')


def test_key_origin_follows_the_merge_rules(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", "plugin_roots: [plugins]\ninclude: [extra.yaml]\n"
          "service: {max_workers: 2, name: root}\nwebhooks: {listen: '127.0.0.1:1'}\n")
    (tmp_path / "plugins").mkdir()
    write(tmp_path / "extra.yaml", "service: {name: other, max_workers: 3}\n"
          "webhooks: [{path: /a, plugin: echo, secret_ref: k}]\n")
    files = parse_config(str(tmp_path)).source_files
    assert key_origin(files, "service.name") == "extra.yaml"
    assert key_origin(files, "service.max_workers") == "config.yaml"  # root only
    assert key_origin(files, "webhooks.endpoints[0].plugin") == "extra.yaml"  # flat list form
    assert key_origin(files, "webhooks.listen") == "config.yaml"
    assert key_origin(files, "nowhere.at.all") == ""
    assert key_origin((), "service.name") == ""
    assert parse_field("api.auth.tokens[1].scopes[0]") == ["api", "auth", "tokens", 1,
                                                            "scopes", 0]


# ---------------------------------------------------------------------------- strict decode


def test_strict_decode_counts_only_unknown_keys(tmp_path: Path) -> None:
    write(tmp_path / "config.yaml", "plugin_roots: [plugins]\ninclude: [more.yaml]\n"
          "service: {log_levle: debug, strict_mode: true}\nroutes: []\n")
    write(tmp_path / "more.yaml", "service: {max_workers: 3}\nbogus: 1\n")
    (tmp_path / "plugins").mkdir()
    cfg = parse_config(str(tmp_path))
    assert len(cfg.warnings) > 2  # deprecation, not-supported, root-only, not-enforced ...
    keys = ignored_keys(cfg)
    assert [(k.file, k.key) for k in keys] == [("config.yaml", "service.log_levle"),
                                               ("more.yaml", "bogus")]
    assert validation_refusal(DoctorResult(True), keys) == (
        "configuration validation failed: 2 ignored config key(s): config.yaml: unknown key "
        "service.log_levle; more.yaml: unknown key bogus; fix or remove the keys, or disable "
        "service.admission.validate_config_on_boot")


def test_the_refusal_lists_doctor_errors_then_ignored_keys() -> None:
    error = Finding("plugin_refs", 'plugin "x" requires config key "k"', "plugins.x.config.k",
                    "x.yaml")
    assert validation_refusal(DoctorResult(True), ()) is None
    assert validation_refusal(None, ()) is None
    only = validation_refusal(DoctorResult(False, (error,)), ())
    assert only == ('configuration validation failed: 1 doctor error(s): x.yaml: '
                    'plugins.x.config.k: plugin "x" requires config key "k"; fix them (ductile '
                    "config check lists each finding with its file), or disable "
                    "service.admission.validate_config_on_boot")
    cfg = parse_config_text_free()
    both = validation_refusal(DoctorResult(False, (error,)), ignored_keys(cfg))
    assert both is not None and "1 doctor error(s)" in both
    assert "; 1 ignored config key(s): config.yaml: unknown key foo;" in both
    assert "fix the findings and remove the keys" in both


def parse_config_text_free() -> Config:
    from ductile.config.reader import UnknownKey

    return replace(make_config(), warnings=(UnknownKey("config.yaml", "foo"), "a deprecation"))


# ------------------------------------------------------------------------------- the gate


def test_the_gate_enforces_only_under_validate_config_on_boot() -> None:
    error = Finding("plugin_refs", "broken", "plugins.x")
    off = BootFacts(config=make_config(), doctor=DoctorResult(False, (error,)))
    assert gates.config_doctor_passed(off) is None
    strict = replace(make_config(), service=ServiceConfig(
        max_workers=2, admission=AdmissionConfig(validate_config_on_boot=True)))
    on = BootFacts(config=strict, doctor=DoctorResult(False, (error,)))
    refusal = gates.config_doctor_passed(on)
    assert refusal is not None and refusal.gate == "config_doctor_passed"
    assert "plugins.x: broken" in refusal.reason
    clean = BootFacts(config=strict, doctor=DoctorResult(True))
    assert gates.config_doctor_passed(clean) is None
    keys = BootFacts(config=strict, doctor=DoctorResult(True),
                     ignored_keys=ignored_keys(parse_config_text_free()))
    refusal = gates.config_doctor_passed(keys)
    assert refusal is not None and "1 ignored config key(s)" in refusal.reason


# ------------------------------------------------------------------------ the human report


def test_human_report_follows_the_reference_layout() -> None:
    report = {"valid": False, "path": "/c/config.yaml", "source": "explicit",
              "errors": [{"category": "plugin_refs", "message": "m1", "field": "plugins.x",
                          "file": "x.yaml"}, {"category": "config_valid", "message": "m2"}],
              "warnings": [{"category": "unused", "message": "m3"}]}
    assert human_report(report) == [
        "Configuration invalid (2 error(s), 1 warning(s))",
        "  ERROR [plugin_refs] x.yaml: plugins.x: m1",
        "  ERROR [config_valid] m2",
        "  WARN  [unused] m3",
        "Checked: /c/config.yaml (explicit)",
    ]
    assert human_report({"valid": True, "errors": [], "warnings": []}) == [
        "Configuration valid."]
    assert human_report({"valid": True, "errors": [], "warnings": report["warnings"]})[0] == (
        "Configuration valid (1 warning(s))")
