"""Time in the envelope and out of the encoders: the year of a BSD stamp, local times
around any zone's changes, leap seconds, UTC text under a leap-second ("right/") TZ,
float seconds (found by a black-box review of time handling)."""

from __future__ import annotations

import calendar
import datetime
import math
import os
import subprocess
import time
from contextlib import contextmanager
from fractions import Fraction
from zoneinfo import ZoneInfo

import orjson
import pytest
from conftest import require_binary, skip_outside_ci
from hypothesis import given
from hypothesis import strategies as st

from shipper import record, stamps, tai64n
from shipper.encode import http_body
from shipper.encode.gelf import gelf_message, timestamp_seconds
from shipper.encode.rfc5424 import Rfc3164Encoder, Rfc5424Encoder
from shipper.parse import LineParser, ParseOptions
from shipper.record import F_BAD_STAMP, F_LEAP_SECOND, F_TIME_INFERRED, utc_civil
from shipper.stamps import split_envelope

NS = 1_000_000_000
LEAP_END_2016 = 1483228799  # 2016-12-31T23:59:59Z, the second before the last leap second


@contextmanager
def zone(name: str):
    """The process's TZ set to ``name`` (and the local-time caches forgotten) for a while."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    stamps.clear_local_caches()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
        stamps.clear_local_caches()


def utc(*fields: int) -> int:
    return calendar.timegm((*fields, 0, 0, 0)[:9])


def at(tz: str, *fields: int) -> int:
    """Unix ns of a wall-clock time in ``tz`` (zoneinfo: not the code under test)."""
    return int(datetime.datetime(*fields, tzinfo=ZoneInfo(tz)).timestamp()) * NS


# ------------------------------------------------------------------- BSD year


@pytest.mark.parametrize(("tz", "now", "line", "want"), [
    # Berlin is in May (00:30 local) while UTC is still in April: the line of 00:29 is
    # this year's, not last year's (gmtime's date made it a day ahead)
    ("Europe/Berlin", (2026, 5, 1, 0, 30), "May  1 00:29:00", (2026, 4, 30, 22, 29)),
    ("Europe/Berlin", (2027, 1, 1, 0, 30), "Jan  1 00:29:00", (2026, 12, 31, 23, 29)),
    ("Pacific/Auckland", (2027, 1, 1, 0, 30), "Jan  1 00:29:00", (2026, 12, 31, 11, 29)),
    # a clock 15 s fast, at a month's end and at the year's: a day's tolerance is a day,
    # not "the day of the month + 1"
    ("UTC", (2026, 4, 30, 23, 59, 50), "May  1 00:00:05", (2026, 5, 1, 0, 0, 5)),
    ("UTC", (2026, 12, 31, 23, 59, 50), "Jan  1 00:00:05", (2027, 1, 1, 0, 0, 5)),
    # more than a day ahead: last year's (a December log read in January)
    ("UTC", (2026, 4, 30, 12, 0), "May  2 00:00:00", (2025, 5, 2, 0, 0)),
    ("Europe/Berlin", (2027, 1, 2, 12, 0), "Dec 31 23:00:00", (2026, 12, 31, 22, 0)),
])
def test_bsd_year_is_guessed_from_today_in_the_zone_the_stamp_is_read_in(tz, now, line, want):
    with zone(tz):
        now_ns = at(tz, *now)
        env = split_envelope(f"{line} mx qmail: x", now_ns=now_ns)
        assert env.time_ns == utc(*want) * NS
        # the parser hands its now (the time it read the line) to the guess
        rec = LineParser(source="-").parse(f"{line} mx qmail: x".encode(), 0, now_ns)
        assert rec.time_ns == utc(*want) * NS


def test_bsd_year_read_in_utc_takes_todays_utc_date():
    # local_tz off: the stamp is UTC, so is today (Berlin already has May 1)
    with zone("Europe/Berlin"):
        now_ns = utc(2026, 4, 30, 22, 30) * NS
        env = split_envelope("May  1 12:00:00 mx qmail: x", local_tz=False, now_ns=now_ns)
        assert env.time_ns == utc(2026, 5, 1, 12, 0) * NS
        env = split_envelope("May  2 12:00:00 mx qmail: x", local_tz=False, now_ns=now_ns)
        assert env.time_ns == utc(2025, 5, 2, 12, 0) * NS


def test_feb_29_after_the_turn_of_a_given_year_is_the_next_years():
    """--year 2023: Dec 30, then Feb 29 (none in 2023) is 2024's, as the Mar 1 after it;
    it was flagged bad_stamp, the turn of year looked for only for a time that decoded."""
    p = LineParser(ParseOptions(syslog_year=2023, local_tz=False))
    recs = [p.parse(f"{d} mx qmail: x".encode()) for d in
            ("Dec 30 10:00:00", "Feb 29 00:00:02", "Mar  1 00:00:02")]
    assert [r.time_ns for r in recs] == [utc(2023, 12, 30, 10, 0) * NS,
                                         utc(2024, 2, 29, 0, 0, 2) * NS,
                                         utc(2024, 3, 1, 0, 0, 2) * NS]
    assert [r.flags for r in recs] == [None, None, None]
    # no such day in the year of the line before nor the next: a bad stamp, as it was
    p = LineParser(ParseOptions(syslog_year=2025, local_tz=False))
    p.parse(b"Jan  5 10:00:00 mx qmail: x")
    rec = p.parse(b"Feb 29 00:00:02 mx qmail: x")
    assert rec.flags == [F_BAD_STAMP, F_TIME_INFERRED] and rec.time_ns == utc(2025, 1, 5, 10, 0) * NS
    assert p.syslog_year == 2025


# ---------------------------------------------------------- UTC under right/


RIGHT_UTC = os.path.exists("/usr/share/zoneinfo/right/UTC")
KNOWN = [
    (0, (1970, 1, 1, 0, 0, 0)),
    (-1, (1969, 12, 31, 23, 59, 59)),
    (951782400, (2000, 2, 29, 0, 0, 0)),
    (LEAP_END_2016, (2016, 12, 31, 23, 59, 59)),
    (4102444799, (2099, 12, 31, 23, 59, 59)),
    (253402300799, (9999, 12, 31, 23, 59, 59)),
    (-62135596800, (1, 1, 1, 0, 0, 0)),
]


@pytest.mark.parametrize(("secs", "civil"), KNOWN)
def test_utc_civil_known_values(secs, civil):
    assert utc_civil(secs) == civil
    y, mo, d, h, mi, sec = civil
    assert record.rfc3339_head(secs) == f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}"


def test_utc_civil_out_of_range():
    assert utc_civil(253402300800) is None and utc_civil(-62135596801) is None
    record._SEC_CACHE.clear()
    assert record.rfc3339_head(253402300800) == "9999-12-31T23:59:59"
    assert record.rfc3339_head(-62135596801) == "0000-01-01T00:00:00"


@given(st.integers(min_value=-62135596800, max_value=253402300799))
def test_utc_civil_is_the_proleptic_calendar(secs):
    dt = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=secs)
    assert utc_civil(secs) == (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


def test_utc_text_ignores_a_leap_second_zone():
    """Under TZ=right/UTC glibc's gmtime takes the 27 leap seconds off: every time text
    (the record's, RFC 5424's, RFC 3164's, GELF's _time) came out 27 s early."""
    if not RIGHT_UTC:  # Debian's tzdata has it (trixie's tzdata-legacy): CI must run this
        skip_outside_ci("no /usr/share/zoneinfo/right/UTC: install tzdata's right/ zones")
    label = tai64n.encode(LEAP_END_2016)
    with zone("right/UTC"):
        record._SEC_CACHE.clear()
        rec = LineParser(source="-").parse(f"{label} x".encode()).to_dict()
        assert rec["time"] == "2016-12-31T23:59:59.000000000Z"
        assert rec["time_unix_ns"] == LEAP_END_2016 * NS
        record._SEC_CACHE.clear()
        batch = LineParser(source="-").parse_batch_dicts([f"{label} status: x".encode()])
        assert batch[0]["time"] == "2016-12-31T23:59:59.000000000Z"
        assert record.rfc3339_ns(LEAP_END_2016 * NS + 5) == "2016-12-31T23:59:59.000000005Z"
        assert Rfc5424Encoder().encode_texts([rec])[0].split(" ")[1] == "2016-12-31T23:59:59.000000Z"
        assert ">Dec 31 23:59:59 " in Rfc3164Encoder(local_time=False).encode_texts([rec])[0]
        assert ">Dec 31 23:59:59 " in Rfc3164Encoder(local_time=True).encode_texts([rec])[0]
        assert gelf_message(rec)["_time"] == "2016-12-31T23:59:59.000000000Z"
    record._SEC_CACHE.clear()  # nothing made under that zone kept for other tests


# ------------------------------------------------- local times, any zone's changes


def _transitions(tz: str, year: int) -> list[int]:
    """Unix seconds at which ``tz``'s offset changes in ``year`` (per quarter hour)."""
    z = ZoneInfo(tz)
    start = utc(year, 1, 1, 0, 0)
    out, prev = [], None
    for u in range(start, start + 366 * 86400, 900):
        off = datetime.datetime.fromtimestamp(u, z).utcoffset()
        if prev is not None and off != prev:
            out.append(u)
        prev = off
    return out


