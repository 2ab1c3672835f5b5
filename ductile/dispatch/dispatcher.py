"""The dispatcher: fill `service.max_workers` slots from the queue and run each job.

It sleeps until something can change: an enqueue or a finished job wakes it at once, and
otherwise it wakes at the earliest `next_retry_at` of a delayed retry (capped by
`service.tick_interval`). Polling every second, as the Go gateway does, would add up to a second of
latency to every idle enqueue.

One dispatcher serves every runtime generation: each claim reads the current generation, and a
job keeps the generation it was claimed with until it finishes, so a reload never interrupts a
running plugin.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import trio

from ductile.dispatch.completions import Completions
from ductile.dispatch.outcome import Outcome, backoff_delay, classify
from ductile.errors import PluginSpawnError, StoreError
from ductile.logs import Logger
from ductile.plugin.protocol import build_request
from ductile.plugin.spawn import child_env, spawn_plugin

if TYPE_CHECKING:
    from ductile.boot.runtime import Runtime
    from ductile.store.jobs import Job

STDERR_LOG_TAIL = 2048


class Dispatcher:
    def __init__(
        self, current: Callable[[], Runtime], completions: Completions, log: Logger
    ) -> None:
        self._current = current
        self._completions = completions
        self._log = log.child("dispatcher")
        self._wake = trio.Event()
        self._claiming = True
        self._active = 0
        self._lanes: Counter[str] = Counter()
        self._drain_scope: trio.CancelScope | None = None
        self.kill_grace = 5.0

    @property
    def active(self) -> int:
        return self._active

    def wake(self) -> None:
        """Called on enqueue, reload and job completion."""
        self._wake.set()

    def stop(self, grace: float) -> None:
        """Stop claiming; running jobs get `grace` seconds to finish before they are cancelled
        (their plugins are killed, and crash recovery re-queues them at the next boot)."""
        self._claiming = False
        if self._drain_scope is not None:
            self._drain_scope.deadline = trio.current_time() + grace
        self.wake()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._drain_scope = scope
            async with trio.open_nursery() as jobs:
                task_status.started()
                while self._claiming:
                    self._wake = trio.Event()
                    timeout = await self._fill(jobs)
                    if not self._claiming:
                        break
                    with trio.move_on_after(timeout):
                        await self._wake.wait()

    async def _fill(self, jobs: trio.Nursery) -> float:
        """Claim until the slots are full or nothing is eligible; return how long to sleep."""
        rt = self._current()
        service = rt.config.service
        while self._claiming and self._active < service.max_workers:
            skip = [p for p, n in self._lanes.items() if n >= rt.lane_limit(p)]
            job = await rt.queue.claim(skip)
            if job is None:
                break
            self._active += 1
            self._lanes[job.plugin] += 1
            jobs.start_soon(self._run_job, rt, job)
        if self._active >= service.max_workers:
            return service.tick_interval
        due = await rt.queue.next_due_at()
        if due is None:
            return service.tick_interval
        wait = (due - datetime.now(timezone.utc)).total_seconds()
        return min(max(wait, 0.0), service.tick_interval)

    async def _run_job(self, rt: Runtime, job: Job) -> None:
        try:
            await execute(rt, job, self._log, kill_grace=self.kill_grace)
        finally:
            self._active -= 1
            self._lanes[job.plugin] -= 1
            if self._lanes[job.plugin] <= 0:
                del self._lanes[job.plugin]
            self._completions.notify(job.id)
            self.wake()


async def execute(rt: Runtime, job: Job, log: Logger, *, kill_grace: float = 5.0) -> None:
    """Run one claimed job to its next status (terminal, or queued again for a retry)."""
    plugin = rt.plugins.get(job.plugin)
    if plugin is None:
        await _fail_permanently(rt, job, f"plugin {job.plugin!r} not found in registry", log)
        return
    if not plugin.supports(job.command):
        await _fail_permanently(
            rt, job, f"plugin {job.plugin!r} does not support command {job.command!r}", log
        )
        return
    conf = rt.config.plugin(job.plugin)
    timeout = conf.timeout_for(job.command)
    state = await rt.state.get(job.plugin)
    payload = job.payload_obj()
    request = build_request(
        job_id=job.id,
        command=job.command,
        config=conf.config,
        state=state,
        payload=payload,
        context={"ductile_plugin": job.plugin},
        event=_event_for(job.command, payload),
        deadline_at=datetime.now(timezone.utc).astimezone() + timedelta(seconds=timeout),
    )
    env = child_env(rt.config.service.plugin_env_passthrough)
    started = time.monotonic()
    try:
        result = await spawn_plugin(
            plugin.entrypoint, request, timeout=timeout, env=env, grace=kill_grace
        )
    except PluginSpawnError as exc:
        outcome = Outcome("failed", "spawn_error", True, f"plugin spawn failed: {exc}")
        await _finish(rt, job, outcome, None, None, b"", _ms(started), log)
        return
    outcome = classify(result, timeout)
    await _finish(
        rt, job, outcome, result.stdout, result.exit_code, result.stderr, _ms(started), log
    )


def _event_for(command: str, payload: Any) -> dict[str, Any] | None:
    """`handle` receives its payload as an event; a raw object becomes the event's payload."""
    if command != "handle" or not isinstance(payload, dict) or not payload:
        return None
    if isinstance(payload.get("type"), str) and isinstance(payload.get("payload"), dict):
        return payload
    return {"type": "", "payload": payload}


