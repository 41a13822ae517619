"""qmail-smtpd lines of netqmail's logging patch sets (Puzzanghera's qlog, jms1, qregex,
qmail-toaster), field by field through the whole LineParser path, and the session
tracker linking a session to its mail by the qp these lines carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipper.parse import LineParser
from shipper.parsers.smtpd_patches import parse_patched, parse_qlog
from shipper.severity import NOTICE, WARNING, severity
from shipper.track.correlator import Correlator

SAMPLE = Path(__file__).parent / "fixtures" / "samples" / "netqmail_smtpd_patch_formats.txt"


def _lines() -> dict[str, str]:
    """The fixture's lines, by their text after the label."""
    text = SAMPLE.read_text(encoding="utf-8")
    assert text.startswith("# source:")
    return {ln.split(" ", 1)[1]: ln for ln in text.splitlines()[1:] if ln.strip()}


LINES = _lines()
_CORE = {"time_unix_ns", "time", "time_source", "program", "event", "message", "raw", "host",
         "pid", "source", "file_id", "offset", "flags", "event_id"}


def _fields(line: str) -> tuple[str | None, int | None, str, dict[str, Any]]:
    d = LineParser().parse(line.encode()).to_dict()
    assert d["flags"] == []
    return d["program"], d["pid"], d["event"], {k: v for k, v in d.items() if k not in _CORE}


_COMMON = {"helo": "mail.example.net", "mail_from": "alice@example.net", "relay_client": False,
           "tls": "tls", "tls_verified": False, "local_ip": "192.0.2.10", "local_port": 25,
           "remote_ip": "198.51.100.7", "remote_port": 51234, "remote_host": "mail.example.net",
           "conn_pid": 23456}

