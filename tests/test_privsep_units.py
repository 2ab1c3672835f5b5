"""Privilege separation, piece by piece: the accounts table (decode, rules, resolution against
the real passwd database), the posture table, the boot gates, per-thread credentials with real
spawns, attestation's stat cache, and the payload environment."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio

from ductile.boot import gates
from ductile.boot.gates import BootFacts
from ductile.config.accounts import AccountConf, account_for, validate_accounts
from ductile.config.load import load_config
from ductile.errors import AccountDropError, ConfigError
from ductile.plugin.credentials import Credentials, acting_as, spawn_as
from ductile.plugin.payload_env import PayloadEnvError, payload_environment, variable_name
from ductile.plugin.spawn import spawn_plugin
from ductile.privsep import attest
from ductile.privsep.accounts import Account, resolve_accounts
from ductile.privsep.posture import (
    ENFORCING,
    HYGIENE_ONLY,
    UNCONFINED_POSTURE,
    Capability,
    Privsep,
    capability_from,
    decide,
)
from support.accounts import needs_root, open_dir, os_group, os_user
from support.gateway import write_config

ROOT = Capability(True, "root", 0)
CAPS = Capability(True, "CAP_SETUID+CAP_SETGID", 1000)
NONE = Capability(False, "none", 1000)


# --- the accounts table ------------------------------------------------------------------------


def _load(tmp_path: Path, accounts: object, **plugin: object) -> object:
    write_config(tmp_path, extra={"accounts": accounts},
                 plugins={"echo": {"enabled": True, **plugin}})
    return load_config(str(tmp_path))


@pytest.mark.parametrize(("accounts", "needle"), [
    ({"a": {"uid": 0, "gid": 1, "state_dir": "/x"}},
     "accounts.a: uid must be a positive uid within range (got 0) — an account is an "
     "unprivileged user, never root"),
    ({"a": {"uid": 5, "gid": -1, "state_dir": "/x"}},
     "accounts.a: gid must be a positive gid within range (got -1)"),
    ({"a": {"uid": 5, "gid": 5, "state_dir": "rel"}},
     'accounts.a: state_dir must be an absolute path (got "rel")'),
    ({"default": {"uid": 5, "gid": 5, "home": "/home/m"}},
     "accounts.default: the shared fallback tier must not be credentialed (remove `home:`)"),
    ({"t": {"uid": 5, "gid": 5, "home": "home/m"}},
     'accounts.t: home must be an absolute path (got "home/m")'),
    ({"a": {"uid": 7, "gid": 7, "state_dir": "/a"}, "b": {"uid": 7, "gid": 7, "state_dir": "/b"}},
     "accounts.a and accounts.b share uid 7 — duplicate uids are false isolation"),
    ({"unconfined": {"uid": 7, "gid": 7, "state_dir": "/a"}},
     "'unconfined' names the no-account state"),
    ({"a": {"state_dir": "/a"}}, "accounts.a: name an OS user (user: NAME) or give uid and gid"),
])
def test_account_rules_refuse_naming_the_key(tmp_path: Path, accounts: object,
                                             needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, accounts)
    assert needle in str(caught.value)


def test_run_as_must_name_a_defined_account(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"a": {"uid": 5, "gid": 5, "state_dir": "/a"}}, run_as="ghost")
    assert str(caught.value).startswith(
        'plugins.echo: run_as names an undefined account "ghost" — define it in the accounts '
        "map or remove the grant (defined: a)")


def test_accounts_and_run_as_decode(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"default": {"user": "nobody", "groups": ["users", 100],
                                       "state_dir": "/var/lib/d"}}, run_as="default")
    conf = cfg.accounts["default"]  # type: ignore[attr-defined]
    assert (conf.user, conf.groups, conf.state_dir, conf.mode) == (
        "nobody", ("users", "100"), "/var/lib/d", "confined")
    assert cfg.plugins["echo"].run_as == "default"  # type: ignore[attr-defined]
    assert not [w for w in cfg.warnings if "accounts" in w]  # type: ignore[attr-defined]


def test_a_plugin_runs_as_its_grant_else_default_else_unconfined() -> None:
    table = {"default": AccountConf("default", uid=5, gid=5, state_dir="/d")}
    assert account_for("x", table) == "x"
    assert account_for("", table) == "default"
    assert account_for("", {}) == "unconfined"
    validate_accounts(table, {"echo": "default", "other": ""})


def test_resolution_names_a_missing_user_and_group() -> None:
    resolved, problems = resolve_accounts({
        "a": AccountConf("a", user="no-such-user-ductile", state_dir="/a"),
        "b": AccountConf("b", uid=4242, gid=4242, groups=("no-such-group-ductile",),
                         state_dir="/b"),
        "c": AccountConf("c", uid=4343, gid=4343, state_dir="/c")})
    assert problems[0].startswith('accounts.a: user "no-such-user-ductile" does not exist on '
                                  "this host; create it (useradd --system")
    assert problems[1].startswith('accounts.b: group "no-such-group-ductile" does not exist')
    assert resolved["c"].groups == (4343,) and resolved["c"].user is None


@needs_root
def test_resolution_takes_the_users_ids_and_groups() -> None:
    with os_group("ductile-extra") as extra, os_user(groups=("ductile-extra",)) as user:
        resolved, problems = resolve_accounts({
            "default": AccountConf("default", user=user.name, state_dir="/srv/d")})
        assert problems == []
        account = resolved["default"]
        assert (account.uid, account.gid, account.user) == (user.uid, user.gid, user.name)
        assert account.groups == tuple(sorted({user.gid, extra}))
        assert account.environment() == {"HOME": "/srv/d", "XDG_CACHE_HOME": "/srv/d",
                                         "USER": user.name, "LOGNAME": user.name}


# --- the posture -------------------------------------------------------------------------------


@pytest.mark.parametrize(("cap", "accounts", "unconfined", "posture", "needle"), [
    (ROOT, 1, False, ENFORCING, "privsep enforcing"),
    (CAPS, 2, False, ENFORCING, "privsep enforcing"),
    (ROOT, 0, False, None, "gateway holds the uid-drop capability (root) but no accounts are "
                           "configured — refusing to run plugins at gateway privilege"),
    (NONE, 1, False, None, "accounts are configured but the gateway lacks the uid-drop "
                           "capability (CAP_SETUID/SETGID)"),
    (NONE, 0, False, HYGIENE_ONLY, "(hygiene-only)"),
    (ROOT, 0, True, UNCONFINED_POSTURE, "privsep UNCONFINED"),
    (NONE, 3, True, UNCONFINED_POSTURE, "privsep UNCONFINED"),
])
def test_the_posture_table(cap: Capability, accounts: int, unconfined: bool,
                           posture: str | None, needle: str) -> None:
    decision = decide(cap, accounts, unconfined)
    assert decision.posture == posture
    assert needle in (decision.refusal or decision.message)
    if posture is None:
        assert "service.unconfined: true" in (decision.refusal or "")


def test_an_unsupported_host_cannot_enforce() -> None:
    cap = Capability(True, "root", 0, unsupported="privilege separation needs Linux")
    decision = decide(cap, 1, False)
    assert decision.posture is None and "needs Linux" in (decision.refusal or "")


@pytest.mark.parametrize(("euid", "status", "can", "how"), [
    (0, "", True, "root"),  # no status to read: root is taken to hold them
    (0, "CapEff:\t000001ffffffffff\n", True, "root"),
    # root launched without CAP_SETUID/CAP_SETGID (capsh --drop, a bounding set) cannot switch
    (0, "CapEff:\t000001fffeffff3f\n", False, "none"),
    (1000, "CapEff:\t00000000000000c0\n", True, "CAP_SETUID+CAP_SETGID"),
    (1000, "CapEff:\t0000000000000080\n", False, "none"),  # SETUID without SETGID
    (1000, "CapEff:\tnot-hex\n", False, "none"),
    (1000, "", False, "none"),
])
def test_capability_is_read_from_capeff(euid: int, status: str, can: bool, how: str) -> None:
    cap = capability_from(euid, status)
    assert (cap.can_switch, cap.how) == (can, how)


def test_the_privsep_gates_refuse_naming_themselves() -> None:
    from ductile.privsep.floor import FloorReport
    from ductile.privsep.sidedoor import AuditVerdict

    cases = {
        "accounts_resolved": BootFacts(account_problems=("accounts.a: user \"x\" does not "
                                                         "exist",)),
        "privsep_posture_decided": BootFacts(privsep=decide(ROOT, 0, False)),
        "filesystem_floor_held": BootFacts(floor=FloorReport(problems=("privsep: \"/v\" is "
                                                                       "owned by uid 5",))),
        "side_doors_closed": BootFacts(sidedoors=AuditVerdict(refusal="privsep side-door "
                                                                      "audit: ...", log=())),
    }
    for name, facts in cases.items():
        refusal = gates.GATES[name](facts)
        assert refusal is not None and refusal.gate == name
    for name in cases:
        assert gates.GATES[name](BootFacts(privsep=decide(ROOT, 1, False),
                                           floor=FloorReport(),
                                           sidedoors=AuditVerdict(None, ()))) is None


def test_privsep_resolves_each_plugins_account_only_when_enforcing(tmp_path: Path) -> None:
    write_config(tmp_path, plugins={"echo": {"enabled": True},
                                    "sys_exec": {"enabled": True, "run_as": "tight"}},
                 extra={"accounts": {"default": {"uid": 5001, "gid": 5001, "state_dir": "/d"},
                                     "tight": {"uid": 5002, "gid": 5002, "state_dir": "/t"}}})
    cfg = load_config(str(tmp_path))
    accounts, _ = resolve_accounts(cfg.accounts)
    privsep = Privsep.build(ENFORCING, cfg, accounts, {"echo": 1, "sys_exec": 1})
    assert privsep.plugin_accounts == {"echo": "default", "sys_exec": "tight"}
    creds = privsep.credentials_for("sys_exec")
    assert creds is not None and (creds.uid, creds.cwd) == (5002, "/t")
    assert Privsep.build(UNCONFINED_POSTURE, cfg, accounts, {}).credentials_for("echo") is None


# --- per-thread credentials --------------------------------------------------------------------


@needs_root
def test_a_plugin_starts_as_the_account_and_the_gateway_keeps_its_identity() -> None:
    with os_user() as user, open_dir() as base:
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        os.chown(work, user.uid, user.gid)
        script = os.path.join(base, "who")
        Path(script).write_text("#!/bin/sh\ncat >/dev/null\necho \"$(id -u) $(id -g) "
                                "$(id -G) $(pwd)\"\n")
        os.chmod(script, 0o755)
        creds = Credentials(user.uid, user.gid, (user.gid, 100), work, "t")
        before = (os.getresuid(), os.getresgid(), os.getgroups())

        async def run() -> bytes:
            result = await spawn_plugin(script, b"{}", timeout=5, env={"PATH": "/usr/bin:/bin"},
                                        credentials=creds)
            return result.stdout

        out = trio.run(run).decode().split()
        assert out[:2] == [str(user.uid), str(user.gid)]
        assert sorted(out[2:4]) == sorted([str(user.gid), "100"]) and out[4] == work
        assert (os.getresuid(), os.getresgid(), os.getgroups()) == before


@needs_root
def test_a_refused_drop_is_an_account_drop_error_and_changes_nothing() -> None:
    """A thread that gave up root for good cannot switch: the kernel's EPERM is reported as
    AccountDropError and the thread keeps the identity it had."""
    from ductile.plugin import credentials

    seen: dict[str, object] = {}

    def dropped_thread() -> None:
        credentials._set_resuid(65534, 65534, 65534)  # this thread only
        try:
            with acting_as(Credentials(4242, 4242, (4242,), "/", "x")):
                seen["ran"] = True
        except AccountDropError as exc:
            seen["error"] = str(exc)
        seen["after"] = os.getresuid()

    thread = threading.Thread(target=dropped_thread)
    thread.start()
    thread.join()
    assert "ran" not in seen
    assert "cannot drop to account 'x' (uid 4242, gid 4242)" in str(seen["error"])
    assert seen["after"] == (65534, 65534, 65534)
    assert os.getresuid() == (0, 0, 0)  # the main thread never changed


@needs_root
def test_spawn_as_reports_a_missing_working_directory() -> None:
    with pytest.raises(OSError):
        spawn_as(Credentials(65534, 65534, (65534,), "/nonexistent-dir-ductile", "n"),
                 "/bin/true", {}, [], [])
    assert os.getresuid() == (0, 0, 0)


# --- attestation -------------------------------------------------------------------------------


def test_attestation_hashes_again_only_after_a_change(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    entry = tmp_path / "run"
    entry.write_text("#!/bin/sh\necho one\n")
    nonce = os.urandom(32)
    baselines, problems = attest.take_baselines({"p": str(entry)}, nonce, {})
    assert problems == {} and baselines["p"].source == "boot"
    attestor = attest.Attestor(nonce, baselines)
    calls = []
    real = attest.keyed_file_digest
    monkeypatch.setattr(attest, "keyed_file_digest",
                        lambda path, key: calls.append(path) or real(path, key))
    assert attestor.refusal("p") is None and attestor.refusal("p") is None
    assert len(calls) == 1  # the second check was a stat, not a hash
    entry.write_text("#!/bin/sh\necho two\n")
    refusal = attestor.refusal("p")
    assert refusal is not None
    assert f"attestation: plugin 'p': {entry} changed since boot" in refusal
    assert "run 'ductile plugin lock p'" in refusal
    entry.write_text("#!/bin/sh\necho one\n")  # the attested bytes again
    assert attestor.refusal("p") is None
    assert len(calls) == 3


def test_attestation_prefers_the_seal_and_refuses_the_unattested(tmp_path: Path) -> None:
    entry = tmp_path / "run"
    entry.write_text("x")
    nonce = os.urandom(32)
    baselines, _ = attest.take_baselines({"p": str(entry)}, nonce, {"p": (str(entry), "ab" * 32)})
    attestor = attest.Attestor(nonce, baselines, {"q": "cannot read /q/run"})
    assert "changed since the .checksums seal" in (attestor.refusal("p") or "")
    assert "has no attested fingerprint (cannot read /q/run)" in (attestor.refusal("q") or "")
    assert attestor.document()[0]["source"] == "seal"


# --- the payload environment -------------------------------------------------------------------


def test_payload_environment_names_and_values() -> None:
    env = payload_environment({"host": "a b", "n": 2, "x-y z": None, "9lives": [1],
                               "X_Y_Z": True}, job_id="j1", command="poll")
    assert env == {"DUCTILE_PAYLOAD_HOST": "a b", "DUCTILE_PAYLOAD_N": "2",
                   "DUCTILE_PAYLOAD_X_Y_Z": "", "DUCTILE_PAYLOAD__9LIVES": "[1]",
                   "DUCTILE_PAYLOAD_X_Y_Z_2": "true", "DUCTILE_JOB_ID": "j1",
                   "DUCTILE_COMMAND": "poll", "DUCTILE_EVENT_TYPE": ""}
    assert variable_name("--") == "DUCTILE_PAYLOAD_VALUE"
    with pytest.raises(PayloadEnvError, match="payload key 'bad' holds a NUL byte"):
        payload_environment({"bad": "a\0b"}, job_id="j", command="poll")


def test_account_credentials_carry_the_working_directory() -> None:
    account = Account("a", 5, 6, (6, 7), None, "confined", "/w", "/w")
    assert account.credentials() == Credentials(5, 6, (6, 7), "/w", "a")
    assert account.environment() == {"HOME": "/w", "XDG_CACHE_HOME": "/w"}
