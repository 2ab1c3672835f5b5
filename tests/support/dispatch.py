"""Run one runtime generation and the dispatcher in-process (no subprocess, no HTTP)."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ductile.boot.runtime import Process, Runtime, build_generation
from ductile.dispatch.dispatcher import Dispatcher
from ductile.logs import Logger
from ductile.store.jobs import Job
from support.gateway import write_config

TERMINAL = {"succeeded", "failed", "timed_out", "dead", "skipped", "cancelled"}


@dataclass
class Harness:
    proc: Process
    rt: Runtime
    dispatcher: Dispatcher
    log: io.StringIO

    async def run(self, plugin: str, command: str = "poll", payload: Any = None,
                  timeout: float = 30.0, **kw: Any) -> Job:
        """Enqueue and wait until the job is terminal."""
        job = await self.rt.queue.enqueue(plugin, command, payload, "test", **kw)
        return await self.wait(job.id, timeout)

    async def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        with trio.fail_after(timeout):
            while True:
                event = self.proc.completions.register(job_id)
                job = await self.rt.queue.get(job_id)
                assert job is not None
                if job.status in TERMINAL:
                    self.proc.completions.discard(job_id, event)
                    return job
                await event.wait()


@asynccontextmanager
async def harness(tmp_path: Path, *, plugins: dict[str, Any] | None = None,
                  plugin_roots: list[str] | None = None, service: dict[str, Any] | None = None,
                  kill_grace: float = 0.5,
                  extra: dict[str, Any] | None = None) -> AsyncIterator[Harness]:
    cfg = write_config(tmp_path / "cfg", plugins=plugins, plugin_roots=plugin_roots,
                       service=service, extra=extra)
    stream = io.StringIO()
    proc = Process(explicit_config=str(cfg), environ=dict(os.environ),
                   log=Logger(stream=stream))
    rt = await build_generation(proc, reason="startup")
    dispatcher = Dispatcher(lambda: rt, proc.completions, proc.log)
    dispatcher.kill_grace = kill_grace
    proc.dispatcher = dispatcher
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            yield Harness(proc, rt, dispatcher, stream)
            dispatcher.stop(5.0)
    finally:
        with trio.CancelScope(shield=True):
            await proc.close()
