"""Lines → records: envelope, program dispatch, flags. Pure (no I/O).

``LineParser`` keeps the one piece of state parsing needs per input file: the
time of the last stamped line, given to unstamped lines after it.
"""

from __future__ import annotations

import binascii
import math
import operator
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

from shipper.ipaddr import may_hold_mapped, unmap_fields
from shipper.parsers import PREFIXED, PREFIXED_WORDS, QMAIL_SEND_WORDS, UNPREFIXED, parse_postfix
from shipper.parsers.misc import parse_dovecot, parse_dovecot_log, parse_vchkpw
from shipper.parsers.qmail_send import BY_WORD as QMAIL_SEND_BY_WORD
from shipper.parsers.qmail_send import parse_at as qmail_send_parse_at
from shipper.parsers.qpsmtpd import parse as qpsmtpd_parse
from shipper.parsers.recordio import continue_secret as recordio_continue_secret
from shipper.parsers.recordio import parse as recordio_parse
from shipper.parsers.seen import SEEN_MAX
from shipper.record import (
    F_BAD_STAMP,
    F_CONTINUATION,
    F_INVALID_UTF8,
    F_LEAP_SECOND,
    F_MALFORMED,
    F_NUL,
    F_REDACTED,
    F_TIME_INFERRED,
    F_TIME_INGEST,
    F_TRUNCATED,
    Record,
    json_safe,
    raw_base64,
    rfc3339_head,
    utc_civil,
)
from shipper.stamps import Envelope, s6_second_stamp, split_envelope, with_text
from shipper.tai64n import (
    DAEMONTOOLS_OFFSET,
    LABEL_RE,
    LABEL_SECS_END,
    LABEL_SECS_MIN,
    tai_to_unix,
)

DEFAULT_MAX_LINE = 64 * 1024

NS = 1_000_000_000
_LABEL_RE = LABEL_RE
# A batch's labels: each line's first 26 bytes ("@", 24 hex digits and the blank
# multilog writes after them) joined, checked and decoded by a few C calls for the
# whole batch (unhexlify + struct.iter_unpack into (seconds, nanoseconds)), not by a
# slice and an int() per line. A regex scan of the joined batch for "\n@" labels cost
# three times as much: it reads every byte.
_HEAD = operator.itemgetter(slice(0, 26))
_TAI64N = struct.Struct(">QL")
# A run of 19 digits may be a number beyond signed 64 bits, which Elasticsearch's
# long, OTLP's intValue and JSON encoders refuse: one scan per batch finds the rare
# batch whose records need _big_ints. Not a regex: re tries \d{19} at every digit
# (1.7 µs a line, a tenth of all parsing); translate + find is C over the whole
# buffer (0.1 µs). Runs inside a TAI64N label do not count: "4000000069…" labels of
# 2026 have one in 1.5 % of lines, which sent nearly every batch down the slow path.
# Non-ASCII text may hold other scripts' digits, which int() takes too: that rare
# text gets the regex.
_DIGIT_MAP = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19
_LONG_DIGITS_RE = re.compile(r"\d{19}")

_NS_END = 1 << 63
_INT_MIN, _INT_END = -(1 << 63), 1 << 63  # signed 64 bits
_HALF_YEAR_NS = 183 * 86400 * NS
_DAY_NS = 86400 * NS
_FOLD_SLACK_NS = 300 * NS
# Events whose text a log repeats verbatim: qmail-send's status after every delivery's
# start and end, tcpserver's after every connection's, a quarter of a mail log. The
# batch loop keeps dispatch()'s result for such a text (bounded) and copies it: 4,600
# and 7,200 instructions a line made afresh, 1,000 copied.
_REPEATED_EVENTS = frozenset({"status", "tcp_status"})
_DOVECOT_LEVEL_FIRST = frozenset("IWEFPD")  # Info: Warning: Error: Fatal: Panic: Debug:
_DOVECOT_LEVEL_TAGS = frozenset(("Info", "Warning", "Error", "Fatal", "Panic", "Debug"))
# "NAME[PID]: ": a PID within int()'s digit limit (4,300), or the line's whole parse failed
_REPEATED_RE = re.compile(r"message repeated (\d{1,9}) times: \[ ?(.*)\][ \t]*\Z", re.S)
_LAST_REPEATED_WORDS = frozenset(("last", "---"))
# sysklogd's, busybox's and BSD syslogd's forms; macOS's "--- last message repeated 1 time ---"
_LAST_REPEATED_RE = re.compile(r"(?:--- )?last message repeated (\d{1,9}) times?(?: ---)?\Z")
_PREFIX_RE = re.compile(r"([A-Za-z][\w.+-]*(?:/[\w.+-]+)*)(?:\[(\d{1,4000})\])?: ?")


