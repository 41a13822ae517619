"""The correlator's handling of the daemon's ``gap`` records: what was open in a log
that lost lines says so (``log_gap``), what was not stays whole.

Lines are qmail-send's and tcpserver's own forms (as in tests/fixtures/track), read
through the real LineParser; the gap record is the pipeline's own (``gap_record``).
"""

from __future__ import annotations

from typing import Any

from shipper.follower import Gap
from shipper.parse import LineParser
from shipper.pipeline import gap_record
from shipper.track.correlator import Correlator

EPOCH = 1767225600  # 2026-01-01T00:00:00Z
SEND, SMTPD, OTHER = "/var/log/qmail/send", "/var/log/qmail/smtpd", "/var/log/qmail/send2"


def _lab(sec: float) -> str:
    t = EPOCH + sec
    return f"@{int(t) + 2**62 + 10:016x}{round((t - int(t)) * 1e9):08x}"


def _in(logdir: str, lines: list[tuple[float, str]], first_offset: int = 0) -> list[dict[str, Any]]:
    """Lines as the daemon reads them from ``logdir``'s ``current``."""
    parser = LineParser(source=f"{logdir}/current", file_id=logdir[-8:].replace("/", "x") * 2)
    return [parser.parse(f"{_lab(t)} {text}\n".encode(), first_offset + i * 100).to_dict()
            for i, (t, text) in enumerate(lines)]


def _gap(logdir: str, first_s: float | None, last_s: float | None) -> dict[str, Any]:
    def ns(s: float | None) -> int | None:
        return None if s is None else EPOCH * 10**9 + int(s * 10**9)
    g = Gap(logdir, "@4000000069558b0a00000000.s", 4096, True, ns(first_s), ns(last_s),
            "deleted by multilog (its n limit) before it was read", (logdir, {}))
    return gap_record(g, "mx")


def _mail(msg: int, t: float, delivered: bool = True) -> list[tuple[float, str]]:
    lines = [(t, f"new msg {msg}"),
             (t + 0.001, f"info msg {msg}: bytes 2343 from <alice@example.org> qp 4100 uid 89"),
             (t + 0.002, f"starting delivery {msg}: msg {msg} to remote bob@example.com")]
    if delivered:
        lines += [(t + 0.5, f"delivery {msg}: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/"),
                  (t + 0.501, f"end msg {msg}")]
    return lines


def _session(pid: int, t: float) -> list[tuple[float, str]]:
    return [(t, f"tcpserver: pid {pid} from 203.0.113.9"),
            (t + 0.001, f"tcpserver: ok {pid} mx.example.org:192.0.2.1:25 :203.0.113.9::50123")]


def _by(out: list[dict[str, Any]], event: str, key: str) -> dict[Any, dict[str, Any]]:
    return {o[key]: o for o in out if o["event"] == event}


def test_what_is_open_in_a_log_when_it_loses_lines_is_flagged_and_named() -> None:
    c = Correlator()
    # mail 101 is open in the send log and mail 201 in another; session 300 is open in
    # the smtpd log; mail 100 ended before the gap
    out = c.feed(_in(SEND, _mail(100, 0) + _mail(101, 1, delivered=False))
                 + _in(OTHER, _mail(201, 1, delivered=False))
                 + _in(SMTPD, _session(300, 1)))
    gap = _gap(SEND, 1.5, 30)
    out += c.feed([gap])
    # the rest of mail 101 comes after the lines lost; mail 102 starts after them
    out += c.feed(_in(SEND, [(40, "delivery 101: success: ok/"), (40.1, "end msg 101")]
                      + _mail(102, 41), first_offset=10_000))
    out += c.finish()
    mails = _by(out, "mail", "msg")
    assert mails[101]["flags"] == ["log_gap"]
    assert mails[101]["log_gap_ids"] == [gap["event_id"]]
    assert gap["event_id"].endswith("-gap")
    for whole in (100, 102):  # ended before, begun after the lines lost
        assert "log_gap" not in mails[whole]["flags"] and "log_gap_ids" not in mails[whole]
    assert "log_gap" not in mails[201]["flags"]  # another log: open_at_end only
    assert mails[201]["flags"] == ["incomplete"]
    # its delivery started, no result: pending, so "deferral" as documented (it was null)
    assert mails[201]["result"] == "deferral" and mails[201]["recipients"][0]["result"] is None
    session = _by(out, "smtp_session", "conn_pid")[300]
    assert "log_gap" not in session["flags"]


def test_a_gap_whose_times_are_unknown_flags_all_that_is_open_in_its_log() -> None:
    c = Correlator()
    c.feed(_in(SMTPD, _session(300, 1) + _session(301, 2)))
    c.feed([_gap(SMTPD, None, None), _gap(SMTPD, None, None)])  # found again: named once
    out = c.finish()
    sessions = _by(out, "smtp_session", "conn_pid")
    for pid in (300, 301):
        assert sessions[pid]["flags"] == ["incomplete", "log_gap"]
        assert len(sessions[pid]["log_gap_ids"]) == 1


def test_the_flag_survives_a_restart_of_the_shipper() -> None:
    c = Correlator()
    c.feed(_in(SEND, _mail(101, 1, delivered=False)))
    c.feed([_gap(SEND, 1.5, 30)])
    restored = Correlator.from_state(c.to_state())
    out = restored.feed(_in(SEND, [(40, "delivery 101: success: ok/"), (40.1, "end msg 101")],
                            first_offset=10_000))
    assert [o["flags"] for o in out if o["event"] == "mail"] == [["log_gap"]]


def test_postfix_entries_in_the_log_are_flagged_too() -> None:
    c = Correlator()
    maillog = "/var/log/mail.log"
    parser = LineParser(source=maillog, file_id="abcdef0123456789")
    lines = ["Jan  1 00:00:01 mx postfix/smtpd[4242]: connect from client.example.net[198.51.100.7]",
             "Jan  1 00:00:02 mx postfix/smtpd[4242]: 4F1B23A0C9: client=client.example.net[198.51.100.7]",
             "Jan  1 00:00:02 mx postfix/cleanup[4243]: 4F1B23A0C9: message-id=<m1@example.net>"]
    c.feed([parser.parse(f"{ln}\n".encode(), i * 100, now_ns=(EPOCH + 5) * 10**9).to_dict()
            for i, ln in enumerate(lines)])
    g = gap_record(Gap(maillog, maillog, None, False, None, None, "truncated before it was read",
                       (maillog, {})), "mx")
    c.feed([g])
    out = c.finish()
    assert {o["event"] for o in out} == {"mail", "smtp_session"}
    assert all("log_gap" in o["flags"] and o["log_gap_ids"] == [g["event_id"]] for o in out)
