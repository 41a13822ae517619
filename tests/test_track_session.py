"""SMTP sessions: tcpserver/sslserver → rblsmtpd → qmail-smtpd / recordio → end, and the
qp link from a session to the message it queued. Real lines through the real parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.parse import LineParser
from shipper.track.correlator import Correlator, CorrelatorOptions
from shipper.track.session import SessionOptions

FIX = Path(__file__).parent / "fixtures" / "track"


def records(name: str, file_id: str = "0123456789abcdef") -> list[dict[str, Any]]:
    raw = (FIX / name).read_bytes()
    lines = [ln + b"\n" for ln in raw.split(b"\n")[:-1]]  # recordio keeps \r: split on \n only
    assert lines[0].startswith(b"# source: ")
    parser = LineParser(source=name, file_id=file_id)
    out, offset = [], len(lines[0])
    for line in lines[1:]:
        out.append(parser.parse(line, offset).to_dict())
        offset += len(line)
    return out


def by_time(*streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for s in streams for r in s), key=lambda r: r["time_unix_ns"])


def test_sslserver_differing_pids_tls_rbl_pop3() -> None:
    recs = [r for r in records("fehcom_sqmail_logging_chapter.txt")
            if r["program"] != "qmail-send"]
    c = Correlator()
    out = c.feed(recs) + c.finish()
    assert all(o["event"] == "smtp_session" for o in out)
    assert len(out) == 3 and c.open_count == 0
    tls, rejected, pop = out
    # ok 30556, ssl 30554 accept, qmail-smtpd pid 30554, ended by 30553: one session.
    assert tls["conn_pid"] == 30556 and tls["pids"] == [30556, 30554]
    assert tls["tls"] == "TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384" and tls["proto"] == "ESMTPS"
    assert tls["remote_ip"] == "1.2.3.4" and tls["remote_host"] == "mail40.ml.mailersend.com"
    assert tls["remote_port"] == 44176 and tls["local_port"] == 25
    assert tls["accepted_rcpts"] == ["feh@fehcom.de"] and tls["result"] == "accepted"
    assert tls["exit_code"] == 0 and tls["flags"] == [] and len(tls["event_ids"]) == 5
    assert tls["program"] == "sslserver" and tls["event_id"].endswith("s")
    assert rejected["conn_pid"] == 19782 and rejected["greetdelay"] == 80
    assert rejected["result"] == "rejected" and rejected["tls"] == "TLS"
    (d,) = rejected["decisions"]
    assert (d["action"], d["check"], d["condition"], d["rcpt_to"]) == \
        ("Reject", "RCPT", "Failed_Rcptto", "nelson-qa@aqmail.org")
    assert pop["local_port"] == 995 and pop["proto"] == "POP3S" and pop["authenticated"] is True
    # a POP3 login is no SMTP session (a black-box review: stats counted them as such)
    assert (tls["protocol"], rejected["protocol"], pop["protocol"]) == ("smtp", "smtp", "pop3")
    from shipper.track.report import Stats
    st = Stats()
    for o in out:
        st.add(o)
    d = st.to_dict()
    assert d["sessions"]["count"] == 2 and d["other_sessions"] == {"pop3": 1}
    assert pop["exit_code"] == 1
    assert "auth_user" not in pop and "X@fehcom.de" not in orjson.dumps(pop).decode()


def test_auth_user_shown_only_when_configured() -> None:
    recs = records("fehcom_sqmail_logging_chapter.txt")
    c = Correlator(CorrelatorOptions(session=SessionOptions(show_auth_user=True)))
    out = c.feed(recs) + c.finish()
    pop = [o for o in out if o.get("proto") == "POP3S"][0]
    assert pop["auth_user"] == "X@fehcom.de"


def test_recordio_ipv6_qp_links_session_and_mail_in_either_order() -> None:
    smtpd = records("smtpd_recordio_ipv6.txt", "aaaaaaaaaaaaaaaa")
    send = records("send_recordio_ipv6.txt", "bbbbbbbbbbbbbbbb")
    for name, order in (("by_time", by_time(smtpd, send)), ("send_first", send + smtpd),
                        ("smtpd_first", smtpd + send)):
        c = Correlator()
        out = c.feed(order) + c.finish()
        (mail,) = [o for o in out if o["event"] == "mail"]
        sessions = [o for o in out if o["event"] == "smtp_session"]
        assert len(sessions) == 3
        sess = sessions[0] if sessions[0]["conn_pid"] == 4242 else \
            [s for s in sessions if s["conn_pid"] == 4242][0]
        assert sess["remote_ip"] == "2001:db8::25" and sess["remote_port"] == 51234
        assert sess["local_ip"] == "2001:db8::1" and sess["helo"] == "client.example.net"
        assert sess["mail_from"] == "Alice@example.net"
        assert sess["accepted_rcpts"] == ["bob@example.org"] and sess["qps"] == [4250]
        (rej,) = sess["decisions"]
        assert (rej["action"], rej["check"], rej["smtp_code"], rej["rcpt_to"], rej["dsn"]) == \
            ("Reject", "RCPT", 553, "nobody@example.org", "5.7.1")
        assert sess["result"] == "accepted"
        if name == "smtpd_first":  # the session ended before its mail was read
            assert sess["mails"] == []
        else:
            assert sess["mails"] == [{"msg": 777, "qp": 4250, "event_id": mail["event_id"]}]
        assert mail["msg"] == 777 and mail["qp"] == 4250
        if name == "send_first":  # the mail ended before its session was read
            assert "session" not in mail
        else:
            s = mail["session"]
            assert s["event_id"] == sess["event_id"] and s["link"] == "qp"
            assert s["remote_ip"] == "2001:db8::25" and s["conn_pid"] == 4242
            assert s["helo"] == "client.example.net"


def test_rblsmtpd_block_and_deny() -> None:
    recs = records("smtpd_recordio_ipv6.txt")
    c = Correlator()
    out = c.feed(recs) + c.finish()
    blocked = [o for o in out if o["conn_pid"] == 4300][0]
    assert blocked["result"] == "blocked" and blocked["rbl_blocked"] is True
    (d,) = blocked["decisions"]
    assert d["action"] == "Deferred" and d["smtp_code"] == 451 and "spamhaus" in d["text"]
    assert blocked["duration_s"] == 30.0
    denied = [o for o in out if o["conn_pid"] == 4301][0]
    assert denied["result"] == "denied" and denied["remote_ip"] == "203.0.113.9"


def _correlate_lines(lines: list[str]) -> list[dict[str, Any]]:
    parser = LineParser(source="s6", file_id="0123456789abcdef")
    recs = [parser.parse(ln.encode() + b"\n", i * 100).to_dict() for i, ln in enumerate(lines)]
    c = Correlator()
    return c.feed(recs) + c.finish()


def test_s6_networking_sessions() -> None:
    """s6-tcpserverd (verbosity 2) + s6-tcpserver-access + qmail-smtpd: one session;
    a pid reused by a later accept starts a new one; access's deny alone is a whole one."""
    lines = [
        "@4000000052fafd8d3298434c s6-tcpserverd: info: accept 192.0.2.7_51234 pid 12345 count 1/40",
        "@4000000052fafd8d3298434d s6-tcpserver-access: info: allow pid 12345 ip 192.0.2.7",
        "@4000000052fafd8e3298434c qmail-smtpd: pid 12345 Accept::RCPT::Recipients_Cdb P:ESMTP "
        "S:192.0.2.7:mx.example.org H:mx.example.org F:a@example.org T:b@example.com",
        "@4000000052fafd8f3298434c s6-tcpserverd: info: end pid 12345 exitcode 0 count 0/40",
        "@4000000052fafd9f3298434c s6-tcpserver-access: info: deny pid 12399 ip 192.0.2.9: "
        "No such file or directory",
        "@4000000052fafda03298434c s6-tcpserverd: info: accept 192.0.2.8_4000 pid 12400 count 1/40",
        "@4000000052fafda13298434c s6-tcpserverd: info: accept 192.0.2.10_4001 pid 12400 count 1/40",
    ]
    out = _correlate_lines(lines)
    by = {(o["conn_pid"], o.get("remote_ip")): o for o in out}
    s = by[(12345, "192.0.2.7")]
    assert s["server"] == "s6-tcpserverd" and s["remote_port"] == 51234 and s["exit_code"] == 0
    assert s["result"] == "accepted" and s["flags"] == [] and len(s["event_ids"]) == 4
    d = by[(12399, "192.0.2.9")]
    assert d["result"] == "denied" and d["deny_reason"] == "No such file or directory"
    assert d["flags"] == []
    assert by[(12400, "192.0.2.8")]["incomplete_reason"] == "pid_reused"
    assert by[(12400, "192.0.2.8")]["time_source"] == "tai64n"  # its lines' clock (was null)
    assert by[(12400, "192.0.2.10")]["incomplete_reason"] == "open_at_end"
    assert len(out) == 4


