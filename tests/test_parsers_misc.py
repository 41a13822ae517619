"""vpopmail vchkpw, chkuser and simscan parsers through the whole LineParser path,
on real sample lines; the cleartext password vchkpw logs must never leave redacted."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.parse import LineParser, ParseOptions
from shipper.parsers.misc import (
    parse_chkuser,
    parse_dovecot,
    parse_jgreylist,
    parse_simscan,
    parse_spamdyke,
    parse_spamdyke_untagged,
    parse_vchkpw,
)
from shipper.severity import severity

SAMPLES = Path(__file__).parent / "fixtures" / "samples"


def _lines(name: str) -> list[str]:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    assert text.startswith("# source:")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _parse(line: str, redact: bool = True):
    return LineParser(ParseOptions(redact=redact)).parse(line.encode())


VPOP = _lines("ossec_docs_vpopmail_log_samples.txt")
# 'vpopmail[18917:' lacks its ']': the header's time, host, tag and pid are still read.
VPOP_MALFORMED = {"Jul  6 10:21:52 srv vpopmail[18917: vchkpw-smtp: (CRAM-MD5) login success user@my_domain:1.2.3.4"}

VCHKPW = [
    ("Sep 14 07:21:42 iron vpopmail[939]: vchkpw-pop3: password fail user1@xxxx.com:192.168.2.1", 939,
     {"service": "pop3", "result": "failure", "reason": "password fail", "auth_user": "user1@xxxx.com",
      "remote_ip": "192.168.2.1"}),
    # (the poster hid the address: "x.x.x.x" is no address, so no remote_ip)
    ("vpopmail[2100]: vchkpw-pop3: vpopmail user not found abc@xxx.com:x.x.x.x", 2100,
     {"service": "pop3", "result": "failure", "reason": "vpopmail user not found", "auth_user": "abc@xxx.com"}),
    ("Jun 9 09:04:16 www vpopmail[65851]: vchkpw-pop3: vpopmail user not found myuserid@:208.210.222.68", 65851,
     {"service": "pop3", "result": "failure", "reason": "vpopmail user not found", "auth_user": "myuserid@",
      "remote_ip": "208.210.222.68"}),
    ("Feb 24 06:48:03 circle vpopmail[12039]: vchkpw-pop3: password fail [EMAIL PROTECTED]:67.109.191.46", 12039,
     {"service": "pop3", "result": "failure", "reason": "password fail", "auth_user": "[EMAIL PROTECTED]",
      "remote_ip": "67.109.191.46"}),
    ("Jul  7 11:23:52 srv vpopmail[20057]: vchkpw-pop3: (PLAIN) login success user@my_domain:1.2.3.4", 20057,
     {"service": "pop3", "result": "success", "method": "PLAIN", "auth_user": "user@my_domain",
      "remote_ip": "1.2.3.4"}),
    ("Jul  7 11:08:51 srv vpopmail[19743]: vchkpw-submission: (CRAM-MD5) login success user@my_domain:1.2.3.4",
     19743, {"service": "submission", "result": "success", "method": "CRAM-MD5", "auth_user": "user@my_domain",
             "remote_ip": "1.2.3.4"}),
    ("Jul  5 16:02:13 srv vpopmail[4160]: vchkpw-pop3: null password given oneone1:121.243.18.134", 4160,
     {"service": "pop3", "result": "failure", "reason": "null password given", "auth_user": "oneone1",
      "remote_ip": "121.243.18.134"}),
    ("Jul  9 10:19:58 srv vpopmail[5676]: vchkpw-webmail: null password given user@my_domain:127.0.0.1", 5676,
     {"service": "webmail", "result": "failure", "reason": "null password given", "auth_user": "user@my_domain",
      "remote_ip": "127.0.0.1"}),
    ("Jul  7 07:10:18 srv vpopmail[4800]: vchkpw-pop3: password fail (pass: 'test') user@my_domain:1.2.3.4", 4800,
     {"service": "pop3", "result": "failure", "reason": "password fail", "auth_user": "user@my_domain",
      "remote_ip": "1.2.3.4"}),
]


@pytest.mark.parametrize("line,pid,fields", VCHKPW)
def test_vchkpw_lines(line, pid, fields):
    assert line in VPOP
    rec = _parse(line)
    assert (rec.program, rec.pid, rec.event) == ("vpopmail", pid, "pop_auth")
    assert rec.fields == fields


def test_every_vpopmail_sample_line_parses():
    counts = {"success": 0, "failure": 0}
    for line in VPOP:
        rec = _parse(line)
        if line in VPOP_MALFORMED:
            assert (rec.host, rec.pid, rec.time_source) == ("srv", 18917, "syslog")
            assert rec.raw == line
        assert (rec.program, rec.event) == ("vpopmail", "pop_auth"), line
        assert rec.fields["service"] in {"pop3", "pop3s", "imap", "imaps", "smtp", "submission", "webmail"}
        assert rec.fields["auth_user"]
        assert rec.fields.get("remote_ip") or "x.x.x.x" in line  # a hidden address is none
        counts[rec.fields["result"]] += 1
    assert counts == {"success": 6, "failure": 47}


PASSWORD_LINES = [ln for ln in VPOP if "(pass: '" in ln]


@pytest.mark.parametrize("line", PASSWORD_LINES)
def test_cleartext_password_is_redacted(line):
    secret = line.split("(pass: '", 1)[1].split("')", 1)[0]
    rec = _parse(line)
    assert rec.flags == ["redacted"]
    assert secret not in rec.raw and secret not in rec.message
    assert "(pass: '[REDACTED]')" in rec.message
    assert rec.raw == line.replace(f"(pass: '{secret}')", "(pass: '[REDACTED]')")
    assert secret not in rec.to_json().decode()
    assert "_redact" not in rec.fields
    plain = _parse(line, redact=False)  # redaction can be turned off: the line stays as read
    assert plain.raw == line and plain.flags is None


def test_redaction_of_headerless_lines():
    line = "vpopmail[65827]: vchkpw-smtp: password fail (pass: '<65825.1118321790@mail.xxx.com>') myuserid@xxx.com:208.210.222.68"
    rec = _parse(line)
    assert (rec.program, rec.pid, rec.event) == ("vpopmail", 65827, "pop_auth")
    assert rec.flags == ["time_ingest", "redacted"]
    assert "65825.1118321790" not in rec.raw and "65825.1118321790" not in rec.message
    # The parser redacts the text it was given (after "vpopmail[PID]: "); how the dispatcher
    # splices it into message/raw is shipper.parse's business.
    assert rec.message.endswith("vchkpw-smtp: password fail (pass: '[REDACTED]') myuserid@xxx.com:208.210.222.68")


TOASTER = _lines("qmail_toaster_chkuser_simscan_public.txt")


def test_chkuser_lines():
    rec = _parse(TOASTER[0])
    assert (rec.program, rec.event, rec.time_source) == ("chkuser", "chkuser", "accustamp")
    assert rec.fields == {"decision": "accepted any rcpt", "mail_from": "test@testaja.com",
                          "auth_user": "postmaster@testaja.lg", "remote_host": "unknown", "remote_ip": "127.0.0.1",
                          "rcpt_to": "postmaster@testaja.lg", "text": "accepted any recipient for any rcpt domain"}
    rec = _parse(TOASTER[2])
    assert (rec.program, rec.event, rec.time_source) == ("chkuser", "chkuser", "tai64n")
    assert rec.fields == {"decision": "accepted sender", "mail_from": "newinfotr@adv.strawberrynet.com",
                          "helo": "smtp156.strawberrynet.com", "remote_host": "unknown",
                          "remote_ip": "202.181.189.53", "text": "sender accepted"}


def test_chkuser_reject_and_odd_forms():
    got = parse_chkuser("CHKUSER rejected rcpt: from <a@b.c::> remote <helo:host.example:2001:db8::5> "
                        "rcpt <x@y.z> : not existing recipient\r")
    assert got == ("chkuser", {"decision": "rejected rcpt", "mail_from": "a@b.c", "helo": "helo",
                               "remote_host": "host.example", "remote_ip": "2001:db8::5", "rcpt_to": "x@y.z",
                               "text": "not existing recipient"})
    assert parse_chkuser("CHKUSER something new") == ("chkuser", {"text": "something new"})


@pytest.mark.parametrize(("remote", "helo", "host", "ip"), [
    # EHLO with an RFC 5321 address literal, the usual form of IPv6 clients
    ("[IPv6:2001:db8::5]:unknown:2001:db8::5", "[IPv6:2001:db8::5]", "unknown", "2001:db8::5"),
    ("[IPv6:::1]:localhost:::1", "[IPv6:::1]", "localhost", "::1"),
    ("localhost:25:mail.example.org:192.0.2.7", "localhost:25", "mail.example.org", "192.0.2.7"),
    ("a:b::192.0.2.7", "a:b", None, "192.0.2.7"),
    ("helo::2001:db8::1", "helo", None, "2001:db8::1"),
    ("[192.0.2.7]:host.example:192.0.2.7", "[192.0.2.7]", "host.example", "192.0.2.7"),
])
def test_chkuser_helo_with_colons(remote: str, helo: str, host: str | None, ip: str) -> None:
    _, f = parse_chkuser(f"CHKUSER accepted rcpt: from <a@b.c::> remote <{remote}> rcpt <x@y.z> : found")
    assert (f.get("helo"), f.get("remote_host"), f.get("remote_ip")) == (helo, host, ip)
    assert parse_chkuser("CHKUSERS x") is None and parse_chkuser("") is None


def test_simscan_lines():
    rec = _parse(TOASTER[3])
    assert (rec.program, rec.pid, rec.event) == ("simscan", None, "simscan")
    assert rec.fields == {"conn_pid": 25608, "verdict": "CLEAN", "score": 0.0, "threshold": 0.0,
                          "scan_time": 3.3011, "mail_from": "root@mail.denbaguse.ta",
                          "rcpt_to": "postmaster@testaja.lg"}
    # simscan 1.4.0's SIMSCAN_DEBUG lines: no "[PPID]" (newer releases write one)
    debug = [_parse(line) for line in TOASTER[4:]]
    assert [(r.program, r.pid, r.event) for r in debug] == [("simscan", None, "simscan_info")] * 9
    assert [r.fields for r in debug] == [{"text": t} for t in (
        "starting: work dir: /var/qmail/simscan/1277102187.556394.25609", "calling clamdscan",
        "cdb looking up version clamav", "normal clamdscan return code: 0", "calling spamc",
        "calling /usr/bin/spamc  spamc -u postmaster@testaja.lg", "cdb looking up version spam",
        "done, execing qmail-queue", "qmail-queue exited 0")]


SIMSCAN = [
    # simscan.c log_message: spam scans carry (hits/required); the subject may hold ':'
    ("simscan:[4242]:SPAM REJECT (12.50/5.00):1.2000s:Buy: now: cheap:198.51.100.7:s@spam.example:a@x.org,b@x.org",
     {"conn_pid": 4242, "verdict": "SPAM REJECT", "score": 12.5, "threshold": 5.0, "scan_time": 1.2,
      "subject": "Buy: now: cheap", "remote_ip": "198.51.100.7", "mail_from": "s@spam.example",
      "rcpt_to": "a@x.org,b@x.org"}),
    ("simscan:[77]:CLAMAV:0.4311s:Eicar-Test-Signature:192.0.2.9::u@example.org",
     {"conn_pid": 77, "verdict": "CLAMAV", "scan_time": 0.4311, "subject": "Eicar-Test-Signature",
      "remote_ip": "192.0.2.9", "mail_from": "", "rcpt_to": "u@example.org"}),
    ("simscan:[77]: starting: work dir: /var/qmail/simscan/1.2.3", {"conn_pid": 77,
                                                                     "text": "starting: work dir: /var/qmail/simscan/1.2.3"}),
]


@pytest.mark.parametrize("line,fields", SIMSCAN)
def test_simscan_grammar(line, fields):
    rec = _parse("@400000004ccc70a30b5515bc " + line)
    assert rec.program == "simscan"
    assert rec.event == ("simscan_info" if "text" in fields else "simscan")
    assert rec.fields == fields


# jgreylist's verdicts, field by field; its pid is tcpserver's child's (it runs in the
# same process, exec'd before qmail-smtpd), so it is the session's conn_pid
JGREYLIST_EXPECTED = [
    (23456, "greylist", {"conn_pid": 23456, "remote_ip": "198.51.100.7", "action": "GREY", "reason": "first time"}, 5),
    (23456, "greylist_info", {"conn_pid": 23456, "text": ">>> 220 jgreylist v8"}, 6),
    (23456, "greylist_info", {"conn_pid": 23456, "text": "<<< HELO mail.example.net"}, 6),
    (23460, "greylist", {"conn_pid": 23460, "remote_ip": "198.51.100.7", "action": "GREY", "reason": "too soon"}, 5),
    (23470, "greylist", {"conn_pid": 23470, "remote_ip": "198.51.100.7", "action": "OK", "reason": "known"}, 6),
    (23471, "greylist", {"conn_pid": 23471, "remote_ip": "2001:db8::7", "action": "OK", "reason": "whitelisted"}, 6),
    (None, "greylist", {"remote_ip": "203.0.113.9", "action": "DENY", "reason": "blacklisted"}, 5),
    (23473, "greylist", {"conn_pid": 23473, "remote_ip": "203.0.113.10", "action": "DENY", "reason": "no reverse DNS"}, 5),
    (23474, "greylist", {"conn_pid": 23474, "remote_ip": "203.0.113.11", "action": "HANGUP",
                         "reason": "too many RCPT commands"}, 5),
    (23475, "greylist_info", {"conn_pid": 23475, "text": "TCPREMOTEIP is empty or missing"}, 6),
    (27730, "greylist", {"conn_pid": 27730, "remote_ip": "1.2.3.4", "action": "DENY", "reason": "no reverse DNS"}, 5),
]


def test_jgreylist_lines_field_by_field() -> None:
    lines = _lines("jgreylist_source_formats.txt")
    assert len(lines) == len(JGREYLIST_EXPECTED)
    for line, (pid, event, fields, sev) in zip(lines, JGREYLIST_EXPECTED, strict=True):
        rec = _parse(line)
        assert (rec.program, rec.pid, rec.event, rec.fields) == ("jgreylist", pid, event, fields), line
        assert severity(rec.to_dict()) == sev, line
    assert parse_jgreylist("") is None and parse_jgreylist(" \r") is None


def test_unprefixed_parsers_reject_other_text_fast_path():
    for text in ("status: local 1/10 remote 0/100", "[", "[x]:CLEAN", "", "simscan", "vchkpw-", "CHKUSER"):
        assert parse_chkuser(text) is None or text.startswith("CHKUSER ")
        assert parse_simscan(text) is None
        assert parse_vchkpw(text) is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    for fn in (parse_vchkpw, parse_chkuser, parse_simscan, parse_spamdyke, parse_spamdyke_untagged,
               parse_dovecot):
        for t in (text, "vchkpw-" + text, "CHKUSER " + text, "simscan:[1]:" + text, "[1]:" + text,
                  "ALLOWED from: " + text, "ERROR(" + text, "X origin_ip: " + text,
                  "imap-login: Login: user=<" + text, "imap(" + text, "pop3-login: Error: " + text):
            got = fn(t)
            assert got is None or (isinstance(got[0], str) and isinstance(got[1], dict))


@pytest.mark.parametrize(("tail", "subject", "ip"), [
    ("Subj:2001:db8::1", "Subj", "2001:db8::1"),
    ("Subj:::ffff:192.0.2.1", "Subj", "::ffff:192.0.2.1"),
    ("time 12:30:192.0.2.1", "time 12:30", "192.0.2.1"),
    ("Re: a: b:(null)", "Re: a: b", None),
    (":192.0.2.1", None, "192.0.2.1"),
])
def test_simscan_ip_of_any_kind_after_a_subject_with_colons(tail, subject, ip):
    _, f = parse_simscan(f"simscan:[12345]:CLEAN (1.00/5.00):0.5000s:{tail}:a@b.example:c@d.example")
    assert (f.get("subject"), f.get("remote_ip"), f["mail_from"], f["rcpt_to"]) == (
        subject, ip, "a@b.example", "c@d.example")


@pytest.mark.parametrize("cap", [75, 80, 85])
def test_vchkpw_line_cut_inside_the_password_is_redacted_to_the_end(cap):
    """Found in review: a line longer than the cap, cut inside (pass: '…'), shipped
    the start of the password and made a user and an address of it."""
    line = (b"Jun  9 09:05:00 www vpopmail[65855]: vchkpw-pop3: password fail "
            b"(pass: 'hunter2secret') u@xxx.com:208.210.222.68")
    rec = LineParser(ParseOptions(max_line=cap)).parse(line)
    assert rec.event == "pop_auth" and {"truncated", "redacted"} <= set(rec.flags)
    assert "hunt" not in rec.raw + rec.message and rec.raw.endswith("(pass: '[REDACTED]")
    assert rec.fields["reason"] == "password fail" and "auth_user" not in rec.fields


SPAMDYKE = _lines("spamdyke_public.txt")


def test_spamdyke_lines_field_by_field():
    untagged, syslog = (_parse(x) for x in SPAMDYKE)
    assert (untagged.program, untagged.pid, untagged.event) == ("spamdyke", None, "spamdyke")
    assert untagged.fields == {"action": "TLS_ENCRYPTED", "verdict": "tls_encrypted",
                               "remote_ip": "0.0.0.0", "tls": "TLS_PASSTHROUGH"}
    assert (syslog.program, syslog.pid, syslog.event, syslog.host) == ("spamdyke", 29207, "spamdyke", "server")
    # "(unknown)", "(none)", "(empty)": no value, no field
    assert syslog.fields == {"action": "DENIED_RDNS_MISSING", "verdict": "denied",
                             "mail_from": "spam@mail.spam-source.net", "rcpt_to": "recipient@example.com",
                             "remote_ip": "203.0.113.66"}


@pytest.mark.parametrize(("text", "event", "fields"), [
    # spamdyke 3.x/4.0: no encryption, no reason
    ("ALLOWED from: a@example.com to: b@example.org origin_ip: 192.0.2.2 origin_rdns: mx.example.com auth: (unknown)",
     "spamdyke", {"action": "ALLOWED", "verdict": "allowed", "mail_from": "a@example.com",
                  "rcpt_to": "b@example.org", "remote_ip": "192.0.2.2", "remote_host": "mx.example.com"}),
    ("DENIED_RBL_MATCH from: x@y.example to: u@example.org origin_ip: 2001:db8::7 origin_rdns: (unknown)"
     " auth: bob@example.org encryption: TLS reason: zen.spamhaus.org",
     "spamdyke", {"action": "DENIED_RBL_MATCH", "verdict": "denied", "mail_from": "x@y.example",
                  "rcpt_to": "u@example.org", "remote_ip": "2001:db8::7", "auth_user": "bob@example.org",
                  "tls": "TLS", "reason": "zen.spamhaus.org"}),
    ("ERROR: unable to open config file /etc/spamdyke.conf: No such file or directory",
     "spamdyke_error", {"level": "error", "text": "unable to open config file /etc/spamdyke.conf: No such file or directory"}),
    ("ERROR(filter_rdns_missing()@filter.c:436): unable to resolve", "spamdyke_error",
     {"level": "error", "text": "unable to resolve"}),
])
def test_spamdyke_grammar(text, event, fields):
    assert parse_spamdyke(text) == (event, fields)
    rec = _parse(f"Nov 29 07:00:00 mx spamdyke[4242]: {text}")
    assert (rec.program, rec.pid, rec.event, rec.fields) == ("spamdyke", 4242, event, fields)


def test_vchkpw_text_without_its_tag_is_parsed_and_redacted():
    """journalctl -o cat, or a relay's %msg% template, drops "vpopmail[PID]: "."""
    rec = _parse("@400000005a49ba341eefa7a4 vchkpw-smtp: password fail (pass: 'hunter2') user@example.org:192.0.2.4")
    assert (rec.program, rec.event) == ("vpopmail", "pop_auth")
    assert rec.fields == {"service": "smtp", "result": "failure", "reason": "password fail",
                          "auth_user": "user@example.org", "remote_ip": "192.0.2.4"}
    assert "hunter2" not in rec.raw and "hunter2" not in rec.message and rec.flags == ["redacted"]


