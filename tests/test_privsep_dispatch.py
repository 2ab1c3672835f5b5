"""A refused drop, through the real dispatcher: the job fails at once with
`plugin.drop_failed`, is never retried, and the dispatcher goes on.

The kernel refuses a drop only to a thread without CAP_SETUID/CAP_SETGID. Capabilities, like
credentials, are per thread on Linux, so the test runs the whole generation (trio, SQLite's
writer thread, the dispatcher) in a thread that removed those two from its effective set:
it is still root for everything else, and the pytest thread is untouched.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import trio

from support.accounts import needs_root, open_dir, os_user
from support.dispatch import harness

pytestmark = needs_root

_VERSION_3 = 0x20080522
_CAP_SETGID, _CAP_SETUID = 6, 7


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _lose_setid_capabilities() -> None:
    """Remove CAP_SETUID and CAP_SETGID from this thread's effective set (capset(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0
    data[0].effective &= ~((1 << _CAP_SETUID) | (1 << _CAP_SETGID))
    assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()


def test_a_refused_drop_fails_the_job_without_a_retry(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    with os_user() as user, open_dir() as base:
        accounts = {"default": {"user": user.name, "state_dir": f"{base}/accounts/default"}}

        async def scenario() -> None:
            async with harness(tmp_path, extra={"accounts": accounts}) as h:
                assert h.rt.privsep.posture == "enforcing"
                job = await h.run("echo", "poll", {})
                seen["job"] = job
                seen["log"] = h.log.getvalue()

        def in_thread() -> None:
            try:
                _lose_setid_capabilities()
                trio.run(scenario)
            except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                seen["error"] = exc

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(60)
    assert "error" not in seen, seen.get("error")
    job = seen["job"]
    assert (job.status, job.attempt) == ("failed", 1)
    assert job.last_error.startswith("plugin.drop_failed: cannot drop to account 'default'")
    assert "CAP_SETUID and CAP_SETGID" in job.last_error
