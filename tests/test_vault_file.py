"""Key files, the key ladder, the vault file format and the owner, on real files."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from ductile.errors import (VaultExists, VaultFileError, VaultKeyError, VaultModifiedExternally,
                            VaultPolicyError, VaultWrongKey)
from ductile.vault import fileformat
from ductile.vault.bootstrap import bootstrap
from ductile.vault.keys import keygen, read_key_file, resolve_key_source
from ductile.vault.owner import VaultOwner, load_vault


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def new_vault(tmp_path: Path) -> tuple[VaultOwner, str]:
    key = keygen(str(tmp_path / "vault.key"))
    return VaultOwner.create(str(tmp_path / "vault.nacl"), key)


# -- keys --------------------------------------------------------------------------------------


def test_keygen_writes_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    key = keygen(str(tmp_path / "k"))
    assert mode(tmp_path / "k") == 0o600
    assert f"# public key: {key.public_text}" in (tmp_path / "k").read_text()
    assert read_key_file(str(tmp_path / "k")).public_text == key.public_text
    with pytest.raises(VaultKeyError, match="already exists"):
        keygen(str(tmp_path / "k"))


def test_key_file_readable_by_others_is_refused_with_the_chmod(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keygen(str(path))
    os.chmod(path, 0o644)
    with pytest.raises(VaultKeyError) as err:
        read_key_file(str(path))
    assert err.value.message == (
        f"vault key file {str(path)!r} has insecure permissions 0644: must not be readable by "
        f"group or others (chmod 600 {path})")


@pytest.mark.parametrize("body", [b"", b"not base64!\n", b"QUJD\n", b"a\nb\n", b"\xff\xfe"])
def test_malformed_key_files_are_refused(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(body)
    os.chmod(path, 0o600)
    with pytest.raises(VaultKeyError, match="is not a ductile vault key"):
        read_key_file(str(path))


def test_key_ladder_order_and_explicit_missing_is_an_error(tmp_path: Path) -> None:
    cfg, home, creds = tmp_path / "cfg", tmp_path / "home", tmp_path / "creds"
    for d in (cfg, home / ".config" / "ductile", creds):
        d.mkdir(parents=True)
    assert resolve_key_source(str(cfg), "", {}, str(home)) is None
    keygen(str(home / ".config" / "ductile" / "vault.key"))
    assert resolve_key_source(str(cfg), "", {}, str(home)).origin == "~/.config/ductile/vault.key"
    keygen(str(cfg / "vault.key"))
    assert resolve_key_source(str(cfg), "", {}, str(home)).origin == "<config dir>/vault.key"
    keygen(str(creds / "vault.key"))
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert resolve_key_source(str(cfg), "", env, str(home)).path == str(creds / "vault.key")
    source = resolve_key_source(str(cfg), "keys/mine.key", env, str(home))
    assert source.path == str(cfg / "keys" / "mine.key") and source.explicit
    env["DUCTILE_VAULT_KEY_FILE"] = str(tmp_path / "nowhere.key")
    with pytest.raises(VaultKeyError, match="DUCTILE_VAULT_KEY_FILE: vault key file .* does not"):
        load_vault(str(cfg), "", "keys/mine.key", env, str(home))
    with pytest.raises(VaultKeyError, match="secrets.key_file: vault key file .* does not exist"):
        load_vault(str(cfg), "", "keys/mine.key", {}, str(home))


# -- load_vault --------------------------------------------------------------------------------


def test_load_vault_absent_blind_loaded(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    home = str(tmp_path / "home")
    absent = load_vault(str(cfg), "", "", {}, home)
    assert absent.status == "absent" and absent.owner is None and not absent.present
    assert absent.vault_path == str(cfg / "vault.nacl")
    key = keygen(str(tmp_path / "elsewhere.key"))
    VaultOwner.create(str(cfg / "vault.nacl"), key)
    blind = load_vault(str(cfg), "", "", {}, home)
    assert blind.status == "blind" and blind.owner is None and blind.present
    env = {"DUCTILE_VAULT_KEY_FILE": key.path}
    loaded = load_vault(str(cfg), "", "", env, home)
    assert loaded.status == "loaded" and loaded.owner is not None
    assert loaded.key_path == key.path


def test_vault_file_setting_is_relative_to_the_config_dir(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    (cfg / "sub").mkdir(parents=True)
    key = keygen(str(cfg / "vault.key"))
    VaultOwner.create(str(cfg / "sub" / "v.nacl"), key)
    loaded = load_vault(str(cfg), "sub/v.nacl", "", {}, str(tmp_path))
    assert loaded.status == "loaded" and loaded.vault_path == str(cfg / "sub" / "v.nacl")


# -- the file format ---------------------------------------------------------------------------


def test_vault_file_is_0600_with_a_versioned_header_and_no_plaintext(tmp_path: Path) -> None:
    owner, token = new_vault(tmp_path)
    owner.set_secret("k", "plain-secret-value")
    data = (tmp_path / "vault.nacl").read_bytes()
    assert mode(tmp_path / "vault.nacl") == 0o600
    assert data.startswith(b"ductile-vault v1 sealedbox-x25519 recipient=")
    assert b"plain-secret-value" not in data and token.encode() not in data
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".vault-")]


def test_wrong_key_fails_closed_naming_both_keys(tmp_path: Path) -> None:
    owner, _ = new_vault(tmp_path)
    other = keygen(str(tmp_path / "other.key"))
    with pytest.raises(VaultWrongKey, match="is sealed to public key .* but the resolved key"):
        VaultOwner.open(owner.path, other)


def test_truncated_and_tampered_files_fail_closed(tmp_path: Path) -> None:
    owner, _ = new_vault(tmp_path)
    key = read_key_file(str(tmp_path / "vault.key"))
    data = (tmp_path / "vault.nacl").read_bytes()
    header, _, body = data.partition(b"\n")
    ciphertext = base64.b64decode(b"".join(body.split()))
    cases = {
        "truncated": data[: len(data) // 2],
        "header only": header,
        "short": header + b"\n" + base64.b64encode(ciphertext[:40]),
        "tampered": header + b"\n" + base64.b64encode(
            ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])),
        "not a vault": b"secrets:\n  k: v\n",
        "future version": data.replace(b" v1 ", b" v9 ", 1),
    }
    for label, blob in cases.items():
        with pytest.raises(VaultFileError) as err:
            fileformat.open_sealed(blob, key.private, owner.path)
        assert type(err.value) is VaultFileError, label
        assert owner.path in err.value.message


def test_write_refuses_an_out_of_band_change_and_keeps_the_model(tmp_path: Path) -> None:
    owner, _ = new_vault(tmp_path)
    owner.set_secret("k", "v1")
    other = VaultOwner.open(owner.path, read_key_file(str(tmp_path / "vault.key")))
    other.set_secret("side", "door")
    with pytest.raises(VaultModifiedExternally, match="vault modified externally"):
        owner.set_secret("k2", "v2")
    assert "k2" not in owner.model.secrets
    reopened = VaultOwner.open(owner.path, read_key_file(str(tmp_path / "vault.key")))
    assert set(reopened.model.secrets) == {"core-admin-token", "k", "side"}


def test_a_refused_operation_writes_nothing(tmp_path: Path) -> None:
    owner, _ = new_vault(tmp_path)
    before = (tmp_path / "vault.nacl").read_bytes()
    with pytest.raises(VaultPolicyError):
        owner.set_secret("k", "v", principals=["ghost"])
    owner.register_principal("p")
    after_register = (tmp_path / "vault.nacl").read_bytes()
    assert after_register != before
    owner.register_principal("p")  # a no-op: no rewrite
    assert (tmp_path / "vault.nacl").read_bytes() == after_register


def test_roll_principal_is_atomic_when_one_roll_fails(tmp_path: Path) -> None:
    owner, _ = new_vault(tmp_path)
    owner.register_principal("echo")
    owner.set_secret("a", "", pattern="auto", principals=["echo"])
    owner.set_secret("b", "", pattern="auto", principals=["echo"])
    calls: list[int] = []

    def mint_once() -> str:
        calls.append(1)
        if len(calls) > 1:
            raise VaultPolicyError("the CSPRNG failed")
        return "first-minted-value"

    flaky = VaultOwner.open(owner.path, read_key_file(str(tmp_path / "vault.key")),
                            mint=mint_once)
    before_bytes = (tmp_path / "vault.nacl").read_bytes()
    before = flaky.model
    with pytest.raises(VaultPolicyError, match="CSPRNG"):
        flaky.roll_principal("echo")
    assert flaky.model == before and (tmp_path / "vault.nacl").read_bytes() == before_bytes
    report = owner.roll_principal("echo")
    assert report.rolled == ("a", "b")


def test_a_vault_file_removed_underneath_is_not_silently_recreated(tmp_path: Path) -> None:
    owner, _ = new_vault(tmp_path)
    os.unlink(owner.path)
    with pytest.raises(VaultModifiedExternally):
        owner.set_secret("k", "v")
    assert not os.path.exists(owner.path)


def test_init_refuses_an_existing_vault(tmp_path: Path) -> None:
    owner, _ = new_vault(tmp_path)
    with pytest.raises(VaultExists, match="refusing to init"):
        VaultOwner.create(owner.path, read_key_file(str(tmp_path / "vault.key")))


def test_rotate_admin_token_and_key(tmp_path: Path) -> None:
    owner, token = new_vault(tmp_path)
    owner.set_secret("k", "v")
    new_token = owner.rotate_admin_token()
    assert owner.authenticate_admin(new_token) and not owner.authenticate_admin(token)
    old_key = read_key_file(str(tmp_path / "vault.key"))
    new_key = owner.rotate_key()
    assert new_key.public_text != old_key.public_text
    assert mode(tmp_path / "vault.key") == 0o600
    assert not (tmp_path / "vault.key.rotate-new").exists()
    with pytest.raises(VaultWrongKey):
        VaultOwner.open(owner.path, old_key)
    reopened = VaultOwner.open(owner.path, read_key_file(str(tmp_path / "vault.key")))
    assert reopened.readable_value("k") == "v" and reopened.authenticate_admin(new_token)
    owner.set_secret("k2", "v2")  # the owner keeps working after the rotation


def test_bootstrap_mints_a_gateway_visible_api_token(tmp_path: Path) -> None:
    result = bootstrap(str(tmp_path / "cfg"))
    assert mode(result.key_path) == 0o600 and mode(result.vault_path) == 0o600
    assert result.api_token not in repr(result) and result.admin_token not in repr(result)
    loaded = load_vault(str(tmp_path / "cfg"), "", "", {}, str(tmp_path))
    assert loaded.owner is not None
    assert loaded.owner.resolved_secrets().values["api-token"] == result.api_token
    assert loaded.owner.authenticate_admin(result.admin_token)
    with pytest.raises(VaultExists):
        bootstrap(str(tmp_path / "cfg"))


def test_no_error_message_carries_a_value(tmp_path: Path) -> None:
    owner, admin = new_vault(tmp_path)
    value = "leak-canary-value-0c4e"
    owner.set_secret("k", value)
    messages = []
    for op in (lambda: owner.set_secret("k", value + "2"),
               lambda: owner.set_secret("core-admin-token", value),
               lambda: owner.roll_secret("k", None),
               lambda: owner.set_secret("new", value, principals=["ghost"]),
               lambda: owner.compose("ghost"),
               lambda: owner.readable_value("core-admin-token")):
        with pytest.raises(Exception) as err:
            op()
        messages.append(str(err.value) + repr(err.value))
    messages.append(repr(owner) + repr(owner.model) + repr(read_key_file(owner.key_path)))
    for message in messages:
        assert admin not in message
    assert not [m for m in messages if value in m]