def test_vchkpw_words_after_the_phrase_go_to_the_reason():
    # vchkpw.c's "chdir failed" names the errno and the directory before USER:IP
    rec = LineParser().parse(b"vpopmail[1]: vchkpw-pop3: chdir failed errno 2 /home/vpopmail/domains/d/u "
                             b"user@dom.example:192.0.2.1")
    assert (rec.program, rec.event) == ("vpopmail", "pop_auth")
    assert rec.fields == {"service": "pop3", "result": "failure",
                          "reason": "chdir failed errno 2 /home/vpopmail/domains/d/u",
                          "auth_user": "user@dom.example", "remote_ip": "192.0.2.1"}


def test_vpopmail5_vchkpw_lines_are_parsed_and_their_passwords_never_leave():
    """vpopmail 5.x's "vchkpw: password fail PASSWORD user@domain:ip" (found by the parser
    probe: unparsed, the password shipped in clear)."""
    lines = _lines("vpopmail5_vchkpw_formats.txt")
    recs = [LineParser().parse(ln.encode()).to_dict() for ln in lines]
    for r in recs:
        assert r["event"] == "pop_auth"
        for secret in ("Sommer2003", "geh eim99"):
            assert secret not in r["message"] and secret not in r["raw"]
            assert all(secret not in str(v) for v in r.values())
    got = [(r["result"], r.get("reason"), r.get("auth_user"), r.get("remote_ip")) for r in recs]
    assert got == [
        ("failure", "password fail", "joe@example.com", "198.51.100.23"),
        ("failure", "system password fail", "root", "198.51.100.23"),
        ("success", None, "joe@example.com", "2001:db8::1"),
        ("failure", "password fail", "joe@example.com", "198.51.100.23"),
        ("failure", "vpopmail user not found", "nobody@example.com", "198.51.100.23"),
        ("failure", "password fail", "joe@example.com", "198.51.100.23"),
        ("failure", "password fail", None, None),  # cut: all of it may be the password
    ]
    assert [("redacted" in r["flags"]) for r in recs] == [True, True, False, False, False, True, True]
    assert recs[0]["raw"] == ("Mar  3 10:00:09 mail vpopmail[1209]: vchkpw: password fail "
                              "[REDACTED] joe@example.com:198.51.100.23")


