"""The kiosk's web part: the HTTP API (``api``), the staff pages (``staff``, HTML/JS/CSS in ``static/``)
and the server thread (``server``), which sees the running kiosk only through ``KioskView``."""
