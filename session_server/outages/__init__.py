"""Outages: one timeline per session, its verdict, and live detection of media that stopped (docs/outages.md)."""
