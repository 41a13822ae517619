"""Syslog sinks: UDP (RFC 5426), TCP with RFC 6587 framing, TLS (RFC 5425).

What "delivered" means here (the contract in ``shipper.sinks.base``):

- UDP: each record was handed to the kernel as one datagram. Nothing more can be known.
- TCP/TLS: the whole batch was written, and the connection was still alive afterwards (no
  EOF or error from the peer). A syslog receiver never sends anything back, so any EOF we
  can read means it closed; we look before writing (so a batch is not written into a
  connection the peer already closed: rsyslog #3929, the "first message lost after a
  restart") and again after writing. TCP cannot tell what the peer really read before a
  connection dropped: after a failure the caller re-sends the whole batch on a new
  connection, so records may arrive twice, each time with the same ``event_id`` for the
  SIEM to dedupe. For delivery the receiver confirms record by record, use RELP
  (``shipper.sinks.relp``).

Every wait is bounded: TCP connect (``connect_timeout``), TLS handshake
(``TlsOptions.handshake_timeout``: a peer that accepts TCP but never answers the handshake
cannot hang us, unlike rsyslog #5539) and writing (``write_timeout``: a peer that stops
reading). TCP keepalive finds peers that vanished without a FIN. Backoff between attempts
is ``base.deliver``'s job; ``send`` reconnects when the previous attempt failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from shipper.encode.rfc5424 import Rfc3164Encoder, Rfc5424Encoder
from shipper.framing import FRAMINGS, LF, OCTET_COUNTED, frame_texts
from shipper.sinks.base import (
    DatagramPeer,
    Prepared,
    SinkError,
    SinkStats,
    close_stream,
    describe_error,
    lookup,
    spoke,
)
from shipper.sinks.confirm import (
    BatchConfirmations,
    drain_while_moving,
    gone_after_handshake,
    hold_off,
)
from shipper.tlsconfig import TlsOptions, client_context

Encoder = Rfc5424Encoder | Rfc3164Encoder

# UDP: 1500-byte Ethernet MTU - 20 (IPv4 header) - 8 (UDP header). Larger datagrams are
# fragmented, and one lost fragment (or a firewall dropping fragments) loses the record;
# RFC 5426 3.2 asks senders to stay within the path MTU. Over IPv6 use 1452.
DEFAULT_MAX_DATAGRAM = 1472


def set_keepalive(sock: socket.socket, idle: int, interval: int, count: int) -> None:
    """SO_KEEPALIVE with Linux-style tuning where the platform has it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        opt = getattr(socket, name, None)
        if opt is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)


