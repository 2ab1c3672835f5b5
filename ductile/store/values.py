"""What a caller's values become before they reach SQL: job rows, payload JSON, bounded text.

No connection, no clock, no SQL: the row of a new queued job (its payload encoded,
its dedupe key and attempt budget normalised), the payload encoding the queue stores
(`RawJSON` keeps a signed webhook body byte for byte), and the UTF-8 truncation that bounds the
stderr kept in job_log and job_attempts. They are separate from the queue's SQL so they run on
the caller's side, before the write (bad input fails before anything is written), and so
property tests (and a second store backend) use them without a database.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ductile.errors import StoreError
from ductile.store.jobs import Job

DEFAULT_MAX_ATTEMPTS = 4  # a job's attempt budget when its caller gives none (or not > 0)


class RawJSON(str):
    """JSON text the caller already validated, stored byte for byte (a webhook body keeps the
    exact bytes its sender signed)."""


def encode_payload(payload: Any) -> str | None:
    """Compact JSON text of the payload (None stays NULL); refuses what JSON cannot carry."""
    if payload is None:
        return None
    if isinstance(payload, RawJSON):
        return str(payload)
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"payload is not JSON-serialisable: {exc}") from exc


def truncate_head(text: str | None, limit: int) -> str | None:
    """The first `limit` bytes of `text` as UTF-8, never splitting a character."""
    if text is None:
        return None
    data = _utf8(text)
    return data[:limit].decode("utf-8", "ignore") if len(data) > limit else data.decode("utf-8")


def truncate_tail(text: str | None, limit: int) -> str | None:
    """The last `limit` bytes of `text` as UTF-8: where a failing plugin says why."""
    if text is None:
        return None
    data = _utf8(text)
    start = max(0, len(data) - limit)
    return data[start:].decode("utf-8", "ignore")


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`; lone surrogates (from undecodable process output) become `?`
    so SQLite, which refuses them, always gets valid text."""
    return text.encode("utf-8", "replace")


def require_text(**values: Any) -> None:
    """Refuse (StoreError) a value that is not a non-blank string, naming it."""
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise StoreError(f"{name} is empty")


def queued_job(
    *,
    plugin: str,
    command: str,
    payload: Any,
    submitted_by: str,
    max_attempts: int,
    dedupe_key: str | None,
    created_at: str,
    parent_job_id: str | None,
    source_event_id: str | None,
    event_context_id: str | None,
    snapshot_id: str | None,
) -> Job:
    """The row of a new queued job (attempt 1, stamped with the live config snapshot)."""
    key = dedupe_key.strip() if dedupe_key and dedupe_key.strip() else None
    return Job(
        id=str(uuid.uuid4()),
        plugin=plugin,
        command=command,
        payload=encode_payload(payload),
        status="queued",
        attempt=1,
        max_attempts=max_attempts if max_attempts > 0 else DEFAULT_MAX_ATTEMPTS,
        submitted_by=submitted_by,
        dedupe_key=key,
        created_at=created_at,
        started_at=None,
        completed_at=None,
        next_retry_at=None,
        last_error=None,
        parent_job_id=parent_job_id,
        source_event_id=source_event_id,
        event_context_id=event_context_id,
        enqueued_config_snapshot_id=snapshot_id,
        started_config_snapshot_id=None,
    )
