"""Privilege separation end to end: the real gateway, real OS accounts made for the test, real
plugin processes. A plugin reports the identity it runs with, and tries to read the vault key
and the database; a side door refuses the boot under fail_on_sidedoor; a plugin edited after
boot gets no secrets while one without secrets still runs.

Root only (CI runs as root): the tests create users and groups and remove them afterwards.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.accounts import OsUser, needs_root, open_dir, os_group, os_user
from support.gateway import Gateway, free_port, make_vault, run_cli, write_config
from support.plugins import make_plugin

pytestmark = needs_root

# Reports who it runs as and whether it can read two files; the paths arrive in its config.
WHOAMI = r"""
req=$(cat)
key=$(printf '%s' "$req" | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
db=$(printf '%s' "$req" | sed -n 's/.*"db": *"\([^"]*\)".*/\1/p')
try() { if out=$(cat "$1" 2>&1 >/dev/null); then echo readable; else echo "$out"; fi; }
printf '{"status":"ok","result":"seen","events":[{"type":"whoami.seen","payload":{"uid":"%s","gid":"%s",'\
'"groups":"%s","cwd":"%s","home":"%s","cache":"%s","key":"%s","db":"%s","x":"%s",'\
'"nnp":"%s"}}]}\n' "$(id -u)" "$(id -g)" "$(id -G)" "$(pwd)" \
"$HOME" "$XDG_CACHE_HOME" "$(try "$key")" "$(try "$db")" "$DUCTILE_PAYLOAD_X" \
"$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status)"
"""


@pytest.fixture
def base() -> Iterator[Path]:
    """Config, plugins and account directories under a directory accounts can traverse, so
    the only thing between a plugin and the vault key is the floor's own modes."""
    with open_dir() as path:
        yield Path(path)


def _whoami(root: Path) -> None:
    plugin = make_plugin(root, "whoami", WHOAMI)
    manifest = yaml.safe_load((plugin / "manifest.yaml").read_text())
    manifest["payload_env"] = True
    (plugin / "manifest.yaml").write_text(yaml.safe_dump(manifest))


def _enforcing_config(base: Path, user: OsUser, **service: Any) -> tuple[Path, int]:
    cfg, port = base / "cfg", free_port()
    cfg.mkdir(mode=0o755)
    _whoami(base / "plugins")
    write_config(cfg, port=port, plugin_roots=[str(base / "plugins")], service=service,
                 plugins={"whoami": {"enabled": True, "config": {
                     "key": str(cfg / "vault.key"), "db": str(cfg / "data" / "state.db")}}},
                 extra={"accounts": {"default": {
                     "user": user.name, "state_dir": str(base / "accounts" / "default")}}})
    return cfg, port


def test_an_enforcing_gateway_runs_each_plugin_as_its_account(base: Path) -> None:
    with os_user() as user:
        cfg, port = _enforcing_config(base, user)
        gw = Gateway(cfg, port).start()
        try:
            health = gw.get("/healthz").json()
            assert health["privsep"] == {"posture": "enforcing", "accounts": 1}
            body = gw.post("/plugins/whoami/run", {"command": "poll", "sync": True,
                                                   "payload": {"x": "from payload"}}).json()
            seen = body["result"]["events"][0]["payload"]
            workdir = str(base / "accounts" / "default")
            assert (seen["uid"], seen["gid"]) == (str(user.uid), str(user.gid))
            assert sorted(seen["groups"].split()) == sorted(
                str(g) for g in set(os.getgrouplist(user.name, user.gid)))
            assert (seen["cwd"], seen["home"], seen["cache"]) == (workdir, workdir, workdir)
            assert seen["key"].endswith("Permission denied"), seen
            assert seen["db"].endswith("Permission denied"), seen
            assert seen["x"] == "from payload"
            assert seen["nnp"] == "1"  # no setuid program or sudo rule can raise it
            info = os.stat(workdir)
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, user.uid)
            assert stat.S_IMODE(os.stat(cfg / "data" / "state.db").st_mode) == 0o600
            status = run_cli("system", "status", "--config", str(cfg), "--json")
            checks = {c["name"]: c for c in json.loads(status.stdout)["checks"]}
            assert checks["privsep"]["posture"] == "enforcing"
        finally:
            gw.stop()
        lines = [r for r in gw.log_records() if r.get("msg", "").startswith("privsep")]
        assert any(r["msg"] == "privsep enforcing: plugins drop to their resolved account"
                   for r in lines)


