"""Edit one value of a YAML config file as text, keeping every other byte as it was.

`ductile config set` must not reformat an operator's file: comments, blank lines, key order,
quoting and indentation are part of how they keep their config readable (and reviewable in
version control). So the file is never dumped again. Instead its node tree (which knows the
line and column of every value) locates the one value, and only those characters are replaced.
When the key is missing, its line (and the lines of any missing parent maps) is inserted at the
end of the nearest block map that exists.

What this refuses, with `ConfigEditRefused` naming the reason, rather than risk a wrong edit:

- a key inside flow style (`service: {name: x}`), a value written as a block map or list, or a
  value spread over several lines (block scalars `|`/`>`, folded plain or quoted text);
- a value with an anchor (`&name`: other keys may refer to it), a value that is an alias
  (`*name`), or a key that comes from a YAML merge (`<<: *base`);
- inserting into an empty (`key:`) or flow-style map, into a list, or below a scalar.

`${VAR}` references are kept as written: the tree is built over a copy of the text in which each
`${NAME}` is replaced by a placeholder of the same length, so positions map one to one and a
reference inside flow style (`{a: ${X}}`, which does not parse as written) still locates.

Every edit is checked before it is returned: the new text must parse to the old document with
exactly that one value changed. A mismatch is refused too, so a bug here cannot corrupt a file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ductile.config.dotpath import Segment, format_path
from ductile.config.interpolate import VAR_PATTERN
from ductile.errors import ConfigEditRefused, YamlProblem
from ductile.yamldoc import GoYamlLoader, load_yaml

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Plain (unquoted) scalars this editor writes: conservative, so the text means the same thing
# wherever it lands. Anything else is written double-quoted.
_PLAIN_BLOCK = re.compile(r"[A-Za-z0-9_./~@%$+(][A-Za-z0-9_./~@%$+()=,:{}\[\] -]*")
_PLAIN_FLOW = re.compile(r"[A-Za-z0-9_./~@%$+(][A-Za-z0-9_./~@%$+()=: -]*")
# Characters a YAML stream may not hold literally, and the line breaks YAML 1.1 knows besides
# \n and \r: inside a double-quoted value they are written as escapes.
_ESCAPED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff\"\\\\]")
_SHORT_ESCAPES = {"\0": "\\0", "\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                  "\v": "\\v", "\f": "\\f", "\r": "\\r", "\x1b": "\\e", '"': '\\"',
                  "\\": "\\\\"}


# --------------------------------------------------------------------------- public functions


def mask_variables(text: str) -> str:
    """`text` with each `${NAME}` replaced by `__NAME_` (same length, plain-scalar safe)."""
    return VAR_PATTERN.sub(lambda m: "__" + m.group(1) + "_", text)


def parse_value(text: str) -> Any:
    """A command-line VALUE read as one YAML scalar or one-line flow value (`30s`, `4`,
    `true`, `[a, b]`, `{k: v}`). Block syntax (`a: b`, `- x`) is refused: it almost always
    means a string that needed quotes."""
    try:
        value = load_yaml(text)
    except YamlProblem as exc:
        raise ConfigEditRefused(f"VALUE {text!r} is not a YAML value: {exc}") from exc
    if isinstance(value, (dict, list)) and not text.strip().startswith(("{", "[")):
        raise ConfigEditRefused(
            f"VALUE {text!r} reads as a YAML {'map' if isinstance(value, dict) else 'list'}; "
            "quote it to set a string (\"'a: b'\"), or write a flow value ({k: v} or [a, b])")
    return value


def render_value(value: Any) -> str:
    """`value` as one line of YAML that reads back as exactly `value` (plain when that is
    unambiguous, else double-quoted; lists and maps in flow style)."""
    text = _render(value, flow=False)
    try:
        back = load_yaml(f"k: {text}")
    except YamlProblem as exc:  # pragma: no cover - _render only writes valid YAML
        raise ConfigEditRefused(f"cannot write {value!r} as one YAML line: {exc}") from exc
    if not isinstance(back, dict) or not same_value(back.get("k"), value):
        raise ConfigEditRefused(f"cannot write {value!r} as one YAML line that reads back "
                                "as the same value")
    return text


def set_value(text: str, path: Sequence[Segment], value: Any) -> str:
    """`text` with the value at `path` replaced by `value` (or its line inserted when the key
    is missing); ConfigEditRefused when that cannot be done safely (see the module)."""
    if not path:
        raise ConfigEditRefused("a key path is required")
    doc = _Document.parse(text)
    rendered = render_value(value)
    found = doc.locate(path)
    if found.missing:
        new_text = doc.insert(found, path, rendered)
    else:
        new_text = doc.replace(found, path, rendered)
    _check_edit(doc, new_text, path, value)
    return new_text


def file_holds(text: str, path: Sequence[Segment]) -> bool:
    """Whether the document in `text` has a value at `path` (after YAML merges and with
    `${VAR}` left unexpanded); False for text that does not parse."""
    try:
        doc = load_yaml(mask_variables(text))
    except YamlProblem:
        return False
    return _holds(doc, path)


def same_value(left: Any, right: Any) -> bool:
    """Equality that tells `1` from `1.0` from `true` and treats NaN as equal to NaN."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same_value, left, right))
    if isinstance(left, dict):
        return (left.keys() == right.keys()
                and all(same_value(left[key], right[key]) for key in left))
    return bool(left == right)


