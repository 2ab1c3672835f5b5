"""The JSON HTTP API, served by hypercorn from a quart-trio app."""
