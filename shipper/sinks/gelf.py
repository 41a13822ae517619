"""GELF 1.1 sinks: UDP (chunked, compressed), TCP/TLS (NUL-delimited), HTTP.

Delivery standard (see shipper.sinks.base): UDP — every datagram handed to the
kernel (a receiver that is down shows up as ICMP "port unreachable" on the
connected socket: the batch is then sent again, so records of the batch sent
before the error may arrive twice; ``_event_id`` lets Graylog dedupe). TCP/TLS —
written, flushed to the kernel, and the connection still open; plain TCP
cannot tell what the peer really read if it dies right after (use RELP for
zero loss; for GELF there is no acknowledging transport).

A record too big for 128 UDP chunks, or over TCP for Graylog's 2 MiB frames, is cut
(``_truncated``), never dropped; ``stats.truncated`` counts them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import time
from typing import Any

from shipper.encode import gelf as gelf_encode
from shipper.sinks.base import (
    DatagramPeer,
    SinkError,
    SinkStats,
    close_stream,
    describe_error,
    spoke,
)
from shipper.sinks.confirm import (
    BatchConfirmations,
    drain_while_moving,
    gone_after_handshake,
    hold_off,
)
from shipper.sinks.http import HttpSink
from shipper.sinks.syslog import open_stream
from shipper.tlsconfig import TlsOptions, client_context

DEFAULT_PORT = 12201


def _error(where: str, exc: BaseException) -> SinkError:
    return SinkError(f"{where}: {describe_error(exc)}")


class GelfUdpSink:
    """GELF over UDP: one datagram per message, chunked above ``chunk_size``."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, *, name: str = "gelf",
                 chunk_size: int = gelf_encode.DEFAULT_CHUNK_SIZE, compression: str = "gzip",
                 compress_min: int = 0, default_host: str | None = None) -> None:
        if compression not in gelf_encode.COMPRESSIONS:
            raise ValueError(f"compression must be one of {gelf_encode.COMPRESSIONS}, not {compression!r}")
        if not gelf_encode.CHUNK_HEADER + 64 <= chunk_size <= 65467:
            raise ValueError(f"chunk_size must be 76-65467 bytes, not {chunk_size}")
        self.name = name
        self.stats = SinkStats()
        self.host = host
        self.port = port
        self.chunk_size = chunk_size
        self.compression = compression
        self.compress_min = compress_min  # smaller messages go uncompressed (CPU: see encode_udp)
        self.default_host = default_host or socket.gethostname()
        self._peer = DatagramPeer(host, port)
        # Message ids: a random start, then a counter; unique per sender as the spec asks.
        self._next_id = int.from_bytes(os.urandom(8), "big")
        self.stats.extra["datagrams"] = 0

    async def send(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        try:
            sock = await self._peer.socket()
        except OSError as exc:
            self.stats.connected = False
            raise _error(f"{self.host}:{self.port}", exc) from None
        self.stats.connected = True
        loop = asyncio.get_running_loop()
        encode = gelf_encode.encode_udp
        pack = struct.pack
        truncated = datagrams = 0
        try:
            for i, rec in enumerate(records):
                self._next_id = (self._next_id + 1) & 0xFFFF_FFFF_FFFF_FFFF
                grams, cut = encode(rec, pack(">Q", self._next_id), self.chunk_size,
                                    self.compression, self.default_host, self.compress_min)
                truncated += cut
                for g in grams:
                    try:
                        sock.send(g)
                    except BlockingIOError:  # socket buffer full: wait for room
                        await loop.sock_sendall(sock, g)
                datagrams += len(grams)
                if i & 255 == 255:
                    await asyncio.sleep(0)  # let the rest of the agent run during big batches
        except OSError as exc:
            self._peer.failed(exc)
            self.stats.connected = False
            raise _error(f"{self.host}:{self.port}", exc) from None
        finally:
            self.stats.truncated += truncated
            self.stats.extra["datagrams"] += datagrams
        self.stats.sent += len(records)
        self.stats.acked += len(records)  # sent: all UDP can tell

    async def close(self) -> None:
        self._peer.close()
        self.stats.connected = False


class GelfTcpSink:
    """GELF over TCP or TLS: uncompressed JSON messages, each ended by a NUL byte."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, *, name: str = "gelf",
                 tls: TlsOptions | None = None, connect_timeout: float = 10.0,
                 write_timeout: float = 30.0, keepalive: bool = True,
                 default_host: str | None = None,
                 max_message: int = gelf_encode.MAX_TCP_MESSAGE) -> None:
        self.name = name
        self.max_message = max_message  # Graylog's max_message_size: longer ones are cut
        self.stats = SinkStats()
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.keepalive = keepalive
        self.default_host = default_host or socket.gethostname()
        self._ctx = client_context(tls) if tls is not None else None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._peer_closed = False
        self._gone_at: float | None = None  # when the watcher saw the peer end it (monotonic)
        self._said = b""  # the first bytes the peer sent (a GELF receiver sends none)
        self._confirmations = BatchConfirmations()

    def confirm(self) -> tuple[int, bool]:
        """As SyslogTcpSink.confirm: sends the peer's TCP has acknowledged."""
        writer = self._writer
        got = self._confirmations.take(writer, gone=writer is not None and (
            self._peer_closed or writer.is_closing()), ended_at=self._gone_at)
        self.stats.acked += self._confirmations.taken_records
        return got

    async def _connect(self) -> asyncio.StreamWriter:
        where = f"{self.host}:{self.port}"
        t0 = time.monotonic()
        # The syslog sinks' connect: the name looked up on its own thread (a silent name
        # server took a thread of asyncio's pool per try), connect and handshake bounded
        # apart (rsyslog #5539), keepalive probes that notice a dead peer in minutes
        reader, writer = await open_stream(self.host, self.port, tls=self.tls, ssl_context=self._ctx,
                                           connect_timeout=self.connect_timeout,
                                           keepalive=(60, 10, 5) if self.keepalive else None)
        self._peer_closed = False
        self._gone_at = None
        self._said = b""
        self._reader_task = watch = asyncio.get_running_loop().create_task(self._watch(reader))
        self._writer = writer
        if self.tls is not None and await gone_after_handshake(watch, time.monotonic() - t0):
            # (it wrote at once, and the batches a refusing peer's kernel took counted
            # delivered: a black-box review; sinks.confirm's probation holds them now too)
            await self._drop()
            raise SinkError(f"{where}: peer closed the connection right after the TLS handshake "
                            "(client certificate refused?)")
        self.stats.connected = True
        return writer

    async def connect(self) -> None:
        """Connect now if not connected (see SyslogTcpSink.connect)."""
        if self._writer is None:
            await self._connect()

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """GELF peers send nothing: read only to notice their FIN or a reset at once."""
        try:
            while data := await reader.read(65536):
                if len(self._said) < 40:
                    self._said += data[:40 - len(self._said)]
        except (OSError, ssl.SSLError):
            pass
        self._gone_at = time.monotonic()
        self._peer_closed = True

    async def send(self, records: list[dict[str, Any]]) -> None:
        if not records:
            self._confirmations.wrote(0)
            return
        if self._writer is not None and (self._peer_closed or self._writer.is_closing()):
            await self._drop()
        if self._writer is None:
            hold_off(self._confirmations, f"{self.host}:{self.port}", spoke(self._said))
        writer = self._writer or await self._connect()
        data, cut = gelf_encode.encode_tcp_counted(records, self.default_host, self.max_message)
        self.stats.truncated += cut
        self.stats.sent += len(records)
        try:
            writer.write(data)
            await drain_while_moving(writer, self.write_timeout)
            await asyncio.sleep(0)  # let the watcher see a FIN that is already here
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await self._drop()
            raise _error(f"{self.host}:{self.port}", exc) from None
        if self._peer_closed:
            await self._drop()
            raise SinkError(f"{self.host}:{self.port}: peer closed the connection{spoke(self._said)}")
        self._confirmations.wrote(len(data), len(records))  # acked: when confirmed

    async def _drop(self) -> None:
        self._confirmations.dropped(self._writer, self._gone_at)
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        self.stats.connected = False
        if task is not None:
            task.cancel()
        if writer is not None:
            await close_stream(writer, 2.0)

    async def close(self) -> None:
        await self._drop()


def gelf_http_sink(url: str, *, bulk: bool = False, **kwargs: Any) -> HttpSink:
    """GELF over HTTP: the HTTP sink with the ``gelf`` body format.

    One message per request (on one keep-alive connection) by default: Graylog's GELF
    HTTP input takes more only with "Enable Bulk Receiving" (off by default, absent in
    older versions), and otherwise keeps one message of a batch, or none, while it
    answers 202. ``bulk=True`` sends a batch newline-separated in one request.
    """
    kwargs.setdefault("name", "gelf")
    return HttpSink(url, "gelf", max_batch_records=None if bulk else 1, **kwargs)