# dovecot's own formats: login-common's default login_log_format_elements
# ("user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>", joined by ", "),
# its "Login", "Disconnected (auth failed, N attempts in S secs)" and 2.3's
# "Login aborted: … (auth failed, …) (auth_failed)" texts, the mail processes'
# "imap(user)<pid><session>: " prefix and the "Error: "/"Warning: " level words.
DOVECOT = [
    ("Jun 10 12:00:01 mx dovecot: imap-login: Login: user=<u@example.com>, method=PLAIN, "
     "rip=192.0.2.7, lip=192.0.2.1, mpid=2345, TLS, session=<abcDEF12>", 6, "pop_auth",
     {"service": "imap", "auth_user": "u@example.com", "method": "PLAIN", "remote_ip": "192.0.2.7",
      "local_ip": "192.0.2.1", "mail_pid": 2345, "session_id": "abcDEF12", "tls": "TLS",
      "result": "success"}),
    ("Jun 10 12:00:01 mx dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): "
     "user=<u@example.com>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, session=<abc>", 4, "pop_auth",
     {"service": "pop3", "auth_user": "u@example.com", "method": "PLAIN", "remote_ip": "192.0.2.7",
      "local_ip": "192.0.2.1", "session_id": "abc", "result": "failure",
      "reason": "Disconnected (auth failed, 1 attempts in 2 secs)"}),
    ("Jun 10 12:00:01 mx dovecot[999]: imap-login: Login aborted: Connection closed (auth failed, "
     "3 attempts in 15 secs) (auth_failed): user=<admin>, method=PLAIN, rip=2001:db8::7, "
     "lip=2001:db8::1, TLS, session=<xyz>", 4, "pop_auth",
     {"service": "imap", "auth_user": "admin", "method": "PLAIN", "remote_ip": "2001:db8::7",
      "local_ip": "2001:db8::1", "tls": "TLS", "session_id": "xyz", "result": "failure",
      "reason": "Login aborted: Connection closed (auth failed, 3 attempts in 15 secs) (auth_failed)"}),
    ("Jun 10 12:00:01 mx dovecot: pop3-login: Disconnected (no auth attempts in 0 secs): user=<>, "
     "rip=192.0.2.9, lip=192.0.2.1, session=<q>", 6, "dovecot",
     {"service": "pop3", "remote_ip": "192.0.2.9", "local_ip": "192.0.2.1", "session_id": "q",
      "text": "Disconnected (no auth attempts in 0 secs)"}),
    ("Jun 10 12:00:01 mx dovecot: imap(u@example.com)<2345><abcDEF12>: Disconnected: Logged out "
     "in=120 out=3456", 6, "dovecot",
     {"service": "imap", "auth_user": "u@example.com", "mail_pid": 2345, "session_id": "abcDEF12",
      "text": "Disconnected: Logged out in=120 out=3456"}),
    ("Jun 10 12:00:01 mx dovecot: auth: Error: passwd-file(u@example.com,192.0.2.7): unknown user",
     3, "dovecot", {"service": "auth", "level": "error", "auth_user": "u@example.com",
                    "remote_ip": "192.0.2.7", "text": "passwd-file(u@example.com,192.0.2.7): unknown user"}),
    ("Jun 10 12:00:01 mx dovecot: master: Warning: Killed with signal 15 (by pid=1 uid=0 code=kill)",
     4, "dovecot", {"service": "master", "level": "warning",
                    "text": "Killed with signal 15 (by pid=1 uid=0 code=kill)"}),
]


