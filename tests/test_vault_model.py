"""The vault model's rules, on the pure in-memory model."""

from __future__ import annotations

import itertools

import pytest

from ductile.errors import VaultPolicyError, VaultPrincipalUnavailable, VaultReservedEntity
from ductile.vault.model import (ADMIN_TOKEN, VaultModel, decode_b64url, from_document, genesis,
                                 mint_token, to_document)

NOW = "2026-03-01T12:00:00.000000Z"
LATER = "2026-03-02T12:00:00.000000Z"


def fresh() -> tuple[VaultModel, str]:
    return genesis(now=NOW)


def test_genesis_seeds_core_with_a_32_byte_nonce_and_a_43_char_admin_token() -> None:
    model, token = fresh()
    assert len(token) == 43 and len(decode_b64url(token)) == 32
    assert model.principals["core"].kind == "gateway"
    assert len(model.nonce) == 32
    assert model.secrets[ADMIN_TOKEN].pattern == "auto"
    assert model.authenticate_admin(token)
    assert not model.authenticate_admin(token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not model.authenticate_admin("")


def test_minted_tokens_are_43_chars_and_distinct() -> None:
    tokens = {mint_token() for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) == 43 for t in tokens)


@pytest.mark.parametrize("name", ["", "A", "-x", "x-", "a b", "a/b", "ü"])
def test_invalid_secret_names_are_refused(name: str) -> None:
    model, _ = fresh()
    with pytest.raises(VaultPolicyError, match="invalid secret name"):
        model.set_secret(name, "v", now=NOW)


@pytest.mark.parametrize("name", ["a_b", "a--b", "-a", "A"])
def test_invalid_principal_names_are_refused(name: str) -> None:
    model, _ = fresh()
    with pytest.raises(VaultPolicyError, match="invalid principal name"):
        model.register_principal(name)


def test_reserved_entities_are_untouchable_through_the_data_plane() -> None:
    model, token = fresh()
    for op in (lambda: model.set_secret(ADMIN_TOKEN, "x", now=NOW),
               lambda: model.roll_secret(ADMIN_TOKEN, now=NOW),
               lambda: model.revoke_secret(ADMIN_TOKEN, now=NOW),
               lambda: model.register_principal("core", "gateway"),
               lambda: model.revoke_principal("core"),
               lambda: model.purge_principal("core", now=NOW),
               lambda: model.roll_principal("core", now=NOW)):
        with pytest.raises(VaultReservedEntity):
            op()
    with pytest.raises(VaultReservedEntity, match="never printed by 'vault get'"):
        model.readable_value(ADMIN_TOKEN)
    assert model.authenticate_admin(token)


def test_value_is_roll_only_but_grants_and_pattern_can_change() -> None:
    model, _ = fresh()
    model = model.register_principal("echo")
    model = model.set_secret("k", "one", now=NOW)
    with pytest.raises(VaultPolicyError, match="roll-only"):
        model.set_secret("k", "two", now=NOW)
    same = model.set_secret("k", "one", now=LATER)
    assert same is model  # equal value, nothing else changed: no new model, no write
    granted = model.set_secret("k", "", principals=["echo"], now=LATER)
    assert granted.secrets["k"].authorized_principals == ("echo",)
    assert granted.secrets["k"].value == "one" and granted.secrets["k"].updated_at == LATER
    kept = granted.set_secret("k", "", now=LATER)
    assert kept.secrets["k"].authorized_principals == ("echo",)
    cleared = granted.set_secret("k", "", principals=[], now=LATER)
    assert cleared.secrets["k"].authorized_principals == ()


def test_grants_must_name_registered_principals() -> None:
    model, _ = fresh()
    with pytest.raises(VaultPolicyError, match="unknown principal: secret 'k' authorizes 'ghost'"):
        model.set_secret("k", "v", principals=["ghost"], now=NOW)


def test_manual_needs_a_value_auto_may_start_empty_and_is_minted_by_roll() -> None:
    model, _ = fresh()
    with pytest.raises(VaultPolicyError, match="manual secret needs a non-empty value"):
        model.set_secret("k", "", now=NOW)
    with pytest.raises(VaultPolicyError, match="pattern 'weird'"):
        model.set_secret("k", "v", pattern="weird", now=NOW)
    model = model.set_secret("tok", "", pattern="auto", now=NOW)
    with pytest.raises(VaultPolicyError, match="no value yet"):
        model.readable_value("tok")
    tokens = iter(["minted-1", "minted-2"])
    model = model.roll_secret("tok", now=LATER, mint=lambda: next(tokens))
    assert model.readable_value("tok") == "minted-1"
    assert model.secrets["tok"].roll_count == 1
    with pytest.raises(VaultPolicyError, match="is auto"):
        model.roll_secret("tok", "operator-value", now=LATER)


def test_manual_roll_takes_the_operators_value() -> None:
    model, _ = fresh()
    model = model.set_secret("k", "one", now=NOW)
    with pytest.raises(VaultPolicyError, match="is manual"):
        model.roll_secret("k", None, now=NOW)
    model = model.roll_secret("k", "two", now=LATER)
    assert model.readable_value("k") == "two" and model.secrets["k"].roll_count == 1


