"""Helpers shared by the test suites (tests/ and property-tests/): start the real gateway, write
throwaway plugins and configs, run the dispatcher or scheduler in-process, open real databases.

Importable as `support.*` because pyproject.toml puts `tests/` on pytest's `pythonpath`.
"""
