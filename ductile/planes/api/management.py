"""The management-only posture: `/healthz` and `/vault/*` on a private unix socket.

A fresh gateway that has a vault but no API token yet opens no public listener. It serves this
small app instead, on a socket only its own user can reach, so the operator can
mint the first API token with the vault admin token and then reload into the gateway posture.

`bind_management_socket` does every check before the socket exists where clients look for it:
the path fits in `sun_path`, nothing that is not a socket is ever removed, a stale socket is,
the parent is created 0700 and refused when others could swap the socket under us (group- or
world-writable without the sticky bit). The socket is bound inside a private temporary
directory, chmod 0600, then renamed into place, so it is never reachable with looser
permissions, not even for an instant.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ductile.errors import ConfigError
from ductile.planes.api.routes.vault import GetOwner, register_vault_routes
from ductile.logs import Logger
from ductile.planes.http import (
    PlaneApp,
    http_exception_response,
    internal_error,
    json_response,
    no_redirects,
    refuse_unknown_http_versions,
    shown_path,
)
from ductile.store.audit import Audit

SOCKET_NAME = "vault-admin.sock"
MAX_SOCKET_PATH = 103
MAX_BODY = 64 * 1024


def create_management_app(get_owner: GetOwner, audit: Audit,
                          health: Callable[[], dict[str, Any]],
                          log: Logger | None = None) -> QuartTrio:
    """The app of the management socket: `GET /healthz` (no auth) and `POST /vault/*`.
    `log` (default: the process's stderr) receives a handler fault's traceback."""
    log = log or Logger().child("management")
    app = PlaneApp("ductile-management")
    no_redirects(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    refuse_unknown_http_versions(app)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        path = shown_path(request.path)
        messages = {
            404: f"no route for {request.method} {path}: the management socket serves "
                 "only GET /healthz and POST /vault/*",
            405: f"method {request.method} not allowed on {path}",
            413: f"request body too large (limit {MAX_BODY} bytes)",
        }
        code = exc.code or 500
        return http_exception_response(exc, messages.get(code, exc.description or exc.name))

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        return internal_error(log, exc)

    @app.route("/healthz", methods=["GET"])
    async def healthz() -> Response:
        return json_response(health())

    register_vault_routes(app, get_owner, audit)
    return app


def management_socket_path(setting: str, state_path: str) -> str:
    """`api.management_socket`, default `<dir of state.path>/vault-admin.sock`."""
    if setting:
        return os.path.abspath(os.path.expanduser(setting))
    return os.path.join(os.path.dirname(os.path.abspath(state_path)), SOCKET_NAME)


def bind_management_socket(path: str) -> socket.socket:
    """A listening unix socket at `path`, mode 0600, after every check below (the directory is
    ours and private, nothing else sits at the path, the path fits a sockaddr_un).

    Raises ConfigError (key `api.management_socket`) naming the path and what to change.
    """
    key = "api.management_socket"
    if not path:
        raise ConfigError("management socket path is empty", key=key)
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise ConfigError(f"management socket path is too long ({size} bytes, max "
                          f"{MAX_SOCKET_PATH}): {path!r}; set api.management_socket to a "
                          "shorter path", key=key)
    _remove_stale_socket(path, key)
    parent = os.path.dirname(os.path.abspath(path))
    _secure_parent(parent, key)
    private = tempfile.mkdtemp(prefix=".d", dir=parent)
    if len(os.fsencode(os.path.join(private, "s"))) > MAX_SOCKET_PATH:
        shutil.rmtree(private, ignore_errors=True)
        raise ConfigError(f"management socket directory {parent!r} is too deep to bind in "
                          f"(the private bind path would exceed {MAX_SOCKET_PATH} bytes); set "
                          "api.management_socket to a shorter path", key=key)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        temp_path = os.path.join(private, "s")
        sock.bind(temp_path)
        os.chmod(temp_path, 0o600)
        sock.listen(128)
        os.rename(temp_path, path)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind the management socket {path!r}: "
                          f"{exc.strerror or exc}",
                          key=key) from None
    finally:
        shutil.rmtree(private, ignore_errors=True)
    sock.set_inheritable(False)
    return sock


def remove_management_socket(path: str) -> None:
    """Remove the socket file after the plane closed (only if it is still a socket)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _remove_stale_socket(path: str, key: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"management socket path {path!r} exists and is not a socket (mode "
                          f"{stat.filemode(info.st_mode)}) — refusing to remove it; fix "
                          "api.management_socket", key=key)
    try:
        os.unlink(path)
    except OSError as exc:
        raise ConfigError(f"cannot remove the stale management socket {path!r}: "
                          f"{exc.strerror}", key=key) from None


def _secure_parent(parent: str, key: str) -> None:
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        mode = os.stat(parent).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot create the management socket directory {parent!r}: "
                          f"{exc.strerror}", key=key) from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        raise ConfigError(f"management socket directory {parent!r} is group/other-writable "
                          f"(mode {stat.S_IMODE(mode):04o}) without the sticky bit — tighten "
                          f"it (chmod 700 {parent})", key=key)
