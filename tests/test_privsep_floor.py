"""The filesystem floor: the permission model (`access_problem`) on real files, and
`reconcile_floor` against real throwaway OS accounts, checked from the account's side with a
real process running as it."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ductile.privsep.accounts import Account
from ductile.privsep.floor import FloorReport, access_problem, can_read, reconcile_floor
from support.accounts import OsUser, needs_root, open_dir, os_user

# uids/gids nobody on the test host holds: access_problem only stats, so any number will do.
STRANGER = os.getuid() + 54321
STRANGER_GID = os.getgid() + 54321


def _file(path: str, mode: int, content: str = "secret\n") -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(path, mode)
    return path


def _dir(path: str, mode: int) -> str:
    os.mkdir(path)
    os.chmod(path, mode)
    return path


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _account(u: OsUser, workdir: str, *, name: str = "default", mode: str = "confined",
             uid: int | None = None) -> Account:
    return Account(name=name, uid=u.uid if uid is None else uid, gid=u.gid, groups=(u.gid,),
                   user=u.name, mode=mode, workdir=workdir, home=workdir)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# -- access_problem -----------------------------------------------------------------------------

def test_a_0700_ancestor_blocks_and_is_named() -> None:
    with open_dir() as root:
        locked = _dir(os.path.join(root, "locked"), 0o700)
        target = _file(os.path.join(locked, "f"), 0o644)
        why = access_problem(target, STRANGER, [STRANGER_GID], "read")
        assert why == (f"{locked} is 0700 owned by uid {os.getuid()}: uid {STRANGER} cannot "
                       "search it")
        assert not can_read(target, STRANGER, [STRANGER_GID])
        os.chmod(locked, 0o711)
        assert access_problem(target, STRANGER, [STRANGER_GID], "read") is None


def test_group_bits_apply_when_the_gid_is_held() -> None:
    with open_dir() as root:
        target = _file(os.path.join(root, "f"), 0o640)
        group = os.stat(target).st_gid
        assert can_read(target, STRANGER, [STRANGER_GID, group])
        why = access_problem(target, STRANGER, [STRANGER_GID], "read")
        assert why is not None and "0640" in why and "cannot read it" in why


def test_owner_bits_win_over_the_other_bits() -> None:
    with open_dir() as root:
        target = _file(os.path.join(root, "f"), 0o004)
        owner = os.stat(target).st_uid
        assert not can_read(target, owner, [])
        assert can_read(target, STRANGER, [])


def test_a_group_without_the_bit_does_not_fall_through_to_other() -> None:
    with open_dir() as root:
        target = _file(os.path.join(root, "f"), 0o604)
        assert not can_read(target, STRANGER, [os.stat(target).st_gid])
        assert can_read(target, STRANGER, [STRANGER_GID])


def test_exec_needs_a_regular_file_with_x() -> None:
    with open_dir() as root:
        script = _file(os.path.join(root, "run.sh"), 0o644, "#!/bin/sh\n")
        why = access_problem(script, STRANGER, [], "exec")
        assert why is not None and "cannot execute it" in why
        os.chmod(script, 0o755)
        assert access_problem(script, STRANGER, [], "exec") is None
        directory = _dir(os.path.join(root, "d"), 0o755)
        assert access_problem(directory, STRANGER, [], "exec") == (
            f"{directory} is not a regular file")


def test_missing_paths_and_links() -> None:
    with open_dir() as root:
        missing = os.path.join(root, "nope", "f")
        assert access_problem(missing, STRANGER, [], "read") == (
            f"{os.path.join(root, 'nope')} does not exist")
        target = _file(os.path.join(root, "f"), 0o600)
        link = os.path.join(root, "link")
        os.symlink(target, link)
        assert not can_read(link, STRANGER, [])  # the target's bits, not the link's 0777
        os.chmod(target, 0o644)
        assert can_read(link, STRANGER, [])


def test_access_problem_refuses_an_unknown_want() -> None:
    with pytest.raises(ValueError):
        access_problem("/", STRANGER, [], "write")


# -- reconcile_floor: the secrets surface -------------------------------------------------------

@needs_root
def test_a_loose_secret_is_tightened() -> None:
    with open_dir() as root:
        vault = _file(os.path.join(root, "vault.age"), 0o644)
        seal = _dir(os.path.join(root, "sealdir"), 0o755)
        report = reconcile_floor([vault, seal], {})
        assert report.held, report.problems
        assert f'tightened "{vault}" from 0644 to 0600' in report.changed
        assert f'tightened "{seal}" from 0755 to 0700' in report.changed
        assert _mode(vault) == 0o600 and _mode(seal) == 0o700
        assert reconcile_floor([vault, seal], {}) == FloorReport()  # idempotent


@needs_root
def test_a_secret_owned_by_another_uid_refuses() -> None:
    with open_dir() as root, os_user() as u:
        vault = _file(os.path.join(root, "vault.age"), 0o600)
        os.chown(vault, u.uid, u.gid)
        report = reconcile_floor([vault], {})
        assert not report.held
        assert any(f'"{vault}" is owned by uid {u.uid}' in p and "not the gateway (uid 0)" in p
                   for p in report.problems), report.problems
        # and when that uid is an account, the verification says it can read the secret
        workdir = os.path.join(root, "state")
        report = reconcile_floor([vault], {"default": _account(u, workdir)})
        assert any(f'accounts.default (uid {u.uid}) could read "{vault}"' in p
                   and "the account owns it" in p for p in report.problems), report.problems


@needs_root
def test_a_symlinked_secret_refuses() -> None:
    with open_dir() as root:
        real = _file(os.path.join(root, "real"), 0o600)
        link = os.path.join(root, "vault.age")
        os.symlink(real, link)
        report = reconcile_floor([link], {})
        assert any(f'"{link}" is a symlink' in p for p in report.problems), report.problems


@needs_root
def test_missing_secret_paths_are_skipped() -> None:
    with open_dir() as root:
        db = os.path.join(root, "state.db")
        assert reconcile_floor([db, db + "-wal", db + "-shm"], {}) == FloorReport()


# -- reconcile_floor: the accounts' directories -------------------------------------------------

@needs_root
def test_a_missing_state_dir_is_created_private_with_open_parents() -> None:
    with open_dir() as root, os_user() as u, _umask(0o077):
        state = os.path.join(root, "a", "b", "state")
        report = reconcile_floor([], {"default": _account(u, state)})
        assert report.held, report.problems
        st = os.lstat(state)
        assert stat.S_ISDIR(st.st_mode) and _mode(state) == 0o700
        assert (st.st_uid, st.st_gid) == (u.uid, u.gid)
        for parent in (os.path.join(root, "a"), os.path.join(root, "a", "b")):
            assert _mode(parent) == 0o755, parent
        assert f'created state_dir "{state}" for accounts.default' in report.changed
        assert reconcile_floor([], {"default": _account(u, state)}) == FloorReport()


@needs_root
def test_an_existing_state_dir_is_fixed() -> None:
    with open_dir() as root, os_user() as u:
        state = _dir(os.path.join(root, "state"), 0o755)
        report = reconcile_floor([], {"default": _account(u, state)})
        assert report.held, report.problems
        assert report.changed == (
            f'chowned "{state}" from 0:0 to {u.uid}:{u.gid} for accounts.default',
            f'tightened "{state}" from 0755 to 0700 for accounts.default',
        )
        st = os.lstat(state)
        assert (st.st_uid, st.st_gid, _mode(state)) == (u.uid, u.gid, 0o700)


@needs_root
def test_a_symlinked_state_dir_refuses_and_is_not_followed() -> None:
    with open_dir() as root, os_user() as u:
        elsewhere = _dir(os.path.join(root, "elsewhere"), 0o755)
        state = os.path.join(root, "state")
        os.symlink(elsewhere, state)
        report = reconcile_floor([], {"default": _account(u, state)})
        assert any(f'state_dir "{state}" is a symlink' in p for p in report.problems)
        assert os.lstat(elsewhere).st_uid == 0 and _mode(elsewhere) == 0o755


@needs_root
def test_a_state_dir_that_cannot_be_created_refuses() -> None:
    with open_dir() as root, os_user() as u:
        blocker = _file(os.path.join(root, "plain"), 0o644)
        state = os.path.join(blocker, "state")
        report = reconcile_floor([], {"default": _account(u, state)})
        assert len(report.problems) == 1
        assert f'state_dir "{state}" is missing and cannot be created' in report.problems[0]
        assert "systemd-tmpfiles" in report.problems[0]


@needs_root
def test_a_state_dir_the_account_cannot_reach_refuses() -> None:
    with open_dir() as root, os_user() as u:
        locked = _dir(os.path.join(root, "locked"), 0o700)
        state = os.path.join(locked, "state")
        report = reconcile_floor([], {"default": _account(u, state)})
        assert report.problems == (
            f"privsep: accounts.default cannot reach its state_dir: {locked} is 0700 owned by "
            f"uid 0: uid {u.uid} cannot search it; make every directory on the way searchable "
            "(o+x)",)


@needs_root
def test_a_credentialed_home_owned_by_root_refuses() -> None:
    with open_dir() as root, os_user() as u:
        home = _dir(os.path.join(root, "home"), 0o755)
        report = reconcile_floor([], {"ops": _account(u, home, name="ops", mode="credentialed")})
        assert report.problems == (
            f'privsep: accounts.ops: home "{home}" is owned by uid 0, not the account uid '
            f"{u.uid} — that is not the operator's home",)
        assert os.lstat(home).st_uid == 0  # verified, never changed
        os.chown(home, u.uid, u.gid)
        assert reconcile_floor([], {"ops": _account(u, home, name="ops",
                                                    mode="credentialed")}).held


@needs_root
def test_an_account_with_the_gateway_uid_refuses() -> None:
    with open_dir() as root, os_user() as u:
        vault = _file(os.path.join(root, "vault.age"), 0o600)
        state = os.path.join(root, "state")
        report = reconcile_floor([vault], {"default": _account(u, state, uid=0)})
        assert any("accounts.default has the gateway's own uid 0" in p
                   for p in report.problems), report.problems


# -- reconcile_floor: entrypoints ---------------------------------------------------------------

@needs_root
def test_an_entrypoint_behind_a_locked_dir_refuses_naming_it() -> None:
    with open_dir() as root, os_user() as u:
        locked = _dir(os.path.join(root, "plugins"), 0o700)
        entry = _file(os.path.join(locked, "run.sh"), 0o755, "#!/bin/sh\n")
        state = os.path.join(root, "state")
        report = reconcile_floor([], {"default": _account(u, state)},
                                 entrypoints={"echo": ("default", entry)})
        assert len(report.problems) == 1, report.problems
        problem = report.problems[0]
        assert problem.startswith(f"privsep: plugin echo runs as accounts.default, which cannot "
                                  f"execute {entry}: {locked} is 0700 owned by uid 0")
        assert "searchable (o+x)" in problem


@needs_root
def test_an_entrypoint_in_an_open_dir_holds() -> None:
    with open_dir() as root, os_user() as u:
        entry = _file(os.path.join(root, "run.sh"), 0o755, "#!/bin/sh\n")
        state = os.path.join(root, "state")
        report = reconcile_floor([], {"default": _account(u, state)},
                                 entrypoints={"echo": ("default", entry),
                                              "other": ("undefined", "/nonexistent")})
        assert report.held, report.problems


# -- from the account's side of the wall ------------------------------------------------------

@needs_root
def test_after_reconcile_the_account_really_cannot_read_the_vault() -> None:
    with open_dir() as root, os_user() as u:
        vault = _file(os.path.join(root, "vault.age"), 0o644)
        before = subprocess.run(["cat", vault], user=u.uid, group=u.gid, extra_groups=[],
                                capture_output=True, text=True)
        assert before.returncode == 0 and before.stdout == "secret\n"
        state = os.path.join(root, "state")
        report = reconcile_floor([vault], {"default": _account(u, state)})
        assert report.held, report.problems
        after = subprocess.run(["cat", vault], user=u.uid, group=u.gid, extra_groups=[],
                               capture_output=True, text=True)
        assert after.returncode != 0
        assert "Permission denied" in after.stderr
        # and its own state_dir is its to use
        made = subprocess.run(["touch", os.path.join(state, "x")], user=u.uid, group=u.gid,
                              extra_groups=[], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr


def test_a_script_must_also_be_readable_to_run() -> None:
    """A `#!` script runs through its interpreter, which opens it as the account."""
    with open_dir() as base:
        script = os.path.join(base, "run")
        with open(script, "w") as handle:
            handle.write("#!/bin/sh\necho hi\n")
        os.chmod(script, 0o711)
        why = access_problem(script, 4242, (4242,), "exec")
        assert why is not None and "cannot read it" in why
        os.chmod(script, 0o755)
        assert access_problem(script, 4242, (4242,), "exec") is None


@needs_root
def test_a_tls_key_an_account_could_read_refuses_and_is_never_changed() -> None:
    with open_dir() as root, os_user() as u:
        workdir = os.path.join(root, "state")
        key = _file(os.path.join(root, "server.key"), 0o640)
        os.chown(key, 0, u.gid)  # the account's group may read it, as an ssl-cert group would
        report = reconcile_floor([], {"default": _account(u, workdir)}, walled_paths=[key])
        assert any(f'accounts.default (uid {u.uid}) could read "{key}"' in p
                   for p in report.problems), report.problems
        assert _mode(key) == 0o640 and os.stat(key).st_gid == u.gid  # verified, not changed
        os.chown(key, 0, 0)
        report = reconcile_floor([], {"default": _account(u, workdir)}, walled_paths=[key])
        assert report.held, report.problems
        assert not any(key in line for line in report.changed)
