"""Where the config lives: --config > $DUCTILE_CONFIG_DIR > ~/.config/ductile > /etc/ductile.

The source label is stored in every config snapshot, so it must say where the path actually came
from. (Go ductile labels by whether the variable is *set*, even when discovery fell through to
~/.config; we label by the step that produced the path.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ductile.config.envfile import expand_home
from ductile.errors import ConfigNotFound

ENV_VAR = "DUCTILE_CONFIG_DIR"
DEFAULT_ETC_DIR = "/etc/ductile"
ROOT_FILE = "config.yaml"

SOURCE_EXPLICIT = "explicit"
SOURCE_ENV = "env:DUCTILE_CONFIG_DIR"
SOURCE_DISCOVERED = "auto-discovered"


def resolve_config(
    explicit: str | None,
    environ: Mapping[str, str],
    home: str,
    *,
    etc_dir: str = DEFAULT_ETC_DIR,
) -> tuple[str, str]:
    """(absolute root config file, source label), or ConfigNotFound saying what was checked.

    Discovery only asks whether a directory exists (as Go does); a found directory without
    config.yaml is then an error rather than a silent fall-through to the next location, so the
    operator learns which directory was picked.
    """
    if explicit:
        # `--config=~/x` reaches us unexpanded (the shell does not expand after `=`).
        return config_file_for(expand_home(explicit, home)), SOURCE_EXPLICIT
    from_env = expand_home(environ.get(ENV_VAR, ""), home)
    if from_env and os.path.exists(from_env):
        return config_file_for(from_env), SOURCE_ENV
    for directory in (os.path.join(home, ".config", "ductile"), etc_dir):
        if os.path.isdir(directory):
            return config_file_for(directory), SOURCE_DISCOVERED
    raise ConfigNotFound(
        f"no config found (checked: ${ENV_VAR}, ~/.config/ductile, {etc_dir})\n"
        "Hint: create ~/.config/ductile/config.yaml or use --config"
    )


def config_file_for(path: str) -> str:
    """A file path as given (any name), or `<dir>/config.yaml` for a directory; absolute."""
    absolute = os.path.abspath(path)
    if not os.path.exists(absolute):
        raise ConfigNotFound(
            f"config file not found: {absolute}\nHint: Check the path or run with --config flag",
            path=absolute,
        )
    if os.path.isdir(absolute):
        candidate = os.path.join(absolute, ROOT_FILE)
        if not os.path.isfile(candidate):
            raise ConfigNotFound(
                f"directory provided but config.yaml not found: {candidate}", path=candidate
            )
        return candidate
    return absolute