CASES = [
    ("qlogenvelope: result=accepted", "qmail-smtpd", None, "smtp_accept",
     {**_COMMON, "qlog": "envelope", "result": "accepted", "smtp_code": 250, "reason": "rcptto",
      "detail": "chkuser", "rcpt_to": "bob@example.com", "in_rcpthosts": True}),
    ("qlogenvelope: result=rejected", "qmail-smtpd", None, "smtp_reject",
     {**_COMMON, "qlog": "envelope", "result": "rejected", "smtp_code": 550, "reason": "chkuser",
      "detail": "nomailbox", "rcpt_to": "nobody@example.com", "in_rcpthosts": True}),
    ("qlogreceived:", "qmail-smtpd", None, "smtp_queued",
     {**_COMMON, "qlog": "received", "result": "accepted", "smtp_code": 250, "reason": "queueaccept",
      "rcpt_to": "bob@example.com,carol@example.com", "size": 4711, "qp": 23460}),
    ("qmail-smtpd: read failed", "qmail-smtpd", None, "smtp_other",
     {"text": "read failed", "reason": "connection closed by the client before the quit cmd",
      "mail_from": "alice@example.net", "remote_ip": "198.51.100.7", "rcpt_to": "bob@example.com",
      "helo": "mail.example.net"}),
    ("qmail-smtpd: exceeded", "qmail-smtpd", None, "smtp_reject",  # "(null)": no field
     {"text": "exceeded datasize limit", "remote_ip": "198.51.100.7", "helo": "mail.example.net"}),
    ("qmail-smtpd[23457]: auth:", "qmail-smtpd", 23457, "smtp_decision",
     {"action": "Reject", "check": "AUTH", "condition": "login", "auth_user": "user@example.com",
      "conn_pid": 23457}),
    ("qmail-smtpd[23457]: validrcptto: drop", "qmail-smtpd", 23457, "smtp_reject",
     {"reason": "validrcptto", "rcpt_to": "x@example.com", "remote_ip": "198.51.100.7",
      "conn_pid": 23457}),
    ("qmail-smtpd[23457]: rbl:", "qmail-smtpd", 23457, "smtp_other",
     {"remote_ip": "198.51.100.7", "rbl_query": "7.100.51.198.zen.spamhaus.org",
      "rbl_result": "pass", "conn_pid": 23457}),
    ("qmail-smtpd[23457]: GREETDELAY", "qmail-smtpd", 23457, "smtp_reject",
     {"remote_ip": "198.51.100.7", "text": "client sent data before greeting", "reason": "pregreet",
      "conn_pid": 23457}),
    ("qmail-smtpd[23457]: badhelo:", "qmail-smtpd", 23457, "smtp_reject",
     {"reason": "badhelo", "helo": "localhost", "remote_ip": "198.51.100.7", "conn_pid": 23457}),
    ("qmail-smtpd[12345]: validrcptto [198.51.100.7] not found", "qmail-smtpd", 12345, "smtp_reject",
     {"reason": "validrcptto", "remote_ip": "198.51.100.7", "text": "not found: nobody@example.com",
      "rcpt_to": "nobody@example.com", "conn_pid": 12345}),
    ("qmail-smtpd[12345]: validrcptto [198.51.100.7] excessive", "qmail-smtpd", 12345, "smtp_reject",
     {"reason": "validrcptto", "remote_ip": "198.51.100.7",
      "text": "excessive violations, hanging up", "conn_pid": 12345}),
    ("qmail-smtpd[12345]: AUTH failed", "qmail-smtpd", 12345, "smtp_decision",
     {"action": "Reject", "check": "AUTH", "remote_ip": "198.51.100.7", "reason": "unknown user",
      "auth_user": "user@example.com", "conn_pid": 12345}),
    ("qmail-smtpd[12345]: AUTH successful", "qmail-smtpd", 12345, "smtp_decision",
     {"action": "Accept", "check": "AUTH", "remote_ip": "198.51.100.7",
      "auth_user": "user@example.com", "conn_pid": 12345}),
    ("qmail-smtpd[12345]: MFCHECK", "qmail-smtpd", 12345, "smtp_decision",
     {"action": "Reject", "check": "MFCHECK", "condition": "fail", "remote_ip": "198.51.100.7",
      "text": "nodomain.example", "conn_pid": 12345}),
    ("qmail-smtpd[12345]: DATABYTES", "qmail-smtpd", 12345, "smtp_reject",
     {"reason": "databytes", "remote_ip": "198.51.100.7", "conn_pid": 12345}),
    ("qmail-smtpd[12345]: RCPT TO:", "qmail-smtpd", 12345, "smtp_other",
     {"rcpt_to": "bob@example.com", "text": "RCPT TO:<bob@example.com>", "conn_pid": 12345}),
    ("qmail-smtpd[12345]: Received-SPF:", "qmail-smtpd", 12345, "smtp_other",
     {"spf_result": "softfail", "conn_pid": 12345,
      "text": "softfail (mx.example.com: transitioning domain of b.example does not designate "
              "198.51.100.7 as permitted sender)"}),
    ("qmail-smtpd[12345]: badrcptto:", "qmail-smtpd", 12345, "smtp_reject",
     {"reason": "badrcptto", "rcpt_to": "spam@example.com", "remote_ip": "198.51.100.7",
      "pattern": "^spam@", "conn_pid": 12345}),
    ("qmail-smtpd: badmailfrom:", "qmail-smtpd", None, "smtp_reject",
     {"reason": "badmailfrom", "mail_from": "spam@bad.example", "remote_ip": "203.0.113.9"}),
    ("mail recv:", "qmail-smtpd", None, "smtp_queued",
     {"conn_pid": 210394, "mail_from": "someone@bulk.example", "qp": 210429}),
]


@pytest.mark.parametrize("start, program, pid, event, fields", CASES, ids=[c[0] for c in CASES])
def test_patch_line_fields(start: str, program: str, pid: int | None, event: str,
                           fields: dict[str, Any]) -> None:
    (line,) = [ln for text, ln in LINES.items() if text.startswith(start)]
    got = _fields(line)
    assert got == (program, pid, event, fields)


