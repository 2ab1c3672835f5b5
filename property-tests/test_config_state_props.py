"""The state.dsn checks: whatever text an operator writes, `dsn_problem` answers (never
raises), a password in either libpq form is refused, and `redact_dsn` never shows one."""

from __future__ import annotations

import urllib.parse

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.state import dsn_problem, redact_dsn

WORD = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                      blacklist_characters="'\\ @/:?#&=%[]"),
               min_size=1, max_size=12)
PASSWORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!$*+,;", min_size=6,
                   max_size=16)


@given(st.text(max_size=200))
def test_any_text_gets_an_answer(text: str) -> None:
    problem = dsn_problem(text)
    assert problem is None or isinstance(problem, str)
    assert isinstance(redact_dsn(text), str)


@given(WORD, PASSWORD, WORD, WORD)
def test_a_uri_password_is_refused_and_never_shown(user: str, password: str, host: str,
                                                   db: str) -> None:
    secret = urllib.parse.quote(password, safe="")
    dsn = f"postgresql://{user}:{secret}@{host}/{db}"
    assert dsn_problem(dsn) is not None
    assert redact_dsn(dsn) == f"postgresql://{user}:***@{host}/{db}"


@given(st.lists(st.tuples(st.sampled_from(["host", "port", "dbname", "user", "sslmode",
                                           "application_name"]), WORD), max_size=5),
       PASSWORD, st.booleans())
def test_a_conninfo_password_is_refused_and_never_shown(pairs: list[tuple[str, str]],
                                                        password: str, quoted: bool) -> None:
    value = f"'{password}'" if quoted else password
    parts = [f"{k}={v}" for k, v in pairs] + [f"password={value}"]
    dsn = " ".join(parts)
    assert dsn_problem(dsn) is not None
    shown = redact_dsn(dsn)
    assert f"password={value}" not in shown and "password=***" in shown


@given(st.lists(st.tuples(st.sampled_from(["host", "port", "dbname", "user", "sslmode"]), WORD),
                min_size=1, max_size=5))
def test_conninfo_without_a_password_is_accepted(pairs: list[tuple[str, str]]) -> None:
    assert dsn_problem(" ".join(f"{k}={v}" for k, v in pairs)) is None
