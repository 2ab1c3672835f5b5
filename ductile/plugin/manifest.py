"""Parse and validate a plugin's `manifest.yaml`.

A manifest decides what the gateway will execute, so it is checked in full before a plugin is
registered: every failure is a `ManifestError` whose message starts with `invalid manifest: ` and
then uses the original gateway's wording, so operators moving from the Go ductile see the text
they know. Checks happen in two passes, mirroring the original: shape problems the YAML decoder
would hit (wrong types, a non-list `commands`, a command without `type`) first, then the semantic
rules (`manifest_spec`, `manifest_version`, names, entrypoint, commands, values, fact_outputs),
then the protocol version.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn


from ductile.yamldoc import YamlProblem, load_yaml, yaml_bool_word
from ductile.errors import ManifestError

MANIFEST_SPEC = "ductile.plugin"
MANIFEST_VERSION = 1
PROTOCOL_VERSION = 2
COMMAND_TYPES = ("read", "write")
FACT_SOURCES = ("state_updates",)
COMPATIBILITY_VIEWS = ("mirror_object",)
_VALUE_HINT = "(expected payload.<name> or payload.*)"


@dataclass(frozen=True)
class Emit:
    """One `values.emit` entry: an event type and the payload fields it carries (docs only)."""

    event: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Values:
    """A command's `values` block: which payload fields it reads and emits (documentation)."""

    consume: tuple[str, ...] = ()
    emit: tuple[Emit, ...] = ()


@dataclass(frozen=True)
class Command:
    """One declared command. `type` drives API scope: non-`read` needs `plugin:rw`."""

    name: str
    type: str
    description: str = ""
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    values: Values = field(default_factory=Values)


@dataclass(frozen=True)
class FactOutput:
    """A `fact_outputs[]` rule: on success of `command`, record `state_updates` as a fact."""

    command: str
    source: str  # the manifest's `from`; only "state_updates" exists
    fact_type: str
    compatibility_view: str = ""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    protocol: int
    entrypoint: str
    description: str = ""
    concurrency_safe: bool = True
    # The core also passes the payload as DUCTILE_PAYLOAD_<KEY> environment variables
    # (plugin/payload_env.py), for plugins that are thin wrappers around a command.
    payload_env: bool = False
    commands: tuple[Command, ...] = ()
    fact_outputs: tuple[FactOutput, ...] = ()
    # {"required": (...), "optional": (...)}; only `doctor` checks it.
    config_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # What loaded but deserves the operator's eye (discovery logs them with the path).
    warnings: tuple[str, ...] = ()

    def command(self, name: str) -> Command | None:
        """The declared command called `name`, or None."""
        for cmd in self.commands:
            if cmd.name == name:
                return cmd
        return None

    def supports(self, name: str) -> bool:
        return self.command(name) is not None


def parse_manifest(text: str | bytes, path: str) -> Manifest:
    """Parse manifest text read from `path` (used only in messages) into a validated Manifest."""
    data = _load_yaml(text, path)
    manifest = _without_repeated_commands(_decode(data, path), path)
    _validate(manifest, path)
    if manifest.protocol != PROTOCOL_VERSION:
        _fail(path, f"unsupported protocol version {manifest.protocol} (supported: 2)")
    return manifest