@pytest.mark.parametrize("tz", ["Australia/Lord_Howe", "Pacific/Chatham", "Europe/Berlin",
                                "America/St_Johns", "Antarctica/Troll", "Asia/Kolkata"])
def test_tai64nlocal_output_round_trips_in_every_zone(tz):
    """Lord Howe changes by 30 min at 2:00, Chatham at 2:45 (45-min offsets): an hour's
    offset cached from its hh:00, and a fold looked for only at ±3600, gave 02:45 Lord
    Howe time on 2026-10-04 as 16:15Z (it is 15:45Z). Labels every 7 min 13 s through
    each change of 2026, through the real tai64nlocal."""
    tai64nlocal = require_binary("tai64nlocal")
    secs = [u for t in _transitions(tz, 2026)[:4] for u in range(t - 3 * 3600, t + 3 * 3600, 433)]
    if not secs:  # a zone without changes: a day of it
        secs = list(range(utc(2026, 3, 29, 0, 0), utc(2026, 3, 30, 0, 0), 433))
    labels = "".join(f"{tai64n.encode(u, 123456789)} line {u}\n" for u in secs)
    out = subprocess.run([tai64nlocal], input=labels.encode(), capture_output=True, check=True,
                         timeout=10, env={**os.environ, "TZ": tz}).stdout.decode().splitlines()
    with zone(tz):
        p = LineParser(source="-")
        got = [p.parse(ln.encode()).time_ns for ln in out]
    assert got == [u * NS + 123456789 for u in secs]