@pytest.mark.parametrize(("line", "sev", "event", "fields"), DOVECOT)
def test_dovecot_lines(line: str, sev: int, event: str, fields: dict) -> None:
    rec = _parse(line)
    assert (rec.program, rec.event, rec.fields) == ("dovecot", event, fields)
    assert severity(rec.to_dict()) == sev


def test_dovecot_process_pid_in_parentheses_is_no_user() -> None:
    assert parse_dovecot("auth-worker(1234): Error: sql(u@example.com): Password mismatch") == (
        "dovecot", {"service": "auth-worker", "level": "error", "auth_user": "u@example.com",
                    "text": "sql(u@example.com): Password mismatch"})


@pytest.mark.parametrize(("text", "user", "ip"), [
    # dovecot 2.3 auth-request.c's prefix: "DB(USER,IP[,sasl:MECH][,master])[<PID>][<SESSION>]"
    ("auth: Info: passwd-file(u@example.com,2001:db8::7,sasl:plain)<AbCd12>: unknown user",
     "u@example.com", "2001:db8::7"),
    ("auth-worker(77): Info: sql(u@example.com,192.0.2.7,sasl:login,master)<77><AbCd12>: request [3]: "
     "Password mismatch", "u@example.com", "192.0.2.7"),
    # 2.2 kept the session inside the parentheses; "?" before the user is known
    ("auth: Info: passwd-file(?,192.0.2.7,<AbCd12>): no user given", None, "192.0.2.7"),
    # a local request has no IP
    ("auth-worker(77): Error: pam(u): pam_authenticate() failed", "u", None),
])
def test_dovecot_auth_request_prefix(text: str, user: str | None, ip: str | None) -> None:
    _, f = parse_dovecot(text)
    assert (f.get("auth_user"), f.get("remote_ip")) == (user, ip)
    assert f.get("session_id") == ("AbCd12" if "AbCd12" in text else None)  # not the "<77>" pid
    assert f["text"] == text.split(": ", 2)[2]