def test_revoke_is_terminal_idempotent_and_clears_the_value() -> None:
    model, _ = fresh()
    model = model.set_secret("k", "one", now=NOW).revoke_secret("k", now=LATER)
    secret = model.secrets["k"]
    assert secret.status == "revoked" and secret.value == "" and secret.revoked_at == LATER
    assert model.revoke_secret("k", now="2030-01-01T00:00:00.000000Z") is model
    with pytest.raises(VaultPolicyError, match="revoked"):
        model.roll_secret("k", "x", now=LATER)
    with pytest.raises(VaultPolicyError, match="revoked"):
        model.set_secret("k", "", principals=[], now=LATER)
    with pytest.raises(VaultPolicyError, match=r"revoked \(value cleared\)"):
        model.readable_value("k")


def test_compose_returns_granted_active_secrets_and_denials_and_fails_closed() -> None:
    model, _ = fresh()
    model = model.register_principal("echo").register_principal("other")
    model = model.set_secret("mine", "m-value-42", principals=["echo"], now=NOW)
    model = model.set_secret("gone", "g", principals=["echo"], now=NOW)
    model = model.set_secret("later", "", pattern="auto", principals=["echo"], now=NOW)
    model = model.set_secret("theirs", "t", principals=["other"], now=NOW)
    model = model.revoke_secret("gone", now=NOW)
    comp = model.compose("echo")
    assert dict(comp.secrets) == {"mine": "m-value-42"}
    assert dict(comp.denials) == {"gone": "secret_revoked", "later": "secret_unminted"}
    assert "m-value-42" not in repr(comp)
    with pytest.raises(VaultPrincipalUnavailable, match="not registered"):
        model.compose("ghost")
    with pytest.raises(VaultPrincipalUnavailable, match="revoked"):
        model.revoke_principal("echo").compose("echo")


def test_register_principal_rules() -> None:
    model, _ = fresh()
    model = model.register_principal("svc", "consumer")
    assert model.register_principal("svc", "consumer") is model
    with pytest.raises(VaultPolicyError, match="already registered with kind 'consumer'"):
        model.register_principal("svc", "plugin")
    with pytest.raises(VaultPolicyError, match="kind 'robot'"):
        model.register_principal("bot", "robot")
    revoked = model.revoke_principal("svc")
    assert revoked.revoke_principal("svc") is revoked
    with pytest.raises(VaultPolicyError, match="purge it"):
        revoked.register_principal("svc", "consumer")


def test_purge_strips_the_principal_from_every_grant() -> None:
    model, _ = fresh()
    model = model.register_principal("a").register_principal("b")
    model = model.set_secret("k", "v", principals=["a", "b"], now=NOW)
    purged = model.purge_principal("a", now=LATER)
    assert "a" not in purged.principals
    assert purged.secrets["k"].authorized_principals == ("b",)
    with pytest.raises(VaultPolicyError, match="not registered"):
        purged.purge_principal("a", now=LATER)


def test_roll_principal_rolls_auto_and_skips_manual() -> None:
    model, _ = fresh()
    model = model.register_principal("echo")
    model = model.set_secret("auto1", "", pattern="auto", principals=["echo"], now=NOW)
    model = model.set_secret("auto2", "", pattern="auto", principals=["echo"], now=NOW)
    model = model.set_secret("man", "m", principals=["echo"], now=NOW)
    model = model.set_secret("other", "", pattern="auto", now=NOW)
    n = itertools.count(1)
    rolled, report = model.roll_principal("echo", now=LATER, mint=lambda: f"v{next(n)}")
    assert report.rolled == ("auto1", "auto2") and report.skipped == ("man",)
    assert rolled.compose("echo").secrets == {"auto1": "v1", "auto2": "v2", "man": "m"}
    assert rolled.secrets["other"].roll_count == 0


def test_resolved_secrets_hides_plugin_only_secrets_and_the_admin_token() -> None:
    model, _ = fresh()
    model = model.register_principal("echo").register_principal("web", "consumer")
    model = model.set_secret("plugin-only", "p", principals=["echo"], now=NOW)
    model = model.set_secret("shared", "s", principals=["echo", "web"], now=NOW)
    model = model.set_secret("open", "o", now=NOW)
    model = model.set_secret("core-granted", "c", principals=["core"], now=NOW)
    model = model.set_secret("dead", "d", now=NOW).revoke_secret("dead", now=NOW)
    resolved = model.resolved_secrets()
    assert dict(resolved.values) == {"shared": "s", "open": "o", "core-granted": "c"}
    assert resolved.warnings == ()


def test_resolved_secrets_warns_about_an_unregistered_grantee_in_a_loaded_document() -> None:
    model, _ = fresh()
    doc = to_document(model.set_secret("k", "v", now=NOW))
    doc["secrets"]["k"]["authorized_principals"] = ["ghost"]
    resolved = from_document(doc).resolved_secrets()
    assert resolved.values == {"k": "v"}
    assert "unregistered principal 'ghost'" in resolved.warnings[0]


def test_document_round_trip_and_refusals() -> None:
    model, _ = fresh()
    model = model.register_principal("echo")
    model = model.set_secret("k", "v", principals=["echo"], now=NOW, description="d")
    model = model.set_secret("r", "x", now=NOW).revoke_secret("r", now=LATER)
    assert from_document(to_document(model)) == model
    broken = to_document(model)
    del broken["principals"]["core"]
    with pytest.raises(VaultPolicyError, match="core principal"):
        from_document(broken)
    broken = to_document(model)
    broken["secrets"]["r"]["value"] = "resurrected"
    with pytest.raises(VaultPolicyError, match="revoked but still holds a value"):
        from_document(broken)


def test_reprs_never_show_values() -> None:
    model, token = fresh()
    model = model.set_secret("k", "very-secret-value", now=NOW)
    assert "very-secret-value" not in repr(model) and token not in repr(model)
    assert model.principals["core"].nonce not in repr(model)
