"""The one typed reader of config documents: every file of a config directory (config.yaml,
its includes, the `webhooks:` section) is decoded through `Reader`, so a wrong type gets the
same message everywhere, naming the file and the dotted key (`plugins.yaml:
plugins.echo.retry.max_attempts: expected an integer, got "two"`). Unknown keys are warnings,
never errors (Go's strict decode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ductile.config.describe import describe as _describe
from ductile.config.durations import DurationError, parse_duration
from ductile.errors import ConfigError
from ductile.yamldoc import yaml_bool_word


class UnknownKey(str):
    """The warning for a key no section understands: `config.yaml: unknown key x (ignored)`.

    Still a plain `str` wherever warnings are logged or listed, but it remembers its file and
    dotted key, so strict decode (`service.admission.validate_config_on_boot`) can count exactly
    these, and no deprecation or `not supported yet` note, without parsing message text.
    """

    file: str
    key: str

    def __new__(cls, file: str, key: str) -> UnknownKey:
        text = super().__new__(cls, f"{file}: unknown key {key} (ignored)")
        text.file, text.key = file, key
        return text

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return (self.file, self.key)


@dataclass(frozen=True)
class ConfigFile:
    """One config file: absolute path plus the short name messages use."""

    path: str
    display: str

    def error(self, key: str, message: str) -> ConfigError:
        prefix = f"{self.display}: {key}: " if key else f"{self.display}: "
        return ConfigError(prefix + message, path=self.path, key=key or None)



@dataclass(frozen=True)
class Reader:
    """Strictly typed access to one document; unknown keys are appended to `warnings`."""

    file: ConfigFile
    warnings: list[str]

    def error(self, key: str, message: str) -> ConfigError:
        return self.file.error(key, message)

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return self.file.error(key, f"expected {expected}, got {_describe(value)}")

    def unknown_keys(self, section: dict[Any, Any], key: str, known: frozenset[str]) -> None:
        """Report the keys of `section` outside `known` (they are ignored, not errors)."""
        self.section(section, key, known)

    def optional_string(self, section: dict[str, Any], name: str, key: str) -> str | None:
        """`section[name]` as a string, None when absent or empty."""
        return self.string(section.get(name), f"{key}.{name}") or None

    def required_string(self, section: dict[str, Any], name: str, key: str) -> str:
        value = self.optional_string(section, name, key)
        if value is None or not value.strip():
            raise self.error(f"{key}.{name}", f"{name} is required")
        return value

    def section(
        self, value: Any, key: str, known: frozenset[str],
        deferred: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """A map (null counts as empty) whose keys outside `known` are reported."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "a map", value)
        for name in value:
            dotted = f"{key}.{name}" if key else str(name)
            if name in deferred:
                self.warnings.append(f"{self.file.display}: {dotted} is not supported yet "
                                     "(ignored)")
            elif name not in known:
                self.warnings.append(UnknownKey(self.file.display, dotted))
        return value

    def string(self, value: Any, key: str) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise self.fail(key, "a string", value)

    def integer(self, value: Any, key: str) -> int | None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise self.fail(key, "an integer", value)

    def boolean(self, value: Any, key: str) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        word = yaml_bool_word(value)
        if word is not None:
            return word
        raise self.fail(key, "true or false", value)

    def duration(self, value: Any, key: str) -> float | None:
        """Go units plus d and w; a bare number is refused (seconds or nanoseconds?)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, "a duration such as 30s, 5m, 1h or 7d", value)
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            raise self.file.error(key, str(exc)) from exc
        if not math.isfinite(seconds):
            raise self.file.error(key, f"duration {_describe(value)} is too large")
        return seconds

    def sequence(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return value

    def str_list(self, value: Any, key: str) -> tuple[str, ...]:
        items = self.sequence(value, key)
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{key}[{index}]", "a non-empty string", item)
        return tuple(items)

    def json_map(self, value: Any, key: str) -> dict[str, Any]:
        """A free-form map that must survive JSON encoding (plugin config, payloads)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "a map", value)
        result = self.json(value, key)
        assert isinstance(result, dict)
        return result

    def json(self, value: Any, key: str) -> Any:
        if value is None or isinstance(value, (str, bool, int)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail(key, "a finite number", value)
            return value
        if isinstance(value, list):
            return [self.json(item, f"{key}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str):
                    raise self.fail(key, "string keys", name)
            return {name: self.json(item, f"{key}.{name}") for name, item in value.items()}
        raise self.fail(key, "a string, number, boolean, null, list or map", value)
