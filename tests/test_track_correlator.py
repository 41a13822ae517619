"""The correlator's handling of the daemon's ``gap`` records: what was open in a log
that lost lines says so (``log_gap``), what was not stays whole.

Lines are qmail-send's and tcpserver's own forms (as in tests/fixtures/track), read
through the real LineParser; the gap record is the pipeline's own (``gap_record``).
"""

from __future__ import annotations

from typing import Any

import orjson

from shipper.follower import Gap
from shipper.parse import LineParser
from shipper.pipeline import gap_record
from shipper.track.correlator import Correlator, CorrelatorOptions

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


def _smtp_session(pid: int, t: float, qp: int) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """A tcpserver + recordio session up to its message's dot, and its ``250 ok … qp`` and end."""
    head = [(t, f"tcpserver: pid {pid} from 203.0.113.9"),
            (t + 0.001, f"tcpserver: ok {pid} mx.example.org:192.0.2.1:25 :203.0.113.9::50123"),
            (t + 0.3, f"{pid} < MAIL FROM:<alice@example.org>\r "),
            (t + 0.31, f"{pid} > 250 ok\r "),
            (t + 0.4, f"{pid} < RCPT TO:<bob@example.com>\r "),
            (t + 0.41, f"{pid} > 250 ok\r "),
            (t + 0.5, f"{pid} < DATA\r "),
            (t + 0.51, f"{pid} > 354 go ahead\r "),
            (t + 0.6, f"{pid} < .\r ")]
    tail = [(t + 0.65, f"{pid} > 250 ok 1767225600 qp {qp}\r "),
            (t + 0.9, f"tcpserver: end {pid} status 0")]
    return head, tail


def test_a_mail_read_before_its_smtpd_reply_waits_for_it() -> None:
    """Found by an end-to-end run of a whole host: after a restart (and on a first start
    with a backlog) the daemon reads one log ahead of the other; a mail whose ``end msg``
    was read before its session's ``250 ok … qp`` went out naming no session (10 of 356
    SMTP mails with 6 kill -9s in a minute; 236 of 253 catching up a 15,000-line
    backlog). It waits now, across a restart too, until the smtpd log is read past it."""
    head, tail = _smtp_session(4711, 0.0, 4100)
    daemon = CorrelatorOptions(skip_reread=True)  # (track and replay read by time)
    c = Correlator(daemon)
    assert c.feed(_in(SMTPD, head)) == []
    out = c.feed(_in(SEND, _mail(100, 0.62)))  # the send log read ahead: mail 100 ends
    assert [o for o in out if o["event"] == "mail"] == []
    c = Correlator.from_state(orjson.loads(orjson.dumps(c.to_state())), daemon)  # a restart
    out = c.feed(_in(SMTPD, tail, first_offset=5_000))
    out += c.feed(_in(SMTPD, _session(4800, 5.0), first_offset=9_000))  # read on past it
    mails = _by(out, "mail", "msg")
    assert mails[100]["session"]["conn_pid"] == 4711 and mails[100]["session"]["link"] == "qp"
    assert [m["msg"] for m in _by(out, "smtp_session", "conn_pid")[4711]["mails"]] == [100]
    assert c.held == []
    # no smtpd log read (a send log alone), or one read past the mail: out at its end
    c = Correlator(daemon)
    assert [o["msg"] for o in c.feed(_in(SEND, _mail(100, 0.62))) if o["event"] == "mail"] == [100]
    c = Correlator(daemon)
    c.feed(_in(SMTPD, _session(4800, 5.0)))
    assert [o["msg"] for o in c.feed(_in(SEND, _mail(100, 0.62))) if o["event"] == "mail"] == [100]
    # a quiet smtpd log: the wall clock moves it on (flush), the mail goes, no session
    c = Correlator(daemon)
    c.feed(_in(SMTPD, head))
    assert c.feed(_in(SEND, _mail(100, 0.62))) == []
    out = c.flush(now_ns=(EPOCH + 10) * 10**9)
    assert [o["msg"] for o in out if o["event"] == "mail"] == [100] and "session" not in out[0]
    # track and replay (inputs merged by time): out at its end, as before
    c = Correlator()
    c.feed(_in(SMTPD, head))
    assert [o["msg"] for o in c.feed(_in(SEND, _mail(100, 0.62))) if o["event"] == "mail"] == [100]