def _long_digits(data: bytes, text: str, heads: bytes) -> bool:
    """Whether ``text`` (``data`` decoded: one line or a batch) has a run of 19 digits
    besides those of ``heads``, its lines' "@" and TAI64N label, joined. A label holds
    at most one (24 hex digits) and a space parts it from the text, so more runs than
    the labels hold means one in a line's text."""
    digits = data.translate(_DIGIT_MAP)
    if _LONG_RUN in digits and digits.count(_LONG_RUN) > heads.translate(_DIGIT_MAP).count(_LONG_RUN):
        return True
    return not text.isascii() and len(_LONG_DIGITS_RE.findall(text)) > len(
        _LONG_DIGITS_RE.findall(heads.decode("ascii")))


def _big_ints(fields: dict[str, Any]) -> bool:
    """Move each int outside signed 64 bits (a corrupt line's number) from its key,
    whose type stays int in every record, to ``KEY_text`` (its digits), and each float
    its digits overflowed (Postfix's ``delay=`` of 400 digits: JSON has no infinity,
    it went out as null); whether any."""
    big = [k for k, v in fields.items() if type(v) is int and not _INT_MIN <= v < _INT_END
           or type(v) is float and not math.isfinite(v)]
    for k in big:
        fields[k + "_text"] = str(fields.pop(k))
    return bool(big)


@dataclass(slots=True)
class ParseOptions:
    max_line: int = DEFAULT_MAX_LINE  # bytes; longer lines are cut and flagged
    redact: bool = True  # remove passwords/AUTH data from message and raw
    tai_leap: bool = False  # TAI64N labels are true TAI (s6-log), not daemontools'
    local_tz: bool = True  # tai64nlocal / BSD syslog stamps are local time (else UTC)
    syslog_year: int | None = None  # year for BSD syslog headers (default: guessed)
    host: str | None = None  # host for lines whose envelope names none
    program: str | None = None  # program for lines that name none (the service's name)


# Words after which a line may hold a secret (POP3 PASS, SMTP AUTH, password=, passwd=,
# clearpasswd=): what a line whose parser failed is cut after (LineParser.parse)
_SECRET_WORD_RE = re.compile(r"(?i)\b(?:pass(?:word|wd)?|clearpasswd|auth(?:enticate)?|secret)\b[=:]?")