def test_local_readings_at_half_hour_and_45_minute_changes():
    with zone("Australia/Lord_Howe"):
        # spring: 02:00 +10:30 → 02:30 +11
        assert stamps.local_readings(2026, 10, 4, 2, 45, 0) == (utc(2026, 10, 3, 15, 45), 0)
        assert stamps.local_readings(2026, 10, 4, 1, 59, 59) == (utc(2026, 10, 3, 15, 29, 59), 0)
        with pytest.raises(stamps.NoSuchTime):
            stamps.local_readings(2026, 10, 4, 2, 15, 0)
        # autumn: 02:00 +11 → 01:30 +10:30: 01:30-01:59 twice, half an hour apart; 01:15 once
        assert stamps.local_readings(2026, 4, 5, 1, 45, 0) == (utc(2026, 4, 4, 14, 45), 1800)
        assert stamps.local_readings(2026, 4, 5, 1, 15, 0) == (utc(2026, 4, 4, 14, 15), 0)
    with zone("Pacific/Chatham"):
        # spring: 02:45 +12:45 → 03:45 +13:45
        assert stamps.local_readings(2026, 9, 27, 2, 30, 0) == (utc(2026, 9, 26, 13, 45), 0)
        with pytest.raises(stamps.NoSuchTime):
            stamps.local_readings(2026, 9, 27, 3, 0, 0)
        assert stamps.local_readings(2026, 9, 27, 3, 50, 0) == (utc(2026, 9, 26, 14, 5), 0)


