"""`ductile system status`: config, database, PID lock and a live /healthz probe."""

from __future__ import annotations

import os
from typing import Any, NoReturn


_PRIVSEP_MEANING = {
    "enforcing": "plugins drop to their accounts",
    "unconfined": "plugins run as the gateway despite configuration (service.unconfined)",
    "hygiene-only": "no accounts and no capability to change uid: plugins run as the gateway",
}


def add_privsep(add: Any, body: dict[str, Any]) -> None:
    """The privilege-separation posture the running gateway decided at its last boot."""
    privsep = body.get("privsep")
    if not isinstance(privsep, dict):
        return
    posture = str(privsep.get("posture"))
    add("privsep", True, f"{posture}: {_PRIVSEP_MEANING.get(posture, 'unknown posture')} "
        f"({privsep.get('accounts', 0)} account(s))", posture=posture)


def add_cluster(add: Any, body: dict[str, Any]) -> None:
    """On a PostgreSQL store, this node among its peers (the `cluster` of /healthz); nothing
    on SQLite, where the gateway is alone. `ductile system nodes` lists every node."""
    cluster = body.get("cluster")
    if not isinstance(cluster, dict):
        return
    peers = cluster.get("peers_alive")
    leader = cluster.get("leader_node_id")
    add("cluster", True, f"node {cluster.get('node_id')} (incarnation "
        f"{cluster.get('incarnation')}), {peers} other node(s) alive, "
        f"{f'leader {leader}' if leader else 'no scheduler leader'}",
        node_id=cluster.get("node_id"), peers_alive=peers, leader_node_id=leader)


