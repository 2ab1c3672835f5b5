"""The relay: signed event envelopes between gateways, the fourth trigger plane.

`envelope` is the wire format and the receiver's checks (pure), `sender` delivers one envelope
to a configured instance, and `service` holds what a runtime generation resolved for both sides
(the keys from the vault, the peers, the replay ledger). The receiver's HTTP route lives with
the API plane (`planes/api/routes/relay.py`); sending from a pipeline is the synthetic job
`core.relay` run by the dispatcher.
"""