# --------------------------------------------------------------------------- rendering


def _render(value: Any, *, flow: bool) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _render_float(value)
    if isinstance(value, str):
        return _render_string(value, flow=flow)
    if isinstance(value, list):
        return "[" + ", ".join(_render(item, flow=True) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_render_key(key)}: {_render(item, flow=True)}"
                               for key, item in value.items()) + "}"
    raise ConfigEditRefused(f"cannot write a {type(value).__name__} into a config file")


def _render_float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa if not exponent else f"{mantissa}e{'' if exponent[0] in '+-' else '+'}" \
                                         f"{exponent}"


def _render_string(value: str, *, flow: bool) -> str:
    pattern = _PLAIN_FLOW if flow else _PLAIN_BLOCK
    if (pattern.fullmatch(value) and not value.endswith((" ", ":")) and ": " not in value
            and " #" not in value and _reads_as_string(value, flow=flow)):
        return value
    return _double_quoted(value)


def _render_key(key: Any) -> str:
    if not isinstance(key, str):
        return _render(key, flow=True)
    return _render_string(key, flow=True)


def _reads_as_string(text: str, *, flow: bool) -> bool:
    """Whether `text` written plain reads back as that string, both by ductile's loader and by
    a YAML 1.1 reader (editors, other tools), which would take `yes` or `12:30` for a bool or
    a number: such strings are quoted so the file means the same thing to every reader."""
    probe = f"[{text}]" if flow else f"k: {text}"
    try:
        ours = load_yaml(probe)
        theirs = yaml.safe_load(probe)
    except (YamlProblem, yaml.YAMLError):
        return False
    return all(_probed(back, flow) == text and isinstance(_probed(back, flow), str)
               for back in (ours, theirs))


def _probed(back: Any, flow: bool) -> Any:
    if flow:
        return back[0] if isinstance(back, list) and len(back) == 1 else None
    return back.get("k") if isinstance(back, dict) else None