def _read_at(recs: list[dict[str, Any]], sec: float) -> list[dict[str, Any]]:
    """``recs`` as the daemon reads them ``sec`` seconds after the labels' epoch."""
    for r in recs:
        r["ingest_unix_ns"] = int((EPOCH + sec) * 10**9)
    return recs


def test_a_mail_stamped_ahead_of_the_smtpd_log_is_held_no_longer_than_its_wait() -> None:
    """Found by the review: the hold compared the mail's time with the smtpd log's clock,
    so a send log whose clock is ahead (another host's, an hour here; or a zone read
    wrong) held every mail for the difference: an hour, with both inputs read to their
    end. Once the smtpd inputs are read to their end, the wall clock ends the wait."""
    daemon = CorrelatorOptions(skip_reread=True)
    c = Correlator(daemon)
    c.feed(_read_at(_in(SMTPD, _session(4800, 0.0)), 0.0))
    assert c.feed(_read_at(_in(SEND, _mail(100, 3600.0)), 1.0)) == []  # read at 1 s
    assert c.flush(read_ns=(EPOCH + 2) * 10**9) == []  # (within its grace)
    out = c.flush(read_ns=(EPOCH + 11) * 10**9)
    assert [o["msg"] for o in out if o["event"] == "mail"] == [100]
    assert c.held == []
    # an smtpd input not read to its end yet: its reply may still be there, it waits
    c = Correlator(daemon)
    c.feed(_read_at(_in(SMTPD, _session(4800, 0.0)), 0.0))
    c.feed(_read_at(_in(SEND, _mail(100, 3600.0)), 1.0))
    c = Correlator.from_state(orjson.loads(orjson.dumps(c.to_state())), daemon)  # a restart
    assert c.flush(read_ns=(EPOCH + 11) * 10**9, behind={SMTPD}) == []
    assert [o["msg"] for o in c.flush(read_ns=(EPOCH + 21) * 10**9) if o["event"] == "mail"] == [100]


def test_a_held_mail_goes_out_as_soon_as_its_qp_links_it() -> None:
    """Found by the review: a mail held for its ``250 ok … qp`` stayed held once linked,
    until the smtpd log was read to its end + 2 s; on a quiet host that line never came
    and it went out at the daemon's next flush (up to 15 s later) for nothing."""
    head, tail = _smtp_session(4711, 0.0, 4100)
    c = Correlator(CorrelatorOptions(skip_reread=True))
    c.feed(_in(SMTPD, head))
    assert c.feed(_in(SEND, _mail(100, 0.62))) == []  # ended at 1.121 s, before its reply
    out = c.feed(_in(SMTPD, tail, first_offset=5_000))  # the reply and the end, then quiet
    mails = _by(out, "mail", "msg")
    assert mails[100]["session"]["conn_pid"] == 4711 and mails[100]["session"]["link"] == "qp"
    assert [m["msg"] for m in _by(out, "smtp_session", "conn_pid")[4711]["mails"]] == [100]
    assert c.held == [] and c.held_qp == {}


def test_mails_held_for_their_reply_are_bounded() -> None:
    """Found by the review: while the send log is read far ahead of the smtpd log (a
    catch-up), mails were held up to max_open (100,000: about 550 MB and a 150 MB state
    rewritten every 2 s). At most HELD_MAX are held; the oldest beyond go unlinked, as
    they did without the hold."""
    from shipper.track.correlator import HELD_MAX

    c = Correlator(CorrelatorOptions(skip_reread=True))
    c.feed(_in(SMTPD, _session(4800, 0.0)))  # the smtpd log read to 0 s only
    n = HELD_MAX + 300
    lines = [line for i in range(n) for line in _mail(1000 + i, 10.0 + i * 0.001)]
    out = c.feed(_in(SEND, lines))
    mails = [o["msg"] for o in out if o["event"] == "mail"]
    assert len(c.held) == HELD_MAX
    assert mails == list(range(1000, 1300))  # the oldest, unlinked
    assert len(orjson.dumps(c.to_state())) < HELD_MAX * 8_000
