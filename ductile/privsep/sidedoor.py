"""The side-door audit, run at boot in the enforcing posture: for each account, the ways its
plugins could get back to root around the wall privilege separation builds (passwordless sudo,
a root-equivalent group, a writable directory on PATH, a replaceable setuid-root binary, a
writable plugin entrypoint that a later root-run step might execute).

A confined account is meant to be contained, so a door there is a security finding and, with
`service.admission.fail_on_sidedoor`, refuses the boot; a credentialed account runs as a real
user by the operator's informed choice, so its doors are only logged.

Detection is best-effort, as in the Go gateway: the probes (`probe_account`, I/O) gather what
they can and say which questions they could not decide; the verdict (`audit`) is pure. The
write model is POSIX permission bits from stat results alone; ACLs, capabilities, LSMs, mount
options and writable ancestors further up than a path's own directory are not examined, so
the absence of a finding is never proof of containment.
"""

from __future__ import annotations

import enum
import grp
import os
import signal
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from shutil import which

from ductile.privsep.accounts import Account

PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Membership in any of these is root by another name (a container runtime that mounts the host,
# the raw block devices, or the sudo-granting groups of common distributions); gid 0 always
# counts as well, under the name "root".
ROOT_GROUPS = frozenset({"docker", "lxd", "incus", "disk", "sudo", "wheel", "admin"})

_SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# sudo's answers when the user has no rules; with LC_ALL=C they are stable English.
_SUDO_NEGATIVE = ("not allowed to run sudo", "is not allowed", "Sorry, user")
_NOTE = "detection is best-effort; absence of a finding is not proof of containment"


class _Default(enum.Enum):
    """Marks `sudo` left to `probe_account`, which then looks it up on PATH at call time (None
    is taken: it means sudo is not installed)."""

    WHICH = "which"


@dataclass(frozen=True)
class SideDoorReport:
    """What the probes found for one account. Every finding field is a door; `inconclusive`
    lists the questions a probe could not decide, each with why."""

    account: str
    uid: int
    mode: str  # confined | credentialed
    nopasswd_sudo: bool = False
    root_groups: tuple[str, ...] = ()  # names of held groups that grant root
    writable_path_dirs: tuple[str, ...] = ()  # PATH dirs the account can write
    writable_setuid_root: tuple[str, ...] = ()  # setuid-root files it can replace or modify
    writable_plugin_paths: tuple[str, ...] = ()  # plugin entrypoints/directories it can write
    inconclusive: tuple[str, ...] = ()  # probes that could not decide, each with why

    @property
    def doors(self) -> tuple[str, ...]:
        """One human-readable line per finding, in the order an operator should close them."""
        lines: list[str] = []
        if self.nopasswd_sudo:
            lines.append("passwordless sudo (sudo -l lists NOPASSWD)")
        lines += [f"member of group {g} (root-equivalent)" for g in self.root_groups]
        lines += [f"can write {d} (a directory on PATH)" for d in self.writable_path_dirs]
        lines += [f"can modify setuid-root {f}" for f in self.writable_setuid_root]
        lines += [f"can write its plugin file {p}" for p in self.writable_plugin_paths]
        return tuple(lines)

    @property
    def open(self) -> bool:
        return bool(self.doors)


@dataclass(frozen=True)
class AuditVerdict:
    """What boot does with the reports: refuse (with `refusal`) or not, and what to log."""

    refusal: str | None  # the boot refusal text, or None
    log: tuple[tuple[str, str, dict[str, object]], ...]  # (level, message, fields) lines


@dataclass(frozen=True)
class _Who:
    """The identity whose write access the probes judge: the account's uid and all its gids."""

    uid: int
    gids: frozenset[int]

    def can_write(self, st: os.stat_result) -> bool:
        """Owning an inode counts as writing it even without the owner-write bit, because the
        owner may chmod it; otherwise a group-write bit for a held group or the other-write
        bit. ACLs are ignored."""
        mode = st.st_mode
        return bool(st.st_uid == self.uid or mode & stat.S_IWOTH
                    or (mode & stat.S_IWGRP and st.st_gid in self.gids))

    def can_replace_in(self, dir_st: os.stat_result, entry_st: os.stat_result | None) -> bool:
        """Whether it can rename over or create an entry in the directory: write on the
        directory, and, when the directory is sticky, ownership of it or of the entry (a sticky
        /tmp-like directory lets anyone add files but not replace someone else's)."""
        if not self.can_write(dir_st):
            return False
        if not dir_st.st_mode & stat.S_ISVTX or dir_st.st_uid == self.uid:
            return True
        return entry_st is None or entry_st.st_uid == self.uid


def probe_account(
    account: Account,
    plugin_paths: Sequence[str] = (),
    *,
    sudo: str | None | _Default = _Default.WHICH,
    path_dirs: Sequence[str] = PATH_DIRS,
    timeout: float = 4.0,
) -> SideDoorReport:
    """Probe one account for side doors (reads the group database and the filesystem, and runs
    `sudo -n -l -U <user>` bounded by `timeout`). Blocking: call it from a worker thread in
    async code. `plugin_paths` are the entrypoints and plugin directories run as the account."""
    who = _Who(account.uid, frozenset({account.gid, *account.groups}))
    binary = which("sudo") if sudo is _Default.WHICH else sudo
    inconclusive: list[str] = []
    nopasswd, why = _probe_sudo(account, binary, timeout)
    if why:
        inconclusive.append(why)
    dirs, setuid = _probe_path_dirs(who, path_dirs, inconclusive)
    plugins = _probe_plugin_paths(who, plugin_paths, inconclusive)
    return SideDoorReport(
        account=account.name, uid=account.uid, mode=account.mode, nopasswd_sudo=nopasswd,
        root_groups=_root_groups(account.groups), writable_path_dirs=dirs,
        writable_setuid_root=setuid, writable_plugin_paths=plugins,
        inconclusive=tuple(inconclusive))


def audit(reports: Sequence[SideDoorReport], *, fail_on_sidedoor: bool) -> AuditVerdict:
    """The boot verdict over every account's report (sorted by account name, so the log and
    the refusal are stable). Only confined accounts can refuse, and only with
    `fail_on_sidedoor`; anything not declared credentialed is judged as confined."""
    log: list[tuple[str, str, dict[str, object]]] = []
    unproven: list[SideDoorReport] = []
    for report in sorted(reports, key=lambda r: r.account):
        log.append(_log_line(report, fail_on_sidedoor))
        if report.mode != "credentialed" and (report.open or report.inconclusive):
            unproven.append(report)
    refusal = _refusal(unproven) if fail_on_sidedoor and unproven else None
    return AuditVerdict(refusal=refusal, log=tuple(log))


def _root_groups(gids: Sequence[int]) -> tuple[str, ...]:
    names: set[str] = set()
    for gid in gids:
        if gid == 0:
            names.add("root")
            continue
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            continue
        if name in ROOT_GROUPS:
            names.add(name)
    return tuple(sorted(names))


def _probe_sudo(account: Account, sudo: str | None, timeout: float) -> tuple[bool, str | None]:
    """(NOPASSWD listed, why undecided). No sudo binary means no sudo door at all."""
    if sudo is None:
        return False, None
    if account.user is None:
        return False, f"uid {account.uid} has no user name; sudo rules cannot be listed"
    command = f"sudo -n -l -U {account.user}"
    try:
        status, output = _run_bounded([sudo, "-n", "-l", "-U", account.user], timeout)
    except subprocess.TimeoutExpired:
        return False, f"{command} did not answer within {timeout:g}s"
    except OSError as exc:
        return False, f"{command} could not run ({sudo}: {exc.strerror or exc})"
    if "NOPASSWD" in output:
        return True, None
    if any(marker in output for marker in _SUDO_NEGATIVE) or status == 0:
        return False, None
    first = next((line.strip() for line in output.splitlines() if line.strip()), "no output")
    return False, f"{command} failed (exit {status}): {first}"


def _run_bounded(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run argv with a C locale and stdout+stderr merged; on timeout kill its whole process
    group, so a helper sudo spawned cannot outlive the probe or hold the pipe open."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env={"LC_ALL": "C", "PATH": _SUDO_PATH},
                          start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise
    return proc.returncode, out.decode(errors="replace")


def _probe_path_dirs(
    who: _Who, path_dirs: Sequence[str], inconclusive: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(PATH dirs it can write, setuid-root files there it can modify or replace). Each
    directory is judged by its resolved path, once: /bin -> usr/bin is /usr/bin."""
    writable: list[str] = []
    setuid: list[str] = []
    seen: set[str] = set()
    for given in path_dirs:
        real = os.path.realpath(given)
        if real in seen:
            continue
        seen.add(real)
        dir_st = _stat(real, f"PATH directory {given}", inconclusive)
        if dir_st is None or not stat.S_ISDIR(dir_st.st_mode):
            continue
        if who.can_write(dir_st):
            writable.append(real)
        setuid += _setuid_doors(who, real, dir_st, inconclusive)
    return tuple(writable), tuple(setuid)


def _setuid_doors(
    who: _Who, directory: str, dir_st: os.stat_result, inconclusive: list[str]
) -> list[str]:
    """Setuid-root regular files directly in `directory` that it can modify or replace.
    Symlinks are skipped (their targets are judged where they live, if that is on PATH); the
    d_type from scandir makes that free, leaving one lstat per entry."""
    found: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink():
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished while listing: nothing to judge
                if (stat.S_ISREG(st.st_mode) and st.st_uid == 0 and st.st_mode & stat.S_ISUID
                        and (who.can_write(st) or who.can_replace_in(dir_st, st))):
                    found.append(entry.path)
    except OSError as exc:
        inconclusive.append(f"cannot list PATH directory {directory}: {exc.strerror or exc}")
    return sorted(found)


def _probe_plugin_paths(
    who: _Who, plugin_paths: Sequence[str], inconclusive: list[str]
) -> tuple[str, ...]:
    """Plugin paths it can write, or replace through their directory (a missing entrypoint in a
    writable directory counts: it can create it). For a symlinked path both the link's and the
    target's directories are judged."""
    found: list[str] = []
    for path in dict.fromkeys(os.path.abspath(p) for p in plugin_paths):
        st = _stat(path, f"plugin path {path}", inconclusive)
        parents = dict.fromkeys((os.path.dirname(path), os.path.dirname(os.path.realpath(path))))
        door = st is not None and who.can_write(st)
        for parent in parents:
            parent_st = _stat(parent, f"directory {parent} of plugin path {path}", inconclusive)
            door = door or (parent_st is not None and who.can_replace_in(parent_st, st))
        if door:
            found.append(path)
    return tuple(found)


def _stat(path: str, what: str, inconclusive: list[str]) -> os.stat_result | None:
    """stat following symlinks; None when absent (nothing to judge) or unstatable (recorded)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        inconclusive.append(f"cannot stat {what}: {exc.strerror or exc}")
        return None


def _log_line(report: SideDoorReport, fail_on_sidedoor: bool) -> tuple[str, str, dict[str, object]]:
    fields: dict[str, object] = {
        "account": report.account, "uid": report.uid, "mode": report.mode,
        "nopasswd_sudo": report.nopasswd_sudo, "root_groups": list(report.root_groups),
        "writable_path_dirs": list(report.writable_path_dirs),
        "writable_setuid_root": list(report.writable_setuid_root),
        "writable_plugin_paths": list(report.writable_plugin_paths),
        "inconclusive": list(report.inconclusive), "note": _NOTE,
    }
    confined_level = "error" if fail_on_sidedoor else "warn"
    if report.mode == "credentialed":
        if report.open or report.inconclusive:
            return ("warn", "privsep: credentialed account has host root side-doors (informed "
                    "consent: it runs as a real user) — "
                    + "; ".join(report.doors + report.inconclusive), fields)
    elif report.open:
        return (confined_level, "privsep SECURITY: confined account has a host root side-door — "
                + "; ".join(report.doors), fields)
    elif report.inconclusive:
        return (confined_level, "privsep SECURITY: confined account containment UNPROVEN — "
                + "; ".join(report.inconclusive), fields)
    return ("info", "privsep side-door audit: no side door found", fields)


def _refusal(unproven: Sequence[SideDoorReport]) -> str:
    first = unproven[0]
    if first.open:
        fix = f"close the door ({first.doors[0]})"
    else:
        fix = f"make the audit able to decide ({first.inconclusive[0]})"
    names = ", ".join(r.account for r in unproven)
    return (f"privsep side-door audit: confined account(s) {names} hold a host root side-door "
            "(or could not be verified) and service.admission.fail_on_sidedoor is on — refusing "
            f"to boot a wall that cannot contain them; {fix} or move the plugin to another "
            "account")
