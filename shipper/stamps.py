"""Line envelopes: the time stamp and syslog header in front of a program's text.

Pure functions over one decoded line. Recognised, in this order:
  ``@<tai64n> ``                  multilog t, tai64n, svlogd -t, s6-log t
  ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn `` tai64nlocal output (local time); two spaces: s6-log T;
                                  ``.uuuuuu``: an accustamp log turned to local time
  ``YYYY-MM-DD_HH:MM:SS.nnnnn ``   svlogd -tt (UTC); ``T`` instead of ``_``: svlogd -ttt
  ``NNNNNNNNNN.uuuuuu ``           accustamp / splogger / daemontools-encore T
  ``Mmm dd HH:MM:SS host tag[pid]: ``   BSD syslog (year supplied by the caller)
  ``YYYY-MM-DDTHH:MM:SS[.f](Z|±hh:mm) host tag[pid]: ``  RFC 3339 syslog
  ``<PRI>`` and a BSD or RFC 3339 header, or a whole RFC 5424 header
  ``{"__REALTIME_TIMESTAMP": ..., "MESSAGE": ...}``  ``journalctl -o json``
  ``{"log": "...", "stream": ..., "time": ...}``  Docker's json-file log driver
and lines with no stamp at all. journalctl's text outputs are syslog forms:
``short``, ``short-precise`` (microseconds after the seconds), ``short-iso``
and ``short-iso-precise`` (an offset without its colon: systemd issue #26639).
"""

from __future__ import annotations

import calendar
import datetime
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from shipper import tai64n
from shipper.record import utc_civil

NS = 1_000_000_000


@dataclass(slots=True)
class Envelope:
    time_ns: int | None
    time_source: str  # see Record.time_source
    text: str  # what follows the envelope
    host: str | None = None
    tag: str | None = None  # syslog tag, e.g. "postfix/smtpd", "qmail"
    pid: int | None = None
    bad_stamp: bool = False
    # A journal entry's place in its journal, (seqnum id, seqnum), from its cursor
    journal_seq: tuple[str, int] | None = None
    continued: bool = False  # a splogger chunk after the first of a line > 799 bytes
    invalid_utf8: bool = False  # a journal MESSAGE of bytes that are not UTF-8
    nul_bytes: bool = False  # a journal MESSAGE holding NUL ("\u0000": not in the line's bytes)
    # A local wall-clock time in the time a DST change repeats has two readings: the
    # other one (the parser picks the one that follows the line before it)
    alt_ns: int | None = None
    # Second 60 (23:59:60 UTC, a leap second): read as 23:59:59.999999999
    leap_second: bool = False


_LABEL_RE = tai64n.LABEL_RE
# nine digits (tai64nlocal), or six: the microseconds of an accustamp/splogger log
# turned into local time (a 2003 qmail-send statistics script reads both forms)
_LOCAL_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{9}|\d{6})( {1,2})")
_SVLOGD_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[_T](\d\d):(\d\d):(\d\d)\.(\d{5}) ")
_ACCU_RE = re.compile(r"(\d{9,11})\.\.?(\d{1,9})([ +])")
# A syslog header's tag: "]" optional, "vpopmail[18917: ..." is seen
_TAG_ONLY = r"([^\s\[:]+)(?:\[(\d+)\]?)?: ?"
_TAG = r"(\S+) " + _TAG_ONLY
# RFC 3339 date-time (groups 1-8, see _rfc3339_ns); the offset's colon optional for
# journalctl's short-iso (systemd issue #26639)
_DATE_TIME = r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)"
_RFC3339_RE = re.compile(_DATE_TIME + " " + _TAG)
# journalctl -o short-precise: microseconds after the seconds
_BSD_STAMP = (r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* +(\d{1,2}) "
              r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? ")
_BSD_RE = re.compile(_BSD_STAMP + _TAG)
# A header whose tag is unreadable: keep its time and host, the rest is the text.
_BSD_HEAD_RE = re.compile(_BSD_STAMP + r"(\S+) ")
# busybox syslogd's file format (without -S) puts FACILITY.PRIORITY after the host
_FACPRI_RE = re.compile(
    r"(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|ntp|security|"
    r"console|local[0-7])\.(?:emerg|alert|crit|err|error|warn|warning|notice|info|debug|panic) ")
_TAG_ONLY_RE = re.compile(_TAG_ONLY)
# journalctl -o short-full: "Mon 2024-03-04 10:11:12 CET host tag[pid]: "
_FULL_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)"
    r"(?:\.(\d{1,9}))? ([A-Za-z][A-Za-z0-9+-]{0,9}|[+-]\d\d(?:\d\d)?) " + _TAG)
