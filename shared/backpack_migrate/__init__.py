"""Backpack-to-Badgr migration service: the domain code shared by every function."""

__version__ = "0.1.0"
