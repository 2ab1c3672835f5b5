"""The filesystem floor, reconciled at boot in the enforcing posture: the files that hold
secrets (the vault, its key, the database and its -wal/-shm, the `.checksums` seal) are private
to the gateway, each confined account has its own 0700 working directory, no account can read a
secret, and every account can run the entrypoints of its plugins.

All-or-refuse: the floor is brought about where the gateway can do it safely (tighten a mode,
create and chown a state_dir), and everything else becomes one problem line each, collected in
full so the operator fixes them in one pass; any problem refuses the boot. OS errors never
escape as exceptions, they become problem lines naming the path and what to do.

The access model is classic POSIX permission bits, evaluated from stat results alone: owner
bits when the uid owns the inode, else group bits when one of its gids is the inode's group,
else the other bits; every directory on the way needs search (x). ACLs, capabilities, LSMs and
mount options are ignored, so the answer may be "can" where the kernel would still say no, but
never the reverse for a plain permission-bit host. No uid bypasses the bits here: an account is
never root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from ductile.privsep.accounts import Account

_R, _X = 4, 1
_NO_ENTRYPOINTS: Mapping[str, tuple[str, str]] = MappingProxyType({})
_VERBS = {"read": (_R, "read"), "exec": (_X, "execute"), "search": (_X, "search")}


@dataclass(frozen=True)
class FloorReport:
    """What reconciliation did (`changed`) and what it could not do (`problems`)."""

    changed: tuple[str, ...] = ()  # one line per change made
    problems: tuple[str, ...] = ()  # one line per path not brought to the floor; each refuses

    @property
    def held(self) -> bool:
        return not self.problems


def access_problem(path: str, uid: int, gids: Sequence[int], want: str) -> str | None:
    """None when `uid` holding `gids` can `want` ("read" | "exec") `path`, else why not, naming
    the first blocking path component with its mode and owner. Only stats, so a root gateway
    can ask it about any account."""
    if want not in ("read", "exec"):
        raise ValueError(f'want must be "read" or "exec", not {want!r}')
    return _blocker(path, uid, gids, want)


def can_read(path: str, uid: int, gids: Sequence[int]) -> bool:
    return access_problem(path, uid, gids, "read") is None


def reconcile_floor(
    secret_paths: Sequence[str],
    accounts: Mapping[str, Account],
    *,
    entrypoints: Mapping[str, tuple[str, str]] = _NO_ENTRYPOINTS,
    gateway_uid: int | None = None,
    walled_paths: Sequence[str] = (),
) -> FloorReport:
    """Bring the secrets surface and the accounts' directories to the floor, then verify that
    no account can read a secret and each can execute its plugins' entrypoints
    (`entrypoints`: plugin name -> (account name, entrypoint path)).

    `walled_paths` are secrets the gateway does not own (a TLS private key that certbot renews,
    perhaps group-readable by a `ssl-cert` group): they are never chmod-ed or chown-ed here, only
    verified to be out of every account's reach."""
    gateway = os.geteuid() if gateway_uid is None else gateway_uid
    changed: list[str] = []
    problems: list[str] = []
    present = [p for p in secret_paths if _secure_secret(p, gateway, changed, problems)]
    present += [p for p in walled_paths if os.path.lexists(p)]
    for name in sorted(accounts):
        account = accounts[name]
        if account.mode == "confined":
            _confine_workdir(account, changed, problems)
        else:
            _check_home(account, problems)
    for name in sorted(accounts):
        _verify_walled(accounts[name], present, gateway, problems)
    for plugin in sorted(entrypoints):
        owner, path = entrypoints[plugin]
        account = accounts.get(owner)
        if account is None:
            continue
        why = access_problem(path, account.uid, account.groups, "exec")
        if why is not None:
            problems.append(f"privsep: plugin {plugin} runs as accounts.{owner}, which cannot "
                            f"execute {path}: {why}; make every directory on the way searchable "
                            "(o+x) and the file executable for it")
    return FloorReport(changed=tuple(changed), problems=tuple(problems))


# -- the secrets surface ------------------------------------------------------------------------

