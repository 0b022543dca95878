"""cxrlab: chest X-ray classification research toolkit."""

__version__ = "0.2.0"
