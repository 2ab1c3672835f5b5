"""The event hub: typed events of what the gateway does, for `GET /events` and `GET /metrics`."""
