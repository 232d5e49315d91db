"""Kiosk daemon: config, main loop, outbox, MQTT, HTTP API and staff page. Built by the kiosk issue."""
