"""Syslog over a byte stream: RFC 6587 framing, both ways. Pure (no I/O).

- Octet counting (RFC 6587 3.4.1, the default): ``MSG-LEN SP SYSLOG-MSG``. Any byte may
  appear in the message, so multi-line messages survive whole.
- LF framing ("non-transparent", RFC 6587 3.4.2): each message ends with LF, so an LF
  inside a message would split it. It is replaced, by ``#012`` by default (what rsyslog's
  control-character escaping shows for LF) or by a space.

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


def octet_counted_texts(messages: list[str]) -> bytes:
    """``octet_counted`` for messages given as text (UTF-8, errors "replace"), in one encode.

    MSG-LEN counts octets: len() of an ASCII str (``isascii()`` is O(1)) is its octet
    count; other messages are encoded once more to count them.
    """
    out: list[str] = [""] * (2 * len(messages))
    out[0::2] = [f"{len(m)} " if m.isascii() else f"{len(m.encode('utf-8', 'replace'))} " for m in messages]
    out[1::2] = messages
    return "".join(out).encode("utf-8", "replace")


def lf_framed(messages: list[bytes], newline_escape: bytes = b"#012") -> bytes:
    """Each message followed by LF; LFs inside a message replaced by ``newline_escape``."""
    out = []
    for m in messages:
        if b"\n" in m:
            m = m.replace(b"\n", newline_escape)
        out.append(m)
    out.append(b"")
    return b"\n".join(out)


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