def test_dovecot_text_outside_its_grammar() -> None:
    assert parse_dovecot("no separator") is None and parse_dovecot(": x") is None
    assert parse_dovecot("imap-login: Login: rip=") == (
        "pop_auth", {"service": "imap", "result": "success"})


# Real dovecot lines (fail2ban's collection), field by field. Line 0 is dovecot on
# stderr under daemontools, 13 and 14 its own log file: "SERVICE: LEVEL: text", which
# once were unparsed; line 4's failed login names no user ("method=" comes first),
# which once fell to a generic record.
F2B_DOVECOT = _lines("fail2ban_dovecot.txt")
_IMAP_FAIL = {"service": "imap", "method": "PLAIN", "result": "failure"}
F2B_DOVECOT_EXPECTED = [
    ("pop_auth", None, {"service": "imap", "level": "info", "auth_user": "martin@waschbuesch.de",
                        "method": "CRAM-MD5", "remote_ip": "80.187.101.33", "local_ip": "80.254.129.240",
                        "tls": "TLS", "result": "failure", "reason": "Aborted login (auth failed, 1 attempts)"}),
    ("dovecot", None, {"service": "pop3", "remote_ip": "190.210.136.21", "local_ip": "113.212.99.193",
                       "text": "Aborted login (tried to use disabled plaintext auth)"}),
    ("dovecot", None, {"service": "pop3", "remote_ip": "190.210.136.21", "local_ip": "113.212.99.193",
                       "session_id": "LgDINsQCkttVIMPg",
                       "text": "Aborted login (tried to use disallowed plaintext auth)"}),
    ("pop_auth", None, {**_IMAP_FAIL, "auth_user": "username.bob", "remote_ip": "49.176.98.87",
                        "local_ip": "113.212.99.194", "tls": "TLS",
                        "reason": "Disconnected (auth failed, 2 attempts)"}),
    ("pop_auth", None, {**_IMAP_FAIL, "remote_ip": "59.167.242.100", "local_ip": "113.212.99.194",
                        "tls": "TLS", "reason": "Disconnected (auth failed, 1 attempts)"}),
    ("pop_auth", None, {"service": "pop3", "auth_user": "info", "method": "PLAIN",
                        "remote_ip": "193.95.245.163", "local_ip": "176.214.13.210", "result": "failure",
                        "reason": "Disconnected: Inactivity (auth failed, 1 attempts)"}),
    ("pop_auth", 442, {"service": "pop3", "auth_user": "test", "method": "PLAIN",
                       "remote_ip": "192.51.100.13", "local_ip": "203.0.113.17",
                       "session_id": "YADINsQCDs5BH8Pg", "result": "failure",
                       "reason": "Aborted login (auth failed, 1 attempts in 17 secs)"}),
    # 1.x's "dovecot: " before the process's name: the auth process's request, as without it
    ("dovecot", 442, {"service": "auth", "auth_user": "account@MYSERVERNAME.com", "remote_ip": "200.76.17.206",
                      "text": "pam(account@MYSERVERNAME.com,200.76.17.206): pam_authenticate() failed: "
                      "User not known to the underlying authentication module: 2 Time(s)"}),
    ("dovecot", None, {"service": "auth-worker", "auth_user": "username", "remote_ip": "1.2.3.4",
                       "text": "pam(username,1.2.3.4): pam_authenticate() "
                       "failed: Authentication failure (password mismatch?)"}),
    ("dovecot", None, {"service": "auth-worker", "auth_user": "username", "remote_ip": "1.2.3.4",
                       "text": "pam(username,1.2.3.4): unknown user"}),
    ("dovecot", None, {"service": "auth", "auth_user": "username", "remote_ip": "1.2.3.4",
                       "text": "passwd-file(username,1.2.3.4): unknown user"}),
    ("pop_auth", None, {"service": "pop3", "auth_user": "ivo", "method": "PLAIN", "remote_ip": "1.2.3.4",
                        "local_ip": "1.1.2.2", "session_id": "6brQWt/vCADDhP/+", "result": "failure",
                        "reason": "Disconnected: Inactivity (auth failed, 1 attempts in 178 secs)"}),
    ("pop_auth", None, {"service": "pop3", "auth_user": "ivo", "method": "PLAIN", "remote_ip": "1.2.3.4",
                        "local_ip": "1.1.2.2", "session_id": "q454Xu/vMwBZApgg", "tls": "TLS",
                        "result": "failure", "reason": "Disconnected (auth failed, 1 attempts in 2 secs)"}),
    ("pop_auth", None, {"service": "pop3", "level": "info", "auth_user": "grace", "method": "PLAIN",
                        "remote_ip": "212.9.180.3", "result": "failure",
                        "reason": "Aborted login (auth failed, 1 attempts in 2 secs)"}),
    # "TLS handshaking: SSL_accept() failed: …": the handshake never completed, no TLS
    ("dovecot", None, {"service": "pop3", "level": "info", "remote_ip": "176.61.137.100",
                       "text": "Disconnected (no auth attempts in 10 secs)"}),
    ("dovecot", None, {"service": "pop3", "remote_ip": "121.44.24.254", "local_ip": "113.212.99.194",
                       "tls": "TLS", "text": "Disconnected (no auth attempts)"}),
    ("dovecot", None, {"service": "imap", "remote_ip": "180.189.168.166", "local_ip": "113.212.99.194",
                       "text": "Disconnected (no auth attempts)"}),  # "TLS handshaking: Disconnected"
    ("dovecot", 442, {"service": "pop3", "remote_ip": "192.51.100.13", "local_ip": "203.0.113.17",
                      "session_id": "LgDINsQCkttVIMPg", "text": "Disconnected (no auth attempts in 58 secs)"}),
]


