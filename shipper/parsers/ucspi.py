"""tcpserver, sslserver, tcpsvd, rblsmtpd. STUB: to be written."""

from __future__ import annotations

from typing import Any


def parse_tcpserver(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_sslserver(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_tcpsvd(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_rblsmtpd(text: str) -> tuple[str, dict[str, Any]] | None:
    return None
