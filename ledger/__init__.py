"""ledger package of the session server."""