def test_s6_access_logged_before_its_parents_accept_is_one_session():
    # the child (s6-tcpserver-access) and its parent (s6-tcpserverd) race to the log
    lines = [
        "@4000000052fafd8d3298434c s6-tcpserver-access: info: allow pid 12345 ip 192.0.2.7",
        "@4000000052fafd8d3298434d s6-tcpserverd: info: accept 192.0.2.7_51234 pid 12345 count 1/40",
        "@4000000052fafd8f3298434c s6-tcpserverd: info: end pid 12345 exitcode 0 count 0/40",
        # the same pid an hour later: another connection
        "@4000000052fb0b9f3298434c s6-tcpserver-access: info: allow pid 12345 ip 192.0.2.8",
        "@4000000052fb0ba03298434c s6-tcpserverd: info: accept 192.0.2.9_4000 pid 12345 count 1/40",
    ]
    out = _correlate_lines(lines)
    first = [o for o in out if o.get("remote_port") == 51234]
    assert len(first) == 1 and first[0]["flags"] == [] and first[0]["server"] == "s6-tcpserverd"
    assert first[0]["exit_code"] == 0 and len(first[0]["event_ids"]) == 3
    assert len(out) == 3  # the later allow and accept differ in IP: two sessions


def test_session_state_roundtrip_and_incomplete() -> None:
    recs = records("smtpd_recordio_ipv6.txt")
    cut = 10
    a = Correlator()
    out = a.feed(recs[:cut])
    b = Correlator.from_state(orjson.loads(orjson.dumps(a.to_state())))
    out += b.feed(recs[cut:]) + b.finish()
    c = Correlator()
    assert out == c.feed(recs) + c.finish()
    # A session whose end is never seen: flagged incomplete at the end of input.
    d = Correlator()
    got = d.feed(recs[:5]) + d.finish()
    (s,) = got
    assert s["flags"] == ["incomplete"] and s["incomplete_reason"] == "open_at_end"


def test_deny_and_the_denied_childs_end_are_one_session() -> None:
    """The denied child exits 100 and the server logs its end: one ``denied`` record
    carrying that exit, not a second, partial one opened by the end."""
    lines = [
        "@400000006955b90a000f41f8 tcpserver: pid 6944 from 193.147.171.74",
        "@400000006955b90a001e84dd tcpserver: deny 6944 us.es:192.168.1.13:25 :193.147.171.74::40714",
        "@400000006955b90a002dc6d5 tcpserver: end 6944 status 25600",
        # sslserver: the end names the parent (child − 1)
        "@400000006955b90b000f41f8 sslserver: pid 4713 from 91.20.45.91",
        "@400000006955b90b001e84dd sslserver: deny 4713 mail:85.25.149.179:465 :91.20.45.91::62745 "
        "ip connection limit:3 exceeded",
        "@400000006955b90b002dc6d5 sslserver: ended by 4712 status 25600",
        "@400000006955b90c000f41f8 tcpsvd: info: pid 8449 from 10.0.0.9",
        "@400000006955b90c001e84dd tcpsvd: info: deny 8449 mail:10.0.0.2 ::10.0.0.9:33052 ./peers/10.0.0.9",
        "@400000006955b90c002dc6d5 tcpsvd: info: end 8449 exit 100",
    ]
    out = _correlate_lines(lines)
    assert [(o["conn_pid"], o["result"], o["exit_code"], o["flags"]) for o in out] == \
        [(6944, "denied", 100, []), (4713, "denied", 100, []), (8449, "denied", 100, [])]
    assert [len(o["event_ids"]) for o in out] == [3, 3, 3]
    assert out[1]["deny_reason"] == "ip connection limit:3 exceeded"


def test_denied_session_whose_end_never_comes_is_emitted_complete() -> None:
    parser = LineParser(source="s6", file_id="0123456789abcdef")
    lines = [
        "@400000006955b90a000f41f8 tcpserver: pid 6944 from 193.147.171.74",
        "@400000006955b90a001e84dd tcpserver: deny 6944 us.es:192.168.1.13:25 :193.147.171.74::40714",
        "@400000006955b91a001e84dd tcpserver: pid 6950 from 192.0.2.4",  # 16 s later
        "@400000006955b960001e84dd tcpserver: pid 6951 from 192.0.2.5",  # 86 s later
    ]
    recs = [parser.parse(ln.encode() + b"\n", i * 100).to_dict() for i, ln in enumerate(lines)]
    c = Correlator()
    assert c.feed(recs[:3]) + c.flush() == []  # its end may still come
    (d,) = c.feed(recs[3:]) + c.flush()
    assert d["result"] == "denied" and d["flags"] == [] and d["conn_pid"] == 6944


def _lab(sec: float) -> str:
    """A multilog label ``sec`` seconds after 2026-01-01T00:00:00Z."""
    t = 1767225600 + sec
    return f"@{int(t) + 2**62 + 10:016x}{round((t - int(t)) * 1e9):08x}"


def _recs(lines: list[tuple[float, str]], file_id: str) -> list[dict[str, Any]]:
    parser = LineParser(source=file_id, file_id=file_id)
    return [parser.parse(f"{_lab(t)} {text}\n".encode(), i * 100).to_dict()
            for i, (t, text) in enumerate(lines)]


def _recordio_session(t: float, pid: int, qp: int) -> list[tuple[float, str]]:
    return [(t, f"tcpserver: pid {pid} from 203.0.113.9"),
            (t + 0.001, f"tcpserver: ok {pid} mx.example.org:192.0.2.1:25 :203.0.113.9::50123"),
            (t + 0.3, f"{pid} < MAIL FROM:<eve@spam.example.com>\r "),
            (t + 0.31, f"{pid} > 250 ok\r "),
            (t + 0.4, f"{pid} < RCPT TO:<bob@example.org>\r "),
            (t + 0.41, f"{pid} > 250 ok\r "),
            (t + 0.5, f"{pid} < DATA\r "),
            (t + 0.51, f"{pid} > 354 go ahead\r "),
            (t + 0.7, f"{pid} < .\r "),
            (t + 0.8, f"{pid} > 250 ok 1767225600 qp {qp}\r "),
            (t + 0.93, f"tcpserver: end {pid} status 0")]


def test_qp_links_only_within_its_window() -> None:
    """qp is a pid: 5 h after a session's ``250 ok … qp 5000`` another message with qp
    5000 is not that session's, in either order of the two logs."""
    smtpd = _recs(_recordio_session(0, 4711, 5000), "aaaaaaaaaaaaaaaa")
    send = _recs([(0.75, "new msg 300"),
                  (0.751, "info msg 300: bytes 400 from <eve@spam.example.com> qp 5000 uid 7791"),
                  (0.81, "end msg 300"),
                  (18000, "new msg 301"),
                  (18000.001, "info msg 301: bytes 500 from <root@mx.example.org> qp 5000 uid 0"),
                  (18000.2, "end msg 301")], "bbbbbbbbbbbbbbbb")
    for order in (by_time(smtpd, send), smtpd + send):
        c = Correlator()
        out = c.feed(order) + c.finish()
        mails = {o["msg"]: o for o in out if o["event"] == "mail"}
        assert mails[300]["session"]["conn_pid"] == 4711
        assert "session" not in mails[301]
    # a message open for hours (deferred) whose qp a new connection's reply repeats
    send = _recs([(0, "new msg 300"),
                  (0.001, "info msg 300: bytes 400 from <a@example.net> qp 5000 uid 7791")],
                 "bbbbbbbbbbbbbbbb")
    smtpd = _recs(_recordio_session(18000, 4711, 5000), "aaaaaaaaaaaaaaaa")
    c = Correlator()
    out = c.feed(send + smtpd) + c.finish()
    (sess,) = [o for o in out if o["event"] == "smtp_session"]
    (mail,) = [o for o in out if o["event"] == "mail"]
    assert sess["mails"] == [] and "session" not in mail


