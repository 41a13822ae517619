"""vpopmail vchkpw, chkuser, simscan. STUB: to be written."""

from __future__ import annotations

from typing import Any


def parse_vchkpw(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_chkuser(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_simscan(text: str) -> tuple[str, dict[str, Any]] | None:
    return None
