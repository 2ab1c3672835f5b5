"""The dispatcher's job boundary: a fault raised while handling one job fails that job, with
the step it broke in the ledger, and the dispatcher goes on with the next job.

Each test injects a fault at one step of a real job's path (real dispatcher, real SQLite file,
real echo plugin process) by replacing the function that step calls with one that raises, then
checks the ledger and that a good job still succeeds afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from support.dispatch import harness
from ductile.dispatch import attempt as attempt_module
from ductile.dispatch import verdict as verdict_module
from ductile.store.queue import Queue

ECHO = {"echo": {"enabled": True, "notify_on_complete": True,
                 "retry": {"max_attempts": 3, "backoff_base": "1ms"}}}
LISTENER = [{"name": "after", "on": "echo.poll", "steps": [{"id": "s", "uses": "echo"}]}]
HOOK = [{"name": "on-fail", "on-hook": "job.failed", "steps": [{"id": "s", "uses": "echo"}]}]


def raising(message: str) -> Callable[..., Any]:
    def fault(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(message)
    return fault


# (the module and the name in it to replace, the stage the ledger names)
STEPS = [
    (attempt_module, "read_step", "decoding the job"),
    (attempt_module, "compose_secrets", "admitting the job"),
    (attempt_module, "build_request", "building the plugin request"),
    (attempt_module, "spawn_plugin", "spawning the plugin"),
    (attempt_module, "classify", "reading the plugin response"),
    (verdict_module, "plan_facts", "routing the outcome"),
    (verdict_module, "route", "routing the outcome"),
]


@pytest.mark.parametrize(("module", "name", "stage"), STEPS,
                         ids=[name for _, name, _ in STEPS])
async def test_a_fault_at_any_step_fails_that_job_and_the_next_job_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: Any, name: str, stage: str
) -> None:
    # `route` is only reached with pipelines: one that listens to what echo emits.
    async with harness(tmp_path, plugins=ECHO, extra={"pipelines": LISTENER}) as h:
        monkeypatch.setattr(module, name, raising(f"injected at {name}"))
        # plan_facts is only reached with state updates, which echo always returns.
        job = await h.run("echo", "poll", {"n": 1})
        monkeypatch.undo()

        expected = f"job fault while {stage}: RuntimeError: injected at {name}"
        assert (job.status, job.attempt, job.last_error) == ("failed", 1, expected)
        [attempt] = await h.rt.queue.attempts(job.id)
        assert attempt.outcome == "job_fault"
        [entry] = await h.rt.queue.log_entries(job.id)
        assert entry.status == "failed" and expected in (entry.result or "")

        good = await h.run("echo", "poll", {"n": 2})
        assert good.status == "succeeded"
        assert '"job fault contained"' in h.log.getvalue()


async def test_a_fault_in_a_non_object_payload_job_never_reaches_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first outage: a job whose payload broke the dispatcher. Any payload the store holds
    either runs or fails as that job."""
    async with harness(tmp_path, plugins=ECHO) as h:
        for payload in (42, "text", [1, 2], {"deep": [[[[{"x": None}]]]]}, 10**30, 1.5):
            job = await h.run("echo", "poll", payload)
            assert job.status == "succeeded", (payload, job.last_error)


async def test_a_fault_fires_the_failed_hook_of_a_root_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(tmp_path, plugins=ECHO, extra={"pipelines": HOOK}) as h:
        real = attempt_module.build_request

        def poll_faults(**kwargs: Any) -> bytes:
            if kwargs["command"] == "poll":
                raise RuntimeError("boom")
            return real(**kwargs)

        monkeypatch.setattr(attempt_module, "build_request", poll_faults)
        job = await h.run("echo", "poll", {"n": 1})
        assert job.status == "failed"
        tree = await h.rt.queue.tree(job.id)
        assert tree is not None
        children = tree["children"]
        assert [(c["plugin"], c["context"]["pipeline"]) for c in children] == [
            ("echo", "on-fail")]
        hook = await h.wait(children[0]["job_id"])
        assert hook.status == "succeeded"


async def test_a_record_that_faults_once_is_recorded_as_a_job_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Queue.complete_and_claim
    calls = {"n": 0}

    async def first_call_faults(self: Queue, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected at record")
        return await real(self, *args, **kwargs)

    async with harness(tmp_path, plugins=ECHO) as h:
        monkeypatch.setattr(Queue, "complete_and_claim", first_call_faults)
        job = await h.run("echo", "poll", {"n": 1})
        monkeypatch.undo()
        assert job.status == "failed"
        assert job.last_error == ("job fault while recording the outcome: RuntimeError: "
                                  "injected at record")
        assert (await h.run("echo", "poll", {"n": 2})).status == "succeeded"


async def test_a_store_that_cannot_record_even_the_fault_ends_the_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boundary is for bad work, not for a broken component: when the failure itself
    cannot be recorded, the dispatcher raises (the supervisor then exits for systemd)."""

    async def always_faults(self: Queue, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store is broken")

    with pytest.raises(BaseException) as caught:  # noqa: PT011 - a group from the nursery
        async with harness(tmp_path, plugins=ECHO) as h:
            monkeypatch.setattr(Queue, "complete_and_claim", always_faults)
            await h.rt.queue.enqueue("echo", "poll", {"n": 1}, "test")
            await trio.sleep(30)
    assert "the store is broken" in repr(caught.value) or any(
        "the store is broken" in str(e) for e in getattr(caught.value, "exceptions", ()))
