"""`GET /`, `GET /healthz`, `POST /system/reload`, `GET /system/doctor`,
`GET /system/selfcheck` and `GET /system/nodes`."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request

from ductile import __version__
from ductile.errors import StoreError
from ductile.planes.api.auth import AuthError, authenticate
from ductile.planes.api.cluster import (HEALTH_MAX_AGE, SINGLE_GATEWAY, health_cluster,
                                        nodes_answer)
from ductile.planes.api.kit import ApiError, respond
from ductile.planes.api.openapi import Operation, ok, refused
from ductile.planes.api.schemas import (HEALTH, INDEX, NODES, RELOAD_REFUSED, RELOADED,
                                        REPORT)

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.config.doctor import DoctorResult
    from ductile.planes.api.auth import Principal
    from ductile.planes.api.context import ApiContext
    from ductile.runtime import Runtime


def register(app: QuartTrio, ctx: ApiContext, guarded: Any) -> None:
    @guarded.route(Operation("GET", "/", "the gateway's name, version and where to look next",
                             auth="none", answers=(ok(200, "the index", INDEX),)))
    @guarded()
    async def index(rt: Runtime, _p: Principal | None) -> Response:
        return respond({
            "name": "Ductile Gateway",
            "description": "Lightweight, open-source integration engine for the agentic era.",
            "version": __version__,
            "uptime_seconds": ctx.uptime(),
            "discovery": {"health": "/healthz", "skills": "/skills", "plugins": "/plugins",
                          "openapi": "/openapi.json",
                          "ai_plugin": "/.well-known/ai-plugin.json", "jobs": "/jobs",
                          "run": "/plugins/{name}/run", "enqueue": "/plugin/{plugin}/{command}",
                          "pipeline": "/pipeline/{name}", "tree": "/job/{id}/tree",
                          "scheduler": "/scheduler/jobs"},
        })

    @guarded.route(Operation(
        "GET", "/healthz", "liveness; with any valid token, the details", auth="optional-token",
        answers=(ok(200, "up: status, posture and version (and the details with a token)",
                    HEALTH),
                 refused(503, "the queue depth (or, on PostgreSQL, the cluster's nodes) could "
                              "not be read"))))
    @guarded()
    async def healthz(rt: Runtime, _p: Principal | None) -> Response:
        """Without a token: status, posture and version only (a probe needs no more, and the
        paths, generation and counts describe the host to whoever asks). With any valid token:
        the details. A token that is sent but not valid is a 401, never a quieter answer."""
        from ductile.schedule.views import open_circuit_count

        header = request.headers.get("Authorization")
        if header is not None:
            try:
                authenticate(header, rt.api_tokens)
            except AuthError as exc:
                return respond({"error": exc.message}, exc.status)
        try:
            depth = await rt.queue.queue_depth()
            circuits_open = await ctx.read(
                lambda conn: open_circuit_count(conn, backend=rt.backend))
        except StoreError:
            raise ApiError(503, "failed to compute queue depth") from None
        if header is None:
            return respond({"status": "ok", "posture": rt.posture, "version": __version__})
        extra: dict[str, Any] = {}
        if ctx.cluster is not None:
            # Cached for about a second: polling every node's /healthz must not become two
            # reads of the shared database per poll.
            try:
                extra["cluster"] = health_cluster(await ctx.cluster(HEALTH_MAX_AGE))
            except StoreError:
                raise ApiError(503, "failed to read the cluster's nodes") from None
        return respond({
            "status": "ok",
            "uptime_seconds": ctx.uptime(),
            "queue_depth": depth,
            "plugins_loaded": len(rt.plugins),
            "plugins_circuit_open": circuits_open,
            "posture": rt.posture,
            "privsep": {"posture": rt.privsep.posture,
                        "accounts": len(rt.privsep.accounts)},
            "version": __version__,
            "config_path": rt.config.config_path,
            "binary_path": os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "",
            "generation": rt.generation,
            "snapshot_id": rt.snapshot_id,
            # Ingress backpressure: the bound, the count it holds and refusals so far.
            "backpressure": rt.backpressure.view(rt.config),
            **extra,
        })

    @guarded.route(Operation(
        "POST", "/system/reload", "reload the config (as SIGHUP); the old one serves on refusal",
        answers=(ok(200, "the new generation serves", RELOADED),
                 ok(409, "a gate refused the new config; the old one keeps serving",
                    RELOAD_REFUSED))))
    @guarded("system:rw")
    async def reload(rt: Runtime, _p: Principal | None) -> Response:
        # Shielded: a client that disconnects must not abandon a half-built generation.
        with trio.CancelScope(shield=True):
            result = await ctx.reload("api")
        if not result.ok:
            return respond({"error": result.message, "gate": result.gate}, 409)
        return respond({"status": "ok", "message": result.message,
                        "reloaded_at": result.reloaded_at.isoformat().replace("+00:00", "Z")
                        if result.reloaded_at else None,
                        "snapshot_id": result.snapshot_id})

    @guarded.route(Operation("GET", "/system/doctor", "the doctor's review of the serving config",
                             answers=(ok(200, "one check per finding", REPORT),)))
    @guarded("system:ro")
    async def doctor(rt: Runtime, _p: Principal | None) -> Response:
        from ductile.config.doctor import diagnose

        result = diagnose(rt.config, rt.plugins, pipelines=rt.pipelines,
                          vault_present=rt.vault_owner is not None,
                          shadowed=rt.shadowed_plugins)
        return respond(doctor_report(result, datetime.now(timezone.utc)))

    @guarded.route(Operation("GET", "/system/selfcheck",
                             "config, seal, vault, database, plugins, disk and listener",
                             answers=(ok(200, "one check per subject", REPORT),)))
    @guarded("system:ro")
    async def selfcheck(rt: Runtime, _p: Principal | None) -> Response:
        report = await selfcheck_report(ctx, rt)
        report["captured_at"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        return respond(report)


    @guarded.route(Operation(
        "GET", "/system/nodes", "the gateways sharing this store, their liveness and the leader",
        answers=(ok(200, "every node row (PostgreSQL), or a single gateway (SQLite)", NODES),
                 refused(503, "the node rows could not be read"))))
    @guarded("system:ro")
    async def system_nodes(rt: Runtime, _p: Principal | None) -> Response:
        if ctx.cluster is None:  # SQLite: one gateway owns its store; there are no peers
            return respond(SINGLE_GATEWAY)
        try:
            snapshot = await ctx.cluster(0.0)  # an operator asking gets a fresh read
        except StoreError as exc:
            ctx.log.warn("GET /system/nodes: the node rows could not be read", error=str(exc))
            raise ApiError(503, "failed to read the cluster's nodes from the database; the "
                                "gateway's log has the reason") from None
        return respond(nodes_answer(snapshot))


async def selfcheck_report(ctx: ApiContext, rt: Runtime) -> dict[str, Any]:
    """The selfcheck of the serving generation: the config re-read from disk, the seal, the
    vault it holds, the database through the store's reader, plugins, disk and listeners."""
    from ductile.config import selfcheck as sc
    from ductile.config.state import redact_dsn
    from ductile.errors import ConfigError, VaultError

    cfg = rt.config
    checks: list[dict[str, Any]] = []

    def reload_config() -> dict[str, Any]:
        from ductile.config.load import parse_config, validate_config

        try:
            fresh = parse_config(cfg.config_path, source=cfg.source, environ=os.environ)
            validate_config(fresh)
        except ConfigError as exc:
            return sc.check("config", False, f"the config on disk does not load: {exc}",
                            path=cfg.config_path)
        return sc.check("config", True, f"loaded and valid ({cfg.config_path})",
                        path=cfg.config_path)

    checks.append(await trio.to_thread.run_sync(reload_config))
    nonce, nonce_problem = None, None
    if rt.vault_owner is None:
        checks.append(sc.check("vault", True, "no vault loaded by the serving generation"))
        nonce_problem = "no vault is loaded"
    else:
        try:
            nonce = rt.vault_owner.nonce
            checks.append(sc.check("vault", True, "opened by the serving generation"))
        except VaultError as exc:
            checks.append(sc.check("vault", False, str(exc)))
            nonce_problem = str(exc)
    checks.append(await trio.to_thread.run_sync(
        lambda: sc.seal_check(cfg, rt.plugins, nonce, nonce_problem)))
    # The database is the file, or the shared PostgreSQL store's DSN (it holds no password).
    where = redact_dsn(cfg.state.dsn) if cfg.state.shared else cfg.state_path
    try:
        health = await ctx.read(lambda conn: rt.backend.health.check(conn, where))
        checks.append(sc.health_check(health, where))
    except StoreError as exc:
        checks.append(sc.check("database", False, str(exc), path=where))
    checks.extend(sc.plugin_checks(cfg, rt.plugins))
    checks.append(await trio.to_thread.run_sync(lambda: sc.disk_check(cfg.state_path)))
    checks.append(sc.check("listener:api", True, f"serving on {cfg.api.listen}",
                           address=cfg.api.listen, bound=True))
    return sc.report(checks)


def doctor_report(result: DoctorResult, captured_at: datetime) -> dict[str, Any]:
    """The doctor of the serving generation, as the Go gateway's `/system/doctor` shapes it:
    one check per finding, named by its category; an error fails its check and the report,
    a warning passes both but carries its severity."""
    checks = []
    for severity, findings in (("error", result.errors), ("warning", result.warnings)):
        for finding in findings:
            check: dict[str, Any] = {"name": finding.category, "ok": severity != "error",
                                     "severity": severity, "detail": finding.message}
            if finding.field:
                check["field"] = finding.field
            if finding.file:
                check["file"] = finding.file
            checks.append(check)
    return {"ok": result.valid,
            "captured_at": captured_at.isoformat().replace("+00:00", "Z"),
            "checks": checks}