@pytest.mark.parametrize("i", range(len(F2B_DOVECOT_EXPECTED)))
def test_real_dovecot_lines_field_by_field(i: int) -> None:
    assert len(F2B_DOVECOT) == len(F2B_DOVECOT_EXPECTED)
    rec = _parse(F2B_DOVECOT[i])
    assert (rec.program, rec.event, rec.pid, rec.fields) == ("dovecot", *F2B_DOVECOT_EXPECTED[i])


def test_dovecot_log_format_needs_its_service_and_level() -> None:
    from shipper.parsers.misc import parse_dovecot_log
    assert parse_dovecot_log("imap-login: Info: Login: user=<u>, rip=192.0.2.7") == (
        "pop_auth", {"service": "imap", "level": "info", "auth_user": "u", "remote_ip": "192.0.2.7",
                     "result": "success"})
    assert parse_dovecot_log("imap-login: Login: user=<u>, rip=192.0.2.7") is None  # no level
    assert parse_dovecot_log("rblsmtpd: Info: something") is None  # not a dovecot process
    assert parse_dovecot_log("auth-worker(4321): Error: sql(u): Password mismatch") == (
        "dovecot", {"service": "auth-worker", "level": "error", "auth_user": "u",
                    "text": "sql(u): Password mismatch"})


