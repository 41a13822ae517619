"""Postfix / pmg-smtp-filter parser through the whole LineParser path, on the fail2ban,
OSSEC and pmg-log-tracker sample lines; deliveries checked against pmg-log-tracker's
own expected output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.parse import LineParser
from shipper.parsers.postfix import parse

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"
PMG = FIXTURES / "pmg-log-tracker"
PMG_CASES = ["before_queue_syntax_reject", "foreign_lines", "misleading_lines", "time_rfc3339_mixed", "timechange"]


def _parse(line: str):
    return LineParser().parse(line.encode())


def _sample_lines(name: str) -> list[str]:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    assert text.startswith("# source:")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _pmg_lines(case: str) -> list[str]:
    return [ln for ln in (PMG / f"test_input_{case}").read_text(encoding="utf-8").splitlines() if ln.strip()]


# (line, program, pid, event, fields): one or more real lines per line type
TABLE = [
    # smtpd
    ("Dec 18 15:04:15 pmg postfix/smtpd[21842]: connect from pmg.localhost[192.168.22.40]",
     "postfix/smtpd", 21842, "connect", {"remote_host": "pmg.localhost", "remote_ip": "192.168.22.40"}),
    ("Feb 18 09:48:04 xxx postfix/smtpd[50903]: disconnect from unknown[192.0.2.23] ehlo=1 auth=0/1 rset=1 commands=2/3",
     "postfix/smtpd", 50903, "disconnect",
     {"remote_host": "unknown", "remote_ip": "192.0.2.23", "text": "ehlo=1 auth=0/1 rset=1 commands=2/3"}),
    ("Dec 18 15:04:15 pmg postfix/smtpd[21842]: NOQUEUE: client=pmg.localhost[192.168.22.40]",
     "postfix/smtpd", 21842, "client", {"remote_host": "pmg.localhost", "remote_ip": "192.168.22.40"}),
    ("Mar 28 01:53:05 proxmox-pmg postfix/smtpd[23393]: 48070B766: client=localhost[127.0.0.1], "
     "orig_client=bbs.domain.example[192.0.2.245]",
     "postfix/smtpd", 23393, "client",
     {"qid": "48070B766", "remote_host": "localhost", "remote_ip": "127.0.0.1",
      "orig_client_host": "bbs.domain.example", "orig_client_ip": "192.0.2.245"}),
    ("2026-06-16T02:26:10.026205+02:00 pmg postfix/smtpd[3971220]: Anonymous TLS connection established from "
     "unknown[1.2.3.4]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange secp256r1 "
     "server-signature RSA-PSS (4096 bits) server-digest SHA256",
     "postfix/smtpd", 3971220, "tls",
     {"trust": "Anonymous", "remote_host": "unknown", "remote_ip": "1.2.3.4",
      "tls": "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange secp256r1 "
             "server-signature RSA-PSS (4096 bits) server-digest SHA256"}),
    ("Jul 12 07:47:48 saturn postfix/smtpd[8738]: NOQUEUE: reject: RCPT from 1-2-3-4-example.com[1.2.3.4]: 554 5.7.1 "
     "<smtp@example.com>: Relay access denied; from=<john@example.com> to=<smtp@example.org> proto=SMTP helo=<198.51.100.17>",
     "postfix/smtpd", 8738, "reject",
     {"stage": "RCPT", "remote_host": "1-2-3-4-example.com", "remote_ip": "1.2.3.4", "smtp_code": 554, "dsn": "5.7.1",
      "reason": "<smtp@example.com>: Relay access denied", "mail_from": "john@example.com",
      "rcpt_to": "smtp@example.org", "proto": "SMTP", "helo": "198.51.100.17"}),
    ("Feb 21 09:21:54 xxx postfix/smtpd[14398]: NOQUEUE: reject: RCPT from example.com[192.0.43.10]: 450 4.7.1 : "
     "Helo command rejected: Host not found; from=<> to=<> proto=ESMTP helo=",
     "postfix/smtpd", 14398, "reject",
     {"stage": "RCPT", "remote_host": "example.com", "remote_ip": "192.0.43.10", "smtp_code": 450, "dsn": "4.7.1",
      "reason": ": Helo command rejected: Host not found", "mail_from": "", "rcpt_to": "", "proto": "ESMTP",
      "helo": ""}),
    ("Aug 13 15:45:46 server postfix/smtpd[13844]: 00ADB3C0899: reject: RCPT from example.com[192.0.2.1]: 550 5.1.1 "
     "<sales@server.com>: Recipient address rejected: User unknown in local recipient table; from=<xxxxxx@example.com> "
     "to=<sales@server.com> proto=ESMTP helo=<mail.example.com>",
     "postfix/smtpd", 13844, "reject",
     {"qid": "00ADB3C0899", "stage": "RCPT", "remote_host": "example.com", "remote_ip": "192.0.2.1", "smtp_code": 550,
      "dsn": "5.1.1", "reason": "<sales@server.com>: Recipient address rejected: User unknown in local recipient table",
      "mail_from": "xxxxxx@example.com", "rcpt_to": "sales@server.com", "proto": "ESMTP", "helo": "mail.example.com"}),
    ("Mar 7 02:09:33 server postfix/smtpd[27246]: 1D8CC1CA0A7F: milter-reject: DATA from "
     "66-220-155-151.mail-mail.facebook.com[192.0.2.151]: 550 5.7.1 Command rejected; from=<security@mail.example.com> "
     "to=<hostmaster@example.com> proto=ESMTP helo=<192-0-2-151.mail-mail.example.com>",
     "postfix/smtpd", 27246, "reject",
     {"qid": "1D8CC1CA0A7F", "milter": True, "stage": "DATA", "remote_host": "66-220-155-151.mail-mail.facebook.com",
      "remote_ip": "192.0.2.151", "smtp_code": 550, "dsn": "5.7.1", "reason": "Command rejected",
      "mail_from": "security@mail.example.com", "rcpt_to": "hostmaster@example.com", "proto": "ESMTP",
      "helo": "192-0-2-151.mail-mail.example.com"}),
    # long queue id, nested syslog tag
    ("Mar 11 23:27:54 server postfix-smo/submission/smtpd[22427]: 44JCRG5tYPzCqt2: reject: BDAT from "
     "signing-milter.example.com[192.0.2.109]: 550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce; "
     "from=<> to=<some@example.com> proto=ESMTP helo=<domain.tld>",
     "postfix-smo/submission/smtpd", 22427, "reject",
     {"qid": "44JCRG5tYPzCqt2", "stage": "BDAT", "remote_host": "signing-milter.example.com", "remote_ip": "192.0.2.109",
      "smtp_code": 550, "dsn": "5.5.3", "reason": "<DATA>: Data command rejected: Multi-recipient bounce",
      "mail_from": "", "rcpt_to": "some@example.com", "proto": "ESMTP", "helo": "domain.tld"}),
    # no DSN; the reason holds "; "
    ("postfix/smtpd[10419]: NOQUEUE: reject: RCPT from unknown[200.71.50.65]: 554 Service unavailable; Client host "
     "[200.71.50.65] blocked using sbl-xbl.spamhaus.org; http://www.spamhaus.org/query/bl?ip=200.71.50.65; "
     "from=<kpxbeiu@superig.com.br> to=<cleresilva@lac.ossec.net> proto=SMTP helo=<Static-IP-cr200715065.cable.net.co>",
     "postfix/smtpd", 10419, "reject",
     {"stage": "RCPT", "remote_host": "unknown", "remote_ip": "200.71.50.65", "smtp_code": 554,
      "reason": "Service unavailable; Client host [200.71.50.65] blocked using sbl-xbl.spamhaus.org; "
                "http://www.spamhaus.org/query/bl?ip=200.71.50.65",
      "mail_from": "kpxbeiu@superig.com.br", "rcpt_to": "cleresilva@lac.ossec.net", "proto": "SMTP",
      "helo": "Static-IP-cr200715065.cable.net.co"}),
    # PMG greylisting
    ("Oct 31 02:26:30 proxmox-pmg postfix/smtpd[6264]: NOQUEUE: reject: RCPT from unknown[192.0.2.214]: 450 4.7.1 "
     "<list1@listserv.domain.example>: Recipient address rejected: Service is unavailable (try later); "
     "from=<product1@spammer2.example> to=<list1@listserv.domain.example> proto=ESMTP helo=<spammer2.example>",
     "postfix/smtpd", 6264, "reject",
     {"stage": "RCPT", "remote_host": "unknown", "remote_ip": "192.0.2.214", "smtp_code": 450, "dsn": "4.7.1",
      "reason": "<list1@listserv.domain.example>: Recipient address rejected: Service is unavailable (try later)",
      "mail_from": "product1@spammer2.example", "rcpt_to": "list1@listserv.domain.example", "proto": "ESMTP",
      "helo": "spammer2.example", "greylist": True}),
    ("Dec 18 15:04:17 pmg postfix/smtpd[21842]: proxy-reject: END-OF-MESSAGE: 554 5.7.1 Rejected for policy reasons "
     "(381C4E5DFA31DF9E90F); from=<mailtestsender2@localhost.localdomain> to=<pmgtest@localhost.localdomain> "
     "proto=ESMTP helo=<localhost.localdomain>",
     "postfix/smtpd", 21842, "proxy_reject",
     {"stage": "END-OF-MESSAGE", "smtp_code": 554, "dsn": "5.7.1", "filter_id": "381C4E5DFA31DF9E90F",
      "text": "Rejected for policy reasons (381C4E5DFA31DF9E90F)", "mail_from": "mailtestsender2@localhost.localdomain",
      "rcpt_to": "pmgtest@localhost.localdomain", "proto": "ESMTP", "helo": "localhost.localdomain"}),
    ("Aug 27 14:04:08 pmg6 postfix/smtpd[7567]: proxy-reject: END-OF-MESSAGE: 501 5.5.2 Syntax: MAIL FROM: <address>; "
     "from=<test@pmgsender.local> to=<test@pmgreceiver.local> proto=ESMTP helo=<pmgsender.local>",
     "postfix/smtpd", 7567, "proxy_reject",
     {"stage": "END-OF-MESSAGE", "smtp_code": 501, "dsn": "5.5.2", "text": "Syntax: MAIL FROM: <address>",
      "mail_from": "test@pmgsender.local", "rcpt_to": "test@pmgreceiver.local", "proto": "ESMTP",
      "helo": "pmgsender.local"}),
    ("Jan 12 11:07:49 emf1pt2-2-35-70 postfix/smtpd[13767]: improper command pipelining after DATA from unknown[181.21.131.88]:",
     "postfix/smtpd", 13767, "session_error",
     {"error": "improper command pipelining", "stage": "DATA", "remote_host": "unknown", "remote_ip": "181.21.131.88"}),
    ("Sep 17 18:19:20 mxhost postfix/smtpd[12345]: NOQUEUE: lost connection after CONNECT from unknown[192.0.2.25]",
     "postfix/smtpd", 12345, "session_error",
     {"error": "lost connection", "stage": "CONNECT", "remote_host": "unknown", "remote_ip": "192.0.2.25"}),
    ("Aug 4 16:47:52 mail3 postfix/smtpd[31152]: warning: unknown[192.0.2.237]:55729: SASL LOGIN authentication "
     "failed: authentication failure",
     "postfix/smtpd", 31152, "auth_failed",
     {"remote_host": "unknown", "remote_ip": "192.0.2.237", "remote_port": 55729, "method": "LOGIN",
      "reason": "authentication failure"}),
    ("Nov  4 09:11:01 mail postfix/smtpd[1234]: warning: unknown[192.0.2.152]: SASL LOGIN authentication failed: "
     "(reason unavailable), sasl_username=admin",
     "postfix/smtpd", 1234, "auth_failed",
     {"remote_host": "unknown", "remote_ip": "192.0.2.152", "method": "LOGIN", "reason": "(reason unavailable)",
      "auth_user": "admin"}),
    ("Sep 19 12:10:57 hostname postfix/smtpd[23244]: warning: Connection rate limit exceeded: 31 from "
     "spamhost.domain.org[192.0.2.123] for service smtpd",
     "postfix/smtpd", 23244, "warning",
     {"level": "warning", "remote_host": "spamhost.domain.org", "remote_ip": "192.0.2.123",
      "text": "Connection rate limit exceeded: 31 from spamhost.domain.org[192.0.2.123] for service smtpd"}),
    ("Aug 14 10:00:01 mail postfix/smtpd[1234]: warning: hostname bad.example.com does not resolve to address "
     "192.0.2.44: Name or service not known",
     "postfix/smtpd", 1234, "warning",
     {"level": "warning", "remote_host": "bad.example.com", "remote_ip": "192.0.2.44",
      "text": "hostname bad.example.com does not resolve to address 192.0.2.44: Name or service not known"}),
    # OSSEC lines without syslog header
    ("postfix/smtp[30785]: warning: 75FEC31D36: defer service failure", "postfix/smtp", 30785, "warning",
     {"qid": "75FEC31D36", "level": "warning", "text": "75FEC31D36: defer service failure"}),
    ("postfix/postfix-script: fatal: the Postfix mail system is not running", "postfix/postfix-script", None, "error",
     {"level": "fatal", "text": "the Postfix mail system is not running"}),
    ("Jan 14 16:30:24 mframe1 postfix[662]: fatal: usage: postfix [-c config_dir] [-Dv] command", "postfix", 662,
     "error", {"level": "fatal", "text": "usage: postfix [-c config_dir] [-Dv] command"}),
    # cleanup, qmgr, delivery agents
    ("2026-06-16T02:26:10.662240+02:00 pmg postfix/cleanup[3949936]: 123412341234: message-id=<xyz>",
     "postfix/cleanup", 3949936, "message_id", {"qid": "123412341234", "message_id": "xyz"}),
    ("2026-06-16T02:26:10.672845+02:00 pmg postfix/qmgr[407346]: 123412341234: from=<test@pmg.local>, size=1337, "
     "nrcpt=1 (queue active)",
     "postfix/qmgr", 407346, "queue_active",
     {"qid": "123412341234", "mail_from": "test@pmg.local", "size": 1337, "nrcpt": 1}),
    ("2026-06-16T02:26:11.771119+02:00 pmg postfix/qmgr[407346]: 123412341234: removed", "postfix/qmgr", 407346,
     "removed", {"qid": "123412341234"}),
    ("2026-06-16T02:26:11.770749+02:00 pmg postfix/lmtp[3918143]: 123412341234: to=<test@pmg.local>, "
     "relay=127.0.0.1[127.0.0.1]:10024, delay=1.3, delays=0.21/0/0.04/1.1, dsn=2.5.0, status=sent "
     "(250 2.5.0 OK (123412341234))",
     "postfix/lmtp", 3918143, "delivery",
     {"qid": "123412341234", "rcpt_to": "test@pmg.local", "relay_host": "127.0.0.1", "relay_ip": "127.0.0.1",
      "relay_port": 10024, "delay": 1.3, "delays": "0.21/0/0.04/1.1", "dsn": "2.5.0", "status": "sent",
      "result": "success", "text": "250 2.5.0 OK (123412341234)", "smtp_code": 250, "filter_id": "123412341234"}),
    # smtp to another PMG: its "(ID)" is not one of our filter ids
    ("Oct 31 02:53:39 proxmox-pmg postfix/smtp[6013]: 8D0041A173: to=<ks@msp2.example>, "
     "relay=mx-in.msp2.example[2001:db8:1111:1111::1b]:25, delay=0.76, delays=0/0.01/0.11/0.63, dsn=2.0.0, "
     "status=sent (250 2.0.0 OK  1635638019 l24si20980973wmj.233 - exim)",
     "postfix/smtp", 6013, "delivery",
     {"qid": "8D0041A173", "rcpt_to": "ks@msp2.example", "relay_host": "mx-in.msp2.example",
      "relay_ip": "2001:db8:1111:1111::1b", "relay_port": 25, "delay": 0.76, "delays": "0/0.01/0.11/0.63",
      "dsn": "2.0.0", "status": "sent", "result": "success",
      "text": "250 2.0.0 OK  1635638019 l24si20980973wmj.233 - exim", "smtp_code": 250}),
    ("Mar 28 01:53:06 proxmox-pmg postfix/smtp[23394]: Trusted TLS connection established to "
     "mta6.msp1.example[192.0.2.72]:25: TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)",
     "postfix/smtp", 23394, "tls",
     {"trust": "Trusted", "relay_host": "mta6.msp1.example", "relay_ip": "192.0.2.72", "relay_port": 25,
      "tls": "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)"}),
    # postscreen: its own forms and a comma-separated envelope
    ("2023-06-23T14:26:29.324152+02:00 pmg1 postfix/postscreen[1180]: CONNECT from [192.168.1.001]:58320 to "
     "[192.168.1.001]:25",
     "postfix/postscreen", 1180, "connect",
     {"remote_ip": "192.168.1.001", "remote_port": 58320, "local_ip": "192.168.1.001", "local_port": 25}),
    ("2026-06-16T02:26:10.589017+02:00 pmg postfix/postscreen[407424]: PASS OLD [1.2.3.4]:44340",
     "postfix/postscreen", 407424, "postscreen", {"action": "PASS OLD", "remote_ip": "1.2.3.4", "remote_port": 44340}),
    ("Jun  8 23:14:28 proxy2 postfix/postscreen[473]: COMMAND TIME LIMIT from [192.0.2.77]:3608 after CONNECT",
     "postfix/postscreen", 473, "postscreen",
     {"action": "COMMAND TIME LIMIT", "remote_ip": "192.0.2.77", "remote_port": 3608,
      "text": "COMMAND TIME LIMIT from [192.0.2.77]:3608 after CONNECT"}),
    ("Mar 28 01:59:32 proxmox-pmg postfix/postscreen[23433]: DISCONNECT [192.0.2.37]:39508", "postfix/postscreen",
     23433, "disconnect", {"remote_ip": "192.0.2.37", "remote_port": 39508}),
    ("May  5 15:51:11 xxx postfix/postscreen[1148]: NOQUEUE: reject: RCPT from [216.245.194.173]:60591: 550 5.7.1 "
     "Service unavailable; client [216.245.194.173] blocked using rbl.example.com; from=<spammer@example.com>, "
     "to=<goodguy@example.com>, proto=ESMTP, helo=<badguy.example.com>",
     "postfix/postscreen", 1148, "reject",
     {"stage": "RCPT", "remote_ip": "216.245.194.173", "remote_port": 60591, "smtp_code": 550, "dsn": "5.7.1",
      "reason": "Service unavailable; client [216.245.194.173] blocked using rbl.example.com",
      "mail_from": "spammer@example.com", "rcpt_to": "goodguy@example.com", "proto": "ESMTP",
      "helo": "badguy.example.com"}),
    ("Mar 28 01:59:32 proxmox-pmg postfix/tlsproxy[23435]: Anonymous TLS connection established from "
     "[192.0.2.37]:39508: TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)",
     "postfix/tlsproxy", 23435, "tls",
     {"trust": "Anonymous", "remote_ip": "192.0.2.37", "remote_port": 39508,
      "tls": "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)"}),
    # pmg-smtp-filter
    ("2023-06-23T14:26:29.452836+02:00 pmg1 pmg-smtp-filter[945]: C019B64958F756CDA5: new mail "
     "message-id=<redacted:msgid>#012",
     "pmg-smtp-filter", 945, "filter_new", {"filter_id": "C019B64958F756CDA5", "message_id": "redacted:msgid"}),
    ("Mar 28 01:53:05 proxmox-pmg pmg-smtp-filter[22815]: B753605FD3713E420: accept mail to <tb@msp1.example> "
     "(48070B766) (rule: default-accept)",
     "pmg-smtp-filter", 22815, "filter_accept",
     {"filter_id": "B753605FD3713E420", "rcpt_to": "tb@msp1.example", "qid": "48070B766", "rule": "default-accept"}),
    ("Dec 18 15:04:17 pmg pmg-smtp-filter[1565]: 381C4E5DFA31DF9E90F: block mail to <pmgtest@localhost.localdomain> "
     "(rule: block all)",
     "pmg-smtp-filter", 1565, "filter_block",
     {"filter_id": "381C4E5DFA31DF9E90F", "rcpt_to": "pmgtest@localhost.localdomain", "rule": "block all"}),
    ("2026-06-16T02:26:11.767261+02:00 pmg pmg-smtp-filter[4049085]: 123412341234: moved mail for <test@pmg.local> "
     "to spam quarantine - 432143214321 (rule: Quarantine)",
     "pmg-smtp-filter", 4049085, "filter_quarantine",
     {"filter_id": "123412341234", "rcpt_to": "test@pmg.local", "quarantine": "spam",
      "quarantine_id": "432143214321", "rule": "Quarantine"}),
    ("2026-06-16T02:26:11.753241+02:00 pmg pmg-smtp-filter[4049085]: 123412341234: SA score=9999/5 time=0.328 "
     "bayes=undefined autolearn=disabled hits=SOME_RULE(9999)",
     "pmg-smtp-filter", 4049085, "filter_info",
     {"filter_id": "123412341234", "score": 9999.0, "threshold": 5.0,
      "text": "SA score=9999/5 time=0.328 bayes=undefined autolearn=disabled hits=SOME_RULE(9999)"}),
    ("Aug 27 14:04:28 pmg6 pmg-smtp-filter[28920]: starting database maintainance", "pmg-smtp-filter", 28920,
     "filter_info", {"text": "starting database maintainance"}),
]


@pytest.mark.parametrize("line,program,pid,event,fields", TABLE)
def test_line_types(line, program, pid, event, fields):
    rec = _parse(line)
    assert (rec.program, rec.pid, rec.event) == (program, pid, event)
    assert rec.fields == fields


def test_table_lines_are_real_sample_lines():
    real = set(_sample_lines("fail2ban_postfix.txt")) | set(_sample_lines("ossec_docs_postfix.txt"))
    for case in PMG_CASES:
        real |= set(_pmg_lines(case))
    for line, *_ in TABLE:
        assert line in real, line


def test_fail2ban_expectations():
    """Every '# failJSON' line with a host: the record names that host as remote_ip."""
    lines = (SAMPLES / "fail2ban_postfix.txt").read_text(encoding="utf-8").splitlines()
    checked = 0
    for i, ln in enumerate(lines):
        if not ln.startswith("# failJSON:"):
            continue
        expect = json.loads(ln[len("# failJSON:"):])
        if "host" not in expect:
            continue
        nxt = next(x for x in lines[i + 1:] if x.strip() and not x.startswith("#"))
        rec = _parse(nxt)
        assert rec.program.startswith("postfix"), nxt
        assert rec.fields.get("remote_ip") == expect["host"], nxt
        assert rec.time_source == "syslog" and rec.time_ns is not None
        checked += 1
    assert checked == 58


# Lines of the Postfix sample files that are Postfix's but fit no specific grammar (postfix_other),
# and lines of other programs in the same files (not ours: must stay unparsed).
POSTFIX_OTHER = ("STATISTICS1:", "CLEANUP99:", "DELIVERY1:", "FOOBAR99:", "statistics: max ",
                 "using backwards-compatible default setting", "listed by domain zen.spamhaus.org")
FOREIGN_PROGRAMS = {"pmgpolicy", "pmgmirror", "systemd", "informational", "pmgdaemon", None}


def _sweep_lines() -> list[str]:
    out = _sample_lines("fail2ban_postfix.txt") + _sample_lines("ossec_docs_postfix.txt")
    for case in PMG_CASES:
        out += _pmg_lines(case)
    return out


def test_sweep_every_postfix_sample_line():
    seen_other = set()
    events = set()
    for line in _sweep_lines():
        rec = _parse(line)
        if rec.program in FOREIGN_PROGRAMS:
            assert rec.event == "unparsed", line
            assert line == "Some postfix errors:" or rec.program is not None
            continue
        assert rec.program.startswith(("postfix", "pmg-smtp-filter")), line
        expected_other = [m for m in POSTFIX_OTHER if m in line]
        if expected_other:
            assert rec.event == "postfix_other", line
            seen_other.update(expected_other)
        else:
            assert rec.event not in ("unparsed", "postfix_other"), line
        events.add(rec.event)
    assert seen_other == set(POSTFIX_OTHER)
    assert {"connect", "disconnect", "client", "reject", "message_id", "queue_active", "removed", "delivery",
            "proxy_reject", "tls", "postscreen", "session_error", "auth_failed", "warning", "error",
            "filter_new", "filter_accept", "filter_block", "filter_quarantine", "filter_info"} <= events


_TO_RE = re.compile(r"TO:[0-9A-F]+:(?P<id>[^:]+):(?P<st>.): from <(?P<f>[^>]*)> to <(?P<t>[^>]*)>(?: \((?P<x>[^)]*)\))?$")


@pytest.mark.parametrize("case", PMG_CASES)
def test_deliveries_agree_with_pmg_log_tracker(case):
    """Each 'TO:' line of pmg-log-tracker's expected output is backed by records we extract:
    delivery qid/rcpt_to/relay/dsn class, the filter's accept/quarantine/block, rejects."""
    recs = [_parse(ln) for ln in _pmg_lines(case)]
    for r in recs:
        if r.program and r.program.startswith(("postfix", "pmg-smtp-filter")):
            assert r.event != "unparsed"
    by = {}
    for r in recs:
        by.setdefault(r.event, []).append(r.fields)
    tos = [m for ln in (PMG / f"test_output_{case}").read_text(encoding="utf-8").splitlines()
           if (m := _TO_RE.match(ln))]
    assert tos
    for to in tos:
        qid, st, sender, rcpt, x = to["id"], to["st"], to["f"], to["t"], to["x"]
        if st.isdigit():  # delivered by smtp: qid, rcpt, relay host[ip]:port and DSN class
            hits = [d for d in by.get("delivery", []) if d["qid"] == qid and d["rcpt_to"] == rcpt
                    and f"{d['relay_host']}[{d['relay_ip']}]:{d['relay_port']}" == x and d["dsn"][0] == st]
            assert hits, to.group(0)
            assert any(q["qid"] == qid and q["mail_from"] == sender for q in by["queue_active"])
        elif st in "AQ":  # into the filter by lmtp; the filter accepted (re-queued as x) or quarantined (id x)
            lm = [d for d in by.get("delivery", []) if d["qid"] == qid and d["rcpt_to"] == rcpt
                  and d["dsn"].startswith("2.") and "filter_id" in d]
            assert lm, to.group(0)
            fids = {d["filter_id"] for d in lm}
            if st == "A":
                assert any(f["filter_id"] in fids and f["rcpt_to"] == rcpt and f["qid"] == x
                           for f in by["filter_accept"]), to.group(0)
            else:
                assert any(f["filter_id"] in fids and f["rcpt_to"] == rcpt and f["quarantine_id"] == x
                           for f in by["filter_quarantine"]), to.group(0)
            assert any(q["qid"] == qid and q["mail_from"] == sender for q in by["queue_active"])
        elif st == "B":  # blocked before queue: proxy-reject with the filter id, and the filter's block
            pr = [p for p in by["proxy_reject"] if p["mail_from"] == sender and p["rcpt_to"] == rcpt]
            assert pr and any(b["filter_id"] == pr[0]["filter_id"] and b["rcpt_to"] == rcpt
                              for b in by["filter_block"])
        elif st == "G":  # greylisted
            assert any(r.get("greylist") and r["mail_from"] == sender and r["rcpt_to"] == rcpt
                       for r in by["reject"]), to.group(0)
        elif st == "N":  # rejected before queue
            assert any(r["mail_from"] == sender and r["rcpt_to"] == rcpt and not r.get("greylist")
                       for r in by.get("reject", []) + by.get("proxy_reject", [])), to.group(0)
        else:
            pytest.fail(f"unexpected status {st} in {to.group(0)}")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["smtpd", "postscreen", "tlsproxy", "cleanup", "qmgr", "smtp", "lmtp", "local", "error",
                        "pmg-smtp-filter", "dnsblog", "anvil", "postfix"]),
       st.text(max_size=300))
