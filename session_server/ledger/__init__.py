"""The ledger's place in the server: complaint and payout routes, views, and the ledger's consumer and
payout job in the lifespan (or apart, as `session-server ledger`)."""
