"""The privilege-separation posture: decided once per generation from two facts, the gateway's
capability to change uid and the `accounts:` table, which must agree (as in the Go original).

|                      | accounts configured | no accounts                          |
|----------------------|---------------------|--------------------------------------|
| can change uid       | enforcing           | refused (unless service.unconfined)  |
| cannot change uid    | refused (unless ...)| hygiene-only                         |

`service.unconfined: true` makes any cell *unconfined*: plugins run as the gateway, warned at
every boot. Never a silent run of plugins at the gateway's privilege: a root gateway with no
accounts refuses, because that is the configuration an operator most likely did not mean.

`decide` is pure; `read_capability` reads /proc/self/status.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ductile.config.accounts import UNCONFINED, account_for

if TYPE_CHECKING:
    from ductile.config.schema import Config
    from ductile.plugin.credentials import Credentials
    from ductile.privsep.accounts import Account

ENFORCING = "enforcing"
UNCONFINED_POSTURE = "unconfined"
HYGIENE_ONLY = "hygiene-only"
_CAP_SETGID, _CAP_SETUID = 6, 7


@dataclass(frozen=True)
class Capability:
    """Whether this process may change uid, and how (`root`, `CAP_SETUID+CAP_SETGID`,
    `none`). `unsupported` says why the host cannot switch per thread, when it cannot."""

    can_switch: bool
    how: str
    euid: int
    unsupported: str | None = None


def read_capability(status_path: str = "/proc/self/status") -> Capability:
    """This process's capability to change uid (see `capability_from`)."""
    from ductile.plugin.credentials import unsupported_reason

    try:
        with open(status_path, encoding="ascii", errors="replace") as handle:
            status = handle.read()
    except OSError:
        status = ""
    return capability_from(os.geteuid(), status, unsupported_reason())


def capability_from(euid: int, status: str, unsupported: str | None = None) -> Capability:
    """Both CAP_SETUID and CAP_SETGID in the effective set (`CapEff:` of /proc/self/status,
    as the Go original reads it), root included: root launched without them (systemd's
    `CapabilityBoundingSet=~CAP_SETUID CAP_SETGID`, `capsh --drop=...`) cannot change uid, so it
    is no more privileged for this gate than any other user. Root whose status cannot be read
    is taken to hold them (the cautious answer: the gate then asks for accounts)."""
    effective: int | None = None
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            try:
                effective = int(line.split()[1], 16)
            except (ValueError, IndexError):
                effective = None
    wanted = (1 << _CAP_SETUID) | (1 << _CAP_SETGID)
    holds = effective is not None and effective & wanted == wanted
    if euid == 0 and (holds or effective is None):
        return Capability(True, "root", euid, unsupported)
    if holds:
        return Capability(True, "CAP_SETUID+CAP_SETGID", euid, unsupported)
    return Capability(False, "none", euid)


@dataclass(frozen=True)
class Decision:
    """The outcome: a posture, or a refusal naming what to add; plus the line to log."""

    posture: str | None
    refusal: str | None
    level: str
    message: str


def decide(capability: Capability, accounts: int, unconfined: bool) -> Decision:
    """The table in the module docstring, as a pure function."""
    if unconfined:
        return Decision(UNCONFINED_POSTURE, None, "warn",
                        "privsep UNCONFINED: plugins run at the gateway uid despite "
                        "configuration (service.unconfined: true); define accounts: and "
                        "remove it to confine them")
    if capability.can_switch and not accounts:
        return Decision(None, (
            f"privsep boot gate: gateway holds the uid-drop capability ({capability.how}) but "
            "no accounts are configured — refusing to run plugins at gateway privilege "
            "(configure an accounts table, launch without CAP_SETUID, or set "
            "service.unconfined: true)"), "error", "")
    if not capability.can_switch and accounts:
        return Decision(None, (
            "privsep boot gate: accounts are configured but the gateway lacks the uid-drop "
            "capability (CAP_SETUID/SETGID) — refusing to run with a wall it cannot enforce "
            "(grant the capability via the init system, remove the accounts table, or set "
            "service.unconfined: true)"), "error", "")
    if accounts:
        if capability.unsupported:
            return Decision(None, f"privsep boot gate: {capability.unsupported}; remove the "
                                  "accounts table or set service.unconfined: true", "error", "")
        return Decision(ENFORCING, None, "info",
                        "privsep enforcing: plugins drop to their resolved account")
    return Decision(HYGIENE_ONLY, None, "info",
                    "privsep posture: UNCONFINED — no accounts configured; plugins run at the "
                    "gateway uid (hygiene-only)")


@dataclass(frozen=True)
class Privsep:
    """What a generation decided: its posture and, when enforcing, each plugin's account."""

    posture: str = HYGIENE_ONLY
    accounts: Mapping[str, Account] = field(default_factory=dict)
    plugin_accounts: Mapping[str, str] = field(default_factory=dict)  # plugin -> account name

    @classmethod
    def build(cls, posture: str, cfg: Config, accounts: Mapping[str, Account],
              plugins: Mapping[str, object]) -> Privsep:
        """Resolve each known plugin's account; only an enforcing posture drops anything."""
        if posture != ENFORCING:
            return cls(posture=posture)
        names = set(plugins) | set(cfg.plugins)
        return cls(posture=posture, accounts=dict(accounts),
                   plugin_accounts={name: account_for(cfg.plugin(name).run_as, cfg.accounts)
                                    for name in sorted(names)})

    def account_of(self, plugin: str) -> Account | None:
        """The account `plugin` runs as, or None (it runs as the gateway)."""
        name = self.plugin_accounts.get(plugin, UNCONFINED)
        return self.accounts.get(name)

    def credentials_for(self, plugin: str) -> Credentials | None:
        account = self.account_of(plugin)
        return account.credentials() if account is not None else None

    def environment_for(self, plugin: str) -> dict[str, str]:
        account = self.account_of(plugin)
        return account.environment() if account is not None else {}

    def view(self) -> dict[str, object]:
        """What /healthz and `system status` show."""
        return {"posture": self.posture,
                "accounts": sorted(self.accounts),
                "plugins": {p: a for p, a in sorted(self.plugin_accounts.items())}}
