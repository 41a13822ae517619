"""recordio lines (ucspi-tcp). STUB: to be written."""

from __future__ import annotations

from typing import Any


def parse(text: str) -> tuple[str, dict[str, Any]] | None:
    return None