def test_arbitrary_text_never_raises(service, text):
    for t in (text, "NOQUEUE: " + text, "1C6B541C5D: " + text, "1C6B541C5D: to=<" + text,
              "NOQUEUE: reject: RCPT from " + text, "warning: " + text, "ABCDEF0123456789: " + text):
        got = parse(service, t)
        assert isinstance(got[0], str) and isinstance(got[1], dict)


@pytest.mark.parametrize(("line", "event", "fields"), [
    # the remote's reply quoted after "said:" / "refused to talk to me:" (reviewed 2026-11-29)
    ("Jun 23 14:26:29 mx postfix/smtp[1]: 1C6B541C5D: to=<a@b.example>, relay=mx.b.example[192.0.2.2]:25, "
     "delay=1, delays=0/0/0/0, dsn=5.1.1, status=bounced (host mx.b.example[192.0.2.2] said: 550 5.1.1 "
     "<a@b.example>: Recipient address rejected: User unknown (in reply to RCPT TO command))",
     "delivery", {"smtp_code": 550, "dsn": "5.1.1", "result": "failure"}),
    ("Jun 23 14:26:29 mx postfix/smtp[1]: 1C6B541C5D: to=<a@b.example>, relay=mx.b.example[192.0.2.2]:25, "
     "delay=1, delays=0/0/0/0, dsn=4.0.0, status=deferred (host mx.b.example[192.0.2.2] refused to talk to "
     "me: 421 4.7.0 go away)", "delivery", {"smtp_code": 421}),
    # current Postfix writes the byte count after DATA and BDAT
    ("Jun 23 14:26:29 mx postfix/smtpd[1]: lost connection after DATA (0 bytes) from unknown[192.0.2.1]",
     "session_error", {"error": "lost connection", "stage": "DATA", "remote_ip": "192.0.2.1"}),
    ("Jun 23 14:26:29 mx postfix/smtpd[1]: timeout after BDAT (1234 bytes) from unknown[192.0.2.1]",
     "session_error", {"error": "timeout", "stage": "BDAT", "remote_ip": "192.0.2.1"}),
])
def test_reviewed_postfix_forms(line, event, fields):
    rec = _parse(line)
    assert rec.event == event
    assert {k: rec.fields.get(k) for k in fields} == fields


