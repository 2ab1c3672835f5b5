"""`ductile config validate FILE`: check one YAML file on its own, reporting every problem.

`config check` loads the whole directory the way boot does and stops at the first error of
each kind; that is the right question before a deploy, but not while editing one fragment
(`plugins.yaml`) that cannot load alone. This check reads just the file, walks its YAML node
tree against the generated JSON Schema (`ductile.config.json_schema`), and reports every
problem with its line and dotted key, so a file can be fixed in one pass.

It follows the loader where the loader is more lenient than a strict reading of the schema:

- a key set to null (`key:` with nothing) counts as absent, as the loader treats it;
- a value whose text holds `${VAR}` is not type-checked: its type is only known after
  interpolation (`max_workers: ${WORKERS}` is fine);
- keys the schema does not list are warnings (`unknown key X (ignored)`), keys marked
  `deprecated` are warnings too; neither makes the file invalid, as neither fails a load.

What it cannot see, because it needs the other files, the plugins or the vault: merge rules,
cross-field rules (retention vs dedupe, parallelism vs max_workers), plugin discovery and
`secret_ref` resolution. `ductile config check` judges those.

The validator implements exactly the keywords the generator emits (`json_schema.KEYWORDS`);
it is not a general JSON Schema implementation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from ductile.config.describe import describe
from ductile.config.yamledit import mask_variables
from ductile.errors import ConfigError
from ductile.yamldoc import GoYamlLoader

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding: where (file, 1-based line, dotted key) and what."""

    file: str
    line: int | None
    key: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        label = "ERROR" if self.severity == ERROR else "WARN"
        return f"{label} {where}: {self.key + ': ' if self.key else ''}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "key": self.key,
                "message": self.message, "severity": self.severity}


def check_file(path: str, schema: dict[str, Any], *, display: str | None = None
               ) -> list[Problem]:
    """Every problem of the YAML file at `path` against `schema`, in document order."""
    name = display or path
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", path=path) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [Problem(name, None, "", f"not valid UTF-8 text (byte offset {exc.start})")]
    return check_text(text, schema, display=name)


def check_text(text: str, schema: dict[str, Any], *, display: str) -> list[Problem]:
    """`check_file` for text already read."""
    loader = GoYamlLoader(mask_variables(text))
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return [Problem(display, None if mark is None else mark.line + 1, "",
                        f"YAML syntax error: {exc.problem or exc.context}")]
    except yaml.YAMLError as exc:
        return [Problem(display, None, "", f"YAML error: {exc}")]
    try:
        if root is None:
            return []
        walker = _Walker(loader, text, schema, display)
        walker.walk(root, schema, "")
        return walker.problems
    finally:
        loader.dispose()


