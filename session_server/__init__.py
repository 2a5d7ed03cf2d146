"""The session server: bookings, rooms, chat, media and documents for an online practice."""

__version__ = "0.1.0"
