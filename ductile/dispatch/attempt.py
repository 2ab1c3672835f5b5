"""One attempt at a claimed job: decode it, admit it, build its request, spawn its plugin, and
say what happened, without deciding anything about the queue.

The answer is a `Happened`: the job could not run (`NotRunnable`), the router had already
decided it (`Verdict`, no spawn), the built-in `core.switch` evaluated in-process (`Switched`), or
the plugin ran (`Ran`, with its classified `Outcome`). `dispatch/verdict.py` turns that into the
one write to make; this module only does the I/O of getting there.

`trace.stage` follows the job through the steps, so a fault raised by any of them is reported
against the step it broke (see `dispatch/boundary.py`).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import trio

from ductile.dispatch.outcome import Outcome, classify
from ductile.dispatch.routing import Step, read_step
from ductile.errors import (
    AccountDropError,
    ConditionEvalError,
    PluginSpawnError,
    RouterError,
    StoreError,
    VaultPrincipalUnavailable,
)
from ductile.plugin.payload_env import PayloadEnvError, payload_environment
from ductile.plugin.protocol import build_request
from ductile.plugin.spawn import child_env, spawn_plugin
from ductile.router.dsl import RELAY_PLUGIN, SWITCH_PLUGIN
from ductile.router.engine import (
    STEP_SUCCEEDED,
    SwitchOutcome,
    merge_context,
    relay_parts,
    request_context,
    run_switch,
)

if TYPE_CHECKING:
    from ductile.config.schema import PluginConf
    from ductile.dispatch.live import LiveStderr
    from ductile.runtime import Runtime
    from ductile.store.queue import Claim


class Trace:
    """How far one job got: the stage a fault is reported against, and when it started."""

    def __init__(self) -> None:
        self.stage = "decoding the job"
        self.started = time.monotonic()

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


class RunCancel:
    """The cancel handle of one running job (see `Dispatcher.cancel_running`). Once
    `requested` is set the plugin is not started, or its process group gets SIGTERM and, after
    the kill grace, SIGKILL; the job then ends `cancelled` with `reason` as its last_error."""

    def __init__(self) -> None:
        self.requested = trio.Event()
        self.reason = "cancelled"

    def request(self, reason: str) -> None:
        self.reason = reason
        self.requested.set()


@dataclass(frozen=True)
class NotRunnable:
    """The job cannot run at all (unknown plugin or command, unreadable state or payload, no
    secrets for a plugin that needs them): it fails without a spawn and is never retried."""

    error: str


@dataclass(frozen=True)
class Verdict:
    """A routed step the router decided not to run: `action` is skip or fail."""

    action: str
    decision: str


@dataclass(frozen=True)
class Switched:
    """The built-in `core.switch` evaluated the step's `if:` in-process."""

    outcome: SwitchOutcome
    duration_ms: int


@dataclass(frozen=True)
class Ran:
    """The plugin ran (or failed to start, or was cancelled): its classified outcome and the
    raw output the ledger keeps."""

    outcome: Outcome
    stdout: bytes | None
    exit_code: int | None
    stderr: bytes
    duration_ms: int


Happened = NotRunnable | Verdict | Switched | Ran