def collect_status(config_path: str | None) -> dict[str, Any]:
    from ductile.boot.pidlock import lock_path_for, pid_alive, read_pid
    from ductile.config.load import parse_config, validate_config
    from ductile.config.resolve import resolve_config
    from ductile.errors import ConfigError

    checks: list[dict[str, Any]] = []

    def add(name: str, ok: bool, detail: str, **extra: Any) -> None:
        checks.append({"name": name, "ok": ok, "detail": detail, **extra})

    try:
        path, source = resolve_config(config_path, os.environ, os.path.expanduser("~"))
    except ConfigError as exc:
        add("config_discovery", False, str(exc))
        for name in ("config_load", "state_db", "pid_lock", "healthz"):
            add(name, False, "skipped: config discovery failed")
        return {"healthy": False, "checks": checks}
    add("config_discovery", True, f"found ({source})", path=path)
    try:
        cfg = parse_config(path, source=source, environ=os.environ)
        validate_config(cfg)
    except ConfigError as exc:
        add("config_load", False, str(exc), path=path)
        for name in ("state_db", "pid_lock", "healthz"):
            add(name, False, "skipped: config load failed")
        return {"healthy": False, "checks": checks}
    add("config_load", True, "configuration loaded", path=path)

    db_path = cfg.state_path
    if cfg.state.shared:
        add("state_db", *_shared_store_check(cfg))
    elif not os.path.exists(db_path):
        add("state_db", True, "database file does not exist yet (will be created on start)",
            path=db_path)
    else:
        try:
            from ductile.store.db import open_readonly

            conn = open_readonly(db_path)
            try:
                conn.execute("SELECT 1").fetchone()
            finally:
                conn.close()
            add("state_db", True, "database is readable", path=db_path)
        except Exception as exc:  # noqa: BLE001 - any open failure is the finding
            add("state_db", False, f"open failed: {exc}", path=db_path)

    lock = lock_path_for(cfg.state_path)
    running_pid: int | None = None
    # Healthy means "a gateway holds the lock and serves": a stopped gateway is DEGRADED.
    pid = read_pid(lock) if os.path.exists(lock) else None
    if pid is not None and pid_alive(pid):
        running_pid = pid
        add("pid_lock", True, f"gateway running (pid {pid})", path=lock, active_pid=pid)
    elif not os.path.exists(lock):
        add("pid_lock", False, "no PID lock file: the gateway is not running", path=lock)
    elif pid is None:
        add("pid_lock", False, "lock file empty or invalid: the gateway is not running",
            path=lock)
    else:
        add("pid_lock", False, f"stale lock file (pid {pid} not running): the gateway is not "
            "running", path=lock)

    if not cfg.api.enabled:
        add("healthz", True, "API disabled (posture closed); nothing to probe")
    elif not cfg.api.tokens:
        # No API token configured: a gateway with a vault boots management-only and answers
        # /healthz on its unix socket only.
        from ductile.planes.api.management import management_socket_path

        sock = management_socket_path(cfg.api.management_socket, cfg.state_path)
        try:
            import httpx

            transport = httpx.HTTPTransport(uds=sock)
            with httpx.Client(transport=transport, timeout=1.0) as client:
                resp = client.get("http://management/healthz")
            body = resp.json()
            add("healthz", resp.status_code == 200,
                f"{body.get('status')} (posture {body.get('posture')}: mint an API token over "
                "the management socket, reference it, then ductile system reload)", path=sock)
            add_privsep(add, body)
        except Exception as exc:  # noqa: BLE001 - an unreachable socket is the finding
            state = "the gateway is not running" if running_pid is None else type(exc).__name__
            add("healthz", False, f"no management socket answering: {state}", path=sock)
    else:
        from ductile.cli.common import api_base, api_key, api_verify

        url = api_base(cfg, None) + "/healthz"  # https:// when api.tls is set
        # /healthz gives its details (queue depth, uptime, privsep) only to a valid token.
        token = api_key(cfg, None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            import httpx

            resp = httpx.get(url, headers=headers, timeout=1.0, verify=api_verify(cfg, None))
            body = resp.json()
            add("healthz", resp.status_code == 200, _healthz_detail(resp.status_code, body),
                path=url)
            add_privsep(add, body)
            add_cluster(add, body)
        except Exception as exc:  # noqa: BLE001 - an unreachable gateway is the finding
            detail = "no live gateway reachable"
            if running_pid is None:
                add("healthz", False, f"{detail}: the gateway is not running", path=url)
            else:
                add("healthz", False, f"{detail} ({type(exc).__name__})", path=url)
    return {"healthy": all(c["ok"] for c in checks), "checks": checks}


def _healthz_detail(status: int, body: dict[str, Any]) -> str:
    """One line for the healthz check: the details when the token was accepted, what to do
    when it was not (the gateway answers the probe, but not to this token), else the basics."""
    if status == 401:
        return (f"the gateway answers, but refused the API token ({body.get('error')}); set "
                "DUCTILE_API_KEY to a configured token")
    if "queue_depth" not in body:
        return (f"{body.get('status')} (posture {body.get('posture')}; no API token found for "
                "the details: set DUCTILE_API_KEY)")
    pressure = body.get("backpressure")
    bound = ""
    if isinstance(pressure, dict):
        bound = (f", outstanding {pressure.get('outstanding')} of "
                 f"{pressure.get('max_outstanding_jobs')}")
        if pressure.get("refused_total"):
            bound += f", {pressure.get('refused_total')} refused (backpressure)"
    return (f"{body.get('status')} (posture {body.get('posture')}, queue depth "
            f"{body.get('queue_depth')}{bound}, uptime {body.get('uptime_seconds')}s)")


def _shared_store_check(cfg: Any) -> tuple[bool, str]:
    """The shared PostgreSQL store, opened read-only with the vault's password (the same
    reader the offline verbs use): (ok, what was found)."""
    from ductile.cli.store import open_reader
    from ductile.errors import StoreError

    def refuse(reason: str) -> NoReturn:
        raise StoreError(reason)

    try:
        with open_reader(cfg, on_error=refuse) as reader:
            reader.read(lambda conn: conn.execute("SELECT 1").fetchone())
            label = reader.label
    except StoreError as exc:
        return False, f"shared PostgreSQL store: {exc}"
    return True, f"shared PostgreSQL store {label} answers (ductile system nodes lists its gateways)"