def test_a_local_time_that_cannot_exist_is_a_bad_stamp():
    """Berlin skips 02:00-02:59 on 2026-03-29: such a stamp was taken as some other time,
    unflagged. Now a bad stamp (as Feb 29 of a year without one); a BSD header keeps
    its host and tag."""
    with zone("Europe/Berlin"):
        env = split_envelope("2026-03-29 02:30:00.000000000 delivery 1: success: x/")
        assert (env.time_ns, env.bad_stamp) == (None, True)
        env = split_envelope("Mar 29 02:30:00 mx qmail-send[5]: x", year=2026)
        assert (env.time_ns, env.bad_stamp, env.host, env.tag, env.pid, env.text) == (
            None, True, "mx", "qmail-send", 5, "x")
        env = split_envelope("2026-03-29 03:30:00.000000000 x")
        assert (env.time_ns, env.bad_stamp) == (utc(2026, 3, 29, 1, 30) * NS, False)


# ----------------------------------------------------------------- leap seconds


def test_a_true_tai_leap_second_is_the_last_instant_of_its_day():
    """s6-log's label of 2016-12-31T23:59:60.5 came out 00:00:00.5 of the next day: time
    ran backwards to the line after it."""
    before = tai64n.encode(LEAP_END_2016, 500_000_000, leap=True)
    leap = f"@{int(before[1:17], 16) + 1:016x}{before[17:]}"
    after = tai64n.encode(LEAP_END_2016 + 1, 100_000_000, leap=True)
    assert tai64n.decode(leap, leap=True) == (LEAP_END_2016, 999_999_999)
    for lines in ([before, leap, after], [f"{label} 2016-12-31 23:59:60.500000000  x"
                                          for label in (leap,)]):
        p = LineParser(ParseOptions(tai_leap=True), source="-")
        recs = [p.parse(f"{ln} x".encode()) for ln in lines]
        times = [r.time_ns for r in recs]
        assert times == sorted(times)
        assert recs[1 if len(recs) > 1 else 0].time_ns == LEAP_END_2016 * NS + 999_999_999
        assert [F_LEAP_SECOND in (r.flags or ()) for r in recs] == (
            [False, True, False] if len(recs) > 1 else [True])
    # s6-log's t and T together: true TAI without --tai too
    rec = LineParser(source="-").parse(f"{leap} 2016-12-31 23:59:60.500000000  x".encode())
    assert (rec.time_ns, rec.time_source, rec.flags, rec.message) == (
        LEAP_END_2016 * NS + 999_999_999, "tai64n_tai", [F_LEAP_SECOND], "x")


LEAP_NS = LEAP_END_2016 * NS + 999_999_999


