"""What privilege separation costs per job: the spawn with and without the drop to an account,
and the attestation check (cached: a stat, no hash) a secret-bearing job adds.

The goal: the drop and the cached check together add at most 0.2 ms per job. Measured on the
event-loop thread, where the cost is paid: `_Child.start` (pipes + posix_spawn, or the
per-thread credential switch + posix_spawn with a working directory) and `Attestor.refusal`.
The whole spawn-to-exit of a real plugin is printed too, for scale. Needs root.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from ductile.plugin.credentials import Credentials
from ductile.plugin.spawn import _Child, child_env, spawn_plugin
from ductile.privsep.attest import Attestor, take_baselines
from support.accounts import needs_root, open_dir, os_user
from support.bench import median, percentile, report

N = 2000
ROUNDS = 200


def _start_cost(entry: str, env: dict[str, str], creds: Credentials | None) -> list[float]:
    times = []
    for _ in range(N):
        started = time.perf_counter()
        child = _Child.start(entry, env, creds)
        times.append(time.perf_counter() - started)
        for name in list(child.fds):
            child.close(name)
        os.waitpid(child.pid, 0)
        child.reaped = True
        if child.pidfd is not None:
            os.close(child.pidfd)
    return times


@needs_root
def test_bench_privsep_spawn_cost() -> None:
    with os_user() as user, open_dir() as base:
        entry = os.path.join(base, "run")
        Path(entry).write_text("#!/bin/sh\ncat >/dev/null\necho '{\"status\":\"ok\","
                               "\"result\":\"ok\"}'\n")
        os.chmod(entry, 0o755)
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        os.chown(work, user.uid, user.gid)
        creds = Credentials(user.uid, user.gid, (user.gid,), work, "bench")
        env = child_env()
        _start_cost(entry, env, None)  # warm
        plain = _start_cost(entry, env, None)
        dropped = _start_cost(entry, env, creds)
        nonce = os.urandom(32)
        baselines, _ = take_baselines({"p": entry}, nonce, {})
        attestor = Attestor(nonce, baselines)
        assert attestor.refusal("p") is None
        checks = []
        for _ in range(N):
            started = time.perf_counter()
            attestor.refusal("p")
            checks.append(time.perf_counter() - started)

        async def round_trips(c: Credentials | None) -> list[float]:
            out = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                result = await spawn_plugin(entry, b"{}", timeout=5, env=env, credentials=c)
                out.append(time.perf_counter() - started)
                assert result.exit_code == 0
            return out

        whole_plain = trio.run(round_trips, None)
        whole_dropped = trio.run(round_trips, creds)

    drop_ms = (median(dropped) - median(plain)) * 1000
    check_ms = median(checks) * 1000
    report("privsep_drop_and_attest_added", drop_ms + check_ms, "ms per job", "<= 0.2 ms",
           f"spawn on the loop thread p50 {median(plain) * 1e3:.3f} ms plain, "
           f"{median(dropped) * 1e3:.3f} ms dropping to an account (p95 "
           f"{percentile(dropped, 95) * 1e3:.3f}); cached attestation p50 {check_ms:.4f} ms; "
           f"spawn-to-exit of a sh plugin p50 {median(whole_plain) * 1e3:.2f} ms plain, "
           f"{median(whole_dropped) * 1e3:.2f} ms as the account")
