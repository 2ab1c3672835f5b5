"""The `/vault/*` management routes: write-only, value-free, admin-token only.

They are mounted on the public app in the gateway posture and on the management app
(unix socket) in the management-only posture. Both call `register_vault_routes`.

- Auth: `Authorization: Bearer <vault admin token>` (the scheme case-insensitive), compared in
  constant time with the vault's `core-admin-token`. API tokens, even `*`, are not consulted:
  they cannot write the vault.
- No vault owner: 503 `vault not available`. Missing bearer: 401. Wrong token: 401
  `invalid vault admin token`. Bad JSON: 400 `invalid JSON body`. A refused operation: 400 with
  the vault's message. Success: 200 with names and a status, never a value.
- Every answer after the vault check is audited (`ok` or `denied`), values never included.

Body parsing is pure (`parse_vault_body`, JSON read by `ductile.jsonbody`) and fuzzed in
property-tests/test_vault_fileformat.py.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request

from ductile.errors import (InputError, VaultError, VaultFileError, VaultModifiedExternally,
                            VaultPolicyError)
from ductile.planes.api.auth import bearer_credentials
from ductile.planes.api.kit import declare
from ductile.planes.api.openapi import STRING, Body, Operation, array, obj, ok, refused
from ductile.planes.api.schemas import VAULT_DONE
from ductile.planes.http import json_response
from ductile.jsonbody import JsonInputError, JsonSyntaxError, loads
from ductile.store.audit import Audit, AuditEvent

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ductile.vault.owner import VaultOwner

ADMIN_ACTOR = "core-admin-token"

#: route -> (audit op, fields allowed in its body)
ROUTES: dict[str, tuple[str, frozenset[str]]] = {
    "/vault/secret": ("set", frozenset({"name", "value", "authorized_principals", "pattern",
                                        "description"})),
    "/vault/secret/roll": ("roll", frozenset({"name", "value"})),
    "/vault/secret/revoke": ("revoke", frozenset({"name"})),
    "/vault/principal": ("register-principal", frozenset({"name", "kind"})),
    "/vault/principal/revoke": ("revoke-principal", frozenset({"name"})),
    "/vault/principal/purge": ("purge-principal", frozenset({"name"})),
    "/vault/principal/roll": ("roll-principal", frozenset({"name"})),
}

GetOwner = Callable[[], "VaultOwner | None"]


class VaultBodyError(InputError):
    """A body refused with 400; the message names the field (never echoes a value)."""


@dataclass(frozen=True)
class VaultRequest:
    """A parsed `/vault/*` body. `principals` None means "leave the grants"."""

    name: str
    value: str = ""
    principals: tuple[str, ...] | None = None
    pattern: str | None = None
    kind: str = "plugin"
    description: str | None = None

    def __repr__(self) -> str:
        return f"VaultRequest(name={self.name!r})"


def parse_vault_body(route: str, data: bytes) -> VaultRequest:
    """The body of `route` as a VaultRequest; VaultBodyError for anything else."""
    allowed = ROUTES[route][1]
    try:
        body = loads(data or b"")
    except JsonSyntaxError:
        raise VaultBodyError("invalid JSON body") from None
    except JsonInputError as exc:
        # Value-free: never echo any part of what was sent (it may be a secret).
        raise VaultBodyError(f"invalid JSON body: {exc.message(show_values=False)}") from None
    if not isinstance(body, dict):
        raise VaultBodyError("invalid JSON body: expected an object such as "
                             '{"name": "..."}')
    unknown = sorted(str(k) for k in set(body) - allowed)
    if unknown:
        raise VaultBodyError(f"unknown field(s) in body: {', '.join(unknown)[:200]}; allowed: "
                             f"{', '.join(sorted(allowed))}")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise VaultBodyError("field name is required (a non-empty string)")
    value = body.get("value", "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise VaultBodyError("field value must be a string")
    principals = body.get("authorized_principals")
    if principals is not None and (not isinstance(principals, list)
                                   or not all(isinstance(p, str) for p in principals)):
        raise VaultBodyError("field authorized_principals must be a list of principal names")
    pattern = body.get("pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise VaultBodyError("field pattern must be manual or auto")
    kind = body.get("kind", "plugin")
    if not isinstance(kind, str):
        raise VaultBodyError("field kind must be plugin, consumer or gateway")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise VaultBodyError("field description must be a string")
    return VaultRequest(name=name, value=value,
                        principals=None if principals is None else tuple(principals),
                        pattern=pattern or None, kind=kind, description=description)


def register_vault_routes(app: QuartTrio, get_owner: GetOwner, audit: Audit) -> None:
    """Add the seven `POST /vault/*` routes to `app`."""
    for route, (op, fields) in ROUTES.items():
        declare(app, _operation(route, op, fields), _handler(route, op, get_owner, audit))


def _operation(route: str, op: str, fields: frozenset[str]) -> Operation:
    """The declaration of one vault route: its body's fields, name required."""
    properties: dict[str, Any] = {name: {"type": "string"} for name in sorted(fields)}
    properties["name"] = {"type": "string", "minLength": 1}
    if "authorized_principals" in fields:
        properties["authorized_principals"] = array(STRING)
    if "pattern" in fields:
        properties["pattern"] = {"type": "string", "enum": ["manual", "auto"]}
    if "kind" in fields:
        properties["kind"] = {"type": "string", "enum": ["plugin", "consumer", "gateway"]}
    return Operation(
        "POST", route, f"vault: {op} (names and a status, never a value)", auth="vault-admin",
        tag="vault", body=Body(obj(("name",), closed=True, **properties), required=True),
        answers=(ok(200, "done", VAULT_DONE),
                 refused(400, "the body, or the operation, was refused; the message says why"),
                 refused(409, "the vault file changed under the gateway"),
                 refused(503, "no vault is loaded, or its file could not be written")))