def test_a_side_door_refuses_the_boot_under_fail_on_sidedoor(base: Path) -> None:
    with os_group("docker"), os_user(groups=("docker",)) as user:
        cfg, port = _enforcing_config(base, user, admission={"fail_on_sidedoor": True})
        gw = Gateway(cfg, port).start(wait=False)
        assert gw.wait_exit() == 78
        refusal = [r for r in gw.log_records() if r.get("gate") == "side_doors_closed"]
        assert refusal, gw.stderr()
        assert "confined account(s) default hold a host root side-door" in json.dumps(refusal)
        assert any("member of group docker" in json.dumps(r) for r in gw.log_records())


def test_a_side_door_is_logged_without_the_switch(base: Path) -> None:
    with os_group("docker"), os_user(groups=("docker",)) as user:
        cfg, port = _enforcing_config(base, user)
        gw = Gateway(cfg, port).start()
        gw.stop()
        warned = [r for r in gw.log_records()
                  if r.get("msg", "").startswith("privsep SECURITY: confined account has a host "
                                                 "root side-door")]
        assert warned and warned[0]["account"] == "default"


def test_a_root_gateway_without_accounts_refuses_unless_unconfined(tmp_path: Path) -> None:
    write_config(tmp_path, port=free_port(), service={"unconfined": False})
    gw = Gateway(tmp_path).start(wait=False)
    assert gw.wait_exit() == 78
    refusal = [r for r in gw.log_records() if r.get("gate") == "privsep_posture_decided"]
    assert refusal and "no accounts are configured" in json.dumps(refusal)
    check = run_cli("config", "check", "--config", str(tmp_path))
    assert check.returncode == 0  # the posture is the running process's; a check cannot judge it


def test_a_plugin_edited_after_boot_gets_no_secrets(tmp_path: Path) -> None:
    from ductile.vault.keys import read_key_file
    from ductile.vault.owner import VaultOwner

    port = free_port()
    root = tmp_path / "plugins"
    wants = make_plugin(root, "wants", "req=$(cat)\ncase \"$req\" in *s3cret*) got=yes;; "
                                       "*) got=no;; esac\n"
                                       'echo "{\\"status\\":\\"ok\\",\\"result\\":\\"$got\\"}"')
    make_plugin(root, "plain", "cat >/dev/null\necho '{\"status\":\"ok\",\"result\":\"plain\"}'")
    write_config(tmp_path, port=port, plugin_roots=[str(root)],
                 plugins={"wants": {"enabled": True}, "plain": {"enabled": True}})
    owner = VaultOwner.open(str(tmp_path / "vault.nacl"), read_key_file(str(tmp_path / "vault.key")))
    owner.register_principal("wants")
    owner.set_secret("svc", "s3cret", principals=["wants"])
    gw = Gateway(tmp_path, port).start()
    try:
        first = gw.post("/plugins/wants/run", {"command": "poll", "sync": True}).json()
        assert first["result"]["result"] == "yes"
        entry = wants / "run"
        entry.write_text(entry.read_text() + "# a change after boot\n")
        second = gw.post("/plugins/wants/run", {"command": "poll", "sync": True}).json()
        assert second["status"] == "failed", second
        assert f"attestation: plugin 'wants': {entry} changed since boot" in json.dumps(second), second
        plain = gw.post("/plugins/plain/run", {"command": "poll", "sync": True}).json()
        assert plain["result"]["result"] == "plain"
        shown = run_cli("job", "inspect", second["job_id"], "--config", str(tmp_path))
        assert "changed since boot" in shown.stdout
    finally:
        gw.stop()


def test_root_without_the_uid_drop_capability_boots_hygiene_only(tmp_path: Path) -> None:
    """Root launched without CAP_SETUID/CAP_SETGID (systemd's bounding set, setpriv, capsh)
    cannot change uid: with no accounts it is a hygiene-only gateway, as the refusal above
    tells the operator ("launch without CAP_SETUID")."""
    import shutil

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    port = free_port()
    write_config(tmp_path, port=port, service={"unconfined": False})
    gw = Gateway(tmp_path, port, prefix=[setpriv, "--bounding-set=-setuid,-setgid"]).start()
    try:
        assert gw.wait_healthy()["privsep"]["posture"] == "hygiene-only"
    finally:
        assert gw.stop() == 0
