"""A throwaway PostgreSQL cluster for the test run, from the machine's own PostgreSQL binaries.

One cluster per pytest run (`pg_cluster`, session scope, shared by tests/ and property-tests/);
each test that needs a database gets a fresh empty one (`pg_dsn`), dropped afterwards. The
cluster lives in a temporary directory and is removed at the end of the run, also on failure;
if pytest itself is killed, the postmaster gets SIGQUIT through the parent-death signal
(`setpriv --pdeathsig`), so no server outlives the run.

initdb and postgres refuse to run as root, so under root (CI) they run as the unprivileged
system account `ductile-pgtest`, created when missing and kept for later runs. The server
listens on 127.0.0.1 on a free port (and a private unix socket directory). Authentication: the
bootstrap superuser `ductile_admin` is trusted from 127.0.0.1 (the fixtures create and drop
databases with it); every other role must give a password (scram-sha-256), and the DSNs the
tests get are for the role `ductile` with its password, so the password path is the one tested.

Durability is off (fsync, full_page_writes, synchronous_commit): a test cluster never survives
a crash, and this keeps starting it under about a second.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.gateway import free_port

#: The OS account initdb and postgres run as when the tests run as root.
TEST_ACCOUNT = "ductile-pgtest"
SUPERUSER = "ductile_admin"
ROLE = "ductile"
_BINARIES = ("initdb", "postgres")
_START_TIMEOUT = 20.0


def find_bindir() -> str | None:
    """The directory holding initdb and postgres: PATH first, else the newest
    /usr/lib/postgresql/<major>/bin (Debian keeps them off PATH)."""
    on_path = [shutil.which(name) for name in _BINARIES]
    if all(on_path):
        return os.path.dirname(str(on_path[0]))
    candidates = []
    for bindir in glob.glob("/usr/lib/postgresql/*/bin"):
        major = os.path.basename(os.path.dirname(bindir))
        if major.isdigit() and all(os.access(os.path.join(bindir, b), os.X_OK)
                                   for b in _BINARIES):
            candidates.append((int(major), bindir))
    return max(candidates)[1] if candidates else None


def postgres_available() -> str | None:
    """None when a throwaway cluster can be started here, else why the tests skip."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"psycopg is not installed ({exc}): pip install -e '.[test]'"
    if find_bindir() is None:
        return ("PostgreSQL server binaries (initdb, postgres) not found on PATH or under "
                "/usr/lib/postgresql/*/bin: install the `postgresql` package (.ci/run does)")
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is needed to run the test cluster"
    if os.geteuid() == 0 and shutil.which("useradd") is None:
        try:
            pwd.getpwnam(TEST_ACCOUNT)
        except KeyError:
            return f"running as root needs useradd to create the account {TEST_ACCOUNT}"
    return None


@dataclass
class PgCluster:
    """A running throwaway cluster; `dsn(dbname)` connects as the password role."""

    bindir: str
    root: str
    port: int
    password: str
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    _admin: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def datadir(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def logfile(self) -> str:
        return os.path.join(self.root, "postgres.log")

    def dsn(self, dbname: str, *, password: str | None = None, user: str = ROLE) -> str:
        """A key=value DSN for `dbname` as `user` (the password role by default)."""
        secret = self.password if password is None else password
        return (f"host={self.host} port={self.port} dbname={dbname} user={user} "
                f"password={secret} connect_timeout=5")

    def admin_dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={SUPERUSER}"

    def admin(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement as the superuser (autocommit), return its rows."""
        import psycopg

        with self._lock:
            if self._admin is None or self._admin.closed:
                self._admin = psycopg.connect(self.admin_dsn(), autocommit=True)
            cur = self._admin.execute(sql, params or None)
            return cur.fetchall() if cur.description else []

    def create_database(self) -> str:
        """A fresh empty database owned by the password role; returns its name."""
        name = f"t_{secrets.token_hex(6)}"
        self.admin(f'CREATE DATABASE "{name}" OWNER "{ROLE}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, ending any connection a test left open."""
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Immediate shutdown (the data is throwaway), then remove the directory."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: None when not root; the test account under root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(TEST_ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--user-group", "--shell",
             "/usr/sbin/nologin", TEST_ACCOUNT],
            check=False, capture_output=True,
        )
        entry = pwd.getpwnam(TEST_ACCOUNT)  # KeyError here: useradd failed (raced: fine)
    return entry.pw_uid, entry.pw_gid