def test_header_checks_reject_keeps_envelope_and_dsn():
    """Found in review: cleanup's header/body-checks reject lost the envelope and DSN."""
    rec = LineParser().parse(
        b"Aug 13 15:45:46 server postfix/cleanup[13844]: 00ADB3C0899: reject: header Subject: "
        b"Hello world from example.com[192.0.2.1]; from=<a@b.c> to=<d@e.f> proto=ESMTP "
        b"helo=<mail.example.com>: 5.7.1 Spam detected")
    assert rec.event == "reject"
    f = rec.fields
    assert (f["stage"], f["remote_ip"], f["mail_from"], f["rcpt_to"], f["proto"], f["helo"],
            f["dsn"], f["reason"]) == ("header", "192.0.2.1", "a@b.c", "d@e.f", "ESMTP",
                                       "mail.example.com", "5.7.1", "Spam detected")


def test_delivery_over_a_unix_socket_names_no_ip():
    rec = LineParser().parse(
        b"Aug 13 15:45:46 server postfix/lmtp[13844]: 00ADB3C0899: to=<joe@example.com>, "
        b"relay=mail.example.com[private/dovecot-lmtp], delay=0.02, delays=0.01/0/0/0.01, "
        b"dsn=2.0.0, status=sent (250 2.0.0 <joe@example.com> Saved)")
    assert rec.event == "delivery" and "relay_ip" not in rec.fields
    assert rec.fields["relay_socket"] == "private/dovecot-lmtp"
    assert rec.fields["relay_host"] == "mail.example.com" and rec.fields["status"] == "sent"