def expand_schema(schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Expand a compact `{field: typeName}` schema into JSON Schema for API/OpenAPI output.

    A schema that already has a `type` key is full JSON Schema and is returned unchanged.
    """
    if schema is None:
        return None
    if "type" in schema:
        return dict(schema)
    properties = {
        str(key): ({"type": value} if isinstance(value, str) else value)
        for key, value in schema.items()
    }
    return {"type": "object", "properties": properties}


def quote(value: object) -> str:
    """Render a value the way Go's `%q` does, so messages match the original gateway's."""
    text = value if isinstance(value, str) else str(value)
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


# --- loading -------------------------------------------------------------------------------------


def _fail(path: str, message: str) -> NoReturn:
    raise ManifestError(f"invalid manifest: {message}", path=path)


def _load_yaml(text: str | bytes, path: str) -> Mapping[Any, Any]:
    """Load with the loader config files use (yaml.v3 scalars, alias bombs refused); a problem
    names the file, line and column."""
    try:
        data = load_yaml(text)
    except YamlProblem as exc:
        where = f"{path}:{exc.line}:{exc.column}" if exc.line is not None else path
        raise ManifestError(f"invalid manifest: {where}: {exc.problem}", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        _fail(path, f"manifest must be a YAML mapping, got {_kind(data)}")
    return data


def _bool_word(value: Any) -> Any:
    """A typed boolean field takes the YAML 1.1 words too (`yes`, `off`), as in config files."""
    word = yaml_bool_word(value)
    return value if word is None else word


def _kind(value: object) -> str:
    """A YAML-ish name for a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "sequence"
    return type(value).__name__


def _text(value: object, what: str, path: str) -> str:
    """A scalar as text (the Go decoder accepts any scalar for a string field); None -> ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    _fail(path, f"{what} must be a string, got {_kind(value)}")


def _int(value: object, what: str, path: str) -> int:
    """An integer field; None -> 0, which the validator reports as missing."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"{what} must be an integer, got {_kind(value)} {quote(_show(value))}")
    return value


def _show(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: object, what: str, path: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        _fail(path, f"{what} must be a mapping, got {_kind(value)}")
    return value


def _sequence(value: object, what: str, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(path, f"{what} must be a sequence, got {_kind(value)}")
    return value


def _strings(value: object, what: str, path: str) -> tuple[str, ...]:
    items = _sequence(value, what, path)
    out = []
    for item in items:
        if isinstance(item, (Mapping, list)) or item is None:
            _fail(path, f"{what} must be a list of strings, got a {_kind(item)} entry")
        out.append(_text(item, what, path).strip())
    return tuple(out)


# --- decoding (shape) ----------------------------------------------------------------------------


def _decode(data: Mapping[Any, Any], path: str) -> Manifest:
    """Turn the YAML mapping into a Manifest, refusing wrong shapes the way a typed decoder would.

    Semantic rules (required fields, allowed values) are left to `_validate` so their messages
    come in the original order.
    """
    raw_commands = data.get("commands")
    if raw_commands is not None and not isinstance(raw_commands, list):
        _fail(path, "commands must be a sequence")
    commands = tuple(_decode_command(item, path) for item in raw_commands or [])
    concurrency_safe = data.get("concurrency_safe", True)
    if concurrency_safe is None:
        concurrency_safe = True
    concurrency_safe = _bool_word(concurrency_safe)
    if not isinstance(concurrency_safe, bool):
        _fail(path, f"concurrency_safe must be a boolean, got {_kind(concurrency_safe)}")
    payload_env = _bool_word(data.get("payload_env", False))
    if payload_env is None:
        payload_env = False
    if not isinstance(payload_env, bool):
        _fail(path, f"payload_env must be a boolean, got {_kind(payload_env)}")
    facts = _sequence(data.get("fact_outputs"), "fact_outputs", path)
    manifest = Manifest(
        name=_text(data.get("name"), "name", path).strip(),
        version=_text(data.get("version"), "version", path),
        protocol=_int(data.get("protocol"), "protocol", path),
        entrypoint=_text(data.get("entrypoint"), "entrypoint", path).strip(),
        description=_text(data.get("description"), "description", path),
        concurrency_safe=concurrency_safe,
        payload_env=payload_env,
        commands=commands,
        fact_outputs=tuple(_decode_fact(i, item, path) for i, item in enumerate(facts)),
        config_keys=_decode_config_keys(data.get("config_keys"), path),
    )
    # manifest_spec / manifest_version are identity checks, not Manifest fields.
    spec = _text(data.get("manifest_spec"), "manifest_spec", path).strip()
    version = _int(data.get("manifest_version"), "manifest_version", path)
    _validate_identity(spec, version, path)
    return manifest


def _decode_command(item: object, path: str) -> Command:
    if not isinstance(item, Mapping):
        _fail(path, "invalid command entry (must be object with name/type)")
    name = _text(item.get("name"), "command name", path).strip()
    if not name:
        _fail(path, "command name is required")
    raw_type = item.get("type")
    if raw_type is None:
        _fail(path, f"command {quote(name)} is missing required type")
    if not isinstance(raw_type, str):
        _fail(path, f"command {quote(name)} has invalid type {quote(_show(raw_type))}")
    return Command(
        name=name,
        type=str(raw_type).strip(),
        description=_text(item.get("description"), f"command {quote(name)} description", path),
        input_schema=_schema(item.get("input_schema"), name, "input_schema", path),
        output_schema=_schema(item.get("output_schema"), name, "output_schema", path),
        values=_decode_values(item.get("values"), name, path),
    )


def _schema(value: object, command: str, key: str, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    return dict(_mapping(value, f"command {quote(command)} {key}", path))


def _decode_values(value: object, command: str, path: str) -> Values:
    where = f"command {quote(command)} values"
    block = _mapping(value, where, path)
    consume = _strings(block.get("consume"), f"{where}.consume", path)
    emits = []
    for entry in _sequence(block.get("emit"), f"{where}.emit", path):
        emit = _mapping(entry, f"{where}.emit entry", path)
        emits.append(
            Emit(
                event=_text(emit.get("event"), f"{where}.emit event", path).strip(),
                values=_strings(emit.get("values"), f"{where}.emit values", path),
            )
        )
    return Values(consume=consume, emit=tuple(emits))


def _decode_fact(index: int, item: object, path: str) -> FactOutput:
    where = f"fact_outputs[{index}]"
    rule = _mapping(item, where, path)
    when = _mapping(rule.get("when"), f"{where}.when", path)
    return FactOutput(
        command=_text(when.get("command"), f"{where}.when.command", path).strip(),
        source=_text(rule.get("from"), f"{where}.from", path).strip(),
        fact_type=_text(rule.get("fact_type"), f"{where}.fact_type", path).strip(),
        compatibility_view=_text(
            rule.get("compatibility_view"), f"{where}.compatibility_view", path
        ).strip(),
    )


def _decode_config_keys(value: object, path: str) -> dict[str, tuple[str, ...]]:
    block = _mapping(value, "config_keys", path)
    return {
        "required": _strings(block.get("required"), "config_keys.required", path),
        "optional": _strings(block.get("optional"), "config_keys.optional", path),
    }


# --- validation (rules) --------------------------------------------------------------------------


def _validate_identity(spec: str, version: int, path: str) -> None:
    if not spec:
        _fail(path, "manifest_spec is required")
    if spec != MANIFEST_SPEC:
        _fail(path, f"unsupported manifest_spec {quote(spec)} (supported: {quote(MANIFEST_SPEC)})")
    if version == 0:
        _fail(path, "manifest_version is required")
    if version != MANIFEST_VERSION:
        _fail(path, f"unsupported manifest_version {version} (supported: 1)")


def _without_repeated_commands(manifest: Manifest, path: str) -> Manifest:
    """Drop a command listed again with the very same definition, with a warning.

    The Go original accepted such a manifest (its own sys_exec fixture lists a command twice),
    so refusing it would strand plugins written for it. Two definitions that differ are still
    refused by `_validate`, naming both positions.
    """
    kept: list[Command] = []
    warnings = list(manifest.warnings)
    for index, cmd in enumerate(manifest.commands):
        first = next((i for i, k in enumerate(manifest.commands[:index]) if k.name == cmd.name),
                     None)
        if first is None:
            kept.append(cmd)
        elif manifest.commands[first] == cmd:
            warnings.append(f"command {quote(cmd.name)} is declared twice with the same "
                            f"definition (commands[{first}] and commands[{index}]); the repeat "
                            "is ignored")
        else:
            kept.append(cmd)  # _validate refuses it, naming both
    if len(kept) == len(manifest.commands):
        return manifest
    return replace(manifest, commands=tuple(kept), warnings=tuple(warnings))


def _validate(manifest: Manifest, path: str) -> None:
    if not manifest.name:
        _fail(path, "name is required")
    if manifest.protocol == 0:
        _fail(path, "protocol version is required")
    if not manifest.entrypoint:
        _fail(path, "entrypoint is required")
    if ".." in manifest.entrypoint:
        _fail(path, f"entrypoint contains path traversal: {manifest.entrypoint}")
    if not manifest.commands:
        _fail(path, "at least one command must be declared")
    seen: dict[str, int] = {}
    for index, cmd in enumerate(manifest.commands):
        _validate_command(cmd, path)
        if cmd.name in seen:
            _fail(path, f"command {quote(cmd.name)} is declared more than once with different "
                        f"definitions (commands[{seen[cmd.name]}] and commands[{index}])")
        seen[cmd.name] = index
    for index, rule in enumerate(manifest.fact_outputs):
        _validate_fact(index, rule, seen, path)


def valid_command_name(name: str) -> bool:
    """A letter first, then letters, digits, `_` or `-` (Unicode letters and digits allowed)."""
    if not name or not name[0].isalpha():
        return False
    return all(ch.isalpha() or ch.isdecimal() or ch in "_-" for ch in name[1:])


def _valid_value_path(value: str) -> bool:
    """`payload.*` or `payload.<seg>[.<seg>...]` with segments of letters/digits/`_`/`-`."""
    if value == "payload.*":
        return True
    head, _, rest = value.partition(".")
    if head != "payload" or not rest:
        return False
    return all(
        seg and all(ch.isalpha() or ch.isdecimal() or ch in "_-" for ch in seg)
        for seg in rest.split(".")
    )


def _validate_command(cmd: Command, path: str) -> None:
    name = quote(cmd.name)
    if not valid_command_name(cmd.name):
        _fail(
            path,
            f"invalid command {name} (must start with a letter and contain only letters, "
            "digits, '_' or '-')",
        )
    if cmd.type not in COMMAND_TYPES:
        _fail(path, f"invalid command type {quote(cmd.type)} for {name} (valid: read, write)")
    for value in cmd.values.consume:
        if not _valid_value_path(value):
            _fail(
                path, f"command {name} values: invalid consume value {quote(value)} {_VALUE_HINT}"
            )
    for emit in cmd.values.emit:
        if not emit.event:
            _fail(path, f"command {name} values: emit event is required")
        for value in emit.values:
            if not _valid_value_path(value):
                _fail(
                    path,
                    f"command {name} values: invalid emit value {quote(value)} for event "
                    f"{quote(emit.event)} {_VALUE_HINT}",
                )


def _validate_fact(index: int, rule: FactOutput, commands: set[str], path: str) -> None:
    where = f"fact_outputs[{index}]"
    if not rule.command:
        _fail(path, f"{where}: when.command is required")
    if rule.command not in commands:
        _fail(path, f"{where}: when.command {quote(rule.command)} is not declared in commands")
    if not rule.source:
        _fail(path, f"{where}: from is required")
    if rule.source not in FACT_SOURCES:
        _fail(path, f"{where}: unsupported from {quote(rule.source)}")
    if not rule.fact_type:
        _fail(path, f"{where}: fact_type is required")
    if rule.compatibility_view and rule.compatibility_view not in COMPATIBILITY_VIEWS:
        _fail(path, f"{where}: unsupported compatibility_view {quote(rule.compatibility_view)}")
