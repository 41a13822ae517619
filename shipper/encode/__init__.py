"""Encoders: flat record dicts → bytes on the wire. Pure (no I/O)."""
