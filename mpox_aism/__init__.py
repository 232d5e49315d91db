"""mpox-aism: mpox screening at a border checkpoint (research use only, not a diagnostic device)."""

__version__ = "0.1.0"