def _secure_secret(path: str, gateway: int, changed: list[str], problems: list[str]) -> bool:
    """Make one secret path gateway-private; False when it does not exist (nothing to guard)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        problems.append(f'privsep: cannot inspect "{path}" ({exc.strerror}); make it reachable '
                        "by the gateway, or remove it")
        return True
    if stat.S_ISLNK(st.st_mode):
        problems.append(f'privsep: "{path}" is a symlink — the secrets surface must be real '
                        "files; replace the link with the file it points to")
        return True
    if st.st_uid != gateway:
        # Not ours to tighten: whoever owns it can read it whatever its mode, so the operator
        # has to hand it back before the mode means anything.
        problems.append(f'privsep: "{path}" is owned by uid {st.st_uid}, not the gateway (uid '
                        f"{gateway}) — the secrets surface must be gateway-owned; chown it to "
                        "the gateway's user")
        if st.st_mode & 0o077:
            problems.append(_loose(path, st.st_mode))
        return True
    if not st.st_mode & 0o077:
        return True
    want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    try:
        os.chmod(path, want)
        after = os.lstat(path).st_mode
    except OSError:
        after = st.st_mode
    if after & 0o077:
        problems.append(_loose(path, after))
    else:
        changed.append(f'tightened "{path}" from {_mode(st.st_mode)} to {_mode(after)}')
    return True


def _loose(path: str, mode: int) -> str:
    return (f'privsep: "{path}" has insecure permissions {_mode(mode)} — an account uid could '
            "read it; chmod it 600 (a directory 700)")


# -- the accounts' directories ------------------------------------------------------------------

def _confine_workdir(account: Account, changed: list[str], problems: list[str]) -> None:
    """A confined account's state_dir: created when missing (its parents 0755, so the account
    can reach it), then made the account's own, 0700."""
    where = f'privsep: accounts.{account.name}: state_dir "{account.workdir}"'
    try:
        st = os.lstat(account.workdir)
    except (FileNotFoundError, NotADirectoryError):
        why = _create_workdir(account, changed)
        if why is not None:
            problems.append(f"{where} is missing and cannot be created ({why}); create it, or "
                            "provision it with systemd-tmpfiles")
            return
        st = os.lstat(account.workdir)
    except OSError as exc:
        problems.append(f"{where} cannot be inspected ({exc.strerror}); make its parent "
                        "searchable by the gateway")
        return
    if stat.S_ISLNK(st.st_mode):
        problems.append(f"{where} is a symlink — refusing to chown through a link; give the "
                        "real path")
        return
    if not stat.S_ISDIR(st.st_mode):
        problems.append(f"{where} is not a directory; remove it or point state_dir elsewhere")
        return
    why = _own_dir(account, st, changed)
    try:
        st = os.lstat(account.workdir)
    except OSError as exc:
        problems.append(f"{where} vanished while being reconciled ({exc.strerror})")
        return
    suffix = f" (fixing it failed: {why})" if why else ""
    wrong = False
    if stat.S_IMODE(st.st_mode) != 0o700:
        problems.append(f"{where} has mode {_mode(st.st_mode)}, want 0700{suffix}")
        wrong = True
    if (st.st_uid, st.st_gid) != (account.uid, account.gid):
        problems.append(f"{where} is owned by {st.st_uid}:{st.st_gid}, want "
                        f"{account.uid}:{account.gid}{suffix}")
        wrong = True
    if not wrong:
        blocked = _ancestors_problem(account.workdir, account.uid, account.groups)
        if blocked is not None:
            problems.append(f"privsep: accounts.{account.name} cannot reach its state_dir: "
                            f"{blocked}; make every directory on the way searchable (o+x)")


