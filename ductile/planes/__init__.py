"""The trigger planes: HTTP API (and, in later issues, webhooks, scheduler, relay)."""
