"""Times given on the command line (``--since``, ``--until``) → unix nanoseconds. Pure.

One reading for every command (replay, track, stats): a date or date-time is local
time unless it has ``Z`` or an offset, as ``tai64nlocal`` shows the logs; unix seconds
and a fraction are exact to the nanosecond (a record's ``time_unix_ns`` / 1e9 bounds
exactly that line); a TAI64N label as multilog writes it; an age before now.
"""

from __future__ import annotations

import argparse
import calendar
import re
import time

from shipper.tai64n import LabelError, decode_ns

NS = 1_000_000_000
_AGE_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?"
                      r"(Z|[+-]\d\d:?\d\d)?")
FORMS = ("a date or date-time, local time unless it has Z or an offset (2026-11-29, "
         "\"2026-11-29 13:28\", 2026-11-29T13:28+01:00), unix seconds, a TAI64N label, "
         "or an age (90s, 15m, 1h, 2d)")


def parse_time(text: str, now: float | None = None) -> int:
    """``text`` (see ``FORMS``) → unix ns; ``now``: unix seconds ages count back from
    (default: the clock). ValueError naming the forms for anything else."""
    t = text.strip()
    if t.startswith("@"):
        try:
            return decode_ns(t)
        except LabelError as exc:
            raise ValueError(f"not a time: {text!r} ({exc})") from None
    if re.fullmatch(r"\d+(\.\d+)?", t):
        # exactly: through a float, 1764753398.0040005 came out 12 ns late
        secs, _, frac = t.partition(".")
        return int(secs) * NS + int((frac + "000000000")[:9])
    m = _AGE_RE.fullmatch(t)
    if m:
        base = time.time() if now is None else now
        return int((base - float(m.group(1)) * _UNITS[m.group(2)]) * NS)
    m = _DATE_RE.fullmatch(t)
    if not m:
        raise ValueError(f"not a time: {text!r}; use {FORMS}")
    y, mo, d, h, mi, s = (int(g or 0) for g in m.groups()[:6])
    tz = m.group(8)
    # (mktime and timegm take 2024-02-31 for 2024-03-02 without a word)
    if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and h <= 23 and mi <= 59
            and s <= 60) or (tz not in (None, "Z") and (int(tz[1:3]) > 23 or int(tz[-2:]) > 59)):
        raise ValueError(f"not a time: {text!r} (a field out of range)")
    frac = m.group(7) or ""
    if tz is None:  # local time, as tai64nlocal shows it
        secs = _local(y, mo, d, h, mi, s)
    else:
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        if tz != "Z":
            tz = tz.replace(":", "")
            off = int(tz[1:3]) * 3600 + int(tz[3:5]) * 60
            secs -= off if tz[0] == "+" else -off
    return secs * NS + (int(frac.ljust(9, "0")) if frac else 0)


def _local(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    """Local time → unix seconds: in the hour a DST change repeats its first reading (as
    the parser reads tai64nlocal lines); in the time one skips, as standard time. Not
    mktime's own pick (isdst -1): glibc takes the DST state of what it converted last,
    so --until "2024-10-27 02:30" (Europe/Berlin) moved by an hour with --since's season."""
    readings = []
    for isdst in (1, 0):
        t = int(time.mktime((y, mo, d, h, mi, s, 0, 0, isdst)))
        if time.localtime(t).tm_isdst == isdst:  # a reading of that wall time indeed
            readings.append(t)
    return min(readings) if readings else int(time.mktime((y, mo, d, h, mi, s, 0, 0, 0)))


YEAR_MIN, YEAR_MAX = 1970, 9999  # the config's syslog_year takes the same


def year_arg(text: str) -> int:
    """``--year``: the year BSD syslog stamps (which have none) are in; a usage error for
    anything else (year 0 or 99999 made every stamped line a bad stamp)."""
    try:
        year = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a year: {text!r}") from None
    if not YEAR_MIN <= year <= YEAR_MAX:
        raise argparse.ArgumentTypeError(f"a year from {YEAR_MIN} to {YEAR_MAX}, not {year}")
    return year
