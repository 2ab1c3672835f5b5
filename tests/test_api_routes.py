"""The HTTP API against the real gateway: routes, JSON errors, auth, bad bodies."""

from __future__ import annotations

import httpx
import pytest

from gateway_util import READ_TOKEN, TOKEN, Gateway


def test_index_and_healthz_need_no_token(shared_gateway: Gateway) -> None:
    index = httpx.get(shared_gateway.url + "/")
    assert index.status_code == 200 and index.json()["name"] == "Ductile Gateway"
    health = httpx.get(shared_gateway.url + "/healthz").json()
    assert set(health) >= {"status", "uptime_seconds", "queue_depth", "plugins_loaded",
                           "posture", "version", "config_path"}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing or invalid Authorization header"),
        ({"Authorization": "Token abc"}, "invalid Authorization header format"),
        ({"Authorization": "Bearer nope"}, "invalid token"),
    ],
)
def test_missing_or_invalid_token_is_401_json(shared_gateway: Gateway, headers: dict,
                                             message: str) -> None:
    resp = httpx.post(shared_gateway.url + "/plugins/echo/run", json={}, headers=headers)
    assert resp.status_code == 401
    assert resp.json() == {"error": message}


def test_read_only_token_cannot_run_a_write_command(shared_gateway: Gateway) -> None:
    resp = shared_gateway.post("/plugins/echo/run", {"payload": {}, "command": "handle"},
                        token=READ_TOKEN)
    assert (resp.status_code, resp.json()) == (403, {"error": "insufficient scope"})
    ok = shared_gateway.post("/plugins/echo/run", {"payload": {}, "command": "poll"}, token=READ_TOKEN)
    assert ok.status_code == 202


def test_read_only_token_cannot_reach_jobs_without_jobs_scope(shared_gateway: Gateway) -> None:
    resp = shared_gateway.get("/jobs", token=READ_TOKEN)
    assert resp.status_code == 200  # READ_TOKEN has jobs:ro


def test_direct_enqueue_route_returns_202_and_the_job_is_visible(shared_gateway: Gateway) -> None:
    resp = shared_gateway.post("/plugin/echo/poll", {"payload": {"a": 1}})
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "queued" and body["plugin"] == "echo" and body["command"] == "poll"
    job = shared_gateway.get(f"/job/{body['job_id']}").json()
    assert job["job_id"] == body["job_id"]
    listed = shared_gateway.get("/jobs", params={"plugin": "echo"}).json()
    assert body["job_id"] in [j["job_id"] for j in listed["jobs"]]


def test_run_defaults_to_handle_and_wraps_the_payload_as_an_event(shared_gateway: Gateway) -> None:
    body = shared_gateway.post("/plugins/echo/run", {"payload": {"k": "v"}, "sync": True}).json()
    assert body["command"] == "handle"
    assert body["result"]["events"][0]["payload"]["payload"] == {"k": "v"}


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/plugins/nope/run", {}, 404, "plugin 'nope' not found"),
        ("/plugins/echo/run", {"command": "explode"}, 400, "command 'explode' not supported"),
        ("/plugins/echo/run", {"payload": [1, 2]}, 400, "payload must be a JSON object"),
        ("/plugins/echo/run", {"sync": "yes"}, 400, "sync must be true or false"),
        ("/plugins/echo/run", {"paylod": {}}, 400, "unknown field(s) in body: paylod"),
        ("/plugin/nope/poll", {}, 400, "plugin not found"),
        ("/plugin/echo/explode", {}, 400, "command not supported by plugin"),
    ],
)
def test_bad_requests_get_a_json_error_naming_the_problem(
    shared_gateway: Gateway, path: str, body: dict, status: int, needle: str
) -> None:
    resp = shared_gateway.post(path, body)
    assert resp.status_code == status
    assert needle in resp.json()["error"]


