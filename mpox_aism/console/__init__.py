"""The console: one service that collects every kiosk's events, availability and status from the broker."""
