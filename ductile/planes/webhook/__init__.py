"""The webhook plane: HMAC-verified deliveries on their own listener, each enqueued as one job.

Modules: `verify` (signature schemes, pure), `payload` (the raw body as stored JSON), `rules`
(the `match:` trigger rules, pure), `respond` (waiting for a job's outcome for `respond:
result`), `app` (the quart-trio application), `server` (hypercorn settings that drop slow or
oversized requests).
Nothing is imported here, so reading the config does not pull in the HTTP stack.
"""
