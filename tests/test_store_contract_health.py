"""The database's health (Backend.health, behind the selfcheck's `database` check) on both
backends: a fresh database is healthy at this release's schema version; a table that lost a
column is named."""

from __future__ import annotations

from ductile.config.selfcheck import health_check
from support.backends import Opened, location, opened  # noqa: F401 - fixtures


def current_version(name: str) -> int:
    if name == "sqlite":
        from ductile.store.migrations import SCHEMA_VERSION

        return SCHEMA_VERSION
    from ductile.store.pg.migrations import PG_SCHEMA_VERSION

    return PG_SCHEMA_VERSION


async def test_a_fresh_database_is_healthy(opened: Opened) -> None:
    health = await opened.read(lambda c: opened.backend.health.check(c, "the-db"))
    version = current_version(opened.name)
    assert (health.ok, health.schema_version) == (True, version)
    assert health.detail.endswith(f"schema version {version} (current {version})")
    assert health_check(health, "the-db") == {
        "name": "database", "ok": True, "severity": "info", "detail": health.detail,
        "path": "the-db", "schema_version": version}


async def test_a_missing_column_is_named(opened: Opened) -> None:
    await opened.write(lambda c: c.execute("ALTER TABLE relay_seen DROP COLUMN event_id"))
    health = await opened.read(lambda c: opened.backend.health.check(c, "the-db"))
    assert health.ok is False
    assert "table relay_seen lacks column event_id" in health.detail
    check = health_check(health, "the-db")
    assert (check["ok"], check["severity"], check["path"]) == (False, "error", "the-db")
    assert "schema_version" not in check
