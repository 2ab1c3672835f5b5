"""The `state:` section: SQLite by default, PostgreSQL with a DSN that never holds a
password, node settings, and every key restart-only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ductile.config.load import parse_config
from ductile.config.state import StateConfig, dsn_problem, redact_dsn
from ductile.errors import ConfigError


def config(tmp_path: Path, state: str) -> Path:
    (tmp_path / "config.yaml").write_text(
        "service:\n  name: gw\nstate:\n" + textwrap.indent(textwrap.dedent(state), "  "))
    return tmp_path


def refused(tmp_path: Path, state: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(str(config(tmp_path, state)))
    return str(info.value)


def test_sqlite_is_the_default_and_needs_only_a_path(tmp_path: Path) -> None:
    cfg = parse_config(str(config(tmp_path, "path: ./data/s.db\n")))
    assert cfg.state == StateConfig()
    assert not cfg.state.shared
    assert cfg.state_path == str(tmp_path / "data" / "s.db")


def test_postgresql_with_every_key(tmp_path: Path) -> None:
    cfg = parse_config(str(config(tmp_path, """\
        backend: postgresql
        dsn: postgresql://ductile@db.example:5432/ductile?sslmode=verify-full
        secret_ref: pg-password
        pool_size: 8
        connect_timeout: 3s
        statement_timeout: 10s
        lock_timeout: 1s
        node_id: gw-a.example
        heartbeat_interval: 1s
        dead_after: 10s
    """)))
    assert cfg.state == StateConfig(
        backend="postgresql", dsn="postgresql://ductile@db.example:5432/ductile?sslmode=verify-full",
        secret_ref="pg-password", pool_size=8, connect_timeout=3.0, statement_timeout=10.0,
        lock_timeout=1.0, node_id="gw-a.example", heartbeat_interval=1.0, dead_after=10.0)
    assert cfg.state.shared


@pytest.mark.parametrize(("state", "expected"), [
    ("backend: mysql\n", "state.backend: expected one of sqlite, postgresql"),
    ("backend: postgresql\n", "state.dsn: expected a PostgreSQL connection string"),
    ("backend: postgresql\ndsn: postgresql://u:hunter2@db/x\n",
     "state.dsn: expected a connection string without a password"),
    ("backend: postgresql\ndsn: host=db user=u password='hunter 2'\n",
     "name that secret in state.secret_ref"),
    ("backend: postgresql\ndsn: postgresql://db/x?password=hunter2\n", "without a password"),
    ("backend: postgresql\ndsn: mysql://db/x\n", "another scheme was given"),
    ("backend: postgresql\ndsn: 'host=db user'\n", "key=value pairs"),
    ("dsn: postgresql://db/x\n", "state.dsn: expected nothing unless state.backend is postgresql"),
    ("backend: postgresql\ndsn: postgresql://db/x\npool_size: 0\n",
     "state.pool_size: expected an integer from 1 to 100"),
    ("backend: postgresql\ndsn: postgresql://db/x\nlock_timeout: 0s\n",
     "state.lock_timeout: expected a duration above zero"),
    ("backend: postgresql\ndsn: postgresql://db/x\nnode_id: 'gw a'\n", "state.node_id"),
    ("heartbeat_interval: 10s\n", "state.dead_after: expected at least three"),
])
def test_bad_state_is_refused_naming_the_key(tmp_path: Path, state: str, expected: str) -> None:
    message = refused(tmp_path, state)
    assert expected in message
    assert "config.yaml" in message
    assert "hunter" not in message  # a password never reaches a message


def test_dsn_forms() -> None:
    assert dsn_problem("postgresql://ductile@127.0.0.1:5432/ductile") is None
    assert dsn_problem("postgres://ductile@[::1]/d?sslmode=require") is None
    assert dsn_problem("host=db port=5432 dbname=ductile user=ductile") is None
    assert dsn_problem("host=db application_name='a b\\'c'") is None
    assert dsn_problem("postgresql://db:notaport/x") is not None
    assert dsn_problem("host='unterminated") is not None


def test_redaction_hides_every_password_form() -> None:
    assert redact_dsn("postgresql://u:s3cret@db/x") == "postgresql://u:***@db/x"
    assert redact_dsn("postgresql://db/x?password=s3cret&a=b") == "postgresql://db/x?password=***&a=b"
    assert redact_dsn("host=db password=s3cret user=u") == "host=db password=*** user=u"
    assert redact_dsn("host=db password = 'a b' user=u") == "host=db password = *** user=u"
