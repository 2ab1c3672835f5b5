"""`environment_vars.include` files: KEY=VALUE lines that feed `${VAR}` interpolation.

An env file lets an operator keep secrets (the API token, plugin credentials) out of the YAML
files. The process environment always wins over a file, and an earlier file wins over a later
one, so an operator can override any value by exporting it. Nothing here touches `os.environ`:
the loader threads the returned mapping through interpolation, which keeps loading a pure
function of its inputs (a reload can never leak variables from a discarded config).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from ductile.config.interpolate import interpolate
from ductile.errors import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPORT = "export "


def parse_env_text(text: str, path: str) -> dict[str, str]:
    """Parse env-file text; `path` only names the file in error messages.

    Accepted lines: blank, `# comment`, `KEY=VALUE`, `export KEY=VALUE`. A value wrapped in
    matching single or double quotes loses them (no escape processing). The first definition
    of a key wins, matching the "never override" rule between files.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = _parse_line(line)
        if parsed is None:
            continue
        if parsed is False:
            raise ConfigError(
                f"invalid env line {number} in {path}: expected KEY=VALUE "
                "(KEY is letters, digits and _, not starting with a digit)",
                path=path,
                line=number,
            )
        key, value = parsed
        values.setdefault(key, value)
    return values


def _parse_line(line: str) -> tuple[str, str] | None | bool:
    """(key, value), None for a line to skip, or False for an invalid line."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith(_EXPORT):
        stripped = stripped[len(_EXPORT) :].lstrip()
    key, sep, value = stripped.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        return False
    return key, _unquote(value.strip())


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read_env_file(path: str, *, key: str = "environment_vars.include") -> dict[str, str]:
    """Read and parse one env file; `key` (e.g. `environment_vars.include[0]`) names the entry."""
    if not os.path.exists(path):
        raise ConfigError(f"{key}: file not found: {path}", path=path, key=key)
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: not a regular file: {path}", path=path, key=key)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(
            f"{key}: failed to read {path}: {exc.strerror or exc}", path=path, key=key
        ) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{key}: {path} is not valid UTF-8 (byte offset {exc.start})", path=path, key=key
        ) from exc
    return parse_env_text(text, path)


def load_env_includes(
    entries: Sequence[str], *, base_dir: str, environ: Mapping[str, str]
) -> dict[str, str]:
    """`environ` plus every variable the listed files define that `environ` does not.

    Each entry is `${VAR}`-interpolated (with the variables gathered so far), `~`-expanded with
    $HOME, and resolved against `base_dir` (the declaring file's directory).
    """
    merged = dict(environ)
    for index, entry in enumerate(entries):
        path = resolve_entry(entry, base_dir=base_dir, environ=merged)
        for name, value in read_env_file(path, key=f"environment_vars.include[{index}]").items():
            merged.setdefault(name, value)
    return merged


def resolve_entry(entry: str, *, base_dir: str, environ: Mapping[str, str]) -> str:
    """The absolute path an `environment_vars.include` entry names."""
    path = expand_home(interpolate(entry, environ), environ.get("HOME"))
    return os.path.normpath(os.path.join(base_dir, path))


def expand_home(path: str, home: str | None) -> str:
    """`~` or `~/x` -> `$HOME/x`; `~user` and an unknown home leave the path unchanged."""
    if not home or not path.startswith("~"):
        return path
    if path == "~":
        return home
    if path.startswith("~/"):
        return os.path.join(home, path[2:])
    return path
