"""manifest.yaml parsing: every message the original gives, shape errors, and the parsed model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from ductile.errors import ManifestError
from ductile.plugin.manifest import Manifest, expand_schema, parse_manifest, quote

PATH = "/plugins/demo/manifest.yaml"


def valid() -> dict[str, Any]:
    return {
        "manifest_spec": "ductile.plugin",
        "manifest_version": 1,
        "name": "demo",
        "version": "1.2.3",
        "protocol": 2,
        "entrypoint": "run",
        "commands": [
            {"name": "poll", "type": "read"},
            {"name": "handle", "type": "write"},
        ],
    }


def parse(data: Any) -> Manifest:
    return parse_manifest(yaml.safe_dump(data, sort_keys=False), PATH)


def error_of(data: Any) -> str:
    with pytest.raises(ManifestError) as info:
        parse(data)
    assert info.value.path == PATH
    return str(info.value)


Mutation = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        data[key] = value

    return apply


def _drop(key: str) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        data.pop(key)

    return apply


def _command(**fields: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        data["commands"][1] = {"name": "handle", "type": "write", **fields}
        for key, value in list(data["commands"][1].items()):
            if value is None:
                del data["commands"][1][key]

    return apply


def _facts(*rules: dict[str, Any]) -> Mutation:
    return _set("fact_outputs", list(rules))


_HINT = "(expected payload.<name> or payload.*)"
_NAME_RULE = "(must start with a letter and contain only letters, digits, '_' or '-')"
_GOOD_FACT = {"when": {"command": "poll"}, "from": "state_updates", "fact_type": "demo.snapshot"}

CASES: list[tuple[str, Mutation, str]] = [
    ("spec missing", _drop("manifest_spec"), "manifest_spec is required"),
    ("spec empty", _set("manifest_spec", ""), "manifest_spec is required"),
    (
        "spec wrong",
        _set("manifest_spec", "senechal.plugin"),
        'unsupported manifest_spec "senechal.plugin" (supported: "ductile.plugin")',
    ),
    ("version missing", _drop("manifest_version"), "manifest_version is required"),
    ("version wrong", _set("manifest_version", 2), "unsupported manifest_version 2 (supported: 1)"),
    ("name missing", _drop("name"), "name is required"),
    ("name blank", _set("name", "  "), "name is required"),
    ("protocol missing", _drop("protocol"), "protocol version is required"),
    ("entrypoint missing", _drop("entrypoint"), "entrypoint is required"),
    (
        "entrypoint traversal",
        _set("entrypoint", "../other/run"),
        "entrypoint contains path traversal: ../other/run",
    ),
    ("no commands", _set("commands", []), "at least one command must be declared"),
    ("commands absent", _drop("commands"), "at least one command must be declared"),
    (
        "bad command name",
        _command(name="1st"),
        f'invalid command "1st" {_NAME_RULE}',
    ),
    (
        "command name with space",
        _command(name="do it"),
        f'invalid command "do it" {_NAME_RULE}',
    ),
    (
        "bad command type",
        _command(type="exec"),
        'invalid command type "exec" for "handle" (valid: read, write)',
    ),
    (
        "bad consume",
        _command(values={"consume": ["body.text"]}),
        f'command "handle" values: invalid consume value "body.text" {_HINT}',
    ),
    (
        "emit without event",
        _command(values={"emit": [{"values": ["payload.x"]}]}),
        'command "handle" values: emit event is required',
    ),
    (
        "bad emit value",
        _command(values={"emit": [{"event": "demo.done", "values": ["payload."]}]}),
        f'command "handle" values: invalid emit value "payload." for event "demo.done" {_HINT}',
    ),
    (
        "fact without command",
        _facts({**_GOOD_FACT, "when": {}}),
        "fact_outputs[0]: when.command is required",
    ),
    (
        "fact command undeclared",
        _facts(_GOOD_FACT, {**_GOOD_FACT, "when": {"command": "sync"}}),
        'fact_outputs[1]: when.command "sync" is not declared in commands',
    ),
    (
        "fact without from",
        _facts({k: v for k, v in _GOOD_FACT.items() if k != "from"}),
        "fact_outputs[0]: from is required",
    ),
    (
        "fact from unsupported",
        _facts({**_GOOD_FACT, "from": "result"}),
        'fact_outputs[0]: unsupported from "result"',
    ),
    (
        "fact without type",
        _facts({k: v for k, v in _GOOD_FACT.items() if k != "fact_type"}),
        "fact_outputs[0]: fact_type is required",
    ),
    (
        "fact bad view",
        _facts({**_GOOD_FACT, "compatibility_view": "copy"}),
        'fact_outputs[0]: unsupported compatibility_view "copy"',
    ),
    ("protocol 1", _set("protocol", 1), "unsupported protocol version 1 (supported: 2)"),
    ("protocol 3", _set("protocol", 3), "unsupported protocol version 3 (supported: 2)"),
    # YAML-level (decode) errors
    ("commands not a list", _set("commands", {"poll": "read"}), "commands must be a sequence"),
    ("commands a string", _set("commands", "poll"), "commands must be a sequence"),
    (
        "command entry a string",
        _set("commands", ["poll"]),
        "invalid command entry (must be object with name/type)",
    ),
    ("command without name", _command(name=None), "command name is required"),
    ("command blank name", _command(name=" "), "command name is required"),
    ("command without type", _command(type=None), 'command "handle" is missing required type'),
    (
        "command type not a string",
        _command(type=["read"]),
        """command "handle" has invalid type "['read']\"""",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_messages(mutate: Mutation, message: str) -> None:
    data = copy.deepcopy(valid())
    mutate(data)
    assert error_of(data) == f"invalid manifest: {message}"


