"""A gateway with one route of every kind mounted, for the tests of GET /openapi.json: the
relay receiver (remote_ingress with one peer), a pipeline, and a vault whose admin token the
test knows."""

from __future__ import annotations

from pathlib import Path

from support.gateway import READ_TOKEN, TOKEN, make_vault, write_config

PEER = "gw-a"
PIPELINE = "note"
RELAY_PATH = f"/ingest/peer/{PEER}"


def full_config(directory: Path, port: int) -> str:
    """Write the config into `directory`; returns the vault admin token."""
    directory.mkdir(parents=True, exist_ok=True)
    admin = make_vault(directory, {"api-token": TOKEN, "read-token": READ_TOKEN,
                                   "from-a": "relay-shared-secret-0123456789"})
    write_config(directory, port=port, extra={
        "remote_ingress": {"peers": [{"name": PEER, "secret_ref": "from-a"}]},
        "pipelines": [{"name": PIPELINE, "on": "note.requested",
                       "steps": [{"id": "say", "uses": "echo"}]}],
    })
    return admin
