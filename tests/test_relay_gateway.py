"""The relay end to end: two real gateways on loopback, each with its own vault.

A pipeline on A relays to B, whose pipeline runs a plugin, and the two ledgers name each
other's ids; a B that is down while A relays gets every event once when it comes back; a
captured envelope replayed is refused; Ed25519 peers work and refuse an HMAC signature; the CLI
sends one event.
"""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from ductile.relay.envelope import build_envelope, public_key_for, signed_headers
from support.gateway import READ_TOKEN, TOKEN, Gateway, free_port, make_vault, raw_exchange
from support.gateway import run_cli, write_config

SECRET = "relay-shared-secret-0123456789"


def _receiver(directory: Path, port: int, *, peer: dict[str, Any] | None = None,
              secrets: dict[str, str] | None = None) -> Path:
    make_vault(directory, {"api-token": TOKEN, "read-token": READ_TOKEN,
                           **(secrets if secrets is not None else {"from-a": SECRET})})
    write_config(directory, port=port, service={"name": "gw-b"}, extra={
        "remote_ingress": {"peers": [peer or {"name": "gw-a", "secret_ref": "from-a"}]},
        "pipelines": [{"name": "on-backup", "on": "backup.ready",
                       "steps": [{"id": "note", "uses": "echo"}]}]})
    return directory


def _sender(directory: Path, port: int, receiver_port: int, *,
            instance: dict[str, Any] | None = None, secret: str = SECRET) -> Path:
    make_vault(directory, {"api-token": TOKEN, "read-token": READ_TOKEN, "to-b": secret})
    write_config(directory, port=port, service={"name": "gw-a"}, extra={
        # No ingress_path: the sender derives B's default path for it, /ingest/peer/gw-a.
        "instances": [{"name": "gw-b", "base_url": f"http://127.0.0.1:{receiver_port}",
                       "secret_ref": "to-b",
                       "retry": {"max_attempts": 40, "backoff_base": "0.2s"},
                       **(instance or {})}],
        "pipelines": [{"name": "ship", "on": "ship.requested", "steps": [
            {"id": "out", "relay": {"to": "gw-b", "event": "backup.ready",
                                    "with": {"n": "payload.n"},
                                    "dedupe_key": "backup-{payload.n}"}}]}]})
    return directory