class LineParser:
    """Parse the lines of one input (file or stream) in order."""

    __slots__ = ("opts", "source", "file_id", "last_time_ns", "open_lines", "syslog_year", "seen", "in_fold")

    def __init__(self, opts: ParseOptions | None = None, source: str | None = None,
                 file_id: str | None = None) -> None:
        self.opts = opts or ParseOptions()
        self.source = source
        self.file_id = file_id
        self.last_time_ns: int | None = None
        # recordio: conn pid → the client line so far, while its pieces are cut by "+"
        self.open_lines: dict[int, str] = {}
        # The year for BSD syslog stamps when it was given: the first lines'; it turns
        # with the dates (Dec 31 → Jan 1), see _turn_of_year
        self.syslog_year = self.opts.syslog_year
        # dispatch()'s result for texts a log repeats verbatim (_REPEATED_EVENTS)
        self.seen: dict[str, tuple[str | None, str, dict[str, Any], int | None]] = {}
        # The last line's local time was in the hour a DST change repeats: which pass the
        # next is in depends on last_time_ns, so a checkpoint keeps it (see carried)
        self.in_fold = False

    def carried(self) -> dict[str, Any] | None:
        """What parsing the next lines depends on, as JSON (None: nothing), for another
        parser to go on from: the worker's in the daemon, a checkpoint's after a restart."""
        if not self.open_lines and not self.in_fold:
            return None if self.last_time_ns is None else {"last": self.last_time_ns}
        out: dict[str, Any] = {"last": self.last_time_ns}
        if self.in_fold:
            out["fold"] = True
        if self.open_lines:
            out["open"] = [[pid, head] for pid, head in self.open_lines.items()]
        return out

    def carry_on(self, carried: Any) -> None:
        """Go on from ``carried()`` of another parser; anything malformed is dropped."""
        if not isinstance(carried, dict):
            return
        last = carried.get("last")
        if type(last) is int:
            self.last_time_ns = last
        self.in_fold = carried.get("fold") is True
        try:
            self.open_lines = {int(pid): head for pid, head in carried.get("open") or ()
                               if isinstance(head, str)}
        except (TypeError, ValueError):
            self.open_lines = {}

    def parse(self, line: bytes, offset: int | None = None, now_ns: int | None = None) -> Record:
        """One line (with or without its trailing newline) → one record. Never raises."""
        try:
            return self._parse(line, offset, now_ns)
        except Exception as exc:  # a parser bug must not lose the line
            text = line.decode("utf-8", "replace").rstrip("\n")
            # nor ship a secret its parser would have redacted: from a word that may
            # introduce one to the end of the line (found by a review; no parser raises
            # on the fuzzed lines, this is for the one that will)
            secret = _SECRET_WORD_RE.search(text) if self.opts.redact else None
            if secret is not None:
                text = text[:secret.end()] + " [REDACTED]"
            rec = Record(now_ns or time.time_ns(), "ingest", None, "unparsed", text, text,
                         {"parse_error": f"{type(exc).__name__}: {exc}"}, host=self.opts.host,
                         source=self.source, file_id=self.file_id, offset=offset)
            rec.add_flag(F_TIME_INGEST)
            if secret is not None:
                rec.add_flag(F_REDACTED)
            return rec

    def parse_batch(self, lines: list[bytes], offsets: list[int] | None = None,
                    now_ns: int | None = None) -> list[Record]:
        """Lines → records, one each, in order. Never raises.

        See ``_parse_batch``."""
        return self._parse_batch(lines, offsets, now_ns, False)

    def parse_batch_dicts(self, lines: list[bytes], offsets: list[int] | None = None,
                          now_ns: int | None = None) -> list[dict[str, Any]]:
        """``parse_batch``, each record in its JSON form (``Record.to_dict``): what the
        pipeline ships. Lines on the fast path never become a ``Record``."""
        return self._parse_batch(lines, offsets, now_ns, True)

    def _parse_batch(self, lines: list[bytes], offsets: list[int] | None, now_ns: int | None,
                     as_dicts: bool) -> list[Any]:
        """Lines → a ``Record`` each (``as_dicts``: its ``to_dict()``), in order. Never raises.

        The hot loop of the pipeline. A multilog batch (valid UTF-8, no NUL, no
        over-long line, every line ``@<tai64n> ...``: see ``_decode_batch``) is
        decoded and its labels checked in a few calls for the whole batch, and
        its lines take the inlined fast path below. Any other batch, and any
        line the fast path does not finish (s6-log's second stamp, redaction,
        nanoseconds out of range, a parser bug), goes through ``parse``.
        """
        now = now_ns if now_ns is not None else time.time_ns()
        if offsets is None:
            offsets = [None] * len(lines)  # type: ignore[list-item]
        parse = self._parse_dict if as_dicts else self.parse
        decoded = None if self.opts.tai_leap else _decode_batch(lines, self.opts.max_line)
        if decoded is None:
            return [parse(ln, off, now) for ln, off in zip(lines, offsets, strict=True)]
        texts, stamps, plain, mapped = decoded
        # Hoisted out of the loop: attribute and global look-ups cost per line.
        dispatch_text = dispatch  # looked up per batch, not per import: tests monkeypatch it
        new_record = object.__new__
        seen = self.seen
        seen_get = seen.get
        host = self.opts.host
        hint = self.opts.program
        source = self.source
        file_id = self.file_id
        # The JSON form's event id is "<file_id>-<offset in hex>": its head once per batch
        id_head = f"{file_id}-" if file_id is not None and offsets[0] is not None else None
        # Consecutive lines mostly share the label's seconds: check those, and make
        # their time's text up to the seconds, once.
        last_secs = -1
        base_ns = 0
        time_head = ""  # "YYYY-MM-DDTHH:MM:SS."
        records: list[Any] = []
        append = records.append
        for raw, line, offset, (secs, nanos) in zip(texts, lines, offsets, stamps, strict=True):
            text = raw[26:]
            if nanos < NS and (plain or not (text[4:5] == "-" and text[29:31] == "  ")):  # not s6-log t+T
                known = seen_get(text)
                if known is not None:
                    program, event, fields, pid = known
                    fields = fields.copy()  # records are changed downstream
                else:
                    try:
                        program, event, fields, pid = dispatch_text(text, None)
                    except Exception:  # a parser bug: parse() makes the error record
                        append(parse(line, offset, now))
                        continue
                    if mapped and may_hold_mapped(text):
                        unmap_fields(fields)
                    if event in _REPEATED_EVENTS:
                        if len(seen) >= SEEN_MAX:
                            seen.clear()
                        seen[text] = program, event, fields.copy(), pid
                if ("_redact" not in fields and (program is not None or hint is None)
                        and not (program == "recordio" and (
                            "continued" in fields or (self.open_lines and fields.get(
                                "conn_pid") in self.open_lines)))):
                    if secs != last_secs:
                        if not LABEL_SECS_MIN <= secs < LABEL_SECS_END:
                            append(parse(line, offset, now))  # flagged there
                            continue
                        last_secs = secs
                        base_ns = (secs - DAEMONTOOLS_OFFSET) * NS
                        time_head = rfc3339_head(secs - DAEMONTOOLS_OFFSET) + "."
                    time_ns = base_ns + nanos
                    self.last_time_ns = time_ns
                    if as_dicts:
                        # record_dict's form (the same keys in the same order; the
                        # tests compare the two), built here with the batch's and the
                        # second's heads: a call with the record's 14 values, its divmod
                        # and its cache look-up cost 1,800 of the 42,500 instructions
                        # a line took to NDJSON (bench/bench_instructions.py); the
                        # fields go into the same display (**), not through .update().
                        append({
                            "event_id": None if id_head is None else f"{id_head}{offset:x}",
                            # nine digits need no padding: a format spec costs twice
                            # the plain conversion (1,100 instructions a line)
                            "time": f"{time_head}{nanos}Z" if nanos >= 100_000_000 else f"{time_head}{nanos:09d}Z",
                            "time_unix_ns": time_ns,
                            "time_source": "tai64n",
                            "host": host,
                            "program": program,
                            "pid": pid,
                            "event": event,
                            "message": text,
                            "raw": raw,
                            "flags": [],
                            "source": source,
                            "file_id": file_id,
                            "offset": offset,
                            **fields,
                        })
                    else:
                        # Record's fields set here, in its order, not through its
                        # __init__: the call of a class with 14 arguments cost 1,300
                        # of the 28,000 instructions a line (bench/bench_instructions.py)
                        rec = new_record(Record)
                        rec.time_ns = time_ns
                        rec.time_source = "tai64n"
                        rec.program = program
                        rec.event = event
                        rec.message = text
                        rec.raw = raw
                        rec.fields = fields
                        rec.host = host
                        rec.pid = pid
                        rec.flags = None
                        rec.source = source
                        rec.file_id = file_id
                        rec.offset = offset
                        rec.raw_base64 = None
                        append(rec)
                    continue
            append(parse(line, offset, now))
        return records

    def _parse_dict(self, line: bytes, offset: int | None = None,
                    now_ns: int | None = None) -> dict[str, Any]:
        return self.parse(line, offset, now_ns).to_dict()

    def _parse(self, line: bytes, offset: int | None, now_ns: int | None) -> Record:
        # The hot path of the whole pipeline: kept flat on purpose.
        opts = self.opts
        file_id = self.file_id
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

        host = tag = pid = None
        if (raw[:1] == "@" and _LABEL_RE.match(raw) is not None
                and (v := int(raw[1:25], 16)) & 0xFFFFFFFF < NS
                and LABEL_SECS_MIN <= v >> 32 < LABEL_SECS_END):
            # Fast path for multilog's "@<tai64n> text", nearly every line we see.
            unix = (v >> 32) - DAEMONTOOLS_OFFSET
            nanos = v & 0xFFFFFFFF
            tai = opts.tai_leap
            text = raw[26:] if raw[25:26] == " " else raw[25:]
            if text[29:31] == "  " and text[4:5] == "-" and (
                    after := s6_second_stamp(text, nanos)) is not None:
                # s6-log with both t and T: its label is true TAI, --tai or not
                text = after
                tai = True
            if tai:
                unix, nanos, leap_second = tai_to_unix(unix, nanos)
                if leap_second:
                    flags = (flags or []) + [F_LEAP_SECOND]
                time_source = "tai64n_tai"
            else:
                time_source = "tai64n"
            time_ns = unix * NS + nanos
            self.last_time_ns = time_ns
        else:
            env = split_envelope(raw, opts.tai_leap, self.syslog_year, opts.local_tz, now_ns)
            if (env.time_source == "syslog" and self.syslog_year is not None
                    and self.last_time_ns is not None and (
                        abs(env.time_ns - self.last_time_ns) > _HALF_YEAR_NS
                        if env.time_ns is not None else env.bad_stamp)):
                # months away, or no such day in the year given (Feb 29): the year may
                # have turned since the line before
                env = self._turn_of_year(raw, env)
            time_ns = env.time_ns
            self.in_fold = env.alt_ns is not None
            if env.alt_ns is not None and time_ns is not None:
                # the hour a DST change repeats: the first pass unless that is more than
                # 5 minutes before the line before (lines merged a little out of order
                # stay in their pass); with none before, the first pass too (mktime's
                # own pick depends on what it converted earlier)
                early, late = sorted((time_ns, env.alt_ns))
                last = self.last_time_ns
                time_ns = early if last is None or early >= last - _FOLD_SLACK_NS else late
            text, host, tag, pid = env.text, env.host, env.tag, env.pid
            if env.journal_seq is not None and self.file_id is None:
                # A journal entry from a pipe: its place in the journal is its identity
                # (the same event id however often journalctl prints it)
                file_id, offset = env.journal_seq
            bad_stamp = env.bad_stamp
            if env.continued:
                flags = (flags or []) + [F_CONTINUATION]
            if env.invalid_utf8:
                flags = (flags or []) + [F_INVALID_UTF8]
            if env.nul_bytes and not (flags and F_NUL in flags):
                flags = (flags or []) + [F_NUL]
            if env.leap_second:
                flags = (flags or []) + [F_LEAP_SECOND]
            if time_ns is not None and not 0 <= time_ns < _NS_END:
                time_ns, bad_stamp = None, True  # 1970 .. 2262 only: see tai64n.LABEL_SECS_END
            if time_ns is None:
                if bad_stamp:
                    flags = (flags or []) + [F_BAD_STAMP]
                if self.last_time_ns is not None:
                    time_ns, time_source = self.last_time_ns, "inferred"
                    flags = (flags or []) + [F_TIME_INFERRED]
                else:
                    time_ns, time_source = (now_ns if now_ns is not None else time.time_ns()), "ingest"
                    flags = (flags or []) + [F_TIME_INGEST]
            else:
                time_source = env.time_source
                self.last_time_ns = time_ns

        if text[-1:] == "\r":  # a CRLF line (a log copied from Windows, recordio's SMTP
            text = text[:-1]   # text): the \r is the line's end, not its text; raw keeps it
        program, event, fields, ppid = dispatch(text, tag)
        if program is None and opts.program is not None:
            # The line names no program; the source says whose log this is.
            program = opts.program
            fn = PREFIXED.get(program)
            if fn is not None and (got := fn(text)) is not None:
                _, event, fields, ppid = _result(program, got)
        if pid is None:
            pid = ppid
        if may_hold_mapped(text):
            unmap_fields(fields)
        if program == "recordio":
            recordio_continue_secret(text, event, fields, self.open_lines)
        if _long_digits(line, raw, raw[:25].encode() if raw[:1] == "@" and _LABEL_RE.match(raw) else b""):
            moved = _big_ints(fields)
            if type(pid) is int and not _INT_MIN <= pid < _INT_END:
                fields["pid_text"], pid, moved = str(pid), None, True
            json_safe(fields)  # in lists (none of the parsers makes such, but never raise)
            if moved:
                flags = (flags or []) + [F_MALFORMED]
        if "_redact" in fields:
            redacted = fields.pop("_redact")
            if opts.redact:
                raw = with_text(raw, text, redacted)
                text = redacted
                b64 = None  # the exact bytes held the secret too
                flags = (flags or []) + [F_REDACTED]
        return Record(time_ns, time_source, program, event, text, raw, fields,
                      host or opts.host, pid, flags, self.source, file_id, offset, b64)

    def _turn_of_year(self, raw: str, env: Envelope) -> Envelope:
        """A BSD stamp months away from the line before it, with the year given.
        Months back: the year turned (a December log going on into January), so the
        line is in the year of the line before or the next. Months ahead: a line
        from just before the turn among the first after it (processes interleave
        around midnight), if the year before puts it within a day of that line;
        otherwise a log quiet for months, as it is. A date the year given lacks
        (Feb 29): the year of the line before or the next, if that puts it within
        half a year after that line; otherwise a bad stamp, as it is."""
        opts = self.opts
        last_ns = self.last_time_ns
        assert last_ns is not None
        secs = last_ns // NS
        # the year of the line before, in the zone its stamps are read in (UTC by
        # calendar arithmetic: time.gmtime is 27 s off under a "right/" TZ)
        last = time.localtime(secs).tm_year if opts.local_tz else (utc_civil(secs) or (1970,))[0]
        unknown = env.time_ns is None
        back = unknown or env.time_ns < last_ns
        for year in ((last, last + 1) if back else (last - 1,)):
            again = split_envelope(raw, opts.tai_leap, year, opts.local_tz)
            if again.time_ns is not None and (
                    last_ns - _HALF_YEAR_NS <= again.time_ns <= last_ns + _HALF_YEAR_NS if unknown else
                    again.time_ns >= last_ns - _HALF_YEAR_NS if back else
                    last_ns - _DAY_NS <= again.time_ns <= last_ns + _DAY_NS):
                self.syslog_year = year
                return again
        return env