def _create_workdir(account: Account, changed: list[str]) -> str | None:
    """Create the state_dir and its missing parents; None on success, else why not. Parents
    are chmodded 0755 explicitly, since the umask would otherwise decide whether the account
    can pass through them."""
    leaf = os.path.abspath(account.workdir)
    missing: list[str] = []
    probe = leaf
    while not os.path.lexists(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for path in reversed(missing):
        mode = 0o700 if path == leaf else 0o755
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: the checks that follow judge it
        except OSError as exc:
            return exc.strerror if exc.filename in (None, leaf) else (
                f"{exc.strerror}: {exc.filename}")
        try:
            os.chmod(path, mode)
        except OSError as exc:
            return f"{exc.strerror}: {path}"
        if path == leaf:
            changed.append(f'created state_dir "{path}" for accounts.{account.name}')
        else:
            changed.append(f'created "{path}" (0755) on the way to accounts.{account.name}\'s '
                           "state_dir")
    return None


def _own_dir(account: Account, st: os.stat_result, changed: list[str]) -> str | None:
    """chown/chmod the state_dir through a descriptor opened without following links, so a
    path swapped for a link after the lstat is not what gets handed over. None, or why not."""
    owner = (account.uid, account.gid)
    if (st.st_uid, st.st_gid) == owner and stat.S_IMODE(st.st_mode) == 0o700:
        return None
    try:
        fd = os.open(account.workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return exc.strerror
    try:
        if (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
            changed.append(f'chowned "{account.workdir}" from {st.st_uid}:{st.st_gid} to '
                           f"{account.uid}:{account.gid} for accounts.{account.name}")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
            changed.append(f'tightened "{account.workdir}" from {_mode(st.st_mode)} to 0700 for '
                           f"accounts.{account.name}")
    except OSError as exc:
        return exc.strerror
    finally:
        os.close(fd)
    return None


def _check_home(account: Account, problems: list[str]) -> None:
    """A credentialed account runs in its operator's home: verified, never changed."""
    where = f'privsep: accounts.{account.name}: home "{account.home}"'
    try:
        st = os.lstat(account.home)
    except OSError as exc:
        problems.append(f"{where} is not reachable: {exc.strerror}; create it or fix home:")
        return
    if stat.S_ISLNK(st.st_mode):
        problems.append(f"{where} is a symlink — refusing to trust a home reached through a "
                        "link; give its real path")
    elif not stat.S_ISDIR(st.st_mode):
        problems.append(f"{where} is not a directory")
    elif st.st_uid != account.uid:
        problems.append(f"{where} is owned by uid {st.st_uid}, not the account uid "
                        f"{account.uid} — that is not the operator's home")


# -- verification -------------------------------------------------------------------------------

def _verify_walled(account: Account, secrets: Sequence[str], gateway: int,
                   problems: list[str]) -> None:
    """Whatever step one did, check the outcome from the account's side of the wall."""
    if account.uid == gateway:
        problems.append(f"privsep: accounts.{account.name} has the gateway's own uid "
                        f"{account.uid} — there is no wall between it and the secrets; give it "
                        "its own unprivileged uid")
        return  # every secret is readable to it; one line says it
    for path in secrets:
        if can_read(path, account.uid, account.groups):
            problems.append(f'privsep: accounts.{account.name} (uid {account.uid}) could read '
                            f'"{path}" — {_grant(path, account)}; make it gateway-owned and '
                            "chmod 600, or take the account out of that group")


def _grant(path: str, account: Account) -> str:
    """Which permission class lets the account read `path`."""
    try:
        st = os.stat(path)
    except OSError as exc:  # gone since it was judged readable
        return exc.strerror or "it changed while being checked"
    mode = _mode(st.st_mode)
    if st.st_uid == account.uid:
        return f"the account owns it ({mode})"
    if st.st_gid in account.groups:
        return f"it is {mode} and its group gid {st.st_gid} is one of the account's groups"
    return f"it is {mode}, readable by everyone"


# -- the permission model -----------------------------------------------------------------------

def _blocker(path: str, uid: int, gids: Sequence[int], want: str) -> str | None:
    blocked = _ancestors_problem(path, uid, gids)
    if blocked is not None:
        return blocked
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    if want == "exec" and not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    denied = _denied(path, st, uid, gids, want)
    if denied is None and want == "exec" and _is_script(path):
        # The interpreter of a `#!` script opens it as the account: it must also be readable.
        denied = _denied(path, st, uid, gids, "read")
    return denied


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == b"#!"
    except OSError:
        return False


def _ancestors_problem(path: str, uid: int, gids: Sequence[int]) -> str | None:
    """The first directory above `path` (after resolving links) that `uid` cannot search."""
    real = os.path.realpath(path)
    parents: list[str] = []
    probe = os.path.dirname(real)
    while True:
        parents.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for directory in reversed(parents):
        try:
            st = os.stat(directory)
        except FileNotFoundError:
            return f"{directory} does not exist"
        except OSError as exc:
            return f"cannot stat {directory}: {exc.strerror}"
        why = _denied(directory, st, uid, gids, "search")
        if why is not None:
            return why
    return None


def _denied(path: str, st: os.stat_result, uid: int, gids: Sequence[int],
            want: str) -> str | None:
    bit, verb = _VERBS[want]
    if uid == st.st_uid:
        granted = (st.st_mode >> 6) & bit
    elif st.st_gid in gids:
        granted = (st.st_mode >> 3) & bit
    else:
        granted = st.st_mode & bit
    if granted:
        return None
    return f"{path} is {_mode(st.st_mode)} owned by uid {st.st_uid}: uid {uid} cannot {verb} it"


def _mode(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"
