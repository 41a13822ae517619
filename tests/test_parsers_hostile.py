"""Hostile lines: text a client or a remote server writes into a log line, made to cost
the parser quadratic time or to pick its IP fields. Each is a real line (from
tests/fixtures) with the sender's part forged, as a black-box tester found them.

No timing assertions: the long lines are sized (64,000 characters, under the 64 KiB line
cap) so the quadratic code took 15-40 s for each of them (a suite that no longer finishes), and the
linear code milliseconds; each test asserts the fields parsed from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipper.ipaddr import may_be_address
from shipper.parse import LineParser, ParseOptions

FIXTURES = Path(__file__).parent / "fixtures" / "samples"
N = 64_000  # characters of forged text in a long line (the line cap: 65,536 bytes)


def _real(name: str, start: str) -> str:
    """The line of fixture ``name`` that begins with ``start``."""
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    return next(ln for ln in lines if ln.startswith(start))


def _parse(line: str, opts: ParseOptions | None = None) -> dict[str, Any]:
    return LineParser(opts or ParseOptions(syslog_year=2024)).parse(line.encode(), 0).to_dict()


# qmail-send's delivery report quotes the remote's reply; a multi-line one is logged
# with "/" for its newlines, and a line ending in a space as "_/"
DELIVERY = "@4000000065e5a0c0062a4d26 delivery 1: failure: "


@pytest.mark.parametrize("first", ["550-hello_", "550-see_http://example.com/x"])
def test_a_long_multiline_reply_with_a_space_or_url_is_read_in_linear_time(first: str) -> None:
    reply = "550-a/" * (N // 6)
    raw = f"192.0.2.1_does_not_like_recipient./Remote_host_said:_{first}/{reply}550_bye/Giving_up_on_192.0.2.1./"
    rec = _parse(DELIVERY + raw)
    assert rec["event"] == "delivery" and rec["result"] == "failure"
    assert rec["relay_ip"] == "192.0.2.1" and rec["smtp_code"] == 550
    lines = rec["text"].split("\n")
    assert lines[1] == "Remote host said: " + first.replace("_", " ")
    assert lines[2:-2] == ["550-a"] * (N // 6) and lines[-2:] == ["550 bye", "Giving up on 192.0.2.1."]


def test_the_tls_patch_certificate_path_keeps_its_slashes() -> None:
    # the path is still found from where its names begin (the regex change's other side)
    line = _real("source_format_audit_lines.txt", "@4000000065e5a0c0062a4d1b delivery 41:")
    assert _parse(line)["text"] == ("TLS unable to verify server with control/tlshosts/mx.example.org.pem: "
                                    "certificate has expired; connected to 192.0.2.7.")
    reply = "a/" * (N // 2)
    rec = _parse(line.replace("_certificate_has_expired", "_certificate_has_expired/" + reply))
    assert rec["text"].startswith("TLS unable to verify server with control/tlshosts/mx.example.org.pem: ")
    assert rec["text"].count("\n") == N // 2 + 1


CHKUSER = _real("qmail_toaster_chkuser_simscan_public.txt", "@400000004ccc70a30b5515bc CHKUSER accepted sender")


def test_chkuser_helo_of_colons_is_read_in_linear_time() -> None:
    helo = ":" * N + "x"
    rec = _parse(CHKUSER.replace("<smtp156.strawberrynet.com:", f"<{helo}:"))
    assert (rec["helo"], rec["remote_host"], rec["remote_ip"]) == (helo, "unknown", "202.181.189.53")
    # the HELO and an IPv6 address still told apart (only the colons near the end tried)
    rec = _parse(CHKUSER.replace("<smtp156.strawberrynet.com:unknown:202.181.189.53>",
                                 "<[IPv6:2001:db8::5]:unknown:2001:db8::5>"))
    assert (rec["helo"], rec["remote_host"], rec["remote_ip"]) == ("[IPv6:2001:db8::5]", "unknown", "2001:db8::5")


SIMSCAN = _real("source_format_audit_lines.txt", "@4000000065e5a0c0062a4d23 simscan:[23456]:CLEAN")


def test_simscan_subject_of_colons_is_read_in_linear_time() -> None:
    subject = ":" * N + "x"
    rec = _parse(SIMSCAN.replace(":Hello there: a subject:", f":{subject}:"))
    assert (rec["subject"], rec["remote_ip"], rec["mail_from"], rec["rcpt_to"]) == (
        subject, "198.51.100.7", "alice@example.net", "bob@example.com")
    # an address with a zone: the address's colons are looked for before the "%"
    rec = _parse(SIMSCAN.replace(":198.51.100.7:", ":fe80::1%eth0:"))
    assert (rec["subject"], rec["remote_ip"]) == ("Hello there: a subject", "fe80::1%eth0")


def test_may_be_address_is_linear_and_capped() -> None:
    assert not may_be_address(":" * N + "x")
    assert not may_be_address("1" * N + ":")
    assert may_be_address("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")  # the longest
    assert not may_be_address("0ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")
    assert may_be_address("fe80::1%eth0") and not may_be_address("fe80::1%" + "e" * 65)


# vchkpw.c: "%s: invalid user/domain characters %s:%s", the login name as the client
# sent it, then the client's address: the address is what ends the line
BAD_NAME = _real("source_format_audit_lines.txt",
                 "Mar  7 13:41:12 myhost vpopmail[4711]: vchkpw-pop3: invalid user/domain characters al ice@")


def test_vchkpw_address_is_the_last_field_whatever_the_name() -> None:
    cases = [
        (":::198.51.100.7", "::", "198.51.100.7"),  # not the IPv4-compatible ::198.51.100.7
        ("ab:cd:198.51.100.7", "ab:cd", "198.51.100.7"),  # not "cd:198.51.100.7", no address
        ("x@a:1.2.3.4:198.51.100.7", "x@a:1.2.3.4", "198.51.100.7"),
        ("x" + ":" * N + "x:198.51.100.7", "x" + ":" * N + "x", "198.51.100.7"),
        # as before
        ("x@a:::ffff:198.51.100.7", "x@a", "198.51.100.7"),  # mapped: as the server wrote it
        ("x@a:2001:db8::5", "x@a", "2001:db8::5"),
        ("x@a:x.x.x.x", "x@a", None),  # no address: no remote_ip
    ]
    for name, user, ip in cases:
        rec = _parse(BAD_NAME.replace("al ice@example.com:198.51.100.7", name))
        assert rec["event"] == "pop_auth" and rec["reason"] == "invalid user/domain characters"
        assert (rec["auth_user"], rec.get("remote_ip")) == (user, ip)


def test_vchkpw_user_not_found_takes_the_address_from_the_end() -> None:
    line = _real("source_format_audit_lines.txt", "Mar  7 13:41:12 myhost vpopmail[4711]: vchkpw: setuid 89 failed")
    head = line[:line.index("vchkpw: ")]
    for text in ("vchkpw-pop3: vpopmail user not found x@:::198.51.100.7",
                 "vchkpw: vpopmail user not found x@:::198.51.100.7"):  # vpopmail 5.x's form
        rec = _parse(head + text)
        assert (rec["auth_user"], rec["remote_ip"]) == ("x@::", "198.51.100.7")


# impossible dates: mktime/timegm made them the next month's, silently; now a bad stamp,
# as a BSD Feb 29 of a year given with none already was
@pytest.mark.parametrize("bad", [
    "2024-02-30 10:00:00.000000000 new msg 1",
    "2024-04-31 10:00:00.000000000 new msg 2",
    "2023-02-29 10:00:00.000000000 new msg 3",
    "2024-02-31T10:00:00Z host qmail[1]: new msg 4",
    "Apr 31 10:00:00 host qmail[1]: new msg 7",
    "2024-01-01T00:00:00+99:99 host qmail[1]: new msg 8",
    "2024-01-01T00:00:00+24:00 host qmail[1]: new msg 9",
    "2024-01-01T00:00:00-05:60 host qmail[1]: new msg 10",
])
def test_impossible_dates_and_offsets_are_bad_stamps_with_the_time_inferred(bad: str) -> None:
    p = LineParser(ParseOptions(local_tz=False, syslog_year=2024))
    good = p.parse(b"2024-02-28 09:00:00.000000000 new msg 0", 0)
    assert not good.flags
    rec = p.parse(bad.encode(), 40).to_dict()
    assert "bad_stamp" in rec["flags"] and "time_inferred" in rec["flags"]
    assert rec["time"] == "2024-02-28T09:00:00.000000000Z"
    # the last day of a month and the widest offsets are still good
    for line, time in [
        ("2024-02-29 10:00:00.000000000 new msg 1", "2024-02-29T10:00:00.000000000Z"),
        ("2024-04-30T10:00:00Z host qmail[1]: new msg 2", "2024-04-30T10:00:00.000000000Z"),
        ("Jan 31 10:00:00 host qmail[1]: new msg 3", "2024-01-31T10:00:00.000000000Z"),
        ("2024-01-01T00:00:00+23:59 host qmail[1]: new msg 4", "2023-12-31T00:01:00.000000000Z"),
        ("2024-01-01T00:00:00-23:59 host qmail[1]: new msg 5", "2024-01-01T23:59:00.000000000Z"),
    ]:
        got = p.parse(line.encode(), 80).to_dict()
        assert not got["flags"] and got["time"] == time


POSTFIX_HEAD = _real("ossec_docs_postfix.txt", "Jan 24 06:32:47 mframe1 postfix/smtp[8377]: ").split("fatal:")[0]


def test_postfix_warning_of_brackets_is_read_in_linear_time() -> None:
    rec = _parse(POSTFIX_HEAD + "warning: " + "[" * N)
    assert rec["event"] == "warning" and rec["text"] == "[" * N and "remote_ip" not in rec
    # a client's name and address are still found after other text
    rec = _parse(POSTFIX_HEAD + "warning: " + "[" * 100 + " mail.example.com[192.0.2.7]:25 said")
    assert (rec["remote_host"], rec["remote_ip"]) == ("mail.example.com", "192.0.2.7")


PSCREEN = "2026-06-16T02:26:10.589017+02:00 pmg postfix/postscreen[407424]: PASS OLD [1.2.3.4]:44340"


def test_postscreen_line_of_brackets_is_read_in_linear_time() -> None:
    assert PSCREEN in (Path(__file__).parent / "fixtures/pmg-log-tracker/test_input_misleading_lines").read_text()
    rec = _parse(PSCREEN + "[" * N)
    assert (rec["event"], rec["action"], rec["remote_ip"], rec["remote_port"]) == ("postscreen", "PASS OLD",
                                                                                   "1.2.3.4", 44340)
    rec = _parse(PSCREEN.replace("[1.2.3.4]:44340", "[" * N))
    assert rec["event"] == "postfix_other" and "remote_ip" not in rec
    rec = _parse(PSCREEN.replace("PASS OLD", "PASS OLD" + " A" * (N // 2)).replace(":44340", ":x"))
    assert "remote_ip" not in rec


DOVECOT = _real("fail2ban_dovecot.txt", "Jan 14 15:54:30 valhalla dovecot: pop3-login: Disconnected (auth failed")


def test_dovecot_user_with_angle_brackets_is_whole_and_read_in_linear_time() -> None:
    user = "x>" + "a" * N
    rec = _parse(DOVECOT.replace("user=<ivo>", f"user=<{user}>"))
    assert rec["event"] == "pop_auth" and rec["result"] == "failure"
    assert (rec["auth_user"], rec["method"], rec["remote_ip"], rec["local_ip"], rec["session_id"]) == (
        user, "PLAIN", "1.2.3.4", "1.1.2.2", "q454Xu/vMwBZApgg")
    # a user forging dovecot's elements: its own come after it, and they count
    rec = _parse(DOVECOT.replace("user=<ivo>", "user=<x>, rip=6.6.6.6, y=<z>"))
    assert (rec["auth_user"], rec["remote_ip"]) == ("x>, rip=6.6.6.6, y=<z", "1.2.3.4")
