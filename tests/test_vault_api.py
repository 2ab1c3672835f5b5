"""The `/vault/*` routes and the management socket: admin token only, value-free, audited."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from ductile.errors import ConfigError
from ductile.planes.api.management import (bind_management_socket, create_management_app,
                                           management_socket_path)
from ductile.store import Database
from ductile.store.audit import AuditEvent, AuditWriter, list_events
from ductile.vault.keys import keygen
from ductile.vault.owner import VaultOwner

SECRET_VALUE = "manual-secret-value-do-not-leak-7f3a"


class Recorder:
    """An audit sink that keeps events in memory (the real writer is tested below)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def __call__(self, event: AuditEvent) -> None:
        self.events.append(event)


def make_owner(tmp_path: Path) -> tuple[VaultOwner, str]:
    key = keygen(str(tmp_path / "vault.key"))
    return VaultOwner.create(str(tmp_path / "vault.nacl"), key)


def health() -> dict[str, Any]:
    return {"status": "ok", "posture": "management-only"}


async def post(client: Any, path: str, body: Any, token: str | None) -> tuple[int, dict, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(path, data=data, headers=headers)
    text = await response.get_data(as_text=True)
    return response.status_code, json.loads(text), text


async def test_admin_token_drives_every_route_with_value_free_answers(tmp_path: Path) -> None:
    owner, admin = make_owner(tmp_path)
    audit = Recorder()
    app = create_management_app(lambda: owner, audit, health)
    client = app.test_client()
    calls = [
        ("/vault/principal", {"name": "echo", "kind": "plugin"}, {"status": "principal_registered"}),
        ("/vault/secret", {"name": "manual", "value": SECRET_VALUE,
                           "authorized_principals": ["echo"]}, {"status": "set"}),
        ("/vault/secret", {"name": "auto", "value": "", "pattern": "auto",
                           "authorized_principals": ["echo"]}, {"status": "set"}),
        ("/vault/secret/roll", {"name": "auto"}, {"status": "rolled"}),
        ("/vault/principal/roll", {"name": "echo"}, {"rolled": ["auto"], "skipped": ["manual"]}),
        ("/vault/secret/revoke", {"name": "manual"}, {"status": "revoked"}),
        ("/vault/principal/revoke", {"name": "echo"}, {"status": "principal_revoked"}),
        ("/vault/principal/purge", {"name": "echo"}, {"status": "principal_purged"}),
    ]
    texts = []
    for path, body, expected in calls:
        status, answer, text = await post(client, path, body, admin)
        assert status == 200, (path, answer)
        assert answer == {"name": body["name"], **expected}
        texts.append(text)
    assert "echo" not in owner.model.principals
    assert [e.op for e in audit.events] == ["register-principal", "set", "set", "roll",
                                            "roll-principal", "revoke", "revoke-principal",
                                            "purge-principal"]
    assert all(e.actor == "core-admin-token" and e.outcome == "ok" for e in audit.events)
    assert_no_leak(texts + [repr(audit.events)], [SECRET_VALUE, admin])


async def test_api_tokens_and_wrong_tokens_are_refused(tmp_path: Path) -> None:
    owner, admin = make_owner(tmp_path)
    audit = Recorder()
    client = create_management_app(lambda: owner, audit, health).test_client()
    body = {"name": "k", "value": SECRET_VALUE}
    status, answer, _ = await post(client, "/vault/secret", body, None)
    assert status == 401 and "Authorization" in answer["error"]
    status, answer, _ = await post(client, "/vault/secret", body, "an-api-token-with-star-scope")
    assert (status, answer) == (401, {"error": "invalid vault admin token"})
    response = await client.post("/vault/secret", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Basic " + admin})
    assert response.status_code == 401
    assert "k" not in owner.model.secrets
    assert [e.outcome for e in audit.events] == ["denied"] * 3


async def test_no_vault_is_503_and_bad_bodies_are_400(tmp_path: Path) -> None:
    owner, admin = make_owner(tmp_path)
    current: list[VaultOwner | None] = [None]
    client = create_management_app(lambda: current[0], Recorder(), health).test_client()
    status, answer, _ = await post(client, "/vault/secret", {"name": "k"}, admin)
    assert (status, answer) == (503, {"error": "vault not available"})
    current[0] = owner
    status, answer, _ = await post(client, "/vault/secret", b"{not json", admin)
    assert (status, answer) == (400, {"error": "invalid JSON body"})
    status, answer, _ = await post(client, "/vault/secret", {"name": "k", "valu": "x"}, admin)
    assert status == 400 and "unknown field(s) in body: valu" in answer["error"]
    status, answer, _ = await post(client, "/vault/secret",
                                   {"name": "core-admin-token", "value": SECRET_VALUE}, admin)
    assert status == 400 and "reserved" in answer["error"]
    await post(client, "/vault/secret", {"name": "k", "value": SECRET_VALUE}, admin)
    status, answer, text = await post(client, "/vault/secret",
                                      {"name": "k", "value": SECRET_VALUE + "x"}, admin)
    assert status == 400 and "roll-only" in answer["error"]
    assert_no_leak([text], [SECRET_VALUE])


async def test_management_app_serves_only_healthz_and_vault(tmp_path: Path) -> None:
    owner, _admin = make_owner(tmp_path)
    client = create_management_app(lambda: owner, Recorder(), health).test_client()
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json())["posture"] == "management-only"
    for method, path in (("GET", "/plugins"), ("POST", "/system/reload"), ("GET", "/jobs"),
                         ("POST", "/plugins/echo/run")):
        response = await client.open(path, method=method)
        assert response.status_code == 404
        assert "only GET /healthz and POST /vault/*" in (await response.get_json())["error"]
    response = await client.get("/vault/secret")
    assert response.status_code == 405 and "error" in await response.get_json()
    assert response.headers["Allow"] == "POST"
    response = await client.delete("/healthz")
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_admin_bearer_scheme_is_case_insensitive(tmp_path: Path, scheme: str) -> None:
    owner, admin = make_owner(tmp_path)
    client = create_management_app(lambda: owner, Recorder(), health).test_client()
    response = await client.post("/vault/secret", data=b'{"name": "k", "value": "v"}',
                                 headers={"Authorization": f"{scheme} {admin}"})
    assert response.status_code == 200, await response.get_data(as_text=True)


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"name": "k", "value": "abc\\ud800"}',
     "invalid JSON body: field value contains a lone surrogate, which is not valid Unicode"),
    (b'{"name": "k", "value": 1e999}',
     "invalid JSON body: field value holds an out-of-range number; numbers must be finite"),
    (b'{"name": ' + b"[" * 100 + b"]" * 100 + b"}", "at most 64 levels"),
])
async def test_hostile_vault_bodies_are_400_without_echoing_the_value(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    owner, admin = make_owner(tmp_path)
    client = create_management_app(lambda: owner, Recorder(), health).test_client()
    status, answer, text = await post(client, "/vault/secret", raw, admin)
    assert status == 400 and message in answer["error"]
    assert "abc" not in text and "1e999" not in text and "d800" not in text


async def test_audit_writer_appends_rows_to_the_real_database(tmp_path: Path) -> None:
    owner, admin = make_owner(tmp_path)
    db = await Database.open(str(tmp_path / "data" / "state.db"))
    try:
        client = create_management_app(lambda: owner, AuditWriter(db), health).test_client()
        await post(client, "/vault/secret", {"name": "k", "value": SECRET_VALUE}, admin)
        await post(client, "/vault/secret", {"name": "k", "value": SECRET_VALUE}, "wrong")
        rows = await db.read(lambda conn: list_events(conn))
        dump = await db.read(lambda conn: [tuple(r) for r in conn.execute(
            "SELECT * FROM vault_audit")])
    finally:
        await db.close()
    assert [(r.actor, r.op, r.target, r.outcome) for r in rows] == [
        ("anonymous", "set", "", "denied"), ("core-admin-token", "set", "k", "ok")]
    assert_no_leak([repr(dump)], [SECRET_VALUE, admin])


# -- the socket ------------------------------------------------------------------------------


def test_management_socket_path_defaults_beside_the_state_database(tmp_path: Path) -> None:
    assert management_socket_path("", str(tmp_path / "data" / "state.db")) == \
        str(tmp_path / "data" / "vault-admin.sock")
    assert management_socket_path(str(tmp_path / "x.sock"), "ignored") == str(tmp_path / "x.sock")


def test_bind_checks_every_refusal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="management socket path is empty"):
        bind_management_socket("")
    long_path = "/tmp/" + "x" * 100
    with pytest.raises(ConfigError, match=r"too long \(105 bytes, max 103\)"):
        bind_management_socket(long_path)
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not a socket .* refusing to remove"):
        bind_management_socket(str(plain))
    assert plain.read_text() == "keep me"
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(ConfigError, match="group/other-writable .* without the sticky bit"):
        bind_management_socket(str(loose / "s.sock"))
    os.chmod(loose, 0o1777)  # sticky, like /tmp: allowed
    bind_management_socket(str(loose / "s.sock")).close()