async def attempt(
    rt: Runtime, claim: Claim, *, kill_grace: float, cancel: RunCancel, trace: Trace,
    live: LiveStderr | None = None,
) -> tuple[Step, Happened]:
    """Take one claimed job as far as it goes; return its pipeline step and what happened.
    With `live`, the plugin's stderr lines are published there while it runs."""
    job = claim.job
    try:
        payload = job.payload_obj()
    except StoreError as exc:
        return Step(None, None, None), NotRunnable(str(exc))
    step = read_step(payload, claim.context)
    if step.verdict is not None:
        return step, Verdict(*step.verdict)
    if job.plugin == SWITCH_PLUGIN and step.in_pipeline:
        return step, _switch(rt, step)
    if job.plugin == RELAY_PLUGIN and step.in_pipeline:
        trace.stage = "relaying the event"
        return step, await _relay(rt, job.id, step)
    trace.stage = "admitting the job"
    plugin = rt.plugins.get(job.plugin)
    if plugin is None:
        return step, NotRunnable(f"plugin {job.plugin!r} not found in registry")
    if not plugin.supports(job.command):
        return step, NotRunnable(
            f"plugin {job.plugin!r} does not support command {job.command!r}")
    if claim.state_error is not None:
        return step, NotRunnable(f"plugin state unreadable: {claim.state_error}")
    conf = rt.config.plugin(job.plugin)
    timeout = conf.timeout_for(job.command)
    secrets, refusal = compose_secrets(rt, conf)
    if refusal is None and secrets and rt.attestor is not None:
        # Attestation at the moment of trust: changed bytes never see a secret.
        refusal = rt.attestor.refusal(job.plugin)
    if refusal is not None:
        return step, NotRunnable(refusal)

    trace.stage = "building the plugin request"
    context = request_context(job.plugin, step.position)
    event = _event_for(job.command, payload)
    if step.in_pipeline and step.event is not None:
        # A pipeline step: its baggage reaches the plugin in `context` and, where the event's
        # payload lacks a key, in the payload itself.
        inner = step.event.get("payload")
        payload = step.event
        event = {**step.event,
                 "payload": merge_context(inner if isinstance(inner, dict) else {}, context)}
    request = build_request(
        job_id=job.id,
        command=job.command,
        config=conf.config,
        state=claim.state,
        payload=payload,
        context=context,
        event=event,
        deadline_at=datetime.now(timezone.utc).astimezone() + timedelta(seconds=timeout),
        secrets=secrets,
    )

    trace.stage = "spawning the plugin"
    env = child_env(rt.config.service.plugin_env_passthrough)
    env.update(rt.privsep.environment_for(job.plugin))
    if plugin.manifest.payload_env:
        try:
            env.update(_payload_env(job.id, job.command, event, payload))
        except PayloadEnvError as exc:
            return step, NotRunnable(str(exc))
    if cancel.requested.is_set():  # cancelled before its plugin started: nothing to stop
        return step, Ran(Outcome("cancelled", "cancelled", False, cancel.reason), None, None,
                         b"", 0)
    started = time.monotonic()
    feed = live.attempt(job.id, job.attempt) if live is not None else nullcontext(None)
    try:
        with feed as on_stderr_line:
            result = await spawn_plugin(
                plugin.entrypoint, request, timeout=timeout, env=env, grace=kill_grace,
                credentials=rt.privsep.credentials_for(job.plugin),
                on_stderr_line=on_stderr_line, stop=cancel.requested,
            )
    except AccountDropError as exc:
        # The kernel refused the drop: the same drop would be refused again (plugin.drop_failed).
        outcome = Outcome("failed", "drop_failed", False, f"plugin.drop_failed: {exc}")
        return step, Ran(outcome, None, None, b"", _ms(started))
    except PluginSpawnError as exc:
        outcome = Outcome("failed", "spawn_error", True, f"plugin spawn failed: {exc}")
        return step, Ran(outcome, None, None, b"", _ms(started))
    if result.stopped:
        return step, Ran(Outcome("cancelled", "cancelled", False, cancel.reason), None,
                         result.exit_code, result.stderr, _ms(started))
    trace.stage = "reading the plugin response"
    return step, Ran(classify(result, timeout), result.stdout, result.exit_code, result.stderr,
                     _ms(started))


def compose_secrets(rt: Runtime, conf: PluginConf) -> tuple[dict[str, str], str | None]:
    """The vault secrets granted to the plugin's principal, composed fresh for this spawn (a
    roll or revoke through /vault/* applies to the next spawn without a reload). They travel
    only in the request's `secrets` field, never in env or argv.

    Fails the job closed (second item: the reason) when the plugin `requires_vault` and no
    vault is loaded or its principal cannot compose, and whenever its principal is revoked. A
    plugin with no principal registered, that does not require the vault, gets no secrets.
    """
    owner = rt.vault_owner
    if owner is None:
        if conf.requires_vault:
            return {}, (f"requires_vault: plugin {conf.name!r} requires the vault but none is "
                        "loaded (create one with ductile vault init, or set requires_vault: "
                        "false)")
        return {}, None
    try:
        composition = owner.compose(conf.principal)
    except VaultPrincipalUnavailable as exc:
        if conf.requires_vault or exc.reason == "revoked":
            return {}, (f"requires_vault: vault principal {conf.principal!r} of plugin "
                        f"{conf.name!r} cannot receive secrets: {exc}")
        return {}, None
    return dict(composition.secrets), None


def _switch(rt: Runtime, step: Step) -> Happened:
    """The built-in `core.switch` of a step `if:`, run in-process (no spawn)."""
    started = time.monotonic()
    if step.position is None or step.event is None:
        return NotRunnable("core.switch needs a pipeline step context and an event envelope")
    try:
        outcome = run_switch(rt.pipelines, step.position, step.event)
    except ConditionEvalError as exc:
        return NotRunnable(f"core.switch evaluate condition: {exc}")
    except RouterError as exc:
        return NotRunnable(f"core.switch route events: {exc}")
    return Switched(outcome, _ms(started))


