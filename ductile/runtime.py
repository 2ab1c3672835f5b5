"""The runtime generation: one admitted config and everything built from it.

Boot (`ductile/boot/runtime.py`) builds a `Runtime` through its gates; the dispatcher, the
scheduler and the planes receive the current one through a callable and read it, never boot
itself. It lives here, below them all, so that nothing under `ductile.boot` has to be imported
to run a job or answer a request.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import trio

from ductile.events.outstanding import Backpressure
from ductile.privsep.posture import Privsep
from ductile.relay.service import RelayService

if TYPE_CHECKING:
    from ssl import SSLContext

    from ductile.config.schema import ApiToken, Config
    from ductile.plugin.discovery import Plugin, Shadowed
    from ductile.privsep.attest import Attestor
    from ductile.router.dsl import PipelineSet
    from ductile.store.backend import Backend
    from ductile.store.interface import JobQueue
    from ductile.store.state import StateStore
    from ductile.vault.owner import VaultOwner


@dataclass
class Runtime:
    """One admitted generation: a config and everything built from it."""

    generation: int
    config: Config
    plugins: dict[str, Plugin]
    snapshot_id: str
    posture: str
    queue: JobQueue  # SQLite's store.queue.Queue; see store/interface.py
    state: StateStore
    loaded_at: datetime
    started_monotonic: float
    warnings: tuple[str, ...] = ()
    sync_slots: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(10))
    # The vault this generation decrypted (once, at build), or None when there is none (or no
    # key to open it). `api_tokens` are the config's tokens with their secret_ref resolved.
    vault_owner: VaultOwner | None = None
    api_tokens: tuple[ApiToken, ...] = ()
    # Webhook endpoint path -> its HMAC key, resolved from the vault at build.
    webhook_secrets: dict[str, bytes] = field(default_factory=dict)
    # The compiled `pipelines:` of this generation (an empty set when there are none).
    pipelines: PipelineSet = field(default_factory=lambda: empty_pipelines())
    # Plugin names two roots provide (the first found is used), for GET /system/doctor.
    shadowed_plugins: tuple[Shadowed, ...] = ()
    # The privilege-separation posture and each plugin's account (privsep/posture.py), and
    # the entrypoint fingerprints re-verified before secrets are delivered (None: no vault).
    privsep: Privsep = field(default_factory=Privsep)
    attestor: Attestor | None = None
    # The relay instances and peers with their keys resolved from the vault (relay/service.py).
    relay: RelayService = field(default_factory=RelayService)
    # Each TLS listener's server context ("api", "webhooks"), loaded and judged at build: the
    # supervisor serves these (a reload's renew the certificate for new connections).
    tls: dict[str, SSLContext] = field(default_factory=dict)
    # The process's ingress bound on outstanding jobs (events/outstanding.py): its count
    # outlives reloads, its limits are this generation's config.
    backpressure: Backpressure = field(default_factory=Backpressure)
    # The store backend's statement tables (store/backend.py): the scheduler and the planes
    # run every store function through it on the connections `read`/`write` hand them, so
    # they never name a backend's SQL. Boot sets it from the process's database.
    backend: Backend = field(default_factory=lambda: sqlite_backend())

    def admit(self, plane: str, *plugins: str) -> None:
        """Before an ingress creates new root jobs of `plugins`: raise Overloaded (429/503
        with Retry-After) when a `max_outstanding_jobs` bound is reached. Never for work
        derived from accepted work (successors, hooks, retries), which must not be lost."""
        self.backpressure.admit(self.config, plane, plugins)

    def lane_limit(self, plugin: str) -> int:
        """Per-plugin concurrency: explicit `parallelism` wins; otherwise concurrency-safe
        plugins may use every worker and unsafe ones run one at a time."""
        conf = self.config.plugins.get(plugin)
        if conf is not None and conf.parallelism:
            return conf.parallelism
        found = self.plugins.get(plugin)
        if found is None or not found.concurrency_safe:
            return 1
        return self.config.service.max_workers

    def cluster_caps(self) -> dict[str, int] | None:
        """On a store shared by several gateways (state.backend postgresql): the plugins
        whose concurrency is bounded across the whole cluster (an explicit `parallelism`, or
        a plugin that is not concurrency-safe: one at a time anywhere), for the store to hold
        in its claims. None on SQLite, where this gateway's own lanes are the whole story.
        Asked at every claim, so worked out once per generation (config and plugins are
        fixed for its life)."""
        return self._cluster_caps

    @functools.cached_property
    def _cluster_caps(self) -> dict[str, int] | None:
        if not self.config.state.shared:
            return None
        caps = {}
        for name, found in self.plugins.items():
            conf = self.config.plugins.get(name)
            if conf is not None and not conf.enabled:
                continue
            if (conf is not None and conf.parallelism) or not found.concurrency_safe:
                caps[name] = self.lane_limit(name)
        return caps


#: The default of `service.max_route_depth`: the ceiling on the route depth of a whole chain of
#: pipelines (pipelines that trigger each other stop here). Each pipeline run also has its own
#: budget (docs/pipelines.md).
MAX_ROUTE_DEPTH = 32


def sqlite_backend() -> Backend:
    """The SQLite backend (imported on first use: the store's statement modules)."""
    from ductile.store.backend import SQLITE_BACKEND

    return SQLITE_BACKEND


def empty_pipelines() -> PipelineSet:
    """The pipeline set of a config with no `pipelines:`."""
    from ductile.router.dsl import compile_pipelines

    return compile_pipelines((), {}, default_max_depth=MAX_ROUTE_DEPTH, hook_max_depth=4)
