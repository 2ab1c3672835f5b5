"""The vault model: secrets, principals and the rules that govern them, in memory only.

Long (about 540 lines) because every rule below is enforced on the one immutable value, next to
the others it interacts with (a revoke and a roll, a purge and a grant).

The model is an immutable value. Every operation returns a new model (and a result), so the
owner can try an operation, persist the new model and only then adopt it: a failed write leaves
the old model in place with nothing to undo, and a batch (`roll_principal`) is atomic for free.

Rules (the Go original's):

- Names: principals are kebab case (`^[a-z0-9]+(-[a-z0-9]+)*$`), secrets lower case with `_`
  and `-` inside (`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`).
- Reserved: the `core` principal (kind gateway, carrying the 32-byte vault nonce) and the
  `core-admin-token` secret. The data plane (set, roll, revoke, register, revoke/purge/roll
  principal) refuses them; only genesis and `rotate_admin_token` write them.
- A secret's value is roll-only: `set` on an existing secret may change its grants or pattern
  but not its value. `roll` mints a new value (auto: 32 random bytes, base64url without padding;
  manual: the operator's value).
- Revocation is terminal: a revoked secret keeps its name and history, loses its value, and
  refuses every later change. Revoking again is a no-op.
- Grants name registered principals only. Purging a principal strips it from every grant.
- `compose(principal)` fails closed for an unknown or revoked principal; otherwise it returns
  the principal's active, minted secrets plus a denial for each granted secret it cannot have.

Nothing here does I/O. Secret values never appear in a repr or an error message.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from ductile.errors import (VaultPolicyError, VaultPrincipalUnavailable,
                            VaultReservedEntity)

PRINCIPAL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SECRET_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$")
CORE_PRINCIPAL = "core"
ADMIN_TOKEN = "core-admin-token"
KINDS = ("plugin", "consumer", "gateway")
PATTERNS = ("manual", "auto")
STATUSES = ("active", "revoked")
TOKEN_BYTES = 32
NONCE_BYTES = 32

Mint = Callable[[], str]


def mint_token() -> str:
    """32 bytes from the OS CSPRNG as base64url without padding (43 characters)."""
    return encode_b64url(os.urandom(TOKEN_BYTES))


def encode_b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_b64url(text: str) -> bytes:
    """Strict base64url (padding optional); raises ValueError on anything else."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


@dataclass(frozen=True)
class Secret:
    """One named secret. `value` is excluded from repr so a log of the record leaks nothing."""

    name: str
    value: str = field(repr=False)
    authorized_principals: tuple[str, ...]
    status: str
    pattern: str
    roll_count: int
    created_at: str
    updated_at: str
    revoked_at: str = ""
    description: str = ""

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Principal:
    """A registered consumer of secrets. Only `core` carries a nonce."""

    name: str
    kind: str
    status: str
    nonce: str = field(default="", repr=False)

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Composition:
    """What `compose` hands a plugin spawn: granted values, and why others were withheld
    (`secret_revoked`, `secret_unminted`)."""

    principal: str
    secrets: Mapping[str, str] = field(repr=False)
    denials: Mapping[str, str]


@dataclass(frozen=True)
class ResolvedSecrets:
    """The load-time projection: name -> value of every active secret that is
    not exclusively plugin-scoped, with warnings for grants to unregistered principals."""

    values: Mapping[str, str] = field(repr=False)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RollReport:
    """The outcome of `roll_principal`: which granted secrets were rolled, which skipped."""

    name: str
    rolled: tuple[str, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True)