def test_other_lines_keep_the_client_and_envelope_they_name():
    # lines of no specific grammar still give what a SIEM searches on (found in a review)
    got = parse("smtpd", "SSL_accept error from unknown[192.0.2.1]: lost connection")
    assert got == ("postfix_other", {"remote_host": "unknown", "remote_ip": "192.0.2.1",
                                     "text": "SSL_accept error from unknown[192.0.2.1]: lost connection"})
    event, f = parse("smtpd", "42EA826EA2: filter: RCPT from unknown[192.0.2.1]: <d@e.f>: Recipient address "
                              "triggers FILTER smtp:[127.0.0.1]:10024; from=<a@b.c> to=<d@e.f> proto=ESMTP helo=<x>")
    # an access check's FILTER action: the reject grammar, with the action named
    assert (event, f["action"], f["stage"]) == ("check_action", "filter", "RCPT")
    assert (f["qid"], f["remote_ip"], f["mail_from"], f["rcpt_to"]) == ("42EA826EA2", "192.0.2.1", "a@b.c", "d@e.f")


REAL_37 = "postfix_3.7_real.txt"  # Postfix 3.7.11 Debian bookworm, by tests/test_postfix_real.py
# its lines no event models: start-up notices (no mail, no client)
REAL_37_OTHER = ("starting the Postfix mail system", "daemon started -- version 3.7.11, ")


