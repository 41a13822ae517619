"""The sink contract, and the retry loop every sink shares.

A sink delivers lists of flat record dicts (the JSON form in docs/records.md).
``send`` is ONE attempt: it connects if needed, sends the batch, and returns
only when the batch is delivered by the sink's own standard of delivery
(RELP: the receiver's ``200 OK`` for every record; HTTP: a 2xx; TCP/TLS:
written and the connection still alive; UDP: sent). On failure it raises
``SinkError`` (retry later; ``retry_after`` may carry the peer's hint) or
``PermanentError`` (this batch will never be accepted: the caller dead-letters
it). Backoff, rewinding the buffer and re-sending live in ``deliver`` and the
pipeline, not in each sink.
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("shipper.sink")


# What to do about the verification failures an install meets (OpenSSL's X509_V_ERR_*).
_WRONG_CA = ("tls.ca_file must hold the CA that signed the receiver's certificate (or tls.ca_dir, "
             "under its hash name: openssl rehash DIR)")
_VERIFY_HINTS = {
    9: "not valid yet: is this host's clock right?",
    10: "the receiver's certificate must be renewed (or is this host's clock wrong?)",
    18: _WRONG_CA, 19: _WRONG_CA, 20: _WRONG_CA, 21: _WRONG_CA,
    62: "the certificate does not hold that name: set host, or tls.server_name, to one it holds",
    # host given as an address the certificate lacks (a "127.0.0.1" or LAN address in place
    # of the name: found against rsyslog with a certificate for its name only)
    64: "the certificate does not hold that address: set host, or tls.server_name, to a name it holds",
}


class SlowPeer(TimeoutError):
    """A time limit of ours ran out; its text says which (describe_error gives it)."""


def describe_error(exc: BaseException) -> str:
    """One clear line for a connection error, for every sink's log and metrics."""
    # http.client's words are its class names ("IncompleteRead: IncompleteRead(0 bytes
    # read)"): said here as what the receiver did (found by fault injection)
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection closed in the middle of the answer ({len(exc.partial)} bytes of its body came)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the receiver closed the connection without answering"
    if isinstance(exc, http.client.BadStatusLine | http.client.LineTooLong):
        return f"not an HTTP answer: {printable(str(exc), 100)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = _VERIFY_HINTS.get(exc.verify_code or 0)
        return (f"TLS certificate verification failed: {exc.verify_message or exc.reason or exc}"
                + (f" ({hint})" if hint else ""))
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "WRONG_VERSION_NUMBER":  # OpenSSL's word for an answer that is no TLS
            return ("TLS error: WRONG_VERSION_NUMBER (the peer answered in plain text, not TLS: is "
                    "this a TLS port? for a plain one: http://, or protocol (syslog, relp) or "
                    "transport (gelf) = \"tcp\")")
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, SlowPeer):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc):
        return "TLS handshake timed out"  # asyncio's ssl_handshake_timeout
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE) \
            and not isinstance(exc, socket.gaierror):
        return ("too many open files: raise the limit (ulimit -n under daemontools, "
                "LimitNOFILE under systemd)")
    if isinstance(exc, socket.gaierror):  # its errno is getaddrinfo's, not errno's
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text adds nothing but the address
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, ConnectionError) and not str(exc):
        # asyncio's bare ConnectionResetError for an EOF in the TLS handshake: said as
        # the reset the same peer gives on other tries, else each try's wording took
        # turns and every retry was logged as a new cause (found against tcpserver)
        code = next(c for cls, c in _BARE_ERRNO if isinstance(exc, cls))
        return os.strerror(code)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


_BARE_ERRNO = ((ConnectionResetError, errno.ECONNRESET), (BrokenPipeError, errno.EPIPE),
               (ConnectionAbortedError, errno.ECONNABORTED), (ConnectionRefusedError, errno.ECONNREFUSED),
               (ConnectionError, errno.ECONNRESET))


# Name look-ups in flight, by what was asked: a retry joins the one still running.
_lookups: dict[tuple[str, int, int], asyncio.Future[list[Any]]] = {}