def _dovecot1_process(text: str) -> bool:
    """Whether ``text`` starts with a dovecot 1.x process as its log file names it after the
    level: "imap-login: ", "auth(default): ", "IMAP(user): ". Not a bare "auth: " or
    "config: ": any program whose syslog tag is "Error" or "Info" may write those."""
    name = text.partition(": ")[0]
    return name.endswith(("-login", ")"))


def dispatch(text: str, tag: str | None = None) -> tuple[str | None, str, dict, int | None]:
    """Program text → (program, event, fields, pid). Never raises."""
    if tag is not None and text[:17] == "message repeated " and (got := _repeated(text, tag)) is not None:
        return got
    if tag is not None and tag != "qmail":
        if tag.startswith(("postfix", "pmg-smtp-filter")) or ("/" in tag and tag[-1] != ">"):
            # Postfix's tags (not dovecot's mail process "imap(user)<pid><session>", the
            # tag of its own log file's lines: a session id is base64, often with "/");
            # but text in recordio's or vchkpw's grammar is theirs, with its passwords,
            # whatever a syslog header called it ("qmail/smtpd[1]: 4357 < PASS x")
            return _with_secrets(text) or _result(tag, parse_postfix(tag.rsplit("/", 1)[-1], text))
        fn = PREFIXED.get(tag)
        if fn is not None and (got := fn(text)) is not None:
            return _result(tag, got)
        if text[:1] in _DOVECOT_LEVEL_FIRST and (got := parse_dovecot_log(f"{tag}: {text}")) is not None:
            # dovecot's own log file ("Jan 29 09:33:58 pop3-login: Info: ..."): its
            # default log_timestamp reads as a syslog header whose tag is the process
            return _result("dovecot", got)
        if tag in _DOVECOT_LEVEL_TAGS and _dovecot1_process(text) \
                and (got := parse_dovecot(f"{tag}: {text}")) is not None \
                and got[1]["service"] != "dovecot":
            # 1.x's log file, level before process ("Jun 23 15:04:05 Info: imap-login: ..."):
            # the stamp reads as a syslog header whose tag is the level
            return _result("dovecot", got)
        if tag.startswith("vchkpw-"):
            # vchkpw's own "vchkpw-SERVICE:" read as the tag (logged with no ident of
            # its own): its text may hold a password, so parse it as vchkpw's
            head = tag + ": "
            got = parse_vchkpw(head + text)
            if got is not None:
                if "_redact" in got[1]:
                    got[1]["_redact"] = got[1]["_redact"][len(head):]
                return _result("vpopmail", got)
        # Syslog-wrapped daemontools output ("vpopmaild: tcpserver: ok ..."), or a
        # tag that names the parent, not the line's program: a unit running
        # "tcpserver ... recordio qmail-smtpd" tags its children's lines
        # "tcpserver[PID]:". Look at the text itself (recordio's secrets included).
    # One partition and two dict look-ups decide nearly every line. The two common
    # cases unpack the parser's result here rather than in _result: this runs
    # once per line and a call layer is a measurable share of it.
    word, _, rest = text.partition(" ")
    if (fn := QMAIL_SEND_BY_WORD.get(word)) is not None:
        # qmail-send, which writes no name: the most common lines of a mail log
        try:
            got = fn(rest.rstrip())
        except ValueError:  # absurd numbers (int() digit limit): not this grammar
            got = None
        if got is not None:
            return "qmail-send", got[0], got[1], None  # qmail-send logs no pid
    elif (named := PREFIXED_WORDS.get(word)) is not None:
        name, fn = named
        got = fn(rest)
        if got is None:
            return _unparsed(name, None, text)
        event, fields = got
        if "_redact" in fields:  # the parser did not see "name: "; give it back
            fields["_redact"] = text[:len(word) + 1] + fields["_redact"]
        return name, event, fields, (fields.pop("pid") if "pid" in fields else None)
    elif word in QMAIL_SEND_WORDS:  # pre-1.0 qmail's lines
        got = qmail_send_parse_at(text, text.find(" "))
        if got is not None:
            return "qmail-send", got[0], got[1], None
    elif word.isdecimal():
        if (got := _recordio(text)) is not None:
            return got
        # qpsmtpd's stderr, "PID TEXT" (recordio's "PID < "/"PID > " tried first)
        if (qp := qpsmtpd_parse(text)) is not None:
            event, fields = qp
            return "qpsmtpd", event, fields, fields.pop("pid")
    m = _PREFIX_RE.match(text)
    if m:
        name = m.group(1)
        if name.startswith(("postfix", "pmg-smtp-filter")):
            # Postfix lines whose syslog header was cut off ("postfix/smtpd[21779]: warning: ...")
            program, event, fields, pid = _result(
                name, parse_postfix(name.rsplit("/", 1)[-1], text[m.end():]))
            if pid is None and m.group(2):
                pid = int(m.group(2))
            return program, event, fields, pid
        fn = PREFIXED.get(name)
        if fn is not None:
            program, event, fields, pid = _result(name, fn(text[m.end():]), text[:m.end()])
            if pid is None and m.group(2):
                pid = int(m.group(2))
                if (name == "qmail-smtpd" or name == "jgreylist") and event != "unparsed":
                    # patched qmail-smtpd's "qmail-smtpd[PID]: ", jgreylist's (exec'd by
                    # tcpserver's child as qmail-smtpd is): the pid tcpserver logged
                    fields.setdefault("conn_pid", pid)
            return program, event, fields, pid
    for name, fn in UNPREFIXED:
        got = fn(text)
        if got is not None:
            return _result(name, got)
    if tag is None and m is not None and m.group(2):
        # "NAME[PID]: ..." of a program we have no grammar for (sslio, ...): say whose it is
        return _unparsed(m.group(1), int(m.group(2)), text)
    if word in _LAST_REPEATED_WORDS and (r := _LAST_REPEATED_RE.match(text)) is not None:
        # syslogd's own line for the line before it, written N times more
        return tag if tag != "qmail" else None, "repeated", {"repeated": int(r.group(1))}, None
    return _unparsed(tag if tag != "qmail" else None, None, text)


