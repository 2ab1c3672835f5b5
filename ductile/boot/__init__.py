"""Boot: the declared state machine, its gates, the runtime they admit and the supervisor."""