@pytest.mark.parametrize(("tz", "line"), [
    ("UTC", "2016-12-31 23:59:60.999999999 x"),  # s6-tai64nlocal
    ("Europe/Berlin", "2017-01-01 00:59:60.500000000 x"),  # its local time
    ("UTC", "2016-12-31_23:59:60.50000 x"),  # svlogd
    ("UTC", "2016-12-31T23:59:60.5Z mx qmail: x"),  # RFC 3339
    ("UTC", "2017-01-01T00:59:60.5+01:00 mx qmail: x"),
    ("UTC", "<22>1 2016-12-31T23:59:60.5Z mx qmail - - - x"),  # RFC 5424
    ("UTC", "Dec 31 23:59:60 mx qmail: x"),  # BSD, its year given
    ("Europe/Berlin", "Jan  1 00:59:60 mx qmail: x"),
    ("UTC", '{"log":"x\\n","stream":"stdout","time":"2016-12-31T23:59:60.5Z"}'),  # Docker
])
def test_second_60_at_the_end_of_a_utc_day_is_a_leap_second(tz, line):
    with zone(tz):
        year = 2017 if "Jan" in line else 2016
        env = split_envelope(line, year=year)
        assert (env.time_ns, env.leap_second, env.bad_stamp) == (LEAP_NS, True, False)
        p = LineParser(ParseOptions(syslog_year=year), source="-")
        rec = p.parse(line.encode())
        assert rec.time_ns == LEAP_NS and rec.flags == [F_LEAP_SECOND]
        assert rec.to_dict()["time"] == "2016-12-31T23:59:59.999999999Z"
        # the next second is later
        assert p.parse(tai64n.encode(LEAP_END_2016 + 1).encode() + b" x").time_ns > LEAP_NS


@pytest.mark.parametrize("line", [
    "2026-11-30T12:34:60Z mx qmail: x",
    "2016-12-31T23:59:60.5+01:00 mx qmail: x",  # 22:59:60 UTC
    "2026-11-30 12:34:60.000000000 x",
    "2016-12-31_23:58:60.00000 x",
    "Nov 30 12:34:60 mx qmail: x",
])
def test_second_60_elsewhere_is_a_bad_stamp(line):
    with zone("UTC"):
        env = split_envelope(line, year=2026)
        assert env.time_ns is None and env.bad_stamp and not env.leap_second


# -------------------------------------------------------------- float seconds


def test_float_seconds_never_reach_the_next_second():
    """ns / 1e9 made 2016-12-31T23:59:59.999999999Z 1483228800.0: the next second, the
    next year (GELF's timestamp, Splunk HEC's time)."""
    t = LEAP_END_2016 * NS + 999_999_999
    for f in (timestamp_seconds(t), gelf_message({"time_unix_ns": t})["timestamp"],
              orjson.loads(http_body.splunk_hec([{"time_unix_ns": t}]))["time"]):
        assert int(f) == LEAP_END_2016 and f >= LEAP_END_2016 + 0.999999
    assert timestamp_seconds(2**63 - 1) < 2**63 // NS + 1


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_float_seconds_are_correctly_rounded_within_the_second(t):
    f = timestamp_seconds(t)
    secs = t // NS
    assert secs <= f < secs + 1
    nearest = float(Fraction(t, NS))
    assert f == (nearest if nearest < secs + 1 else math.nextafter(secs + 1, 0))


def test_float_seconds_are_rounded_once():
    # 1514839863.7144405: / 1e9 rounded the int, then the quotient, 1 ulp off
    t = 1514839863714440500
    assert timestamp_seconds(t) == float(Fraction(t, NS)) != t / 1e9


# ------------------------------------------------------------------ TAI64N label


def test_a_label_with_25_hex_digits_is_no_label():
    """multilog writes "@", 24 hex digits and a blank: a 25th digit was taken into the
    message, the label's time believed."""
    line = "@4000000069300000000005dc0 delivery 1: success: x/"
    env = split_envelope(line)
    assert (env.time_ns, env.bad_stamp, env.text) == (None, True, line)
    rec = LineParser(source="-").parse(line.encode(), 0, 5 * NS)
    assert rec.flags == [F_BAD_STAMP, "time_ingest"] and rec.message == line
    assert not tai64n.is_label(line)
    assert tai64n.is_label(line[:25] + " x") and tai64n.is_label(line[:25])
