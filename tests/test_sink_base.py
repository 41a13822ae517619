"""sinks.base: delivery retries, and what a failing peer may put in our log."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from test_rfc5424 import fixture_records

from shipper.sinks import base, gelf, syslog
from shipper.sinks.base import Backoff, PermanentError, SinkError, SinkStats, deliver, printable


class ScriptedSink:
    """Raises the given errors, one a try, then delivers."""

    def __init__(self, name: str, errors: list[Exception]) -> None:
        self.name = name
        self.stats = SinkStats()
        self.errors = errors
        self.calls = 0

    async def send(self, records: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.stats.acked += len(records)


def test_a_peers_control_bytes_never_reach_the_log_or_the_metrics(caplog) -> None:
    # found by fault injection: terminal escapes and a CR went into the log verbatim
    # what a hostile HTTP peer answered, once
    sink = ScriptedSink("flaky", [SinkError("BadStatusLine: \x1b[2J\x1b[31mEVIL\rSECOND LINE")])
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


def test_a_new_cause_of_an_outage_is_said_once(caplog) -> None:
    # found by fault injection: only the first cause of an outage was ever logged
    sink = ScriptedSink("changing", [SinkError("connect failed: Connection refused"),
                                      SinkError("connect failed: Connection refused"),
                                      SinkError("TLS: certificate has expired")])
    with caplog.at_level(logging.WARNING, logger="shipper.sink"):
        assert asyncio.run(deliver(sink, [{"event_id": "a"}], Backoff(base=0.001, cap=0.001)))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "Connection refused" in said[0] and "expired" in said[1]


@pytest.mark.parametrize("module", [syslog, gelf])
async def test_a_udp_sink_follows_its_name_to_a_new_address(monkeypatch, module):
    """Found by fault injection: the collector's name moved to a new address (DNS
    failover, a collector replaced) while the old one still took datagrams in silence:
    800 records in 80 s went to the old one, for as long as the shipper ran. The name is
    now looked up again every DATAGRAM_RESOLVE_EVERY; a lookup that fails meanwhile
    keeps the address that worked."""
    monkeypatch.setattr(base, "DATAGRAM_RESOLVE_EVERY", 0.2)
    old, new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    old.bind(("127.0.0.1", 0))
    port = old.getsockname()[1]
    new.bind(("127.0.0.2", port))
    where: list[str | None] = ["127.0.0.1"]
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        if where[0] is None:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(where[0] if host == "moving.test" else host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    sink = (syslog.SyslogUdpSink("moving.test", port) if module is syslog
            else gelf.GelfUdpSink("moving.test", port, compression="none"))
    recs = fixture_records()[:3]
    try:
        await sink.send(recs[:1])
        where[0] = None  # DNS down: the address that worked goes on
        await asyncio.sleep(0.3)
        await sink.send(recs[1:2])
        where[0] = "127.0.0.2"
        await asyncio.sleep(0.3)
        await sink.send(recs[2:3])
        old.settimeout(1)
        new.settimeout(1)
        to_old = [old.recv(65536).decode() for _ in range(2)]
        assert recs[0]["event_id"] in to_old[0] and recs[1]["event_id"] in to_old[1]
        assert recs[2]["event_id"] in new.recv(65536).decode()
    finally:
        await sink.close()
        old.close()
        new.close()



def _two_collectors(monkeypatch, order: Callable[[int], tuple[str, str]]) -> tuple[socket.socket, list[int]]:
    """The name "pair.test" for 127.0.0.1, where a receiver listens (returned), and
    127.0.0.2, where nothing does (ICMP port unreachable): ``order(n)`` gives the two in
    the order the n-th look-up answers; the list counts the look-ups."""
    alive = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    alive.bind(("127.0.0.1", 0))
    alive.settimeout(1)
    real = socket.getaddrinfo
    answers = [0]

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        if host != "pair.test":
            return real(host, port, family, type, proto, flags)
        answers[0] += 1
        return [info for a in order(answers[0]) for info in real(a, port, family, type, proto, flags)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return alive, answers


def _pair_sink(module: Any, port: int) -> Any:
    return (syslog.SyslogUdpSink("pair.test", port) if module is syslog
            else gelf.GelfUdpSink("pair.test", port, compression="none"))


@pytest.mark.parametrize("module", [syslog, gelf])
async def test_a_udp_sink_keeps_the_address_that_works_when_its_name_answers_in_another_order(
        monkeypatch, module):
    """Round-robin DNS hands a name's addresses out in turn. Of two collectors behind one
    name, one down (nothing listens: ICMP port unreachable), the sink was to move on to
    the live one after the refusal; but the address was picked by its place in the
    answer, and a look-up in the other order (the retry's, each minute's) put the sink
    back on the dead one, where the next batch went without a word (UDP says nothing
    until the next send). The address after the refused one is taken, and an address
    still in the answer is kept."""
    monkeypatch.setattr(base, "DATAGRAM_RESOLVE_EVERY", 0.3)
    alive, answers = _two_collectors(
        monkeypatch, lambda n: ("127.0.0.2", "127.0.0.1") if n % 2 else ("127.0.0.1", "127.0.0.2"))
    sink = _pair_sink(module, alive.getsockname()[1])
    recs = fixture_records()[:6]
    try:
        await sink.send(recs[:1])  # to the dead one: lost, as UDP loses it
        await asyncio.sleep(0.01)  # its refusal comes back
        with pytest.raises(SinkError):
            await sink.send(recs[1:2])
        await sink.send(recs[1:2])  # the address after the refused one: the live one
        assert recs[1]["event_id"] in alive.recv(65536).decode()
        for rec in recs[2:]:  # a new look-up before each, the order turned each time
            await asyncio.sleep(0.35)
            await sink.send([rec])
            assert rec["event_id"] in alive.recv(65536).decode()
        assert answers[0] >= 5
    finally:
        await sink.close()
        alive.close()


@pytest.mark.parametrize("module", [syslog, gelf])
async def test_a_refusal_waiting_on_the_socket_is_not_thrown_away_by_the_minutes_lookup(
        monkeypatch, module):
    """The first address of a name is dead. A batch went there; its refusal waits on the
    socket for the next send. When that send came after the minute's new look-up, the
    socket was replaced (the same address, a new socket), the refusal went with the old
    one, and the next batch went to the dead address too, lost without a word. The socket
    is kept while the name still gives its address, and the refusal moves the sink on."""
    monkeypatch.setattr(base, "DATAGRAM_RESOLVE_EVERY", 0.1)
    alive, _ = _two_collectors(monkeypatch, lambda n: ("127.0.0.2", "127.0.0.1"))
    sink = _pair_sink(module, alive.getsockname()[1])
    recs = fixture_records()[:2]
    try:
        await sink.send(recs[:1])  # to the dead one: lost, as UDP loses it
        await asyncio.sleep(0.15)  # its refusal waits; the name is looked up again
        with pytest.raises(SinkError):
            await sink.send(recs[1:2])
        await sink.send(recs[1:2])
        assert recs[1]["event_id"] in alive.recv(65536).decode()
    finally:
        await sink.close()
        alive.close()


@pytest.mark.parametrize("module", [syslog, gelf])
async def test_a_udp_sink_passes_over_an_address_it_cannot_send_to(monkeypatch, module):
    """Found by the review: an address connect() refuses at once (an IPv6 one on a host
    without IPv6; here the broadcast address, which needs SO_BROADCAST: connect() fails
    before anything is sent, nothing leaves the host) raised every time and never gave
    way to the name's next address: nothing was ever sent."""
    alive, _ = _two_collectors(monkeypatch, lambda n: ("255.255.255.255", "127.0.0.1"))
    sink = _pair_sink(module, alive.getsockname()[1])
    recs = fixture_records()[:2]
    try:
        for rec in recs:
            await sink.send([rec])
            assert rec["event_id"] in alive.recv(65536).decode()
    finally:
        await sink.close()
        alive.close()


def test_a_batch_refused_for_good_leaves_the_sink_not_failing() -> None:
    # found by review: after a failed try and a refusal for good (the batch went to the
    # dead letter), an idle sink stayed "failing" in status until its next batch
    sink = ScriptedSink("refusing", [SinkError("HTTP 500: try again"), PermanentError("HTTP 400: bad row")])
    with pytest.raises(PermanentError):
        asyncio.run(deliver(sink, [{"event_id": "a"}], Backoff(base=0.001, cap=0.001)))
    assert sink.calls == 2 and sink.stats.failed == 1
    assert sink.stats.failing is False
