"""Modernised mainframe batch jobs that prove their own numbers."""

__version__ = "0.1.0"