def test_a_session_linked_by_qp_leaves_its_senders_line() -> None:
    """Found in a 20-minute soak (tracking on, 1,500 lines/s): a session whose mail
    links by its reply's qp still waited sender_link_s in its sender's line, 19,000
    sessions and 8.4 MB of a 9 MB tracking state rewritten at every save; and a later
    message of that sender queued by another way (qmail-inject here) took it by sender."""
    # s/qmail's decision line and recordio's replies, as the benchmark corpus has them
    smtpd = _recs(sorted(_recordio_session(0, 4711, 5000) + [
        (0.42, "qmail-smtpd: pid 4711 Accept::RCPT::Recipients_Cdb P:ESMTP S:203.0.113.9:mx.spam.example.com "
               "H:mx.spam.example.com F:eve@spam.example.com T:bob@example.org")]), "aaaaaaaaaaaaaaaa")
    send = _recs([(0.9, "new msg 300"),
                  (0.901, "info msg 300: bytes 400 from <eve@spam.example.com> qp 5000 uid 7791"),
                  (0.95, "end msg 300"),
                  (30, "new msg 302"),
                  (30.001, "info msg 302: bytes 300 from <eve@spam.example.com> qp 6000 uid 1001"),
                  (30.2, "end msg 302")], "bbbbbbbbbbbbbbbb")
    c = Correlator()
    out = c.feed(smtpd)
    assert c.sessions.senders == {}
    out += c.feed(send) + c.finish()
    mails = {o["msg"]: o for o in out if o["event"] == "mail"}
    assert mails[300]["session"]["conn_pid"] == 4711 and mails[300]["session"]["link"] == "qp"
    assert "session" not in mails[302]


def test_a_pipelining_session_leaves_the_line_it_joined() -> None:
    """Found by a review: the line left at the reply's qp was the one of the session's
    latest MAIL FROM, which a pipelining client sends before that reply comes (recordio
    logs it as read): the session stayed in its first sender's line."""
    pid = 4711
    lines = [(0, f"tcpserver: pid {pid} from 203.0.113.9"),
             (0.001, f"tcpserver: ok {pid} mx.example.org:192.0.2.1:25 :203.0.113.9::50123"),
             (0.3, f"{pid} < MAIL FROM:<eve@spam.example.com>\r "),
             (0.31, f"{pid} > 250 ok\r "),
             (0.4, f"{pid} < RCPT TO:<bob@example.org>\r "),
             (0.41, f"{pid} > 250 ok\r "),
             (0.42, f"qmail-smtpd: pid {pid} Accept::RCPT::Recipients_Cdb P:ESMTP S:203.0.113.9:mx.spam.example.com "
                    "H:mx.spam.example.com F:eve@spam.example.com T:bob@example.org"),
             (0.5, f"{pid} < DATA\r "),
             (0.51, f"{pid} > 354 go ahead\r "),
             (0.7, f"{pid} < .\r "),
             (0.71, f"{pid} < MAIL FROM:<mallory@other.example.net>\r "),  # pipelined
             (0.8, f"{pid} > 250 ok 1767225600 qp 5000\r ")]
    c = Correlator()
    c.feed(_recs(lines, "aaaaaaaaaaaaaaaa"))
    assert c.sessions.senders == {}


def test_a_qp_repeated_within_minutes_links_each_mail_to_its_own_session() -> None:
    """Found by a probe (pid_max 32768 on a busy host: a qp comes again within minutes):
    session 4711's reply named qp 5000 and its mail 300 took it; 2 min later session
    4800's reply names qp 5000 again, just after mail 301's info msg (qmail-send logs it
    while qmail-queue exits, before the smtpd's reply). Mail 301 was linked to 4711 (the
    used link was still there, within 5 min) and 4800 named both mails."""
    smtpd = _recs(_recordio_session(0, 4711, 5000) + _recordio_session(120, 4800, 5000),
                  "aaaaaaaaaaaaaaaa")
    send = _recs([(0.79, "new msg 300"),
                  (0.791, "info msg 300: bytes 400 from <eve@spam.example.com> qp 5000 uid 89"),
                  (0.85, "end msg 300"),
                  (120.79, "new msg 301"),
                  (120.791, "info msg 301: bytes 500 from <eve@spam.example.com> qp 5000 uid 89"),
                  (121.5, "end msg 301")], "bbbbbbbbbbbbbbbb")
    # merged by time (track) both ways; one log read before the other (the daemon
    # catching up): the one read second names the other
    for order, sessions_of, mails_of in (
            (by_time(smtpd, send), {300: 4711, 301: 4800}, {4711: [300], 4800: [301]}),
            (send + smtpd, {300: None, 301: None}, {4711: [300], 4800: [301]}),
            (smtpd + send, {300: 4711, 301: 4800}, {4711: [], 4800: []})):
        c = Correlator()
        out = c.feed(order) + c.finish()
        assert {o["msg"]: o.get("session", {}).get("conn_pid")
                for o in out if o["event"] == "mail"} == sessions_of
        assert {o["conn_pid"]: [m["msg"] for m in o["mails"]]
                for o in out if o["event"] == "smtp_session"} == mails_of
        assert c.sessions.qp_mails == c.sessions.qp_sessions == {}  # every link was used


def test_stale_qp_links_are_dropped_at_flush() -> None:
    c = Correlator()
    c.feed(_recs(_recordio_session(0, 4711, 5000), "aaaaaaaaaaaaaaaa"))
    assert len(c.sessions.qp_sessions) == 1
    c.feed(_recs([(299, "status: local 0/10 remote 0/20")], "bbbbbbbbbbbbbbbb"))
    c.flush()
    assert len(c.sessions.qp_sessions) == 1
    c.feed(_recs([(302, "status: local 0/10 remote 0/20")], "bbbbbbbbbbbbbbbb"))
    c.flush()
    assert c.sessions.qp_sessions == {}


def _io_session(t: float, pid: int, exchange: list[str]) -> list[tuple[float, str]]:
    """A tcpserver + recordio session: ``exchange`` = recordio's ``< text`` / ``> text``."""
    lines = [(t, f"tcpserver: pid {pid} from 203.0.113.66"),
             (t + 0.001, f"tcpserver: ok {pid} mx:192.0.2.1:587 :203.0.113.66::5555")]
    lines += [(t + 0.1 + i / 100, f"{pid} {text}\r ") for i, text in enumerate(exchange)]
    return lines + [(t + 0.8, f"tcpserver: end {pid} status 0")]


_EHLO = ["> 220 mx.example.org ESMTP", "< EHLO laptop", "> 250-mx.example.org",
         "> 250-PIPELINING", "> 250 AUTH LOGIN PLAIN CRAM-MD5"]


