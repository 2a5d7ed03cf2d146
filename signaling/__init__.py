"""signaling package of the session server."""
