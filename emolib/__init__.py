"""emolib: EmoDistill as a reproducible research report (see README.md)."""

__version__ = "0.1.0"