def test_real_dovecot_secured_logins_are_not_tls() -> None:
    # "secured" (%c of a trusted plaintext connection, localhost) is no TLS
    got = [(r.program, r.event, r.fields) for r in map(_parse, _lines("dovecot_secured_public.txt"))]
    assert got == [
        ("dovecot", "pop_auth", {"service": "imap", "auth_user": "thee", "method": "PLAIN",
                                 "remote_ip": "127.0.0.1", "local_ip": "127.0.0.1", "mail_pid": 3232,
                                 "session_id": "JKhImUn2nAB/AAAB", "result": "success"}),
        ("dovecot", "pop_auth", {"service": "imap", "level": "info", "auth_user": "test",
                                 "method": "PLAIN", "remote_ip": "127.0.0.1", "local_ip": "127.0.0.1",
                                 "mail_pid": 29724, "session_id": "JZILDMhW1L5/AAAB", "result": "success"}),
    ]


def test_dovecot_2_4_logged_in_is_a_successful_login() -> None:
    got = [(r.program, r.event, r.pid, r.fields)
           for r in map(_parse, _lines("pidginhost_csm_dovecot_logged_in.txt"))]
    fields = {"service": "imap", "auth_user": "alice@example.com", "method": "PLAIN",
              "remote_ip": "203.0.113.5", "tls": "TLS", "result": "success"}
    assert got == [("dovecot", "pop_auth", None, fields), ("dovecot", "pop_auth", 1234, fields)]


# Real lines of dovecot 2.3.19 (Debian bookworm), made by tests/test_dovecot_real.py:
# its own log file, and its stderr through "multilog t" (dovecot's default
# log_timestamp after multilog's label; rport/lport logged).
DOVECOT_REAL_FILE = _lines("dovecot_2319_real_logfile.txt")
DOVECOT_REAL_MULTILOG = _lines("dovecot_2319_real_multilog.txt")


def test_real_dovecot_mail_process_line_in_its_own_log_file() -> None:
    # "imap(alice)<29566><6aRxdnhhMep/AAAB>" reads as the syslog tag: the "/" of the
    # session id once sent the line to the Postfix parser (postfix_other, no fields)
    rec = _parse(DOVECOT_REAL_FILE[2])
    assert (rec.program, rec.event, rec.pid, rec.fields) == ("dovecot", "dovecot", None, {
        "service": "imap", "auth_user": "alice", "mail_pid": 29566, "session_id": "6aRxdnhhMep/AAAB",
        "level": "info", "text": "Disconnected: Logged out in=32 out=788 deleted=0 expunged=0 "
        "trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0"})
    assert [(r.program, r.event) for r in map(_parse, DOVECOT_REAL_FILE)
            if r.program != "dovecot" or r.event not in ("dovecot", "pop_auth")] == []


@pytest.mark.parametrize("pid", ["\u00b2", "\u0661\u0662"])
def test_dovecot_mail_pid_of_other_digits_is_no_pid(pid: str) -> None:
    # str.isdigit() takes "²" (int() refused it: a parse_error record, time and fields
    # lost) and Arabic-Indic digits (int() took those: a pid 12 the login never had)
    line = DOVECOT_REAL_FILE[2].replace("<29566>", f"<{pid}>")
    assert f"<{pid}>" in line
    rec = _parse(line)
    assert (rec.program, rec.event) == ("dovecot", "dovecot")
    assert "mail_pid" not in rec.fields and rec.fields["session_id"] == "6aRxdnhhMep/AAAB"
    assert rec.fields["auth_user"] == "alice"


