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