def test_invalid_json_body_is_400(shared_gateway: Gateway) -> None:
    resp = httpx.post(shared_gateway.url + "/plugins/echo/run", content=b"{not json",
                      headers={**shared_gateway.headers(), "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("invalid JSON body")


def test_oversized_body_is_413_json(shared_gateway: Gateway) -> None:
    big = b'{"payload": {"x": "' + b"a" * (2 * 1024 * 1024) + b'"}}'
    resp = httpx.post(shared_gateway.url + "/plugins/echo/run", content=big,
                      headers={**shared_gateway.headers(), "Content-Type": "application/json"})
    assert resp.status_code == 413
    assert "request body too large" in resp.json()["error"]
    assert httpx.get(shared_gateway.url + "/healthz").status_code == 200


def test_unknown_route_and_wrong_method_are_json(shared_gateway: Gateway) -> None:
    missing = httpx.get(shared_gateway.url + "/nowhere")
    assert missing.status_code == 404 and "no route for GET /nowhere" in missing.json()["error"]
    wrong = httpx.delete(shared_gateway.url + "/healthz")
    assert wrong.status_code == 405 and "not allowed" in wrong.json()["error"]


def test_unknown_job_is_404(shared_gateway: Gateway) -> None:
    resp = shared_gateway.get("/job/00000000-0000-0000-0000-000000000000")
    assert (resp.status_code, resp.json()) == (404, {"error": "job not found"})


@pytest.mark.parametrize(("query", "message"), [
    ({"limit": "0"}, "limit must be a positive integer"),
    ({"limit": "abc"}, "limit must be a positive integer"),
    ({"limit": "201"}, "limit must be <= 200"),
    ({"status": "exploded"}, "invalid status filter"),
])
def test_jobs_query_validation(shared_gateway: Gateway, query: dict, message: str) -> None:
    resp = shared_gateway.get("/jobs", params=query)
    assert (resp.status_code, resp.json()) == (400, {"error": message})


def test_jobs_status_aliases(shared_gateway: Gateway) -> None:
    shared_gateway.post("/plugins/echo/run", {"payload": {}, "sync": True})
    ok = shared_gateway.get("/jobs", params={"status": "ok"}).json()
    assert ok["total"] >= 1 and all(j["status"] == "succeeded" for j in ok["jobs"])


def test_plugins_catalog_and_detail(shared_gateway: Gateway) -> None:
    catalog = shared_gateway.get("/plugins").json()["plugins"]
    names = [p["name"] for p in catalog]
    assert "echo" in names and names == sorted(names)  # every discovered bundled plugin
    detail = shared_gateway.get("/plugin/echo").json()
    assert detail["protocol"] == 2
    assert {c["name"]: c["type"] for c in detail["commands"]}["handle"] == "write"
    assert shared_gateway.get("/plugin/nope").status_code == 404
    assert TOKEN


def test_sync_wait_runs_out_with_202_and_the_job_id(tmp_path) -> None:
    from gateway_util import free_port, write_config

    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, api={"max_sync_timeout": "300ms",
                                                          "max_concurrent_sync": 1},
                       plugins={"echo": {"enabled": True, "config": {"sleep": 1.5}}})
    gw = Gateway(cfg, port=port).start()
    try:
        resp = gw.post("/plugins/echo/run", {"payload": {}, "sync": True})
        assert resp.status_code == 202
        body = resp.json()
        assert body["timeout_exceeded"] is True and body["job_id"]
        finished = gw.post("/plugins/echo/run", {"payload": {}, "sync": True})
        assert finished.status_code == 202  # still slower than the cap
        import time
        for _ in range(100):
            if gw.get(f"/job/{body['job_id']}").json()["status"] == "succeeded":
                break
            time.sleep(0.05)
        assert gw.get(f"/job/{body['job_id']}").json()["status"] == "succeeded"
    finally:
        gw.stop()


def test_too_many_concurrent_sync_waits_get_503_and_the_job_stays_queued(tmp_path) -> None:
    import threading

    from gateway_util import free_port, write_config

    port = free_port()
    cfg = write_config(tmp_path / "cfg", port=port, api={"max_concurrent_sync": 1},
                       plugins={"echo": {"enabled": True, "config": {"sleep": 1.0}}})
    gw = Gateway(cfg, port=port).start()
    try:
        first: list = []
        waiter = threading.Thread(target=lambda: first.append(
            gw.post("/plugins/echo/run", {"payload": {}, "sync": True})))
        waiter.start()
        for _ in range(200):  # until the first wait holds the only slot
            if gw.get("/jobs").json()["total"] >= 1:
                break
            import time
            time.sleep(0.01)
        second = gw.post("/plugins/echo/run", {"payload": {}, "sync": True})
        waiter.join(30)
        assert second.status_code == 503
        assert "too many concurrent synchronous requests" in second.json()["error"]
        assert second.json()["job_id"]
        assert first[0].status_code == 200
    finally:
        gw.stop()


def test_early_error_responses_never_stall_a_keep_alive_connection(
    shared_gateway: Gateway,
) -> None:
    # Regression: answering before reading the body (401, 404) used to leave the connection
    # hanging for the next request on it.
    gw = shared_gateway
    body = {"payload": {"x": "y" * 200}}
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        for _ in range(300):
            assert client.get("/healthz").status_code == 200
            assert client.post("/plugins/nosuch/run", json=body,
                               headers=gw.headers()).status_code == 404
            assert client.post("/plugins/echo/run", json=body,
                               headers={"Authorization": "Bearer bad"}).status_code == 401
            assert client.post("/nowhere", json=body).status_code == 404


def test_a_dedupe_key_returns_the_existing_job_instead_of_a_second_one(
    shared_gateway: Gateway,
) -> None:
    gw = shared_gateway
    first = gw.post("/plugins/echo/run", {"payload": {}, "command": "poll",
                                          "dedupe_key": "order-42", "sync": True})
    assert first.status_code == 200 and first.json()["status"] == "succeeded"
    again = gw.post("/plugins/echo/run", {"payload": {}, "command": "poll",
                                          "dedupe_key": "order-42"})
    assert again.status_code == 200
    assert again.json() == {"job_id": first.json()["job_id"], "status": "succeeded",
                            "plugin": "echo", "command": "poll", "deduplicated": True}
    direct = gw.post("/plugin/echo/poll", {"payload": {}, "dedupe_key": "order-42"})
    assert direct.status_code == 200 and direct.json()["deduplicated"] is True
    other_command = gw.post("/plugin/echo/health", {"dedupe_key": "order-42"})
    assert other_command.status_code == 202  # scoped to plugin + command
    bad = gw.post("/plugins/echo/run", {"dedupe_key": ""})
    assert bad.status_code == 400 and "dedupe_key" in bad.json()["error"]


def test_job_logs_route_searches_terminal_attempts(shared_gateway: Gateway) -> None:
    gw = shared_gateway
    job = gw.post("/plugins/echo/run", {"payload": {"needle": "haystack-7"},
                                        "sync": True}).json()
    found = gw.get("/job-logs", params={"query": "haystack-7", "include_result": "true"}).json()
    assert [e["job_id"] for e in found["logs"]] == [job["job_id"]]
    assert "haystack-7" in found["logs"][0]["result"]
    without = gw.get("/job-logs", params={"job_id": job["job_id"]}).json()
    assert "result" not in without["logs"][0]
    for params, message in (({"from": "nope"}, "invalid from timestamp"),
                            ({"limit": "500"}, "limit must be <= 200"),
                            ({"status": "weird"}, "invalid status filter")):
        resp = gw.get("/job-logs", params=params)
        assert resp.status_code == 400 and message in resp.json()["error"]


def test_odd_paths_get_json_never_an_html_redirect(shared_gateway: Gateway) -> None:
    for path in ("/job/..%2F/tree", "/job//tree", "/scheduler//jobs"):
        resp = shared_gateway.get(path, follow_redirects=False)
        assert resp.status_code == 404, (path, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/json")
        assert "error" in resp.json()
    assert shared_gateway.get("/healthz/").json()["status"] == "ok"