def test_real_postfix_37_lines_are_all_modelled():
    """Every line a real Postfix 3.7 logged (tests/test_postfix_real.py) has its event;
    only its start-up notices are postfix_other."""
    lines = _sample_lines(REAL_37)
    assert len(lines) == 75
    for line in lines:
        rec = _parse(line)
        assert rec.program.startswith("postfix/") and rec.host == "mx", line
        if any(t in line for t in REAL_37_OTHER):
            assert rec.event == "postfix_other", line
        else:
            assert rec.event not in ("unparsed", "postfix_other", "warning", "error"), line


def test_real_postfix_37_cleanup_header_check_actions():
    """cleanup_act() logs header_checks' WARN as "QID: warning: header …" (msg_info: the
    action, not a diagnostic), PREPEND and REPLACE as "QID: prepend: header …": a
    `warning` without the envelope and `postfix_other` before, now check_action like HOLD."""
    lines = {ln.split(": ", 3)[2].split(" ", 1)[0]: ln for ln in _sample_lines(REAL_37)
             if "postfix/cleanup" in ln and ": header Subject: " in ln}
    assert set(lines) == {"warning", "prepend", "replace", "reject", "discard"}
    env = {"stage": "header", "remote_host": "localhost", "remote_ip": "127.0.0.1",
           "mail_from": "alice@relay.test", "proto": "ESMTP", "helo": "[127.0.0.1]"}
    expect = {
        "warning": ("check_action", {"qid": "1F8FA20C76D", "action": "warn", "rcpt_to": "ok3@relay.test",
                                      "reason": "looked odd"}),
        "prepend": ("check_action", {"qid": "1FEAC20C775", "action": "prepend", "rcpt_to": "ok4@relay.test",
                                      "reason": "X-Tag: tagged"}),
        "replace": ("check_action", {"qid": "2037420C782", "action": "replace", "rcpt_to": "ok9@relay.test",
                                     "reason": "Subject: replaced"}),
        "discard": ("check_action", {"qid": "20A3F20C783", "action": "discard", "rcpt_to": "ok6@relay.test",
                                      "reason": "dropped here"}),
        "reject": ("reject", {"qid": "2078920C783", "rcpt_to": "ok5@relay.test", "dsn": "5.7.1",
                               "reason": "no thanks"}),
    }
    for word, (event, fields) in expect.items():
        rec = _parse(lines[word])
        assert rec.event == event, lines[word]
        assert rec.fields == {**env, **fields}, lines[word]
    # cleanup's msg_info: info, as HOLD's line; not the warning level of a diagnostic
    from shipper.severity import INFO, severity
    assert severity(_parse(lines["warning"]).to_dict()) == INFO


