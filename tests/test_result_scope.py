"""The result-class scope `jobs:result:ro` against a real gateway: a token holding only the
narrow `jobs:status:ro`, `jobs:tree:ro` and `jobs:logs:ro` sees the ledger without a job's
output (`result`, `last_error`, `stderr`) on every route that shows it, while a token holding
`jobs:ro` sees it all; the stderr stream refuses the narrow token; `GET /events` strips the
error fields for it. The pure rule is tested first."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ductile.cli.follow import SseEvent, SseParser
from ductile.config.scopes import effective
from ductile.events.hub import Event
from ductile.planes.api.auth import Principal
from ductile.planes.api.resultscope import (TREE_FIELDS, event_frame, may_see_results,
                                            strip_result_class, transition_view)
from support.gateway import Gateway, free_port, make_vault, write_config
from support.plugins import make_plugin

ALL = "all-token-0123456789abcdef"
NARROW = "narrow-token-0123456789abcdef"
BROAD = "broad-token-0123456789abcdef"

# Writes a line to stderr; fails for good when asked to, else answers with a result.
PLUGIN = """
import json, sys
request = json.load(sys.stdin)
event = request.get("event") or {}
sys.stderr.write("stderr-secret line\\n")
sys.stderr.flush()
if (event.get("payload") or {}).get("fail"):
    print(json.dumps({"status": "error", "error": "error-secret: asked to fail",
                      "retry": False}))
else:
    print(json.dumps({"status": "ok", "result": {"answer": "result-secret"}}))
