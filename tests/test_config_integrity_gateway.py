"""The integrity seal end to end: `ductile config lock` / `plugin lock` write it, the real
gateway's gate `integrity_verified` judges it at boot and on reload, and every config load
checks an included scope file against the seal beside it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.gateway import BUNDLED_PLUGINS, Gateway, free_port, run_cli, write_config

VERIFY = {"verify_integrity_on_boot": True}
STRICT = {"verify_integrity_on_boot": True, "fail_on_drift": True}


def _config(tmp: Path, admission: dict[str, bool] | None = None, **kw: Any) -> Gateway:
    port = free_port()
    service = {"admission": admission} if admission is not None else None
    cfg = write_config(tmp / "cfg", port=port, service=service, **kw)
    return Gateway(cfg, port=port, env={"HOME": str(tmp)})


def _edit(cfg: Path, change: Any) -> None:
    doc = yaml.safe_load((cfg / "config.yaml").read_text())
    change(doc)
    (cfg / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _cli(gw: Gateway, *args: str) -> Any:
    return run_cli(*args, "--config", str(gw.config_dir), env={"HOME": str(gw.config_dir.parent)})


def _lock(gw: Gateway, *extra: str) -> str:
    done = _cli(gw, "config", "lock", *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _attest_all(gw: Gateway) -> str:
    preview = _cli(gw, "plugin", "lock", "--all")
    assert preview.returncode == 0, preview.stderr
    match = re.search(r"plugin lock --all ([0-9a-f]{5})", preview.stdout)
    assert match, preview.stdout
    done = _cli(gw, "plugin", "lock", "--all", match.group(1))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _refused(gw: Gateway) -> str:
    gw.start(wait=False)
    code = gw.wait_exit(60)
    assert code == 78, (code, gw.stderr()[-2000:])
    assert "(gate integrity_verified)" in gw.stderr(), gw.stderr()[-2000:]
    return gw.stderr()


def _boots(gw: Gateway) -> list[dict[str, Any]]:
    gw.start()
    try:
        return gw.log_records()
    finally:
        assert gw.stop() == 0


def test_a_locked_config_boots_and_an_unlocked_edit_is_judged_by_tier(tmp_path: Path) -> None:
    gw = _config(tmp_path, VERIFY)
    assert "Successfully locked configuration in 1 directory:" in _lock(gw)
    seal = gw.config_dir / ".checksums"
    assert seal.stat().st_mode & 0o777 == 0o600
    records = _boots(gw)
    assert any(r.get("msg") == "integrity" and "no plugin is attested" in r.get("detail", "")
               for r in records)

    # config.yaml is operational: drift is logged, and refuses only under fail_on_drift.
    _edit(gw.config_dir, lambda d: d["plugins"]["echo"]["config"].update(message="edited"))
    records = _boots(gw)
    assert any(r.get("msg") == "integrity" and "hash mismatch for" in r.get("detail", "")
               for r in records)
    _edit(gw.config_dir, lambda d: d["service"].update(admission=STRICT))
    stderr = _refused(gw)
    assert f"hash mismatch for {gw.config_dir / 'config.yaml'}" in stderr
    assert f"ductile config lock --config-dir {gw.config_dir}" in stderr

    _lock(gw)
    assert "+ new      echo" in _attest_all(gw)
    _boots(gw)  # the strict policy passes once everything is sealed and attested


def test_fail_on_drift_without_a_seal_refuses(tmp_path: Path) -> None:
    gw = _config(tmp_path, STRICT)
    stderr = _refused(gw)
    assert "integrity check failed (admission.fail_on_drift): operational drift: no " \
           f".checksums seal at {gw.config_dir / '.checksums'}" in stderr


def _tamper(seal: Path) -> None:
    text = seal.read_text()
    digest = re.search(r"[0-9a-f]{64}", text)
    assert digest
    seal.write_text(text.replace(digest.group(0), "Z" + digest.group(0)[1:]))


def _unreadable(seal: Path) -> None:
    seal.unlink()
    seal.mkdir()


BROKEN_SEALS = {
    "tampered": (_tamper, "expected 64 lowercase hex characters"),
    "truncated": (lambda s: s.write_bytes(s.read_bytes()[:40]), "failed to parse checksums"),
    "wrong-version": (lambda s: s.write_text(s.read_text().replace("version: 2", "version: 3")),
                      "unsupported checksums version"),
    "unreadable": (_unreadable, "not a regular file"),
    "writable-by-others": (lambda s: s.chmod(0o666), "writable by group or others"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SEALS))
def test_a_broken_seal_refuses_boot_and_is_never_taken_for_a_missing_one(
    tmp_path: Path, case: str,
) -> None:
    gw = _config(tmp_path, VERIFY)
    _lock(gw)
    breaks, expected = BROKEN_SEALS[case]
    breaks(gw.config_dir / ".checksums")
    stderr = _refused(gw)
    assert f"cannot use the seal at {gw.config_dir / '.checksums'}" in stderr
    assert expected in stderr


def test_a_seal_copied_from_another_directory_refuses(tmp_path: Path) -> None:
    original = _config(tmp_path / "a", VERIFY)
    _lock(original)
    copy = _config(tmp_path / "b", VERIFY)
    shutil.copy2(original.config_dir / ".checksums", copy.config_dir / ".checksums")
    stderr = _refused(copy)
    assert "was written for another directory" in stderr
    assert str(original.config_dir / "config.yaml") in stderr


def test_a_plugin_changed_after_plugin_lock_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    shutil.copytree(BUNDLED_PLUGINS / "echo", root / "echo")
    gw = _config(tmp_path, VERIFY, plugin_roots=[str(root)])
    _lock(gw)
    attested = _cli(gw, "plugin", "lock", "echo")
    assert attested.returncode == 0, attested.stderr
    assert "Attested plugin echo" in attested.stdout
    _boots(gw)

    entrypoint = root / "echo" / "run"
    entrypoint.write_text(entrypoint.read_text() + "# one more line\n")
    stderr = _refused(gw)
    assert f"plugin 'echo': entrypoint {entrypoint} changed since it was attested" in stderr
    assert "run: ductile plugin lock echo" in stderr

    check = _cli(gw, "config", "check", "--json")
    assert check.returncode == 1 and '"integrity_verified"' in check.stdout
    assert _cli(gw, "plugin", "lock", "echo").returncode == 0
    assert _cli(gw, "config", "check").returncode == 0


def test_a_reload_after_an_unlocked_edit_is_refused_while_the_old_generation_serves(
    tmp_path: Path,
) -> None:
    gw = _config(tmp_path, STRICT)
    _lock(gw)
    _attest_all(gw)
    gw.start()
    try:
        before = gw.wait_healthy()
        _edit(gw.config_dir, lambda d: d["plugins"]["echo"]["config"].update(message="locked"))
        _lock(gw)
        assert gw.post("/system/reload").status_code == 200  # a locked change reloads

        # An unlocked edit that also tries to relax fail_on_drift: the running config's
        # switch judges the reload, so the edit cannot switch it off.
        _edit(gw.config_dir, lambda d: (d["plugins"]["echo"]["config"].update(message="sneaky"),
                                        d["service"].update(admission={})))
        resp = gw.post("/system/reload")
        assert resp.status_code == 409, resp.text
        body = resp.json()
        assert body["gate"] == "integrity_verified"
        assert body["error"].startswith("config reload rejected (admission.fail_on_drift)")
        assert str(gw.config_dir / "config.yaml") in body["error"]
        health = gw.wait_healthy()
        assert health["generation"] == before["generation"] + 1
        run = gw.post("/plugins/echo/run", {"payload": {}, "command": "poll", "sync": True})
        assert run.json()["result"]["events"][0]["payload"]["message"] == "locked"
    finally:
        assert gw.stop() == 0


def test_an_included_scope_file_edited_after_the_lock_fails_the_load(tmp_path: Path) -> None:
    gw = _config(tmp_path, extra={"include": ["hooks/webhooks.yaml"]})
    hooks = gw.config_dir / "hooks" / "webhooks.yaml"
    hooks.parent.mkdir()
    hooks.write_text("# no endpoints yet\n")
    out = _lock(gw, "-v")
    assert "Successfully locked configuration in 2 directories:" in out
    assert "  HASH webhooks.yaml: " in out and "  SKIP tokens.yaml: not found (optional)" in out
    assert (hooks.parent / ".checksums").exists()
    assert _cli(gw, "config", "check").returncode == 0

    hooks.write_text("# edited behind the lock\n")
    check = _cli(gw, "config", "check")
    assert check.returncode == 1
    assert "scope file verification failed" in check.stdout
    gw.start(wait=False)
    assert gw.wait_exit(60) == 78
    assert "(gate config_loaded)" in gw.stderr()
    assert f"ductile config lock --config-dir {hooks.parent}" in gw.stderr()
    _lock(gw)  # config lock loads without the scope check, so it can re-seal the edit
    assert _cli(gw, "config", "check").returncode == 0


def test_config_lock_preserves_and_prunes_plugin_records_and_plugin_lock_guards(
    tmp_path: Path,
) -> None:
    gw = _config(tmp_path, plugins={"echo": {"enabled": True, "config": {"message": "hi"}},
                                    "loud": {"enabled": False, "uses": "echo"}})
    nothing = _cli(gw, "plugin", "lock", "echo")
    assert nothing.returncode == 1
    assert "run 'ductile config lock' first to lock the config files" in nothing.stderr
    _lock(gw)
    committed = _attest_all(gw)
    assert "+ new      echo" in committed and "+ new      loud" in committed
    again = _cli(gw, "plugin", "lock", "--all")
    assert again.returncode == 0 and "Nothing to attest" in again.stdout
    _edit(gw.config_dir, lambda d: d["plugins"]["echo"]["config"].update(message="x"))
    seal = gw.config_dir / ".checksums"
    before = seal.read_bytes()
    dry = _lock(gw, "--dry-run", "-v")
    assert "DRY-RUN .checksums" in dry and "Dry run completed for 1 directory" in dry
    assert seal.read_bytes() == before

    _edit(gw.config_dir, lambda d: d["plugins"].pop("loud"))
    out = _lock(gw, "-v")
    assert re.search(r"PRESERVE \[plugin\] echo manifest=\S+ entrypoint=\S+", out)
    assert "PRUNE [plugin] loud (no longer configured)" in out
    doc = yaml.safe_load(seal.read_text())
    assert [fp["name"] for fp in doc["plugin_fingerprints"]] == ["echo"]


def test_plugin_lock_all_commits_only_the_previewed_change_set(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    shutil.copytree(BUNDLED_PLUGINS / "echo", root / "echo")
    gw = _config(tmp_path, plugin_roots=[str(root)])
    _lock(gw)
    preview = _cli(gw, "plugin", "lock", "--all")
    code = re.search(r"plugin lock --all ([0-9a-f]{5})", preview.stdout)
    assert code and "+ new      echo" in preview.stdout
    (root / "echo" / "manifest.yaml").write_text(
        (root / "echo" / "manifest.yaml").read_text() + "# changed after the preview\n")
    stale = _cli(gw, "plugin", "lock", "--all", code.group(1))
    assert stale.returncode == 1
    assert f"confirmation code '{code.group(1)}' does not match the current change set" \
        in stale.stderr
    assert "plugin_fingerprints" not in (gw.config_dir / ".checksums").read_text()


def test_plugin_lock_needs_the_vault(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "cfg")  # no API, no vault
    assert run_cli("config", "lock", "--config", str(cfg)).returncode == 0
    done = run_cli("plugin", "lock", "echo", "--config", str(cfg), env={"HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "plugin attestation requires the vault, but none is loaded" in done.stderr
    assert "keyed-or-nothing" in done.stderr