def test_real_dovecot_lines_of_one_login_share_its_session() -> None:
    login, logout, auth, failed = map(_parse, DOVECOT_REAL_FILE[1:5])
    # the mail process's "<pid><session>": the login's mpid= and session=
    assert (login.fields["mail_pid"], login.fields["session_id"]) == (29566, "6aRxdnhhMep/AAAB")
    assert (logout.fields["mail_pid"], logout.fields["session_id"]) == (29566, "6aRxdnhhMep/AAAB")
    # the auth process's reason ("Password mismatch") and the login process's failure
    assert auth.fields == {"service": "auth", "level": "info", "auth_user": "alice",
                           "remote_ip": "127.0.0.2", "session_id": "otVxdnhhzc5/AAAC",
                           "text": "passwd-file(alice,127.0.0.2,<otVxdnhhzc5/AAAC>): Password mismatch"}
    assert (failed.event, failed.fields["result"], failed.fields["session_id"]) == (
        "pop_auth", "failure", "otVxdnhhzc5/AAAC")


def test_real_dovecot_on_stderr_under_multilog_keeps_its_own_stamp() -> None:
    # log_path = /dev/stderr keeps dovecot's log_timestamp: "@label Nov 30 06:24:34
    # imap-login: Info: …" was unparsed, every line; now as the line without the stamp
    assert len(DOVECOT_REAL_MULTILOG) == 21
    for line in DOVECOT_REAL_MULTILOG:
        assert line[26:42].startswith("Nov 30 06:24:3") and line[41] == " "
        rec, bare = _parse(line), _parse(line[:26] + line[42:])
        assert rec.event in ("dovecot", "pop_auth"), line
        assert (rec.program, rec.event, rec.fields, rec.time_ns, rec.time_source) == (
            bare.program, bare.event, bare.fields, bare.time_ns, "tai64n")
    assert _parse(DOVECOT_REAL_MULTILOG[1]).fields == {
        "service": "imap", "level": "info", "auth_user": "alice", "method": "PLAIN",
        "remote_ip": "127.0.0.1", "remote_port": 39139, "local_ip": "127.0.0.1", "local_port": 52029,
        "mail_pid": 29904, "session_id": "F8mndnhh45h/AAAB", "result": "success"}


def test_dovecot_log_timestamp_is_read_past_only_before_its_own_lines() -> None:
    from shipper.parsers.misc import parse_dovecot_log
    login = "imap-login: Info: Login: user=<u>, rip=192.0.2.7"
    want = ("pop_auth", {"service": "imap", "level": "info", "auth_user": "u", "remote_ip": "192.0.2.7",
                         "result": "success"})
    # the default "%b %d %H:%M:%S ", the docs' "%Y-%m-%d %H:%M:%S ", with fractions
    for stamp in ("Nov 30 06:24:34 ", "Jan 05 00:00:00 ", "2024-05-01 12:00:00 ", "2024-05-01 12:00:00.123 "):
        assert parse_dovecot_log(stamp + login) == want
    assert parse_dovecot_log("Nov 30 06:24:34 sshd: Info: x") is None  # not a dovecot process
    assert parse_dovecot_log("Nov 30 06:24:34 imap-login: Login: user=<u>") is None  # no level
    assert parse_dovecot_log("Nov 30 06:24:34 Nov 30 06:24:34 " + login) is None  # one stamp only


def test_dovecot_1_auth_process_name_is_no_user() -> None:
    # "auth(default)": dovecot 1.x's auth process, named after its "auth default {}" block
    got = [(r.event, r.fields) for r in map(_parse, _lines("ubuntuforums_dovecot1_auth_default.txt"))]
    killed = "Killed with signal 15 (by pid=1 uid=0 code=kill)"
    assert got == [
        ("dovecot", {"service": "pop3-login", "text": killed}),
        ("dovecot", {"service": "auth-worker", "text": killed}),
        ("dovecot", {"service": "auth", "text": killed}),
        ("dovecot", {"service": "dovecot", "text": killed}),
        ("dovecot", {"service": "auth-worker", "text": "mysql: Connected to 127.0.0.1 (mail)"}),
        ("dovecot", {"service": "auth-worker", "text": "mysql: Connect failed to 127.0.0.1 (mail): Can't "
                     "connect to MySQL server on '127.0.0.1' (111) - waiting for 1 seconds before retry"}),
    ]


@pytest.mark.parametrize(("line", "fields"), [
    # the words programs write where they have no address make no *_ip field
    ("Mar  3 10:00:01 mx1 dovecot: imap-login: Disconnected (no auth attempts in 0 secs): user=<>, "
     "rip=unknown, lip=192.0.2.1, session=<x>", {"local_ip": "192.0.2.1"}),
    ("Mar  3 10:00:01 mx1 vpopmail[1]: vchkpw-pop3: vpopmail user not found bob@example.com:(null)", {}),
    ("Mar  3 10:00:01 mx1 vpopmail[1]: vchkpw-pop3: vpopmail user not found bob@example.com:2001:db8::5",
     {"remote_ip": "2001:db8::5"}),
])
def test_no_ip_field_holds_a_word(line, fields):
    rec = LineParser(ParseOptions(syslog_year=2024)).parse(line.encode())
    assert {k: v for k, v in rec.fields.items() if k.endswith("_ip")} == fields
