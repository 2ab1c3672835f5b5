"""Stored timestamps and the job record."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ductile.errors import StoreError
from ductile.store.jobs import Job, format_time, parse_time, utcnow_text


def test_timestamps_are_fixed_width_utc() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2026-01-02T01:04:05.000000Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 120000)) == "2026-01-02T03:04:05.120000Z"
    assert len(utcnow_text()) == len("2026-01-02T01:04:05.000000Z")


def test_fixed_width_text_sorts_in_time_order() -> None:
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    moments = [base + timedelta(microseconds=n) for n in (0, 1, 10, 100_000, 150_000, 1_000_000)]
    texts = [format_time(m) for m in moments]
    assert sorted(texts) == texts


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-02T03:04:05.1Z",  # Go trims trailing zeros
        "2026-01-02T03:04:05.100000Z",
        "2026-01-02T03:04:05.100000001Z",  # nanoseconds
        "2026-01-02T05:04:05.1+02:00",
    ],
)
def test_parse_time_reads_ours_and_go_rfc3339nano(text: str) -> None:
    assert parse_time(text) == datetime(2026, 1, 2, 3, 4, 5, 100000, tzinfo=timezone.utc)


def test_parse_time_refuses_garbage() -> None:
    with pytest.raises(StoreError, match="invalid timestamp 'yesterday'"):
        parse_time("yesterday")


def test_a_bad_stored_payload_is_a_store_error() -> None:
    job = Job(
        id="j1", plugin="echo", command="poll", payload="{oops", status="queued", attempt=1,
        max_attempts=4, submitted_by="api", dedupe_key=None, created_at=utcnow_text(),
        started_at=None, completed_at=None, next_retry_at=None, last_error=None,
        parent_job_id=None, source_event_id=None, event_context_id=None,
        enqueued_config_snapshot_id=None, started_config_snapshot_id=None,
    )
    with pytest.raises(StoreError, match="job j1: stored payload is not valid JSON"):
        job.payload_obj()
    assert Job.from_row(job.as_dict()) == job
