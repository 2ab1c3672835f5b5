"""Build one runtime generation by walking `states/boot.yaml` with real I/O.

`build_generation` is shared by first boot and reload. It gathers the facts for each phase (read
and validate the config, take the PID lock, scan for symlinks, discover and trust plugins, open
the database and migrate an older schema, recover orphans, record the config snapshot, bind the
listener), then fires the phase's trigger so the gates judge them. A refusal raises
`BootRefused` naming the gate.

Process-wide resources live in `Process`: the PID lock, the one database (its writer thread), the
listening socket, the dispatcher and the completion waiters. They are created at first boot and
handed to every later generation, which is why `state.path` and `api.listen` cannot change on
reload.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import trio

from ductile import __version__
from ductile.boot import pidlock
from ductile.boot.gates import BootFacts
from ductile.boot.gather import (
    DEFAULT_ETC_DIR,
    gather_accounts,
    gather_config,
    gather_doctor,
    gather_integrity,
    gather_pipelines,
    gather_plugins,
    gather_posture,
    gather_relay,
    gather_schedules,
    gather_symlinks,
    gather_tls,
    gather_vault_facts,
)
from ductile.boot.machine import BootMachine
from ductile.config.schema import Config
from ductile.dispatch.completions import Completions
from ductile.dispatch.live import LiveStderr
from ductile.errors import ConfigError, LockError, StoreError
from ductile.events.hub import Hub
from ductile.events.outstanding import Backpressure
from ductile.logs import Logger
from ductile.runtime import Runtime, sqlite_backend

if TYPE_CHECKING:
    from ductile.dispatch.dispatcher import Dispatcher
    from ductile.events.metrics import Metrics
    from ductile.privsep.attest import Attestor
    from ductile.privsep.posture import Privsep
    from ductile.relay.sender import Clients
    from ductile.router.dsl import PipelineSet
    from ductile.store.audit import AuditWriter
    from ductile.store.backend import Backend
    from ductile.store.db import Database
    from ductile.store.jobs import Job
    from ductile.store.pg.cluster import PgCluster
    from ductile.store.pg.db import PgDatabase
    from ductile.store.queue import QueueCore
    from ductile.vault.owner import VaultOwner


@dataclass
class Process:
    """What outlives a generation: bound once per process, handed to each runtime."""

    explicit_config: str | None
    environ: Mapping[str, str]
    log: Logger
    home: str = field(default_factory=lambda: os.path.expanduser("~"))
    etc_dir: str = DEFAULT_ETC_DIR
    lock: pidlock.PidLock | None = None
    db: Database | PgDatabase | None = None
    # This node among its peers when the store is PostgreSQL (boot/cluster.py), else None.
    cluster: PgCluster | None = None
    # The statement tables of `db`'s backend (store/backend.py), handed to every generation.
    backend: Backend = field(default_factory=sqlite_backend)
    listener: socket.socket | None = None
    # The unix socket of the management-only posture, bound when a generation needs it and
    # removed when a reload activates the gateway.
    management_listener: socket.socket | None = None
    management_path: str | None = None
    webhook_listener: socket.socket | None = None
    completions: Completions = field(default_factory=Completions)
    # Running plugins' stderr lines for live followers (dispatcher publishes, API reads).
    live: LiveStderr = field(default_factory=LiveStderr)
    dispatcher: Dispatcher | None = None
    audit: AuditWriter | None = None
    generations: int = 0
    # Pooled connections to relay receivers, shared by every generation.
    relay_clients: Clients = field(default_factory=lambda: _relay_clients())
    # The event hub (GET /events) and the metrics it feeds (GET /metrics): one per process,
    # so ids continue and counters keep counting across reloads. Metrics are built by the
    # supervisor (they import prometheus_client, which no CLI verb should pay for).
    events: Hub = field(init=False)
    metrics: Metrics | None = None
    # The count of outstanding jobs, fed by the hub, and the ingress bound on it
    # (events/outstanding.py): one per process, seeded and re-synced by the supervisor.
    backpressure: Backpressure = field(init=False)

    def __post_init__(self) -> None:
        self.events = Hub(log=self.log.child("events"))
        self.backpressure = Backpressure(log=self.log.child("backpressure"))
        self.events.add_tap(self.backpressure.counter.observe)

    def queue(self, *, snapshot_id: Callable[[], str | None], dedupe_ttl: float,
              on_enqueue: Callable[[], None] | None = None) -> QueueCore:
        """The job queue on this process's store: SQLite's, or PostgreSQL's bound to this
        node's life (claims, outcomes and boot recovery are then this node's alone)."""
        assert self.db is not None
        wake = on_enqueue or (lambda: None)
        if self.cluster is not None:
            from ductile.store.pg.queue import PgQueue

            return PgQueue(self.db, snapshot_id=snapshot_id,  # type: ignore[arg-type]
                           dedupe_ttl=dedupe_ttl, on_enqueue=wake, node=self.cluster.me)
        from ductile.store.queue import Queue

        return Queue(self.db, snapshot_id=snapshot_id,  # type: ignore[arg-type]
                     dedupe_ttl=dedupe_ttl, on_enqueue=wake)

    def wake_dispatcher(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def close_management(self) -> None:
        from ductile.planes.api.management import remove_management_socket

        if self.management_listener is not None:
            self.management_listener.close()
            self.management_listener = None
        if self.management_path is not None:
            remove_management_socket(self.management_path)
            self.management_path = None

    async def close(self) -> None:
        self.close_management()
        for sock in (self.listener, self.webhook_listener):
            if sock is not None:
                sock.close()
        self.listener = self.webhook_listener = None
        await self.relay_clients.aclose()
        if self.cluster is not None:
            from ductile.boot.cluster import retire

            await retire(self.cluster, self.log)
            self.cluster = None
        if self.db is not None:
            await self.db.close()
            self.db = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


async def build_generation(
    proc: Process, *, reason: str, previous: Runtime | None = None
) -> Runtime:
    """Walk every boot phase; return the admitted runtime or raise BootRefused."""
    facts = BootFacts(reason=reason, previous=previous.config if previous else None)
    machine = BootMachine(facts)
    log = proc.log.child("boot")

    gather_config(facts, proc.explicit_config, proc.environ, proc.home, proc.etc_dir)
    machine.advance("load_config")
    cfg = facts.config
    assert cfg is not None
    if reason == "startup":
        # Set early so boot itself honours it; a reload applies its level at the swap.
        proc.log.set_level(cfg.service.log_level)
    log.info("config loaded", path=cfg.config_path, source=cfg.source, reason=reason)
    for warning in cfg.warnings:
        log.warn("config: key ignored (not a known field)", detail=warning)

    if proc.lock is None:
        try:
            proc.lock = pidlock.acquire(pidlock.lock_path_for(cfg.state_path))
        except LockError as exc:
            facts.lock_error = str(exc)
    machine.advance("acquire_lock")

    gather_symlinks(cfg, facts)
    for warning in await trio.to_thread.run_sync(gather_plugins, cfg, facts):
        log.warn("failed to load plugin", detail=warning)
    if facts.plugins:
        log.info("plugin discovery complete", count=len(facts.plugins),
                 plugins=sorted(facts.plugins))
    machine.advance("discover")
    vault = await _open_vault(proc, cfg, facts, log)
    for warning in await trio.to_thread.run_sync(gather_integrity, cfg, facts, vault):
        log.warn("integrity", detail=warning)
    gather_relay(cfg, facts)
    gather_schedules(cfg, facts)
    gather_accounts(cfg, facts)
    gather_tls(cfg, facts)
    machine.advance("admit")

    if proc.db is None:
        await _open_database(proc, cfg, facts, log)
        if proc.db is not None:
            from ductile.events.journal import load

            # Ids continue after the stored events.
            await load(proc.events, proc.db, proc.backend.events)
    buried: list[Job] = []
    if proc.db is not None and reason == "startup":
        buried = await _recover_orphans(proc, facts, log)
    for warning in gather_pipelines(cfg, facts):
        log.warn("pipeline warning", detail=warning)
    if facts.pipelines is not None and facts.pipelines.pipelines:
        log.info("pipelines compiled", count=len(facts.pipelines.pipelines),
                 pipelines=sorted(facts.pipelines.pipelines))
    gather_doctor(cfg, facts)
    _log_doctor(cfg, facts, log)
    machine.advance("open_state")

    from ductile.config.snapshot import snapshot_fields
    from ductile.events.queue import EventedQueue
    from ductile.store.snapshots import Snapshots
    from ductile.store.state import StateStore

    assert proc.db is not None
    attestor = await trio.to_thread.run_sync(_attestor, cfg, facts, vault)
    try:
        fields = snapshot_fields(cfg, facts.secrets)
        if attestor is not None:
            fields["plugin_fingerprints"] = attestor.document()
        facts.snapshot_id = await Snapshots(proc.db, proc.backend.snapshots).record(
            fields, reason=reason, version=__version__,
            binary_path=sys.argv[0] and os.path.abspath(sys.argv[0]),
        )
    except (StoreError, OSError) as exc:
        facts.snapshot_error = str(exc)
    machine.advance("plumb")
    snapshot_id = facts.snapshot_id
    assert snapshot_id is not None
    log.info("config snapshot recorded", snapshot_id=snapshot_id, reason=reason)
    if buried:
        await _fire_recovery_hooks(proc, cfg, facts.pipelines, buried, snapshot_id, log)

    gather_posture(cfg, facts)
    posture = facts.posture
    assert posture is not None
    machine.advance("decide_posture")
    if cfg.relay.ingress is not None and posture != "gateway":
        log.warn("relay receiver not served: remote_ingress is mounted on the API listener, "
                 "which this posture does not open (enable the API with a token)",
                 posture=posture, listen_path=cfg.relay.ingress.listen_path)
    privsep = await _gate_privsep(cfg, facts, vault, log)
    machine.advance("gate_privsep")

    if posture == "gateway" and proc.listener is None:
        try:
            proc.listener = bind_listener(cfg.api.listen, proc.environ)
        except OSError as exc:
            facts.bind_error = (
                f"api.listen {cfg.api.listen}: {exc.strerror or exc}; stop the process using "
                "that address or change api.listen"
            )
    if posture == "gateway" and cfg.webhooks.endpoints and proc.webhook_listener is None:
        listen = cfg.webhooks.listen or ""
        try:
            proc.webhook_listener = bind_listener(listen, {})
        except OSError as exc:
            facts.bind_error = (
                f"webhooks.listen {listen}: {exc.strerror or exc}; stop the process using that "
                "address or change webhooks.listen"
            )
    if posture == "management-only":
        _bind_management(proc, cfg, facts)
    if proc.audit is None:
        from ductile.store.audit import AuditWriter

        proc.audit = AuditWriter(proc.db, proc.log.child("vault"),
                                 statements=proc.backend.audit)
    machine.advance("open_planes")

    proc.generations += 1
    return Runtime(
        generation=proc.generations,
        config=cfg,
        plugins=facts.plugins,
        snapshot_id=snapshot_id,
        posture=posture,
        queue=EventedQueue(proc.queue(snapshot_id=lambda: snapshot_id,
                                      dedupe_ttl=cfg.service.dedupe_ttl,
                                      on_enqueue=proc.wake_dispatcher), proc.events.publish),
        state=StateStore(proc.db, proc.backend.state),
        backend=proc.backend,
        loaded_at=datetime.now(timezone.utc),
        started_monotonic=time.monotonic(),
        warnings=cfg.warnings,
        sync_slots=trio.Semaphore(max(1, cfg.api.max_concurrent_sync)),
        vault_owner=vault,
        api_tokens=tuple(replace(token, token=facts.secrets.get(token.secret_ref, ""))
                         for token in cfg.api.tokens),
        webhook_secrets={e.path: facts.secrets.get(e.secret_ref, "").encode()
                         for e in cfg.webhooks.endpoints},
        pipelines=facts.pipelines,
        shadowed_plugins=facts.shadowed,
        privsep=privsep,
        attestor=attestor,
        relay=replace(facts.relay, clients=proc.relay_clients),
        tls=dict(facts.tls),
        backpressure=proc.backpressure,
    )


def _relay_clients() -> Clients:
    from ductile.relay.sender import Clients

    return Clients()


def _attestor(cfg: Config, facts: BootFacts, vault: VaultOwner | None) -> Attestor | None:
    """The generation's attestation baselines (privsep/attest.py): only a loaded vault can
    hand out secrets, and only its nonce can key the fingerprints."""
    from ductile.errors import VaultError
    from ductile.privsep.attest import Attestor, take_baselines

    if vault is None:
        return None
    try:
        nonce = vault.nonce
    except VaultError:
        return None
    seal = facts.integrity.seal if facts.integrity is not None else None
    sealed = {record.name: (record.entrypoint_resolved_path, record.entrypoint_hash)
              for record in (seal.plugin_fingerprints if seal is not None else ())}
    entrypoints = {name: plugin.entrypoint for name, plugin in facts.plugins.items()
                   if cfg.plugin(name).enabled}
    baselines, problems = take_baselines(entrypoints, nonce, sealed)
    return Attestor(nonce, baselines, problems)


async def _gate_privsep(
    cfg: Config, facts: BootFacts, vault: VaultOwner | None, log: Logger
) -> Privsep:
    """Decide the posture; when enforcing, reconcile the filesystem floor and audit every
    account for side doors (gates privsep_posture_decided, filesystem_floor_held,
    side_doors_closed). Runs on the trio thread, which is the one that spawns plugins: its
    ambient capabilities are cleared and no_new_privs is set here, so no plugin inherits a
    capability or can gain one through a setuid program or a sudo rule."""
    from ductile.plugin.credentials import clear_ambient_capabilities, forbid_new_privileges
    from ductile.privsep.posture import ENFORCING, Privsep, decide, read_capability

    capability = read_capability()
    decision = facts.privsep = decide(capability, len(cfg.accounts), cfg.service.unconfined)
    if decision.refusal is not None:
        return Privsep()
    assert decision.posture is not None
    getattr(log, decision.level)(decision.message, posture=decision.posture,
                                 capability=capability.how, accounts=len(cfg.accounts))
    if decision.posture != ENFORCING:
        return Privsep(posture=decision.posture)
    privsep = Privsep.build(decision.posture, cfg, facts.accounts, facts.plugins)
    _warn_tiers(cfg, facts, log)
    await _enforce_floor(cfg, facts, vault, privsep, log)
    if not facts.floor.problems:
        await _audit_side_doors(cfg, facts, privsep, log)
    clear_ambient_capabilities()
    forbid_new_privileges()
    return privsep


def _warn_tiers(cfg: Config, facts: BootFacts, log: Logger) -> None:
    from ductile.config.accounts import DEFAULT_ACCOUNT

    if DEFAULT_ACCOUNT not in cfg.accounts:
        unconfined = sorted(name for name, conf in cfg.plugins.items()
                            if conf.enabled and not conf.run_as)
        if unconfined:
            log.warn("privsep: no default account — plugins without run_as run UNCONFINED at the "
                     "gateway uid; define accounts.default or give each a run_as",
                     plugins=unconfined)
    for name, account in sorted(facts.accounts.items()):
        if account.mode == "credentialed":
            log.warn("privsep: account is CREDENTIALED (trusted) — runs as a real user with their "
                     "home", account=name, uid=account.uid, home=account.home)


async def _enforce_floor(cfg: Config, facts: BootFacts, vault: VaultOwner | None,
                         privsep: Privsep, log: Logger) -> None:
    from ductile.config.seal import seal_path
    from ductile.privsep.floor import reconcile_floor

    secret_paths = [cfg.state_path, cfg.state_path + "-wal", cfg.state_path + "-shm",
                    seal_path(cfg.config_dir)]
    if facts.vault_path:
        secret_paths.insert(0, facts.vault_path)
    if vault is not None:
        secret_paths.insert(1, vault.key_path)
    entrypoints = {}
    for name, plugin in facts.plugins.items():
        account = privsep.plugin_accounts.get(name)
        if cfg.plugin(name).enabled and account in privsep.accounts:
            entrypoints[name] = (account, plugin.entrypoint)
    # TLS keys are the operator's (renewed by their tooling): verified, never changed.
    tls_keys = [tls.key_file for tls in (cfg.api.tls, cfg.webhooks.tls) if tls is not None]
    facts.floor = report = await trio.to_thread.run_sync(
        lambda: reconcile_floor(secret_paths, privsep.accounts, entrypoints=entrypoints,
                                walled_paths=tls_keys))
    for change in report.changed:
        log.info("privsep filesystem floor", change=change)


async def _audit_side_doors(cfg: Config, facts: BootFacts, privsep: Privsep,
                            log: Logger) -> None:
    from ductile.privsep.sidedoor import audit, probe_account

    def probe_all() -> list[Any]:
        reports = []
        for name, account in sorted(privsep.accounts.items()):
            paths: list[str] = []
            for plugin, owner in privsep.plugin_accounts.items():
                found = facts.plugins.get(plugin)
                if owner == name and found is not None and cfg.plugin(plugin).enabled:
                    paths += [found.entrypoint, found.directory]
            reports.append(probe_account(account, sorted(set(paths))))
        return reports

    reports = await trio.to_thread.run_sync(probe_all)
    facts.sidedoors = verdict = audit(reports, fail_on_sidedoor=cfg.service.admission
                                      .fail_on_sidedoor)
    for level, message, fields in verdict.log:
        getattr(log, level)(message, **fields)


def _log_doctor(cfg: Config, facts: BootFacts, log: Logger) -> None:
    """With validate_config_on_boot off the doctor's errors do not refuse, so they are logged
    (once per generation) where an operator reading the journal finds them. Under the switch
    the gate config_doctor_passed refuses with every error instead."""
    if facts.doctor is None or cfg.service.admission.validate_config_on_boot:
        return
    for finding in facts.doctor.errors:
        log.warn("doctor: configuration problem (not enforced: "
                 "service.admission.validate_config_on_boot is off)",
                 category=finding.category, field=finding.field, file=finding.file,
                 detail=finding.message)


async def _open_vault(
    proc: Process, cfg: Config, facts: BootFacts, log: Logger
) -> VaultOwner | None:
    """Decrypt the vault once for this generation; every gate and plane sees this copy."""
    loaded, warnings = await trio.to_thread.run_sync(
        lambda: gather_vault_facts(cfg, facts, proc.environ, proc.home))
    if loaded is None:
        return None
    if loaded.status == "blind":
        log.warn("vault present but no key found: secret_refs cannot resolve",
                 vault=loaded.vault_path)
    for warning in warnings:
        log.warn("vault", detail=warning)
    if loaded.owner is not None:
        log.info("vault opened", vault=loaded.vault_path, key=loaded.key_path,
                 gateway_visible_secrets=len(facts.secrets))
    return loaded.owner


def _bind_management(proc: Process, cfg: Config, facts: BootFacts) -> None:
    from ductile.planes.api.management import bind_management_socket, management_socket_path

    path = management_socket_path(cfg.api.management_socket, cfg.state_path)
    if proc.management_listener is not None and proc.management_path == path:
        return
    proc.close_management()
    try:
        proc.management_listener = bind_management_socket(path)
    except (ConfigError, OSError) as exc:
        facts.bind_error = f"api.management_socket: {exc}"
        return
    proc.management_path = path


async def _recover_orphans(proc: Process, facts: BootFacts, log: Logger) -> list[Job]:
    """At-least-once: jobs a crash left `running` go back to the queue as a new attempt, or to
    `dead` when their attempts are used up. Runs before any dispatcher can claim. Returns the
    jobs it marked dead (their hooks fire once the pipelines are compiled)."""
    assert proc.db is not None
    try:
        recovered = await proc.queue(snapshot_id=lambda: None, dedupe_ttl=0).recover_orphans()
    except StoreError as exc:
        facts.recovery_error = str(exc)
        return []
    for job in recovered:
        log.warn("recovered orphaned job", job_id=job.id, plugin=job.plugin, status=job.status,
                 attempt=job.attempt)
        proc.events.publish("job.dead" if job.status == "dead" else "job.enqueued",
                            job_id=job.id, plugin=job.plugin, command=job.command,
                            status=job.status, attempt=job.attempt, recovery=True,
                            submitted_by=job.submitted_by, error=job.last_error)
    return [job for job in recovered if job.status == "dead"]


async def _fire_recovery_hooks(
    proc: Process, cfg: Config, pipelines: PipelineSet | None, buried: list[Job],
    snapshot_id: str, log: Logger,
) -> None:
    """Enqueue the `job.failed` hooks (payload `recovery: true`) of root jobs crash recovery
    marked dead, as the dispatcher would had the job failed in its hands: same successors,
    each a child of the dead job. A hook that cannot be routed or is dropped is logged, never
    a boot refusal: the dead job itself is already recorded."""
    from ductile.dispatch.routing import hook_successors
    from ductile.errors import RouterError
    from ductile.events.queue import EventedQueue
    from ductile.store.queue import burial_reason

    if pipelines is None or not pipelines.by_hook:
        return
    assert proc.db is not None
    queue = EventedQueue(proc.queue(snapshot_id=lambda: snapshot_id,
                                    dedupe_ttl=cfg.service.dedupe_ttl,
                                    on_enqueue=proc.wake_dispatcher), proc.events.publish)
    for job in buried:
        try:
            fired, notes = hook_successors(
                pipelines, job, "dead", notify=cfg.plugin(job.plugin).notify_on_complete,
                max_attempts=lambda p: cfg.plugin(p).retry.max_attempts,
                result=None, reason=burial_reason(job), error=job.last_error,
                recovery=True)
        except RouterError as exc:
            log.warn("recovery hook not routed", job_id=job.id, plugin=job.plugin, error=str(exc))
            continue
        for note in notes:
            log.info("route not taken", job_id=job.id, plugin=job.plugin, note=note)
        for hook in fired:
            try:
                enqueued = await queue.enqueue(
                    hook.plugin, hook.command, hook.payload, hook.submitted_by,
                    max_attempts=hook.max_attempts, dedupe_key=hook.dedupe_key,
                    parent_job_id=job.id, source_event_id=hook.source_event_id,
                    context=hook.context)
            except StoreError as exc:  # dedupe drop, redelivery, or a refused write
                log.warn("recovery hook not enqueued", job_id=job.id, plugin=hook.plugin,
                         error=str(exc))
                continue
            log.info("recovery hook fired", job_id=job.id, plugin=job.plugin,
                     hook_job_id=enqueued.id, hook_plugin=hook.plugin,
                     pipeline=hook.context.pipeline_name if hook.context else None)


async def _open_postgresql(proc: Process, cfg: Config, facts: BootFacts, log: Logger) -> None:
    """The shared PostgreSQL store (boot/cluster.py): open, migrate once across the nodes,
    join as this node's new incarnation; the same facts as SQLite's for the same gates."""
    from ductile.boot.cluster import open_postgresql
    from ductile.errors import SchemaTooNew
    from ductile.store.pg.backend import POSTGRESQL_BACKEND
    from ductile.store.pg.db import describe_dsn
    from ductile.store.pg.events import events_for
    from ductile.store.pg.migrations import target_version

    label = describe_dsn(cfg.state.dsn)
    try:
        proc.db, proc.cluster = await open_postgresql(cfg, facts, __version__)
    except SchemaTooNew as exc:
        facts.schema_path, facts.schema_version = exc.path, exc.found
        facts.schema_supported = exc.supported
        return
    except (StoreError, OSError) as exc:
        facts.db_error = f"database {label}: {exc}"
        return
    # Each node journals its own event stream (its hub numbers them).
    proc.backend = replace(POSTGRESQL_BACKEND, events=events_for(proc.cluster.me.node_id))
    migrated = proc.db.migration
    facts.schema_path, facts.schema_supported = proc.db.label, target_version()
    facts.schema_version = migrated.from_version if migrated else target_version()
    if migrated is not None:
        log.info("state database migrated", database=migrated.label,
                 from_version=migrated.from_version, to_version=migrated.to_version,
                 steps=list(migrated.steps))
    me = proc.cluster.me
    log.info("joined the cluster", node=me.node_id, incarnation=me.incarnation,
             database=proc.db.label)


async def _open_database(proc: Process, cfg: Config, facts: BootFacts, log: Logger) -> None:
    """Open (create, or migrate to the current schema version) the database; record what the
    gates database_opened and schema_migrated judge, and log a migration once."""
    from ductile.errors import MigrationFailed, SchemaTooNew
    from ductile.store.db import Database
    from ductile.store.migrations import SCHEMA_VERSION

    if cfg.state.shared:
        await _open_postgresql(proc, cfg, facts, log)
        return
    try:
        proc.db = await Database.open(cfg.state_path)
    except SchemaTooNew as exc:
        facts.schema_path, facts.schema_version = exc.path, exc.found
        facts.schema_supported = exc.supported
        return
    except MigrationFailed as exc:
        facts.schema_path, facts.schema_version = exc.path, exc.found
        facts.schema_supported, facts.schema_error = exc.target, str(exc)
        return
    except (StoreError, OSError) as exc:
        facts.db_error = f"database {cfg.state_path}: {exc}"
        return
    migrated = proc.db.migration
    facts.schema_path, facts.schema_supported = proc.db.path, SCHEMA_VERSION
    facts.schema_version = migrated.from_version if migrated else SCHEMA_VERSION
    if migrated is not None:
        facts.schema_backup = migrated.backup_path
        log.info("state database migrated", path=migrated.path,
                 from_version=migrated.from_version, to_version=migrated.to_version,
                 backup=migrated.backup_path, steps=list(migrated.steps))


def bind_listener(listen: str, environ: Mapping[str, str]) -> socket.socket:
    """Bind the API address once per process (or adopt systemd's socket, LISTEN_FDS)."""
    if environ.get("LISTEN_PID") == str(os.getpid()) and environ.get("LISTEN_FDS", "0") != "0":
        sock = socket.socket(fileno=3)
        sock.set_inheritable(False)
        return sock
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(1024)
    except (OSError, ValueError) as exc:
        sock.close()
        if isinstance(exc, ValueError):
            raise OSError(0, f"invalid listen address {listen!r}; use host:port") from exc
        raise
    return sock

