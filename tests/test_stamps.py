"""Line envelopes: every stamp form, against real tai64n/tai64nlocal where they exist."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import require_binary

from shipper import stamps, tai64n
from shipper.stamps import split_envelope

NS = 1_000_000_000


@pytest.fixture
def tz_utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    stamps._LOCAL_HOUR_CACHE.clear()
    yield
    monkeypatch.undo()
    time.tzset()
    stamps._LOCAL_HOUR_CACHE.clear()


def test_tai64n_label():
    env = split_envelope("@4000000052fafd8d3298434c new msg 3890")
    assert env.time_ns == 1392180611_848839500
    assert env.time_source == "tai64n"
    assert env.text == "new msg 3890"


def test_tai64n_true_tai():
    label = tai64n.encode(1700000000, 500, leap=True)
    env = split_envelope(f"{label} x", leap=True)
    assert env.time_ns == 1700000000 * NS + 500 and env.time_source == "tai64n_tai"


def test_tai64nlocal(tz_utc):
    env = split_envelope("2018-01-01 20:51:03.121918500 info msg 28857444: bytes 7816")
    assert env.time_ns == 1514839863_121918500
    assert env.time_source == "local"
    assert env.text == "info msg 28857444: bytes 7816"


def test_tai64nlocal_in_another_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    stamps._LOCAL_HOUR_CACHE.clear()
    try:
        env = split_envelope("2014-02-12 13:50:11.848839500 new msg 3890")
        assert env.time_ns == 1392180611_848839500  # fluent README: +09:00
    finally:
        monkeypatch.undo()
        time.tzset()
        stamps._LOCAL_HOUR_CACHE.clear()


def test_s6_log_T_has_two_spaces(tz_utc):
    env = split_envelope("2018-01-01 20:51:03.121918500  starting x")
    assert env.text == "starting x" and env.time_source == "local"


def test_s6_log_t_and_T(tz_utc):
    label = tai64n.encode(1514839863, 121918500, leap=True)
    env = split_envelope(f"{label} 2018-01-01 20:51:03.121918500  hello", leap=True)
    assert env.text == "hello" and env.time_ns == 1514839863_121918500


@pytest.mark.parametrize("sep", ["_", "T"])
def test_svlogd_tt(sep):
    env = split_envelope(f"2020-06-25{sep}07:50:42.58251 status: local 0/10 remote 0/20")
    assert env.time_source == "svlogd"
    assert env.time_ns == 1593071442_582510000
    assert env.text == "status: local 0/10 remote 0/20"


def test_accustamp_and_plesk_double_dot():
    env = split_envelope("1054189746.123136 new msg 161214")
    assert (env.time_ns, env.time_source, env.text) == (1054189746_123136000, "accustamp", "new msg 161214")
    env = split_envelope("1213077819..159866 end msg 5")
    assert env.time_ns == 1213077819_159866000 and env.text == "end msg 5"
    env = split_envelope("1029932830.529507500 delivery 4: success: did_1+0+0/")
    assert env.time_ns == 1029932830_529507500


def test_bsd_syslog_with_splogger_accustamp(tz_utc):
    env = split_envelope("Sep  6 07:33:33 sd6 qmail: 1157520813.485077 rblsmtpd: 198.51.100.77 pid 19597 x: 451 y",
                         year=2006)
    assert env.host == "sd6" and env.tag == "qmail"
    assert env.time_source == "accustamp" and env.time_ns == 1157520813_485077000
    assert env.text == "rblsmtpd: 198.51.100.77 pid 19597 x: 451 y"


def test_bsd_syslog_plain(tz_utc):
    env = split_envelope("Jun 30 15:13:33 ns1 rblsmtpd: relays.ordb.org blocked 193.111.120.47 x -", year=2005)
    assert env.time_source == "syslog"
    assert env.time_ns == 1120144413 * NS
    assert (env.host, env.tag, env.pid) == ("ns1", "rblsmtpd", None)
    env = split_envelope("Dec 17 09:00:01 mx postfix/smtpd[21842]: connect from a[1.2.3.4]", year=2020)
    assert (env.tag, env.pid, env.text) == ("postfix/smtpd", 21842, "connect from a[1.2.3.4]")


def test_rfc3339_syslog():
    env = split_envelope("2023-06-23T14:26:29.324152+02:00 pmg postfix/smtpd[1]: connect from x[1.2.3.4]")
    assert env.time_ns == 1687523189_324152000
    assert (env.host, env.tag, env.pid, env.time_source) == ("pmg", "postfix/smtpd", 1, "rfc3339")
    env = split_envelope("2023-06-23T12:26:29Z pmg postfix/qmgr[2]: removed")
    assert env.time_ns == 1687523189 * NS


def test_no_stamp_and_lookalikes():
    for line in ["tcpserver: status: 0/40", "4357 > -ERR authorization failed", "", "x", "12345"]:
        env = split_envelope(line)
        assert env.time_ns is None and env.text == line and not env.bad_stamp
    for line in ["2018-13-45 99:99:99.123456789 bad date", "2018-02-01_25:00:00.12345 bad hour"]:
        env = split_envelope(line)
        assert env.time_ns is None and env.text == line and env.bad_stamp
    env = split_envelope("@40000000zz bad label")
    assert env.time_ns is None and env.bad_stamp


def test_real_multilog_stamps(tmp_path):
    multilog = require_binary("multilog")
    d = tmp_path / "log"
    before = time.time_ns()
    subprocess.run([multilog, "t", str(d)], input=b"status: local 0/10 remote 0/20\nline two\n",
                   check=True, timeout=10)
    after = time.time_ns()
    lines = (d / "current").read_text().splitlines()
    assert len(lines) == 2
    envs = [split_envelope(ln) for ln in lines]
    assert [e.text for e in envs] == ["status: local 0/10 remote 0/20", "line two"]
    for e in envs:
        assert e.time_source == "tai64n"
        assert before - 10_000_000 <= e.time_ns <= after + 10_000_000


def test_real_tai64nlocal_output_parses_back(tz_utc):
    t64 = require_binary("tai64n")
    t64l = require_binary("tai64nlocal")
    stamped = subprocess.run([t64], input=b"hello\n", capture_output=True, check=True, timeout=10).stdout
    local = subprocess.run([t64l], input=stamped, capture_output=True, check=True, timeout=10,
                           env={**os.environ, "TZ": "UTC"}).stdout
    a = split_envelope(stamped.decode().rstrip("\n"))
    b = split_envelope(local.decode().rstrip("\n"))
    assert a.time_ns == b.time_ns and a.text == b.text == "hello"


def test_bsd_header_honours_utc_and_survives_a_damaged_tag():
    line = "Jun 23 14:26:29 mx postfix/smtpd[123]: connect from unknown[1.2.3.4]"
    env = split_envelope(line, year=2024, local_tz=False)
    assert env.time_ns == 1719152789 * 10**9 and env.host == "mx"
    # "vpopmail[18917:" lacks its "]": time, host, tag and pid are still read
    env = split_envelope("Jul  6 10:21:52 srv vpopmail[18917: vchkpw-smtp: (CRAM-MD5) login success u@d:1.2.3.4",
                         year=2024, local_tz=False)
    assert (env.time_ns, env.host, env.tag, env.pid) == (1720261312 * 10**9, "srv", "vpopmail", 18917)
    # an unreadable tag: the time and host all the same
    env = split_envelope("Jul  6 10:21:52 srv [garbled", year=2024, local_tz=False)
    assert (env.time_ns, env.host, env.text) == (1720261312 * 10**9, "srv", "[garbled")


@pytest.mark.parametrize("label", ["@4000000052fafd8dfffffffc", "@ffffffffffffffff00000000",
                                   "@000000000000000000000000"])
def test_label_with_no_believable_time_is_stripped_and_flagged(label):
    env = split_envelope(f"{label} new msg 3")
    assert (env.time_ns, env.text, env.bad_stamp) == (None, "new msg 3", True)
