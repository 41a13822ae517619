"""RELP client protocol state machine, sans-IO (like h11): bytes in, bytes and events out.

RELP (rsyslog's Reliable Event Logging Protocol, librelp ``doc/relp.md``) frames::

    TXNR SP COMMAND SP DATALEN [SP DATA] LF

The client opens with ``open`` (offers ``relp_version=0``, ``relp_software``,
``commands=syslog``), sends each message as a ``syslog`` command, and ends with
``close``. The server answers every command with ``rsp`` carrying the same TXNR and
``200 OK`` (or another code: an error), in order; it may send the hint
``0 serverclose 0`` before it closes. TXNRs start at 1 and wrap from 999,999,999 to 1.
At most ``window`` commands are unanswered at any time.

This module only builds frames and parses responses; ``shipper.sinks.relp`` does the I/O.
Bad input from the peer never raises: it becomes a ``RelpEvent`` of kind ``error`` and
the client state ``broken``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_TXNR = 999_999_999
# The answer to nearly every command: one match and a dict pop take it, rather than
# the general frame parser (which costs several times more per record)
_RSP_200_OK = re.compile(rb"([1-9][0-9]{0,8}) rsp 6 200 OK\n")
MAX_HEADER = 9 + 1 + 32 + 1 + 9 + 1  # TXNR SP COMMAND SP DATALEN SP
DEFAULT_MAX_DATA = 128 * 1024  # librelp's maximum DATALEN for version 0/1

# client states
IDLE, OPENING, OPEN, CLOSING, CLOSED, BROKEN = "idle", "opening", "open", "closing", "closed", "broken"

# event kinds
OPENED = "opened"  # the server accepted ``open``; ``offers`` holds its offers
ACKED = "acked"  # a syslog command was answered 200
REFUSED = "refused"  # a command was answered with another code (or open lacked what we need)
CLOSE_ACKED = "close_acked"  # our close was answered
SERVER_CLOSE = "serverclose"  # the server's hint that it is closing the connection
ERROR = "error"  # the peer broke the protocol; the connection must be dropped


@dataclass(slots=True)
class RelpEvent:
    kind: str
    txnr: int = 0
    code: int = 0
    text: str = ""
    tag: Any = None  # what the caller attached to the command (e.g. the record's index)
    offers: dict[str, str] | None = None


class RelpClient:
    """The client side of one RELP session."""

    def __init__(self, window: int = 128, software: str = "shipper",
                 max_data: int = DEFAULT_MAX_DATA) -> None:
        if window < 1:
            raise ValueError(f"RELP window must be at least 1, got {window}")
        self.window = window
        self.software = software
        self.max_data = max_data
        self.state = IDLE
        self.offers: dict[str, str] = {}
        self.unacked: dict[int, tuple[str, Any]] = {}  # txnr → (command, tag), in send order
        self._next = 1
        self._buf = bytearray()

    # -- sending

    @property
    def room(self) -> int:
        """How many more syslog commands the window allows now."""
        return self.window - len(self.unacked) if self.state == OPEN else 0

    def _txnr(self) -> int:
        n = self._next
        self._next = 1 if n >= MAX_TXNR else n + 1
        return n

    def _frame(self, command: str, data: bytes, tag: Any) -> bytes:
        txnr = self._txnr()
        self.unacked[txnr] = (command, tag)
        if data:
            return b"%d %s %d %s\n" % (txnr, command.encode(), len(data), data)
        return b"%d %s 0\n" % (txnr, command.encode())

    def open(self) -> bytes:
        if self.state != IDLE:
            raise RuntimeError(f"open in state {self.state}")
        self.state = OPENING
        offers = b"relp_version=0\nrelp_software=%s\ncommands=syslog" % self.software.encode()
        return self._frame("open", offers, None)

    def syslog(self, messages: list[bytes], tags: list[Any] | None = None) -> bytes:
        """Frames for ``messages`` (at most ``room`` of them), as one buffer."""
        if self.state != OPEN:
            raise RuntimeError(f"syslog in state {self.state}")
        if len(messages) > self.room:
            raise ValueError(f"{len(messages)} messages but the window has room for {self.room}")
        if messages and (big := max(map(len, messages))) > self.max_data:
            raise ValueError(f"message of {big} bytes exceeds RELP max data {self.max_data}")
        # _frame's work, inlined: this runs once per record shipped
        out = []
        unacked = self.unacked
        n = self._next
        for i, msg in enumerate(messages):
            unacked[n] = ("syslog", tags[i] if tags is not None else None)
            out.append(b"%d syslog %d %s\n" % (n, len(msg), msg) if msg else b"%d syslog 0\n" % n)
            n = 1 if n >= MAX_TXNR else n + 1
        self._next = n
        return b"".join(out)

    def close(self) -> bytes:
        self.state = CLOSING
        return self._frame("close", b"", None)

    # -- receiving

    @property
    def partial(self) -> int:
        """Bytes received of a response not yet complete."""
        return len(self._buf)

    def receive(self, data: bytes) -> list[RelpEvent]:
        """Parse whatever arrived (any split of the stream); events for complete frames."""
        if self.state == BROKEN:
            return []
        buf = self._buf
        buf += data
        events: list[RelpEvent] = []
        pos = 0
        n = len(buf)
        unacked = self.unacked
        ok = _RSP_200_OK.match
        while pos < n:
            m = ok(buf, pos)
            if m is not None:
                txnr = int(m.group(1))
                sent = unacked.get(txnr)
                if sent is not None and sent[0] == "syslog":
                    del unacked[txnr]
                    events.append(RelpEvent(ACKED, txnr, 200, "OK", sent[1]))
                    pos = m.end()
                    continue
            head_end = self._header_end(buf, pos, n)
            if head_end is None:
                if n - pos > MAX_HEADER:
                    events.append(self._broken(f"RELP frame header too long or malformed: {bytes(buf[pos:pos + 40])!r}"))
                break
            if head_end < 0:
                events.append(self._broken(f"malformed RELP frame header: {bytes(buf[pos:pos + 40])!r}"))
                break
            parts = bytes(buf[pos:head_end]).split(b" ")
            txnr, command, size = int(parts[0]), parts[1].decode("ascii"), int(parts[2])
            if size > self.max_data + 1024:
                events.append(self._broken(f"RELP frame DATALEN {size} too large"))
                break
            body_start = head_end + 1 if size else head_end
            end = body_start + size  # where the trailer LF must be
            if end >= n:
                break  # wait for the rest
            if buf[end] != 0x0A:
                events.append(self._broken(f"RELP frame {txnr} {command} lacks its LF trailer"))
                break
            if size and buf[head_end] != 0x20:
                events.append(self._broken(f"RELP frame {txnr} {command}: no space before data"))
                break
            body = bytes(buf[body_start:end])
            pos = end + 1
            events.append(self._on_frame(txnr, command, body))
            if self.state == BROKEN:
                break
        del buf[:pos]
        return events

    @staticmethod
    def _header_end(buf: bytearray, pos: int, n: int) -> int | None:
        """Index just past DATALEN (SP or LF follows), None if incomplete, -1 if malformed."""
        limit = min(n, pos + MAX_HEADER)
        sp1 = buf.find(b" ", pos, limit)
        if sp1 < 0:
            txnr = bytes(buf[pos:limit])
            return None if txnr.isdigit() and len(txnr) <= 9 else -1
        txnr = bytes(buf[pos:sp1])
        if not txnr.isdigit() or len(txnr) > 9:
            return -1
        sp2 = buf.find(b" ", sp1 + 1, limit)
        if sp2 < 0:
            command = bytes(buf[sp1 + 1:limit])
            return None if (not command or command.isalpha()) and len(command) <= 32 else -1
        command = bytes(buf[sp1 + 1:sp2])
        if not command.isalpha() or len(command) > 32:
            return -1
        i = sp2 + 1
        while i < limit and 0x30 <= buf[i] <= 0x39:
            i += 1
        if i - sp2 - 1 > 9:
            return -1
        if i == limit:
            return None if limit == n else -1
        if i == sp2 + 1 or buf[i] not in (0x20, 0x0A):
            return -1
        return i

    def _broken(self, text: str) -> RelpEvent:
        self.state = BROKEN
        return RelpEvent(ERROR, text=text)

    def _on_frame(self, txnr: int, command: str, body: bytes) -> RelpEvent:
        if command == "serverclose" and txnr == 0:
            return RelpEvent(SERVER_CLOSE, text=body.decode("utf-8", "replace"))
        if command != "rsp":
            return self._broken(f"unexpected RELP command from server: {txnr} {command}")
        sent = self.unacked.pop(txnr, None)
        if sent is None:
            return self._broken(f"RELP rsp for unknown txnr {txnr}")
        cmd, tag = sent
        line, _, rest = body.partition(b"\n")
        head = line.decode("utf-8", "replace")
        code_text, _, text = head.partition(" ")
        code = int(code_text) if code_text.isdigit() and len(code_text) == 3 else 0
        if cmd == "close":
            self.state = CLOSED
            return RelpEvent(CLOSE_ACKED, txnr, code, text)
        if cmd == "open":
            if code != 200:
                self.state = BROKEN
                return RelpEvent(REFUSED, txnr, code, head or "empty response to open", tag)
            offers = {}
            for item in rest.split(b"\n"):
                name, _, value = item.decode("utf-8", "replace").partition("=")
                if name:
                    offers[name] = value
            self.offers = offers
            if "relp_version" not in offers or "syslog" not in offers.get("commands", "").split(","):
                self.state = BROKEN
                return RelpEvent(REFUSED, txnr, code, f"server does not offer RELP syslog: {offers}", tag, offers)
            self.state = OPEN
            return RelpEvent(OPENED, txnr, code, text, tag, offers)
        if code == 200:
            return RelpEvent(ACKED, txnr, code, text, tag)
        return RelpEvent(REFUSED, txnr, code, head or "empty response", tag)