# "password=", "clearpasswd=" in a line no parser knows: a login's debugging (Courier's
# DEBUG_LOGIN forms, another program's) that would go out in clear as its text
# (also "password: x", "user_password=x", pw=/pwd=, JSON's "password":"x", and POP3's
# PASS or SMTP's AUTH as a program writes them: a review found those in clear)
_SECRET_PAIR_RE = re.compile(
    r'(?i:(?<![a-z])(?:clearpasswd|password|passwd|pass|pwd|pw|secret)"?\s*[=:]\s*"?)'
    r"|(?<![A-Za-z])(?:PASS|AUTH [A-Z0-9-]+) ")


def _unparsed(program: str | None, pid: int | None, text: str) -> tuple[str | None, str, dict, int | None]:
    """An unparsed line's dispatch result: cut from a ``password=`` to its end (redacted)."""
    m = _SECRET_PAIR_RE.search(text)
    return program, "unparsed", ({"_redact": text[:m.end()] + "[REDACTED]"} if m else {}), pid


def _repeated(text: str, tag: str) -> tuple[str | None, str, dict, int | None] | None:
    """rsyslog's ``message repeated N times: [ TEXT]`` (its RepeatedMsgReduction, on in
    Ubuntu's default configuration; a password guesser repeats its line): TEXT parsed as
    the line it stands for, with ``repeated`` = N, and its secrets redacted as there."""
    m = _REPEATED_RE.match(text)
    if m is None or m.group(2).startswith("message repeated "):  # one wrapping, never nested
        return None
    program, event, fields, pid = dispatch(m.group(2), tag)
    if "_redact" in fields:
        fields["_redact"] = text[:m.start(2)] + fields["_redact"] + text[m.end(2):]
    fields["repeated"] = int(m.group(1))
    return program, event, fields, pid


