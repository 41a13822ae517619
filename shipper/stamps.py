"""Line envelopes: the time stamp and syslog header in front of a program's text.

Pure functions over one decoded line. Recognised, in this order:
  ``@<tai64n> ``                  multilog t, tai64n, svlogd -t, s6-log t
  ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn `` tai64nlocal output (local time); two spaces: s6-log T
  ``YYYY-MM-DD_HH:MM:SS.nnnnn ``   svlogd -tt (UTC); ``T`` instead of ``_``: svlogd -ttt
  ``NNNNNNNNNN.uuuuuu ``           accustamp / splogger / daemontools-encore T
  ``Mmm dd HH:MM:SS host tag[pid]: ``   BSD syslog (year supplied by the caller)
  ``YYYY-MM-DDTHH:MM:SS[.f](Z|±hh:mm) host tag[pid]: ``  RFC 3339 syslog
and lines with no stamp at all.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from shipper import tai64n

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


_LABEL_RE = tai64n.LABEL_RE
_LOCAL_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{9})( {1,2})")
_SVLOGD_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[_T](\d\d):(\d\d):(\d\d)\.(\d{5}) ")
_ACCU_RE = re.compile(r"(\d{9,11})\.\.?(\d{1,9})([ +])")
# A syslog header's tag: "]" optional, "vpopmail[18917: ..." is seen
_TAG = r"(\S+) ([^\s\[:]+)(?:\[(\d+)\]?)?: ?"
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) " + _TAG)
_BSD_STAMP = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* +(\d{1,2}) (\d\d):(\d\d):(\d\d) "
_BSD_RE = re.compile(_BSD_STAMP + _TAG)
# A header whose tag is unreadable: keep its time and host, the rest is the text.
_BSD_HEAD_RE = re.compile(_BSD_STAMP + r"(\S+) ")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

# Local wall-clock hour → its UTC epoch, cached: mktime costs more than the rest
# of a line's parse, and a log holds thousands of lines per hour.
_LOCAL_HOUR_CACHE: dict[tuple[int, int, int, int], int] = {}


def _check(mo: int, d: int, h: int, mi: int, s: int) -> None:
    # mktime/timegm would quietly normalise month 13 or hour 99: refuse instead.
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60):
        raise ValueError("date out of range")


def local_to_unix(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    """Local wall-clock time (the process's TZ, as tai64nlocal used) → unix seconds."""
    _check(mo, d, h, mi, s)
    key = (y, mo, d, h)
    base = _LOCAL_HOUR_CACHE.get(key)
    if base is None:
        if len(_LOCAL_HOUR_CACHE) > 10000:
            _LOCAL_HOUR_CACHE.clear()
        base = int(time.mktime((y, mo, d, h, 0, 0, 0, 0, -1)))
        _LOCAL_HOUR_CACHE[key] = base
    return base + mi * 60 + s


def utc_to_unix(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    _check(mo, d, h, mi, s)
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def split_envelope(line: str, leap: bool = False, year: int | None = None,
                   local_tz: bool = True) -> Envelope:
    """Take the stamp and syslog header off ``line``; never raises.

    ``leap``: TAI64N labels are true TAI (s6-log). ``year``: the year for BSD
    syslog headers, which have none (default: this year, or last year for a date
    more than a day in the future). ``local_tz``: tai64nlocal stamps are in the
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
            if leap:
                unix -= tai64n.leaps_before_tai(unix)
            rest = line[26:] if line[25:26] == " " else line[25:]
            if len(rest) > 31 and rest[29:31] == "  " and rest[4] == "-":
                # s6-log with both t and T: "@label YYYY-MM-DD HH:MM:SS.nnnnnnnnn  text"
                m = _LOCAL_RE.match(rest)
                if m:
                    rest = rest[m.end():]
            return Envelope(unix * NS + nanos, "tai64n_tai" if leap else "tai64n", rest)
        # '@' then something that is not a label: keep the text, flag it.
        return Envelope(None, "none", line, bad_stamp=len(line) > 1 and line[1] in "0123456789abcdef")
    if "0" <= c <= "9":
        return _digits(line, leap, year, local_tz)
    if "A" <= c <= "Z":
        m = _BSD_RE.match(line) or _BSD_HEAD_RE.match(line)
        if m:
            return _bsd(line, m, year, local_tz)
    elif c == "q" and line.startswith("qmail: "):
        # splogger's tag with the syslog header already gone
        return _after_header(Envelope(None, "none", line[7:], tag="qmail"))
    return Envelope(None, "none", line)


def _digits(line: str, leap: bool, year: int | None, local_tz: bool) -> Envelope:
    if len(line) > 20 and line[4] == "-":
        sep = line[10]
        if sep == " ":
            m = _LOCAL_RE.match(line)
            if m:
                y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
                try:
                    if local_tz:
                        secs = local_to_unix(y, mo, d, h, mi, s)
                    else:
                        secs = utc_to_unix(y, mo, d, h, mi, s)
                except (OverflowError, ValueError):
                    return Envelope(None, "none", line, bad_stamp=True)
                return Envelope(secs * NS + int(m.group(7)), "local", line[m.end():])
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
                    secs = utc_to_unix(y, mo, d, h, mi, s)
                except (OverflowError, ValueError):
                    return Envelope(None, "none", line, bad_stamp=True)
                return Envelope(secs * NS + int(m.group(7)) * 10000, "svlogd", line[m.end():])
        return Envelope(None, "none", line)
    m = _ACCU_RE.match(line)
    if m:
        frac = m.group(2)
        ns = int(m.group(1)) * NS + int(frac) * 10 ** (9 - len(frac))
        rest = line[m.end():]
        if m.group(3) == "+":  # splogger continuation chunk of a long line
            rest = "+" + rest
        return Envelope(ns, "accustamp", rest)
    return Envelope(None, "none", line)


def _year_for(month: int, day: int, year: int | None) -> int:
    if year is not None:
        return year
    now = time.gmtime()
    # A header dated more than a day ahead belongs to last year (a December
    # log read in January).
    if (month, day) > (now.tm_mon, now.tm_mday + 1):
        return now.tm_year - 1
    return now.tm_year


def _after_header(env: Envelope) -> Envelope:
    """splogger puts its own accustamp after the syslog header: prefer it."""
    text = env.text
    if text and "0" <= text[0] <= "9":
        m = _ACCU_RE.match(text)
        if m:
            inner = _digits(text, False, None, True)
            if inner.time_ns is not None:
                env.time_ns = inner.time_ns
                env.time_source = "accustamp"
                env.text = inner.text
    return env


def _bsd(line: str, m: re.Match[str], year: int | None, local_tz: bool) -> Envelope:
    mon = _MONTHS[m.group(1)]
    day = int(m.group(2))
    to_unix = local_to_unix if local_tz else utc_to_unix  # BSD stamps are local time, as a rule
    try:
        secs = to_unix(_year_for(mon, day, year), mon, day,
                       int(m.group(3)), int(m.group(4)), int(m.group(5)))
    except (OverflowError, ValueError):
        return Envelope(None, "none", line, bad_stamp=True)
    if m.re is _BSD_HEAD_RE:
        return Envelope(secs * NS, "syslog", line[m.end():], host=m.group(6))
    pid = m.group(8)
    env = Envelope(secs * NS, "syslog", line[m.end():], host=m.group(6), tag=m.group(7),
                   pid=int(pid) if pid else None)
    return _after_header(env)


def _rfc3339(line: str, m: re.Match[str], leap: bool, year: int | None) -> Envelope:
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    try:
        secs = utc_to_unix(y, mo, d, h, mi, s)
    except (OverflowError, ValueError):
        return Envelope(None, "none", line, bad_stamp=True)
    frac = m.group(7) or ""
    tz = m.group(8)
    if tz != "Z":
        off = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        secs -= off if tz[0] == "+" else -off
    ns = secs * NS + (int(frac) * 10 ** (9 - len(frac)) if frac else 0)
    pid = m.group(11)
    env = Envelope(ns, "rfc3339", line[m.end():], host=m.group(9), tag=m.group(10),
                   pid=int(pid) if pid else None)
    return _after_header(env)