def test_bind_replaces_a_stale_socket_with_a_0600_one_in_a_0700_dir(tmp_path: Path) -> None:
    path = tmp_path / "run" / "vault-admin.sock"
    first = bind_management_socket(str(path))
    first.close()  # the socket file stays behind, like after a crash
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    second = bind_management_socket(str(path))
    try:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert sorted(os.listdir(path.parent)) == ["vault-admin.sock"]
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
    finally:
        second.close()


async def test_served_over_a_real_unix_socket_with_hypercorn(tmp_path: Path) -> None:
    owner, admin = make_owner(tmp_path)
    path = str(tmp_path / "run" / "vault-admin.sock")
    sock = bind_management_socket(path)
    app = create_management_app(lambda: owner, Recorder(), health)
    config = HyperConfig()
    # hypercorn closes the fd it serves; the supervisor hands it a dup, and so does this test.
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait,
                                                          task_status=task_status))
            transport = httpx.AsyncHTTPTransport(uds=path)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
                health_answer = await c.get("/healthz")
                minted = await c.post("/vault/secret", json={"name": "api-token",
                                                             "pattern": "auto"},
                                      headers={"Authorization": f"Bearer {admin}"})
                rolled = await c.post("/vault/secret/roll", json={"name": "api-token"},
                                      headers={"Authorization": f"Bearer {admin}"})
                refused = await c.get("/plugins")
            stop.set()
    finally:
        sock.close()
    assert health_answer.json()["posture"] == "management-only"
    assert minted.json() == {"name": "api-token", "status": "set"}
    assert rolled.json() == {"name": "api-token", "status": "rolled"}
    assert refused.status_code == 404
    token = owner.resolved_secrets().values["api-token"]
    assert len(token) == 43 and token not in rolled.text


def assert_no_leak(haystacks: list[str], needles: list[str]) -> None:
    for hay in haystacks:
        for needle in needles:
            assert needle not in hay