async def open_stream(host: str, port: int, *, tls: TlsOptions | None, ssl_context: ssl.SSLContext | None,
                      connect_timeout: float, keepalive: tuple[int, int, int] | None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP connect (bounded), keepalive, then the TLS handshake (bounded) if ``tls``.

    Raises SinkError with a one-line reason naming the peer and the phase that failed.
    """
    loop = asyncio.get_running_loop()
    peer = f"{host}:{port}"
    try:
        infos = await asyncio.wait_for(lookup(host, port, socket.SOCK_STREAM), connect_timeout)
    except (OSError, TimeoutError) as exc:  # a gaierror says "cannot resolve" itself
        # A name server that does not answer: the C library's words for it, also when our
        # wait ends first (the next try joins that look-up, which ends in EAI_AGAIN; two
        # wordings took turns and each change was said again, every try)
        why = "Temporary failure in name resolution" if isinstance(exc, TimeoutError) \
            else describe_error(exc)
        plain = isinstance(exc, socket.gaierror) or getattr(exc, "errno", None) in (errno.EMFILE, errno.ENFILE)
        raise SinkError(f"{host}: {why}" if plain
                        else f"{host}: cannot resolve the host name: {why}") from exc
    sock: socket.socket | None = None
    last: BaseException | None = None
    for family, kind, proto, _, addr in infos:
        candidate = socket.socket(family, kind, proto)
        candidate.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(candidate, addr), connect_timeout)
        except (OSError, TimeoutError) as exc:
            candidate.close()
            last = exc
            continue
        sock = candidate
        break
    if sock is None:
        reason = f"connect timed out after {connect_timeout:g}s" if isinstance(last, TimeoutError) \
            else f"connect failed: {describe_error(last or OSError('no address'))}"
        raise SinkError(f"{peer}: {reason}")
    if keepalive is not None:
        set_keepalive(sock, *keepalive)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return await asyncio.open_connection(sock=sock, limit=1 << 16)
    hs = tls.handshake_timeout
    try:
        # ssl_handshake_timeout bounds the handshake inside asyncio; wait_for is the backstop
        return await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=ssl_context, server_hostname=tls.server_name or host,
                                    ssl_handshake_timeout=hs, limit=1 << 16),
            hs + 1.0)
    except (TimeoutError, ConnectionAbortedError) as exc:
        sock.close()
        raise SinkError(f"{peer}: TLS handshake timed out after {hs:g}s (peer accepted TCP but did not "
                        f"complete the handshake)") from exc
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        why = describe_error(exc)
        if isinstance(exc, ConnectionResetError):  # the peer's only answer: a reset
            why += (f" (does the peer take TLS {tls.min_version[4:]} or later (tls.min_version)? "
                    "is it a TLS port?)")
        raise SinkError(f"{peer}: TLS handshake failed: {why}") from exc


async def _let_io_run() -> None:
    """Two loop iterations: in the first the selector queues the socket's read callback
    behind us, in the second that callback has run (EOF fed to the reader)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class SyslogTcpSink:
    """RFC 5424 (or 3164) over TCP, octet-counted (default) or LF-framed, optionally TLS.

    ``framing``: ``octet-counted`` or ``lf``; ``newline_escape`` replaces LF inside a
    message with LF framing (``#012`` like rsyslog, or ``b" "``; CR and NUL are always
    ``#015`` and ``#000``: ``shipper.framing``). ``tls``: None for plain
    TCP. ``keepalive``: (idle, interval, count) seconds/probes, or None to disable.
    """

    def __init__(self, host: str, port: int, *, framing: str = OCTET_COUNTED, tls: TlsOptions | None = None,
                 encoder: Encoder | None = None, connect_timeout: float = 10.0, write_timeout: float = 30.0,
                 keepalive: tuple[int, int, int] | None = (60, 10, 5), newline_escape: bytes = b"#012",
                 name: str = "syslog") -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
        self.name = name
        self.host = host
        self.port = port
        self.framing = framing
        self.tls = tls
        self.encoder: Encoder = encoder or Rfc5424Encoder()
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.keepalive = keepalive
        self.newline_escape = newline_escape
        self.stats = SinkStats()
        self._ssl = client_context(tls) if tls is not None else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._watch: asyncio.Task[None] | None = None
        self._peer_gone: str | None = None
        self._gone_at: float | None = None  # when the watcher saw the peer end it (monotonic)
        self._said = b""  # the first bytes the peer sent (a syslog receiver sends none)
        self._last_batch: list[dict[str, Any]] | Prepared | None = None
        self._last_payload = b""
        self._confirmations = BatchConfirmations()

    def confirm(self) -> tuple[int, bool]:
        """(how many of the oldest sends the peer's TCP has acknowledged since the last
        call, whether a dropped connection lost the rest: the pipeline sends them again).
        Until acknowledged, the pipeline keeps them in the buffer (sinks.confirm)."""
        got = self._confirmations.take(self._writer, gone=self._writer is not None and self._gone(),
                                       ended_at=self._gone_at)
        self.stats.acked += self._confirmations.taken_records
        return got

    @property
    def encoding(self) -> StreamEncoding:
        """Records → this sink's framed bytes; pure, so the parse worker can run it."""
        return StreamEncoding(self.encoder, self.framing, self.newline_escape)

    def _payload(self, records: list[dict[str, Any]] | Prepared) -> bytes:
        """The framed batch; a re-sent batch (the same list) is not encoded or counted twice."""
        if records is self._last_batch and self._last_payload:
            return self._last_payload
        if isinstance(records, Prepared):
            payload, truncated = records.payload, records.truncated
        else:
            payload, truncated = self.encoding(records)
        self.stats.truncated += truncated
        self._last_batch, self._last_payload = records, payload
        return payload

    async def _connect(self) -> None:
        t0 = time.monotonic()
        self._reader, self._writer = await open_stream(
            self.host, self.port, tls=self.tls, ssl_context=self._ssl,
            connect_timeout=self.connect_timeout, keepalive=self.keepalive)
        self._peer_gone = self._gone_at = None
        self._said = b""
        self._watch = asyncio.create_task(self._watch_peer(self._reader))
        if self.tls is not None and await gone_after_handshake(self._watch, time.monotonic() - t0):
            reason = self._peer_gone or "peer closed the connection"
            await self._drop()
            raise SinkError(f"{self.host}:{self.port}: {reason} right after the TLS handshake "
                            "(client certificate refused?)")
        self.stats.connected = True

    async def connect(self) -> None:
        """Connect now if not connected (the pipeline's start: the first batch does not
        wait for a connect and a TLS handshake, and a receiver down is said at once)."""
        if self._writer is None:
            await self._connect()

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        """A syslog receiver never sends: wait for its EOF (or error) and remember it."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    self._gone_at = time.monotonic()
                    self._peer_gone = "peer closed the connection" + spoke(self._said)
                    return
                if len(self._said) < 40:
                    self._said += data[:40 - len(self._said)]
                self.stats.extra["unexpected_bytes"] = self.stats.extra.get("unexpected_bytes", 0) + len(data)
        except (OSError, ssl.SSLError) as exc:
            self._gone_at = time.monotonic()
            self._peer_gone = f"connection lost: {describe_error(exc)}{spoke(self._said)}"

    def _gone(self) -> bool:
        """Did the peer close (EOF read, error, or transport closing)?"""
        return bool(self._peer_gone or (self._reader is not None and self._reader.at_eof())
                    or (self._writer is not None and self._writer.is_closing()))

    async def _drop(self) -> None:
        self.stats.connected = False
        self._confirmations.dropped(self._writer, self._gone_at)
        writer, watch = self._writer, self._watch
        self._reader = self._writer = self._watch = None
        if watch is not None:
            watch.cancel()
        if writer is not None:
            await close_stream(writer, 1.0, abort=True)

    async def send(self, records: list[dict[str, Any]] | Prepared) -> None:
        if not records:
            self._confirmations.wrote(0)
            return
        payload = self._payload(records)
        if self._writer is not None:
            await _let_io_run()  # a FIN that arrived while we were busy gets read now
        if self._writer is not None and self._gone():
            # the peer closed since the last batch: do not write into the void (rsyslog #3929)
            self.stats.extra["peer_closed"] = self.stats.extra.get("peer_closed", 0) + 1
            await self._drop()
        if self._writer is None:
            hold_off(self._confirmations, f"{self.host}:{self.port}", spoke(self._said))
            await self._connect()
        writer = self._writer
        assert writer is not None
        peer = f"{self.host}:{self.port}"
        try:
            writer.write(payload)
            await drain_while_moving(writer, self.write_timeout)
            await _let_io_run()  # a FIN or RST that is already here gets seen
        except TimeoutError as exc:
            await self._drop()
            raise SinkError(f"{peer}: write timed out after {self.write_timeout:g}s (peer not reading)") from exc
        except (OSError, ssl.SSLError) as exc:
            await self._drop()
            # (what the peer sent, if it was seen before the reset: a RELP port's answer)
            raise SinkError(f"{peer}: write failed: {describe_error(exc)}{spoke(self._said)}") from exc
        if self._gone():
            reason = self._peer_gone or "peer closed the connection"
            await self._drop()
            raise SinkError(f"{peer}: {reason} while sending a batch of {len(records)}")
        self._last_batch, self._last_payload = None, b""  # written: keep nothing
        self._confirmations.wrote(len(payload), len(records))
        self.stats.sent += len(records)  # acked: when the peer's TCP has them (confirm)

    async def close(self) -> None:
        writer = self._writer
        try:
            if writer is not None:
                await close_stream(writer, 2.0)
        finally:
            # also when the close is cut short (a reload's wait_for, a peer that stopped
            # reading): the connection is dropped at once, not left open with its queue
            await self._drop()


@dataclass(slots=True)
class StreamEncoding:
    """Records → one framed byte string for a stream, and how many were cut to fit."""

    encoder: Encoder
    framing: str
    newline_escape: bytes

    def __call__(self, records: list[dict[str, Any]]) -> tuple[bytes, int]:
        before = self.encoder.truncated
        # messages as text, then one encode for the whole batch (framing.octet_counted_texts)
        payload = frame_texts(self.encoder.encode_texts(records), self.framing, self.newline_escape)
        return payload, self.encoder.truncated - before


class SyslogUdpSink:
    """RFC 5426: one message per datagram, at most ``max_datagram`` octets each.

    A record too big for a datagram is cut by the encoder (``truncated="1"`` in its
    structured data, counted in ``stats.truncated``), never dropped. An ICMP "port
    unreachable" reported by the kernel (the receiver is not listening) fails the attempt,
    so the batch is sent again later; nothing else about delivery can be known over UDP.
    """

    def __init__(self, host: str, port: int, *, encoder: Encoder | None = None,
                 max_datagram: int = DEFAULT_MAX_DATAGRAM, name: str = "syslog-udp") -> None:
        if encoder is not None and encoder.max_size > max_datagram:
            raise ValueError(f"encoder max_size {encoder.max_size} exceeds max_datagram {max_datagram}")
        self.name = name
        self.host = host
        self.port = port
        self.encoder: Encoder = encoder or Rfc5424Encoder(max_size=max_datagram)
        self.max_datagram = max_datagram
        self.stats = SinkStats()
        self._peer = DatagramPeer(host, port)
        self._last_batch: list[dict[str, Any]] | None = None
        self._last_datagrams: list[bytes] = []

    async def send(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        if records is self._last_batch:
            datagrams = self._last_datagrams
        else:
            before = self.encoder.truncated
            datagrams = self.encoder.encode_batch(records)
            self.stats.truncated += self.encoder.truncated - before
            self._last_batch, self._last_datagrams = records, datagrams
        try:
            sock = await self._peer.socket()
        except OSError as exc:
            self.stats.connected = False
            raise SinkError(f"{self.host}:{self.port}: {describe_error(exc)}") from exc
        self.stats.connected = True
        loop = asyncio.get_running_loop()
        try:
            for d in datagrams:
                try:
                    sock.send(d)
                except BlockingIOError:
                    await loop.sock_sendall(sock, d)  # socket buffer full: wait until writable
        except OSError as exc:
            self.stats.connected = False
            self._peer.failed(exc)
            raise SinkError(f"{self.host}:{self.port}: UDP send failed: {describe_error(exc)}") from exc
        self._last_batch, self._last_datagrams = None, []
        self.stats.sent += len(records)
        self.stats.acked += len(records)

    async def close(self) -> None:
        self._peer.close()
        self.stats.connected = False


__all__ = ["DEFAULT_MAX_DATAGRAM", "LF", "OCTET_COUNTED", "SyslogTcpSink", "SyslogUdpSink", "open_stream"]
