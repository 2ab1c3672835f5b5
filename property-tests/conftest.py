"""Hypothesis settings for the whole property suite.

CI runs on a shared 2-core machine: a first draw can be slow while imports and caches warm up,
so timing-based health checks and per-example deadlines would fail for reasons unrelated to
the code under test. Correctness checks stay on.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# PostgreSQL: the run's one throwaway cluster (shared with tests/), a fresh database per test.
from support.postgres import pg_cluster, pg_dsn  # noqa: F401 - fixtures

settings.register_profile(
    "ductile",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ductile")
