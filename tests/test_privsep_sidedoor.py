"""The side-door audit: the pure boot verdict over reports, and the probes against real
throwaway OS accounts (no mocks of the OS; the probe tests need root)."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from ductile.privsep.accounts import Account
from ductile.privsep.sidedoor import PATH_DIRS, SideDoorReport, audit, probe_account
from support.accounts import OsUser, needs_root, open_dir, os_group, os_user

REFUSAL_HEAD = ("privsep side-door audit: confined account(s) {} hold a host root side-door (or "
                "could not be verified) and service.admission.fail_on_sidedoor is on — refusing "
                "to boot a wall that cannot contain them")


def account_of(u: OsUser, mode: str = "confined") -> Account:
    groups = tuple(os.getgrouplist(u.name, u.gid))
    return Account(name="default", uid=u.uid, gid=u.gid, groups=groups, user=u.name, mode=mode,
                   workdir="/nonexistent", home="/nonexistent")


def report(name: str, mode: str = "confined", **findings: object) -> SideDoorReport:
    return SideDoorReport(account=name, uid=5000, mode=mode, **findings)  # type: ignore[arg-type]


# --- the verdict (pure) ---------------------------------------------------------------------

def test_clean_account_logs_info_and_never_refuses() -> None:
    verdict = audit([report("web")], fail_on_sidedoor=True)
    assert verdict.refusal is None
    [(level, message, fields)] = verdict.log
    assert (level, message) == ("info", "privsep side-door audit: no side door found")
    assert fields["account"] == "web" and fields["inconclusive"] == []
    assert "best-effort" in str(fields["note"])


def test_confined_door_with_fail_on_sidedoor_refuses_naming_the_account() -> None:
    verdict = audit([report("web", root_groups=("docker",))], fail_on_sidedoor=True)
    assert verdict.refusal is not None
    assert verdict.refusal.startswith(REFUSAL_HEAD.format("web"))
    assert "member of group docker (root-equivalent)" in verdict.refusal
    [(level, message, fields)] = verdict.log
    assert level == "error"
    assert message == ("privsep SECURITY: confined account has a host root side-door — "
                       "member of group docker (root-equivalent)")
    assert fields["root_groups"] == ["docker"]


def test_confined_door_without_fail_on_sidedoor_only_warns() -> None:
    verdict = audit([report("web", nopasswd_sudo=True, writable_path_dirs=("/usr/local/bin",))],
                    fail_on_sidedoor=False)
    assert verdict.refusal is None
    [(level, message, _)] = verdict.log
    assert level == "warn"
    assert message.endswith("passwordless sudo (sudo -l lists NOPASSWD); "
                            "can write /usr/local/bin (a directory on PATH)")


def test_inconclusive_confined_account_refuses_as_unproven() -> None:
    why = "sudo -n -l -U web did not answer within 4s"
    verdict = audit([report("web", inconclusive=(why,))], fail_on_sidedoor=True)
    assert verdict.refusal is not None
    assert verdict.refusal.startswith(REFUSAL_HEAD.format("web")) and why in verdict.refusal
    [(level, message, _)] = verdict.log
    assert (level, message) == ("error", "privsep SECURITY: confined account containment "
                                         f"UNPROVEN — {why}")


def test_credentialed_account_with_doors_is_logged_but_never_refuses() -> None:
    verdict = audit([report("me", "credentialed", nopasswd_sudo=True, inconclusive=("x",))],
                    fail_on_sidedoor=True)
    assert verdict.refusal is None
    [(level, message, fields)] = verdict.log
    assert level == "warn" and fields["mode"] == "credentialed"
    assert message.startswith("privsep: credentialed account has host root side-doors "
                              "(informed consent: it runs as a real user) — ")
    assert "passwordless sudo" in message


def test_mixed_reports_refuse_naming_only_the_open_confined_accounts_sorted() -> None:
    reports = [
        report("zeta", writable_plugin_paths=("/p/zeta/run",)),
        report("clean"),
        report("me", "credentialed", root_groups=("sudo",)),
        report("alpha", writable_setuid_root=("/usr/local/bin/x",)),
    ]
    verdict = audit(reports, fail_on_sidedoor=True)
    assert verdict.refusal is not None
    assert verdict.refusal.startswith(REFUSAL_HEAD.format("alpha, zeta"))
    assert "can modify setuid-root /usr/local/bin/x" in verdict.refusal  # alpha's first door
    assert [fields["account"] for _, _, fields in verdict.log] == ["alpha", "clean", "me", "zeta"]
    assert [level for level, _, _ in verdict.log] == ["error", "info", "warn", "error"]


# --- the probes, without an OS account --------------------------------------------------------

def test_gid_zero_counts_as_root_and_a_nameless_uid_is_unproven_for_sudo() -> None:
    account = Account(name="raw", uid=54321, gid=54321, groups=(0, 54321), user=None,
                      mode="confined", workdir="/nonexistent", home="/nonexistent")
    found = probe_account(account, sudo="/bin/false", path_dirs=())
    assert found.root_groups == ("root",)
    assert found.inconclusive == ("uid 54321 has no user name; sudo rules cannot be listed",)
    assert probe_account(account, sudo=None, path_dirs=()).inconclusive == ()


# --- the probes, against real accounts ------------------------------------------------------

@needs_root
def test_a_fresh_user_has_no_side_door() -> None:
    with os_user() as u:
        found = probe_account(account_of(u), path_dirs=PATH_DIRS)
    assert found.doors == () and found.inconclusive == ()
    assert not found.open


@needs_root
def test_a_docker_group_member_holds_a_root_group() -> None:
    with os_group("docker"), os_user(groups=("docker",)) as u:
        found = probe_account(account_of(u), sudo=None, path_dirs=())
    assert found.root_groups == ("docker",)
    assert found.doors == ("member of group docker (root-equivalent)",)


@needs_root
def test_a_path_dir_the_user_owns_is_writable_and_reported_once() -> None:
    with os_user() as u, open_dir() as d:
        os.chown(d, u.uid, u.gid)
        link = os.path.join(d, "link")  # a symlinked alias of the same directory: not twice
        os.symlink(".", link)
        found = probe_account(account_of(u), sudo=None, path_dirs=(d, link, "/nonexistent"))
    assert found.writable_path_dirs == (os.path.realpath(d),)
    assert found.inconclusive == ()


@needs_root
def test_a_setuid_root_binary_in_a_dir_the_user_can_write_is_a_door() -> None:
    with os_user() as u, open_dir() as d:
        os.chown(d, u.uid, u.gid)
        binary = os.path.join(d, "true")
        shutil.copy(shutil.which("true") or "/bin/true", binary)
        os.chown(binary, 0, 0)
        os.chmod(binary, 0o4755)
        os.symlink(binary, os.path.join(d, "alias"))  # symlinks are skipped
        found = probe_account(account_of(u), sudo=None, path_dirs=(d,))
    assert found.writable_setuid_root == (os.path.join(os.path.realpath(d), "true"),)


@needs_root
def test_a_setuid_root_binary_in_a_sticky_world_writable_dir_cannot_be_replaced() -> None:
    with os_user() as u, open_dir() as d:
        os.chmod(d, 0o1777)
        binary = os.path.join(d, "true")
        shutil.copy(shutil.which("true") or "/bin/true", binary)
        os.chmod(binary, 0o4755)
        found = probe_account(account_of(u), sudo=None, path_dirs=(d,))
    assert found.writable_path_dirs == (os.path.realpath(d),)  # it can still add files there
    assert found.writable_setuid_root == ()


@needs_root
def test_a_plugin_file_the_user_owns_or_can_replace_is_a_door() -> None:
    with os_user() as u, open_dir() as d:
        owned = os.path.join(d, "owned")
        root_run = os.path.join(d, "run")
        for path in (owned, root_run):
            with open(path, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(path, 0o755)
        os.chown(owned, u.uid, u.gid)
        account = account_of(u)
        assert probe_account(account, (owned, root_run, d), sudo=None,
                             path_dirs=()).writable_plugin_paths == (owned,)
        os.chown(d, u.uid, u.gid)  # now it can rename over anything in the plugin directory
        found = probe_account(account, (owned, root_run), sudo=None, path_dirs=())
        assert found.writable_plugin_paths == (owned, root_run)
        assert found.doors[-1] == f"can write its plugin file {root_run}"


@needs_root
def test_passwordless_sudo_is_found() -> None:
    sudo = shutil.which("sudo")
    if sudo is None or not os.path.isdir("/etc/sudoers.d"):
        pytest.skip("needs sudo with an /etc/sudoers.d directory")
    with os_user() as u:
        rule = f"/etc/sudoers.d/ductile-test-{u.name}"
        try:
            fd = os.open(rule, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
            with os.fdopen(fd, "w") as f:
                f.write(f"{u.name} ALL=(ALL) NOPASSWD: ALL\n")
            found = probe_account(account_of(u), sudo=sudo, path_dirs=())
        finally:
            os.unlink(rule)
    assert found.nopasswd_sudo and found.inconclusive == ()
    assert found.doors == ("passwordless sudo (sudo -l lists NOPASSWD)",)


@needs_root
def test_a_sudo_that_does_not_answer_in_time_is_inconclusive() -> None:
    with os_user() as u, open_dir() as d:
        slow = os.path.join(d, "sudo")
        with open(slow, "w") as f:
            f.write("#!/bin/sh\nsleep 30\n")  # a child of the script: its group dies too
        os.chmod(slow, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        found = probe_account(account_of(u), sudo=slow, path_dirs=(), timeout=0.5)
    assert not found.nopasswd_sudo
    assert found.inconclusive == (f"sudo -n -l -U {u.name} did not answer within 0.5s",)
