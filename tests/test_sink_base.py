"""sinks.base: delivery retries, and what a failing peer may put in our log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shipper.sinks.base import Backoff, SinkError, SinkStats, deliver, printable


class FlakySink:
    """Fails once with what a hostile HTTP peer answered, then delivers."""

    name = "flaky"

    def __init__(self) -> None:
        self.stats = SinkStats()
        self.calls = 0

    async def send(self, records: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise SinkError("BadStatusLine: \x1b[2J\x1b[31mEVIL\rSECOND LINE")
        self.stats.acked += len(records)


def test_a_peers_control_bytes_never_reach_the_log_or_the_metrics(caplog) -> None:
    # found by fault injection: terminal escapes and a CR went into the log verbatim
    sink = FlakySink()
    with caplog.at_level(logging.WARNING, logger="shipper.sink"):
        ok = asyncio.run(deliver(sink, [{"event_id": "a"}], Backoff(base=0.001, cap=0.001)))
    assert ok and sink.calls == 2 and sink.stats.acked == 1
    assert sink.stats.last_error == "BadStatusLine: \\x1b[2J\\x1b[31mEVIL\\rSECOND LINE"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "\x1b" not in warning and "\r" not in warning and "\\x1b[31mEVIL\\rSECOND" in warning


def test_printable_cuts_and_keeps_text() -> None:
    assert printable("plain é text") == "plain é text"
    assert printable("x" * 600, limit=10) == "x" * 10 + "…"
    assert printable("a\x00b\x9bc") == "a\\x00b\\x9bc"


class ChangingSink:
    """Fails with one cause, again with it, then with another, then delivers."""

    name = "changing"

    def __init__(self) -> None:
        self.stats = SinkStats()
        self.errors = ["connect failed: Connection refused", "connect failed: Connection refused",
                       "TLS: certificate has expired"]

    async def send(self, records: list[dict[str, Any]]) -> None:
        if self.errors:
            raise SinkError(self.errors.pop(0))


def test_a_new_cause_of_an_outage_is_said_once(caplog) -> None:
    # found by fault injection: only the first cause of an outage was ever logged
    sink = ChangingSink()
    with caplog.at_level(logging.WARNING, logger="shipper.sink"):
        assert asyncio.run(deliver(sink, [{"event_id": "a"}], Backoff(base=0.001, cap=0.001)))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "Connection refused" in said[0] and "expired" in said[1]
