"""Moving a Go ductile installation over: `ductile migrate from-go` (docs/migrate.md).

    agekey.py     the original's age identity file and its vault (decrypted with pyrage)
    gotime.py     the original's RFC3339Nano timestamps in our fixed-width stored form
    govault.py    the original's vault plaintext as our vault model
    gostate.py    the original's SQLite schema: recognised, then copied into ours
    goconfig.py   what our loader refuses in the original's config, rewritten mechanically
    plan.py       the whole migration as a plan: printed, then (unless a dry run) applied

This layer sits just under the CLI: it reads the config, the vault and the store layers, and
nothing but `ductile.cli` imports it.
"""

from __future__ import annotations
