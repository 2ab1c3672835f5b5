"""Classify one plugin attempt: succeeded, or failed/timed out and whether a retry is allowed.

Pure logic over the spawn result and the decoded response, kept
apart from the dispatcher's I/O so each rule has a direct test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ductile.config.durations import format_duration
from ductile.errors import ProtocolError
from ductile.plugin.protocol import Response, decode_response
from ductile.plugin.spawn import SpawnResult

EXIT_PERMANENT = 78  # EX_CONFIG: the plugin says retrying cannot help


@dataclass(frozen=True)
class Outcome:
    status: str  # succeeded | failed | timed_out | cancelled (an operator's or the scheduler's)
    reason: str  # ok | timeout | spawn_error | plugin_error | plugin_retry_false | exit_code_78
    retryable: bool
    error: str | None = None
    response: Response | None = None


def classify(result: SpawnResult, timeout: float) -> Outcome:
    if result.timed_out:
        return Outcome(
            "timed_out",
            "timeout",
            True,
            f"plugin execution timed out after {format_duration(timeout)}",
        )
    permanent = result.exit_code == EXIT_PERMANENT
    if result.stdout_overflow:
        return Outcome(
            "failed",
            "exit_code_78" if permanent else "spawn_error",
            not permanent,
            "plugin spawn failed: plugin stdout exceeded max size 10485760 bytes",
        )
    try:
        response = decode_response(result.stdout)
    except ProtocolError as exc:
        detail = f"plugin spawn failed: decode response: {exc}"
        if result.exit_code not in (0, None):
            detail += f" (exit code {result.exit_code})"
        elif result.signal is not None:
            detail += f" (killed by signal {result.signal})"
        return Outcome(
            "failed", "exit_code_78" if permanent else "spawn_error", not permanent, detail
        )
    if response.status == "ok":
        return Outcome("succeeded", "ok", False, None, response)
    if permanent:
        return Outcome("failed", "exit_code_78", False, response.error, response)
    if response.retry is False:
        return Outcome("failed", "plugin_retry_false", False, response.error, response)
    return Outcome("failed", "plugin_error", True, response.error, response)


def backoff_delay(base: float, attempt: int, rng: random.Random | None = None) -> float:
    """`base * 2^(attempt-1)` plus jitter uniform in [0, base/4]: 30 s, 60 s, 120 s, ..."""
    jitter = (rng or random).uniform(0, base / 4) if base > 0 else 0.0
    return base * (2 ** max(0, attempt - 1)) + jitter
