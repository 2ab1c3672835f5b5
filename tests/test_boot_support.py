"""PID lock, systemd notify and listener binding: the process-level pieces of boot."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ductile.boot import notify, pidlock
from ductile.boot.runtime import bind_listener
from ductile.errors import LockError


def test_lock_path_sits_beside_the_database(tmp_path: Path) -> None:
    assert pidlock.lock_path_for(str(tmp_path / "data" / "state.db")) == str(
        tmp_path / "data" / "state.pid")


def test_lock_writes_our_pid_and_a_second_holder_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "d" / "state.pid")
    lock = pidlock.acquire(path)
    try:
        assert pidlock.read_pid(path) == os.getpid()
        # flock locks belong to the open file description: a second open in a child conflicts.
        child = subprocess.run(
            [sys.executable, "-c",
             "import sys; from ductile.boot import pidlock\n"
             "try:\n pidlock.acquire(sys.argv[1])\nexcept Exception as e:\n print(e); sys.exit(3)",
             path], capture_output=True, text=True)
        assert child.returncode == 3
        assert f"held by pid {os.getpid()}" in child.stdout
    finally:
        lock.release()
    again = pidlock.acquire(path)  # released: the file stays, the lock is free
    again.release()
    assert os.path.exists(path)


def test_empty_lock_path_is_refused() -> None:
    with pytest.raises(LockError, match="lock path is empty"):
        pidlock.acquire("")


def test_stale_pid_file_reads_as_dead(tmp_path: Path) -> None:
    path = tmp_path / "state.pid"
    path.write_text("999999999\n")
    assert pidlock.read_pid(str(path)) == 999999999
    assert not pidlock.pid_alive(999999999)
    path.write_text("garbage")
    assert pidlock.read_pid(str(path)) is None


def test_notify_sends_one_datagram_to_notify_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        assert notify.notify("READY=1", {"NOTIFY_SOCKET": address})
        assert server.recv(1024) == b"READY=1"


def test_notify_without_socket_is_a_no_op_and_errors_are_swallowed(tmp_path: Path) -> None:
    assert notify.notify("READY=1", {}) is False
    assert notify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "absent")}) is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert notify.watchdog_interval(env) == 2.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval({}) is None


def test_bind_listener_binds_and_reports_address_in_use() -> None:
    first = bind_listener("127.0.0.1:0", {})
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            bind_listener(f"127.0.0.1:{port}", {})
    finally:
        first.close()


def test_bind_listener_rejects_a_malformed_address() -> None:
    with pytest.raises(OSError, match="invalid listen address"):
        bind_listener("localhost:http", {})


def test_socket_activation_adopts_fd_3_and_keeps_it_from_plugins() -> None:
    script = (
        "import os, socket\n"
        "from ductile.boot.runtime import bind_listener\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "os.dup2(s.fileno(), 3)\n"
        "env = {'LISTEN_PID': str(os.getpid()), 'LISTEN_FDS': '1'}\n"
        "got = bind_listener('127.0.0.1:1', env)\n"
        "assert got.fileno() == 3, got.fileno()\n"
        "assert got.getsockname() == s.getsockname()\n"
        "assert not os.get_inheritable(3)\n"
        "print('adopted')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "adopted"