def _handler(route: str, op: str, get_owner: GetOwner,
             audit: Audit) -> Callable[[], Coroutine[Any, Any, Response]]:
    async def handle() -> Response:
        owner = get_owner()
        if owner is None:
            return _respond({"error": "vault not available"}, 503)
        token = _bearer(request.headers.get("Authorization"))
        if token is None:
            await audit(AuditEvent("anonymous", op, "", "denied", "missing bearer token"))
            return _respond({"error": "missing or invalid Authorization header (send "
                                      "Authorization: Bearer <vault admin token>)"}, 401)
        if not owner.authenticate_admin(token):
            await audit(AuditEvent("anonymous", op, "", "denied", "invalid vault admin token"))
            return _respond({"error": "invalid vault admin token"}, 401)
        try:
            body = parse_vault_body(route, await request.get_data(as_text=False))
        except VaultBodyError as exc:
            await audit(AuditEvent(ADMIN_ACTOR, op, "", "denied", str(exc)))
            return _respond({"error": str(exc)}, 400)
        try:
            answer = await trio.to_thread.run_sync(_perform, owner, route, body)
        except VaultError as exc:
            status = _status_for(exc)
            await audit(AuditEvent(ADMIN_ACTOR, op, body.name,
                                   "denied" if status < 500 else "error", exc.message))
            return _respond({"error": exc.message}, status)
        await audit(AuditEvent(ADMIN_ACTOR, op, body.name, "ok", answer.get("status", "")
                               or _rolled_detail(answer)))
        return _respond(answer, 200)

    handle.__name__ = "vault_" + op.replace("-", "_")
    return handle


def _perform(owner: VaultOwner, route: str, body: VaultRequest) -> dict[str, Any]:
    """Run the operation (in a worker thread: it fsyncs) and build the value-free answer."""
    name = body.name
    if route == "/vault/secret":
        owner.set_secret(name, body.value, principals=body.principals, pattern=body.pattern,
                         description=body.description)
        return {"name": name, "status": "set"}
    if route == "/vault/secret/roll":
        owner.roll_secret(name, body.value or None)
        return {"name": name, "status": "rolled"}
    if route == "/vault/secret/revoke":
        owner.revoke_secret(name)
        return {"name": name, "status": "revoked"}
    if route == "/vault/principal":
        owner.register_principal(name, body.kind)
        return {"name": name, "status": "principal_registered"}
    if route == "/vault/principal/revoke":
        owner.revoke_principal(name)
        return {"name": name, "status": "principal_revoked"}
    if route == "/vault/principal/purge":
        owner.purge_principal(name)
        return {"name": name, "status": "principal_purged"}
    report = owner.roll_principal(name)
    return {"name": name, "rolled": list(report.rolled), "skipped": list(report.skipped)}


def _status_for(exc: VaultError) -> int:
    if isinstance(exc, VaultPolicyError):
        return 400
    if isinstance(exc, VaultModifiedExternally):
        return 409
    if isinstance(exc, VaultFileError):
        return 503
    return 400


def _rolled_detail(answer: dict[str, Any]) -> str:
    return (f"rolled {len(answer.get('rolled', []))}, "
            f"skipped {len(answer.get('skipped', []))}")


def _bearer(header: str | None) -> str | None:
    # The same parsing as API tokens: the scheme is case-insensitive (RFC 7235).
    return bearer_credentials(header) or None


def _respond(body: dict[str, Any], status: int) -> Response:
    return json_response(body, status)