def _double_quoted(value: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in _SHORT_ESCAPES:
            return _SHORT_ESCAPES[char]
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise ConfigEditRefused("cannot write a string holding a lone surrogate "
                                    f"(U+{ord(char):04X}) to a UTF-8 file")
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return '"' + _ESCAPED.sub(escape, value) + '"'


# --------------------------------------------------------------------------- the node tree


@dataclass(frozen=True)
class _Found:
    """Where a path ends in the tree: the node that holds it (`node`, with `key` when its
    parent is a map), or, when `missing`, the deepest existing `parent` and its depth."""

    node: yaml.Node | None
    parent: yaml.Node | None
    key: yaml.Node | None
    depth: int
    missing: bool


@dataclass(frozen=True)
class _Document:
    text: str
    root: yaml.Node | None

    @classmethod
    def parse(cls, text: str) -> _Document:
        loader = GoYamlLoader(mask_variables(text))
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise ConfigEditRefused(f"the file is not valid YAML: {exc}") from exc
        finally:
            loader.dispose()
        return cls(text, root)

    def locate(self, path: Sequence[Segment]) -> _Found:
        node, parent, key = self.root, None, None
        for depth, segment in enumerate(path):
            if node is None or _is_empty(node):
                return _Found(node, parent, key, depth, missing=True)
            child = self._child(node, key, path, depth, segment)
            if child is None:
                return _Found(node, parent, key, depth, missing=True)
            parent = node
            key, node = child
        return _Found(node, parent, key, len(path), missing=False)

    def _child(self, node: yaml.Node, key: yaml.Node | None, path: Sequence[Segment],
               depth: int, segment: Segment) -> tuple[yaml.Node | None, yaml.Node] | None:
        where = format_path(path[:depth]) or "the top level"
        if isinstance(segment, int):
            if not isinstance(node, yaml.SequenceNode):
                raise _refuse(path, f"{where} is not a list")
            if segment >= len(node.value):
                raise _refuse(path, f"{where} has no entry [{segment}] (a list entry cannot "
                                    "be added by config set)")
            item = node.value[segment]
            if item.start_mark.index < node.start_mark.index:
                raise _refuse(path, f"{format_path(path[:depth + 1])} is an alias (*name)")
            return None, item
        if not isinstance(node, yaml.MappingNode):
            raise _refuse(path, f"{where} is not a map")
        match = None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG
                    and key_node.value == segment):
                match = (key_node, value_node)
        if match is None:
            if any(key_node.tag == _MERGE_TAG for key_node, _ in node.value):
                raise _refuse(path, f"{where} takes keys from a YAML merge (<<); "
                                    "edit this file by hand")
            return None
        if match[1].start_mark.index < match[0].end_mark.index:
            raise _refuse(path, f"{format_path(path[:depth + 1])} is an alias (*name) of "
                                "another value; edit the anchored value by hand")
        return match

    # ------------------------------------------------------------------ replacing a value

    def replace(self, found: _Found, path: Sequence[Segment], rendered: str) -> str:
        node, parent = found.node, found.parent
        assert node is not None
        where = format_path(path)
        if parent is not None and getattr(parent, "flow_style", False):
            raise _refuse(path, f"{where} is inside a flow-style "
                                f"{'map' if isinstance(parent, yaml.MappingNode) else 'list'} "
                                "({...} or [...]); edit this file by hand")
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style:
            kind = "map" if isinstance(node, yaml.MappingNode) else "list"
            raise _refuse(path, f"{where} holds a block {kind} over several lines; set the keys "
                                "inside it one by one, or edit this file by hand")
        if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
            raise _refuse(path, f"{where} is a multi-line block scalar (| or >); "
                                "edit this file by hand")
        start, end = node.start_mark.index, node.end_mark.index
        if start == end and found.key is not None:
            return self._fill_empty(found.key, path, rendered)
        if node.start_mark.line != node.end_mark.line:
            raise _refuse(path, f"{where} spans several lines; edit this file by hand")
        if re.match(r"(?:!\S*\s+)?&", self.text[start:end]):
            raise _refuse(path, f"{where} has an anchor (&name) that other keys may refer to; "
                                "edit this file by hand")
        return self.text[:start] + rendered + self.text[end:]

    def _fill_empty(self, key: yaml.Node, path: Sequence[Segment], rendered: str) -> str:
        """`key:` with no value: write ` value` right after the colon on the key's line."""
        match = re.compile(r"[ \t]*:").match(self.text, key.end_mark.index)
        if match is None:
            raise _refuse(path, f"{format_path(path)}: cannot find the ':' after the key")
        at = match.end()
        return self.text[:at] + " " + rendered + self.text[at:]

    # ------------------------------------------------------------------ inserting a key

    def insert(self, found: _Found, path: Sequence[Segment], rendered: str) -> str:
        rest = path[found.depth:]
        where = format_path(path[:found.depth]) or "the top level"
        if any(isinstance(segment, int) for segment in rest):
            raise _refuse(path, f"{format_path(path)} does not exist and a list entry cannot "
                                "be added by config set")
        node = found.node
        if node is None:
            base, step, at = 0, 2, len(self.text)
        elif isinstance(node, yaml.MappingNode) and not node.flow_style:
            base = node.start_mark.column  # where its keys start (`? key` starts at the `?`)
            step = max(2, base - _column_of_owner(found))
            at = self._line_after(node)
        elif isinstance(node, yaml.MappingNode) or _is_empty(node):
            shape = "flow-style map ({...})" if isinstance(node, yaml.MappingNode) else "empty"
            raise _refuse(path, f"{where} is {shape}; add {format_path(path)} by hand")
        else:
            raise _refuse(path, f"{where} is not a map, so it has no key {rest[0]!r}")
        newline = "\r\n" if "\r\n" in self.text else "\n"
        lines = [" " * (base + i * step) + _render_key(segment) + ":"
                 for i, segment in enumerate(rest)]
        lines[-1] += " " + rendered
        block = newline.join(lines) + newline
        head = self.text[:at]
        if head and not head.endswith("\n"):
            head += newline
        return head + block + self.text[at:]

    def _line_after(self, node: yaml.Node) -> int:
        """The offset just after the last line holding content of `node`."""
        end = _last_content_end(node)
        if end > 0 and self.text[end - 1] == "\n":
            return end
        newline = self.text.find("\n", end)
        return len(self.text) if newline < 0 else newline + 1