def _as_account(account: tuple[int, int] | None, argv: list[str], *, pdeathsig: bool) -> list[str]:
    prefix = ["setpriv"]
    if account is not None:
        uid, gid = account
        prefix += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    if pdeathsig:
        prefix += ["--pdeathsig", "SIGQUIT"]
    return prefix + ["--", *argv]


def start_cluster() -> PgCluster:
    """initdb, configure and start a cluster; raise RuntimeError with the server log if it
    does not come up."""
    bindir = find_bindir()
    assert bindir is not None, "call postgres_available() first"
    account = _account()
    root = tempfile.mkdtemp(prefix="ductile-pg-", dir="/tmp")
    cluster = PgCluster(bindir=bindir, root=root, port=free_port(),
                        password=secrets.token_urlsafe(16))
    try:
        sockdir = os.path.join(root, "sock")
        os.mkdir(sockdir, 0o700)
        if account is not None:
            for path in (root, sockdir):
                os.chown(path, *account)
        os.chmod(root, 0o700)
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        env.pop("PGDATA", None)
        init = subprocess.run(
            _as_account(account, [os.path.join(bindir, "initdb"), "-D", cluster.datadir,
                                  "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                                  "--no-sync", "--no-instructions"], pdeathsig=False),
            cwd=root, env=env, capture_output=True, text=True, check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip()}")
        _configure(cluster, sockdir)
        with open(cluster.logfile, "wb") as log:
            cluster.process = subprocess.Popen(
                _as_account(account, [os.path.join(bindir, "postgres"), "-D", cluster.datadir],
                            pdeathsig=True),
                cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        _wait_ready(cluster)
        # A utility statement takes no bind parameters: the password goes in as a literal.
        from psycopg import sql

        cluster.admin(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(cluster.password)).as_string())
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _configure(cluster: PgCluster, sockdir: str) -> None:
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(cluster.port),
        "unix_socket_directories": f"'{sockdir}'",
        # 3 gateways x their pools, the tests' own connections, listeners: room to spare.
        "max_connections": "200",
        "shared_buffers": "16MB",
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "off",
        "password_encryption": "'scram-sha-256'",
        "log_min_messages": "warning",
        "log_line_prefix": "'%m [%p] %d '",
    }
    conf = Path(cluster.datadir, "postgresql.conf")
    with conf.open("a", encoding="utf-8") as handle:
        handle.write("\n# ductile test cluster (tests/support/postgres.py)\n")
        handle.writelines(f"{key} = {value}\n" for key, value in settings.items())
    Path(cluster.datadir, "pg_hba.conf").write_text(
        "# ductile test cluster: the superuser is trusted for the fixtures' admin work;\n"
        "# every other role gives its password.\n"
        "local all all trust\n"
        f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n",
        encoding="utf-8",
    )


def _wait_ready(cluster: PgCluster) -> None:
    import psycopg

    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        assert cluster.process is not None
        if cluster.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {cluster.process.returncode}: "
                               f"{_log_tail(cluster)}")
        try:
            psycopg.connect(cluster.admin_dsn(), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections within "
                                   f"{_START_TIMEOUT:g}s: {_log_tail(cluster)}") from None
            time.sleep(0.02)


def _log_tail(cluster: PgCluster) -> str:
    try:
        return Path(cluster.logfile).read_text(errors="replace")[-2000:]
    except OSError:
        return "(no server log)"


# -- one cluster per run, shared by the tests/ and property-tests/ session fixtures -------------

_shared: PgCluster | None = None
_users = 0
_shared_lock = threading.Lock()


def acquire_cluster() -> PgCluster:
    """The run's cluster, started on first use; pair every call with `release_cluster`."""
    global _shared, _users
    with _shared_lock:
        if _shared is None:
            _shared = start_cluster()
            atexit.register(_stop_shared)
        _users += 1
        return _shared


def release_cluster() -> None:
    """Stop the cluster when its last session fixture is torn down."""
    global _users
    with _shared_lock:
        _users -= 1
        if _users <= 0:
            _stop_shared_locked()


def _stop_shared() -> None:
    with _shared_lock:
        _stop_shared_locked()


def _stop_shared_locked() -> None:
    global _shared
    cluster, _shared = _shared, None
    if cluster is not None:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The throwaway PostgreSQL cluster of this run (skips when PostgreSQL is not here)."""
    reason = postgres_available()
    if reason is not None:
        pytest.skip(reason)
    cluster = acquire_cluster()
    try:
        yield cluster
    finally:
        release_cluster()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database for this test (dropped after): its DSN, with a password."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.dsn(name)
    finally:
        pg_cluster.drop_database(name)
