"""The `accounts:` table and each plugin's `run_as`: who a plugin runs as.

An account is an unprivileged OS identity a plugin drops to before it is executed. It is named
either by an OS user (`user: ductile-fetch`, looked up in the passwd database at boot) or by
numbers (`uid:` and `gid:`), never root. Two kinds, as in the Go original:

- *confined* (no `home:`): gets its own working directory `state_dir`, created 0700 and owned by
  it at boot; HOME, XDG_CACHE_HOME and the working directory of its plugins point there.
- *credentialed* (`home:` set): runs as a real user with that user's own home, which boot only
  verifies and never changes. The shared fallback tier `default` may not be credentialed.

A plugin runs as its `run_as` account, else as `default` when that account exists, else as the
gateway itself ("unconfined"). This module decodes and checks the table structurally (pure);
looking names up in the passwd database is `ductile.privsep.accounts`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ductile.config.reader import Reader
from ductile.errors import ConfigError

ACCOUNT_KEYS = frozenset({"user", "uid", "gid", "groups", "state_dir", "home"})
#: The account a plugin without `run_as` drops to, when it is defined.
DEFAULT_ACCOUNT = "default"
#: The name of "no account": a plugin that runs at the gateway's own uid.
UNCONFINED = "unconfined"
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class AccountConf:
    """One `accounts.<name>` entry as written. `groups` None means "the user's own groups"."""

    name: str
    user: str = ""
    uid: int | None = None
    gid: int | None = None
    groups: tuple[str, ...] | None = None
    state_dir: str = ""
    home: str = ""

    @property
    def mode(self) -> str:
        return "credentialed" if self.home else "confined"


def decode_accounts(r: Reader, value: Any) -> dict[str, AccountConf]:
    """`accounts:` from one (root) document; type errors name the file and key."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise r.fail("accounts", "a map of account name to {user | uid, gid, state_dir}", value)
    accounts: dict[str, AccountConf] = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not name.strip():
            raise r.fail("accounts", "account names to be non-empty strings", name)
        key = f"accounts.{name}"
        m = r.section(entry, key, ACCOUNT_KEYS)
        groups = None
        if "groups" in m:
            groups = tuple(str(g) for g in _group_list(r, m.get("groups"), f"{key}.groups"))
        accounts[name] = AccountConf(
            name=name,
            user=(r.string(m.get("user"), f"{key}.user") or "").strip(),
            uid=r.integer(m.get("uid"), f"{key}.uid"),
            gid=r.integer(m.get("gid"), f"{key}.gid"),
            groups=groups,
            state_dir=(r.string(m.get("state_dir"), f"{key}.state_dir") or "").strip(),
            home=(r.string(m.get("home"), f"{key}.home") or "").strip(),
        )
    return accounts


def _group_list(r: Reader, value: Any, key: str) -> list[str | int]:
    items = r.sequence(value, key)
    out: list[str | int] = []
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (str, int)) or item == "":
            raise r.fail(f"{key}[{i}]", "a group name or gid", item)
        out.append(item)
    return out


def validate_accounts(accounts: Mapping[str, AccountConf], run_as: Mapping[str, str]) -> None:
    """The structural rules, sorted by account name (the first error wins, as in Go).

    `run_as` maps plugin name to its grant ("" for none). Raises ConfigError naming the key.
    """
    seen_uids: dict[int, str] = {}
    for name in sorted(accounts):
        account = accounts[name]
        key = f"accounts.{name}"
        if name == UNCONFINED:
            raise ConfigError(f"{key}: {UNCONFINED!r} names the no-account state (plugins at the "
                              "gateway's uid) and cannot be an account; rename it", key=key)
        if not account.user and account.uid is None:
            raise ConfigError(f"{key}: name an OS user (user: NAME) or give uid and gid",
                              key=key)
        if account.uid is not None and not 0 < account.uid <= MAX_ID:
            raise ConfigError(
                f"{key}: uid must be a positive uid within range (got {account.uid}) — an "
                "account is an unprivileged user, never root", key=f"{key}.uid")
        if account.uid is not None and account.gid is None and not account.user:
            raise ConfigError(f"{key}: gid is required with uid (or name the user with user:)",
                              key=f"{key}.gid")
        if account.gid is not None and not 0 < account.gid <= MAX_ID:
            raise ConfigError(f"{key}: gid must be a positive gid within range "
                              f"(got {account.gid})", key=f"{key}.gid")
        if account.home:
            if name == DEFAULT_ACCOUNT:
                raise ConfigError(
                    f"{key}: the shared fallback tier must not be credentialed (remove `home:`) — "
                    "every plugin without run_as would run as that real user", key=f"{key}.home")
            if not os.path.isabs(account.home):
                raise ConfigError(f'{key}: home must be an absolute path (got "{account.home}")',
                                  key=f"{key}.home")
            if account.state_dir and not os.path.isabs(account.state_dir):
                raise ConfigError(f"{key}: state_dir must be an absolute path "
                                  f'(got "{account.state_dir}")', key=f"{key}.state_dir")
        elif not os.path.isabs(account.state_dir):
            raise ConfigError(
                f'{key}: state_dir must be an absolute path (got "{account.state_dir}") — a '
                "confined account needs its own working directory, such as "
                f"/var/lib/ductile/accounts/{name}", key=f"{key}.state_dir")
        if account.uid is not None:
            other = seen_uids.get(account.uid)
            if other is not None:
                raise ConfigError(
                    f"accounts.{other} and accounts.{name} share uid {account.uid} — duplicate "
                    "uids are false isolation; give each account a distinct uid", key=key)
            seen_uids[account.uid] = name
    for plugin in sorted(run_as):
        grant = run_as[plugin]
        if grant and grant not in accounts:
            defined = ", ".join(sorted(accounts)) or "none"
            raise ConfigError(
                f'plugins.{plugin}: run_as names an undefined account "{grant}" — define it in '
                f"the accounts map or remove the grant (defined: {defined})",
                key=f"plugins.{plugin}.run_as")


def account_for(plugin_run_as: str, accounts: Mapping[str, AccountConf]) -> str:
    """The account a plugin runs as: its grant, else `default` when defined, else unconfined."""
    if plugin_run_as:
        return plugin_run_as
    if DEFAULT_ACCOUNT in accounts:
        return DEFAULT_ACCOUNT
    return UNCONFINED
