"""The original's config under our loader: what it refuses, rewritten mechanically.

The config directory is left as the Go gateway wrote it, except where our loader (or the vault
gate of `ductile config check`) refuses it and the fix is mechanical. Each fix is a minimal text
edit (comments and layout kept), its file saved first as `<file>.go-backup`:

- `secrets.vault_file` naming the age vault: our vault is a different file (`vault.nacl`), so
  the setting moves to it (the age vault stays where it was, untouched).
- `api.auth.tokens[i].token: <literal>`: a literal token is refused (tokens live in the vault),
  so the value becomes a manual vault secret `api-token-<n>` and the entry says
  `secret_ref: api-token-<n>`.

Any other refusal is reported with the loader's own message and stops the migration before
anything is written: fix it by hand and run again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from ductile.config.dotpath import parse_path
from ductile.config.load import parse_config, validate_config
from ductile.config.yamledit import set_value
from ductile.errors import ConfigError, MigrationRefused
from ductile.migrate.agekey import is_age_file

OUR_VAULT_FILE = "vault.nacl"
_LITERAL_TOKEN = re.compile(
    r"^(?P<file>.+?): api\.auth\.tokens\[(?P<index>\d+)\]: a literal token value")
_MAX_FIXES = 64


@dataclass
class ConfigRewrite:
    """The edits to make, per file (path -> new text), what each changed, and the secrets the
    vault must gain for them."""

    originals: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # What our loader makes of the rewritten config: where our state and vault will live.
    state_path: str = ""
    vault_file: str = ""
    key_file: str = ""


def plan_config(config_file: str, *, vault_setting: str, taken_names: Sequence[str],
                environ: Mapping[str, str]) -> ConfigRewrite:
    """Load the Go config with our loader, fixing each refusal we can; MigrationRefused with
    the loader's message for one we cannot."""
    rewrite = ConfigRewrite()
    config_file = os.path.realpath(config_file)
    config_dir = os.path.dirname(config_file)
    if vault_setting:
        go_vault = os.path.join(config_dir, os.path.expanduser(vault_setting))
        if _holds_age(go_vault):
            _edit(rewrite, config_file, "secrets.vault_file", OUR_VAULT_FILE,
                  f"secrets.vault_file: {vault_setting} -> {OUR_VAULT_FILE} (our vault is a "
                  "separate file; the age vault is left in place)")
    for _ in range(_MAX_FIXES):
        overrides = {path: text.encode("utf-8") for path, text in rewrite.texts.items()}
        try:
            cfg = parse_config(config_file, environ=environ, overrides=overrides)
            validate_config(cfg)
        except ConfigError as exc:
            if not _fix_literal_token(rewrite, config_dir, str(exc), taken_names):
                raise MigrationRefused(
                    f"our loader refuses the Go config and the fix is not mechanical: {exc} "
                    "(edit it by hand, then run ductile migrate from-go again)",
                    path=config_file) from None
            continue
        rewrite.warnings = tuple(cfg.warnings)
        rewrite.state_path = cfg.state_path
        rewrite.vault_file = cfg.secrets.vault_file
        rewrite.key_file = cfg.secrets.key_file
        return rewrite
    raise MigrationRefused(f"the Go config {config_file!r} needs more than {_MAX_FIXES} "
                           "rewrites; fix it by hand", path=config_file)


def _fix_literal_token(rewrite: ConfigRewrite, config_dir: str, message: str,
                       taken_names: Sequence[str]) -> bool:
    match = _LITERAL_TOKEN.match(message)
    if match is None:
        return False
    path = os.path.join(config_dir, match["file"])
    index = int(match["index"])
    text = _current(rewrite, path)
    if text is None:
        return False
    located = _token_entry(text, index)
    if located is None:
        return False
    key_node, value_node = located
    value = value_node.value
    if not isinstance(value, str) or not value or "${" in value:
        return False  # the value comes from the environment: not ours to move
    taken = {*taken_names, *rewrite.secrets}
    number = index + 1
    while f"api-token-{number}" in taken:
        number += 1
    name = f"api-token-{number}"
    # Replace the value first: the key comes before it, so its offsets stay valid.
    new = (text[:value_node.start_mark.index] + name + text[value_node.end_mark.index:])
    new = new[:key_node.start_mark.index] + "secret_ref" + new[key_node.end_mark.index:]
    _remember(rewrite, path, new)
    rewrite.secrets[name] = value
    rewrite.changes.append(f"{os.path.basename(path)}: api.auth.tokens[{index}].token "
                           f"(literal) -> secret_ref: {name} (value moved into the vault)")
    return True


def _token_entry(text: str, index: int) -> tuple[yaml.Node, yaml.Node] | None:
    """The key and value nodes of `token:` in `api.auth.tokens[index]` of a YAML text."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    for key in ("api", "auth", "tokens"):
        node = _child(node, key)
    if not isinstance(node, yaml.SequenceNode) or index >= len(node.value):
        return None
    entry = node.value[index]
    if not isinstance(entry, yaml.MappingNode):
        return None
    for key_node, value_node in entry.value:
        if key_node.value == "token" and isinstance(value_node, yaml.ScalarNode) \
                and value_node.style in (None, "'", '"'):
            return key_node, value_node
    return None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if key_node.value == key:
            return value_node
    return None


def _edit(rewrite: ConfigRewrite, path: str, key: str, value: str, change: str) -> None:
    text = _current(rewrite, path)
    if text is None:
        raise MigrationRefused(f"cannot read the Go config {path!r}", path=path)
    _remember(rewrite, path, set_value(text, parse_path(key), value))
    rewrite.changes.append(f"{os.path.basename(path)}: {change}")


def _current(rewrite: ConfigRewrite, path: str) -> str | None:
    if path in rewrite.texts:
        return rewrite.texts[path]
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    rewrite.originals[path] = text
    return text


def _remember(rewrite: ConfigRewrite, path: str, text: str) -> None:
    rewrite.texts[path] = text


def _holds_age(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return is_age_file(handle.read(256))
    except OSError:
        return False
