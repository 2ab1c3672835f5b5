"""Byte sizes such as `2MB`, `512KB`, `1MiB` or a plain integer, for limits like
`webhooks.endpoints[].max_body_size`.

The rules (Go ductile's `ParseByteSize`, plus the IEC spellings people also write):

- a YAML integer is a number of bytes (`1048576`);
- a string is a whole number, optional whitespace, and an optional unit, with whitespace
  allowed around it (`"  2 MB  "`);
- units are case-insensitive: `B`, `KB`/`K`/`KiB`, `MB`/`M`/`MiB`, `GB`/`G`/`GiB`;
- every multiple is binary (1 KB = 1024 bytes), as in Go ductile, so `1MB` and `1MiB` agree;
- refused: 0, negative numbers, fractions (`1.5MB`), other units (`TB`), booleans, and anything
  above 2^63 - 1 bytes (Go's int64), so a typo never becomes an unlimited body.

Why binary: a gateway that read `1MB` as 1,000,000 bytes would refuse 1 MiB bodies that the Go
original accepts, and a config shared between both must mean the same thing.
"""

from __future__ import annotations

import re
from typing import Any

from ductile.errors import SizeError  # noqa: F401 - raised here; importable from here too

MAX_SIZE = 2**63 - 1

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
# ASCII digits only: `\d` would also accept other scripts' digits, which int() then reads.
_SIZE = re.compile(r"[ \t]*([0-9]+)[ \t]*([A-Za-z]*)[ \t]*")
_HINT = "use a whole number of bytes or a unit such as 512KB, 2MB or 1GiB"
#: What `parse_byte_size` accepts in a string, as an anchored ECMA-262 regular expression (for
#: the config schema): units are case-insensitive, so each letter is a character class.
_UNIT_PATTERNS = ("".join(f"[{c.lower()}{c.upper()}]" for c in unit)
                  for unit in sorted(_UNITS, key=len, reverse=True) if unit)
SIZE_PATTERN = r"^[ \t]*[0-9]+[ \t]*(?:" + "|".join(_UNIT_PATTERNS) + r")?[ \t]*$"




def parse_byte_size(value: Any) -> int:
    """Bytes for `value` (an int or a size string); SizeError when it is not a valid size."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SizeError(f"invalid size {value!r}: {_HINT}")
    if isinstance(value, int):
        return _checked(value, value)
    match = _SIZE.fullmatch(value)
    if match is None:
        raise SizeError(f"invalid size {value!r}: {_HINT}")
    digits, unit = match.groups()
    multiple = _UNITS.get(unit.lower())
    if multiple is None:
        raise SizeError(f"invalid size {value!r}: unknown unit {unit!r}; {_HINT}")
    if len(digits) > 40:  # int() of a huge digit string is slow; it overflows anyway
        raise SizeError(f"invalid size {value!r}: larger than {MAX_SIZE} bytes")
    return _checked(value, int(digits) * multiple)


def format_byte_size(size: int) -> str:
    """The shortest exact spelling (`1MiB`, `1536KiB`, `100B`), for messages and config views."""
    for unit, multiple in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= multiple and size % multiple == 0:
            return f"{size // multiple}{unit}"
    return f"{size}B"


def _checked(value: Any, size: int) -> int:
    if size <= 0:
        raise SizeError(f"invalid size {value!r}: must be greater than 0; {_HINT}")
    if size > MAX_SIZE:
        raise SizeError(f"invalid size {value!r}: larger than {MAX_SIZE} bytes")
    return size
