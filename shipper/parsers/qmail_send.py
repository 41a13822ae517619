"""qmail-send (netqmail, notqmail, s/qmail, indimail variants). STUB: to be written."""

from __future__ import annotations

from typing import Any


def parse(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_qmail_daemon(text: str) -> tuple[str, dict[str, Any]] | None:
    return None
