"""The HTTP API against the real gateway: routes, JSON errors, auth, bad bodies."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from support.gateway import READ_TOKEN, TOKEN, Gateway, raw_exchange


def test_index_and_healthz_need_no_token(shared_gateway: Gateway) -> None:
    index = httpx.get(shared_gateway.url + "/")
    assert index.status_code == 200 and index.json()["name"] == "Ductile Gateway"
    health = httpx.get(shared_gateway.url + "/healthz").json()
    assert health == {"status": "ok", "posture": "gateway", "version": health["version"]}


def test_healthz_details_need_a_valid_token_of_any_scope(shared_gateway: Gateway) -> None:
    detailed = shared_gateway.get("/healthz", token=READ_TOKEN).json()
    assert set(detailed) >= {"status", "uptime_seconds", "queue_depth", "plugins_loaded",
                             "posture", "version", "config_path", "binary_path", "generation",
                             "snapshot_id"}
    wrong = shared_gateway.get("/healthz", token="not-a-token")
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid token"}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(shared_gateway: Gateway, scheme: str) -> None:
    resp = httpx.get(shared_gateway.url + "/plugins",
                     headers={"Authorization": f"{scheme} {TOKEN}"})
    assert resp.status_code == 200, resp.text


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
        ("/plugins/echo/run", {"payload": [1, 2]}, 400,
         "field payload must be a JSON object for command handle (it becomes the payload of an "
         "api.trigger event); got an array"),
        ("/plugin/echo/handle", {"payload": "text"}, 400,
         "field payload must be a JSON object for command handle"),
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
    assert wrong.headers["allow"] == "GET, HEAD"
    post_only = httpx.get(shared_gateway.url + "/pipeline/x")
    assert post_only.status_code == 405 and post_only.headers["allow"] == "POST"
    assert httpx.get(shared_gateway.url + "/scheduler/pause").headers["allow"] == "POST"


def test_unknown_job_is_404(shared_gateway: Gateway) -> None:
    resp = shared_gateway.get("/job/00000000-0000-0000-0000-000000000000")
    assert (resp.status_code, resp.json()) == (404, {"error": "job not found"})


@pytest.mark.parametrize(("query", "message"), [
    ({"limit": "0"}, "limit must be an integer from 1 to 200, got '0'"),
    ({"limit": "abc"}, "limit must be an integer from 1 to 200, got 'abc'"),
    ({"limit": "201"}, "limit must be an integer from 1 to 200, got '201'"),
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
    from support.gateway import free_port, write_config

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

    from support.gateway import free_port, write_config

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
    assert "haystack-7" in json.dumps(found["logs"][0]["result"])  # an object, as in Go
    without = gw.get("/job-logs", params={"job_id": job["job_id"]}).json()
    assert "result" not in without["logs"][0]
    for params, message in (({"from": "nope"}, "invalid from timestamp"),
                            ({"limit": "500"}, "limit must be an integer from 1 to 200"),
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


# --- hostile input: every refusal is a 4xx naming the field, never a 500 or a 503 -------------


def post_raw(gw: Gateway, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(gw.url + path, content=raw, timeout=30,
                      headers={**gw.headers(), "Content-Type": "application/json"})


@pytest.mark.parametrize("path", ["/plugin/echo/poll", "/plugins/echo/run"])
@pytest.mark.parametrize(("raw", "message"), [
    (b'{"payload": "\\ud800"}', "invalid JSON body: field payload contains a lone surrogate "
                                "\\ud800, which is not valid Unicode"),
    (b'{"payload": {"k": ["\\udc00"]}}', "field payload.k[0] contains a lone surrogate \\udc00"),
    (b'{"payload": {"\\ud800": 1}}', "field payload has a key that contains a lone surrogate"),
    (b'{"payload": {"n": 1e999}}', "invalid JSON body: field payload.n holds the out-of-range "
                                   "number 1e999; numbers must be finite"),
    (b'{"payload": {"n": -1e999}}', "field payload.n holds the out-of-range number -1e999"),
    (b'{"payload": {"n": NaN}}', "field payload.n holds NaN, which is not JSON"),
    (b'{"payload": {"n": Infinity}}', "field payload.n holds Infinity, which is not JSON"),
    (b'{"payload": {"n": 1' + b"0" * 5000 + b"}}", "field payload.n holds the out-of-range"),
    (b'{"payload": ' + b'{"a":' * 950 + b"1" + b"}" * 951,
     "invalid JSON body: the body nests objects/arrays 951 levels deep; at most 64 levels are "
     "allowed"),
    (b'{"payload": ' + b"[" * 5000 + b"]" * 5000 + b"}", "at most 64 levels"),
    (b'{"payload": {}, "dedupe_key": "\\ud800"}', "field dedupe_key contains a lone surrogate"),
    (b"\xff\xfe{}", "invalid JSON body: the body is not UTF-8"),
])
def test_hostile_json_bodies_get_400_naming_the_field(shared_gateway: Gateway, path: str,
                                                       raw: bytes, message: str) -> None:
    resp = post_raw(shared_gateway, path, raw)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]


def test_the_deepest_accepted_payload_runs(shared_gateway: Gateway) -> None:
    # 64 levels: the body's object, then 63 nested in payload.
    for command in ("poll", "handle"):
        raw = (b'{"sync": true, "command": "%s", "payload": ' % command.encode()
               + b'{"a":' * 63 + b"1" + b"}" * 64)
        resp = post_raw(shared_gateway, "/plugins/echo/run", raw)
        assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    too_deep = post_raw(shared_gateway, "/plugins/echo/run",
                        b'{"payload": ' + b'{"a":' * 64 + b"1" + b"}" * 65)
    assert too_deep.status_code == 400 and "65 levels deep" in too_deep.json()["error"]


@pytest.mark.parametrize("payload", [None, {}, {"k": "v"}, {"n": 42, "list": [1, "two"]}])
def test_an_object_payload_or_none_is_accepted_by_a_non_handle_command_and_runs(
    shared_gateway: Gateway, payload: object
) -> None:
    gw = shared_gateway
    for path in ("/plugin/echo/poll", "/plugins/echo/run"):
        body: dict = {"payload": payload}
        if path == "/plugins/echo/run":
            body.update(command="poll", sync=True)
        resp = gw.post(path, body)
        assert resp.status_code in (200, 202), resp.text
        job_id = resp.json()["job_id"]
        deadline = time.monotonic() + 15
        while gw.get(f"/job/{job_id}").json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job = gw.get(f"/job/{job_id}").json()
        assert job["status"] == "succeeded", job


@pytest.mark.parametrize(("payload", "kind"), [(42, "a number"), ("text", "a string"),
                                               ([1, "two"], "an array"), (True, "a boolean"),
                                               (1.5, "a number"), ("", "a string")])
def test_a_payload_that_is_not_an_object_is_refused_on_every_route(
    shared_gateway: Gateway, payload: object, kind: str
) -> None:
    """A protocol v2 request carries the payload as an object: any other value would be
    dropped on its way to the plugin, so it is refused (the token with only plugin:ro too,
    which is how one `{"payload": 42}` once took the gateway down)."""
    from support.gateway import READ_TOKEN

    gw = shared_gateway
    for path, body, token in (
        ("/plugin/echo/poll", {"payload": payload}, READ_TOKEN),
        ("/plugin/echo/poll", {"payload": payload}, TOKEN),
        ("/plugins/echo/run", {"payload": payload, "command": "poll"}, TOKEN),
        ("/plugins/echo/run", {"payload": payload}, TOKEN),
    ):
        resp = gw.post(path, body, token=token)
        assert resp.status_code == 400, (path, resp.text)
        error = resp.json()["error"]
        assert error.startswith("field payload must be a JSON object"), error
        assert error.endswith(f"got {kind}"), error
    assert gw.get("/healthz").status_code == 200


@pytest.mark.parametrize("payload", [None, {}, {"k": "v"}])
def test_handle_accepts_an_object_or_nothing(shared_gateway: Gateway, payload: object) -> None:
    resp = shared_gateway.post("/plugins/echo/run", {"payload": payload, "sync": True})
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text


@pytest.mark.parametrize(("route", "params", "message"), [
    ("/job-logs", {"from": "9999-12-31T23:59:59-23:59"},
     "from timestamp 9999-12-31T23:59:59-23:59 is out of range: it must lie in "
     "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z once converted to UTC"),
    ("/job-logs", {"since": "0001-01-01T00:00:00+23:59"}, "since timestamp"),
    ("/job-logs", {"to": "9999-12-31T23:59:59-23:59"}, "to timestamp"),
    ("/job-logs", {"until": "0001-01-01T00:00:00+00:01"}, "until timestamp"),
    ("/job-logs", {"from": "99999999999d"}, "from duration 99999999999d reaches outside"),
    ("/job-logs", {"limit": "9" * 5000}, "limit must be an integer from 1 to 200, got '9999"),
    ("/jobs", {"limit": "9" * 5000}, "limit must be an integer from 1 to 200, got '9999"),
    ("/jobs", {"limit": "-3"}, "limit must be an integer from 1 to 200"),
])
def test_out_of_range_query_parameters_get_400_naming_them(
    shared_gateway: Gateway, route: str, params: dict, message: str
) -> None:
    resp = shared_gateway.get(route, params=params)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]
    assert len(resp.json()["error"]) < 300


def test_scheduler_control_bodies_are_read_strictly(shared_gateway: Gateway) -> None:
    bad = post_raw(shared_gateway, "/scheduler/pause", b'{"target": "\\ud800"}')
    assert bad.status_code == 400 and "field target contains a lone surrogate" in \
        bad.json()["error"]
    wrong_type = shared_gateway.post("/scheduler/pause", {"target": 3})
    assert wrong_type.status_code == 400 and "field target must be a string" in \
        wrong_type.json()["error"]


def test_a_404_does_not_echo_a_huge_path(shared_gateway: Gateway) -> None:
    resp = httpx.get(shared_gateway.url + "/" + "a" * 10_000)
    assert resp.status_code == 404
    assert len(resp.json()["error"]) < 400 and "(10001 characters)" in resp.json()["error"]


# --- what hypercorn answers before the app runs (docs/api.md, Input limits) -------------------


@pytest.mark.parametrize(("name", "request_bytes", "status"), [
    ("100 kB URL", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    ("NUL in a header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    ("negative Content-Length",
     b"POST /plugins/echo/run HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    ("two Content-Lengths", b"POST /plugins/echo/run HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("bad chunk size", b"POST /plugins/echo/run HTTP/1.1\r\nHost: x\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("unknown Transfer-Encoding",
     b"POST /plugins/echo/run HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("HTTP/1.1 without Host", b"GET /healthz HTTP/1.1\r\n\r\n", 400),
    ("not HTTP", b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
])
def test_requests_refused_by_the_http_server_get_a_4xx_and_the_gateway_stays_up(
    shared_gateway: Gateway, name: str, request_bytes: bytes, status: int
) -> None:
    assert shared_gateway.port is not None
    answer = raw_exchange(shared_gateway.port, request_bytes)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(f"HTTP/1.1 {status}".encode()), (name, answer[:200])
    # hypercorn's own refusal: empty body, connection closed (documented in docs/api.md).
    assert b"content-length: 0" in answer.lower() and b"connection: close" in answer.lower()
    assert httpx.get(shared_gateway.url + "/healthz").status_code == 200


def test_a_bad_chunk_after_the_app_started_reading_does_not_hurt_the_gateway(
    shared_gateway: Gateway,
) -> None:
    assert shared_gateway.port is not None
    with socket.create_connection(("127.0.0.1", shared_gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /plugins/echo/run HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n")
        time.sleep(0.3)
        sock.sendall(b"zz\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert httpx.get(shared_gateway.url + "/healthz").status_code == 200
    assert not [r for r in shared_gateway.log_records() if r.get("level") == "ERROR"
                and r.get("component") == "api"]


def test_an_unknown_http_version_is_a_json_400(shared_gateway: Gateway) -> None:
    assert shared_gateway.port is not None
    answer = raw_exchange(shared_gateway.port, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"connection: close" in head.lower()
    assert b'"HTTP/9.9 is not supported; use HTTP/1.1 or HTTP/1.0"' in body


def test_a_keep_alive_connection_survives_a_413(shared_gateway: Gateway) -> None:
    # Regression: the 413 was sent before the body was read, without `Connection: close`;
    # the next request on the same connection then hung or found it closed.
    big = b'{"payload": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    with httpx.Client(base_url=shared_gateway.url, timeout=10,
                      headers=shared_gateway.headers()) as client:
        for _ in range(20):
            refused = client.post("/plugin/echo/poll", content=big)
            assert refused.status_code == 413 and refused.headers["connection"] == "close"
            after = client.post("/plugin/echo/poll", content=b'{"payload": NaN}')
            assert after.status_code == 400 and "NaN" in after.json()["error"]
