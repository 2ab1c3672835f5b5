"""`ductile system nodes`: the gateways sharing the running gateway's store.

It asks the running gateway (`GET /system/nodes`, scope system:ro) rather than the database:
its answer marks which node answered and already carries the ages by the database's clock. On a SQLite store the gateway is alone and says so; that is an answer, not
a failure (exit 0).
"""

from __future__ import annotations

from typing import Any

import click

from ductile.cli.common import emit_json, fail, gateway_target

#: What a SQLite gateway's answer is printed as.
SINGLE_GATEWAY_TEXT = "this gateway's store is SQLite: a single gateway, no cluster"
COLUMNS = ("NODE", "INCARNATION", "STATUS", "HEARTBEAT", "HOST", "PID", "VERSION", "LEADER")


def format_age(seconds: float) -> str:
    """A heartbeat's age as an operator reads it: `0.4s ago`, `12s ago`, `5m03s ago`."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s ago"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s ago"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s ago"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m ago"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h ago"


def render_nodes(answer: dict[str, Any]) -> str:
    """The answer of GET /system/nodes as text: a summary line, then one row per node, the
    leader marked `*` and this gateway's own row marked `(this)`."""
    if answer.get("backend") != "postgresql":
        return SINGLE_GATEWAY_TEXT
    me = answer.get("node") or {}
    lead = answer.get("leader")
    mine = (me.get("node_id"), me.get("incarnation"))
    led = (lead.get("node_id"), lead.get("incarnation")) if lead else None
    rows = []
    for node in answer.get("nodes", []):
        key = (node["node_id"], node["incarnation"])
        name = node["node_id"] + (" (this)" if key == mine else "")
        rows.append((name, str(node["incarnation"]), node["status"],
                     format_age(float(node["heartbeat_age_s"])), node["hostname"],
                     str(node["pid"]), node["version"], "*" if key == led else ""))
    alive = sum(1 for node in answer.get("nodes", []) if node["status"] == "alive")
    leader_text = (f"leader {lead['node_id']} (incarnation {lead['incarnation']}, term "
                   f"{lead['term']})" if lead else "no scheduler leader")
    lines = [f"Cluster (postgresql): {alive} alive of {len(rows)} node(s); {leader_text}; "
             f"this gateway is {me.get('node_id')} (incarnation {me.get('incarnation')})"]
    widths = [max(len(col), *(len(row[i]) for row in rows)) if rows else len(col)
              for i, col in enumerate(COLUMNS)]
    for row in (COLUMNS, *rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


@click.command()
@click.option("--config", "config_path", metavar="PATH",
              help="Config file or directory: the gateway is its api.listen, over TLS when "
                   "api.tls is set (else $DUCTILE_CONFIG_DIR, ~/.config/ductile, /etc/ductile).")
@click.option("--api-url", default=None, metavar="URL",
              help="The gateway's API (else api.listen from the config).")
@click.option("--api-key", "--token", "api_key_opt", default=None, metavar="TOKEN",
              help="A token with system:ro (else $DUCTILE_API_KEY, the vault, the api-token "
                   "file).")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's answer as JSON.")
def nodes(config_path: str | None, api_url: str | None, api_key_opt: str | None,
          as_json: bool) -> None:
    """The gateways sharing the running gateway's PostgreSQL store: each node's incarnation,
    status (alive, stopped, dead), heartbeat age, host, pid, version, and the scheduler's
    leader. On SQLite: a single gateway, no cluster."""
    import httpx

    target = gateway_target(config_path, api_url, api_key_opt)
    url = f"{target.base}/system/nodes"
    try:
        resp = httpx.get(url, headers=target.headers, verify=target.verify, timeout=15.0)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {url}: {exc}; is it running "
             "(ductile system status)?")
    try:
        body = resp.json()
    except ValueError:
        body = {"error": resp.text[:200]}
    error = body.get("error", body) if isinstance(body, dict) else body
    if resp.status_code in (401, 403):
        fail(f"the gateway refused the token on GET /system/nodes ({resp.status_code}): "
             f"{error}; system nodes needs a token with system:ro")
    if resp.status_code != 200 or not isinstance(body, dict):
        fail(f"GET /system/nodes answered {resp.status_code}: {error}")
    if as_json:
        emit_json(body)
    else:
        click.echo(render_nodes(body))