# journalctl -o short-unix after its "secs.usec ": the pid is required, so a qmail
# line after splogger's stamp ("delivery 3: success: ...") is never taken for one
_UNIX_HEADER_RE = re.compile(r"(\S+) ([^\s\[:]+)\[(\d{1,9})\]: ")
_PRI_RE = re.compile(r"<(\d{1,3})>")
# RFC 5424 after its PRI: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID; then SD
_RFC5424_RE = re.compile(r"1 (?:-|" + _DATE_TIME + r") (\S+) (\S+) (\S+) \S+ ")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# Local wall-clock hour → its UTC epoch, cached: converting costs more than the rest
# of a line's parse, and a log holds thousands of lines per hour. None: a zone's
# change falls in that hour (at any minute: Lord Howe's at 2:00 by 30 min, Chatham's
# at 2:45), whose times are each converted on their own.
_LOCAL_HOUR_CACHE: dict[tuple[int, int, int, int], int | None] = {}
_UNSET = -(1 << 80)  # no unix time is this: "not cached"


_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class NoSuchTime(ValueError):
    """A well-formed stamp of a time that never was: a local time a DST change skips,
    second 60 anywhere but at the end of a UTC day (a leap second)."""


def _no_such_day(y: int, mo: int, d: int) -> bool:
    """April 31, February 30, February 29 of a year with none (1 <= mo <= 12)."""
    return d > 28 and (d > _MONTH_DAYS[mo] or (mo == 2 and not calendar.isleap(y)))


def _check(y: int, mo: int, d: int, h: int, mi: int, s: int) -> None:
    # mktime/timegm would quietly normalise month 13, hour 99, second 60 or April 31
    # (to May 1): refuse instead (second 60 is _wall's to read).
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 59):
        raise ValueError("date out of range")
    if d > 28 and _no_such_day(y, mo, d):
        raise ValueError("no such day")


def _offset_at(u: int) -> int:
    """Seconds the process's zone is ahead of unix time at ``u``: from localtime, as
    tai64nlocal prints, so a "right/" zone's leap seconds count as it counts them."""
    try:
        lt = time.localtime(u)
    except (OSError, ValueError) as exc:
        raise OverflowError(str(exc)) from None
    return calendar.timegm(lt) - u


def _local_exact(y: int, mo: int, d: int, h: int, mi: int, s: int) -> list[int]:
    """Every unix second whose local time is this one, in order: one, two in the time a
    DST change repeats, none in the time it skips. Whatever the size or minute of the
    change: the offsets in force a day before and after (and at) are each tried."""
    naive = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    offsets = {_offset_at(naive - 86400), _offset_at(naive), _offset_at(naive + 86400)}
    return sorted(naive - off for off in offsets if _offset_at(naive - off) == off)


def local_readings(y: int, mo: int, d: int, h: int, mi: int, s: int) -> tuple[int, int]:
    """Local wall-clock time (the process's TZ, as tai64nlocal used) → (unix seconds,
    seconds to its other reading: > 0 in the time a DST change repeats, else 0). The
    first reading is the earlier one. Raises NoSuchTime in the time a change skips."""
    _check(y, mo, d, h, mi, s)
    key = (y, mo, d, h)
    base = _LOCAL_HOUR_CACHE.get(key, _UNSET)
    if base == _UNSET:
        if len(_LOCAL_HOUR_CACHE) > 10000:
            _LOCAL_HOUR_CACHE.clear()
        # one offset for the whole hour (no change in it): each end one reading, an
        # hour apart; else None
        first, last = _local_exact(y, mo, d, h, 0, 0), _local_exact(y, mo, d, h, 59, 59)
        base = first[0] if len(first) == 1 and len(last) == 1 and last[0] - first[0] == 3599 else None
        _LOCAL_HOUR_CACHE[key] = base
    if base is not None:
        return base + mi * 60 + s, 0
    readings = _local_exact(y, mo, d, h, mi, s)
    if not readings:
        raise NoSuchTime("a local time the DST change skips")
    return readings[0], readings[-1] - readings[0]