def test_yaml_syntax_error_names_file_line_and_column() -> None:
    text = "manifest_spec: ductile.plugin\nname: demo\ncommands: [poll\n  - x: : y\n"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, PATH)
    message = str(info.value)
    # The format config files use: file:line:column: what.
    assert message.startswith(f"invalid manifest: {PATH}:4:6: ")
    assert ": YAML syntax error: " in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a\n- b\n", "manifest must be a YAML mapping, got sequence"),
        ("just text\n", "manifest must be a YAML mapping, got string"),
        ("", "manifest_spec is required"),
        ("a: &x [*x]\n", "found a recursive alias"),
        ("name: off\nmanifest_spec: ductile.plugin\nconcurrency_safe: [1]\n",
         "concurrency_safe must be a boolean"),
        ("name: !!python/object:os.system x\n", "1:7: YAML error: could not determine a constructor"),
        ("a: \x00\n", "cannot read YAML"),
    ],
)
def test_documents_that_are_not_manifests(text: str, fragment: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, PATH)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("manifest_version", "1", 'manifest_version must be an integer, got string "1"'),
        ("protocol", True, "protocol must be an integer, got boolean"),
        ("concurrency_safe", "yes please", "concurrency_safe must be a boolean, got string"),
        ("name", ["a"], "name must be a string, got sequence"),
        ("config_keys", ["a"], "config_keys must be a mapping, got sequence"),
        ("fact_outputs", {"a": 1}, "fact_outputs must be a sequence, got mapping"),
    ],
)
def test_wrong_types_are_named(key: str, value: Any, message: str) -> None:
    data = valid()
    data[key] = value
    assert message in error_of(data)


def test_a_conflicting_duplicate_command_is_refused_naming_both() -> None:
    data = valid()
    data["commands"].append({"name": "poll", "type": "write"})
    assert error_of(data) == ('invalid manifest: command "poll" is declared more than once with '
                              "different definitions (commands[0] and commands[2])")


def test_an_identical_duplicate_command_loads_with_a_warning() -> None:
    """The Go original accepted it (its own sys_exec fixture lists a command twice)."""
    data = valid()
    data["commands"].append({"name": "poll", "type": "read"})
    manifest = parse_manifest(yaml.safe_dump(data, sort_keys=False), PATH)
    assert [c.name for c in manifest.commands] == ["poll", "handle"]
    assert manifest.warnings == ('command "poll" is declared twice with the same definition '
                                 "(commands[0] and commands[2]); the repeat is ignored",)


