"""`with:` on a `uses` step: remap the payload the step's plugin receives.

    with:
      title: "{payload.name}"              # exactly one placeholder: the value keeps its type
      label: "run {context.batch}-{payload.n}"  # mixed text: a string
      mode: fast                           # no braces: a literal string

Public surface:

    parse_with(raw, *, roots=("payload", "context")) -> WithSpec     compile time; TemplateError
    apply_with(spec, payload, context, *, pipeline, step) -> dict    routing time; TemplateError

Rules:

* Every key is evaluated (in sorted order) against the same snapshot of the incoming payload and
  context, so one key never sees another key's result; the results add to or overwrite top-level
  payload keys. The step's plugin gets the remapped payload.
* A path that is absent is an error naming the pipeline, step, key and path (the step's job is
  recorded failed with that reason, never retried). A present JSON null renders as null (exact
  placeholder) or as empty text (mixed).
* Numbers and booleans written without quotes (`limit: 5`) are literal strings, as in the Go
  original (it decoded `with:` as string to string).
* Malformed templates are refused at boot: `unexpected } in template`, `unclosed { in template`,
  `nested { in template`, `empty template path in`, and paths outside `payload.*`/`context.*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ductile.errors import TemplateError
from ductile.router.values import ABSENT, render, resolve

WITH_ROOTS = ("payload", "context")


@dataclass(frozen=True)
class Ref:
    """A `{path}` placeholder."""

    path: str
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    """One parsed template: literal strings and Refs in order."""

    source: str
    parts: tuple[str | Ref, ...]

    @property
    def exact(self) -> Ref | None:
        """The Ref when the template is exactly one placeholder (the value keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return self.parts[0]
        return None

    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.parts if isinstance(p, Ref))


@dataclass(frozen=True)
class WithSpec:
    """A compiled `with:` mapping: (key, template) pairs sorted by key."""

    entries: tuple[tuple[str, Template], ...]


def parse_with(raw: Any, *, roots: tuple[str, ...] = WITH_ROOTS) -> WithSpec:
    """Validate a `with:` mapping; raise TemplateError naming the key."""
    if not isinstance(raw, Mapping):
        raise TemplateError("with must be a mapping of payload key to template string")
    entries = []
    for key in sorted(raw, key=str):
        if not isinstance(key, str) or not key:
            raise TemplateError(f"with key {key!r} must be a non-empty string")
        value = raw[key]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = render(value)
        elif not isinstance(value, str):
            raise TemplateError(f"with.{key} must be a template string, not "
                                f"{type(value).__name__}")
        try:
            entries.append((key, parse_template(value, roots=roots)))
        except TemplateError as exc:
            raise TemplateError(f"with.{key}: {exc}") from None
    return WithSpec(tuple(entries))


def parse_template(text: str, *, roots: tuple[str, ...] = WITH_ROOTS) -> Template:
    """Split `text` into literals and `{path}` refs, refusing malformed braces and bad paths."""
    parts: list[str | Ref] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "}":
            raise TemplateError(f"unexpected }} in template {text!r}")
        if char != "{":
            literal.append(char)
            i += 1
            continue
        close = text.find("}", i + 1)
        if close < 0:
            raise TemplateError(f"unclosed {{ in template {text!r}")
        inner = text[i + 1:close]
        if "{" in inner:
            raise TemplateError(f"nested {{ in template {text!r}")
        path = inner.strip()
        if not path:
            raise TemplateError(f"empty template path in {text!r}")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_ref(path, text, roots))
        i = close + 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def apply_with(
    spec: WithSpec,
    payload: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    pipeline: str,
    step: str,
) -> dict[str, Any]:
    """The remapped payload: a copy of `payload` with every `with:` key set from the snapshot."""
    scope = {"payload": payload, "context": context}
    result = dict(payload)
    for key, template in spec.entries:
        result[key] = _evaluate(template, scope, key, pipeline, step)
    return result


def _evaluate(template: Template, scope: Mapping[str, Any], key: str, pipeline: str,
              step: str) -> Any:
    values = []
    for part in template.parts:
        if isinstance(part, str):
            values.append(part)
            continue
        found = resolve(scope, part.segments)
        if found is ABSENT:
            raise TemplateError(
                f'pipeline "{pipeline}" step "{step}": with.{key}: resolve "{part.path}": '
                f"path not found in the step's input")
        values.append(found)
    if template.exact is not None:
        return values[0]
    return "".join(render(v) for v in values)


def _ref(path: str, text: str, roots: tuple[str, ...]) -> Ref:
    segments = tuple(path.split("."))
    offered = " or ".join(f"{r}.*" for r in roots)
    if len(segments) < 2 or segments[0] not in roots:
        raise TemplateError(f"template path {path!r} in {text!r} must start with {offered}")
    if any(seg == "" for seg in segments):
        raise TemplateError(f"template path {path!r} in {text!r} contains an empty segment")
    return Ref(path, segments)
