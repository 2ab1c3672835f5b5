"""Each boot gate, judged on hand-built facts: it passes on good facts and refuses, naming
itself and what to do, on bad ones."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ductile.boot import gates
from ductile.boot.gates import BootFacts
from ductile.config.state import StateConfig
from ductile.config.schema import (ApiConfig, ApiToken, Config, PluginConf, ScheduleConf,
                                   ServiceConfig)


def make_config(**changes: object) -> Config:
    base = Config(
        service=ServiceConfig(max_workers=2),
        state_path="/srv/d/state.db",
        api=ApiConfig(enabled=True, listen="127.0.0.1:8080",
                      tokens=(ApiToken(token="secret", scopes=("*",)),)),
        plugin_roots=("/srv/plugins",),
        plugins={"echo": PluginConf(name="echo", enabled=True)},
        config_path="/srv/c/config.yaml",
        config_dir="/srv/c",
        source="explicit",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FakePlugin:
    commands: tuple[str, ...] = ("poll", "handle")

    def supports(self, name: str) -> bool:
        return name in self.commands


def test_good_facts_pass_every_gate() -> None:
    facts = BootFacts(config=make_config(), plugins={"echo": FakePlugin()}, snapshot_id="cfg_1")
    for name, gate in gates.GATES.items():
        assert gate(facts) is None, name


def test_error_facts_refuse_with_the_gate_name() -> None:
    cases = {
        "config_found": BootFacts(resolve_error="no config found"),
        "config_loaded": BootFacts(load_error="config.yaml:3:1: YAML syntax error"),
        "config_valid": BootFacts(validate_error="service.max_workers must be positive"),
        "pid_lock_acquired": BootFacts(lock_error="held by pid 7"),
        "no_unallowed_symlinks": BootFacts(config=make_config(), symlinks=[("/a", "/b")]),
        "plugins_discovered": BootFacts(discovery_error="plugin root does not exist: /x"),
        "aliases_resolved": BootFacts(alias_error="uses target missing"),
        "database_opened": BootFacts(db_error="database on nfs"),
        "schema_migrated": BootFacts(schema_path="/srv/d/state.db", schema_version=5,
                                     schema_supported=2),
        "orphans_recovered": BootFacts(recovery_error="disk I/O error"),
        "config_snapshot_recorded": BootFacts(snapshot_error="readonly database"),
        "listeners_bound": BootFacts(bind_error="api.listen 127.0.0.1:1: address in use"),
    }
    for name, facts in cases.items():
        refusal = gates.GATES[name](facts)
        assert refusal is not None and refusal.gate == name, name


def test_a_newer_schema_is_refused_naming_both_versions_and_what_to_do() -> None:
    refusal = gates.schema_migrated(
        BootFacts(schema_path="/srv/d/state.db", schema_version=5, schema_supported=2))
    assert refusal is not None and refusal.gate == "schema_migrated"
    assert refusal.reason == (
        "state database /srv/d/state.db has schema version 5 but this ductile supports up to 2: "
        "it was written by a newer release; upgrade ductile or point state.path at another file")


def test_a_migrated_or_current_schema_passes_and_a_failed_migration_refuses() -> None:
    migrated = BootFacts(schema_path="/d.db", schema_version=1, schema_supported=2,
                         schema_backup="/d.db.v1-20260504T100731Z.bak")
    assert gates.schema_migrated(migrated) is None
    assert gates.schema_migrated(BootFacts(schema_version=2, schema_supported=2)) is None
    failed = replace(migrated, schema_backup=None, schema_error="step 2 failed: disk I/O error")
    refusal = gates.schema_migrated(failed)
    assert refusal is not None and refusal.reason == "step 2 failed: disk I/O error"


def test_pid_lock_refusal_says_another_instance_may_be_running() -> None:
    refusal = gates.pid_lock_acquired(BootFacts(lock_error="x"))
    assert refusal is not None
    assert "another instance may be running" in refusal.reason


def test_symlinks_pass_when_allowed() -> None:
    cfg = make_config(service=ServiceConfig(allow_symlinks=True))
    assert gates.no_unallowed_symlinks(BootFacts(config=cfg, symlinks=[("/a", "/b")])) is None


def test_reload_refuses_changes_that_need_a_restart() -> None:
    old = make_config()
    for changed in (make_config(state_path="/elsewhere.db"),
                    make_config(api=replace(old.api, listen="127.0.0.1:9999")),
                    make_config(api=replace(old.api, enabled=False))):
        refusal = gates.restart_only_keys_unchanged(BootFacts(config=changed, previous=old))
        assert refusal is not None and "require a full restart" in refusal.reason
    # Every state.* key: the store is opened once per process.
    pg = StateConfig(backend="postgresql", dsn="postgresql://db/x")
    for state, key in ((pg, "state.backend"), (replace(pg, pool_size=9), "state.pool_size"),
                       (replace(pg, node_id="b"), "state.node_id")):
        before = make_config(state=pg if key != "state.backend" else StateConfig())
        refusal = gates.restart_only_keys_unchanged(
            BootFacts(config=make_config(state=state), previous=before))
        assert refusal is not None and f"changes to {key} require" in refusal.reason
    same = make_config(state=pg)
    assert gates.restart_only_keys_unchanged(BootFacts(config=same, previous=same)) is None


def test_enabled_plugin_that_was_not_discovered_is_refused() -> None:
    facts = BootFacts(config=make_config(), plugins={})
    refusal = gates.enabled_plugins_discoverable(facts)
    assert refusal is not None and "'echo' is configured but not discoverable" in refusal.reason


def test_disabled_undiscovered_plugin_is_fine() -> None:
    cfg = make_config(plugins={"ghost": PluginConf(name="ghost", enabled=False)})
    assert gates.enabled_plugins_discoverable(BootFacts(config=cfg)) is None


def test_schedule_naming_an_undeclared_command_is_refused() -> None:
    cfg = make_config(plugins={"echo": PluginConf(
        name="echo", enabled=True, schedules=(ScheduleConf(id="nightly", command="sync"),))})
    refusal = gates.scheduled_commands_declared(BootFacts(config=cfg, plugins={"echo": FakePlugin()}))
    assert refusal is not None
    assert "schedule 'nightly' references unsupported command 'sync'" in refusal.reason


def test_api_enabled_without_tokens_needs_a_vault_for_the_management_posture() -> None:
    cfg = make_config(api=ApiConfig(enabled=True, tokens=()))
    refusal = gates.api_has_tokens(BootFacts(config=cfg))
    assert refusal is not None and "no API tokens configured" in refusal.reason
    assert gates.api_has_tokens(BootFacts(config=cfg, vault_status="blind")) is not None
    assert gates.api_has_tokens(BootFacts(config=cfg, vault_status="loaded")) is None
    closed = make_config(api=ApiConfig(enabled=False))
    assert gates.api_has_tokens(BootFacts(config=closed)) is None
    assert gates.decide_posture(closed, has_vault=True) == "closed"
    assert gates.decide_posture(cfg, has_vault=True) == "management-only"
    with_token = make_config(api=ApiConfig(enabled=True, tokens=(ApiToken(secret_ref="t"),)))
    assert gates.decide_posture(with_token, has_vault=True) == "gateway"


def test_unminted_empty_or_blind_token_ref_is_refused_in_gateway_posture() -> None:
    cfg = make_config(api=ApiConfig(enabled=True, tokens=(ApiToken(secret_ref="api"),)))
    for secrets, status, needle in (({}, "loaded", "'api' not found in the vault"),
                                    ({"api": "  "}, "loaded", "resolved to an empty value"),
                                    ({}, "blind", "cannot be opened without its key")):
        facts = BootFacts(config=cfg, posture="gateway", secrets=secrets, vault_status=status)
        refusal = gates.api_tokens_resolved(facts)
        assert refusal is not None and refusal.reason.startswith("api tokens:")
        assert needle in refusal.reason
    ok = BootFacts(config=cfg, posture="gateway", secrets={"api": "v"}, vault_status="loaded")
    assert gates.api_tokens_resolved(ok) is None
    assert gates.api_tokens_resolved(BootFacts(config=cfg, posture="management-only")) is None


def test_vault_errors_and_unresolved_secret_refs_are_refused() -> None:
    refusal = gates.vault_opened(BootFacts(vault_error="vault: wrong key"))
    assert refusal == gates.Refusal("vault_opened", "vault: wrong key")
    cfg = make_config(plugins={"p": PluginConf(name="p", enabled=True,
                                               config={"token_ref": "gh", "other": "x"})})
    refusal = gates.secret_refs_resolved(BootFacts(config=cfg, vault_status="absent"))
    assert refusal is not None
    assert refusal.reason.startswith("plugins.p.config.token_ref: secret_ref 'gh' not found")
    assert "there is no vault yet" in refusal.reason
    assert gates.secret_refs_resolved(
        BootFacts(config=cfg, vault_status="loaded", secrets={"gh": "s"})) is None