def local_to_unix(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    """Local wall-clock time → unix seconds (the earlier reading of a repeated time)."""
    return local_readings(y, mo, d, h, mi, s)[0]


def clear_local_caches() -> None:
    """Forget the local-time caches (after the process's TZ changed)."""
    _LOCAL_HOUR_CACHE.clear()
    _TOMORROW[:] = [None, (0, 0, 0)]


def utc_to_unix(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    _check(y, mo, d, h, mi, s)
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def _wall(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str | None, local: bool,
          offset: int = 0) -> tuple[int, int, bool]:
    """A stamp's date, time and fraction digits (``offset``: seconds its zone is east of
    UTC, when it gives one; else ``local``: the process's zone, or UTC) → (unix ns,
    seconds to the other reading of a repeated local time or 0, whether a leap second).
    Second 60 is a leap second only where one can be, at the end of a UTC day: it is
    that day's last nanosecond (unix time has no 23:59:60, and the next day's 00:00:00
    made time run backwards at the next line)."""
    leap = s == 60
    if leap:
        s = 59
    if local:
        secs, fold = local_readings(y, mo, d, h, mi, s)
    else:
        secs, fold = utc_to_unix(y, mo, d, h, mi, s), 0
    secs -= offset
    if leap and (secs + 1) % 86400:
        raise NoSuchTime("second 60 where no leap second can be")
    return secs * NS + (NS - 1 if leap else _frac_ns(frac)), fold, leap


def s6_second_stamp(rest: str, nanos: int) -> str | None:
    """The text after s6-log's second stamp, or None: with both t and T s6-log writes
    "@label YYYY-MM-DD HH:MM:SS.nnnnnnnnn  text", and only s6-log does; its label is true
    TAI (skalibs). Both stamps are of one instant: same nanoseconds. (Not so a date in the
    text, e.g. a tai64nlocal'd line logged again by multilog: its label is daemontools'.)"""
    # >= 31: an empty line is "DATE  " and nothing after the blanks
    if len(rest) >= 31 and rest[29:31] == "  " and rest[4] == "-":
        m = _LOCAL_RE.match(rest)
        if m and m.group(7) == f"{nanos:09d}":
            return rest[m.end():]
    return None


def split_envelope(line: str, leap: bool = False, year: int | None = None,
                   local_tz: bool = True, now_ns: int | None = None) -> Envelope:
    """Take the stamp and syslog header off ``line``; never raises.

    ``leap``: TAI64N labels are true TAI (s6-log). ``year``: the year for BSD
    syslog headers, which have none (default: the year that puts the date no more
    than a day after today, ``now_ns``'s date (default: the clock's) in the zone the
    stamp is read in). ``local_tz``: tai64nlocal stamps are in the
    process's local time zone (set TZ like for tai64nlocal); else UTC.
    """
    if not line:
        return Envelope(None, "none", line)
    c = line[0]
    if c == "@":
        # The hot path: nearly every multilog line. Inlined on purpose.
        if _LABEL_RE.match(line) is not None:
            nanos = int(line[17:25], 16)
            secs = int(line[1:17], 16)
            if nanos >= NS or not tai64n.LABEL_SECS_MIN <= secs < tai64n.LABEL_SECS_END:
                # a label, but no time we can believe (corrupt, or a clock gone wrong)
                return Envelope(None, "none", line[26:] if line[25:26] == " " else line[25:],
                                bad_stamp=True)
            unix = secs - tai64n.DAEMONTOOLS_OFFSET
            rest = line[26:] if line[25:26] == " " else line[25:]
            after = s6_second_stamp(rest, nanos)
            if after is not None:
                rest = after
                leap = True
            if leap:
                unix, nanos, leap_second = tai64n.tai_to_unix(unix, nanos)
                return Envelope(unix * NS + nanos, "tai64n_tai", rest, leap_second=leap_second)
            return Envelope(unix * NS + nanos, "tai64n", rest)
        # '@' then something that is not a label: keep the text, flag it.
        return Envelope(None, "none", line, bad_stamp=len(line) > 1 and line[1] in "0123456789abcdef")
    if "0" <= c <= "9":
        return _digits(line, leap, year, local_tz)
    if "A" <= c <= "Z":
        m = _BSD_RE.match(line) or _BSD_HEAD_RE.match(line)
        if m:
            return _bsd(line, m, year, local_tz, now_ns)
        m = _FULL_RE.match(line)
        if m:
            return _short_full(line, m, local_tz)
    elif c == "q" and line.startswith("qmail: "):
        # splogger's tag with the syslog header already gone
        return _after_header(Envelope(None, "none", line[7:], tag="qmail"))
    elif c == "<":
        m = _PRI_RE.match(line)
        if m is not None and int(m.group(1)) < 192:  # facility 0..23: a syslog PRI
            start = m.end()
            if line.startswith("1 ", start):
                env = _rfc5424(line, start)
                if env is not None:
                    return env
            elif line[start:start + 1] not in ("", "<"):
                return split_envelope(line[start:], leap, year, local_tz, now_ns)
    elif c == "{" and line[1:2] == '"':
        env = _json_entry(line)
        if env is not None:
            return env
    elif c == " " or c == "\t":
        # a pasted log, indented (a mail, a forum post, a doc): no program writes
        # its stamp or its first word after blanks, so read the line without them
        return split_envelope(line.lstrip(" \t"), leap, year, local_tz, now_ns)
    return Envelope(None, "none", line)


def _digits(line: str, leap: bool, year: int | None, local_tz: bool) -> Envelope:
    if len(line) > 20 and line[4] == "-":
        sep = line[10]
        if sep == " ":
            m = _LOCAL_RE.match(line)
            if m:
                y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
                try:
                    ns, fold, leap_second = _wall(y, mo, d, h, mi, s, m.group(7), local_tz)
                except (OverflowError, ValueError):
                    return Envelope(None, "none", line, bad_stamp=True)
                return Envelope(ns, "local", line[m.end():],
                                alt_ns=ns + fold * NS if fold else None, leap_second=leap_second)
            return Envelope(None, "none", line)
        if sep == "T":
            m = _RFC3339_RE.match(line)
            if m:
                return _rfc3339(line, m, leap, year)
        if sep in "_T":
            m = _SVLOGD_RE.match(line)
            if m:
                y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
                try:
                    ns, _, leap_second = _wall(y, mo, d, h, mi, s, m.group(7), False)
                except (OverflowError, ValueError):
                    return Envelope(None, "none", line, bad_stamp=True)
                return Envelope(ns, "svlogd", line[m.end():], leap_second=leap_second)
        return Envelope(None, "none", line)
    m = _ACCU_RE.match(line)
    if m:
        frac = m.group(2)
        ns = int(m.group(1)) * NS + _frac_ns(frac)
        rest = line[m.end():]
        if m.group(3) == "+":  # splogger continuation chunk of a long line
            return Envelope(ns, "accustamp", "+" + rest, continued=True)
        if (h := _UNIX_HEADER_RE.match(rest)) is not None:  # journalctl -o short-unix
            return Envelope(ns, "journal", rest[h.end():], host=h.group(1), tag=h.group(2),
                            pid=_pid(h.group(3)))
        return Envelope(ns, "accustamp", rest)
    return Envelope(None, "none", line)


def _year_for(month: int, day: int, year: int | None, local_tz: bool, now_ns: int | None) -> int:
    if year is not None:
        return year
    # The latest year that puts the date no more than a day after today (a December
    # log read in January is last year's; a clock a little ahead, or a line of a zone
    # already in tomorrow, is not). Today in the zone the stamp is read in.
    ty, tm, td = _tomorrow(time.time_ns() if now_ns is None else now_ns, local_tz)
    return ty if (month, day) <= (tm, td) else ty - 1


# (now in seconds, local_tz) → tomorrow's (year, month, day): one computation per second
_TOMORROW: list[Any] = [None, (0, 0, 0)]


def _tomorrow(now_ns: int, local_tz: bool) -> tuple[int, int, int]:
    key = (now_ns // NS, local_tz)
    if _TOMORROW[0] == key:
        return _TOMORROW[1]
    if local_tz:
        lt = time.localtime(key[0])
        today = datetime.date(lt.tm_year, lt.tm_mon, lt.tm_mday)
    else:
        civil = utc_civil(key[0])
        if civil is None:
            raise OverflowError("the clock is out of range")
        today = datetime.date(*civil[:3])
    tomorrow = today + datetime.timedelta(days=1)
    _TOMORROW[:] = [key, (tomorrow.year, tomorrow.month, tomorrow.day)]
    return _TOMORROW[1]


def _after_header(env: Envelope) -> Envelope:
    """A stamp after the header is the program's own, finer than the header's: prefer
    it. splogger puts its accustamp there; a relay that forwarded multilog's lines
    as they were (``... qmail-send: @4000... delivery 3: ...``) keeps the label."""
    text = env.text
    if text[:1] == "@" and _LABEL_RE.match(text) is not None:
        inner = split_envelope(text)
        if inner.time_ns is not None:
            env.time_ns, env.time_source, env.text = inner.time_ns, inner.time_source, inner.text
            env.leap_second = False  # the header's second 60 is not this time's
        return env
    if text and "0" <= text[0] <= "9":
        m = _ACCU_RE.match(text)
        if m:
            inner = _digits(text, False, None, True)
            if inner.time_ns is not None:
                env.time_ns = inner.time_ns
                env.time_source = "accustamp"
                env.leap_second = False
                env.text = inner.text
                env.continued = inner.continued
    return env


def _bsd(line: str, m: re.Match[str], year: int | None, local_tz: bool,
         now_ns: int | None = None) -> Envelope:
    mon = _MONTHS[m.group(1)]
    day = int(m.group(2))
    try:
        y, h = _year_for(mon, day, year, local_tz, now_ns), int(m.group(3))
        if day > 28 and day <= 31 and _no_such_day(y, mon, day):
            # mktime makes Feb 29 March 1 (Apr 31 May 1), and time went back at the next line
            if year is not None or mon != 2 or day != 29:  # no such day: the stamp is bad
                env = _bsd_env(line, m, None)
                env.bad_stamp = True
                return env
            while not calendar.isleap(y):  # guessed: the last year that had one
                y -= 1
        # BSD stamps are local time, as a rule
        ns, fold, leap_second = _wall(y, mon, day, h, int(m.group(4)), int(m.group(5)), m.group(6),
                                      local_tz)
    except NoSuchTime:  # a time that never was here: the stamp is bad, the header good
        env = _bsd_env(line, m, None)
        env.bad_stamp = True
        return env
    except (OverflowError, ValueError):
        return Envelope(None, "none", line, bad_stamp=True)
    env = _bsd_env(line, m, ns)
    if env.time_ns == ns and env.time_source == "syslog":  # not a finer stamp after the header
        if fold:
            env.alt_ns = ns + fold * NS
        env.leap_second = leap_second
    return env


def _bsd_env(line: str, m: re.Match[str], ns: int) -> Envelope:
    host = m.group(7)
    if host[-1] == ":" or (m.re is _BSD_HEAD_RE and _FACPRI_RE.match(line, m.end())):
        return _bsd_odd(line[m.start(7):], ns)
    if m.re is _BSD_HEAD_RE:
        return Envelope(ns, "syslog", line[m.end():], host=host)
    pid = m.group(9)
    env = Envelope(ns, "syslog", line[m.end():], host=m.group(7), tag=m.group(8),
                   pid=_pid(pid))
    return _after_header(env)


def _bsd_odd(rest: str, ns: int) -> Envelope:
    """A BSD header off RFC 3164's path, ``rest`` after its stamp: no HOSTNAME (busybox
    syslogd -S, programs writing their own file: the first word is the tag, it ends in
    ``:``), or busybox's ``FACILITY.PRIORITY`` between host and tag."""
    host = None
    sp = rest.find(" ")
    first = rest if sp < 0 else rest[:sp]
    if first[-1:] != ":":
        host, rest = first, ("" if sp < 0 else rest[sp + 1:])
        f = _FACPRI_RE.match(rest)
        if f is not None:
            rest = rest[f.end():]
    t = _TAG_ONLY_RE.match(rest)
    if t is None:
        return Envelope(ns, "syslog", rest, host=host)
    pid = t.group(2)
    return _after_header(Envelope(ns, "syslog", rest[t.end():], host=host, tag=t.group(1),
                                  pid=_pid(pid)))


def _short_full(line: str, m: re.Match[str], local_tz: bool) -> Envelope:
    """journalctl -o short-full. Its zone is an abbreviation: UTC/GMT are exact; any
    other is taken as this machine's local time, where journalctl ran, as BSD stamps."""
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    zone = m.group(8)
    numeric = zone[0] in "+-"  # "+03": a zone with no letters of its own, an offset
    local = not (numeric or zone in ("UTC", "GMT") or not local_tz)
    try:
        ns, _, leap_second = _wall(y, mo, d, h, mi, s, m.group(7), local,
                                   _offset_secs(zone) if numeric else 0)
    except (OverflowError, ValueError):
        return Envelope(None, "none", line, bad_stamp=True)
    pid = m.group(11)
    return _after_header(Envelope(ns, "syslog", line[m.end():], host=m.group(9), tag=m.group(10),
                                  pid=_pid(pid), leap_second=leap_second))


def _frac_ns(frac: str | None) -> int:
    """Digits after a decimal point (up to 9) → nanoseconds."""
    return int(frac) * 10 ** (9 - len(frac)) if frac else 0


def _rfc3339_ns(m: re.Match[str]) -> int | None:
    """Groups 1-8 of ``m`` (date, time, fraction, Z or offset) → unix ns; None: a
    date or time out of range. Second 60 (group 6 "60": a leap second) is the day's
    last nanosecond, see _wall."""
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    tz = m.group(8)
    try:
        return _wall(y, mo, d, h, mi, s, m.group(7), False, 0 if tz == "Z" else _offset_secs(tz))[0]
    except (OverflowError, ValueError):
        return None


def _offset_secs(tz: str) -> int:
    """``+01:00``, journalctl's ``+0100``, short-full's ``+03`` → seconds east of UTC;
    ValueError past ±23:59 (RFC 3339: time-numoffset is a time-hour and a time-minute)."""
    h, mi = int(tz[1:3]), (int(tz[-2:]) if len(tz) > 3 else 0)
    if h > 23 or mi > 59:
        raise ValueError("offset out of range")
    off = h * 3600 + mi * 60
    return off if tz[0] == "+" else -off


def _rfc3339(line: str, m: re.Match[str], leap: bool, year: int | None) -> Envelope:
    ns = _rfc3339_ns(m)
    if ns is None:
        return Envelope(None, "none", line, bad_stamp=True)
    pid = m.group(11)
    env = Envelope(ns, "rfc3339", line[m.end():], host=m.group(9), tag=m.group(10),
                   pid=_pid(pid), leap_second=m.group(6) == "60")
    return _after_header(env)


def _rfc5424(line: str, start: int) -> Envelope | None:
    """An RFC 5424 message from its VERSION at ``start``; None: not one."""
    m = _RFC5424_RE.match(line, start)
    if m is None:
        return None
    end = _sd_end(line, m.end())
    if end < 0:
        return None
    text = line[end + 1:] if line[end:end + 1] == " " else line[end:]
    if text[:1] == "\ufeff":  # the BOM that says MSG is UTF-8
        text = text[1:]
    host, app, procid = m.group(9), m.group(10), m.group(11)
    ns = None if m.group(1) is None else _rfc3339_ns(m)  # "-": the sender knew no time
    env = Envelope(ns, "rfc3339" if ns is not None else "none", text,
                   host=None if host == "-" else host, tag=None if app == "-" else app,
                   pid=_pid(procid), bad_stamp=ns is None and m.group(1) is not None,
                   leap_second=ns is not None and m.group(6) == "60")
    return _after_header(env)


def _sd_end(line: str, i: int) -> int:
    """Where the STRUCTURED-DATA starting at ``line[i]`` ends: ``-`` or one or more
    ``[id param="value"]`` (``\\"``, ``\\\\`` and ``\\]`` escaped in values); -1: malformed."""
    if line[i:i + 1] == "-":
        return i + 1
    start, n = i, len(line)
    while i < n and line[i] == "[":
        i += 1
        quoted = False
        while i < n:
            c = line[i]
            if quoted:
                if c == "\\":
                    i += 1
                elif c == '"':
                    quoted = False
            elif c == '"':
                quoted = True
            elif c == "]":
                break
            i += 1
        if i >= n:
            return -1
        i += 1
    return i if i > start else -1


def _json_entry(line: str) -> Envelope | None:
    """A journal entry or a Docker json-file line; None: neither."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(entry, dict):
        return None
    return _journal(entry) if "MESSAGE" in entry else _docker(entry)


def _journal(entry: dict) -> Envelope:
    """A ``journalctl -o json`` entry. Its own time (the sender's, else the
    journal's, in µs), host, identifier and pid; MESSAGE as the text (journald
    gives bytes that are not UTF-8 as a list of numbers, and null for a value it
    did not print: larger than 4096 bytes without ``--all``; several values of a
    field as a list of them)."""
    value = entry["MESSAGE"]
    msg = _journal_text(value)
    ns = None
    usec = entry.get("_SOURCE_REALTIME_TIMESTAMP") or entry.get("__REALTIME_TIMESTAMP")
    if isinstance(usec, str) and usec.isdecimal() and len(usec) <= 18:
        ns = int(usec) * 1000
    pid = entry.get("SYSLOG_PID") or entry.get("_PID")
    host = entry.get("_HOSTNAME")
    tag = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM")
    env = Envelope(ns, "journal" if ns is not None else "none", msg,
                   host=host if isinstance(host, str) else None,
                   tag=tag if isinstance(tag, str) else None,
                   pid=_pid(pid),
                   # a time given that is none ("-5", 20 digits): bad, as a bad label is
                   bad_stamp=ns is None and usec is not None,
                   journal_seq=_journal_seq(entry.get("__CURSOR")),
                   invalid_utf8="\ufffd" in msg and isinstance(value, list) and not _utf8(value),
                   nul_bytes="\x00" in msg)
    return _after_header(env)


def _utf8(numbers: list) -> bool:
    """Whether journald's list of numbers is UTF-8 (it gives such a list for any other)."""
    try:
        bytes(numbers).decode("utf-8")
    except (ValueError, TypeError):
        return False
    return True


_DOCKER_TIME_RE = re.compile(_DATE_TIME + "$")


def rfc3339_ns(text: str) -> int | None:
    """A whole RFC 3339 date-time (a record's ``time``, Docker's ``time``) → unix ns;
    None: not one, or a date or time out of range."""
    m = _DOCKER_TIME_RE.match(text)
    return None if m is None else _rfc3339_ns(m)


def _docker(entry: dict) -> Envelope | None:
    """A line of Docker's json-file log driver, ``{"log": "...\\n", "stream": "stdout",
    "time": "2021-03-01T12:00:00.123456789Z"}`` (qmail in a container logging to its
    stdout); None: not one. A multilog label inside the text still wins."""
    log, when = entry.get("log"), entry.get("time")
    if not isinstance(log, str) or not isinstance(when, str):
        return None
    ns = rfc3339_ns(when)
    text = log[:-1] if log[-1:] == "\n" else log
    if text[-1:] == "\r":
        text = text[:-1]
    return _after_header(Envelope(ns, "rfc3339" if ns is not None else "none", text,
                                  bad_stamp=ns is None,
                                  leap_second=ns is not None and when[17:19] == "60"))


def _pid(value: object) -> int | None:
    """A process id given as text (RFC 5424 PROCID, journal fields), if it is one."""
    return int(value) if isinstance(value, str) and value.isdecimal() and len(value) < 10 else None


def _journal_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        if all(type(x) is int for x in value):
            try:
                return bytes(value).decode("utf-8", "replace")  # type: ignore[arg-type]
            except ValueError:  # a number beyond a byte: not journald's
                return str(value)
        return "\n".join(_journal_text(x) for x in value)
    return str(value)


def with_text(line: str, text: str, new: str) -> str:
    """``line`` (whose envelope gave ``text``) with ``new`` for that text: how a secret
    is taken out of the original line too. A journal entry gets its MESSAGE rewritten
    (first: its escaped text might end the line by chance); other text ends the line;
    where it cannot be found, only ``new`` is left, never the old text."""
    if line[:2] == '{"':
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = None
        if isinstance(entry, dict) and "MESSAGE" in entry:
            entry["MESSAGE"] = new
            return orjson.dumps(entry).decode()
        if isinstance(entry, dict) and isinstance(entry.get("log"), str):  # Docker's
            entry["log"] = new + ("\n" if entry["log"].endswith("\n") else "")
            return orjson.dumps(entry).decode()
    if text and line.endswith(text):
        return line[:len(line) - len(text)] + new
    if text and line.endswith(text + "\r"):  # the text of a CRLF line goes without its \r
        return line[:len(line) - len(text) - 1] + new + "\r"
    return new


_CURSOR_RE = re.compile(r"(?:^|;)s=([0-9a-f]{16,32});i=([0-9a-f]{1,16})(?:;|$)")


def _journal_seq(cursor: object) -> tuple[str, int] | None:
    """``s=SEQNUM_ID;i=SEQNUM;...`` (sd_journal_get_cursor, hex) → (16 hex digits of
    the seqnum id, seqnum): an entry's place in its journal, the same however often
    it is printed."""
    if not isinstance(cursor, str):
        return None
    m = _CURSOR_RE.search(cursor)
    return None if m is None else (m.group(1)[:16], int(m.group(2), 16))
