"""Sequences of vault model operations keep the invariants.

- the reserved `core` principal and `core-admin-token` never change through the data plane;
- a revoked secret stays revoked with no value;
- every grant names a registered principal;
- compose never returns a revoked or ungranted secret, and fails closed for a revoked or
  unknown principal;
- the model always survives its own document round trip.
"""

from __future__ import annotations

import itertools

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ductile.errors import VaultPolicyError, VaultPrincipalUnavailable
from ductile.vault.model import ADMIN_TOKEN, CORE_PRINCIPAL, from_document, genesis, to_document

NOW = "2026-03-01T12:00:00.000000Z"
PRINCIPALS = st.sampled_from(["core", "echo", "web", "ops", "Bad_Name"])
SECRETS = st.sampled_from(["core-admin-token", "api-token", "k1", "k2", "BAD"])
VALUES = st.sampled_from(["", "v1", "v2", "v3"])


class VaultMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        counter = itertools.count()
        self.mint = lambda: f"minted-{next(counter)}"
        self.model, self.admin = genesis(now=NOW, mint=self.mint)
        self.core = self.model.principals[CORE_PRINCIPAL]
        self.revoked: set[str] = set()

    def attempt(self, op) -> None:  # type: ignore[no-untyped-def]
        try:
            self.model = op(self.model)
        except VaultPolicyError:
            pass

    @rule(name=SECRETS, value=VALUES, pattern=st.sampled_from([None, "manual", "auto", "x"]),
          grants=st.none() | st.lists(PRINCIPALS, max_size=3))
    def set_secret(self, name, value, pattern, grants) -> None:  # type: ignore[no-untyped-def]
        self.attempt(lambda m: m.set_secret(name, value, principals=grants, pattern=pattern,
                                            now=NOW))

    @rule(name=SECRETS, value=VALUES)
    def roll(self, name, value) -> None:  # type: ignore[no-untyped-def]
        self.attempt(lambda m: m.roll_secret(name, value or None, now=NOW, mint=self.mint))

    @rule(name=SECRETS)
    def revoke(self, name) -> None:  # type: ignore[no-untyped-def]
        self.attempt(lambda m: m.revoke_secret(name, now=NOW))
        secret = self.model.secrets.get(name)
        if secret is not None and not secret.active:
            self.revoked.add(name)

    @rule(name=PRINCIPALS, kind=st.sampled_from(["plugin", "consumer", "gateway", "robot"]))
    def register(self, name, kind) -> None:  # type: ignore[no-untyped-def]
        self.attempt(lambda m: m.register_principal(name, kind))

    @rule(name=PRINCIPALS)
    def revoke_principal(self, name) -> None:  # type: ignore[no-untyped-def]
        self.attempt(lambda m: m.revoke_principal(name))

    @rule(name=PRINCIPALS)
    def purge_principal(self, name) -> None:  # type: ignore[no-untyped-def]
        self.attempt(lambda m: m.purge_principal(name, now=NOW))

    @rule(name=PRINCIPALS)
    def roll_principal(self, name) -> None:  # type: ignore[no-untyped-def]
        self.attempt(lambda m: m.roll_principal(name, now=NOW, mint=self.mint)[0])

    @rule(name=PRINCIPALS)
    def compose(self, name) -> None:  # type: ignore[no-untyped-def]
        record = self.model.principals.get(name)
        try:
            comp = self.model.compose(name)
        except VaultPrincipalUnavailable:
            assert record is None or not record.active
            return
        assert record is not None and record.active
        for secret_name, value in comp.secrets.items():
            secret = self.model.secrets[secret_name]
            assert secret.active and value and name in secret.authorized_principals
        for secret_name in comp.denials:
            assert secret_name not in comp.secrets

    @invariant()
    def reserved_entities_are_untouched(self) -> None:
        assert self.model.principals[CORE_PRINCIPAL] == self.core
        assert self.model.authenticate_admin(self.admin)
        assert self.model.secrets[ADMIN_TOKEN].roll_count == 0

    @invariant()
    def revoked_is_terminal(self) -> None:
        for name in self.revoked:
            secret = self.model.secrets[name]
            assert secret.status == "revoked" and secret.value == ""

    @invariant()
    def grants_name_registered_principals(self) -> None:
        for secret in self.model.secrets.values():
            assert set(secret.authorized_principals) <= set(self.model.principals)

    @invariant()
    def document_round_trip(self) -> None:
        assert from_document(to_document(self.model)) == self.model


TestVaultMachine = VaultMachine.TestCase
