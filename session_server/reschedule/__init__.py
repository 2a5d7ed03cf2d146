"""Free reschedules of sessions interrupted by a technical problem: offers, choices, expiry, the page."""
