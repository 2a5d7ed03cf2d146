"""Session rooms: one per booking, its rules, its Redis store and its WebSocket and page routes."""
