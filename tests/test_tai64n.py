"""TAI64N codec against the real daemontools tai64n and tai64nlocal."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import require_binary
from hypothesis import given
from hypothesis import strategies as st

from shipper import tai64n


def test_known_labels_from_real_logs():
    # alotofwe/qmail_log README: @4000000038c3eeb027f41c7c is 2000-03-06T17:45:10Z
    secs, nanos = tai64n.decode("@4000000038c3eeb027f41c7c")
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) == "2000-03-06T17:45:10"
    # fluent tai64n_parser README: 2014-02-12 13:50:11.848839500 +09:00
    secs, nanos = tai64n.decode("@4000000052fafd8d3298434c")
    assert secs == 1392180611 and nanos == 848839500
    # indimail tai64nunix.8: @400000003d6387281f8fa4ac -> 1029932830.529507500
    assert tai64n.decode_ns("@400000003d6387281f8fa4ac") == 1029932830_529507500


def test_encode_is_inverse_and_lowercase():
    label = tai64n.encode(1392180611, 848839500)
    assert label == "@4000000052fafd8d3298434c"
    assert tai64n.decode(label) == (1392180611, 848839500)


def test_true_tai_mode_is_27_seconds_after_2017():
    unix = 1700000000
    assert tai64n.leaps_at(unix) == 27
    tai_label = tai64n.encode(unix, 0, leap=True)
    dt_label = tai64n.encode(unix, 0)
    assert int(tai_label[1:17], 16) - int(dt_label[1:17], 16) == 27
    assert tai64n.decode(tai_label, leap=True) == (unix, 0)
    # Decoding an s6 label the daemontools way is 27 s late: the bug we avoid.
    assert tai64n.decode(tai_label)[0] == unix + 27


@given(st.integers(0, 4_000_000_000), st.integers(0, 999_999_999), st.booleans())
def test_roundtrip(unix, nanos, leap):
    assert tai64n.decode(tai64n.encode(unix, nanos, leap), leap) == (unix, nanos)


@pytest.mark.parametrize("bad", ["", "@", "@4000", "@40000000zzzzzzzz00000000", "4000000052fafd8d3298434c0",
                                 "@4000000052fafd8dffffffff"])
def test_bad_labels_raise_label_error(bad):
    with pytest.raises(tai64n.LabelError):
        tai64n.decode(bad)


def test_real_tai64n_stamps_decode_to_now():
    exe = require_binary("tai64n")
    before = time.time()
    out = subprocess.run([exe], input=b"a\nb\n", capture_output=True, check=True, timeout=10).stdout
    after = time.time()
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        label, text = line.decode().split(" ", 1)
        secs, nanos = tai64n.decode(label)
        # daemontools writes nano = 1000*usec + 500
        assert nanos % 1000 == 500
        t = secs + nanos / 1e9
        assert before - 0.01 <= t <= after + 0.01, (label, before, t, after)
        assert tai64n.encode(secs, nanos) == label


def test_real_tai64nlocal_agrees_with_decode():
    exe = require_binary("tai64nlocal")
    rng = __import__("random").Random(42)
    cases = [(rng.randrange(0, 2_000_000_000), rng.randrange(0, 1_000_000) * 1000 + 500) for _ in range(200)]
    cases += [(0, 0), (1483228799, 999999500), (1483228800, 500)]
    labels = [tai64n.encode(s, n) for s, n in cases]
    out = subprocess.run([exe], input=("\n".join(f"{lb} x" for lb in labels) + "\n").encode(),
                         capture_output=True, check=True, timeout=10, env={**os.environ, "TZ": "UTC"}).stdout
    got = out.decode().splitlines()
    assert len(got) == len(cases)
    for (secs, nanos), line in zip(cases, got, strict=True):
        stamp = line[:29]
        want = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}"
        assert stamp == want, (secs, nanos, line)


# ------------------------------------------------ mutation audit (session 22): edges

NTP_TO_UNIX = 2_208_988_800  # leap-seconds.list counts from 1900-01-01


def _leap_list() -> list[int]:
    """Unix times at which TAI-UTC grew, from tzdata's copy of the IERS leap-seconds.list
    (the first entry is the initial 10 s of 1972, not a leap second)."""
    path = Path("/usr/share/zoneinfo/leap-seconds.list")
    if not path.exists():
        pytest.fail(f"{path} missing: install tzdata")
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert [int(r[1]) for r in rows] == list(range(10, 10 + len(rows)))
    return [int(r[0]) - NTP_TO_UNIX for r in rows[1:]]


def test_leap_table_is_the_iers_list():
    leaps = _leap_list()
    assert tuple(leaps) == tai64n.LEAP_SECONDS
    for i, t in enumerate(leaps):
        assert tai64n.leaps_at(t - 1) == i and tai64n.leaps_at(t) == i + 1, t


def test_true_tai_around_every_leap_second_agrees_with_s6_tai64nlocal():
    """s6-log's labels are true TAI: each second either side of all 27 leap seconds,
    and the leap second itself, decoded with leap=True against skalibs' own reading
    (s6-tai64nlocal prints the leap second as 23:59:60; unix time has none, so we give
    the day's last instant 23:59:59.999999999 and say it was a leap second)."""
    exe = require_binary("s6-tai64nlocal")
    cases = []  # (label, civil second of s6-tai64nlocal, our unix, our nanos, leap second?)
    for i, t in enumerate(_leap_list()):
        day = time.strftime("%Y-%m-%d", time.gmtime(t - 1))
        nxt = time.strftime("%Y-%m-%d", time.gmtime(t))
        tai = tai64n.DAEMONTOOLS_OFFSET + t - 1 + i  # 23:59:59 of the leap day on the TAI scale
        cases += [(f"@{tai:016x}{123456789:08x}", f"{day} 23:59:59", t - 1, 123456789, False),
                  (f"@{tai + 1:016x}{987654321:08x}", f"{day} 23:59:60", t - 1, 999_999_999, True),
                  (f"@{tai + 2:016x}{500:08x}", f"{nxt} 00:00:00", t, 500, False)]
    out = subprocess.run([exe], input="".join(f"{c[0]} x\n" for c in cases).encode(), capture_output=True,
                         check=True, timeout=10, env={**os.environ, "TZ": "UTC"}).stdout.decode().splitlines()
    assert len(out) == len(cases)
    for (label, civil, unix, nanos, is_leap), line in zip(cases, out, strict=True):
        assert line.startswith(civil + f".{int(label[17:], 16):09d}"), (label, line)
        assert tai64n.decode(label, leap=True) == (unix, nanos), (label, line)
        secs = int(label[1:17], 16) - tai64n.DAEMONTOOLS_OFFSET
        assert tai64n.tai_to_unix(secs, int(label[17:], 16)) == (unix, nanos, is_leap), label
        if not is_leap:  # a leap second has no unix time to encode back from
            assert tai64n.encode(unix, nanos, leap=True) == label


def test_real_s6_tai64n_stamps_decode_to_now_in_true_tai_mode():
    exe = require_binary("s6-tai64n")
    before = time.time()
    out = subprocess.run([exe], input=b"a\n", capture_output=True, check=True, timeout=10).stdout
    after = time.time()
    label = out.decode().split(" ", 1)[0]
    secs, nanos = tai64n.decode(label, leap=True)
    assert before - 0.01 <= secs + nanos / 1e9 <= after + 0.01, (label, before, after)
    assert tai64n.decode(label)[0] - secs == 27  # read the daemontools way: 27 s late


def test_decode_takes_bytes_and_reads_only_the_label():
    label = "@4000000052fafd8d3298434c"
    want = (1392180611, 848839500)
    assert tai64n.decode(label.encode()) == want
    assert tai64n.decode(bytearray(label.encode())) == want
    # what follows the 24 hex digits is the line's text, whatever it starts with
    for rest in (" qmail: 1392180611.848839 status: local 0/10", ":x", "z", "\t", "\xe9"):
        assert tai64n.decode(label + rest) == want, rest
        assert tai64n.decode((label + rest).encode()) == want, rest
    assert tai64n.decode_ns(label + " x") == 1392180611_848839500


def test_nanoseconds_bound_is_exactly_one_second():
    assert tai64n.decode("@4000000052fafd8d3b9ac9ff") == (1392180611, 999_999_999)
    with pytest.raises(tai64n.LabelError) as e:
        tai64n.decode("@4000000052fafd8d3b9aca00 text")
    assert "'@4000000052fafd8d3b9aca00'" in str(e.value)  # the label, not the text after it
    assert tai64n.encode(1392180611, 999_999_999) == "@4000000052fafd8d3b9ac9ff"
    for bad in (-1, 1_000_000_000):
        with pytest.raises(ValueError):
            tai64n.encode(1392180611, bad)
    assert tai64n.encode(1392180611) == "@4000000052fafd8d00000000"  # nanos default 0


def test_encode_range_is_the_64_bit_label():
    lo = -tai64n.DAEMONTOOLS_OFFSET
    hi = (1 << 64) - 1 - tai64n.DAEMONTOOLS_OFFSET
    assert tai64n.encode(lo) == "@" + "0" * 24
    assert tai64n.encode(hi, 1) == "@" + "f" * 16 + "00000001"
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ValueError):
            tai64n.encode(bad)
    with pytest.raises(ValueError):  # true TAI adds 27 s: the last 27 seconds do not fit
        tai64n.encode(hi - 26, 0, leap=True)
    assert tai64n.encode(hi - 27, 0, leap=True) == "@" + "f" * 16 + "00000000"


def test_encode_ns_splits_nanoseconds():
    assert tai64n.encode_ns(1392180611_848839500) == "@4000000052fafd8d3298434c"
    assert tai64n.encode_ns(-1) == tai64n.encode(-1, 999_999_999)  # floor, not truncation
    assert tai64n.encode_ns(1700000000_000000500, leap=True) == tai64n.encode(1700000000, 500, leap=True)


def test_label_range_is_what_signed_64_bit_nanoseconds_hold():
    assert tai64n.DAEMONTOOLS_OFFSET == 4611686018427387914  # daemontools tai.h
    assert tai64n.LABEL_SECS_MIN == tai64n.DAEMONTOOLS_OFFSET  # 1970-01-01T00:00:00Z
    last = tai64n.LABEL_SECS_END - 1 - tai64n.DAEMONTOOLS_OFFSET  # the last second taken
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(last)) == "2262-04-11T23:47:15"
    # every nanosecond of it fits; the next second's do not all (2**63 ns is 23:47:16.854775808)
    assert last * 1_000_000_000 + 999_999_999 < 1 << 63 <= (last + 1) * 1_000_000_000 + 999_999_999
