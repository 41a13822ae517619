"""Postfix and pmg-smtp-filter. STUB: to be written."""

from __future__ import annotations

from typing import Any


def parse(service: str, text: str) -> tuple[str, dict[str, Any]] | None:
    return None