def test_recordio_auth_with_challenges() -> None:
    """AUTH LOGIN, CRAM-MD5 and PLAIN without an initial response answer 334
    challenges with bare base64 lines: the final 235/535 still answers AUTH."""
    login = ["< AUTH LOGIN", "> 334 VXNlcm5hbWU6", "< Ym9iQGV4YW1wbGUub3Jn", "> 334 UGFzc3dvcmQ6",
             "< c2VjcmV0cGFzcw=="]
    cram = ["< AUTH CRAM-MD5", "> 334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
            "< dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"]
    plain = ["< AUTH PLAIN", "> 334 ", "< AGJvYgBzZWNyZXRwYXNz"]
    lines: list[tuple[float, str]] = []
    for i, exchange in enumerate((login, cram, plain)):
        lines += _io_session(i, 9001 + 2 * i, _EHLO + exchange + ["> 235 ok, go ahead (#2.0.0)"])
        lines += _io_session(i + 0.9, 9002 + 2 * i,
                             _EHLO + exchange + ["> 535 authorization failed (#5.7.0)"])
    c = Correlator()
    out = c.feed(_recs(lines, "aaaaaaaaaaaaaaaa")) + c.finish()
    assert len(out) == 6
    for ok, failed in zip(out[::2], out[1::2], strict=True):
        assert ok["authenticated"] is True and ok["decisions"] == []
        assert "authenticated" not in failed
        (d,) = failed["decisions"]
        assert (d["action"], d["check"], d["smtp_code"]) == ("Reject", "AUTH", 535)
    assert [o["auth_method"] for o in out] == ["login", "login", "cram-md5", "cram-md5", "plain", "plain"]


def test_recordio_pipelined_commands_get_their_replies_in_order() -> None:
    """PIPELINING: MAIL, three RCPTs and DATA sent at once, the replies come after, in
    order; the dot and QUIT sent at once too. A multi-line reply is one reply."""
    lines = _io_session(0, 4800, _EHLO + [
        "< MAIL FROM:<news@example.net>", "< RCPT TO:<bob@example.org>",
        "< RCPT TO:<victim@elsewhere.test>", "< RCPT TO:<carol@example.org>", "< DATA",
        "> 250 ok", "> 250 ok",
        "> 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        "> 250 ok", "> 354 go ahead", "< Subject: news", "< .", "< QUIT",
        "> 250 ok 1767225600 qp 5100", "> 221 mx.example.org"])
    c = Correlator()
    (s,) = c.feed(_recs(lines, "aaaaaaaaaaaaaaaa")) + c.finish()
    assert s["accepted_rcpts"] == ["bob@example.org", "carol@example.org"]
    (d,) = s["decisions"]
    assert (d["check"], d["rcpt_to"], d["smtp_code"]) == ("RCPT", "victim@elsewhere.test", 553)
    assert s["qps"] == [5100] and s["result"] == "accepted"


def test_recordio_with_only_rejections_logged() -> None:
    """A multilog recipe that keeps client lines but only the 4xx/5xx replies: a
    reply answers the latest command (its 2xx predecessors were not kept)."""
    rejected = "> 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    lines = _io_session(0, 4801, ["< EHLO relay.example.net", "< MAIL FROM:<news@example.net>",
                                  "< RCPT TO:<victim@elsewhere.test>", rejected,
                                  "< RCPT TO:<eve@elsewhere.test>", rejected])
    c = Correlator()
    (s,) = c.feed(_recs(lines, "aaaaaaaaaaaaaaaa")) + c.finish()
    assert [d["rcpt_to"] for d in s["decisions"]] == ["victim@elsewhere.test", "eve@elsewhere.test"]


def _in(lines: list[tuple[float, str]], path: str, ingest: float | None = None) -> list[dict[str, Any]]:
    """Lines as the daemon reads them from ``path`` (a multilog ``current``), read at
    ``ingest`` seconds after the labels' epoch when given."""
    parser = LineParser(source=path, file_id=path[-16:].replace("/", "x"))
    recs = [parser.parse(f"{_lab(t)} {text}\n".encode(), i * 100).to_dict()
            for i, (t, text) in enumerate(lines)]
    if ingest is not None:
        for r in recs:
            r["ingest_unix_ns"] = (1767225600 + int(ingest)) * 10**9
    return recs


_SESSION_START = [(0, "tcpserver: pid 77 from 203.0.113.5"),
                  (0.1, "tcpserver: ok 77 mx:192.0.2.1:25 :203.0.113.5::3333")]
_SESSION_END = [(0.5, "tcpserver: end 77 status 0")]


def test_an_input_lagging_another_is_not_aged_by_its_time() -> None:
    """The daemon catching up: qmail-send's log is read up to now, the smtpd log (and a
    second smtpd log) still 2 h behind: a flush cuts nothing of theirs."""
    c = Correlator()
    out = c.feed(_in([(7200, "new msg 1")], "/var/log/qmail/send/current"))
    out += c.feed(_in([(7200, "tcpserver: pid 90 from 192.0.2.9")], "/var/log/qmail/pop3/current"))
    out += c.feed(_in(_SESSION_START, "/var/log/qmail/smtpd/@400000006955b90a000f41f8.s"))
    out += c.flush()
    out += c.feed(_in(_SESSION_END, "/var/log/qmail/smtpd/current"))
    (s,) = out
    assert s["conn_pid"] == 77 and s["flags"] == [] and s["remote_ip"] == "203.0.113.5"
    # once the smtpd log itself is an hour past it, an open session is cut
    out = c.feed(_in(_SESSION_START, "/var/log/qmail/smtpd/current"))
    out += c.feed(_in([(3601, "tcpserver: status: 0/40")], "/var/log/qmail/smtpd/current"))
    (s,) = out + c.flush()
    assert s["incomplete_reason"] == "max_age"


def test_a_line_stamped_hours_ahead_of_its_reading_ages_nothing() -> None:
    """A clock 8 h ahead for a moment (fixed by NTP after): that label, read now, does
    not make every open session look 8 h old, neither now nor after a restart."""
    log = "/var/log/qmail/smtpd/current"
    c = Correlator()
    out = c.feed(_in([(28800, "tcpserver: status: 0/40")] + _SESSION_START, log, ingest=1))
    out += c.feed(_in([(28800.5, "tcpserver: status: 1/40")], log, ingest=1))  # the last line
    out += c.flush()
    c = Correlator.from_state(orjson.loads(orjson.dumps(c.to_state())))
    out += c.flush()
    out += c.feed(_in(_SESSION_END, log, ingest=2))
    (s,) = out
    assert s["flags"] == [] and s["duration_s"] == 0.5


def test_a_session_left_open_on_an_input_gone_quiet_still_ages() -> None:
    """Found by the review: each open entry aged by its own input's clock, which stops
    when the input stops logging; a session whose end never came stayed open while the
    other inputs went on for hours. The daemon's wall clock moves a quiet input's clock
    on from when its latest line was read."""
    c = Correlator()
    out = c.feed(_in(_SESSION_START, "/var/log/qmail/smtpd/current", ingest=1))  # then silence
    out += c.feed(_in([(3 * 3600, "new msg 1")], "/var/log/qmail/send/current", ingest=3 * 3600))
    assert out + c.flush() == []  # by the logs' own clocks: nothing to cut
    now = (1767225600 + 3 * 3600) * 10**9  # read 3 h after the session's lines
    (s,) = c.flush(read_ns=now)
    assert s["event"] == "smtp_session" and s["incomplete_reason"] == "max_age"
    assert s["conn_pid"] == 77
    # the clock's reading time survives a restart
    c = Correlator.from_state(orjson.loads(orjson.dumps(c.to_state())))
    assert c.clock_read


@pytest.mark.parametrize("restart", [False, True])
def test_an_input_not_read_is_not_quiet(restart: bool) -> None:
    """Found by the second review: reading paused 2 h (a full buffer, or the shipper
    stopped), the smtpd input is unread, not quiet; the first flush when reading goes on
    cut its open session, whose end was still in the backlog. Inputs not read to their
    end (the daemon says which) do not go on with the wall clock."""
    c = Correlator()
    out = c.feed(_in(_SESSION_START, "/var/log/qmail/smtpd/current", ingest=1))
    out += c.feed(_in([(1, "new msg 1")], "/var/log/qmail/send/current", ingest=1))
    if restart:
        c = Correlator.from_state(orjson.loads(orjson.dumps(c.to_state())))
    out += c.feed(_in([(2, "new msg 2")], "/var/log/qmail/send/current", ingest=7200))
    out += c.flush(read_ns=(1767225600 + 7200) * 10**9, behind={"/var/log/qmail/smtpd"})
    out += c.feed(_in(_SESSION_END, "/var/log/qmail/smtpd/current", ingest=7201))
    (s,) = [r for r in out if r["event"] == "smtp_session"]
    assert s["flags"] == [] and s["conn_pid"] == 77


