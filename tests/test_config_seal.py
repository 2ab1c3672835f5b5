"""The integrity seal (`.checksums`): its parser and writer, which files it covers, the pure
verdict with each of its messages, the boot gate's policy, the `plugin lock --all` change set,
and the scope-file check every config load makes."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from ductile.boot import gates
from ductile.boot.gates import BootFacts
from ductile.config.integrity import (
    AttestChange,
    Configured,
    FileFact,
    IntegrityPolicy,
    SealFacts,
    apply_changes,
    attestation_changes,
    collect_seal_facts,
    confirmation_code,
    integrity_policy,
    refusal_text,
    verify_integrity,
)
from ductile.config.load import parse_config
from ductile.config.schema import AdmissionConfig, ApiConfig, Config, PluginConf, ServiceConfig
from ductile.config.seal import (
    HIGH_SECURITY,
    OPERATIONAL,
    Checksums,
    PluginFingerprint,
    SealedFile,
    discover_sealed_files,
    file_digest,
    fingerprint_plugin,
    keyed_file_digest,
    parse_checksums,
    read_checksums,
    write_checksums,
)
from ductile.errors import ConfigError, IntegrityError

H1, H2, H3 = "1" * 64, "2" * 64, "a" * 64
NONCE = bytes(range(32))


def fingerprint(name: str = "echo", *, enabled: bool = True, manifest: str = H1,
                entry: str = H2, uses: str = "") -> PluginFingerprint:
    return PluginFingerprint(name=name, enabled=enabled, uses=uses,
                             manifest_path=f"/p/{name}/manifest.yaml",
                             manifest_resolved_path=f"/p/{name}/manifest.yaml",
                             manifest_hash=manifest, entrypoint_path=f"/p/{name}/run",
                             entrypoint_resolved_path=f"/p/{name}/run", entrypoint_hash=entry)


VALID = Checksums(generated_at="2026-06-10T12:00:00Z",
                  hashes={"/c/config.yaml": H1, "/c/webhooks.yaml": H2},
                  plugin_fingerprints=(fingerprint(),))


# --------------------------------------------------------------------------- the parser


def test_a_written_seal_parses_back_to_itself() -> None:
    assert parse_checksums(VALID.to_bytes(), "/c/.checksums") == VALID
    bare = Checksums(generated_at="2026-06-10T12:00:00Z", hashes={"/c/config.yaml": H1})
    text = bare.to_bytes().decode()
    assert "plugin_fingerprints" not in text  # an empty section is omitted
    assert parse_checksums(bare.to_bytes(), "/c/.checksums") == bare


def test_an_alias_records_uses_and_an_empty_uses_is_omitted() -> None:
    alias = fingerprint("loud", uses="echo")
    text = replace(VALID, plugin_fingerprints=(alias, fingerprint())).to_bytes().decode()
    assert text.count("uses:") == 1 and "uses: echo" in text
    assert text.index("name: echo") < text.index("name: loud")  # sorted by name


@pytest.mark.parametrize(("data", "message"), [
    (b"version: [1\n", "failed to parse checksums /c/.checksums:2:1: YAML syntax error"),
    (b"- a list\n", "expected a map with version, generated_at and hashes"),
    (b"version: 2\nhashes: {}\nextra: 1\n", "unknown key 'extra'"),
    (b"hashes: {}\n", "version must be an integer"),
    (b"version: true\nhashes: {}\n", "version must be an integer"),
    (b"version: 2\n", "hashes must be a map of absolute path to hash"),
    (b"version: 2\nhashes: {config.yaml: " + H1.encode() + b"}\n",
     "hashes: 'config.yaml' is not an absolute path"),
    (b"version: 2\nhashes: {/c/config.yaml: ABC}\n",
     "hashes['/c/config.yaml']: expected 64 lowercase hex characters"),
    (b"version: 2\ngenerated_at: 5\nhashes: {}\n", "generated_at must be a timestamp string"),
    (b"version: 2\nhashes: {}\nplugin_fingerprints: {}\n", "plugin_fingerprints must be a list"),
    (b"version: 2\nhashes: {}\nplugin_fingerprints: [{name: echo}]\n",
     "plugin_fingerprints[0].enabled: expected true or false"),
    (b"\xff\xfe\x00garbage", "failed to parse checksums /c/.checksums"),
])
def test_a_malformed_seal_is_unparsable_naming_the_file_and_key(data: bytes,
                                                                 message: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        parse_checksums(data, "/c/.checksums")
    assert caught.value.kind == "unparsable"
    assert message in str(caught.value)
    assert caught.value.path == "/c/.checksums"


def test_a_plugin_listed_twice_and_a_relative_plugin_path_are_refused() -> None:
    twice = replace(VALID, plugin_fingerprints=(fingerprint(),)).to_bytes()
    doubled = twice + twice[twice.index(b"- name"):]
    with pytest.raises(IntegrityError, match="plugin 'echo' is listed twice"):
        parse_checksums(doubled, "/c/.checksums")
    relative = VALID.to_bytes().replace(b"entrypoint_path: /p/echo/run",
                                        b"entrypoint_path: run")
    with pytest.raises(IntegrityError, match=r"entrypoint_path: expected an absolute path"):
        parse_checksums(relative, "/c/.checksums")


def test_another_version_is_named_with_what_to_run() -> None:
    with pytest.raises(IntegrityError) as caught:
        parse_checksums(b"version: 1\nhashes: {}\n", "/c/.checksums")
    assert caught.value.kind == "version"
    assert str(caught.value) == ("unsupported checksums version in /c/.checksums: 1 (this "
                                 "ductile reads version 2; run 'ductile config lock' to "
                                 "rewrite it)")


def test_read_tells_missing_from_unreadable_from_writable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / ".checksums"
    with pytest.raises(IntegrityError) as caught:
        read_checksums(str(path))
    assert caught.value.kind == "missing"
    assert str(caught.value) == (f"checksums file not found: {path} (run 'ductile config "
                                 "lock')")
    path.mkdir()
    with pytest.raises(IntegrityError, match="not a regular file") as caught:
        read_checksums(str(path))
    assert caught.value.kind == "unreadable"
    path.rmdir()
    write_checksums(str(path), VALID)
    path.chmod(0o664)
    with pytest.raises(IntegrityError, match=r"writable by group or others \(mode 0664\).*"
                                             r"chmod 600") as caught:
        read_checksums(str(path))
    assert caught.value.kind == "permissions"
    path.chmod(0o644)  # readable by others is fine: it holds no secret
    assert read_checksums(str(path)) == VALID

    def denied(*_args: object, **_kw: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(IntegrityError, match="failed to read checksums .*: Permission denied"):
        read_checksums(str(path))


def test_a_fifo_at_the_seal_path_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".checksums")
    with pytest.raises(IntegrityError, match="not a regular file"):
        read_checksums(str(tmp_path / ".checksums"))


def test_a_symlinked_seal_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    write_checksums(str(real), VALID)
    (tmp_path / ".checksums").symlink_to(real)
    with pytest.raises(IntegrityError, match="it is a symlink"):
        read_checksums(str(tmp_path / ".checksums"))


def test_write_is_atomic_0600_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / ".checksums"
    path.write_text("old")
    path.chmod(0o644)
    write_checksums(str(path), VALID)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checksums"]
    assert read_checksums(str(path)) == VALID


# --------------------------------------------------------------------------- discovery, hashes


def test_discovery_seals_fixed_names_and_scopes_by_tier(tmp_path: Path) -> None:
    for name in ("config.yaml", "webhooks.yaml", "routes.yaml", "relay-ingress.yaml",
                 "tokens.yaml", "plugins.yaml", "api.yaml"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "scopes").mkdir()
    for name in ("b.json", "a.json", "notes.txt"):
        (tmp_path / "scopes" / name).write_text("{}")
    found = discover_sealed_files(str(tmp_path))
    assert [(os.path.relpath(f.path, tmp_path), f.tier) for f in found] == [
        ("config.yaml", OPERATIONAL), ("webhooks.yaml", HIGH_SECURITY),
        ("routes.yaml", OPERATIONAL), ("relay-ingress.yaml", OPERATIONAL),
        ("tokens.yaml", HIGH_SECURITY), ("scopes/a.json", HIGH_SECURITY),
        ("scopes/b.json", HIGH_SECURITY)]


def test_discovery_needs_the_root_file_and_accepts_another_root_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"config.yaml not found in {tmp_path}"):
        discover_sealed_files(str(tmp_path))
    (tmp_path / "gateway.yaml").write_text("{}\n")
    found = discover_sealed_files(str(tmp_path), str(tmp_path / "gateway.yaml"))
    assert [f.path for f in found] == [str(tmp_path / "gateway.yaml")]


def test_hashes_are_blake2b_256_and_plugin_hashes_are_keyed_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    assert file_digest(str(path)) == hashlib.blake2b(b"hello", digest_size=32).hexdigest()
    keyed = keyed_file_digest(str(path), NONCE)
    assert keyed == hashlib.blake2b(b"hello", digest_size=32, key=NONCE).hexdigest()
    assert keyed != file_digest(str(path))
    with pytest.raises(ValueError, match=r"32-byte vault fingerprint nonce \(got 16 bytes\)"):
        keyed_file_digest(str(path), NONCE[:16])


def test_a_plugin_fingerprint_records_paths_and_resolved_paths(tmp_path: Path) -> None:
    plugin = tmp_path / "echo"
    plugin.mkdir()
    (plugin / "manifest.yaml").write_text("name: echo\n")
    (plugin / "real-run").write_text("#!/bin/sh\n")
    (plugin / "run").symlink_to(plugin / "real-run")
    fp = fingerprint_plugin("echo", enabled=False, uses="", directory=str(plugin),
                            entrypoint=str(plugin / "run"), nonce=NONCE)
    assert fp.entrypoint_path == str(plugin / "run")
    assert fp.entrypoint_resolved_path == str(plugin / "real-run")
    assert fp.entrypoint_hash == keyed_file_digest(str(plugin / "real-run"), NONCE)
    assert fp.enabled is False


# --------------------------------------------------------------------------- the verdict


def facts(*files: FileFact, seal: Checksums | None = VALID, problem: str | None = None,
          configured: dict[str, Configured] | None = None,
          current: dict[str, PluginFingerprint | str] | None = None,
          nonce_problem: str | None = None) -> SealFacts:
    return SealFacts(config_dir="/c", root_file="/c/config.yaml", seal_path="/c/.checksums",
                     seal=seal, seal_problem=problem,
                     files=files or (FileFact(SealedFile("/c/config.yaml", OPERATIONAL), H1),
                                     FileFact(SealedFile("/c/webhooks.yaml", HIGH_SECURITY), H2)),
                     configured={"echo": Configured(True)} if configured is None else configured,
                     current={"echo": fingerprint()} if current is None else current,
                     nonce_problem=nonce_problem)


def test_a_matching_seal_passes_clean() -> None:
    assert verify_integrity(facts()) == verify_integrity(facts())
    verdict = verify_integrity(facts())
    assert verdict.errors == () and verdict.warnings == ()


def test_drift_is_an_error_for_high_security_files_and_a_warning_otherwise() -> None:
    verdict = verify_integrity(facts(FileFact(SealedFile("/c/config.yaml", OPERATIONAL), H3),
                                     FileFact(SealedFile("/c/webhooks.yaml", HIGH_SECURITY), H3)))
    assert verdict.errors == (
        "hash mismatch for /c/webhooks.yaml (sealed 222222222222, now aaaaaaaaaaaa): it changed "
        "after the last lock; if you changed it on purpose, run: ductile config lock "
        "--config-dir /c",)
    assert verdict.warnings == (
        "hash mismatch for /c/config.yaml (sealed 111111111111, now aaaaaaaaaaaa): it changed "
        "after the last lock; if you changed it on purpose, run: ductile config lock "
        "--config-dir /c",)


def test_an_unsealed_or_unhashable_file_is_named() -> None:
    verdict = verify_integrity(facts(
        FileFact(SealedFile("/c/config.yaml", OPERATIONAL), H1),
        FileFact(SealedFile("/c/scopes/a.json", HIGH_SECURITY), H1),
        FileFact(SealedFile("/c/routes.yaml", OPERATIONAL), error="Permission denied")))
    assert verdict.errors == ("file /c/scopes/a.json is not in the .checksums seal; review it, "
                              "then run: ductile config lock --config-dir /c",)
    assert verdict.warnings == ("cannot hash /c/routes.yaml: Permission denied",)


def test_no_seal_is_an_error_with_high_security_files_else_a_warning() -> None:
    verdict = verify_integrity(facts(seal=None))
    assert verdict.errors == ("no .checksums seal at /c/.checksums, but high-security files "
                              "exist (/c/webhooks.yaml); review them, then run: ductile config "
                              "lock --config-dir /c",)
    verdict = verify_integrity(facts(FileFact(SealedFile("/c/config.yaml", OPERATIONAL), H1),
                                     seal=None))
    assert verdict.errors == ()
    assert verdict.warnings == ("no .checksums seal at /c/.checksums; run 'ductile config lock "
                                "--config-dir /c' to seal the config files",)


def test_an_unusable_seal_is_an_error_never_a_missing_one() -> None:
    verdict = verify_integrity(facts(seal=None, problem="unsupported checksums version ..."))
    assert verdict.errors == ("cannot use the seal at /c/.checksums: unsupported checksums "
                              "version ...",)


def test_a_seal_written_for_another_directory_is_an_error() -> None:
    foreign = replace(VALID, hashes={"/other/config.yaml": H1})
    verdict = verify_integrity(facts(seal=foreign))
    assert verdict.errors == ("the seal at /c/.checksums was written for another directory (it "
                              "covers none of the files of /c, e.g. /other/config.yaml); review "
                              "the files, then run: ductile config lock --config-dir /c",)


def test_plugin_drift_is_an_error_when_enabled_and_a_warning_when_disabled() -> None:
    changed = fingerprint(entry=H3)
    verdict = verify_integrity(facts(current={"echo": changed}))
    assert verdict.errors == (
        "plugin 'echo': entrypoint /p/echo/run changed since it was attested (sealed "
        "222222222222, now aaaaaaaaaaaa); if the change is intended, run: ductile plugin lock "
        "echo",)
    verdict = verify_integrity(facts(configured={"echo": Configured(False)},
                                     current={"echo": replace(changed, enabled=False)}))
    assert verdict.errors == ()
    assert len(verdict.warnings) == 1
    assert verdict.warnings[0].startswith("plugin 'echo': entrypoint /p/echo/run changed")


def test_plugin_records_against_the_configured_set() -> None:
    verdict = verify_integrity(facts(configured={"echo": Configured(True),
                                                 "new": Configured(True),
                                                 "off": Configured(False)},
                                     current={"echo": fingerprint()}))
    assert verdict.errors == ("plugin 'new' is configured but not attested in the seal; review "
                              "it, then run: ductile plugin lock new",)
    assert verdict.warnings == ("plugin 'off' is configured but not attested in the seal; "
                                "review it, then run: ductile plugin lock off",)
    verdict = verify_integrity(facts(configured={}, current={}))
    assert verdict.warnings == ("plugin 'echo' is attested in the seal but no longer "
                                "configured; run 'ductile plugin lock --all' to prune it",)
    verdict = verify_integrity(facts(current={"echo": "it was not discovered under plugin_roots"}))
    assert verdict.errors == ("plugin 'echo' is attested but cannot be checked: it was not "
                              "discovered under plugin_roots",)


def test_moved_or_reconfigured_plugins_with_the_same_bytes_only_warn() -> None:
    moved = replace(fingerprint(), entrypoint_resolved_path="/q/run", enabled=False, uses="x")
    verdict = verify_integrity(facts(configured={"echo": Configured(False, "x")},
                                     current={"echo": moved}))
    assert verdict.errors == ()
    assert verdict.warnings == (
        "plugin 'echo': entrypoint moved from /p/echo/run to /q/run (same bytes); run "
        "'ductile plugin lock echo' to record it",
        "plugin 'echo': enabled/uses changed since it was attested (enabled True -> False, uses "
        "- -> x); run 'ductile plugin lock echo' to record it")


def test_attested_plugins_without_the_vault_nonce_are_an_error() -> None:
    verdict = verify_integrity(facts(current={}, nonce_problem="no vault is loaded"))
    assert verdict.errors == ("the seal attests plugins (echo) but they cannot be checked: no "
                              "vault is loaded; plugin fingerprints are keyed with the vault "
                              "nonce, so the vault must be present and open",)


def test_a_seal_attesting_no_plugin_only_warns() -> None:
    verdict = verify_integrity(facts(seal=replace(VALID, plugin_fingerprints=())))
    assert verdict.errors == ()
    assert verdict.warnings == ("no plugin is attested in the seal at /c/.checksums (1 "
                                "configured); run 'ductile plugin lock --all' to attest them",)


def test_fail_on_drift_turns_warnings_into_the_refusal() -> None:
    verdict = verify_integrity(facts(FileFact(SealedFile("/c/config.yaml", OPERATIONAL), H1),
                                     seal=None))
    assert refusal_text(verdict, reason="startup", fail_on_drift=False) is None
    assert refusal_text(verdict, reason="startup", fail_on_drift=True) == (
        "integrity check failed (admission.fail_on_drift): operational drift: no .checksums "
        "seal at /c/.checksums; run 'ductile config lock --config-dir /c' to seal the config "
        "files")
    errors = verify_integrity(facts(seal=None))
    assert refusal_text(errors, reason="reload", fail_on_drift=False).startswith(
        "config reload rejected: no .checksums seal at /c/.checksums")


# --------------------------------------------------------------------------- policy and gate


def test_policy_startup_follows_the_switches_reload_verifies_any_seal() -> None:
    off, on = AdmissionConfig(), AdmissionConfig(verify_integrity_on_boot=True,
                                                 fail_on_drift=True)
    assert integrity_policy(reason="startup", admission=off, previous=None,
                            sealed=True) == IntegrityPolicy(verify=False, fail_on_drift=False)
    assert integrity_policy(reason="startup", admission=on, previous=None, sealed=False).verify
    reload_sealed = integrity_policy(reason="reload", admission=off, previous=off, sealed=True)
    assert reload_sealed.verify and not reload_sealed.fail_on_drift
    assert not integrity_policy(reason="reload", admission=off, previous=off,
                                sealed=False).verify
    # The running config's switches win: a reload can neither skip the seal it verified at
    # boot nor switch fail_on_drift off.
    kept = integrity_policy(reason="reload", admission=off, previous=on, sealed=False)
    assert kept.verify and kept.fail_on_drift


def _config(admission: AdmissionConfig) -> Config:
    return Config(service=ServiceConfig(admission=admission), state_path="/s/state.db",
                  api=ApiConfig(), plugin_roots=("/p",),
                  plugins={"echo": PluginConf(name="echo", enabled=True)},
                  config_path="/c/config.yaml", config_dir="/c", source="explicit")


def test_the_gate_refuses_only_under_its_policy() -> None:
    drifted = facts(FileFact(SealedFile("/c/config.yaml", OPERATIONAL), H3))
    strict = _config(AdmissionConfig(verify_integrity_on_boot=True, fail_on_drift=True))
    relaxed = _config(AdmissionConfig())
    assert gates.integrity_verified(BootFacts(config=relaxed, integrity=drifted)) is None
    assert gates.integrity_verified(BootFacts(config=strict)) is None  # nothing gathered
    refusal = gates.integrity_verified(BootFacts(config=strict, integrity=drifted))
    assert refusal is not None and refusal.gate == "integrity_verified"
    assert "hash mismatch for /c/config.yaml" in refusal.reason
    reload = BootFacts(reason="reload", config=relaxed, previous=strict, integrity=drifted)
    refusal = gates.integrity_verified(reload)
    assert refusal is not None
    assert refusal.reason.startswith("config reload rejected (admission.fail_on_drift)")


# --------------------------------------------------------------------------- plugin lock --all


def test_the_change_set_and_its_code() -> None:
    recorded = (fingerprint("echo"), fingerprint("gone"), fingerprint("same"))
    current = {"echo": fingerprint("echo", entry=H3), "fresh": fingerprint("fresh"),
               "same": fingerprint("same")}
    changes = attestation_changes(recorded, current, ["echo", "fresh", "same", "skipped"])
    assert [c.line() for c in changes] == ["  ~ changed  echo", "  + new      fresh",
                                           "  - removed  gone (no longer configured)"]
    code = confirmation_code(changes)
    assert len(code) == 5 and int(code, 16) >= 0
    assert confirmation_code(reversed(changes)) == code
    other = attestation_changes(recorded, {**current, "echo": fingerprint("echo", entry=H1)},
                                ["echo", "fresh", "same"])
    assert confirmation_code(other) != code
    after = apply_changes(recorded, changes)
    assert [fp.name for fp in after] == ["echo", "fresh", "same"]
    assert after[0].entrypoint_hash == H3
    assert attestation_changes(after, current, ["echo", "fresh", "same"]) == ()
    assert AttestChange("-", "x", None).fingerprint is None


def test_collect_hashes_files_and_fingerprints_plugins_only_when_attested(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("plugin_roots: [/p]\n")
    write_checksums(str(tmp_path / ".checksums"),
                    Checksums("t", {str(tmp_path / "config.yaml"): H1}))
    confs = {"echo": PluginConf(name="echo", enabled=True)}
    found = collect_seal_facts(str(tmp_path), str(tmp_path / "config.yaml"),
                               plugin_confs=confs, plugins={}, nonce=None)
    assert found.sealed and found.seal_problem is None and found.nonce_problem is None
    assert found.files[0].digest == file_digest(str(tmp_path / "config.yaml"))
    assert found.current == {}
    write_checksums(str(tmp_path / ".checksums"),
                    Checksums("t", {str(tmp_path / "config.yaml"): H1}, (fingerprint(),)))
    found = collect_seal_facts(str(tmp_path), str(tmp_path / "config.yaml"),
                               plugin_confs=confs, plugins={}, nonce=None)
    assert found.nonce_problem == "no vault is loaded"
    found = collect_seal_facts(str(tmp_path), str(tmp_path / "config.yaml"),
                               plugin_confs=confs, plugins={}, nonce=NONCE)
    assert found.current == {"echo": "it was not discovered under plugin_roots"}
    (tmp_path / ".checksums").write_text("version: 3\nhashes: {}\n")
    found = collect_seal_facts(str(tmp_path), str(tmp_path / "config.yaml"),
                               plugin_confs=confs, plugins={}, nonce=NONCE)
    assert found.seal is None and "unsupported checksums version" in (found.seal_problem or "")


# --------------------------------------------------------------------------- scope files at load


def _scoped(tmp_path: Path) -> Path:
    (tmp_path / "config.yaml").write_text("plugin_roots: [/p]\ninclude: [hooks/webhooks.yaml]\n")
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "webhooks.yaml").write_text("# no endpoints yet\n")
    return tmp_path / "hooks" / "webhooks.yaml"


def test_an_included_scope_file_without_a_seal_beside_it_loads(tmp_path: Path) -> None:
    _scoped(tmp_path)
    parse_config(str(tmp_path))


def test_an_included_scope_file_must_match_the_seal_beside_it(tmp_path: Path) -> None:
    hooks = _scoped(tmp_path)
    seal = hooks.parent / ".checksums"
    write_checksums(str(seal), Checksums("t", {str(hooks): file_digest(str(hooks))}))
    parse_config(str(tmp_path))
    hooks.write_text("# edited behind the lock\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(str(tmp_path))
    text = str(caught.value)
    assert text.startswith("hooks/webhooks.yaml: scope file verification failed: hash mismatch "
                           f"for {hooks}")
    assert f"run: ductile config lock --config-dir {hooks.parent}" in text
    assert caught.value.path == str(hooks)
    parse_config(str(tmp_path), verify_scope_seals=False)  # what config lock loads with


def test_a_scope_file_missing_from_its_seal_or_a_broken_seal_fails_the_load(
    tmp_path: Path,
) -> None:
    hooks = _scoped(tmp_path)
    seal = hooks.parent / ".checksums"
    write_checksums(str(seal), Checksums("t", {}))
    with pytest.raises(ConfigError, match=f"scope file webhooks.yaml has no hash in {seal}"):
        parse_config(str(tmp_path))
    seal.write_text("version: 2\nhashes: [\n")
    with pytest.raises(ConfigError, match=r"checksum verification failed in .*hooks: failed to "
                                          r"parse checksums"):
        parse_config(str(tmp_path))


def test_a_seal_owned_by_another_account_is_refused(tmp_path: Path) -> None:
    """Only this user or root may own the seal: another account could rewrite it."""
    import os

    from ductile.config.seal import read_checksums, write_checksums

    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root (CI runs as root)")
    path = tmp_path / ".checksums"
    write_checksums(str(path), Checksums(generated_at="2026-01-01T00:00:00Z", hashes={}))
    os.chown(path, 12345, 12345)
    with pytest.raises(IntegrityError) as caught:
        read_checksums(str(path))
    assert caught.value.kind == "permissions"
    assert "owned by uid 12345" in str(caught.value)