def _last_content_end(node: yaml.Node) -> int:
    """The end offset of the last value inside `node` (an empty `key:` ends at its key)."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        key, value = node.value[-1]
        if isinstance(value, yaml.ScalarNode) and value.start_mark.index == value.end_mark.index:
            return key.end_mark.index
        if value.start_mark.index < key.end_mark.index:  # an alias: its text is the key's line
            return key.end_mark.index
        return _last_content_end(value)
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _last_content_end(node.value[-1])
    return node.end_mark.index


def _column_of_owner(found: _Found) -> int:
    """The column of the key that owns the map we insert into (0 at the top level)."""
    return found.key.start_mark.column if found.key is not None else 0


def _is_empty(node: yaml.Node) -> bool:
    return (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
            and node.value in ("", "~", "null", "Null", "NULL"))


def _holds(doc: Any, path: Sequence[Segment]) -> bool:
    value = doc
    for segment in path:
        if isinstance(segment, int):
            if not isinstance(value, list) or segment >= len(value):
                return False
        elif not isinstance(value, Mapping) or segment not in value:
            return False
        value = value[segment]
    return True


def _check_edit(doc: _Document, new_text: str, path: Sequence[Segment], value: Any) -> None:
    """Refuse unless `new_text` reads as the old document with only `path` set to `value`."""
    try:
        before = load_yaml(mask_variables(doc.text))
        after = load_yaml(mask_variables(new_text))
    except YamlProblem as exc:
        raise _refuse(path, f"the edit would not parse ({exc}); edit this file by hand") from exc
    expected = _with_value(before, path, _masked(value))
    if not same_value(after, expected):
        raise _refuse(path, "the edit would change more than that one value "
                            "(the file's layout is not one this editor handles); "
                            "edit this file by hand")


def _with_value(doc: Any, path: Sequence[Segment], value: Any) -> Any:
    """A copy of `doc` with `path` set, creating maps for missing keys."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(doc)
        items[head] = _with_value(items[head], rest, value)
        return items
    result = dict(doc) if isinstance(doc, dict) else {}
    result[head] = _with_value(result.get(head), rest, value)
    return result


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_variables(value)
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, dict):
        return {_masked(key): _masked(item) for key, item in value.items()}
    return value


def _refuse(path: Sequence[Segment], reason: str) -> ConfigEditRefused:
    return ConfigEditRefused(reason, key=format_path(path))