def _sqmail_session(t: float, pid: int, ip: str, rcpt: str) -> list[tuple[float, str]]:
    return [(t, f"tcpserver: pid {pid} from {ip}"),
            (t + 0.001, f"tcpserver: ok {pid} mx:192.0.2.1:25 out.bulk.example:{ip}::1111"),
            (t + 0.2, f"qmail-smtpd: pid {pid} Accept::RCPT::Recipients_Cdb P:ESMTP "
                      f"S:{ip}:out.bulk.example H:out.bulk.example F:news@bulk.example T:{rcpt}"),
            (t + 1.2, f"tcpserver: end {pid} status 0")]


def _local_mail(t: float, msg: int, qp: int, rcpt: str) -> list[tuple[float, str]]:
    return [(t, f"new msg {msg}"),
            (t + 0.001, f"info msg {msg}: bytes 400 from <news@bulk.example> qp {qp} uid 7791"),
            (t + 0.002, f"starting delivery {msg}: msg {msg} to local {rcpt}"),
            (t + 0.05, f"delivery {msg}: success: did_1+0+0/"),
            (t + 0.06, f"end msg {msg}")]


def test_sqmail_sessions_with_one_sender_at_once_each_get_their_mail() -> None:
    """A bulk sender's two connections at once: the first to accept a recipient takes
    the first message from that sender, the second the next (s/qmail logs no qp)."""
    smtpd = _recs(_sqmail_session(0, 7101, "203.0.113.10", "bob@example.org")
                  + _sqmail_session(0.3, 7102, "203.0.113.11", "carol@example.org"),
                  "aaaaaaaaaaaaaaaa")
    send = _recs(_local_mail(1.0, 910, 6201, "bob@example.org")
                 + _local_mail(1.4, 911, 6202, "carol@example.org")
                 + _local_mail(400, 912, 6203, "dave@example.org"), "bbbbbbbbbbbbbbbb")
    c = Correlator()
    out = c.feed(by_time(smtpd, send)) + c.finish()
    mails = {o["msg"]: o for o in out if o["event"] == "mail"}
    assert mails[910]["session"]["conn_pid"] == 7101 and mails[910]["session"]["link"] == "sender"
    assert mails[911]["session"]["conn_pid"] == 7102
    assert "session" not in mails[912]
    sessions = {o["conn_pid"]: o for o in out if o["event"] == "smtp_session"}
    assert [m["msg"] for m in sessions[7101]["mails"]] == [910]
    assert [m["msg"] for m in sessions[7102]["mails"]] == [911]


def test_sqmail_session_whose_data_was_refused_takes_no_later_mail() -> None:
    """Found by a probe: s/qmail refused connection 7101's message at DATA (a virus;
    "Reject::DATA::Virus_Infected", AQ qmail-smtpd.c) after accepting its recipient; a
    minute later connection 7102 of the same sender queued mail 910. The mail was put
    on the virus session (first in the sender's line), 7102 named nothing."""
    refused = _sqmail_session(0, 7101, "203.0.113.10", "bob@example.org")
    refused.insert(3, (1.0, "qmail-smtpd: pid 7101 Reject::DATA::Virus_Infected P:ESMTP "
                            "S:203.0.113.10:out.bulk.example H:out.bulk.example "
                            "F:news@bulk.example T:bob@example.org 'AV scanner'"))
    smtpd = _recs(refused + _sqmail_session(60, 7102, "203.0.113.11", "carol@example.org"),
                  "aaaaaaaaaaaaaaaa")
    send = _recs(_local_mail(60.5, 910, 6201, "carol@example.org"), "bbbbbbbbbbbbbbbb")
    c = Correlator()
    out = c.feed(by_time(smtpd, send)) + c.finish()
    (mail,) = [o for o in out if o["event"] == "mail"]
    assert mail["session"]["conn_pid"] == 7102 and mail["session"]["link"] == "sender"
    sessions = {o["conn_pid"]: o for o in out if o["event"] == "smtp_session"}
    assert sessions[7101]["mails"] == [] and [m["msg"] for m in sessions[7102]["mails"]] == [910]
    assert c.sessions.senders == {}


def test_a_sender_line_saved_by_the_older_state_is_taken() -> None:
    ref = {"key": "\x007101", "event_id": "a-0s", "link": "sender", "conn_pid": 7101,
           "server": "tcpserver"}
    c = Correlator.from_state({"version": 1, "sessions": {
        "senders": [["\x00news@bulk.example", [1767225600 * 10**9, ref]]]}})
    send = _recs(_local_mail(1.0, 910, 6201, "bob@example.org"), "bbbbbbbbbbbbbbbb")
    (mail,) = c.feed(send)
    assert mail["session"]["conn_pid"] == 7101


def test_a_qp_link_saved_by_the_older_state_is_taken() -> None:
    """An older state kept one [time_ns, ref] per qp: a list of one now."""
    ref = {"key": "\x004711", "event_id": "a-0s", "link": "qp", "conn_pid": 4711,
           "server": "tcpserver"}
    c = Correlator.from_state({"version": 1, "sessions": {
        "qp_sessions": [["\x005000", [1767225600 * 10**9 + 8 * 10**8, ref]]]}})
    (mail,) = c.feed(_recs([(0.75, "new msg 300"),
                            (0.751, "info msg 300: bytes 400 from <a@example.net> qp 5000 uid 89"),
                            (0.81, "end msg 300")], "bbbbbbbbbbbbbbbb"))
    assert mail["session"]["conn_pid"] == 4711
    assert Correlator.from_state(orjson.loads(orjson.dumps(c.to_state()))).sessions.qp_mails \
        == c.sessions.qp_mails


@pytest.mark.slow
@pytest.mark.parametrize("pids", [1 << 22, 3000])
def test_qp_links_survive_one_log_read_far_behind_the_other(pids: int) -> None:
    """The daemon feeds each log as it reads it: after a stop, the send log (small) is
    caught up long before the smtpd log (recordio: every line of every session), so
    11,000 mails' info msg wait for their sessions' replies (or the other way round).
    Only the latest 10,000 were kept: the others' links were lost, both ways. And one
    link per qp: with pids wrapping every 3,000 mails (pid_max 32768 on a busy host)
    the newer mail's link replaced the older's, and a mail took a newer session's
    link with its qp for a stale one and dropped it: no mail found its session."""
    n = 11_000
    smtpd, send = [], []
    for i in range(n):
        t, pid, qp = i * 0.5, 20_000 + i, 40_000 + i % pids
        smtpd += [(t, f"tcpserver: pid {pid} from 203.0.113.9"),
                  (t + 0.3, f"{pid} > 250 ok 1767225600 qp {qp}\r "),
                  (t + 0.4, f"tcpserver: end {pid} status 0")]
        send += [(t + 0.2, f"info msg {900 + i}: bytes 400 from <a@example.net> qp {qp} uid 89"),
                 (t + 0.25, f"end msg {900 + i}")]
    smtpd_recs, send_recs = _recs(smtpd, "aaaaaaaaaaaaaaaa"), _recs(send, "bbbbbbbbbbbbbbbb")
    for first, then in ((send_recs, smtpd_recs), (smtpd_recs, send_recs)):
        c = Correlator()
        out = []
        for part in (first, then):
            for k in range(0, len(part), 2048):  # as the daemon: batches, flushes between
                out += c.feed(part[k:k + 2048]) + c.flush()
        out += c.finish()
        mails = {o["msg"]: o for o in out if o["event"] == "mail"}
        sessions = {o["conn_pid"]: o for o in out if o["event"] == "smtp_session"}
        assert len(mails) == len(sessions) == n
        if first is send_recs:  # each mail ended before its reply was read: the session names it
            assert all([m["msg"] for m in s["mails"]] == [pid - 20_000 + 900]
                       for pid, s in sessions.items())
        else:  # each session ended before its mail was read: the mail names it
            assert all(m["session"]["conn_pid"] == msg - 900 + 20_000 for msg, m in mails.items())


