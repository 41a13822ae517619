"""Fields of texts a log repeats verbatim, parsed once.

qmail-send logs its status after every delivery's start and end, tcpserver after
every connection's: a quarter of a busy log is a handful of distinct texts. Their
fields are kept, bounded, and a copy is handed out (records are changed downstream).
"""

from __future__ import annotations

from typing import Any

SEEN_MAX = 1024  # distinct texts kept per parser


def keep(seen: dict[str, dict[str, Any]], text: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Keep ``fields`` as the parse of ``text``; a copy to hand out."""
    if len(seen) >= SEEN_MAX:
        seen.clear()
    seen[text] = fields
    return fields.copy()
