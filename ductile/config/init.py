"""`ductile config init`: write a config directory that boots as-is, credential ladder included.

The result works on the first `ductile system start`: the echo plugin enabled, the API on
127.0.0.1:8080, and an API token that lives only in the vault. Init performs the whole ladder
(docs/vault.md): a key (`vault.key`), a vault sealed to it (`vault.nacl`), an auto secret
`api-token` minted in it, and `api.yaml` naming it by `secret_ref`. The vault admin token and the
API token are also written to the 0600 files `admin-token` and `api-token` so the operator can
use them; nothing secret is in any YAML file. The directory is 0700 and every file 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources

from ductile.errors import ConfigError

DIR_MODE = 0o700
FILE_MODE = 0o600
# (file written, template it comes from), in writing order.
FILES = (
    ("config.yaml", "config.yaml"),
    ("plugins.yaml", "plugins.yaml"),
    ("api.yaml", "api.yaml"),
    (".env", "dot-env"),
)


ADMIN_TOKEN_FILE = "admin-token"
API_TOKEN_FILE = "api-token"


@dataclass(frozen=True)
class InitResult:
    """What init wrote; `vault_created` is False when --force kept an existing vault."""

    written: tuple[str, ...]
    vault_created: bool
    admin_token_file: str
    api_token_file: str


#: What `config init` writes under `service:` when the gateway that will run it can change
#: uid (root): such a gateway refuses to boot without accounts, unless told so on purpose.
UNCONFINED_BLOCK = """\
  # Privilege separation. This config was written by an account that can change uid (root).
  # A gateway that can change uid refuses to start without an accounts: table, so plugins
  # never run as root by accident. `unconfined: true` says you mean it: plugins run as the
  # gateway (here: root), and every boot warns about it. To confine them instead, delete
  # this line and give plugins accounts (docs/operator.md, "Privilege separation"):
  #   accounts:
  #     default: {user: ductile-plugins, state_dir: /var/lib/ductile/accounts/default}
  unconfined: true
"""


def init_config_dir(directory: str, *, force: bool = False, plugin_root: str,
                    unconfined: bool = False) -> InitResult:
    """Write the YAML files, then the vault ladder, into `directory`.

    `unconfined` (the caller can change uid) writes `service.unconfined: true` with a comment
    saying what it means and how to define accounts instead.

    Refuses (ConfigError) when any file exists, unless `force`: then the YAML files are
    rewritten, but an existing vault and its key are kept (replacing them would lose every
    secret in the vault), so the `api-token` secret and the token files stay valid.
    """
    from ductile.errors import VaultError
    from ductile.vault.bootstrap import bootstrap, write_secret_file

    target = os.path.abspath(directory)
    if not force:
        _refuse_existing(target)
    _make_private_dir(target)
    values = {"@PLUGIN_ROOT@": _yaml_string(os.path.abspath(plugin_root)),
              "@PRIVSEP@": UNCONFINED_BLOCK if unconfined else ""}
    written = []
    for name, template in FILES:
        path = os.path.join(target, name)
        _write_private(path, _render(template, values))
        written.append(path)
    admin_file = os.path.join(target, ADMIN_TOKEN_FILE)
    api_file = os.path.join(target, API_TOKEN_FILE)
    if force and os.path.lexists(os.path.join(target, "vault.nacl")):
        return InitResult(tuple(written), False, admin_file, api_file)
    try:
        ladder = bootstrap(target)
        write_secret_file(admin_file, ladder.admin_token)
        write_secret_file(api_file, ladder.api_token)
    except (VaultError, OSError) as exc:
        raise ConfigError(f"{target}: cannot create the vault: {exc}", path=target) from exc
    written += [ladder.key_path, ladder.vault_path, admin_file, api_file]
    return InitResult(tuple(written), True, admin_file, api_file)


def _refuse_existing(target: str) -> None:
    names = [name for name, _template in FILES]
    for name in (*names, "vault.nacl", ADMIN_TOKEN_FILE, API_TOKEN_FILE):
        path = os.path.join(target, name)
        if os.path.lexists(path):
            raise ConfigError(f"{path} already exists; pass --force to overwrite", path=path)


def _make_private_dir(target: str) -> None:
    try:
        os.makedirs(target, mode=DIR_MODE, exist_ok=True)
        os.chmod(target, DIR_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot create config directory {target}: {exc.strerror or exc}",
                          path=target) from exc


def _render(template: str, values: dict[str, str]) -> str:
    text = (resources.files("ductile") / "bundled" / "templates" / template).read_text("utf-8")
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def _yaml_string(text: str) -> str:
    """A double-quoted YAML scalar (JSON string syntax is valid YAML) for any path."""
    return json.dumps(text, ensure_ascii=False)


def _write_private(path: str, text: str) -> None:
    """Create or truncate with mode 0600 from the first byte (no window where it is readable)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}", path=path) from exc
