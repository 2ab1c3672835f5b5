"""`ductile api PATH`: an authenticated client of the running gateway's own API.

The token and the address come from the config the way every verb that talks to a running
gateway finds them (`ductile/cli/common.py`): `--api-key`, else `$DUCTILE_API_KEY`, else the
first configured token read from the vault, over HTTPS pinned to `api.tls.cert_file` when the
listener has TLS. So an operator can call any route without copying a token into a shell.

As in the Go original, the method defaults to GET, or POST when fields or a body are given;
`-f key=value` values are read as a boolean (`true`/`false`), then an integer, else kept as the
string, and they are not wrapped in `payload` (write `-f` fields for routes that read the top
level, `--json-body` for the rest). For GET the fields are query parameters instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

import click

from ductile.cli.common import config_option, fail, gateway_target

#: Seconds to wait for an answer (the original's client timeout).
TIMEOUT = 30.0
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


def field_value(text: str) -> bool | int | str:
    """A `-f` value as the original reads it: a boolean, then an integer, else the string."""
    if text in ("true", "false"):
        return text == "true"
    if _INTEGER.fullmatch(text):
        return int(text)
    return text


def parse_fields(fields: tuple[str, ...]) -> list[tuple[str, str]]:
    """`key=value` pairs in order; a usage error names the one without `=` or a key."""
    pairs = []
    for field in fields:
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise click.UsageError(f"-f {field!r}: write a field as key=value, such as "
                                   "-f message=hi")
        pairs.append((key, value))
    return pairs


def check_path(path: str) -> str:
    """The route path: absolute, without a scheme or host (the host comes from the config)."""
    if not path.startswith("/") or path.startswith("//") or "://" in path.split("?", 1)[0]:
        raise click.UsageError(f"PATH {path!r} must be a route path starting with /, such as "
                               "/healthz (the address comes from --config or --api-url)")
    return path


@click.command("api")
@click.argument("path")
@click.option("-X", "--method", "method", metavar="METHOD",
              help="HTTP method (default GET, or POST with -f or --json-body).")
@click.option("-f", "--field", "fields", multiple=True, metavar="KEY=VALUE",
              help="A field: a query parameter for GET, else a key of the JSON body "
                   "(true/false and integers are typed, the rest are strings). Repeatable.")
@click.option("--json-body", "json_body", metavar="JSON",
              help="The request body, as JSON text ('-' reads stdin).")
@click.option("--api-url", help="Gateway base URL (default: the configured api.listen).")
@click.option("--api-key", "api_key_opt", help="Token (else $DUCTILE_API_KEY, else the "
                                               "first configured token from the vault).")
@config_option
def api(path: str, method: str | None, fields: tuple[str, ...], json_body: str | None,
        api_url: str | None, api_key_opt: str | None, config_path: str | None) -> None:
    """Call PATH on the running gateway with a token and print its JSON answer.

    \b
    Examples:
      ductile api /healthz
      ductile api -X GET /jobs -f status=failed -f limit=5
      ductile api /plugin/echo/poll --json-body '{"payload": {"message": "hi"}}'

    Exit 0 on a 2xx/3xx answer, 1 on a 4xx/5xx (the error on stderr) or when the gateway
    cannot be reached, 2 on a usage error.
    """
    import httpx

    check_path(path)
    pairs = parse_fields(fields)
    if pairs and json_body is not None:
        raise click.UsageError("give -f fields or --json-body, not both")
    body = _body(json_body)
    verb = (method or ("POST" if pairs or json_body is not None else "GET")).upper()
    if not re.fullmatch(r"[A-Z]{1,16}", verb):
        raise click.UsageError(f"-X {method!r} is not an HTTP method (GET, POST, ...)")
    params: list[tuple[str, str]] | None = None
    if pairs and verb in ("GET", "HEAD", "DELETE"):
        params = pairs
    elif pairs:
        body = {key: field_value(value) for key, value in pairs}

    target = gateway_target(config_path, api_url, api_key_opt,
                            missing="API key required: configure api.tokens with a vault "
                                    "secret_ref, or set --api-key or DUCTILE_API_KEY")
    token = target.token
    if not (token.isascii() and token.isprintable()):
        fail("the API token holds characters an HTTP header cannot carry; check "
             "--api-key, DUCTILE_API_KEY or the vault secret")
    url = target.base + path
    headers = dict(target.headers)
    content = None
    if json_body is not None or (pairs and params is None):
        content = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        resp = httpx.request(verb, url, params=params, content=content, headers=headers,
                             verify=target.verify, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {url}: {exc}; is it running (ductile system "
             "status)?")
    answer = _answer(resp)
    if resp.status_code >= 400:
        message = answer.get("error", answer) if isinstance(answer, dict) else answer
        fail(f"HTTP {resp.status_code} from {verb} {path}: {message}")
    if isinstance(answer, str):
        click.echo(answer)
    else:
        click.echo(json.dumps(answer, indent=2, ensure_ascii=False))


def _body(json_body: str | None) -> Any:
    if json_body is None:
        return None
    text = sys.stdin.read() if json_body == "-" else json_body
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"--json-body is not valid JSON: {exc}") from None


def _answer(resp: Any) -> Any:
    """The decoded JSON answer, or its text when it is not JSON."""
    try:
        return resp.json()
    except ValueError:
        return resp.text