def test_jgreylist_verdicts_are_the_sessions():
    """jgreylist's verdicts fed no session: a greylisted client's session said only
    'no_mail', with nothing of why. Lines in jgreylist's format (from jgreylist.c v8,
    as tests/fixtures/samples/jgreylist_source_formats.txt)."""
    lines = [
        "@4000000065e5a0c0062a3d54 tcpserver: pid 23456 from 198.51.100.7",
        "@4000000065e5a0c0062a44e4 tcpserver: ok 23456 mx.example.com:192.0.2.1:25 :198.51.100.7::40001",
        "@4000000065e5a0c0062a4cf4 jgreylist[23456]: 198.51.100.7: GREY first time",
        "@4000000065e5a0c1070ed0f4 tcpserver: end 23456 status 0",
        "@4000000065e5a0c2116b7e24 tcpserver: pid 23470 from 198.51.100.7",
        "@4000000065e5a0c2116b8000 jgreylist[23470]: 198.51.100.7: OK known",
        "@4000000065e5a0c2116c0000 qmail-smtpd: pid 23470 Accept::RCPT::Recipients_Cdb P:ESMTP "
        "S:198.51.100.7:mail.example.net H:mail.example.net F:a@example.net T:b@example.com",
        "@4000000065e5a0c3116b7e24 tcpserver: end 23470 status 0",
        "@4000000065e5a0c3116c0000 tcpserver: pid 23473 from 203.0.113.10",
        "@4000000065e5a0c3116c1000 jgreylist[23473]: 203.0.113.10: DENY no reverse DNS",
        "@4000000065e5a0c4116c1000 tcpserver: end 23473 status 0",
        "@4000000065e5a0c4116c2000 jgreylist: 203.0.113.9: DENY blacklisted",  # no pid: no session to name
    ]
    out = _correlate_lines(lines)
    by = {o["conn_pid"]: o for o in out}
    assert sorted(by) == [23456, 23470, 23473] and len(out) == 3
    grey = by[23456]
    assert grey["result"] == "greylisted" and grey["flags"] == []
    assert [(d["source"], d["action"], d["smtp_code"], d["reason"]) for d in grey["decisions"]] == [
        ("jgreylist", "Deferred", 450, "first time")]
    ok = by[23470]
    assert ok["result"] == "accepted" and ok["decisions"][0]["action"] == "Info"
    denied = by[23473]
    assert denied["result"] == "rejected" and denied["remote_ip"] == "203.0.113.10"
    assert [(d["action"], d["smtp_code"]) for d in denied["decisions"]] == [("Reject", 553)]


def test_sender_lines_of_sessions_linked_by_qp_are_pruned_in_time() -> None:
    """Found measuring stats on 1M and 3M corpus lines (108 → 219 MB peak RSS): a
    session accepting a recipient waits in its sender's line for a mail to link by
    sender (s/qmail without recordio); one whose mail linked by qp stayed there till
    100,000 senders were waiting. Once qmail-send's log is past sender_link_s, the
    line is dropped as the qp links are."""
    smtpd = _recs(_sqmail_session(0, 7101, "203.0.113.10", "bob@example.org")
                  + _sqmail_session(30, 7102, "203.0.113.11", "carol@example.org"),
                  "aaaaaaaaaaaaaaaa")
    late = _recs([(400.0, "new msg 999")], "bbbbbbbbbbbbbbbb")
    c = Correlator()
    c.feed(by_time(smtpd))
    assert list(c.sessions.senders) == ["\x00news@bulk.example"]
    c.feed(late)
    c.flush()
    assert c.sessions.senders == {}


def test_qpsmtpd_sessions_and_qp_link() -> None:
    """Debian's qpsmtpd-forkserver under multilog (tests/test_qpsmtpd_real.py's set-up):
    "Accepted connection" opens a session under the child's pid, its commands and
    replies are read as recordio's, "cleaning up after N" ends it; the reply's qp
    links the mail qmail-send then logs (its info msg line made for the test)."""
    lines = (Path(__file__).parent / "fixtures" / "samples" / "qpsmtpd_094_real_multilog.txt"
             ).read_bytes().splitlines()[1:]
    # qmail-send's line for the message qmail-queue (pid 4701) queued, just after the reply
    lines.insert(next(i for i, ln in enumerate(lines) if b"Queued!" in ln) + 1,
                 b"@400000006b0d404501fd0e5d info msg 1311462: bytes 222 from <a@example.net> qp 4701 uid 0")
    lines.insert(next(i for i, ln in enumerate(lines) if b"info msg" in ln) + 1,
                 b"@400000006b0d404501fd0e5e end msg 1311462")
    parser = LineParser(file_id="0123456789abcdef")
    recs = [r.to_dict() for r in parser.parse_batch(lines, list(range(len(lines))))]
    c = Correlator()
    out = c.feed(recs) + c.finish()
    sessions = [o for o in out if o["event"] == "smtp_session"]
    [mail] = [o for o in out if o["event"] == "mail"]
    assert [(s["server"], s["conn_pid"], s["result"], s["flags"]) for s in sessions] == [
        ("qpsmtpd", 4681, "accepted", []), ("qpsmtpd", 4704, "rejected", []),
        ("qpsmtpd", 4707, "rejected", [])]
    ok, badhelo, early = sessions
    assert (ok["remote_ip"], ok["remote_host"], ok["helo"], ok["proto"], ok["mail_from"]) == (
        "127.0.0.1", "client.example.net", "client.example.net", "ESMTP", "a@example.net")
    assert ok["accepted_rcpts"] == ["b@example.org"] and ok["qps"] == [4701]
    assert [(d["source"], d["action"], d["check"], d["smtp_code"], d.get("rcpt_to"), d.get("dsn"))
            for d in ok["decisions"]] == [("qpsmtpd", "Reject", "RCPT", 550, "c@other.test", "5.7.1")]
    assert [(d["check"], d["smtp_code"]) for d in badhelo["decisions"]] == [("HELO", 550)]
    assert badhelo["helo"] == "localhost"
    assert [(d["check"], d["smtp_code"]) for d in early["decisions"]] == [("REPLY", 550)]
    assert ok["mails"] == [{"msg": 1311462, "qp": 4701, "event_id": mail["event_id"]}]
    assert mail["session"] == {
        "event_id": ok["event_id"], "link": "qp", "conn_pid": 4681, "server": "qpsmtpd",
        "remote_ip": "127.0.0.1", "remote_host": "client.example.net", "proto": "ESMTP",
        "helo": "client.example.net"}


