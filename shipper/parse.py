"""Lines → records: envelope, program dispatch, flags. Pure (no I/O).

``LineParser`` keeps the one piece of state parsing needs per input file: the
time of the last stamped line, given to unstamped lines after it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from shipper.parsers import PREFIXED, UNPREFIXED, parse_postfix
from shipper.record import (
    F_BAD_STAMP,
    F_INVALID_UTF8,
    F_NUL,
    F_REDACTED,
    F_TIME_INFERRED,
    F_TIME_INGEST,
    F_TRUNCATED,
    Record,
    raw_base64,
)
from shipper.stamps import split_envelope

DEFAULT_MAX_LINE = 64 * 1024

_PREFIX_RE = re.compile(r"([A-Za-z][\w.+-]*(?:/[\w.+-]+)*)(?:\[(\d+)\])?: ?")


@dataclass(slots=True)
class ParseOptions:
    max_line: int = DEFAULT_MAX_LINE  # bytes; longer lines are cut and flagged
    redact: bool = True  # remove passwords/AUTH data from message and raw
    tai_leap: bool = False  # TAI64N labels are true TAI (s6-log), not daemontools'
    local_tz: bool = True  # tai64nlocal / BSD syslog stamps are local time (else UTC)
    syslog_year: int | None = None  # year for BSD syslog headers (default: guessed)
    host: str | None = None  # host for lines whose envelope names none


class LineParser:
    """Parse the lines of one input (file or stream) in order."""

    __slots__ = ("opts", "source", "file_id", "last_time_ns")

    def __init__(self, opts: ParseOptions | None = None, source: str | None = None,
                 file_id: str | None = None) -> None:
        self.opts = opts or ParseOptions()
        self.source = source
        self.file_id = file_id
        self.last_time_ns: int | None = None

    def parse(self, line: bytes, offset: int | None = None, now_ns: int | None = None) -> Record:
        """One line (with or without its trailing newline) → one record. Never raises."""
        try:
            return self._parse(line, offset, now_ns)
        except Exception as exc:  # a parser bug must not lose the line
            text = line.decode("utf-8", "replace").rstrip("\n")
            rec = Record(now_ns or time.time_ns(), "ingest", None, "unparsed", text, text,
                         {"parse_error": f"{type(exc).__name__}: {exc}"}, host=self.opts.host,
                         source=self.source, file_id=self.file_id, offset=offset)
            rec.add_flag(F_TIME_INGEST)
            return rec

    def parse_batch(self, lines: list[bytes], offsets: list[int] | None = None,
                    now_ns: int | None = None) -> list[Record]:
        now = now_ns if now_ns is not None else time.time_ns()
        parse = self.parse
        if offsets is None:
            return [parse(ln, None, now) for ln in lines]
        return [parse(ln, off, now) for ln, off in zip(lines, offsets, strict=True)]

    def _parse(self, line: bytes, offset: int | None, now_ns: int | None) -> Record:
        opts = self.opts
        flags: list[str] | None = None
        if line[-1:] == b"\n":
            line = line[:-1]
        if len(line) > opts.max_line:
            line = line[:opts.max_line]
            flags = [F_TRUNCATED]
        b64 = None
        try:
            raw = line.decode("utf-8")
        except UnicodeDecodeError:
            raw = line.decode("utf-8", "replace")
            b64 = raw_base64(line)
            flags = (flags or []) + [F_INVALID_UTF8]
        if "\x00" in raw:
            flags = (flags or []) + [F_NUL]

        env = split_envelope(raw, opts.tai_leap, opts.syslog_year, opts.local_tz)
        if env.bad_stamp:
            flags = (flags or []) + [F_BAD_STAMP]
        time_ns = env.time_ns
        time_source = env.time_source
        if time_ns is None:
            if self.last_time_ns is not None:
                time_ns, time_source = self.last_time_ns, "inferred"
                flags = (flags or []) + [F_TIME_INFERRED]
            else:
                time_ns, time_source = (now_ns if now_ns is not None else time.time_ns()), "ingest"
                flags = (flags or []) + [F_TIME_INGEST]
        else:
            self.last_time_ns = time_ns

        text = env.text
        program, event, fields, pid = dispatch(text, env.tag)
        if env.pid is not None:
            pid = env.pid
        message = text
        redacted = fields.pop("_redact", None) if fields else None
        if redacted is not None and opts.redact:
            prefix = raw[: len(raw) - len(text)]
            message = redacted
            raw = prefix + redacted
            b64 = None  # the exact bytes held the secret too
            flags = (flags or []) + [F_REDACTED]
        return Record(time_ns, time_source, program, event, message, raw, fields,
                      env.host or opts.host, pid, flags, self.source, self.file_id, offset, b64)


def dispatch(text: str, tag: str | None = None) -> tuple[str | None, str, dict, int | None]:
    """Program text → (program, event, fields, pid). Never raises."""
    if tag is not None and tag != "qmail":
        if tag.startswith(("postfix", "pmg-smtp-filter")) or "/" in tag:
            service = tag.rsplit("/", 1)[-1]
            got = parse_postfix(service, text)
            return _result(tag, got)
        fn = PREFIXED.get(tag)
        if fn is not None:
            return _result(tag, fn(text))
        # Syslog-wrapped daemontools output ("vpopmaild: tcpserver: ok ..."):
        # fall through and look at the text itself.
    m = _PREFIX_RE.match(text)
    if m:
        name = m.group(1)
        fn = PREFIXED.get(name)
        if fn is not None:
            program, event, fields, pid = _result(name, fn(text[m.end():]))
            if pid is None and m.group(2):
                pid = int(m.group(2))
            return program, event, fields, pid
    for name, fn in UNPREFIXED:
        got = fn(text)
        if got is not None:
            return _result(name, got)
    return (tag if tag != "qmail" else None), "unparsed", {}, None


def _result(program: str, got: tuple[str, dict] | None) -> tuple[str | None, str, dict, int | None]:
    if got is None:
        return program, "unparsed", {}, None
    event, fields = got
    pid = fields.pop("pid", None) if "pid" in fields else None
    return program, event, fields, pid
