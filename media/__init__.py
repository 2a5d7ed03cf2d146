"""media package of the session server."""
