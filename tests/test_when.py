"""Command-line times (shipper.when): one reading for replay, track and stats."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from conftest import BERLIN

from shipper.when import parse_time


def test_forms() -> None:
    assert parse_time("2014-02-12T04:50:11Z") == 1392180611 * 10**9
    assert parse_time("2014-02-12T13:50:11.5+09:00") == 1392180611_500000000
    assert parse_time("2024-01-02T00:00:01.5+01:00") == (1704153601 - 3600) * 10**9 + 500_000_000
    assert parse_time("1392180611") == 1392180611 * 10**9
    # unix seconds with a fraction, to the nanosecond (a record's time_unix_ns / 1e9):
    # through a float, --until 1764753398.0040005 let the line of that time in
    assert parse_time("1764753398.0040005") == 1764753398_004000500
    assert parse_time("1764753398.000000001") == 1764753398_000000001
    assert parse_time("@4000000052fafd8d3298434c") == 1392180611_848839500
    assert parse_time("2h", now=10000.0) == (10000 - 7200) * 10**9
    assert parse_time(" 90s ", now=100.0) == 10 * 10**9
    assert parse_time("2024-02-29Z") == 1709164800 * 10**9
    # a day the month does not have, an offset beyond 23:59: refused, not moved on
    for bad in ("yesterday", "2024-13-01", "2024-01-01T25:00", "@40000000", "-5", "2026-02-29",
                "2026-04-31T10:00Z", "2026-01-01T00:00+25:00", "2026-01-01T00:00-01:60"):
        with pytest.raises(ValueError, match="not a time"):
            parse_time(bad)


def test_a_time_without_a_zone_is_local_time_as_tai64nlocal_shows_it(berlin) -> None:
    # 2024-01-02 00:00 in Berlin is 2024-01-01 23:00 UTC; in July, 22:00 UTC
    assert parse_time("2024-01-02") == (1704153600 - 3600) * 10**9
    assert parse_time("2024-07-02 00:00") == (1719878400 - 7200) * 10**9
    assert parse_time("2024-01-02Z") == 1704153600 * 10**9


def test_track_and_replay_read_since_alike(tmp_path) -> None:
    """replay took a zoneless time as local and track as UTC, and replay took no age:
    the same --since picked different lines in the two commands."""
    log = tmp_path / "current"
    # two lines, 2024-01-01 22:30 and 23:30 UTC: 23:30 and 00:30 in Berlin
    log.write_text("@4000000065933cf20000000a new msg 1\n"
                   "@4000000065933cf20000000b info msg 1: bytes 10 from <a@b> qp 1 uid 0\n"
                   "@4000000065933cf20000000c end msg 1\n"
                   "@4000000065934b020000000a new msg 2\n"
                   "@4000000065934b020000000b info msg 2: bytes 10 from <a@b> qp 2 uid 0\n"
                   "@4000000065934b020000000c end msg 2\n")
    env = {"TZ": BERLIN, "PATH": "/usr/bin:/bin"}
    since = "2024-01-02 00:00"  # Berlin: between the two mails

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shipper", *argv], capture_output=True,
                              text=True, timeout=60, env=env, cwd=str(tmp_path))

    r = run("replay", str(log), "--output", "-", "--since", since)
    assert r.returncode == 0, r.stderr
    assert {orjson.loads(ln)["msg"] for ln in r.stdout.splitlines()} == {2}
    r = run("track", str(log), "--since", since, "--json")
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(ln)["msg"] for ln in r.stdout.splitlines()] == [2]
    r = run("replay", str(log), "--output", "-", "--since", "3650000d", "--dry-run")
    assert r.returncode == 0 and "would send 6 records" in r.stderr


# ------------------------------------------------ mutation audit (session 22): edges


def test_every_unit_of_an_age() -> None:
    for text, secs in (("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1w", 604800), ("1.5h", 5400)):
        assert parse_time(text, now=1_000_000.0) == (1_000_000 - secs) * 10**9, text


def test_offsets_with_minutes() -> None:
    # India (+05:30), Newfoundland (-03:30), Nepal without the colon (+0545): the same instant
    utc = 1392180611 * 10**9  # 2014-02-12T04:50:11Z
    for text in ("2014-02-12T10:20:11+05:30", "2014-02-12T01:20:11-03:30", "2014-02-12T10:35:11+0545",
                 "2014-02-13T04:49:11+23:59", "2014-02-11T04:51:11-23:59"):
        assert parse_time(text) == utc, text


def test_each_field_at_its_bounds() -> None:
    import calendar

    for y, mo, d, h, mi, s in ((2024, 1, 1, 0, 0, 0), (2024, 12, 31, 23, 59, 59), (2023, 2, 28, 12, 0, 0),
                               (2024, 4, 30, 12, 0, 0), (2016, 12, 31, 23, 59, 60)):  # 60: a leap second
        text = f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z"
        assert parse_time(text) == calendar.timegm((y, mo, d, h, mi, s)) * 10**9, text
    for bad in ("2024-00-10Z", "2024-03-00Z", "2024-13-01Z", "2024-04-31Z", "2023-02-29Z",
                "2024-01-01T24:00Z", "2024-01-01T23:60Z", "2024-01-01T23:59:61Z",
                "2024-01-01T00:00+24:00", "2024-01-01T00:00-24:00", "2024-01-01T00:00+00:60"):
        with pytest.raises(ValueError, match="not a time"):
            parse_time(bad)
    with pytest.raises(ValueError, match="not a TAI64N label"):  # says why
        parse_time("@4000000052fafd8d")


def test_year_arg_bounds() -> None:
    import argparse

    from shipper.when import year_arg

    assert (year_arg("1970"), year_arg(" 2024 "), year_arg("9999")) == (1970, 2024, 9999)
    for bad, why in (("1969", "a year from 1970 to 9999, not 1969"), ("10000", "a year from 1970 to 9999, not 10000"),
                     ("20x4", "not a year: '20x4'"), ("", "not a year: ''")):
        with pytest.raises(argparse.ArgumentTypeError) as e:
            year_arg(bad)
        assert str(e.value) == why


def test_the_hours_a_dst_change_skips_and_repeats(berlin) -> None:
    """Berlin skips 02:00-03:00 on 2024-03-31: read as standard time (CET, 01:30Z), not
    as summer time; it repeats 02:00-03:00 on 2024-10-27: the first reading (CEST, 00:30Z)."""
    assert parse_time("2024-03-31 02:30") == 1711848600 * 10**9
    assert parse_time("2024-10-27 02:30") == 1729989000 * 10**9
