"""`ductile config init`: write a config directory that boots as-is.

The result is meant to work on the first `ductile system start`: the echo plugin enabled, the
API on 127.0.0.1:8080, and a freshly generated API token kept out of the YAML in a 0600 `.env`
file that the root config includes. The directory is 0700 and every file 0600 because the
directory holds a credential.
"""

from __future__ import annotations

import json
import os
import secrets
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


def init_config_dir(directory: str, *, force: bool = False, plugin_root: str) -> list[str]:
    """Write config.yaml, plugins.yaml, api.yaml and .env into `directory`; return their paths.

    Refuses (ConfigError) when any of them exists, unless `force` — then all are rewritten and
    the token in `.env` is a new one.
    """
    target = os.path.abspath(directory)
    if not force:
        _refuse_existing(target)
    _make_private_dir(target)
    values = {
        "@PLUGIN_ROOT@": _yaml_string(os.path.abspath(plugin_root)),
        "@DUCTILE_TOKEN@": secrets.token_urlsafe(32),
    }
    written = []
    for name, template in FILES:
        path = os.path.join(target, name)
        _write_private(path, _render(template, values))
        written.append(path)
    return written


def _refuse_existing(target: str) -> None:
    for name, _template in FILES:
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
