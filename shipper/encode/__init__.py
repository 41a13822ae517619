"""Encoders: flat record dicts → bytes on the wire. Pure (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import orjson

# What a list may hold to go as "a,b,c" in a text field (else it goes as JSON)
SCALARS = frozenset({str, int, float, bool})


def json_text(value: Any) -> str:
    """An object (or a list holding objects: a summary's recipients) as JSON text, which
    a SIEM can parse, not Python's repr."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # an int past 64 bits somewhere inside
        return json.dumps(value, default=str, ensure_ascii=False)
