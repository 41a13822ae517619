"""qmail-smtpd / qmail-popup: s/qmail, SPAMCONTROL, indimail. STUB: to be written."""

from __future__ import annotations

from typing import Any


def parse_qmail_smtpd(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_qmail_popup(text: str) -> tuple[str, dict[str, Any]] | None:
    return None


def parse_spamcontrol(text: str) -> tuple[str, dict[str, Any]] | None:
    return None
