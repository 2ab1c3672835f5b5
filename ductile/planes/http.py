"""What every HTTP plane (API, management socket, webhooks) shares about its quart app."""

from __future__ import annotations

from quart_trio import QuartTrio


def no_redirects(app: QuartTrio) -> None:
    """Answer every path with JSON from our own handlers, never with werkzeug's HTML redirect.

    By default werkzeug redirects (308, HTML body) a path with doubled slashes or a missing
    trailing slash to its canonical form. A JSON API has no canonical alias to send a client to:
    an unknown path is simply a JSON 404.
    """
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
