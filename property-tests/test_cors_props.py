"""CORS rules (ductile/planes/api/cors.py) over any Origin header and any configured list: CORS
headers appear exactly for a listed origin, echo it (never `*`, even listed), and only a
preflight is told the methods, headers and max-age."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ductile.planes.api.cors import cors_headers, is_preflight

origins = st.one_of(st.none(), st.text(max_size=40),
                    st.sampled_from(["https://a.example", "http://localhost:3000", "*", "null",
                                     "https://a.example/", ""]))
lists = st.lists(st.one_of(st.text(max_size=40),
                           st.sampled_from(["https://a.example", "http://localhost:3000"])),
                 max_size=4)
PREFLIGHT_ONLY = {"Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                  "Access-Control-Max-Age"}


@given(origins, lists, st.booleans())
def test_cors_headers_exactly_for_a_listed_origin(origin: str | None, allowed: list[str],
                                                  preflight: bool) -> None:
    headers = cors_headers(origin, allowed, preflight=preflight)
    if not origin or origin == "*" or origin not in allowed:
        assert headers == {}
        return
    assert headers["Access-Control-Allow-Origin"] == origin
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Vary"] == "Origin"
    assert (PREFLIGHT_ONLY <= set(headers)) is preflight
    assert not (PREFLIGHT_ONLY & set(headers)) or preflight


@given(st.sampled_from(["GET", "POST", "OPTIONS", "options", "PUT"]),
       st.one_of(st.none(), st.text(max_size=10)))
def test_a_preflight_is_an_options_request_naming_a_method(method: str,
                                                           header: str | None) -> None:
    assert is_preflight(method, header) == (method == "OPTIONS" and bool(header))
