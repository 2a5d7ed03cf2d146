"""Bookings: practitioners, availability, slots, quotes and conflict-free booking."""
