"""`${VAR}` interpolation of config text.

Interpolation runs on the raw text of each file before YAML parsing, so a variable can supply any
scalar. Only the braced form is recognised (no `$VAR`, no defaults syntax) and an undefined
variable is left literally in place: validation then names it (`environment variable ${X} is not
set`) instead of the gateway silently running with an empty secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

VAR_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Replace each `${NAME}` whose NAME is in `environ`; leave the others untouched.

    Substitution is single-pass: a value that itself contains `${...}` is not expanded again, so
    a secret can never pull in another variable.
    """

    def substitute(match: re.Match[str]) -> str:
        value = environ.get(match.group(1))
        return match.group(0) if value is None else value

    return VAR_PATTERN.sub(substitute, text)


def unresolved_names(text: str) -> list[str]:
    """The variable names still written as `${NAME}` in `text`, in order of appearance."""
    return VAR_PATTERN.findall(text)


def first_unresolved(value: Any) -> str | None:
    """The first `${NAME}` left in a string, or anywhere inside nested maps and lists."""
    for text in _strings(value):
        names = unresolved_names(text)
        if names:
            return names[0]
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
