from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gateway import Gateway, free_port, write_config
# PostgreSQL: one throwaway cluster per run, a fresh database per test (skips without it).
from support.postgres import pg_cluster, pg_dsn  # noqa: F401 - fixtures
from support.store import Clock, open_database


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A running gateway with the bundled plugins, echo enabled and the API on a free port."""
    port = free_port()
    gw = Gateway(write_config(tmp_path / "cfg", port=port), port=port)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for a whole module of tests that do not change its config."""
    port = free_port()
    gw = Gateway(write_config(tmp_path_factory.mktemp("shared") / "cfg", port=port), port=port)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def clock() -> Clock:
    """A manual store clock (see support.store.Clock); tests advance it by hand."""
    return Clock()


@pytest.fixture
async def db(tmp_path: Path):
    """A real SQLite database in tmp_path with our schema, closed after the test."""
    async for database in open_database(tmp_path):
        yield database