def _jobs(gw: Gateway, **params: Any) -> list[dict[str, Any]]:
    resp = gw.get("/jobs", params={"limit": 200, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()["jobs"]


def _wait(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _obj(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _relay_jobs(gw: Gateway) -> list[dict[str, Any]]:
    return [j for j in _jobs(gw) if j["plugin"] == "core.relay"]


def test_a_pipeline_relays_to_a_peer_and_both_ledgers_link(tmp_path: Path) -> None:
    pb, pa = free_port(), free_port()
    b = Gateway(_receiver(tmp_path / "b", pb), pb).start()
    a = Gateway(_sender(tmp_path / "a", pa, pb), pa).start()
    try:
        run = a.post("/pipeline/ship", {"payload": {"n": 7}})
        assert run.status_code in (200, 202), run.text
        relay_job = _wait(lambda: [j for j in _relay_jobs(a) if j["status"] == "succeeded"])[0]
        shown_a = a.get(f"/job/{relay_job['job_id']}").json()
        accepted = _obj(shown_a["result"])["relay"]["accepted"]
        assert accepted["status"] == "accepted" and accepted["peer"] == "gw-a"
        b_job = _wait(lambda: [j for j in _jobs(b) if j["job_id"] == accepted["job_id"]
                               and j["status"] == "succeeded"])[0]
        assert b_job["plugin"] == "echo"
        shown = run_cli("job", "inspect", b_job["job_id"], "--json", "--config",
                        str(tmp_path / "b"))
        shown_b = json.loads(shown.stdout)
        assert shown_b["submitted_by"] == "relay:gw-a", shown_b
        event = _obj(shown_b["payload"])
        assert event["type"] == "backup.ready" and event["payload"]["n"] == 7
        assert event["origin"]["instance"] == "gw-a"
        assert event["origin"]["job_id"] == relay_job["job_id"]
        assert event["event_id"] == accepted["receiver_event_id"]
        inspect_a = run_cli("job", "inspect", relay_job["job_id"], "--config", str(tmp_path / "a"))
        assert accepted["job_id"] in inspect_a.stdout
        inspect_b = run_cli("job", "inspect", b_job["job_id"], "--config", str(tmp_path / "b"))
        assert relay_job["job_id"] in inspect_b.stdout and "relay:gw-a" in inspect_b.stdout
        # A restarted receiver: A's pooled connection to it is gone, and the next event still
        # arrives (a new connection, or a retry).
        b.stop()
        b = Gateway(tmp_path / "b", pb).start()
        assert a.post("/pipeline/ship", {"payload": {"n": 8}}).status_code in (200, 202)
        _wait(lambda: len([j for j in _relay_jobs(a) if j["status"] == "succeeded"]) == 2)
        _wait(lambda: len([j for j in _jobs(b) if j["plugin"] == "echo"
                           and j["status"] == "succeeded"]) == 2)
    finally:
        a.stop()
        b.stop()


def test_a_receiver_that_is_down_gets_every_event_once_when_it_returns(tmp_path: Path) -> None:
    pb, pa = free_port(), free_port()
    receiver = _receiver(tmp_path / "b", pb)
    a = Gateway(_sender(tmp_path / "a", pa, pb), pa).start()
    b = Gateway(receiver, pb)
    try:
        for n in range(20):
            assert a.post("/pipeline/ship", {"payload": {"n": n}}).status_code in (200, 202)
        _wait(lambda: len(_relay_jobs(a)) == 20 and all(
            j["attempt"] >= 2 for j in _relay_jobs(a)))
        b.start()
        done = _wait(lambda: (jobs := _relay_jobs(a)) and all(
            j["status"] == "succeeded" for j in jobs) and jobs, timeout=60)
        assert len(done) == 20
        arrived = _wait(lambda: (jobs := [j for j in _jobs(b) if j["plugin"] == "echo"])
                        and len(jobs) >= 20 and jobs, timeout=30)
        time.sleep(0.5)
        arrived = [j for j in _jobs(b) if j["plugin"] == "echo"]
        assert len(arrived) == 20
        listed = run_cli("job", "list", "--json", "--plugin", "echo", "--config", str(receiver))
        assert listed.returncode == 0, listed.stderr
        jobs = json.loads(listed.stdout)["jobs"]
        assert len(jobs) == 20 and {j["submitted_by"] for j in jobs} == {"relay:gw-a"}
    finally:
        a.stop()
        if b.proc is not None:
            b.stop()


def test_a_captured_envelope_replayed_is_refused(tmp_path: Path) -> None:
    pb = free_port()
    b = Gateway(_receiver(tmp_path / "b", pb), pb).start()
    try:
        path = "/ingest/peer/gw-a"
        body = build_envelope("backup.ready", {"n": 1},
                              origin={"instance": "gw-a", "event_id": "e-1"})
        headers = signed_headers("hmac", SECRET.encode(), sender="gw-a", method="POST",
                                 path=path, body=body, now=datetime.now(timezone.utc))
        first = httpx.post(b.url + path, content=body, headers=headers)
        assert first.status_code == 202, first.text
        again = httpx.post(b.url + path, content=body, headers=headers)
        assert again.status_code == 409
        assert again.json()["error"] == "relay envelope replayed"
        assert again.json()["receiver_event_id"] == first.json()["receiver_event_id"]
        forged = httpx.post(b.url + path, content=body.replace(b'"n":1', b'"n":2'),
                            headers=headers)
        assert (forged.status_code, forged.json()) == (403, {"error": "forbidden"})
        unknown = httpx.post(b.url + "/ingest/peer/stranger", content=body, headers=headers)
        assert (unknown.status_code, unknown.json()) == (403, {"error": "unknown relay peer"})
        resent = signed_headers("hmac", SECRET.encode(), sender="gw-a", method="POST",
                                path=path, body=body, now=datetime.now(timezone.utc))
        same_event = httpx.post(b.url + path, content=body, headers=resent)
        assert same_event.status_code == 202  # signed anew: not a replay; deduplicated instead
        assert same_event.json()["job_id"] == first.json()["job_id"]
        assert b.get("/healthz").status_code == 200
    finally:
        b.stop()


def test_ed25519_peers_relay_and_refuse_an_hmac_signature(tmp_path: Path) -> None:
    seed = os.urandom(32)
    public = base64.b64encode(public_key_for(seed)).decode()
    pb, pa = free_port(), free_port()
    receiver = _receiver(tmp_path / "b", pb, secrets={}, peer={
        "name": "gw-a", "signing": "ed25519", "public_key": public})
    b = Gateway(receiver, pb).start()
    a = Gateway(_sender(tmp_path / "a", pa, pb, instance={"signing": "ed25519"},
                        secret=base64.b64encode(seed).decode()), pa).start()
    try:
        assert a.post("/pipeline/ship", {"payload": {"n": 3}}).status_code in (200, 202)
        _wait(lambda: [j for j in _relay_jobs(a) if j["status"] == "succeeded"])
        _wait(lambda: [j for j in _jobs(b) if j["plugin"] == "echo"])
        path = "/ingest/peer/gw-a"
        body = build_envelope("backup.ready", {"n": 4}, origin={"instance": "gw-a"})
        hmac_headers = signed_headers("hmac", b"anything", sender="gw-a", method="POST",
                                      path=path, body=body, now=datetime.now(timezone.utc))
        refused = httpx.post(b.url + path, content=body, headers=hmac_headers)
        assert (refused.status_code, refused.json()) == (403, {"error": "forbidden"})
    finally:
        a.stop()
        b.stop()


def test_relay_send_from_the_cli(tmp_path: Path) -> None:
    pb = free_port()
    b = Gateway(_receiver(tmp_path / "b", pb), pb).start()
    try:
        sender = _sender(tmp_path / "a", free_port(), pb)
        done = run_cli("relay", "send", "gw-b", "--event", "backup.ready", "--payload",
                       '{"n": 9}', "--config", str(sender))
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "Relayed backup.ready to gw-b"
        assert lines[1].startswith("Receiver event id: ")
        assert lines[2].startswith("Receiver job id: ")
        missing = run_cli("relay", "send", "gw-b", "--config", str(sender))
        assert missing.returncode == 1 and "Error: --event is required" in missing.stderr
        unknown = run_cli("relay", "send", "nowhere", "--event", "x.y", "--config", str(sender))
        assert 'relay instance "nowhere" not configured' in unknown.stderr
    finally:
        b.stop()


def test_a_missing_relay_secret_refuses_the_boot(tmp_path: Path) -> None:
    pa = free_port()
    cfg = _sender(tmp_path / "a", pa, free_port())
    text = (cfg / "config.yaml").read_text().replace("secret_ref: to-b", "secret_ref: nope")
    (cfg / "config.yaml").write_text(text)
    gw = Gateway(cfg, pa).start(wait=False)
    assert gw.wait_exit() == 78
    refusal = [r for r in gw.log_records() if r.get("gate") == "secret_refs_resolved"]
    assert refusal and "'nope' not found in the vault" in json.dumps(refusal)


def test_bad_input_gets_its_status_and_the_receiver_keeps_serving(tmp_path: Path) -> None:
    pb = free_port()
    receiver = _receiver(tmp_path / "b", pb)
    text = (receiver / "config.yaml").read_text().replace(
        "remote_ingress:\n", "remote_ingress:\n  max_body_size: 256\n")
    (receiver / "config.yaml").write_text(text)
    b = Gateway(receiver, pb).start()
    path = "/ingest/peer/gw-a"

    def signed(body: bytes, **changes: Any) -> dict[str, str]:
        headers = signed_headers("hmac", SECRET.encode(), sender="gw-a", method="POST",
                                 path=path, body=body, now=datetime.now(timezone.utc))
        headers.update(changes)
        return headers

    try:
        big = build_envelope("backup.ready", {"blob": "x" * 400}, origin={})
        too_big = httpx.post(b.url + path, content=big, headers=signed(big))
        assert (too_big.status_code, too_big.json()) == (413, {"error": "relay payload too large"})
        junk = b"not json at all"
        bad = httpx.post(b.url + path, content=junk, headers=signed(junk))
        assert (bad.status_code, bad.json()) == (400, {"error": "invalid JSON body"})
        body = build_envelope("backup.ready", {}, origin={})
        stale = signed(body, **{"X-Ductile-Timestamp": "2001-01-01T00:00:00Z"})
        old = httpx.post(b.url + path, content=body, headers=stale)
        assert (old.status_code, old.json()) == (
            403, {"error": "relay timestamp outside allowed clock skew"})
        other = build_envelope("not.accepted", {}, origin={"instance": "gw-c"})
        mismatch = httpx.post(b.url + path, content=other, headers=signed(other))
        assert (mismatch.status_code, mismatch.json()) == (
            403, {"error": "origin instance mismatch"})
        # A sender that announces a body and never sends it holds one task, then gets 408.
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in signed(body).items()
                          if k != "Content-Type")
                + f"Content-Length: {len(body)}\r\n\r\n").encode()
        answer = raw_exchange(pb, head + body[:5], timeout=15)
        assert b" 408 " in answer.split(b"\r\n", 1)[0], answer[:200]
        assert b.get("/healthz").status_code == 200
        assert [j for j in _jobs(b) if j["plugin"] == "echo"] == []  # nothing was enqueued
    finally:
        b.stop()
