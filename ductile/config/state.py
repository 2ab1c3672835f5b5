"""The `state:` section: where the store lives, SQLite (the default) or PostgreSQL.

SQLite needs only `path`. PostgreSQL (several gateways sharing one store) needs a `dsn` naming
the server, the database and the role, and, unless the server authenticates the role without
one (peer, certificate), the vault secret holding its password in `secret_ref`: a password is
never written in YAML, and a `dsn` that carries one is refused naming the key. `path` keeps
its meaning on PostgreSQL as the gateway's local data location: the pid lock and the
management socket live beside it.

The node settings say who this gateway is among its peers (`node_id`, by default the host's
name) and how quickly a silent peer is declared dead: `dead_after` must leave room for a few
missed heartbeats, so it must be at least three `heartbeat_interval`s.

Decoding imports nothing from the PostgreSQL driver: a DSN is checked by its own syntax here,
and the driver reads it only when the store is opened.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

BACKENDS = ("sqlite", "postgresql")
STATE_KEYS = frozenset({
    "path", "backend", "dsn", "secret_ref", "pool_size", "connect_timeout",
    "statement_timeout", "lock_timeout", "node_id", "heartbeat_interval", "dead_after",
})
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_CONNINFO_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


#: The StateConfig fields, each a restart-only `state.<name>` key (the store is opened once).
STATE_FIELDS = ("backend", "dsn", "secret_ref", "pool_size", "connect_timeout",
                "statement_timeout", "lock_timeout", "node_id", "heartbeat_interval",
                "dead_after")


@dataclass(frozen=True)
class StateConfig:
    """The decoded `state:` section (durations in seconds)."""

    backend: str = "sqlite"
    dsn: str = ""
    secret_ref: str = ""
    pool_size: int = 4
    connect_timeout: float = 5.0
    statement_timeout: float = 5.0
    lock_timeout: float = 2.0
    node_id: str = ""  # empty: the host's name, decided at boot
    heartbeat_interval: float = 2.0
    dead_after: float = 15.0

    @property
    def shared(self) -> bool:
        """True when the store is shared with other gateways (PostgreSQL)."""
        return self.backend == "postgresql"


class Reader(Protocol):
    """The part of config/load.py's reader this module uses."""

    def string(self, value: Any, key: str) -> str | None: ...

    def integer(self, value: Any, key: str) -> int | None: ...

    def duration(self, value: Any, key: str) -> float | None: ...

    def fail(self, key: str, expected: str, value: Any) -> Exception: ...


def decode_state(r: Reader, state: dict[str, Any]) -> StateConfig:
    """Decode every key of `state:` except `path` (the loader resolves paths)."""
    backend = r.string(state.get("backend"), "state.backend") or "sqlite"
    if backend not in BACKENDS:
        raise r.fail("state.backend", "one of " + ", ".join(BACKENDS), backend)
    dsn = r.string(state.get("dsn"), "state.dsn") or ""
    secret_ref = r.string(state.get("secret_ref"), "state.secret_ref") or ""
    defaults = StateConfig()
    pool_size = r.integer(state.get("pool_size"), "state.pool_size")
    if pool_size is not None and not 1 <= pool_size <= 100:
        raise r.fail("state.pool_size", "an integer from 1 to 100", pool_size)
    durations = {}
    for name in ("connect_timeout", "statement_timeout", "lock_timeout",
                 "heartbeat_interval", "dead_after"):
        value = r.duration(state.get(name), f"state.{name}")
        if value is not None and value <= 0:
            raise r.fail(f"state.{name}", "a duration above zero", state.get(name))
        durations[name] = value if value is not None else getattr(defaults, name)
    node_id = r.string(state.get("node_id"), "state.node_id") or ""
    if node_id and not _NODE_ID.match(node_id):
        raise r.fail("state.node_id", "1 to 63 letters, digits, '.', '_' or '-', starting "
                     "with a letter or digit", node_id)
    if durations["dead_after"] < 3 * durations["heartbeat_interval"]:
        raise r.fail("state.dead_after", "at least three state.heartbeat_interval "
                     f"({3 * durations['heartbeat_interval']:g}s)", state.get("dead_after"))
    if backend == "postgresql":
        if not dsn:
            raise r.fail("state.dsn", "a PostgreSQL connection string such as "
                         "postgresql://ductile@db.example:5432/ductile when state.backend "
                         "is postgresql", None)
        problem = dsn_problem(dsn)
        if problem is not None:
            raise r.fail("state.dsn", problem, redact_dsn(dsn))
    else:
        for key, value in (("dsn", dsn), ("secret_ref", secret_ref)):
            if value:
                raise r.fail(f"state.{key}", "nothing unless state.backend is postgresql "
                             "(SQLite takes only state.path)", value)
    return StateConfig(
        backend=backend, dsn=dsn, secret_ref=secret_ref,
        pool_size=pool_size if pool_size is not None else defaults.pool_size,
        node_id=node_id, **durations,
    )


def dsn_problem(dsn: str) -> str | None:
    """Why `dsn` cannot be used as written, or None. Checks the two forms libpq accepts (a
    `postgresql://` URI, or `key=value` pairs) and refuses a password in either."""
    if dsn.startswith(("postgresql://", "postgres://")):
        try:
            parts = urllib.parse.urlsplit(dsn)
            query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
            _ = parts.port
        except ValueError as exc:
            return f"a valid postgresql:// URI ({exc})"
        if parts.password is not None or "password" in query:
            return ("a connection string without a password: put the password in the vault "
                    "and name that secret in state.secret_ref")
        return None
    if "://" in dsn:
        return "a postgresql:// URI or key=value pairs (another scheme was given)"
    keys = _conninfo_keys(dsn)
    if keys is None:
        return "key=value pairs separated by spaces, or a postgresql:// URI"
    if "password" in keys:
        return ("a connection string without a password: put the password in the vault and "
                "name that secret in state.secret_ref")
    return None


def _conninfo_keys(text: str) -> list[str] | None:
    """The keys of a libpq `key=value` string (values may be single-quoted), or None."""
    keys: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        match = _CONNINFO_KEY.match(text, i)
        if match is None:
            return None
        keys.append(match.group(1).lower())
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "'":
            i += 1
            while i < len(text) and text[i] != "'":
                i += 2 if text[i] == "\\" else 1
            if i >= len(text):
                return None
            i += 1
        else:
            while i < len(text) and not text[i].isspace():
                i += 2 if text[i] == "\\" else 1
    return keys or None


def redact_dsn(dsn: str) -> str:
    """`dsn` safe to show: a URI's password and any `password=` value replaced by `***`."""
    if "://" in dsn:
        try:
            parts = urllib.parse.urlsplit(dsn)
        except ValueError:
            return "(unparsable connection string)"
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(":" + parts.password + "@", ":***@", 1)
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query,
                                        parts.fragment))
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)