# Public logs (code-index ids 35074673685, 25183368677, 46282481565): Postfix writes
# unknown[unknown] when it could not get the client's address (the client gone before
# the accept's getpeername, a proxy's timeout)
UNKNOWN_CLIENT_LINES = [
    ("Sep  1 05:23:56 mail postfix/smtps/smtpd[11962]: connect from unknown[unknown]", "connect"),
    ("Sep  1 05:23:56 mail postfix/smtps/smtpd[11962]: SSL_accept error from unknown[unknown]: "
     "Connection reset by peer", "postfix_other"),
    ("Dec  8 08:39:42 interno1 postfix/smtpd[1915]: lost connection after CONNECT from unknown[unknown]",
     "session_error"),
    ("Dec  8 08:39:42 interno1 postfix/smtpd[1915]: disconnect from unknown[unknown] commands=0/0", "disconnect"),
    ("Aug 27 13:00:30 mail postfix/smtpd[8384]: NOQUEUE: milter-reject: CONNECT from unknown[unknown]: "
     "451 4.7.1 Service unavailable - try again later; proto=SMTP", "reject"),
]


@pytest.mark.parametrize(("line", "event"), UNKNOWN_CLIENT_LINES)
def test_a_client_of_unknown_address_has_no_remote_ip(line, event):
    """remote_ip was "unknown", which an index typing the field as an address refuses
    (with the whole record): found by a black-box review."""
    rec = _parse(line)
    assert rec.event == event and rec.fields["remote_host"] == "unknown"
    assert not any(k.endswith("_ip") for k in rec.fields), rec.fields