def _with_secrets(text: str) -> tuple[str | None, str, dict, int | None] | None:
    """``dispatch`` of a recordio or vchkpw line; None for any other text."""
    if text.startswith(("vchkpw-", "vchkpw: ", "vchkpw:\t")):
        got = parse_vchkpw(text)
        return None if got is None else _result("vpopmail", got)
    sp = text.find(" ")
    return _recordio(text) if sp > 0 and text[:sp].isdecimal() else None


def _recordio(text: str) -> tuple[str | None, str, dict, int | None] | None:
    """``dispatch`` of a line whose first word is a number: recordio's, or None."""
    got = recordio_parse(text)
    if got is None:
        return None
    event, fields = got  # recordio's text has its pid: always in fields
    return "recordio", event, fields, (fields.pop("pid") if "pid" in fields else None)


def _result(program: str, got: tuple[str, dict] | None, prefix: str = ""
            ) -> tuple[str | None, str, dict, int | None]:
    """``prefix``: the ``name: `` the parser did not see; its redacted text gets it back."""
    if got is None:
        return program, "unparsed", {}, None
    event, fields = got
    if prefix and "_redact" in fields:
        fields["_redact"] = prefix + fields["_redact"]
    pid = fields.pop("pid", None) if "pid" in fields else None
    return program, event, fields, pid


