"""`python -m ductile` runs the CLI."""

from __future__ import annotations

from ductile.cli.main import main

if __name__ == "__main__":
    main()
