"""Notifications: stored per user (unread list, mark read) and pushed over a per-user WebSocket."""
