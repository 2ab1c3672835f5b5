"""Resolve the `accounts:` table to numeric identities, at boot, from the passwd and group
databases (read only: this is one of the side-effect-free facts `ductile config check` shares).

A `user:` that does not exist refuses the boot naming it, and so does a group; numeric uid/gid
are taken as written (an account need not have a passwd entry), and their supplementary groups
are the user's own when the uid has one.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

from ductile.config.accounts import AccountConf
from ductile.plugin.credentials import Credentials


@dataclass(frozen=True)
class Account:
    """One resolved account: what a plugin running as it gets."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    user: str | None  # the passwd name of uid, when it has one
    mode: str  # confined | credentialed
    workdir: str  # confined: state_dir; credentialed: home (or state_dir when given)
    home: str  # HOME for its plugins

    def credentials(self) -> Credentials:
        return Credentials(uid=self.uid, gid=self.gid, groups=self.groups, cwd=self.workdir,
                           account=self.name)

    def environment(self) -> dict[str, str]:
        """What the account's environment policy sets over the allowlist."""
        env = {"HOME": self.home}
        if self.mode == "confined":
            env["XDG_CACHE_HOME"] = self.workdir
        if self.user:
            env["USER"] = env["LOGNAME"] = self.user
        return env


def resolve_accounts(confs: Mapping[str, AccountConf]) -> tuple[dict[str, Account], list[str]]:
    """Every account resolved, and the problems (one line each, naming the account) of those
    that could not be. Sorted by name, so the first problem is stable."""
    resolved: dict[str, Account] = {}
    problems: list[str] = []
    for name in sorted(confs):
        try:
            resolved[name] = _resolve(confs[name])
        except LookupError as exc:
            problems.append(f"accounts.{name}: {exc}")
    owners: dict[int, str] = {}
    for name, account in resolved.items():
        other = owners.setdefault(account.uid, name)
        if other != name:
            problems.append(f"accounts.{other} and accounts.{name} share uid {account.uid} — "
                            "duplicate uids are false isolation; give each account a distinct "
                            "uid")
    return resolved, problems


def _resolve(conf: AccountConf) -> Account:
    entry = _passwd(conf)
    uid = conf.uid if conf.uid is not None else entry.pw_uid  # type: ignore[union-attr]
    if entry is not None and conf.uid is not None and entry.pw_uid != conf.uid:
        raise LookupError(f'user "{conf.user}" has uid {entry.pw_uid}, but uid: {conf.uid} is '
                          "written beside it; remove one of them")
    if uid == 0:
        raise LookupError(f'user "{conf.user}" is root — an account is an unprivileged user, '
                          "never root")
    gid = conf.gid if conf.gid is not None else (entry.pw_gid if entry else None)
    if gid is None or gid == 0:
        raise LookupError("gid must be a positive gid (give gid:, or name a user whose primary "
                          "group is not root)")
    user = entry.pw_name if entry is not None else None
    if conf.groups is not None:
        groups = tuple(sorted({gid, *(_group_id(g) for g in conf.groups)}))
    elif user is not None:
        groups = tuple(sorted(set(os.getgrouplist(user, gid))))
    else:
        groups = (gid,)
    if 0 in groups:
        raise LookupError("its groups include gid 0 (root's group), which is a way back to root; "
                          "remove it from that group")
    home = conf.home or conf.state_dir
    return Account(name=conf.name, uid=uid, gid=gid, groups=groups, user=user, mode=conf.mode,
                   workdir=conf.home or conf.state_dir, home=home)


def _passwd(conf: AccountConf) -> pwd.struct_passwd | None:
    if conf.user:
        try:
            return pwd.getpwnam(conf.user)
        except KeyError:
            raise LookupError(
                f'user "{conf.user}" does not exist on this host; create it (useradd --system '
                f"--no-create-home {conf.user}) or fix the name") from None
    try:
        return pwd.getpwuid(conf.uid) if conf.uid is not None else None
    except KeyError:
        return None


def _group_id(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise LookupError(f'group "{name}" does not exist on this host; create it '
                          f"(groupadd {name}) or remove it from groups:") from None