def test_every_fixture_line_is_parsed() -> None:
    for line in LINES.values():
        program, _, event, _ = _fields(line)
        assert event != "unparsed", line


def test_rejects_are_notices_and_a_failed_login_a_warning() -> None:
    for start, sev in (("qlogenvelope: result=rejected", NOTICE), ("qmail-smtpd[12345]: DATABYTES", NOTICE),
                       ("qmail-smtpd[12345]: AUTH failed", WARNING)):  # as Postfix's own
        (line,) = [ln for text, ln in LINES.items() if text.startswith(start)]
        assert severity(LineParser().parse(line.encode()).to_dict()) == sev


def test_qlog_edge_cases() -> None:
    # an unknown key of a later version is skipped, a non-number where a number belongs gives
    # no field, an empty value gives none
    got = parse_qlog("qlogenvelope: result=rejected code=abc reason=x newkey=1 pid=\r")
    assert got == ("smtp_reject", {"qlog": "envelope", "result": "rejected", "reason": "x"})
    # the combined patch writes "unknown" for an unset TCPREMOTEIP: not an address, no field
    got = parse_qlog("qlogreceived: result=accepted remoteip=unknown remoteport=0 qp=9")
    assert got == ("smtp_queued", {"qlog": "received", "result": "accepted", "remote_port": 0, "qp": 9})
    assert parse_qlog("qlogenvelope: garbage") is None
    assert parse_qlog("qlogenvelopes: result=accepted") is None
    assert parse_patched("something else entirely") is None
    assert parse_patched("") is None


def test_qlog_session_links_to_its_mail_by_qp() -> None:
    recs = [LineParser(source="t", file_id="0123456789abcdef").parse(ln.encode() + b"\n", i).to_dict()
            for i, ln in enumerate(list(LINES.values())[:8])]
    c = Correlator()
    out = c.feed(recs) + c.finish()
    (session,) = [o for o in out if o["event"] == "smtp_session"]
    (mail,) = [o for o in out if o["event"] == "mail"]
    assert session["conn_pid"] == 23456 and session["qps"] == [23460]
    assert session["result"] == "accepted" and session["accepted_rcpts"] == ["bob@example.com"]
    assert [d["action"] for d in session["decisions"]] == ["Accept", "Reject"]
    assert mail["qp"] == 23460 and mail["session"]["link"] == "qp"
    assert mail["session"]["conn_pid"] == 23456


QMT_SAMPLE = SAMPLE.parent / "qmailtoaster_reject_patch_formats.txt"
_ENV = {"mail_from": "alice@example.net", "rcpt_to": "bob@example.com"}
QMT_EXPECTED = [
    {"reason": "looping", **_ENV},
    {"reason": "oversized", **_ENV},
    {"reason": "bad-mime", **_ENV},
    {"reason": "bad-loader", "mail_from": "", "rcpt_to": "bob@example.com"},
    {"reason": "qq", "smtp_code": 554, "text": "mail server permanently rejected message (#5.3.0)",
     "dsn": "5.3.0", **_ENV},
    {"reason": "qq", "smtp_code": 451, "text": "mail server temporarily rejected message (#4.3.0)",
     "dsn": "4.3.0", **_ENV},
    {"reason": "spf", "remote_ip": "198.51.100.7", "mail_from": "alice@example.net",
     "helo": "mail.example.net"},
]


def test_qmail_toaster_reject_lines() -> None:
    # qmail-toaster's qmail-smtpd logs why it refused a message; these were unparsed
    text = QMT_SAMPLE.read_text(encoding="utf-8")
    assert text.startswith("# source:")
    lines = [ln for ln in text.splitlines()[1:] if ln.strip()]
    got = [_fields(ln) for ln in lines]
    assert got == [("qmail-smtpd", None, "smtp_reject", f) for f in QMT_EXPECTED]
    assert {severity(LineParser().parse(ln.encode()).to_dict()) for ln in lines} == {NOTICE}
