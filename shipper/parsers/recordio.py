"""recordio lines (ucspi-tcp): ``PID < text`` (client), ``PID > text`` (server).

recordio writes ``PID<space><dir><space>TEXT SUFFIX`` where SUFFIX is a space
(the piece ended with a newline) or ``+`` (the read ended mid-line; the rest
follows on the next line), and ``PID < [EOF]`` / ``PID > [EOF]``. TEXT keeps the
``\\r`` of CRLF protocols; it is dropped here.

Redaction (stateless: a parser sees one line and cannot know that the previous
client line was ``AUTH LOGIN``): a client line is redacted when it is
  * ``AUTH <mechanism> <initial response>`` → the response,
  * ``PASS <password>`` (POP3) → the password, ``APOP <user> <digest>`` → the digest,
  * ``<tag> LOGIN <user> <password>`` (IMAP) → the password,
    ``<tag> AUTHENTICATE <mechanism> <initial response>`` (IMAP, RFC 4959) → the response,
  * a lone base64-alphabet token of 4 or more characters that is not a known
    SMTP/POP3 verb — the credentials a client sends after ``AUTH LOGIN`` /
    ``AUTH PLAIN`` / ``AUTH CRAM-MD5``, and any ``+``-continued tail of a long blob.
The last rule also hides one-word message-body lines (``Regards``): losing those
is the price of never shipping a base64 password. ``USER`` is not redacted.

A line cut by recordio's ``+`` (a read that ended mid-line: a client that
writes byte by byte, a blob longer than a read) goes on in the connection's next
client piece, which alone may look harmless (``et!`` of ``PASS secr+``, the
3-character tail of a blob, `` hunter2`` after ``PASS+``). ``continue_secret``,
with the line so far that the caller keeps per connection, applies the rules
above to the whole line and redacts what of the secret falls in each piece.
"""

from __future__ import annotations

import re
from typing import Any

Parsed = tuple[str, dict[str, Any]]

REDACTED = "[REDACTED]"

_VERBS = frozenset({
    # SMTP (RFC 5321, 3207, 4954, 1985, 2645, 3030)
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "VRFY", "EXPN", "HELP", "NOOP", "QUIT",
    "TURN", "ETRN", "ATRN", "AUTH", "STARTTLS", "BDAT", "XCLIENT", "XFORWARD",
    # POP3 (RFC 1939, 2449, 2595)
    "USER", "PASS", "APOP", "STAT", "LIST", "RETR", "DELE", "TOP", "UIDL", "CAPA", "STLS", "LAST",
})
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_IMAP_LOGIN_RE = re.compile(r"(\s*\S+\s+LOGIN\s+\S+\s+)(.+)", re.IGNORECASE)
_IMAP_AUTH_RE = re.compile(r"\s*\S+\s+AUTHENTICATE\s+\S+\s+(?=\S)", re.IGNORECASE)
_WORD_RE = re.compile(r"\s*(\S+)")
_AUTH_ARG_RE = re.compile(r"\s+\S+\s+(?=\S)")
_LAST_WORD_RE = re.compile(r"(\S+)\s*$")
_REPLY_CLASS = {c: c + "xx" for c in "12345"}  # a reply code's first digit → its class
_QP_RE = re.compile(r"250 ok \d+ qp (\d+)")
# x.y.z not after a digit or dot ("#5.7.1" too). The look-behind comes after the first
# digit so that the pattern starts with a character class, which re's search skips to:
# starting with the look-behind, it tried the pattern at every position (5x the time
# on a 70-character reply)
_DSN_RE = re.compile(r"([245](?<![\d.][245])\.\d{1,3}\.\d{1,3})(?!\d|\.\d)")


def parse(text: str) -> Parsed | None:
    """One recordio line's text → (event, fields), or None when it is not recordio."""
    try:
        return _parse(text)
    except ValueError:  # a pid of > 4300 digits: not recordio
        return None


def _parse(text: str) -> Parsed | None:
    sp = text.find(" ")
    if sp <= 0 or not text[:sp].isdecimal() or text[sp + 2:sp + 3] != " ":
        return None
    d = text[sp + 1]
    if d == "<":
        direction = "in"
    elif d == ">":
        direction = "out"
    else:
        return None
    pid = int(text[:sp])
    start = sp + 3
    body = text[start:]
    if body.rstrip() == "[EOF]":
        return "io_eof", {"pid": pid, "conn_pid": pid, "direction": direction}
    end = _piece_end(text, start)
    continued = text[-1:] == "+" and end < len(text)
    msg = text[start:end]
    f: dict[str, Any] = {"pid": pid, "conn_pid": pid, "direction": direction, "text": msg}
    if continued:
        f["continued"] = True
    if direction == "out":
        _server_fields(msg, f)
        return "io_server", f
    m = _WORD_RE.match(msg)
    word = m.group(1).upper() if m is not None else ""
    if word in _VERBS:
        f["verb"] = word
        if (word == "EHLO" or word == "HELO") and m is not None:
            helo = msg[m.end():].strip()
            if helo:  # a field of its own: searchable, and pseudonymised with the hosts
                f["helo"] = helo
    secret = _secret_span(msg, word, m.end() if m is not None else 0)
    if secret is not None:
        a, b = secret
        f["text"] = msg[:a] + REDACTED + msg[b:]
        f["_redact"] = text[:start + a] + REDACTED + text[start + b:]
    return "io_client", f


