"""entropi: make Raspberry Pi OS images safe to flash onto many cards."""

__version__ = "0.1.0"