def test_parsed_model() -> None:
    data = valid()
    data.update(
        description="demo plugin",
        concurrency_safe=False,
        config_keys={"required": ["token"], "optional": ["mode"]},
        fact_outputs=[{**_GOOD_FACT, "compatibility_view": "mirror_object"}],
        unknown_key="ignored",
    )
    data["commands"][1].update(
        description="act",
        input_schema={"text": "string"},
        output_schema={"type": "object"},
        values={
            "consume": ["payload.text", "payload.*", "payload.a.b-c_d"],
            "emit": [{"event": "demo.done", "values": ["payload.id"]}],
        },
    )
    m = parse(data)
    assert (m.name, m.version, m.protocol, m.entrypoint) == ("demo", "1.2.3", 2, "run")
    assert m.description == "demo plugin"
    assert m.concurrency_safe is False
    assert m.config_keys == {"required": ("token",), "optional": ("mode",)}
    assert [c.name for c in m.commands] == ["poll", "handle"]
    handle = m.command("handle")
    assert handle is not None and handle.type == "write" and handle.description == "act"
    assert handle.input_schema == {"text": "string"}
    assert handle.values.consume == ("payload.text", "payload.*", "payload.a.b-c_d")
    assert handle.values.emit[0].event == "demo.done"
    assert m.supports("poll") and not m.supports("health") and m.command("nope") is None
    fact = m.fact_outputs[0]
    assert (fact.command, fact.source, fact.fact_type, fact.compatibility_view) == (
        "poll", "state_updates", "demo.snapshot", "mirror_object",
    )


def test_defaults_and_bytes_input() -> None:
    m = parse_manifest(yaml.safe_dump(valid()).encode(), PATH)
    assert m.concurrency_safe is True
    assert m.fact_outputs == () and m.config_keys == {"required": (), "optional": ()}
    assert m.command("poll") is not None and m.command("poll").values.consume == ()  # type: ignore[union-attr]


def test_scalar_version_and_unicode_command_names() -> None:
    data = valid()
    data["version"] = 1.5
    data["commands"][0]["name"] = "événement_2"
    m = parse(data)
    assert m.version == "1.5"
    assert m.supports("événement_2")


def test_bundled_echo_manifest_parses() -> None:
    from support.plugins import bundled_root

    path = bundled_root() / "echo" / "manifest.yaml"
    m = parse_manifest(path.read_bytes(), str(path))
    assert m.name == "echo" and m.entrypoint == "run" and m.concurrency_safe
    assert {(c.name, c.type) for c in m.commands} == {
        ("poll", "read"), ("handle", "write"), ("health", "read"),
    }


def test_expand_schema() -> None:
    assert expand_schema(None) is None
    assert expand_schema({"type": "object"}) == {"type": "object"}
    assert expand_schema({"text": "string", "n": {"type": "integer"}}) == {
        "type": "object",
        "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
    }


def test_quote_matches_go_percent_q() -> None:
    assert quote("a\"b\\c\n\t\x01é") == '"a\\"b\\\\c\\n\\t\\x01é"'


def test_manifests_load_with_the_config_files_yaml_rules() -> None:
    """One loader for every YAML file: yaml.v3 booleans (`off` stays a string, `yes` counts in
    a typed boolean field), dates stay strings, and alias bombs are refused."""
    text = yaml.safe_dump({**valid(), "version": "VERSION"}, sort_keys=False)
    parsed = parse_manifest(text.replace("VERSION", "2001-02-30") + "concurrency_safe: yes\n",
                            PATH)
    assert parsed.concurrency_safe is True
    assert parsed.version == "2001-02-30"
    assert parse_manifest(text + "concurrency_safe: off\n", PATH).concurrency_safe is False
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(7))
    with pytest.raises(ManifestError) as info:
        parse_manifest(laughs, PATH)
    assert "aliases expand this document beyond" in str(info.value)
