"""TAI64N codec against the real daemontools tai64n and tai64nlocal."""

from __future__ import annotations

import os
import subprocess
import time

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
