"""files package of the session server."""
