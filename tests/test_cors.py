"""CORS (`api.allowed_origins`) against a real gateway: preflights, real requests, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.gateway import TOKEN, Gateway, free_port, write_config

ALLOWED = "https://console.example.org"
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials",
                "access-control-allow-methods", "access-control-allow-headers",
                "access-control-max-age", "access-control-expose-headers")


@pytest.fixture(scope="module")
def cors_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    directory = write_config(Path(tmp_path_factory.mktemp("cors")), port=port,
                             api={"allowed_origins": [ALLOWED, "http://localhost:3000", "*"]})
    gw = Gateway(directory, port).start()
    try:
        yield gw
    finally:
        gw.stop()


def _preflight(gw: Gateway, origin: str, path: str = "/jobs") -> httpx.Response:
    return httpx.options(gw.url + path, headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "Authorization"})


def test_a_preflight_from_a_listed_origin_is_answered_204(cors_gateway: Gateway) -> None:
    resp = _preflight(cors_gateway, ALLOWED)
    assert resp.status_code == 204
    assert resp.content == b""
    h = resp.headers
    assert h["access-control-allow-origin"] == ALLOWED
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-allow-methods"] == "GET, POST, PUT, DELETE, OPTIONS"
    assert "Authorization" in [v.strip() for v in h["access-control-allow-headers"].split(",")]
    assert h["access-control-max-age"] == "300"
    assert h["vary"] == "Origin"


def test_each_listed_origin_is_echoed_never_a_wildcard(cors_gateway: Gateway) -> None:
    resp = _preflight(cors_gateway, "http://localhost:3000", "/plugins/echo/run")
    assert resp.headers["access-control-allow-origin"] == "http://localhost:3000"
    real = httpx.get(cors_gateway.url + "/jobs", headers={
        "Origin": ALLOWED, "Authorization": f"Bearer {TOKEN}"})
    assert real.status_code == 200
    assert real.headers["access-control-allow-origin"] == ALLOWED
    assert real.headers["access-control-allow-credentials"] == "true"
    assert real.headers["access-control-expose-headers"] == "Link"
    # Only a preflight is told the methods, headers and max-age.
    assert "access-control-allow-methods" not in real.headers


def test_an_error_answer_to_a_listed_origin_still_carries_cors(cors_gateway: Gateway) -> None:
    # Without the headers the browser would hide the 401 from the page, which could then not
    # tell the user the token is wrong.
    resp = httpx.get(cors_gateway.url + "/jobs", headers={"Origin": ALLOWED})
    assert resp.status_code == 401
    assert resp.headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("origin", ["https://evil.example.org", "https://console.example.org/",
                                    "HTTPS://CONSOLE.EXAMPLE.ORG", "null", "*"])
def test_an_unlisted_origin_gets_no_cors_headers(cors_gateway: Gateway, origin: str) -> None:
    # `*` is listed in this config, and still never echoed: it is no wildcard.
    pre = _preflight(cors_gateway, origin)
    assert pre.status_code == 405
    assert pre.json()["error"].startswith("method OPTIONS not allowed")
    real = httpx.get(cors_gateway.url + "/jobs", headers={
        "Origin": origin, "Authorization": f"Bearer {TOKEN}"})
    assert real.status_code == 200
    for response in (pre, real):
        assert not [h for h in CORS_HEADERS if h in response.headers]


def test_no_origin_means_no_cors(cors_gateway: Gateway) -> None:
    resp = httpx.get(cors_gateway.url + "/healthz")
    assert resp.status_code == 200
    assert not [h for h in CORS_HEADERS if h in resp.headers]


def test_without_allowed_origins_cors_is_off(shared_gateway: Gateway) -> None:
    pre = _preflight(shared_gateway, ALLOWED)
    assert pre.status_code == 405
    real = httpx.get(shared_gateway.url + "/healthz", headers={"Origin": ALLOWED})
    assert not [h for h in CORS_HEADERS if h in pre.headers or h in real.headers]
