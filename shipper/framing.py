"""Syslog over a byte stream: RFC 6587 framing, both ways. Pure (no I/O).

- Octet counting (RFC 6587 3.4.1, the default): ``MSG-LEN SP SYSLOG-MSG``. Any byte may
  appear in the message, so multi-line messages survive whole.
- LF framing ("non-transparent", RFC 6587 3.4.2): each message ends with a TRAILER, so a
  trailer inside a message would split it, and the text after it would be read as a record
  of its own (forged host and program included). LF is the usual trailer, but NUL is one
  too (RFC 6587 3.4.2; syslog-ng splits at it) and CR breaks lines in others (Splunk's
  default LINE_BREAKER, a CR before the LF stripped). So inside a message LF becomes
  ``#012`` by default (or a space), CR ``#015`` and NUL ``#000``: rsyslog's escaping of
  control characters, so a receiver shows the same text either way.

``FrameDecoder`` reads either framing from a stream (the test receivers use it): a frame
starting with a digit is octet-counted, anything else runs to the next LF, as rsyslog's
imtcp decides per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OCTET_COUNTED = "octet-counted"
LF = "lf"
FRAMINGS = (OCTET_COUNTED, LF)


def octet_counted(messages: list[bytes]) -> bytes:
    """``MSG-LEN SP MSG`` for each message, as one buffer to write at once."""
    return b"".join([b"%d %s" % (len(m), m) for m in messages])


class _Prefixes(dict[int, str]):
    """"MSG-LEN SP" by length, made on a miss: a dict look-up (from C, by ``map``) costs
    a tenth of formatting the int, and a stream's messages have few lengths."""

    def __missing__(self, n: int) -> str:
        if len(self) > 65536:
            self.clear()
        text = self[n] = f"{n} "
        return text


_PREFIXES = _Prefixes()


def _prefix(message: str) -> str:
    """``MSG-LEN SP`` of ``message`` (its octets in UTF-8, errors "replace")."""
    return _PREFIXES[len(message) if message.isascii() else len(message.encode("utf-8", "replace"))]


def octet_counted_texts(messages: list[str]) -> bytes:
    """``octet_counted`` for messages given as text (UTF-8, errors "replace"), in one encode.

    MSG-LEN counts octets: len() of an ASCII str is its octet count, so the prefixes are
    made from len() for the whole batch in C, and the joined text's ``isascii()`` (O(1))
    tells they were right; otherwise each message is looked at (``_prefix``).
    """
    out: list[str] = [""] * (2 * len(messages))
    out[1::2] = messages
    out[0::2] = list(map(_PREFIXES.__getitem__, map(len, messages)))
    text = "".join(out)
    if not text.isascii():
        out[0::2] = list(map(_prefix, messages))
        text = "".join(out)
    return text.encode("utf-8", "replace")


def _escape_trailers(message: bytes, newline_escape: bytes = b"#012") -> bytes:
    """``message`` with no byte a receiver may take for the end of a frame: LF becomes
    ``newline_escape``, CR ``#015`` and NUL ``#000``."""
    if b"\n" in message:
        message = message.replace(b"\n", newline_escape)
    if b"\r" in message:
        message = message.replace(b"\r", b"#015")
    if b"\0" in message:
        message = message.replace(b"\0", b"#000")
    return message


def lf_framed(messages: list[bytes], newline_escape: bytes = b"#012") -> bytes:
    """Each message followed by LF, trailers inside a message escaped (``_escape_trailers``)."""
    body = b"\n".join(messages)
    # one scan of the whole batch for the common case: no message holds a trailer
    if body.count(b"\n") != len(messages) - 1 or b"\r" in body or b"\0" in body:
        body = b"\n".join([_escape_trailers(m, newline_escape) for m in messages])
    return body + b"\n" if messages else b""


def frame_texts(messages: list[str], framing: str = OCTET_COUNTED, newline_escape: bytes = b"#012") -> bytes:
    """``frame`` for messages given as text (UTF-8, errors "replace")."""
    if framing == OCTET_COUNTED:
        return octet_counted_texts(messages)
    return frame([m.encode("utf-8", "replace") for m in messages], framing, newline_escape)


def frame(messages: list[bytes], framing: str = OCTET_COUNTED, newline_escape: bytes = b"#012") -> bytes:
    if framing == OCTET_COUNTED:
        return octet_counted(messages)
    if framing == LF:
        return lf_framed(messages, newline_escape)
    raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")


@dataclass(slots=True)
class FrameDecoder:
    """Incremental decoder of octet-counted and LF-framed syslog from a byte stream.

    ``feed(data)`` returns the complete messages so far; partial frames wait for more
    bytes. Memory is bounded by ``max_frame``: a longer LF frame is cut there, and a
    length prefix that is not a number or is too large is reported in ``errors`` and
    the frame is read as LF-terminated instead. Never raises on bad input.
    """

    max_frame: int = 1 << 20
    errors: list[str] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            c = buf[pos]
            if 0x30 <= c <= 0x39:  # digit: octet counting
                sp = buf.find(b" ", pos, min(n, pos + 11))
                if sp < 0:
                    if n - pos < 11:
                        break  # the length may still be arriving
                    self.errors.append(f"octet count prefix at {pos} has no space within 10 digits")
                else:
                    digits = bytes(buf[pos:sp])
                    if digits.isdigit() and 0 < int(digits) <= self.max_frame:
                        size = int(digits)
                        if sp + 1 + size > n:
                            break  # wait for the rest of the frame
                        out.append(bytes(buf[sp + 1: sp + 1 + size]))
                        pos = sp + 1 + size
                        continue
                    self.errors.append(f"bad octet count {digits[:12]!r}")
            # LF framing (also the fallback for a bad octet count)
            end = buf.find(b"\n", pos)
            if end < 0:
                if n - pos > self.max_frame:
                    self.errors.append(f"LF frame longer than {self.max_frame} bytes: cut")
                    out.append(bytes(buf[pos: pos + self.max_frame]))
                    pos += self.max_frame
                    continue
                break
            if end > pos:  # empty lines between frames are not messages
                out.append(bytes(buf[pos:end]))
            pos = end + 1
        del buf[:pos]
        return out

    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)
