"""Dispatch: claim queued jobs, run them through plugins, record outcomes, retry."""