def _decode_batch(lines: list[bytes], max_line: int) -> tuple[list[str], Any, bool, bool] | None:
    """A multilog batch decoded in a few calls: its lines' text, their labels as
    (TAI64N seconds, nanoseconds) and whether the batch is plain: no two blanks in
    a row, so no line with s6-log's second stamp ("@<tai64n> 2025-12-03
    10:00:00.123456789  text") to look for, and whether some line may name an
    IPv4-mapped address (see shipper.ipaddr). None when some line needs the general path:
    invalid UTF-8, NUL bytes, over-long, a newline inside, or a line that does not
    start with a TAI64N label and a blank (as multilog and s6-log write them)."""
    if not lines or max(map(len, lines)) > max_line:
        return None
    n = len(lines)
    heads = b"".join(map(_HEAD, lines))
    # each line 26 bytes or more, "@" first and a blank 26th, and 24 hex digits between
    hexes = heads.translate(None, b"@ ")
    if (len(heads) != 26 * n or heads[::26] != b"@" * n or heads[25::26] != b" " * n
            or len(hexes) != 24 * n):
        return None
    try:
        stamps = binascii.unhexlify(hexes)
    except binascii.Error:
        return None  # not hex digits
    data = b"\n".join(lines)
    if b"\x00" in data or b"\r\n" in data or data[-1:] == b"\r":
        return None  # NULs; CRLF endings (a pasted log): the general path strips the \r
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _long_digits(data, text, heads):
        return None  # the general path makes such records safe
    texts = text.split("\n")
    if len(texts) != n:
        return None  # a newline inside a line
    return texts, _TAI64N.iter_unpack(stamps), "  " not in text, may_hold_mapped(text)