"""


def _principal(*scopes: str) -> Principal:
    return Principal("t", effective(scopes))


# --- the rule, pure ----------------------------------------------------------------------------

@pytest.mark.parametrize(("scopes", "sees"), [
    (("jobs:status:ro", "jobs:tree:ro", "jobs:logs:ro"), False),
    (("jobs:result:ro",), True), (("jobs:ro",), True), (("jobs:rw",), True), (("*",), True),
    (("plugin:rw", "events:rw", "system:rw"), False),
])
def test_who_sees_results(scopes: tuple[str, ...], sees: bool) -> None:
    assert may_see_results(_principal(*scopes)) is sees


def test_no_principal_sees_nothing_result_class() -> None:
    assert not may_see_results(None)
    assert strip_result_class({"result": 1, "status": "ok"}, None) == {"status": "ok"}


def test_strip_omits_the_fields_and_keeps_the_rest() -> None:
    view = {"job_id": "j", "status": "failed", "result": None, "last_error": "boom",
            "stderr": "x", "baggage": {"k": 1}}
    narrow = _principal("jobs:status:ro")
    assert strip_result_class(view, narrow) == {"job_id": "j", "status": "failed",
                                                "baggage": {"k": 1}}
    assert strip_result_class(view, narrow, TREE_FIELDS) == {"job_id": "j", "status": "failed"}
    assert strip_result_class(view, _principal("jobs:ro")) == view
    assert "last_error" in view  # a copy: the view given is left alone


def test_a_transition_keeps_its_code_only() -> None:
    row = {"to_status": "failed", "reason": "plugin_error: error-secret: boom"}
    assert transition_view(row, _principal("jobs:status:ro"))["reason"] == "plugin_error"
    assert transition_view(row, _principal("*")) == row
    plain = {"to_status": "queued", "reason": "enqueued by api"}
    assert transition_view(plain, _principal("jobs:status:ro")) == plain


def test_an_event_frame_is_reencoded_without_the_error_fields() -> None:
    data = {"at": "2026-01-01T00:00:00Z", "job_id": "j", "error": "e", "final_error": "f"}
    event = Event(7, "job.failed", data["at"], json.dumps(data, separators=(",", ":")), data)
    assert event_frame(event, _principal("*")) == event.frame()
    frame = event_frame(event, _principal("events:ro"))
    assert frame == ('id: 7\nevent: job.failed\n'
                     'data: {"at":"2026-01-01T00:00:00Z","job_id":"j"}\n\n')
    plain = Event(8, "job.started", data["at"], '{"at":"x"}', {"at": "x"})
    assert event_frame(plain, _principal("events:ro")) == plain.frame()


# --- a real gateway ----------------------------------------------------------------------------

class Jobs:
    def __init__(self, gw: Gateway, failed: str, succeeded: str) -> None:
        self.gw, self.failed, self.succeeded = gw, failed, succeeded


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    base = Path(tmp_path_factory.mktemp("resultscope"))
    roots = base / "plugins"
    make_plugin(roots, "quick", PLUGIN, shebang=f"#!{sys.executable}")
    cfg = base / "cfg"
    make_vault(cfg, {"all": ALL, "narrow": NARROW, "broad": BROAD})
    port = free_port()
    write_config(cfg, port=port, plugin_roots=[str(roots)],
                 plugins={"quick": {"enabled": True, "retry": {"max_attempts": 1}}},
                 api={"auth": {"tokens": [
                     {"secret_ref": "all", "scopes": ["*"]},
                     {"secret_ref": "narrow", "scopes": ["jobs:status:ro", "jobs:tree:ro",
                                                         "jobs:logs:ro", "events:ro"]},
                     {"secret_ref": "broad", "scopes": ["jobs:ro", "events:ro"]}]}})
    gw = Gateway(cfg, port=port).start(wait=False)
    try:
        gw.wait_healthy(token=ALL)
        ids = []
        for fail in (True, False):
            resp = gw.post("/plugins/quick/run", {"payload": {"fail": fail}, "sync": True},
                           token=ALL)
            assert resp.status_code == 200, resp.text
            ids.append(str(resp.json()["job_id"]))
        yield Jobs(gw, *ids)
    finally:
        gw.stop()


def _get(jobs: Jobs, path: str, token: str) -> Any:
    resp = jobs.gw.get(path, token=token)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_get_job(jobs: Jobs) -> None:
    failed = _get(jobs, f"/job/{jobs.failed}", BROAD)
    assert "error-secret" in failed["last_error"]
    assert "result-secret" in json.dumps(_get(jobs, f"/job/{jobs.succeeded}", BROAD)["result"])
    for job_id in (jobs.failed, jobs.succeeded):
        body = _get(jobs, f"/job/{job_id}", NARROW)
        assert body["status"] in ("failed", "succeeded")
        assert not {"result", "last_error", "stderr"} & set(body), body
    assert _get(jobs, f"/job/{jobs.failed}", NARROW)["status"] == "failed"


def test_job_tree(jobs: Jobs) -> None:
    for job_id in (jobs.failed, jobs.succeeded):
        [broad] = _get(jobs, f"/job/{job_id}/tree", BROAD)
        assert {"result", "last_error", "baggage"} <= set(broad)
        [narrow] = _get(jobs, f"/job/{job_id}/tree", NARROW)
        assert narrow["job_id"] == job_id and narrow["status"] == broad["status"]
        assert not {"result", "last_error", "stderr", "baggage"} & set(narrow), narrow
    [failed] = _get(jobs, f"/job/{jobs.failed}/tree", BROAD)
    assert "error-secret" in failed["last_error"]


def test_job_logs(jobs: Jobs) -> None:
    path = f"/job-logs?job_id={{}}&include_result=true"
    [failed] = _get(jobs, path.format(jobs.failed), BROAD)["logs"]
    assert "error-secret" in failed["last_error"] and "stderr-secret" in failed["stderr"]
    [succeeded] = _get(jobs, path.format(jobs.succeeded), BROAD)["logs"]
    assert "result-secret" in json.dumps(succeeded["result"])
    for job_id in (jobs.failed, jobs.succeeded):
        body = _get(jobs, path.format(job_id), NARROW)
        [row] = body["logs"]
        assert row["job_id"] == job_id and body["total"] == 1
        assert not {"result", "last_error", "stderr"} & set(row), row


def test_job_logs_query_searches_hidden_text_so_needs_the_scope(jobs: Jobs) -> None:
    found = _get(jobs, "/job-logs?query=stderr-secret", BROAD)
    assert found["total"] == 2
    resp = jobs.gw.get("/job-logs?query=stderr-secret", token=NARROW)
    assert resp.status_code == 403
    assert resp.json()["error"].startswith("insufficient scope")
    assert "jobs:result:ro" in resp.json()["error"]


def test_the_web_ledger(jobs: Jobs) -> None:
    path = f"/ui/api/job/{jobs.failed}/ledger"
    broad = _get(jobs, path, BROAD)
    assert any("error-secret" in (a.get("error") or "") for a in broad["attempts"])
    assert any("error-secret" in (t.get("reason") or "") for t in broad["transitions"])
    narrow = _get(jobs, path, NARROW)
    assert len(narrow["attempts"]) == len(broad["attempts"])
    assert all("error" not in a for a in narrow["attempts"])
    assert [t["to_status"] for t in narrow["transitions"]] == \
        [t["to_status"] for t in broad["transitions"]]
    assert "error-secret" not in json.dumps(narrow)


def test_the_stderr_stream_refuses_a_token_without_the_scope(jobs: Jobs) -> None:
    path = f"/job/{jobs.failed}/logs/stream"
    resp = jobs.gw.get(path, token=NARROW)
    assert resp.status_code == 403
    assert "jobs:result:ro" in resp.json()["error"]
    # The refusal comes before the lookup: it does not tell whether a job id exists.
    assert jobs.gw.get("/job/no-such-job/logs/stream", token=NARROW).status_code == 403
    events = _events(jobs.gw, path, BROAD, lambda e: e.event == "end")
    assert any(e.event == "line" and "stderr-secret" in e.data for e in events)
    assert "error-secret" in json.loads(events[-1].data)["last_error"]


def test_events_leave_the_error_fields_out_for_a_token_without_the_scope(jobs: Jobs) -> None:
    def last_failure(e: SseEvent) -> bool:
        return e.event == "job.failed" and json.loads(e.data)["job_id"] == jobs.failed

    path = f"/events?job={jobs.failed}&last_event_id=0"
    broad = {e.event: json.loads(e.data) for e in _events(jobs.gw, path, BROAD, last_failure)}
    narrow = {e.event: json.loads(e.data) for e in _events(jobs.gw, path, NARROW, last_failure)}
    assert set(narrow) == set(broad) >= {"job.enqueued", "job.started", "job.retry_exhausted",
                                         "job.failed"}
    assert "error-secret" in broad["job.failed"]["error"]
    assert "error-secret" in broad["job.retry_exhausted"]["final_error"]
    for kind, body in narrow.items():
        assert "error-secret" not in json.dumps(body), kind
        assert {k: v for k, v in broad[kind].items()
                if k not in ("error", "final_error")} == body


def _events(gw: Gateway, path: str, token: str, last: Any) -> list[SseEvent]:
    """The events of the stream at `path` up to the first that `last` accepts (included)."""
    parser = SseParser()
    seen: list[SseEvent] = []
    with httpx.stream("GET", gw.url + path, headers=gw.headers(token),
                      timeout=httpx.Timeout(10.0, read=30.0)) as resp:
        assert resp.status_code == 200, resp.read()
        for chunk in resp.iter_text():
            for event in parser.feed(chunk):
                seen.append(event)
                if last(event):
                    return seen
    raise AssertionError(f"the stream ended before the awaited event: {seen}")
