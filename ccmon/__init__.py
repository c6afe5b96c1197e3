"""ccmon: a real-time contact-center monitor."""

__version__ = "0.1.0"
