"""Which batches written to a TCP or TLS stream the peer's TCP has acknowledged.

A batch written and drained is in our kernel, not at the peer. Counted delivered
then, it is lost when the connection goes later with it still in our send queue: a
write timeout on a receiver that stopped reading (we close the connection), a reset,
a stop. Linux tells how many bytes of a socket's send queue the peer has not
acknowledged (SIOCOUTQ); with the bytes asyncio still holds, every batch whose last
byte lies before them has reached the peer's kernel. That is not the receiver's
application reading it (RELP says that), but it is no longer lost by our side.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import time
from collections import deque

from shipper.sinks.base import SinkError


def socket_unacked(sock: socket.socket) -> int | None:
    """Bytes sent on ``sock`` that the peer has not acknowledged (Linux SIOCOUTQ); None
    when the socket cannot be asked."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ on sockets
    except (OSError, ValueError):
        return None
    return int(struct.unpack("i", raw)[0])


def unacknowledged_bytes(writer: asyncio.StreamWriter) -> int | None:
    """Bytes written to ``writer`` that the peer has not acknowledged; None only for a
    transport that never had a socket. A socket closed under us (a reset, over TCP or
    TLS) cannot be asked: then nothing counts as acknowledged. Over TLS the kernel counts encrypted bytes,
    more than the plaintext they carry, so a batch is confirmed late, never early."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is None:
        # asyncio's TLS transport forgets its socket after a reset: nothing known then
        return NOTHING_KNOWN if transport.is_closing() or hasattr(transport, "_ssl_protocol") else None
    unacked = socket_unacked(sock)
    if unacked is None:
        return NOTHING_KNOWN
    held = transport.get_write_buffer_size()
    # TLS: ciphertext handed to the TCP transport below is in neither figure above
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    if inner is not None:
        try:
            held += inner.get_write_buffer_size()
        except (AttributeError, RuntimeError):
            return NOTHING_KNOWN
    return unacked + held


NOTHING_KNOWN = 1 << 62  # "every byte may be unacknowledged"


PROBATION = 0.25  # seconds a connection must live after its first write (see below)
PROBATION_MAX = 8.0
HOLD_OFF_MAX = 30.0  # seconds between connections to a peer that hangs up on each (hold_off)


class BatchConfirmations:
    """The end offsets of the batches a sink wrote on its connection, one per successful
    ``send``, until the peer acknowledged them (``take``) or the connection went
    (``dropped``: those not acknowledged by then must be sent again).

    A connection confirms nothing until it has lived ``PROBATION`` seconds after its
    first write: a peer that takes the bytes into its kernel and then resets (a TLS
    port given plain syslog, a TLS 1.3 server refusing our client certificate after
    the handshake, a receiver that rejects every connection) had every first batch
    counted delivered and lost, connection after connection (found by a black-box
    review: 160 records "acked", none received). A connection that goes within its
    probation makes the next one's four times longer (up to ``PROBATION_MAX``), so a
    peer slow to refuse is found out too; one that outlives it resets it."""

    __slots__ = ("_ends", "_counts", "_written", "_ready", "_ready_records", "taken_records", "_lost",
                 "_base", "_probation", "_trusted_at", "early", "_early_at")

    def __init__(self, probation: float = PROBATION) -> None:
        self._ends: deque[int] = deque()
        self._counts: deque[int] = deque()  # the records of each send
        self._written = 0
        self._ready = 0  # confirmed, not yet taken
        self._ready_records = 0
        self.taken_records = 0  # the records of the sends the last ``take`` confirmed
        self._lost = False
        self._base = self._probation = probation
        self._trusted_at: float | None = None  # set by the connection's first write
        self.early = 0  # connections in a row that went within their probation
        self._early_at = 0.0  # when the last of them went

    def wrote(self, nbytes: int, records: int = 0) -> None:
        """A ``send`` of ``records`` succeeded with ``nbytes`` written (0 for an empty batch)."""
        if self._trusted_at is None and nbytes:
            self._trusted_at = time.monotonic() + self._probation
        self._written += nbytes
        self._ends.append(self._written)
        self._counts.append(records)

    def dropped(self, writer: asyncio.StreamWriter | None, ended_at: float | None = None) -> None:
        """The connection goes (call before closing it): what it has not confirmed by
        now is not known delivered. ``ended_at``: when the peer ended it (monotonic),
        if it did: the probation is judged by that time, not by when we look."""
        at = time.monotonic() if ended_at is None else ended_at
        if not self._lost:
            self._settle(writer, at)
            self._lost = bool(self._ends)
        # (after a loss not taken yet, later sends are sent again anyway: not counted)
        self._ends.clear()
        self._counts.clear()
        self._written = 0
        if self._trusted_at is not None:
            cut_short = at < self._trusted_at
            self._probation = min(PROBATION_MAX, 4 * self._probation) if cut_short else self._base
            self.early = self.early + 1 if cut_short else 0
            self._early_at = time.monotonic()
            self._trusted_at = None

    def hold_off(self) -> float:
        """Seconds to wait yet before connecting again: after two connections in a row
        that the peer ended within their probation, 0.5 s, doubling with each more, up to
        HOLD_OFF_MAX. Each send there "succeeds" (no failure, so no backoff) and the
        batch goes again on a new connection: against a peer that takes a batch and
        hangs up (tcpserver running true, a wrong port) that was a connection and a
        log line a second, for good (found by a fault hunt)."""
        if self.early < 2:
            return 0.0
        pause = min(HOLD_OFF_MAX, 0.5 * 2 ** min(self.early - 2, 16))
        return max(0.0, self._early_at + pause - time.monotonic())

    def take(self, writer: asyncio.StreamWriter | None, gone: bool = False,
             ended_at: float | None = None) -> tuple[int, bool]:
        """(how many of the oldest unconfirmed sends are confirmed now, whether the
        rest were lost with a connection: to be sent again, with every send after
        them; the count then starts afresh). ``gone``: the sink saw its connection
        end (a reset while idle): what it had not acknowledged goes again now, not
        when the next record comes (a quiet log may bring none for hours); ``ended_at``:
        when it ended, as for ``dropped``."""
        if gone and writer is not None:
            self.dropped(writer, ended_at)
        lost, self._lost = self._lost, False
        if lost:
            self._ends.clear()
            self._counts.clear()
            self._written = 0
        else:
            self._settle(writer)
        n, self._ready = self._ready, 0
        self.taken_records, self._ready_records = self._ready_records, 0
        return n, lost

    def _settle(self, writer: asyncio.StreamWriter | None, at: float | None = None) -> None:
        if not self._ends or writer is None:
            return
        if self._trusted_at is not None and (time.monotonic() if at is None else at) < self._trusted_at:
            # on probation, or ended within it: a peer that read a batch and hung up at
            # once (a RELP port given syslog) had it confirmed once we looked after the
            # probation, so lost (found against imrelp)
            return
        pending = unacknowledged_bytes(writer)
        if pending is None:  # no socket to ask: written counts as delivered
            self._ready += len(self._ends)
            self._ready_records += sum(self._counts)
            self._ends.clear()
            self._counts.clear()
            return
        upto = self._written - pending
        while self._ends and self._ends[0] <= upto:
            self._ends.popleft()
            self._ready += 1
            self._ready_records += self._counts.popleft()


def hold_off(confirmations: BatchConfirmations, peer: str, said: str = "") -> None:
    """Raise SinkError (with the pause as ``retry_after``) while a new connection to a
    peer that hangs up on each is not due yet (``BatchConfirmations.hold_off``). ``said``:
    what the peer sent on the last one (base.spoke: a RELP port's answer), so the pause's
    words still point at the port."""
    pause = confirmations.hold_off()
    if pause > 0:
        raise SinkError(f"{peer}: the peer hung up on each of our last connections right after "
                        f"taking a batch{said or ' (a TLS port? a wrong port? refusing us?)'}: "
                        "connecting again after a pause", retry_after=pause)


async def drain_while_moving(writer: asyncio.StreamWriter, timeout: float) -> None:
    """``writer.drain()``, given up (TimeoutError) only when the peer has acknowledged
    nothing for ``timeout`` seconds. A receiver reading slowly is not dead: dropping
    its connection sends everything it has not acknowledged again (thousands of
    duplicates each time)."""
    drain = asyncio.ensure_future(writer.drain())
    last = unacknowledged_bytes(writer)
    still_since = asyncio.get_running_loop().time()
    try:
        while True:
            done, _ = await asyncio.wait({drain}, timeout=min(1.0, timeout))
            if done:
                drain.result()
                return
            now = asyncio.get_running_loop().time()
            pending = unacknowledged_bytes(writer)
            if pending is not None and last is not None and pending < last:
                still_since = now  # the peer took some: alive, if slow
            last = pending
            if now - still_since >= timeout:
                raise TimeoutError
    finally:
        if not drain.done():
            drain.cancel()


async def gone_after_handshake(watch: asyncio.Task[None], handshake_s: float) -> bool:
    """Whether the peer ended the connection right after our TLS handshake (``watch``:
    the task reading the connection, done when it ends). TLS 1.3: a server refuses our
    client certificate only after the handshake is done on our side, about a round
    trip later; so wait for that round trip (thrice the handshake's time, within
    bounds) before the first write, and say why the connection went."""
    await asyncio.wait({watch}, timeout=min(1.0, max(0.1, 3 * handshake_s)))
    return watch.done()