def test_recordio_lines_after_tcpservers_end_are_still_their_sessions() -> None:
    """Found by a black-box review with real ucspi-tcp (tcpserver -v recordio …): the
    copier recordio runs outlives the program, so a session's last replies, its
    ``250 ok … qp N`` among them, were logged ms after ``tcpserver: end``. They opened
    a second, partial session for the same connection, and the mail was linked to it,
    without its client. The reviewer's lines (times as logged, PIPELINING)."""
    base = 1_767_225_600

    def at(t: float, text: str) -> str:
        secs = int(t)
        return f"@{(1 << 62) + 10 + base + secs:016x}{int(round((t - secs) * 1e9)):08x} {text}"

    smtpd = [at(*x) for x in [
        (1.0001, "tcpserver: pid 2053 from 192.0.2.7"),
        (1.0002, "tcpserver: ok 2053 :192.0.2.1:25 :192.0.2.7::42742"),
        (1.0020, "2053 < EHLO c1.test"), (1.0021, "2053 < MAIL FROM:<s1@c.test>"),
        (1.0022, "2053 < RCPT TO:<bob@mx.test>"), (1.0023, "2053 < DATA"), (1.0024, "2053 < ."),
        (1.0025, "2053 < QUIT"), (1.0040, "2053 > 220 mx.test ESMTP"), (1.0070, "2053 > 250-mx.test"),
        (1.0071, "2053 > 250 PIPELINING"), (1.0072, "2053 > 250 ok"), (1.0073, "2053 > 250 ok"),
        (1.0074, "2053 > 354 go ahead"),
        (1.0136, "tcpserver: end 2053 status 0"),
        (1.0170, "2053 > 250 ok 1796064793 qp 55752"), (1.0171, "2053 > 221 mx.test"),
        (1.0172, "2053 > [EOF]"),
        # the same pid much later: another connection, not the ended one's lines
        (9.0, "tcpserver: pid 2053 from 192.0.2.9"), (9.1, "2053 > 220 mx.test ESMTP"),
        (9.2, "tcpserver: end 2053 status 0"),
    ]]
    send = [at(*x) for x in [
        (1.0100, "new msg 300000"), (1.0101, "info msg 300000: bytes 300 from <s1@c.test> qp 55752 uid 64011"),
        (1.2, "starting delivery 1: msg 300000 to local bob@mx.test"), (1.3, "delivery 1: success: did_0+0+1/"),
        (1.4, "end msg 300000"),
    ]]
    ps = LineParser(source="/var/log/qmail/smtpd/current", file_id="aaaaaaaaaaaaaaaa")
    pq = LineParser(source="/var/log/qmail/send/current", file_id="bbbbbbbbbbbbbbbb")
    recs_s = [ps.parse(ln.encode() + b"\n", i * 100).to_dict() for i, ln in enumerate(smtpd)]
    recs_q = [pq.parse(ln.encode() + b"\n", i * 100).to_dict() for i, ln in enumerate(send)]
    for batches in ([recs_s, recs_q], [by_time(recs_s, recs_q)]):  # the daemon's way, track's
        c = Correlator()
        out = [o for b in batches for o in c.feed(b)] + c.finish()
        sessions = [o for o in out if o["event"] == "smtp_session"]
        assert [(s["remote_ip"], s["flags"]) for s in sessions] == [("192.0.2.7", []), ("192.0.2.9", [])]
        # held for its DATA verdict past its end: it names the qp, whatever the batches
        assert sessions[0]["qps"] == [55752]
        (mail,) = [o for o in out if o["event"] == "mail"]
        link = mail["session"]
        assert (link["event_id"], link["remote_ip"], link["helo"], link["conn_pid"]) == (
            sessions[0]["event_id"], "192.0.2.7", "c1.test", 2053)


def test_a_session_whose_message_was_refused_at_data_is_rejected() -> None:
    """Found by a black-box review: a recipient accepted, then the message refused after
    its dot (qmail-smtpd's 552 for databytes, a scanner's 554), nothing queued: the
    session said "accepted"."""
    lines = [
        "@4000000052fafd8d3298434c tcpserver: pid 7001 from 192.0.2.7",
        "@4000000052fafd8d3298434d tcpserver: ok 7001 mx:192.0.2.1:25 :192.0.2.7::40000",
        "@4000000052fafd8d3298434e 7001 > 220 mx ESMTP",
        "@4000000052fafd8d3298434f 7001 < MAIL FROM:<a@example.org>",
        "@4000000052fafd8d32984350 7001 > 250 ok",
        "@4000000052fafd8d32984351 7001 < RCPT TO:<b@example.net>",
        "@4000000052fafd8d32984352 7001 > 250 ok",
        "@4000000052fafd8d32984353 7001 < DATA",
        "@4000000052fafd8d32984354 7001 > 354 go ahead",
        "@4000000052fafd8d32984355 7001 < .",
        "@4000000052fafd8d32984356 7001 > 552 sorry, that message size exceeds my databytes limit (#5.3.4)",
        "@4000000052fafd8d32984357 7001 < QUIT",
        "@4000000052fafd8d32984358 7001 > 221 mx",
        "@4000000052fafd8d32984359 tcpserver: end 7001 status 0",
    ]
    (s,) = _correlate_lines(lines)
    assert s["accepted_rcpts"] == ["b@example.net"] and s["qps"] == []
    assert [(d["check"], d["smtp_code"]) for d in s["decisions"]] == [("DATA", 552)]
    assert s["result"] == "rejected"
    # the same with the message queued: accepted
    queued = [ln.replace("552 sorry, that message size exceeds my databytes limit (#5.3.4)",
                         "250 ok 1796064793 qp 55752") for ln in lines]
    (s,) = _correlate_lines(queued)
    assert s["qps"] == [55752] and s["result"] == "accepted"


def test_a_503_at_data_refuses_no_message() -> None:
    """Found by an end-to-end run of a whole host: a client's recipients all refused, its
    DATA answered ``503 RCPT first`` (qmail-smtpd: no recipient, so no message), then a
    new transaction whose recipients were accepted (a callout's MAIL/RCPT/QUIT): the
    session said "rejected", as for a message refused at DATA, with accepted_rcpts."""
    lines = [
        "@4000000052fafd8d3298434c tcpserver: pid 7001 from 192.0.2.7",
        "@4000000052fafd8d3298434d tcpserver: ok 7001 mx:192.0.2.1:25 :192.0.2.7::40000",
        "@4000000052fafd8d3298434e 7001 > 220 mx ESMTP",
        "@4000000052fafd8d3298434f 7001 < MAIL FROM:<a@example.org>",
        "@4000000052fafd8d32984350 7001 > 250 ok",
        "@4000000052fafd8d32984351 7001 < RCPT TO:<nosuch@example.net>",
        "@4000000052fafd8d32984352 7001 > 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        "@4000000052fafd8d32984353 7001 < DATA",
        "@4000000052fafd8d32984354 7001 > 503 RCPT first (#5.5.1)",
        "@4000000052fafd8d32984355 7001 < RSET",
        "@4000000052fafd8d32984356 7001 > 250 flushed",
        "@4000000052fafd8d32984357 7001 < MAIL FROM:<a@example.org>",
        "@4000000052fafd8d32984358 7001 > 250 ok",
        "@4000000052fafd8d32984359 7001 < RCPT TO:<b@example.net>",
        "@4000000052fafd8d3298435a 7001 > 250 ok",
        "@4000000052fafd8d3298435b 7001 < QUIT",
        "@4000000052fafd8d3298435c 7001 > 221 mx",
        "@4000000052fafd8d3298435d tcpserver: end 7001 status 0",
    ]
    (s,) = _correlate_lines(lines)
    assert s["accepted_rcpts"] == ["b@example.net"] and s["qps"] == []
    assert [(d["check"], d["smtp_code"]) for d in s["decisions"]] == [("RCPT", 553), ("DATA", 503)]
    assert s["result"] == "accepted"
    # the 503 alone (no recipient ever accepted) is a refused session, as before
    (s,) = _correlate_lines(lines[:11] + lines[15:])
    assert s["accepted_rcpts"] == [] and s["result"] == "rejected"


def _bulk_session(t: float, pid: int, ip: str, rcpt: str, qp: int, reply_at: float) -> list[tuple[float, str]]:
    """s/qmail's decision and recordio's replies of one connection of a bulk sender."""
    return [(t, f"tcpserver: pid {pid} from {ip}"),
            (t + 0.001, f"tcpserver: ok {pid} mx:192.0.2.1:25 out.bulk.example:{ip}::1111"),
            (t + 0.2, f"qmail-smtpd: pid {pid} Accept::RCPT::Recipients_Cdb P:ESMTP "
                      f"S:{ip}:out.bulk.example H:out.bulk.example F:news@bulk.example T:{rcpt}"),
            (t + 0.21, f"{pid} > 250 ok\r "),
            (t + 0.3, f"{pid} < DATA\r "),
            (t + 0.31, f"{pid} > 354 go ahead\r "),
            (t + 0.4, f"{pid} < .\r "),
            (reply_at, f"{pid} > 250 ok 1767225600 qp {qp}\r "),
            (reply_at + 0.5, f"tcpserver: end {pid} status 0")]


