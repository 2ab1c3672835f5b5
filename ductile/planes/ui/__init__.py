"""The web ledger at `/ui`: a read-only view of jobs, pipeline trees, schedules, breakers and
the boot gates, served on the API listener.

The pages are static shells rendered server-side (Jinja2, autoescaped) that hold no data: the
page's script fetches everything from the JSON API with the token the operator typed on
`/ui/login`, kept in the browser's sessionStorage and sent as a Bearer header. Authorization is
therefore exactly the API's. See docs/ui.md.
"""

from __future__ import annotations

from ductile.planes.ui.routes import register

__all__ = ["register"]
