"""The one YAML loader for every file an operator or plugin author writes: config files,
webhook files and plugin manifests.

Go ductile read all of them with yaml.v3, so all of them get yaml.v3's scalar rules here:

- `true`/`false` are the only implicit booleans: `yes`, `on`, `off` stay strings, so a plugin
  named `off` or a config value `no` survives. Typed boolean fields still accept the YAML 1.1
  words (`yaml_bool_word`), as yaml.v3 does when it decodes into a Go bool.
- No base-60 numbers: `at: 12:30` is the string "12:30", not 750.
- Unquoted dates stay strings instead of `datetime`, which could not travel to a plugin as JSON.

A key written twice in one mapping is refused, naming both lines, as yaml.v3 refuses it.

It also refuses documents that aliases make recursive (`&a [*a]`) or explosively large
("billion laughs"): every later walk over the document would otherwise hang or overflow.

Every failure is one `YamlProblem` carrying the line and column when YAML knows them, so each
caller wraps it in its own error naming its file (ConfigError, ManifestError).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from ductile.errors import YamlProblem

MAX_EXPANDED_NODES = 1_000_000
MERGE_TAG = "tag:yaml.org,2002:merge"
# What yaml.v3 decodes into a Go bool besides true/false (the YAML 1.1 words).
YAML11_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
YAML11_FALSE = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})


def load_yaml(text: str | bytes) -> Any:
    """The document's value (None for an empty one), or YamlProblem."""
    try:
        return yaml.load(text, Loader=GoYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise _marked_problem(exc) from None
    except yaml.reader.ReaderError as exc:  # bad encoding, control characters
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlProblem(f"cannot read YAML: {exc.reason} (character #x{character:04x} at "
                          f"position {exc.position})") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML syntax error: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp like 2001-02-30
        raise YamlProblem(f"invalid YAML value: {exc}") from None
    except RecursionError:
        raise YamlProblem("YAML nested too deeply") from None


def yaml_bool_word(value: Any) -> bool | None:
    """True/False for a YAML 1.1 boolean word (`yes`, `off`, ...) in a typed boolean field;
    None for anything else."""
    if isinstance(value, str) and (value in YAML11_TRUE or value in YAML11_FALSE):
        return value in YAML11_TRUE
    return None


class GoYamlLoader(yaml.SafeLoader):
    """SafeLoader with yaml.v3's scalar rules and the alias-expansion guard (see the module)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # A key written twice in one mapping is refused, as yaml.v3 refuses it: PyYAML would
        # keep the last value silently, so `enabled: true` ... `enabled: false` would check as
        # valid and mean something the reader of the first line does not expect. Keys brought
        # in by a `<<` merge may still be overridden, as YAML intends.
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
                    continue
                key = (key_node.tag, key_node.value)
                first = seen.setdefault(key, key_node)
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f'mapping key "{key_node.value}" already defined at line '
                        f"{first.start_mark.line + 1}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


class _AliasError(yaml.composer.ComposerError):
    """Valid YAML syntax that we refuse to expand."""


def _marked_problem(exc: yaml.MarkedYAMLError) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem:
        problem = f"{problem} ({exc.context})"
    semantic = isinstance(exc, (yaml.constructor.ConstructorError, _AliasError))
    kind = "YAML error" if semantic else "YAML syntax error"
    if mark is None:
        return YamlProblem(f"{kind}: {problem}")
    return YamlProblem(f"{kind}: {problem}", mark.line + 1, mark.column + 1)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], active: set[int]) -> int:
    """How many values `node` stands for once aliases are expanded (memoised per node)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in active:
        raise _AliasError(
            None, None, "found a recursive alias (a value that contains itself)", node.start_mark)
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, active) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes, active) + _expanded_size(v, sizes, active)
                    for k, v in node.value)
    active.discard(key)
    if size > MAX_EXPANDED_NODES:
        raise _AliasError(
            None, None, f"aliases expand this document beyond {MAX_EXPANDED_NODES} values",
            node.start_mark)
    sizes[key] = size
    return size


_REPLACED_TAGS = frozenset({"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                            "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"})
GoYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
GoYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
GoYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0o[0-7_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$""", re.X),
    list("-+0123456789"))
GoYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))