async def _finish(
    rt: Runtime,
    job: Job,
    outcome: Outcome,
    stdout: bytes | None,
    exit_code: int | None,
    stderr: bytes,
    duration_ms: int,
    log: Logger,
) -> None:
    stderr_text = stderr.decode("utf-8", errors="replace") if stderr else None
    stdout_text = stdout.decode("utf-8", errors="replace") if stdout else None
    fields = {"job_id": job.id, "plugin": job.plugin, "command": job.command}
    if outcome.response is not None:
        for entry in outcome.response.logs:
            log.info("plugin log", **fields, level_reported=entry.get("level"),
                     message=entry.get("message"))
    if outcome.status == "succeeded":
        response = outcome.response
        updates = response.state_updates if response is not None else None
        try:
            await rt.queue.complete(
                job, "succeeded", result=stdout_text, last_error=None, stderr=stderr_text,
                exit_code=exit_code, duration_ms=duration_ms, outcome=outcome.reason,
                state_update=(job.plugin, updates) if updates else None,
            )
        except StoreError as exc:
            # A success whose state cannot be stored is a failure, never retried (reference §5.6).
            await rt.queue.complete(
                job, "failed", result=stdout_text, last_error=f"state update rejected: {exc}",
                stderr=stderr_text, exit_code=exit_code, duration_ms=duration_ms,
                outcome="state_error",
            )
            log.warn("job failed", **fields, error=str(exc))
            return
        log.info("job succeeded", **fields, attempt=job.attempt, duration_ms=duration_ms)
        return
    retry_conf = rt.config.plugin(job.plugin).retry
    max_attempts = job.max_attempts or retry_conf.max_attempts
    if outcome.retryable and job.attempt < max_attempts:
        delay = backoff_delay(retry_conf.backoff_base, job.attempt)
        await rt.queue.retry(
            job, delay=delay, last_error=outcome.error, exit_code=exit_code,
            duration_ms=duration_ms, outcome=outcome.reason, stderr=stderr_text,
        )
        log.warn("job retry scheduled", **fields, attempt=job.attempt, reason=outcome.reason,
                 error=outcome.error, retry_in_s=round(delay, 3),
                 stderr_tail=_tail(stderr_text))
        return
    await rt.queue.complete(
        job, outcome.status, result=stdout_text, last_error=outcome.error, stderr=stderr_text,
        exit_code=exit_code, duration_ms=duration_ms, outcome=outcome.reason,
    )
    log.warn("job " + outcome.status.replace("_", " "), **fields, attempt=job.attempt,
             reason=outcome.reason, error=outcome.error, stderr_tail=_tail(stderr_text))


async def _fail_permanently(rt: Runtime, job: Job, error: str, log: Logger) -> None:
    await rt.queue.complete(
        job, "failed", result=json.dumps({"status": "error", "error": error}), last_error=error,
        stderr=None, exit_code=None, duration_ms=0, outcome="not_runnable",
    )
    log.warn("job failed", job_id=job.id, plugin=job.plugin, command=job.command, error=error)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _tail(text: str | None) -> str | None:
    return text[-STDERR_LOG_TAIL:] if text else None