OPEN_LINES_MAX = 1024  # connections at once with a client line cut by "+"
HEAD_MAX = 1024  # characters of a cut line kept: the verb and where its secret starts


def continue_secret(text: str, event: str, fields: dict[str, Any], open_lines: dict[int, str]) -> None:
    """The stateful half of redaction, for a recordio line's ``(event, fields)`` from
    ``parse(text)``. ``open_lines``: conn pid → the client line so far when its last
    piece was cut by ``+`` (kept by the caller per input; bounded here). A piece that
    goes on with such a line is redacted where the line's secret (the rules above,
    applied to the whole line) falls in it, on top of what it shows alone."""
    pid = fields.get("conn_pid")
    if event == "io_eof":
        if fields.get("direction") == "in":  # the client is done (the server may end first)
            open_lines.pop(pid, None)  # type: ignore[arg-type]
        return
    if event != "io_client":
        return
    head = open_lines.pop(pid, None)  # type: ignore[arg-type]
    continued = bool(fields.get("continued"))
    if head is None and not continued:
        return
    start = text.find("<") + 2
    msg = text[start:_piece_end(text, start)]
    full = (head or "") + msg
    cut: tuple[int, int] | None = None
    if head is not None:
        span = secret_in(full)
        if span is not None and span[1] > len(head):
            cut = max(span[0] - len(head), 0), span[1] - len(head)
    token = full.strip()
    if continued and token and _B64_CHARS.issuperset(token) and token.upper() not in _VERBS:
        # So far one base64-alphabet word: the start of a credential after AUTH LOGIN,
        # whose 1-3 first characters alone are below the base64 rule's 4 (a verb typed
        # byte by byte is hidden too)
        cut = 0, len(msg)
    if cut is not None:
        a, b = cut
        alone = secret_in(msg)
        if alone is not None:  # what the piece showed alone stays redacted too
            a, b = min(a, alone[0]), max(b, alone[1])
        fields["text"] = msg[:a] + REDACTED + msg[b:]
        fields["_redact"] = text[:start + a] + REDACTED + text[start + b:]
    if continued:
        open_lines[pid] = full[:HEAD_MAX]  # type: ignore[index]
        if len(open_lines) > OPEN_LINES_MAX:
            del open_lines[next(iter(open_lines))]


def _piece_end(text: str, start: int) -> int:
    """Where the piece that starts at ``start`` ends: before recordio's suffix (" ": the
    piece ended with a newline, "+": continued; a line whose trailing space was lost
    to an editor is taken as complete) and the ``\r`` of CRLF protocols."""
    end = len(text)
    if text[-1:] in ("+", " ") and end > start:
        end -= 1
    if text[end - 1:end] == "\r" and end > start:
        end -= 1
    return end


def secret_in(msg: str) -> tuple[int, int] | None:
    """``_secret_span`` of a client piece (its first word found here): where the secret
    of a client line is, by the rules above, or None."""
    m = _WORD_RE.match(msg)
    return _secret_span(msg, m.group(1).upper() if m is not None else "", m.end() if m is not None else 0)


def _server_fields(msg: str, f: dict[str, Any]) -> None:
    c = msg[:3]
    if c.isdecimal() and (reply_class := _REPLY_CLASS.get(c[0])) is not None and msg[3:4] in ("", " ", "-"):
        f["smtp_code"] = int(c)
        f["reply_class"] = reply_class
        if "." in msg:  # a search finding no x.y.z costs ten times this test
            m = _DSN_RE.search(msg, 4)
            if m is not None:
                f["dsn"] = m.group(1)
        if c == "250":
            m = _QP_RE.match(msg)
            if m is not None:
                f["qp"] = int(m.group(1))
    elif msg[:3] == "+OK":
        f["reply_class"] = "+OK"
    elif msg[:4] == "-ERR":
        f["reply_class"] = "-ERR"


def _secret_span(msg: str, word: str, w: int) -> tuple[int, int] | None:
    """Where the secret is in a client line (``word`` its first word, upper-cased,
    ending at ``w``), or None. Any blanks (tabs, several spaces, a leading one)
    separate words: a client that sends ``AUTH\tPLAIN <blob>`` has sent the blob."""
    if word == "PASS":
        a = _skip_blanks(msg, w)
        return (a, len(msg)) if a < len(msg) else None
    if word == "AUTH":  # AUTH MECH <initial response>
        m = _AUTH_ARG_RE.match(msg, w)
        return (m.end(), len(msg)) if m is not None else None
    if word == "APOP":  # APOP <user> <digest>
        m = _LAST_WORD_RE.search(msg, w)
        return (m.start(1), m.end(1)) if m is not None and _skip_blanks(msg, w) < m.start(1) else None
    m = _IMAP_LOGIN_RE.match(msg)
    if m is not None:
        return m.end(1), len(msg)
    m = _IMAP_AUTH_RE.match(msg)
    if m is not None:
        return m.end(), len(msg)
    token = msg.strip()
    if len(token) >= 4 and word not in _VERBS and _B64_CHARS.issuperset(token):
        return 0, len(msg)
    return None


def _skip_blanks(msg: str, i: int) -> int:
    while i < len(msg) and msg[i].isspace():
        i += 1
    return i
