"""Privilege separation: which OS account each plugin runs as, and the checks around it.

`accounts` resolves the `accounts:` table against the passwd and group databases, `posture`
decides enforcing / unconfined / hygiene-only from the gateway's capability, `floor` reconciles
the files that hold secrets, `sidedoor` probes each account for ways back to root, and
`attest` re-verifies a plugin's bytes before it is handed secrets.
"""
