"""The per-section merge rules, as pure functions and through real includes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ductile.config.load import load_config
from ductile.config.merge import ignored_include_keys, is_zero, merge_config


def test_service_scalars_override_only_when_non_zero() -> None:
    base = {"service": {"name": "root", "tick_interval": "30s", "log_level": "debug"}}
    overlay = {"service": {"name": "inc", "tick_interval": "0s", "log_level": ""}}
    assert merge_config(base, overlay)["service"] == {
        "name": "inc", "tick_interval": "30s", "log_level": "debug"}


def test_service_root_only_keys_not_merged() -> None:
    base = {"service": {"max_workers": 2}}
    overlay = {"service": {"max_workers": 8, "strict_mode": True, "allow_symlinks": True,
                           "hook_max_depth": 9, "plugin_env_passthrough": ["X"],
                           "unconfined": True, "admission": {}}}
    assert merge_config(base, overlay)["service"] == {"max_workers": 2}
    assert ignored_include_keys(overlay) == [
        "service.max_workers", "service.strict_mode", "service.allow_symlinks",
        "service.admission", "service.hook_max_depth", "service.plugin_env_passthrough",
        "service.unconfined"]


def test_state_path_overrides_when_set_database_is_root_only() -> None:
    merged = merge_config({"state": {"path": "a.db"}, "database": {"path": "old.db"}},
                          {"state": {"path": "b.db"}, "database": {"path": "other.db"}})
    assert merged["state"] == {"path": "b.db"}
    assert merged["database"] == {"path": "old.db"}
    assert merge_config({"state": {"path": "a.db"}}, {"state": {"path": ""}})["state"] == {
        "path": "a.db"}


def test_api_enabled_only_true_propagates() -> None:
    assert merge_config({"api": {"enabled": False}}, {"api": {"enabled": True}})["api"][
        "enabled"] is True
    assert merge_config({"api": {"enabled": True}}, {"api": {"enabled": False}})["api"][
        "enabled"] is True


def test_api_enabled_yes_in_an_include_turns_the_api_on_as_it_does_in_the_root() -> None:
    for word in ("yes", "on", "Y"):
        merged = merge_config({"api": {"enabled": False}}, {"api": {"enabled": word}})
        assert merged["api"]["enabled"] is True, word
    assert merge_config({"api": {"enabled": False}}, {"api": {"enabled": "no"}})["api"][
        "enabled"] is False


def test_api_tokens_and_origins_appended_scalars_override() -> None:
    base = {"api": {"listen": "127.0.0.1:1", "max_concurrent_sync": 4,
                    "auth": {"tokens": [{"token": "a"}]}, "allowed_origins": ["x"]}}
    overlay = {"api": {"listen": "127.0.0.1:2", "max_concurrent_sync": 0,
                       "max_sync_timeout": "1m", "auth": {"tokens": [{"token": "b"}]},
                       "allowed_origins": ["y"]}}
    assert merge_config(base, overlay)["api"] == {
        "listen": "127.0.0.1:2", "max_concurrent_sync": 4, "max_sync_timeout": "1m",
        "auth": {"tokens": [{"token": "a"}, {"token": "b"}]}, "allowed_origins": ["x", "y"]}


def test_plugins_replaced_whole_per_key() -> None:
    base = {"plugins": {"a": {"enabled": True, "config": {"x": 1, "y": 2}}, "b": {}}}
    overlay = {"plugins": {"a": {"config": {"x": 9}}, "c": {"enabled": True}}}
    assert merge_config(base, overlay)["plugins"] == {
        "a": {"config": {"x": 9}}, "b": {}, "c": {"enabled": True}}


def test_lists_appended() -> None:
    base = {"plugin_roots": ["a"], "routes": [1], "instances": [{"name": "x"}]}
    overlay = {"plugin_roots": ["b"], "routes": [2], "instances": [{"name": "y"}]}
    merged = merge_config(base, overlay)
    assert merged["plugin_roots"] == ["a", "b"]
    assert merged["routes"] == [1, 2]
    assert merged["instances"] == [{"name": "x"}, {"name": "y"}]


def test_webhooks_and_remote_ingress() -> None:
    merged = merge_config(
        {"webhooks": [{"path": "/a"}],
         "remote_ingress": {"listen_path": "/r", "peers": [1], "require_key_id": True}},
        {"webhooks": {"listen": ":9", "endpoints": [{"path": "/b"}]},
         "remote_ingress": {"max_body_size": 5, "peers": [2], "require_key_id": False}},
    )
    assert merged["webhooks"] == {"listen": ":9", "endpoints": [{"path": "/a"}, {"path": "/b"}]}
    assert merged["remote_ingress"] == {"listen_path": "/r", "max_body_size": 5,
                                        "peers": [1, 2], "require_key_id": True}


def test_root_only_sections_and_absent_sections() -> None:
    base: dict[str, Any] = {"include": ["x"], "secrets": {"vault_file": "v"}}
    overlay = {"include": ["y"], "environment_vars": {"include": [".env"]},
               "secrets": {"vault_file": "w"}, "tcc_paths": ["/t"], "pipelines": []}
    merged = merge_config(base, overlay)
    assert merged == base
    assert "service" not in merged and "plugins" not in merged


def test_inputs_not_mutated() -> None:
    base = {"api": {"auth": {"tokens": [{"token": "a"}]}}, "plugin_roots": ["a"]}
    overlay = {"api": {"auth": {"tokens": [{"token": "b"}]}}, "plugin_roots": ["b"]}
    merge_config(base, overlay)
    assert base == {"api": {"auth": {"tokens": [{"token": "a"}]}}, "plugin_roots": ["a"]}


def test_is_zero() -> None:
    assert all(is_zero(v) for v in (None, False, 0, 0.0, "", [], {}))
    assert not any(is_zero(v) for v in (True, 1, "x", [0], "0s"))
    assert is_zero("0s", duration=True) and is_zero("0h0m", duration=True)
    assert not is_zero("5s", duration=True) and not is_zero("junk", duration=True)


def test_rules_through_real_include_files(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "service: {name: root, max_workers: 3}\n"
        "plugin_roots: [a]\n"
        "api: {enabled: true, auth: {tokens: [{secret_ref: t1, scopes: ['*']}]}}\n"
        "plugins: {echo: {enabled: true, config: {keep: 1}}}\n"
        "include: [inc.yaml]\n")
    (tmp_path / "inc.yaml").write_text(
        "service: {name: inc, max_workers: 1}\n"
        "plugin_roots: [b]\n"
        "api: {enabled: false, auth: {tokens: [{secret_ref: t2, scopes: [read]}]}}\n"
        "plugins: {echo: {config: {only: 2}}}\n")
    cfg = load_config(str(tmp_path), environ={})
    assert cfg.service.name == "inc"
    assert cfg.service.max_workers == 3
    assert cfg.plugin_roots == (str(tmp_path / "a"), str(tmp_path / "b"))
    assert cfg.api.enabled is True
    assert [t.secret_ref for t in cfg.api.tokens] == ["t1", "t2"]
    assert cfg.plugins["echo"].enabled is False  # the stanza was replaced whole
    assert cfg.plugins["echo"].config == {"only": 2}
