"""RELP sink: syslog with a receipt for every record. The zero-loss choice for rsyslog.

Plain TCP syslog cannot know what the receiver read before a connection dropped; RELP
can: the receiver answers each ``syslog`` command with ``200 OK`` once it has taken the
message. ``send(batch)`` returns only when every record of the batch got its ``200 OK``.
If the connection fails first, it raises SinkError and the caller sends the same batch
again: the records already acknowledged in this batch are not sent again (the sink
remembers them for the same list), so only records that were in the open window (sent,
not yet answered) can arrive twice, with the same ``event_id``.

Works over TCP or TLS (``tls``), with the same bounded connect, handshake and keepalive
as ``shipper.sinks.syslog``, and ``ack_timeout`` bounding the wait for responses.
Messages are RFC 5424 (``shipper.encode.rfc5424``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from shipper.encode.rfc5424 import Rfc5424Encoder
from shipper.relp import ACKED, ERROR, OPENED, REFUSED, SERVER_CLOSE, RelpClient
from shipper.sinks.base import SinkError, SinkStats, close_stream, describe_error
from shipper.sinks.syslog import open_stream
from shipper.tlsconfig import TlsOptions, client_context


class RelpSink:
    """``window``: syslog commands in flight (unanswered) at most, 128 by default (librelp's
    default window is 128 too); it bounds what can be duplicated after a connection loss.
    ``ack_timeout``: seconds without a complete response while waiting for one. A record the
    server answers with a non-200 code fails the attempt (SinkError, retried): rsyslog
    answers 500 only for trouble on its side, which may clear.
    """

    def __init__(self, host: str, port: int, *, tls: TlsOptions | None = None, window: int = 128,
                 encoder: Rfc5424Encoder | None = None, connect_timeout: float = 10.0,
                 ack_timeout: float = 30.0, keepalive: tuple[int, int, int] | None = (60, 10, 5),
                 name: str = "relp") -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.window = window
        self.encoder = encoder or Rfc5424Encoder()
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.keepalive = keepalive
        self.stats = SinkStats()
        self._ssl = client_context(tls) if tls is not None else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._client: RelpClient | None = None
        # progress on the batch being sent: survives a failed attempt for the same list
        self._batch: list[dict[str, Any]] | None = None
        self._messages: list[bytes] = []
        self._acked: list[bool] = []

    @property
    def _peer(self) -> str:
        return f"{self.host}:{self.port}"

    async def _connect(self) -> None:
        reader, writer = await open_stream(self.host, self.port, tls=self.tls, ssl_context=self._ssl,
                                           connect_timeout=self.connect_timeout, keepalive=self.keepalive)
        client = RelpClient(window=self.window)
        self._reader, self._writer, self._client = reader, writer, client
        try:
            writer.write(client.open())
            await asyncio.wait_for(writer.drain(), self.ack_timeout)
            while client.state == "opening":
                for ev in await self._read(client):
                    if ev.kind == OPENED:
                        self.stats.extra["relp_server"] = ev.offers.get("relp_software", "") if ev.offers else ""
                    elif ev.kind in (REFUSED, ERROR):
                        raise SinkError(f"{self._peer}: RELP open refused: {ev.text}")
        except (OSError, ssl.SSLError, SinkError) as exc:
            await self._drop()
            why = describe_error(exc) if not isinstance(exc, SinkError) else None
            if self.tls is not None and (why is not None and "reset" in why.lower()
                                         or "peer closed the connection" in str(exc)):
                # imrelp's tls.authMode refusing our certificate (or its lack) says no more
                raise SinkError(f"{self._peer}: peer closed the connection right after the TLS "
                                "handshake, before the RELP open (client certificate refused or "
                                "missing? see tls.cert_file and the receiver's tls.authMode)") from exc
            if why is None:
                if self.tls is None and "RELP open refused" not in str(exc):
                    # silence or a hang-up is all a wrong port gives (found against rsyslog)
                    raise SinkError(f"{exc}, no answer to the RELP open: is this a RELP port? (a "
                                    "syslog port takes the open for a message and says nothing; "
                                    'a TLS one hangs up: protocol = "tls")') from exc
                raise
            raise SinkError(f"{self._peer}: connection lost: {why}") from exc
        except BaseException:
            await self._drop()
            raise
        self.stats.connected = True

    async def _read(self, client: RelpClient) -> list:
        """The events of the next complete response(s), within ``ack_timeout`` for the
        whole of them: bounded per read, a peer trickling a byte a second held the sink
        (and the pipeline behind it) for ever."""
        assert self._reader is not None
        deadline = asyncio.get_running_loop().time() + self.ack_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self._reader.read(65536)
            except TimeoutError as exc:
                part = f"{client.partial} bytes of an unfinished response came; " if client.partial else ""
                raise SinkError(f"{self._peer}: no {'complete ' if part else ''}RELP response for "
                                f"{self.ack_timeout:g}s ({part}{len(client.unacked)} commands "
                                "unanswered)") from exc
            except (OSError, ssl.SSLError) as exc:
                raise SinkError(f"{self._peer}: connection lost: {describe_error(exc)}") from exc
            if not data:
                raise SinkError(f"{self._peer}: peer closed the connection "
                                f"({len(client.unacked)} commands unanswered)")
            events = client.receive(data)
            if events:
                return events

    async def _drop(self) -> None:
        self.stats.connected = False
        writer = self._writer
        self._reader = self._writer = self._client = None
        if writer is not None:
            await close_stream(writer, 1.0, abort=True)

    def _prepare(self, records: list[dict[str, Any]]) -> None:
        if records is self._batch and len(self._acked) == len(records):
            return  # the same batch again: keep what was acknowledged
        before = self.encoder.truncated
        self._messages = self.encoder.encode_batch(records)
        self.stats.truncated += self.encoder.truncated - before
        self._acked = [False] * len(records)
        self._batch = records

    async def send(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        self._prepare(records)
        try:
            if self._client is None:
                await self._connect()
            await self._send_window(records)
        except SinkError as exc:
            await self._drop()
            if all(self._acked):
                # every record answered before the peer went: rsyslog at its stop answers
                # what it took, then says serverclose in the same packet. Delivered: a
                # failure here had the batch sent again after the restart (50 copies)
                self._batch, self._messages, self._acked = None, [], []
                return
            self.stats.last_error = str(exc)
            raise
        except (OSError, ssl.SSLError) as exc:
            await self._drop()
            raise SinkError(f"{self._peer}: connection lost: {describe_error(exc)}") from exc
        self._batch, self._messages, self._acked = None, [], []

    async def _send_window(self, records: list[dict[str, Any]]) -> None:
        client, writer = self._client, self._writer
        assert client is not None and writer is not None
        messages, acked = self._messages, self._acked
        todo = [i for i, done in enumerate(acked) if not done]
        nxt = 0
        remaining = len(todo)
        while remaining:
            room = client.room
            if room and nxt < len(todo):
                idx = todo[nxt:nxt + room]
                nxt += len(idx)
                writer.write(client.syslog([messages[i] for i in idx], idx))
                self.stats.sent += len(idx)
                await asyncio.wait_for(writer.drain(), self.ack_timeout)
                if nxt < len(todo) and client.room:
                    continue
            for ev in await self._read(client):
                if ev.kind == ACKED:
                    acked[ev.tag] = True
                    remaining -= 1
                    self.stats.acked += 1
                elif ev.kind == REFUSED:
                    raise SinkError(f"{self._peer}: RELP server refused a record "
                                    f"(event_id {records[ev.tag].get('event_id')}): {ev.code} {ev.text}")
                elif ev.kind == SERVER_CLOSE:
                    raise SinkError(f"{self._peer}: RELP server is closing the connection "
                                    f"({len(client.unacked)} commands unanswered)")
                elif ev.kind == ERROR:
                    raise SinkError(f"{self._peer}: RELP protocol error: {ev.text}")

    def answered(self, records: list[dict[str, Any]]) -> int:
        """How many of ``records``, from the first, the server has answered 200 OK: a
        batch cut short by a stop or a reload is delivered that far (the pipeline
        acknowledges those; only the rest goes again)."""
        if records is not self._batch:
            return 0
        n = 0
        for done in self._acked:
            if not done:
                break
            n += 1
        return n

    async def connect(self) -> None:
        """Open the session now if none is open (see SyslogTcpSink.connect)."""
        if self._client is None:
            await self._connect()

    async def probe(self) -> None:
        """Open a RELP session and close it again (``shipper check``): a port that takes
        TCP but does not speak RELP fails here, not at the first batch. Raises SinkError."""
        try:
            await self._connect()
        finally:
            await self.close()

    async def close(self) -> None:
        client, writer = self._client, self._writer
        try:
            if client is not None and writer is not None and client.state == "open":
                with contextlib.suppress(Exception):
                    writer.write(client.close())
                    await asyncio.wait_for(writer.drain(), 2.0)
                    async with asyncio.timeout(2.0):
                        while client.state == "closing":
                            await self._read(client)
        finally:  # also when cut short (a reload's wait_for): no connection left open
            await self._drop()