class _Walker:
    """Walks nodes and schema together, collecting problems instead of stopping at one."""

    def __init__(self, loader: GoYamlLoader, text: str, schema: dict[str, Any],
                 display: str) -> None:
        self.loader = loader
        self.text = text
        self.root = schema
        self.display = display
        self.problems: list[Problem] = []

    def report(self, node: yaml.Node, key: str, message: str, severity: str = ERROR) -> None:
        self.problems.append(Problem(self.display, node.start_mark.line + 1, key, message,
                                     severity))

    def walk(self, node: yaml.Node, schema: dict[str, Any], key: str) -> None:
        schema = self.resolve(schema)
        if self.interpolated(node) or self.is_null(node):
            return
        if schema.get("deprecated"):
            self.report(node, key, schema.get("description", "deprecated"), WARNING)
        if "anyOf" in schema:
            self.any_of(node, schema, key)
        if "type" in schema and not self.type_ok(node, schema["type"]):
            self.report(node, key, f"expected {_expected(schema)}, got {self.shown(node)}")
            return
        if "enum" in schema and not self.enum_ok(node, schema["enum"]):
            choices = ", ".join(str(item) for item in schema["enum"])
            self.report(node, key, f"expected one of {choices}, got {self.shown(node)}")
        if isinstance(node, yaml.ScalarNode):
            self.scalar(node, schema, key)
        elif isinstance(node, yaml.MappingNode):
            self.mapping(node, schema, key)
        elif isinstance(node, yaml.SequenceNode) and "items" in schema:
            for index, item in enumerate(node.value):
                self.walk(item, schema["items"], f"{key}[{index}]")
        if "oneOf" in schema:
            self.one_of(node, schema, key)

    # ------------------------------------------------------------------ combinators

    def any_of(self, node: yaml.Node, schema: dict[str, Any], key: str) -> None:
        """Report against the branch whose type fits the value (or say none fits)."""
        branches = [self.resolve(branch) for branch in schema["anyOf"]]
        fitting = [b for b in branches if "type" not in b or self.type_ok(node, b["type"])]
        trials = []
        for branch in fitting:
            trial = _Walker(self.loader, self.text, self.root, self.display)
            trial.walk(node, branch, key)
            if not any(p.severity == ERROR for p in trial.problems):
                self.problems.extend(trial.problems)
                return
            trials.append(trial)
        if len(fitting) == 1 and "type" in fitting[0]:  # the value's shape is right: say why
            self.problems.extend(trials[0].problems)
            return
        options = (None if schema.get("deprecated") else schema.get("description")) or \
            " or ".join(_expected(b) for b in branches)
        self.report(node, key, f"expected {options}, got {self.shown(node)}")

    def one_of(self, node: yaml.Node, schema: dict[str, Any], key: str) -> None:
        """Only `oneOf: [{required: [a]}, {required: [b]}, ...]` is generated: exactly one of
        those keys must be set."""
        present = self.present_keys(node) if isinstance(node, yaml.MappingNode) else set()
        names = [branch["required"][0] for branch in schema["oneOf"]]
        hits = [name for name in names if name in present]
        if len(hits) != 1:
            verb = "requires one of" if not hits else "must set exactly one of"
            self.report(node, key, f"{verb} {', '.join(names)}")

    # ------------------------------------------------------------------ values

    def scalar(self, node: yaml.ScalarNode, schema: dict[str, Any], key: str) -> None:
        value = self.value(node)
        if not isinstance(value, str):
            if "minimum" in schema and isinstance(value, (int, float)) \
                    and not isinstance(value, bool) and value < schema["minimum"]:
                self.report(node, key, f"must be at least {schema['minimum']}, got {value}")
            return
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            hint = schema.get("description", f"a value matching {schema['pattern']}")
            self.report(node, key, f"expected {hint}, got {describe(value)}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.report(node, key, "must not be empty")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            message = schema.get("description", f"at most {schema['maxLength']} characters")
            self.report(node, key, f"must be empty: {message}" if schema["maxLength"] == 0
                        else message)

    def mapping(self, node: yaml.MappingNode, schema: dict[str, Any], key: str) -> None:
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        seen = self.present_keys(node)
        for key_node, value_node in node.value:
            name = self.value(key_node)
            dotted = f"{key}.{name}" if key else str(name)
            if name in properties:
                self.walk(value_node, properties[name], dotted)
            elif extra is False:
                self.report(key_node, dotted, "unknown key (ignored)", WARNING)
            elif isinstance(extra, dict):
                self.walk(value_node, extra, dotted)
        for name in schema.get("required", ()):
            if name not in seen:
                self.report(node, f"{key}.{name}" if key else name, f"{name} is required")

    def present_keys(self, node: yaml.MappingNode) -> set[Any]:
        return {self.value(k) for k, v in node.value if not self.is_null(v)}

    # ------------------------------------------------------------------ helpers

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].removeprefix("#/$defs/")
            schema = {**self.root["$defs"][name], **{k: v for k, v in schema.items()
                                                      if k != "$ref"}}
        return schema

    def value(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError):
                return node.value
        return None

    def interpolated(self, node: yaml.Node) -> bool:
        return (isinstance(node, yaml.ScalarNode)
                and "${" in self.text[node.start_mark.index:node.end_mark.index])

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def type_ok(self, node: yaml.Node, expected: str | list[str]) -> bool:
        wanted = [expected] if isinstance(expected, str) else expected
        return _json_type(node, self.value(node)) in wanted or (
            "number" in wanted and _json_type(node, self.value(node)) == "integer")

    def enum_ok(self, node: yaml.Node, choices: list[Any]) -> bool:
        value = self.value(node)
        return any(type(value) is type(choice) and value == choice for choice in choices)

    def shown(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a map"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        return describe(self.value(node))


def _json_type(node: yaml.Node, value: Any) -> str:
    if isinstance(node, yaml.MappingNode):
        return "object"
    if isinstance(node, yaml.SequenceNode):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return "string"


def _expected(schema: dict[str, Any]) -> str:
    """How a schema reads in a message: `a duration ...`, `an integer`, `one of a, b`."""
    if "enum" in schema and "type" not in schema:
        return "one of " + ", ".join(str(item) for item in schema["enum"])
    kind = schema.get("type")
    if kind == "string" and "pattern" in schema and "description" in schema:
        return str(schema["description"])
    if "$ref" in schema:
        return "a map"
    return {"object": "a map", "array": "a list", "string": "a string", "integer": "an integer",
            "boolean": "true or false", "number": "a number"}.get(str(kind), "a value")
