"""TAI64N labels: our own codec (pure, no I/O).

daemontools (multilog, tai64n) and runit (svlogd) write ``2**62 + 10 + unix``
seconds and no leap seconds; that is the default here ("daemontools" mode).
skalibs/s6-log write true TAI: ``2**62 + 10 + unix + leaps(unix)``; decode
those with ``leap=True`` or the 27 s difference shifts every event; a leap second
(23:59:60) then decodes to 23:59:59.999999999, as unix time has none.
daemontools/runit nanoseconds are ``1000 * usec + 500``; we keep them as they are.
"""

from __future__ import annotations

import re
from bisect import bisect_right

TAI64_BASE = 1 << 62
DAEMONTOOLS_OFFSET = TAI64_BASE + 10  # 4611686018427387914, daemontools tai.h
# Labels we take as times: 1970 .. 2262, what signed 64-bit nanoseconds hold (the
# time_unix_ns every SIEM column and JSON encoder takes). Anything else is a corrupt
# or foreign label: the line keeps its text, flagged bad_stamp, its time inferred.
LABEL_SECS_MIN = DAEMONTOOLS_OFFSET
LABEL_SECS_END = DAEMONTOOLS_OFFSET + (1 << 63) // 1_000_000_000
LABEL_LEN = 25  # '@' + 24 hex digits

# Unix times (UTC) at which TAI-UTC grew by one second after the initial 10 s
# of 1972-01-01. IERS Bulletin C: no leap second announced after 2017-01-01.
LEAP_SECONDS: tuple[int, ...] = (
    78796800, 94694400, 126230400, 157766400, 189302400, 220924800, 252460800,
    283996800, 315532800, 362793600, 394329600, 425865600, 489024000, 567993600,
    631152000, 662688000, 709948800, 741484800, 773020800, 820454400, 867715200,
    915148800, 1136073600, 1230768000, 1341100800, 1435708800, 1483228800,
)
# The same instants on the "unix + leaps" scale, for the inverse.
_LEAPS_SHIFTED: tuple[int, ...] = tuple(t + i + 1 for i, t in enumerate(LEAP_SECONDS))
# The leap seconds themselves (23:59:60 UTC) on that scale: the second before each
_LEAP_SECONDS_TAI = frozenset(t - 1 for t in _LEAPS_SHIFTED)

# Exactly 24 hex digits: multilog writes a blank after them, so a 25th hex digit
# means no label (a corrupt line), not a label and text starting with a digit
LABEL_RE = re.compile(r"@[0-9a-fA-F]{24}(?![0-9a-fA-F])")


class LabelError(ValueError):
    """Not a TAI64N label."""


def leaps_at(unix_seconds: int) -> int:
    """Leap seconds inserted since 1972 as of this UTC instant (TAI-UTC minus 10)."""
    return bisect_right(LEAP_SECONDS, unix_seconds)


def is_label(text: str) -> bool:
    return LABEL_RE.match(text) is not None


def decode(label: str | bytes, leap: bool = False) -> tuple[int, int]:
    """``@4000…`` → (unix seconds, nanoseconds). Raises LabelError."""
    if isinstance(label, bytes | bytearray):
        label = bytes(label).decode("ascii", "replace")
    if not is_label(label):
        raise LabelError(f"not a TAI64N label: {label[:LABEL_LEN]!r}")
    secs = int(label[1:17], 16)
    nanos = int(label[17:25], 16)
    if nanos > 999_999_999:
        raise LabelError(f"nanoseconds out of range in {label[:LABEL_LEN]!r}")
    unix = secs - DAEMONTOOLS_OFFSET
    if leap:
        unix, nanos, _ = tai_to_unix(unix, nanos)
    return unix, nanos


def leaps_before_tai(unix_plus_leaps: int) -> int:
    """Leap seconds to take off a true-TAI label's ``secs - 2**62 - 10``."""
    return bisect_right(_LEAPS_SHIFTED, unix_plus_leaps)


def tai_to_unix(unix_plus_leaps: int, nanos: int) -> tuple[int, int, bool]:
    """A true-TAI label's ``secs - 2**62 - 10`` and nanoseconds → (unix seconds,
    nanoseconds, whether it is a leap second). Unix time has no 23:59:60: a leap
    second is 23:59:59.999999999, the day's last instant, so that time never runs
    backwards (taking off the leaps alone made it 00:00:00 of the next day)."""
    if unix_plus_leaps in _LEAP_SECONDS_TAI:
        return unix_plus_leaps - leaps_before_tai(unix_plus_leaps) - 1, 999_999_999, True
    return unix_plus_leaps - leaps_before_tai(unix_plus_leaps), nanos, False


def decode_ns(label: str, leap: bool = False) -> int:
    """``@4000…`` → unix nanoseconds."""
    unix, nanos = decode(label, leap)
    return unix * 1_000_000_000 + nanos


def encode(unix_seconds: int, nanos: int = 0, leap: bool = False) -> str:
    """(unix seconds, nanoseconds) → ``@`` + 24 hex digits, as multilog writes it."""
    if not 0 <= nanos <= 999_999_999:
        raise ValueError("nanoseconds out of range")
    secs = unix_seconds + DAEMONTOOLS_OFFSET
    if leap:
        secs += leaps_at(unix_seconds)
    if not 0 <= secs < 1 << 64:
        raise ValueError("time out of TAI64 range")
    return f"@{secs:016x}{nanos:08x}"


def encode_ns(unix_ns: int, leap: bool = False) -> str:
    secs, nanos = divmod(unix_ns, 1_000_000_000)
    return encode(secs, nanos, leap)