async def _relay(rt: Runtime, job_id: str, step: Step) -> Happened:
    """The built-in `core.relay`: sign the step's envelope and deliver it to the instance.

    It answers the way a plugin would (a protocol v2 response, classified like one), so the
    ledger, retries and routing treat it as any other job: a receiver that is down or failing
    leaves the job retrying on the instance's `retry` policy; a refusal fails it for good; a
    202 succeeds it and routes `ductile.step.succeeded` with the receiver's ids."""
    from ductile.plugin.spawn import SpawnResult
    from ductile.relay.envelope import build_envelope
    from ductile.relay.sender import RelaySendError, send

    started = time.monotonic()
    if step.position is None or step.event is None:
        return NotRunnable("core.relay needs a pipeline step context and an event envelope")
    node = rt.pipelines.node(step.position.pipeline, step.position.step_id)
    spec = node.relay if node is not None else None
    try:
        parts = relay_parts(rt.pipelines, step.position, step.event)
    except (RouterError, ValueError) as exc:
        return NotRunnable(f"core.relay: {exc}")
    assert spec is not None
    target = rt.relay.target(spec.to)
    if target is None:
        return NotRunnable(f'relay instance "{spec.to}" not configured')
    allow = rt.relay.instances[spec.to].allow
    if allow and spec.event not in allow:
        return NotRunnable(f'relay instance "{spec.to}" does not allow event type '
                           f'"{spec.event}"')
    inner = step.event.get("payload")
    upstream = inner.get("ductile_upstream_plugin") if isinstance(inner, dict) else None
    event_id = step.event.get("event_id")
    origin = {"instance": rt.relay.sender, "job_id": job_id,
              "plugin": upstream if isinstance(upstream, str) else "",
              "event_id": event_id if isinstance(event_id, str) else ""}
    body = build_envelope(spec.event, parts.payload, origin=origin,
                          dedupe_key=parts.dedupe_key, baggage=parts.baggage or None)
    try:
        accepted = await send(target, body, clients=rt.relay.clients)
    except RelaySendError as exc:
        outcome = Outcome("failed", "relay_error", exc.retryable, str(exc))
        return Ran(outcome, None, None, b"", _ms(started))
    fields = {"relay_to": spec.to, "relay_event_type": spec.event,
              "relay_receiver_event_id": accepted.get("receiver_event_id", ""),
              "relay_receiver_peer": accepted.get("peer", ""),
              "relay_receiver_job_id": accepted.get("job_id", ""),
              "relay_acceptance_status": accepted.get("status", ""),
              "relay_acceptance_event_id": accepted.get("receiver_event_id", "")}
    answer = {"status": "ok", "result": f"relayed {spec.event} to {spec.to}",
              "events": [{"type": STEP_SUCCEEDED,
                          "payload": {**(inner if isinstance(inner, dict) else {}), **fields}}],
              "relay": {"status": "relayed", "to": spec.to, "event": spec.event,
                        "accepted": accepted}}
    stdout = json.dumps(answer, separators=(",", ":")).encode()
    duration = time.monotonic() - started
    result = SpawnResult(exit_code=0, signal=None, stdout=stdout, stderr=b"",
                         stdout_overflow=False, stderr_truncated=False, timed_out=False,
                         duration=duration, pid=None)
    return Ran(classify(result, target.timeout or 60.0), stdout, 0, b"", _ms(started))


def _payload_env(job_id: str, command: str, event: dict[str, Any] | None,
                 payload: Any) -> dict[str, str]:
    """DUCTILE_PAYLOAD_* for a plugin whose manifest asks for them: a handled event's payload,
    else the job's own."""
    if event is not None:
        inner = event.get("payload")
        event_type = event.get("type")
        return payload_environment(inner if isinstance(inner, dict) else {}, job_id=job_id,
                                   command=command,
                                   event_type=event_type if isinstance(event_type, str) else "")
    return payload_environment(payload if isinstance(payload, dict) else {}, job_id=job_id,
                               command=command)


def _event_for(command: str, payload: Any) -> dict[str, Any] | None:
    """`handle` receives its payload as an event; a raw object becomes the event's payload."""
    if command != "handle" or not isinstance(payload, dict) or not payload:
        return None
    if isinstance(payload.get("type"), str) and isinstance(payload.get("payload"), dict):
        return payload
    return {"type": "", "payload": payload}


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