class VaultModel:
    """The whole vault. Build the first one with `genesis`; never mutate the mappings."""

    secrets: Mapping[str, Secret]
    principals: Mapping[str, Principal]

    def __post_init__(self) -> None:
        object.__setattr__(self, "secrets", MappingProxyType(dict(self.secrets)))
        object.__setattr__(self, "principals", MappingProxyType(dict(self.principals)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VaultModel):
            return NotImplemented
        return dict(self.secrets) == dict(other.secrets) and \
            dict(self.principals) == dict(other.principals)

    __hash__ = None  # type: ignore[assignment]

    # -- reads -----------------------------------------------------------------------------

    @property
    def nonce(self) -> bytes:
        """The 32-byte vault nonce carried by `core` (keys plugin fingerprints)."""
        core = self.principals.get(CORE_PRINCIPAL)
        if core is None or not core.nonce:
            raise VaultPolicyError("the vault has no core principal nonce; it is damaged: "
                                   "restore it from a backup")
        return decode_b64url(core.nonce)

    def authenticate_admin(self, presented: str) -> bool:
        """Constant-time comparison with the active admin token; False for empty input."""
        admin = self.secrets.get(ADMIN_TOKEN)
        expected = admin.value.encode() if admin is not None and admin.active else b""
        candidate = presented.encode() if isinstance(presented, str) else b""
        # compare_digest runs even when one side is empty so the timing says nothing.
        same = hmac.compare_digest(candidate, expected)
        return same and bool(expected) and bool(candidate)

    def compose(self, principal: str) -> Composition:
        """The secrets a spawn of `principal` receives; fails closed when it cannot have any."""
        record = self.principals.get(principal)
        if record is None:
            raise VaultPrincipalUnavailable(principal, "not registered")
        if not record.active:
            raise VaultPrincipalUnavailable(principal, "revoked")
        granted: dict[str, str] = {}
        denials: dict[str, str] = {}
        for name in sorted(self.secrets):
            secret = self.secrets[name]
            if principal not in secret.authorized_principals:
                continue
            if not secret.active:
                denials[name] = "secret_revoked"
            elif not secret.value:
                denials[name] = "secret_unminted"
            else:
                granted[name] = secret.value
        return Composition(principal=principal, secrets=MappingProxyType(granted),
                           denials=MappingProxyType(denials))

    def resolved_secrets(self) -> ResolvedSecrets:
        """Every active secret visible at load time (API tokens, webhook and relay secrets).

        A secret is hidden only when it is exclusively plugin-scoped: at least one grantee and
        every grantee a registered principal of kind `plugin`. The admin token is never part of
        it (it authenticates `/vault/*` only).
        """
        values: dict[str, str] = {}
        warnings: list[str] = []
        for name in sorted(self.secrets):
            secret = self.secrets[name]
            if not secret.active or name == ADMIN_TOKEN:
                continue
            grantees = secret.authorized_principals
            kinds = [self.principals[g].kind if g in self.principals else None for g in grantees]
            for grantee, kind in zip(grantees, kinds):
                if kind is None:
                    warnings.append(
                        f"vault secret {name!r} grants to unregistered principal {grantee!r}; "
                        "it stays load-time visible (register the principal with ductile vault "
                        "register-principal, or remove the grant)")
            if grantees and all(kind == "plugin" for kind in kinds):
                continue
            values[name] = secret.value
        return ResolvedSecrets(values=MappingProxyType(values), warnings=tuple(warnings))

    def readable_value(self, name: str) -> str:
        """The value `vault get` prints; refuses the admin token, unknown, revoked, unminted."""
        if name == ADMIN_TOKEN:
            raise VaultReservedEntity(
                f"secret {name!r} is reserved (the management-API credential) and is never "
                "printed by 'vault get'; rotate it with ductile vault rotate-admin-token")
        secret = self._secret(name)
        if not secret.active:
            raise VaultPolicyError(f"secret {name!r} is revoked (value cleared)")
        if not secret.value:
            raise VaultPolicyError(f"secret {name!r} has no value yet (an auto secret is minted "
                                   f"by its first roll: ductile vault roll --name {name})")
        return secret.value

    # -- data-plane operations -------------------------------------------------------------

    def set_secret(self, name: str, value: str, *, principals: Sequence[str] | None = None,
                   pattern: str | None = None, now: str,
                   description: str | None = None) -> VaultModel:
        """Create a secret, or change an existing one's grants, pattern or description.

        `principals` None leaves the grants, a sequence (even empty) replaces them. An existing
        secret's value is roll-only: an empty or equal value leaves it, another one is refused.
        """
        _check_secret_name(name)
        if pattern not in (None, "", *PATTERNS):
            raise VaultPolicyError(f"pattern {pattern!r} is not allowed: use manual or auto")
        grants = self._checked_grants(name, principals)
        existing = self.secrets.get(name)
        if existing is None:
            chosen = pattern or "manual"
            if chosen == "manual" and not value:
                raise VaultPolicyError(f"secret {name!r}: a manual secret needs a non-empty value")
            created = Secret(name=name, value=value, authorized_principals=grants or (),
                             status="active", pattern=chosen, roll_count=0, created_at=now,
                             updated_at=now, description=description or "")
            return self._with_secret(created)
        if not existing.active:
            raise VaultPolicyError(f"secret {name!r} is revoked; a revoked secret cannot change "
                                   "(choose a new name)")
        if value and not hmac.compare_digest(value.encode(), existing.value.encode()):
            raise VaultPolicyError(f"secret {name!r} already exists and its value is roll-only: "
                                   f"use ductile vault roll --name {name} to change it")
        changed = replace(
            existing,
            authorized_principals=existing.authorized_principals if grants is None else grants,
            pattern=pattern or existing.pattern,
            description=existing.description if description is None else description,
        )
        if changed == existing:
            return self
        return self._with_secret(replace(changed, updated_at=now))

    def roll_secret(self, name: str, value: str | None = None, *, now: str,
                    mint: Mint = mint_token) -> VaultModel:
        """A new value: minted for an auto secret, the operator's for a manual one."""
        _check_secret_name(name)
        secret = self._secret(name)
        if not secret.active:
            raise VaultPolicyError(f"secret {name!r} is revoked and cannot be rolled")
        if secret.pattern == "auto":
            if value:
                raise VaultPolicyError(f"secret {name!r} is auto: its value is minted, do not "
                                       "send one")
            fresh = mint()
        else:
            if not value:
                raise VaultPolicyError(f"secret {name!r} is manual: rolling it needs the new "
                                       "value (on stdin for the CLI, `value` over HTTP)")
            fresh = value
        return self._with_secret(replace(secret, value=fresh, roll_count=secret.roll_count + 1,
                                         updated_at=now))

    def revoke_secret(self, name: str, *, now: str) -> VaultModel:
        """Terminal and idempotent: clears the value, keeps the record."""
        _check_secret_name(name)
        secret = self._secret(name)
        if not secret.active:
            return self
        return self._with_secret(replace(secret, status="revoked", value="", revoked_at=now,
                                         updated_at=now))

    def register_principal(self, name: str, kind: str = "plugin") -> VaultModel:
        """Register a principal; registering an active one again with the same kind is a no-op."""
        _check_principal_name(name)
        if kind not in KINDS:
            raise VaultPolicyError(f"principal kind {kind!r} is not allowed: use plugin, "
                                   "consumer or gateway")
        existing = self.principals.get(name)
        if existing is not None:
            if not existing.active:
                raise VaultPolicyError(f"principal {name!r} is revoked; purge it "
                                       f"(ductile vault purge-principal --name {name}) before "
                                       "registering the name again")
            if existing.kind != kind:
                raise VaultPolicyError(f"principal {name!r} is already registered with kind "
                                       f"{existing.kind!r}")
            return self
        return self._with_principal(Principal(name=name, kind=kind, status="active"))

    def revoke_principal(self, name: str) -> VaultModel:
        """Compose for it fails from now on; idempotent."""
        _check_principal_name(name)
        record = self._principal(name)
        if not record.active:
            return self
        return self._with_principal(replace(record, status="revoked"))

    def purge_principal(self, name: str, *, now: str) -> VaultModel:
        """Delete the principal and strip it from every grant."""
        _check_principal_name(name)
        self._principal(name)
        principals = {k: v for k, v in self.principals.items() if k != name}
        secrets = {}
        for key, secret in self.secrets.items():
            if name in secret.authorized_principals:
                secret = replace(secret, updated_at=now, authorized_principals=tuple(
                    p for p in secret.authorized_principals if p != name))
            secrets[key] = secret
        return VaultModel(secrets=secrets, principals=principals)

    def roll_principal(self, name: str, *, now: str,
                       mint: Mint = mint_token) -> tuple[VaultModel, RollReport]:
        """Roll every active auto secret granted to `name`; manual ones are reported skipped."""
        _check_principal_name(name)
        self._principal(name)
        model = self
        rolled: list[str] = []
        skipped: list[str] = []
        for secret_name in sorted(self.secrets):
            secret = self.secrets[secret_name]
            if name not in secret.authorized_principals or not secret.active:
                continue
            if secret.pattern == "auto":
                model = model.roll_secret(secret_name, now=now, mint=mint)
                rolled.append(secret_name)
            else:
                skipped.append(secret_name)
        return model, RollReport(name=name, rolled=tuple(rolled), skipped=tuple(skipped))

    # -- reserved-entity operations (genesis and rotation only) ----------------------------

    def rotate_admin_token(self, *, now: str, mint: Mint = mint_token) -> tuple[VaultModel, str]:
        """A new admin token; the old one stops authenticating at once."""
        token = mint()
        admin = self.secrets.get(ADMIN_TOKEN)
        if admin is None:
            admin = Secret(name=ADMIN_TOKEN, value=token, authorized_principals=(),
                           status="active", pattern="auto", roll_count=0, created_at=now,
                           updated_at=now)
        else:
            admin = replace(admin, value=token, status="active", revoked_at="",
                            roll_count=admin.roll_count + 1, updated_at=now)
        return VaultModel(secrets={**self.secrets, ADMIN_TOKEN: admin},
                          principals=self.principals), token

    # -- helpers ---------------------------------------------------------------------------

    def _secret(self, name: str) -> Secret:
        secret = self.secrets.get(name)
        if secret is None:
            raise VaultPolicyError(f"secret {name!r} does not exist in the vault")
        return secret

    def _principal(self, name: str) -> Principal:
        record = self.principals.get(name)
        if record is None:
            raise VaultPolicyError(f"principal {name!r} is not registered in the vault")
        return record

    def _checked_grants(self, secret: str, principals: Sequence[str] | None
                        ) -> tuple[str, ...] | None:
        if principals is None:
            return None
        grants: list[str] = []
        for principal in principals:
            if not isinstance(principal, str) or principal not in self.principals:
                raise VaultPolicyError(f"unknown principal: secret {secret!r} authorizes "
                                       f"{principal!r}; register it first (ductile vault "
                                       "register-principal)")
            if principal not in grants:
                grants.append(principal)
        return tuple(sorted(grants))

    def _with_secret(self, secret: Secret) -> VaultModel:
        return VaultModel(secrets={**self.secrets, secret.name: secret},
                          principals=self.principals)

    def _with_principal(self, principal: Principal) -> VaultModel:
        return VaultModel(secrets=self.secrets,
                          principals={**self.principals, principal.name: principal})


def genesis(*, now: str, mint: Mint = mint_token,
            nonce: bytes | None = None) -> tuple[VaultModel, str]:
    """A new vault: the `core` principal with a fresh nonce and a fresh admin token.

    Returns the model and the admin token (shown to the operator once).
    """
    raw_nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    if len(raw_nonce) != NONCE_BYTES:
        raise VaultPolicyError(f"the vault nonce must be {NONCE_BYTES} bytes")
    core = Principal(name=CORE_PRINCIPAL, kind="gateway", status="active",
                     nonce=encode_b64url(raw_nonce))
    empty = VaultModel(secrets={}, principals={CORE_PRINCIPAL: core})
    return empty.rotate_admin_token(now=now, mint=mint)


def _check_secret_name(name: str) -> None:
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        raise VaultPolicyError(f"invalid secret name {_shown(name)}: use lower-case letters, "
                               "digits, '-' and '_' (starting and ending with a letter or digit)")
    if name == ADMIN_TOKEN:
        raise VaultReservedEntity(f"secret {name!r} is reserved (the management-API "
                                  "credential); rotate it with ductile vault rotate-admin-token")


def _check_principal_name(name: str) -> None:
    if not isinstance(name, str) or not PRINCIPAL_NAME.fullmatch(name):
        raise VaultPolicyError(f"invalid principal name {_shown(name)}: use kebab case "
                               "(lower-case letters and digits joined by single '-')")
    if name == CORE_PRINCIPAL:
        raise VaultReservedEntity(f"principal {name!r} is reserved (the gateway itself) and "
                                  "cannot be changed through the data plane")


def _shown(name: Any) -> str:
    """A name for an error message, shortened: names are not secret, but may be huge."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


# -- the document form (what the vault file seals) -------------------------------------------


def to_document(model: VaultModel) -> dict[str, Any]:
    """The plain YAML-able document, in the Go vault's field names."""
    secrets: dict[str, Any] = {}
    for name in sorted(model.secrets):
        s = model.secrets[name]
        entry: dict[str, Any] = {
            "value": s.value, "authorized_principals": list(s.authorized_principals),
            "status": s.status, "pattern": s.pattern, "roll_count": s.roll_count,
            "created_at": s.created_at, "updated_at": s.updated_at,
        }
        if s.revoked_at:
            entry["revoked_at"] = s.revoked_at
        if s.description:
            entry["description"] = s.description
        secrets[name] = entry
    principals: dict[str, Any] = {}
    for name in sorted(model.principals):
        p = model.principals[name]
        entry = {"kind": p.kind, "status": p.status}
        if p.nonce:
            entry["nonce"] = p.nonce
        principals[name] = entry
    return {"secrets": secrets, "principals": principals}


def from_document(doc: Any) -> VaultModel:
    """Rebuild a model from its document, refusing anything that breaks the invariants.

    Raises VaultPolicyError naming the entry; the file layer turns it into VaultFileError.
    """
    if not isinstance(doc, dict) or set(doc) - {"secrets", "principals"}:
        raise VaultPolicyError("the vault document must be a mapping with secrets and principals")
    raw_secrets = doc.get("secrets") or {}
    raw_principals = doc.get("principals") or {}
    if not isinstance(raw_secrets, dict) or not isinstance(raw_principals, dict):
        raise VaultPolicyError("secrets and principals must be mappings")
    principals = {str(n): _principal_from(n, e) for n, e in raw_principals.items()}
    secrets = {str(n): _secret_from(n, e) for n, e in raw_secrets.items()}
    core = principals.get(CORE_PRINCIPAL)
    if core is None or core.kind != "gateway" or not core.active:
        raise VaultPolicyError("the reserved core principal is missing or not an active gateway")
    try:
        nonce = decode_b64url(core.nonce)
    except ValueError:
        nonce = b""
    if len(nonce) != NONCE_BYTES:
        raise VaultPolicyError(f"the core principal's nonce is not {NONCE_BYTES} bytes")
    admin = secrets.get(ADMIN_TOKEN)
    if admin is None or admin.authorized_principals:
        raise VaultPolicyError("the reserved core-admin-token is missing or carries grants")
    return VaultModel(secrets=secrets, principals=principals)


def _principal_from(name: Any, entry: Any) -> Principal:
    if not isinstance(name, str) or not PRINCIPAL_NAME.fullmatch(name):
        raise VaultPolicyError(f"principal {_shown(name)}: invalid name")
    if not isinstance(entry, dict):
        raise VaultPolicyError(f"principal {name!r}: entry must be a mapping")
    kind, status, nonce = entry.get("kind"), entry.get("status"), entry.get("nonce", "")
    if kind not in KINDS or status not in STATUSES or not isinstance(nonce, str):
        raise VaultPolicyError(f"principal {name!r}: kind, status or nonce is invalid")
    if nonce and name != CORE_PRINCIPAL:
        raise VaultPolicyError(f"principal {name!r}: only core carries a nonce")
    return Principal(name=name, kind=kind, status=status, nonce=nonce)


def _secret_from(name: Any, entry: Any) -> Secret:
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        raise VaultPolicyError(f"secret {_shown(name)}: invalid name")
    if not isinstance(entry, dict):
        raise VaultPolicyError(f"secret {name!r}: entry must be a mapping")
    grants = entry.get("authorized_principals") or []
    texts = {k: entry.get(k, "") for k in ("value", "created_at", "updated_at", "revoked_at",
                                            "description")}
    roll_count = entry.get("roll_count", 0)
    if (not isinstance(grants, list) or not all(isinstance(g, str) for g in grants)
            or not all(isinstance(v, str) for v in texts.values())
            or type(roll_count) is not int or roll_count < 0
            or entry.get("status") not in STATUSES or entry.get("pattern") not in PATTERNS):
        raise VaultPolicyError(f"secret {name!r}: a field has the wrong type or value")
    # A grant to an unregistered principal cannot be made through the model, but a vault
    # written by hand or by another tool may hold one: it loads, and resolved_secrets() warns.
    if entry["status"] == "revoked" and texts["value"]:
        raise VaultPolicyError(f"secret {name!r} is revoked but still holds a value")
    return Secret(name=name, value=texts["value"], authorized_principals=tuple(grants),
                  status=entry["status"], pattern=entry["pattern"], roll_count=roll_count,
                  created_at=texts["created_at"], updated_at=texts["updated_at"],
                  revoked_at=texts["revoked_at"], description=texts["description"])
