"""The log line's timestamp: formatted once per second, the same text as formatting each time."""

from __future__ import annotations

import io
import json
import time

from ductile.logs import Logger, _timestamp


def _formatted(now: float) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + f".{int(now * 1000) % 1000:03d}Z")


def test_timestamps_match_a_fresh_format_across_second_boundaries() -> None:
    start = 1_780_000_000.0
    # Within a second, across a boundary, back in time (a clock stepped back), far ahead.
    for now in (start + 0.001, start + 0.999, start + 1.0, start + 1.5, start + 0.25,
                start + 86_400 * 400 + 0.0625, start + 2.004):
        assert _timestamp(now) == _formatted(now), now


def test_a_log_line_is_compact_json_with_the_time_level_component_and_fields() -> None:
    out = io.StringIO()
    Logger("webhook", stream=out).info("webhook request", status=202, path="/h", obj=object)
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1 and ", " not in line
    record = json.loads(line)
    assert record["level"] == "INFO" and record["component"] == "webhook"
    assert record["msg"] == "webhook request" and record["status"] == 202
    assert record["obj"] == str(object)  # anything JSON cannot carry is logged as its str
    assert record["time"].endswith("Z") and len(record["time"]) == len("2026-01-01T00:00:00.000Z")
