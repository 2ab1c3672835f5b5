"""Webhook plane throughput: verified deliveries accepted (202) per second.

The server is the real thing in this process: `create_webhook_app` under hypercorn on
127.0.0.1, HMAC-SHA256 (github scheme) on every body, one durable enqueue per delivery on a
real SQLite file (group commit), a dedupe header on every request. The load comes from a
separate Python process (so the sender does not share the server's core) with CONNECTIONS
keep-alive connections, each sending a distinct signed body and waiting for the answer.

Goal (issue 6): at least 500 verified requests/s accepted.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio
from hypercorn.trio import serve

from support.bench import report
from ductile.config.webhooks import WebhookEndpoint
from ductile.logs import Logger
from ductile.planes.webhook.app import create_webhook_app
from ductile.planes.webhook.server import webhook_hypercorn_config
from ductile.store import Database, Queue

REQUESTS = 4000
CONNECTIONS = 8
SECRET = b"bench-secret"

_LOAD = r"""
import hashlib, hmac, http.client, json, sys, threading, time
port, total, connections = (int(arg) for arg in sys.argv[1:4])
secret = sys.argv[4].encode()
lock = threading.Lock()
state = {"next": 0}
statuses = {}

def worker():
    conn = http.client.HTTPConnection("127.0.0.1", port)
    local = {}
    while True:
        with lock:
            i = state["next"]
            state["next"] += 1
        if i >= total:
            break
        event = {"action": "opened", "number": i, "repository": {"full_name": "o/r"}}
        body = json.dumps(event).encode()
        sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        conn.request("POST", "/webhook/github", body=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sig,
            "X-GitHub-Delivery": f"delivery-{i}"})
        response = conn.getresponse()
        response.read()
        local[response.status] = local.get(response.status, 0) + 1
    conn.close()
    with lock:
        for k, v in local.items():
            statuses[k] = statuses.get(k, 0) + v

threads = [threading.Thread(target=worker) for _ in range(connections)]
start = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - start
print(json.dumps({"elapsed": elapsed, "statuses": statuses}))
"""


async def test_bench_webhook_accepted_per_second(tmp_path: Path) -> None:
    db = await Database.open(str(tmp_path / "bench.db"))
    queue = Queue(db, snapshot_id=lambda: None, dedupe_ttl=0)
    endpoint = WebhookEndpoint(path="/webhook/github", plugin="github-handler", secret_ref="gh",
                               signature_header="X-Hub-Signature-256",
                               dedupe_header="X-GitHub-Delivery")
    # The gateway logs one line per request; keep that cost in the measurement.
    app = create_webhook_app([endpoint], {endpoint.path: SECRET}, queue.enqueue,
                             Logger("webhook", stream=io.StringIO()))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    port = listener.getsockname()[1]
    config = webhook_hypercorn_config(f"fd://{os.dup(listener.fileno())}", graceful_timeout=1)
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            command = [sys.executable, "-c", _LOAD, str(port), str(REQUESTS), str(CONNECTIONS),
                       SECRET.decode()]
            done = await trio.to_thread.run_sync(
                partial(subprocess.run, command, capture_output=True, text=True, check=True))
            stop.set()
        result = json.loads(done.stdout)
        accepted = result["statuses"].get("202", 0)
        assert accepted == REQUESTS, result
        assert (await queue.queue_depth()) == REQUESTS
        commits, writes = db.write_stats()
    finally:
        listener.close()
        await db.close()
    rate = accepted / result["elapsed"]
    report("webhook accepted", rate, "requests/s", ">= 500",
           f"{REQUESTS} signed deliveries over {CONNECTIONS} connections, "
           f"{writes / max(commits, 1):.1f} enqueues per commit")