def test_a_qp_link_replaces_the_sender_guess_made_before_the_reply() -> None:
    """Found by an end-to-end run of a whole host (multilog, tcpserver, recordio): qmail-send
    logs ``info msg`` as soon as qmail-queue is done, often before the smtpd's ``250 ok …
    qp`` is logged, and the mail was then linked by sender; the qp link that came next did
    not replace the guess (16 of 205 SMTP mails said ``link: sender``). With two
    connections of one sender at once the guess takes the first one in the line, so
    connection 7102's message was put on 7101, and stayed there, its qp notwithstanding."""
    smtpd = _recs(_bulk_session(0, 7101, "203.0.113.10", "bob@example.org", 6201, 1.15)
                  + _bulk_session(0.05, 7102, "203.0.113.11", "carol@example.org", 6202, 1.05),
                  "aaaaaaaaaaaaaaaa")
    # 7102's message is queued first; each info msg comes before its reply
    send = _recs(_local_mail(1.0, 911, 6202, "carol@example.org")
                 + _local_mail(1.1, 910, 6201, "bob@example.org"), "bbbbbbbbbbbbbbbb")
    c = Correlator()
    out = c.feed(by_time(smtpd, send)) + c.finish()
    mails = {o["msg"]: o for o in out if o["event"] == "mail"}
    assert (mails[911]["session"]["conn_pid"], mails[911]["session"]["link"]) == (7102, "qp")
    assert (mails[910]["session"]["conn_pid"], mails[910]["session"]["link"]) == (7101, "qp")
    sessions = {o["conn_pid"]: o for o in out if o["event"] == "smtp_session"}
    assert [m["msg"] for m in sessions[7101]["mails"]] == [910]
    assert [m["msg"] for m in sessions[7102]["mails"]] == [911]


def test_a_message_named_by_qlog_and_by_recordio_is_one_qp_linked_once() -> None:
    """Found by an end-to-end run of a whole host: a qmail-smtpd with the qlog patch under
    recordio names each message's qp twice (``qlogreceived: … qp=N`` and the ``250 ok …
    qp N`` reply): the session listed it twice (135 of 140 sessions: ``2 queued`` for
    one), and the second report left a link of its own waiting, which a later message
    with that qp (pids wrap within minutes on a busy host: here qmail-inject's) took."""
    pid = 4711
    smtpd = _recs([
        (0, f"tcpserver: pid {pid} from 203.0.113.9"),
        (0.001, f"tcpserver: ok {pid} mx.example.org:192.0.2.1:25 :203.0.113.9::50123"),
        (0.5, f"{pid} < DATA\r "),
        (0.51, f"{pid} > 354 go ahead\r "),
        (0.7, f"{pid} < .\r "),
        (0.79, "qlogreceived: result=accepted code=250 reason=queueaccept detail= helo=mail.example.net "
               "mailfrom=alice@example.net rcptto=bob@example.org relay=no rcpthosts= size=4711 "
               "authuser= authtype= encrypted= sslverified=no localip=192.0.2.1 localport=25 "
               f"remoteip=203.0.113.9 remoteport=50123 remotehost=mail.example.net qp=5000 pid={pid}"),
        (0.8, f"{pid} > 250 ok 1767225600 qp 5000\r "),
        (0.93, f"tcpserver: end {pid} status 0")], "aaaaaaaaaaaaaaaa")
    send = _recs([(0.795, "new msg 300"),
                  (0.796, "info msg 300: bytes 400 from <alice@example.net> qp 5000 uid 89"),
                  (0.81, "end msg 300"),
                  (60, "new msg 301"),
                  (60.001, "info msg 301: bytes 500 from <root@mx.example.org> qp 5000 uid 0"),
                  (60.2, "end msg 301")], "bbbbbbbbbbbbbbbb")
    c = Correlator()
    out = c.feed(by_time(smtpd, send)) + c.finish()
    (sess,) = [o for o in out if o["event"] == "smtp_session"]
    assert sess["qps"] == [5000] and "1 queued" in sess["message"]
    mails = {o["msg"]: o for o in out if o["event"] == "mail"}
    assert mails[300]["session"]["conn_pid"] == pid
    assert "session" not in mails[301]


def test_a_forwarded_copy_logged_before_its_forwarding_takes_no_session() -> None:
    """Found by an end-to-end run of a whole host: qmail-send logged a forwarded copy's
    ``info msg`` before the local delivery's ``did_0+1+0/qp_N/`` (it reads its queue and
    the delivery's report in either order); the copy, of the same sender, was put on a
    connection of that sender still waiting for its message, by sender, and kept it once
    known for a copy; that connection's own message then found no session."""
    smtpd = _recs(_sqmail_session(0, 7101, "203.0.113.10", "fwd@example.org")
                  + _sqmail_session(0.3, 7102, "203.0.113.11", "carol@example.org"),
                  "aaaaaaaaaaaaaaaa")
    send = _recs([(1.0, "new msg 910"),
                  (1.001, "info msg 910: bytes 400 from <news@bulk.example> qp 6201 uid 7791"),
                  (1.002, "starting delivery 1: msg 910 to local fwd@example.org"),
                  (1.02, "new msg 911"),  # the copy qmail-local queued, before the report
                  (1.021, "info msg 911: bytes 500 from <news@bulk.example> qp 6209 uid 7791"),
                  (1.05, "delivery 1: success: did_0+1+0/qp_6209/"),
                  (1.06, "end msg 910"),
                  (1.07, "starting delivery 2: msg 911 to remote out@example.net"),
                  (1.2, "delivery 2: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/"),
                  (1.21, "end msg 911")]
                 + _local_mail(1.4, 912, 6202, "carol@example.org"), "bbbbbbbbbbbbbbbb")
    c = Correlator()
    out = c.feed(by_time(smtpd, send)) + c.finish()
    mails = {o["msg"]: o for o in out if o["event"] == "mail"}
    assert mails[910]["session"]["conn_pid"] == 7101
    assert mails[911]["forward_of"]["msg"] == 910 and "session" not in mails[911]
    assert mails[912]["session"]["conn_pid"] == 7102
    sessions = {o["conn_pid"]: o for o in out if o["event"] == "smtp_session"}
    assert [m["msg"] for m in sessions[7101]["mails"]] == [910]
    assert [m["msg"] for m in sessions[7102]["mails"]] == [912]
    assert c.sessions.senders == {}


def test_a_session_whose_guessed_mail_was_another_sessions_gets_its_own() -> None:
    """Found by the review: a sender guess replaced by a qp link took the mail off the
    guessed session, but left that session out of its sender's line, where the guess had
    taken it: its own message then found no session. Connection 7101 (s/qmail, no
    recordio) accepted a recipient first; 7102's message, queued first, was guessed to
    it, then 7102's ``250 ok … qp`` named it; 7101's message 910 came next."""
    smtpd = _recs(_sqmail_session(0, 7101, "203.0.113.10", "bob@example.org")[:3]
                  + _bulk_session(0.05, 7102, "203.0.113.11", "carol@example.org", 6202, 1.05)
                  + [(3.0, "tcpserver: end 7101 status 0")], "aaaaaaaaaaaaaaaa")
    send = _recs(_local_mail(1.0, 911, 6202, "carol@example.org")
                 + _local_mail(2.0, 910, 6201, "bob@example.org"), "bbbbbbbbbbbbbbbb")
    c = Correlator()
    out = c.feed(by_time(smtpd, send)) + c.finish()
    mails = {o["msg"]: o for o in out if o["event"] == "mail"}
    assert (mails[911]["session"]["conn_pid"], mails[911]["session"]["link"]) == (7102, "qp")
    assert (mails[910]["session"]["conn_pid"], mails[910]["session"]["link"]) == (7101, "sender")
    sessions = {o["conn_pid"]: o for o in out if o["event"] == "smtp_session"}
    assert [m["msg"] for m in sessions[7101]["mails"]] == [910]
    assert [m["msg"] for m in sessions[7102]["mails"]] == [911]