async def lookup(host: str, port: int, kind: int) -> list[Any]:
    """``getaddrinfo`` off the event loop, on a daemon thread of its own, one at a time
    per name. asyncio's look-up runs in the default executor, which a timeout does not
    free: with a resolver that does not answer (found by fault injection: 20 s a try),
    each retry of each sink took one more of its few threads, the file and HTTP sinks
    that need them stalled for 70 s, and a stop waited 36 s for the look-ups (drain
    5 s). An address needs no thread."""
    try:
        return socket.getaddrinfo(host, port, type=kind, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        pass
    loop = asyncio.get_running_loop()
    key = (host, port, kind)
    fut = _lookups.get(key)
    if fut is None or fut.get_loop() is not loop:
        fut = _lookups[key] = loop.create_future()

        def settle(result: list[Any] | None, exc: BaseException | None) -> None:
            if _lookups.get(key) is fut:
                del _lookups[key]
            if not fut.done():
                if exc is None:
                    fut.set_result(result)
                else:
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: no one may be waiting any more

        def run() -> None:
            try:
                result, exc = socket.getaddrinfo(host, port, type=kind), None
            except Exception as e:  # noqa: BLE001 - handed to the awaiting sink
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(settle, result, exc)
            except RuntimeError:
                pass  # the loop is closed: the daemon stopped meanwhile

        threading.Thread(target=run, name=f"lookup {host}", daemon=True).start()
    return await asyncio.shield(fut)


# A UDP sink looks its host's name up again this often (seconds): nothing tells it that
# the name moved (a collector replaced, DNS failover) while the old address takes the
# datagrams in silence; found by fault injection: 800 records in 80 s went to the old one.
DATAGRAM_RESOLVE_EVERY = 60.0


async def datagram_socket(host: str, port: int, refused: Any = None,
                          old: socket.socket | None = None) -> socket.socket:
    """A UDP socket connected (the kernel then reports ICMP errors back) to one of
    ``host``'s addresses: the first, or the one after ``refused`` (the address a send
    was last refused at), as TCP tries each address in turn. Found by fault injection:
    with a name of ::1 and 127.0.0.1 (localhost) and the receiver on 127.0.0.1 only,
    every try went to ::1, was refused, and nothing was ever delivered. ``old``: the
    socket in use, kept while the name still gives its address (by address, not by
    place: round-robin DNS turns the order at each look-up, and a place put the sink
    back on a dead address once a minute), else closed once the new one is made; kept
    too while the name cannot be looked up (a DNS outage is no reason to stop sending
    where it worked)."""
    try:
        infos = await lookup(host, port, socket.SOCK_DGRAM)
    except OSError:
        if old is not None:
            return old
        raise
    addrs = [info[4] for info in infos]
    if old is not None and peer_address(old) in addrs:  # (None: not connected any more)
        return old
    at = addrs.index(refused) + 1 if refused in addrs else 0
    error: OSError | None = None
    for i in range(len(infos)):
        # An address this host cannot send to (an IPv6 one without IPv6: the socket or
        # connect() fails at once) gives way to the next, as a refusal does.
        family, kind, proto, _, addr = infos[(at + i) % len(infos)]
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            error = error or exc
            continue
        try:
            sock.setblocking(False)
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            error = error or exc
            continue
        if old is not None:
            old.close()
        return sock
    if old is not None:
        return old
    assert error is not None
    raise error


def peer_address(sock: socket.socket) -> Any:
    """The address ``sock`` is connected to, or None."""
    try:
        return sock.getpeername()
    except OSError:
        return None


class DatagramPeer:
    """A UDP sink's connected socket to its host's name (see ``datagram_socket``): the
    name looked up again every DATAGRAM_RESOLVE_EVERY, and after a refused send the
    next try goes to the address after the refused one."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self._refused: Any = None  # the address a send was refused at (ICMP port unreachable)
        self._resolve_at = 0.0  # when to look the name up again

    async def socket(self) -> socket.socket:
        """The socket to send on; OSError when none can be made."""
        if self.sock is None or time.monotonic() >= self._resolve_at:
            self.sock = await datagram_socket(self.host, self.port, self._refused, self.sock)
            self._resolve_at = time.monotonic() + DATAGRAM_RESOLVE_EVERY
        return self.sock

    def failed(self, exc: OSError) -> None:
        """A send failed: the socket goes, and a refusal moves the next try on."""
        if self.sock is not None:
            if exc.errno == errno.ECONNREFUSED:
                self._refused = peer_address(self.sock)
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class SinkError(Exception):
    """Delivery failed for now; the batch must be sent again."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkGone(Exception):
    """The sink can never deliver again (stdout's reader went away): the shipper stops,
    the records stay in the buffer for the next start."""


class PermanentError(Exception):
    """The peer refused this batch for good (e.g. HTTP 400): dead-letter it. ``refused``:
    the indexes of the records refused when the rest of the batch was delivered (None:
    the whole batch)."""

    def __init__(self, message: str, response: str = "", refused: list[int] | None = None) -> None:
        super().__init__(message)
        self.response = response
        self.refused = refused


@dataclass(slots=True)
class SinkStats:
    sent: int = 0  # records handed to the peer
    acked: int = 0  # records the peer confirmed (by the sink's standard)
    retried: int = 0  # records sent again after a failure
    failed: int = 0  # failed attempts (batches)
    dead_lettered: int = 0  # records refused for good
    truncated: int = 0  # records cut to fit a size limit (flagged, not dropped)
    connected: bool = False
    failing: bool = False  # the last attempt failed: a sink can be connected and failing
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Prepared:
    """A batch already encoded for the wire (by the parse worker): exactly what the
    sink's ``encoding`` gives for the records; a sink with an ``encoding`` attribute
    accepts it in ``send`` in place of the record list."""

    payload: Any
    count: int
    truncated: int = 0  # records the encoder cut to fit

    def __len__(self) -> int:
        return self.count


async def close_stream(writer: asyncio.StreamWriter, timeout: float, abort: bool = False) -> None:
    """Close a stream within ``timeout``; never raises (but our own cancellation).

    ``wait_closed()`` is shielded: a timeout around it would cancel the stream's
    shared close waiter, and the next ``wait_closed()`` would then raise
    CancelledError, which is no Exception and took the daemon down at a reload
    with a receiver that had stopped reading.
    """
    try:
        if abort:  # no graceful (TLS) close on a failed connection
            writer.transport.abort()
        else:
            writer.close()
        await asyncio.wait_for(asyncio.shield(writer.wait_closed()), timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: let it through
    except Exception:  # noqa: BLE001 - closing a broken stream: nothing left to do
        pass


class Sink(Protocol):
    name: str
    stats: SinkStats

    async def send(self, records: list[dict[str, Any]]) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter (AWS style), capped."""

    base: float = 0.2
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self, hint: float | None = None) -> float:
        self.attempt += 1
        delay = random.uniform(0, min(self.cap, self.base * (2 ** min(self.attempt, 30))))
        if hint is not None:
            delay = max(delay, min(hint, 3600.0))  # honour Retry-After, within reason
        return delay

    def reset(self) -> None:
        self.attempt = 0


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RELP_FRAME = re.compile(rb"[0-9]{1,9} (?:serverclose|rsp) ")


def spoke(said: bytes) -> str:
    """What a peer sent on a connection a syslog or GELF receiver never sends on, said
    after "peer closed the connection": imrelp given syslog answers "0 serverclose 0"
    and hangs up, which was said as a bare close (found against rsyslog)."""
    if not said:
        return ""
    what = ('is this a RELP port (type = "relp")?' if _RELP_FRAME.match(said)
            else "is this port a log receiver's?")
    return f" after sending '{printable(said.decode('latin-1'), 40)}' (a receiver sends nothing: {what})"


def printable(text: str, limit: int = 500) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``, ``\\r``), cut."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


WAIT_IN_BUFFER = "records wait in the buffer"


def note_failure(sink: Sink, backoff: Backoff, exc: SinkError, waiting: str = WAIT_IN_BUFFER) -> float:
    """Count and say a failed attempt (said once an outage, and at each new cause);
    returns the delay before the next. ``waiting``: where the records wait meanwhile."""
    sink.stats.failed += 1
    sink.stats.failing = True
    # what a peer sent may be in the text: never raw control bytes into the log
    # or a metric label (terminal escapes, a CR splitting one warning in two)
    why = printable(str(exc))
    if backoff.attempt == 0 or why != sink.stats.last_error:
        # the first failure of an outage, and each new cause (an expired
        # certificate after a refused connection), not every retry
        log.warning("sink %s: %s (retrying; %s)", sink.name, why, waiting)
    sink.stats.last_error = why
    return backoff.next_delay(exc.retry_after)


async def deliver(sink: Sink, records: list[dict[str, Any]], backoff: Backoff | None = None,
                  stop: asyncio.Event | None = None, waiting: str = WAIT_IN_BUFFER) -> bool:
    """Send until delivered. Returns False if ``stop`` was set first.

    Never gives up on a retryable error: the disk buffer holds the data, and
    dropping it after N tries is what the anchors' users complain about.
    ``PermanentError`` propagates to the caller, which dead-letters the batch.
    """
    backoff = backoff or Backoff()
    first = True
    while True:
        if stop is not None and stop.is_set():
            return False
        try:
            if not first:
                sink.stats.retried += len(records)
            await sink.send(records)
            if backoff.attempt:  # said once when it broke, once when it works again
                log.info("sink %s: delivering again after %d failed attempts", sink.name,
                         backoff.attempt)
            backoff.reset()
            sink.stats.failing = False
            return True
        except PermanentError:
            # the peer answered: the batch goes to the dead letter and the sink goes on
            # (left set, an idle sink said "failing" until its next batch, for good)
            sink.stats.failing = False
            raise
        except SinkError as exc:
            first = False
            delay = note_failure(sink, backoff, exc, waiting)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
