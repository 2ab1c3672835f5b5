"""Plugins: manifests, discovery and trust checks, aliases, the protocol v2 envelopes, spawning.

Submodules are imported directly (`from ductile.plugin.spawn import spawn_plugin`); this package
imports nothing so that importing one piece does not pull in the others.
"""
