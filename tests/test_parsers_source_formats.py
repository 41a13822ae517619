"""Lines written from the programs' own format strings (Postfix's smtp client and qmgr,
simscan, the qmail TLS patch, ext-todo, chkuser; rblsmtpd, sslserver, busybox tcpsvd,
s/qmail and the netqmail patch sets), field by field, with their severity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipper.parse import LineParser
from shipper.severity import ALERT, CRIT, DEBUG, ERR, INFO, NOTICE, WARNING, severity

SAMPLE = Path(__file__).parent / "fixtures" / "samples" / "source_format_lines.txt"
_CORE = {"time_unix_ns", "time", "time_source", "program", "event", "message", "raw", "host",
         "pid", "source", "file_id", "offset", "flags", "event_id"}


def _lines() -> list[str]:
    text = SAMPLE.read_text(encoding="utf-8")
    assert text.startswith("# source:")
    return [ln for ln in text.splitlines()[1:] if ln.strip()]


LINES = _lines()


def _rec(i: int) -> dict[str, Any]:
    d = LineParser().parse(LINES[i].encode()).to_dict()
    assert d["flags"] == []
    return d


def _fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _CORE}


CASES = [
    (0, "relay_error", NOTICE, {"relay_host": "mx.example.org", "relay_ip": "192.0.2.25",
                                "relay_port": 25, "text": LINES[0].split(": ", 1)[1]}),
    (1, "relay_error", NOTICE, {"qid": "3F2A81C0E5", "relay_host": "mx2.example.org",
                                "relay_ip": "192.0.2.26", "smtp_code": 451, "dsn": "4.7.1",
                                "stage": "RCPT TO",
                                "text": "host mx2.example.org[192.0.2.26] said: 451 4.7.1 Greylisted, "
                                        "try again later (in reply to RCPT TO command)"}),
    (2, "relay_error", NOTICE, {"qid": "3F2A81C0E5", "relay_host": "mx3.example.org",
                                "relay_ip": "2001:db8::25",
                                "text": "lost connection with mx3.example.org[2001:db8::25] while "
                                        "sending RCPT TO"}),
    (3, "relay_error", NOTICE, {"qid": "3F2A81C0E5", "relay_host": "mx4.example.org",
                                "relay_ip": "192.0.2.28",
                                "text": "conversation with mx4.example.org[192.0.2.28] timed out "
                                        "while receiving the initial server greeting"}),
    (4, "expired", WARNING, {"qid": "3F2A81C0E5", "mail_from": "alice@example.net",
                             "status": "expired", "result": "failure",
                             "text": "from=<alice@example.net>, status=expired, returned to sender"}),
    (5, "error", ERR, {"level": "error",
                       "text": "open database /etc/postfix/access.db: No such file or directory"}),
    (6, "error", CRIT, {"level": "panic", "text": "myfree: corrupt or unallocated memory block"}),
    (7, "simscan", WARNING, {"conn_pid": 23456, "verdict": "VIRUS", "scan_time": 0.3,
                            "virus": "Eicar-Test-Signature", "remote_ip": "198.51.100.7",
                            "mail_from": "alice@example.net", "rcpt_to": "bob@example.com"}),
    (8, "simscan", NOTICE, {"conn_pid": 23456, "verdict": "ATTACH", "scan_time": 0.1,
                            "attachment": "invoice.exe", "remote_ip": "198.51.100.7",
                            "mail_from": "alice@example.net", "rcpt_to": "bob@example.com"}),
    (11, "status_exiting", 6, {"text": "qmail-todo stop processing asap"}),
    (13, "check_action", 6, {"action": "reject_warning", "stage": "RCPT", "remote_host": "unknown",
                             "remote_ip": "198.51.100.7", "smtp_code": 450, "dsn": "4.7.1",
                             "mail_from": "alice@example.net", "rcpt_to": "bob@example.com",
                             "proto": "ESMTP", "helo": "mail.example.net",
                             "reason": "Client host rejected: cannot find your hostname, [198.51.100.7]"}),
    (14, "check_action", 6, {"qid": "3F2A81C0E5", "action": "hold", "stage": "header",
                             "remote_host": "unknown", "remote_ip": "198.51.100.7",
                             "reason": "held for review", "mail_from": "alice@example.net",
                             "rcpt_to": "bob@example.com", "proto": "ESMTP",
                             "helo": "mail.example.net"}),
    (15, "bounce", 6, {"qid": "3F2A81C0E5", "bounce_qid": "4B1C2D3E4F", "notification": "delay",
                       "bounce_to": "sender"}),
    # a check action with no text of its own (a bare HOLD): the envelope is still read
    (16, "check_action", 6, {"qid": "3F2A81C0E5", "action": "hold", "stage": "header",
                             "remote_host": "unknown", "remote_ip": "198.51.100.7",
                             "reason": "header Subject: win a prize", "mail_from": "alice@example.net",
                             "rcpt_to": "bob@example.com", "proto": "ESMTP",
                             "helo": "mail.example.net"}),
    # lmtp over a unix socket: no relay_ip, as for a delivery
    (17, "relay_error", NOTICE, {"qid": "3F2A81C0E5", "relay_host": "mail.example.com",
                                 "relay_socket": "private/dovecot-lmtp", "smtp_code": 451,
                                 "dsn": "4.3.0", "stage": "end of DATA",
                                 "text": "host mail.example.com[private/dovecot-lmtp] said: 451 "
                                         "4.3.0 temporary failure (in reply to end of DATA command)"}),
    (12, "chkuser", NOTICE, {"decision": "rejected rcpt", "mail_from": "alice@example.net",
                             "helo": "mail.example.net", "remote_host": "unknown",
                             "remote_ip": "198.51.100.7", "rcpt_to": "nobody@example.com",
                             "text": "not existing recipient"}),
]


@pytest.mark.parametrize("i, event, sev, fields", CASES, ids=[str(c[0]) for c in CASES])
def test_fields_and_severity(i: int, event: str, sev: int, fields: dict[str, Any]) -> None:
    d = _rec(i)
    assert (d["event"], _fields(d)) == (event, fields)
    assert severity(d) == sev


def test_tls_patch_failure_names_the_relay() -> None:
    for i, ip in ((9, "192.0.2.7"), (10, "2001:db8::7")):
        d = _rec(i)
        assert d["event"] == "delivery" and d["result"] == "deferral" and d["relay_ip"] == ip


def test_real_postfix_fatal_is_critical() -> None:
    # ossec's documentation sample (tests/fixtures/samples/ossec_docs_postfix.txt)
    d = LineParser().parse(b"Mar 15 06:25:12 mframe1 postfix/postfix-script[23423]: fatal: "
                           b"the Postfix mail system is already running").to_dict()
    assert (d["event"], d["level"], severity(d)) == ("error", "fatal", CRIT)


def test_journalctl_short_full_with_a_numeric_zone() -> None:
    d = _rec(18)  # -0330: an offset, as journalctl prints zones without letters
    assert (d["time"], d["host"], d["program"], d["event"]) == (
        "2024-03-07T13:41:12.000000000Z", "myhost", "postfix/smtpd", "connect")


def test_relay_ip_of_s_qmail_and_indimail_delivery_texts() -> None:
    assert [(_rec(i)["relay_ip"], _rec(i).get("smtp_code"), _rec(i).get("dsn")) for i in (19, 20)] == [
        ("198.51.100.7", 550, "5.7.1"), ("198.51.100.7", None, "4.4.1")]


def test_fehcom_sslserver_lines() -> None:
    got = [(_rec(i)["event"], severity(_rec(i)), _fields(_rec(i))) for i in range(21, 25)]
    assert got == [
        ("tcp_error", WARNING, {"level": "warning", "remote_ip": "2001:db8::66",
                                "text": "ip connection limit of 5 exceeded for: 2001:db8::66"}),
        ("tcp_error", ERR, {"level": "error", "errno": 111, "remote_ip": "198.51.100.23",
                            "conn_pid": 5555, "text": "unable to speak TLS with: 198.51.100.23 "
                                                      "for pid: 5555 unexpected eof while reading"}),
        ("tcp_info", 6, {"level": "info", "remote_ip": "198.51.100.23", "conn_pid": 5555,
                         "text": "valid client cert received from: 198.51.100.23 for pid: 5555"}),
        ("tcp_info", 6, {"setting": "ciphers", "text": "PROFILE=SYSTEM"}),
    ]


# Lines derived from the source, each after a comment naming its file and format string.
AUDIT = Path(__file__).parent / "fixtures" / "samples" / "source_format_audit_lines.txt"


def _audit_lines() -> dict[int, str]:
    """Lines by case number: from 0, and from N after a "# --- cases from N:" comment
    (each audit's block numbered on its own, so that blocks merge cleanly)."""
    text = AUDIT.read_text(encoding="utf-8")
    assert text.startswith("# source:")
    lines: dict[int, str] = {}
    n = 0
    for ln in text.splitlines():
        if ln.startswith("# --- cases from "):
            n = int(ln[len("# --- cases from "):].split(":", 1)[0])
            assert n >= len(lines) and n not in lines
        elif ln.strip() and not ln.startswith("#"):
            lines[n] = ln
            n += 1
    return lines


AUDIT_LINES = _audit_lines()
AUDIT_CASES = [
    # rblsmtpd's own failures: it cannot run qmail-smtpd, so no SMTP session gets through
    (0, "tcp_error", CRIT, {"level": "fatal", "text": "unable to run qmail-smtpd: file does not exist"}),
    (1, "tcp_error", ERR, {"level": "usage", "text": AUDIT_LINES[1].split(": usage: ", 1)[1]}),
    (2, "tcp_info", INFO, {"setting": "param", "text": "/usr/local/etc/dh1024.pem 1024"}),
    (3, "tcp_error", ERR, {"level": "error",
                           "text": "error:02001002:system library:fopen:No such file or directory"}),
    (4, "tcp_error", ERR, {"level": "error", "text": "accept: Too many open files"}),
    (5, "tcp_error", ERR, {"level": "error", "text": "exec 'qmail-smtpd': No such file or directory"}),
    # a virus found is a warning, as simscan's VIRUS
    (6, "smtp_decision", WARNING, {"conn_pid": 4711, "action": "Reject", "check": "DATA",
                                   "condition": "Virus_Infected", "info": "clamdscan",
                                   "proto": "ESMTP", "remote_ip": "198.51.100.7",
                                   "remote_host": "unknown", "helo": "mail.example.net",
                                   "mail_from": "alice@example.net", "rcpt_to": "bob@example.com"}),
    # AUTH required and none given: a refusal, not a failed login
    (7, "smtp_decision", NOTICE, {"conn_pid": 4711, "action": "Reject", "check": "AUTH",
                                  "condition": "missing", "proto": "ESMTP",
                                  "remote_ip": "198.51.100.7", "remote_host": "mail.example.net",
                                  "helo": "mail.example.net"}),
    (8, "smtp_decision", WARNING, {"conn_pid": 4711, "action": "Reject", "check": "AUTH",
                                   "condition": "login", "auth_user": "admin", "proto": "ESMTPA",
                                   "remote_ip": "198.51.100.7", "remote_host": "unknown",
                                   "helo": "mail.example.net"}),
    (9, "smtp_reject", NOTICE, {"text": "message too big", "mail_from": "alice@example.net",
                                "remote_ip": "198.51.100.7", "rcpt_to": "bob@example.com",
                                "helo": "mail.example.net"}),
    (10, "smtp_reject", NOTICE, {"conn_pid": 4711, "reason": "rcptcheck", "rcpt_to": "nobody@example.com",
                                 "remote_ip": "198.51.100.7",
                                 "text": "rcptcheck: drop address <nobody@example.com> at 198.51.100.7"}),
    (11, "smtp_accept", INFO, {"conn_pid": 4711, "reason": "rcptcheck", "rcpt_to": "bob@example.com",
                               "remote_ip": "198.51.100.7",
                               "text": "rcptcheck: accepted address <bob@example.com> at 198.51.100.7"}),
    (12, "smtp_other", INFO, {"conn_pid": 4711, "rcpt_to": "bob@example.com", "remote_ip": "198.51.100.7",
                              "text": "rcptcheck: ignore address <bob@example.com> at 198.51.100.7"}),
    (13, "smtp_reject", NOTICE, {"conn_pid": 4711, "reason": "rcptcheck", "rcpt_to": "bob@example.com",
                                 "remote_ip": "198.51.100.7",
                                 "text": "rcptcheck: overlimit sender <bob@example.com> at 198.51.100.7"}),
    (14, "chkuser", NOTICE, {"decision": "rejected rcpt", "mail_from": "alice@example.net",
                             "helo": "mail.example.net", "remote_host": "mail.example.net",
                             "remote_ip": "198.51.100.7", "rcpt_to": "nobody@example.com",
                             "text": "not existing recipient"}),
    (15, "chkuser", INFO, {"decision": "accepted rcpt", "mail_from": "alice@example.net",
                           "auth_user": "alice@example.net", "remote_ip": "2001:db8::7",
                           "rcpt_to": "bob@example.com", "text": "found existing recipient"}),
    # a path in qmail-local's and qmail-lspawn's own texts keeps its slashes
    (16, "delivery", NOTICE, {"delivery": 21, "result": "deferral", "dsn": "4.2.1",
                              "text": "Unable to open /home/bob/Mailbox: access denied. (#4.2.1)",
                              "text_raw": "Unable_to_open_/home/bob/Mailbox:_access_denied._(#4.2.1)/"}),
    (17, "delivery", NOTICE, {"delivery": 22, "result": "deferral", "dsn": "4.3.0",
                              "text": "Unable to switch to /home/vpopmail/domains/example.com/bob: "
                                      "file does not exist. (#4.3.0)",
                              "text_raw": AUDIT_LINES[17].split("deferral: ", 1)[1]}),
    (18, "delivery", NOTICE, {"delivery": 23, "result": "deferral",
                              "text": "Trouble reading users/cdb in qmail-lspawn.",
                              "text_raw": "Trouble_reading_users/cdb_in_qmail-lspawn./"}),
    # a "_" in the path (an underscore, or a space) is no end of it: each "/" was a newline
    (19, "delivery", NOTICE, {"delivery": 24, "result": "deferral", "dsn": "4.2.1",
                              "text": "Unable to open /home/john doe/Mailbox: access denied. (#4.2.1)",
                              "text_raw": "Unable_to_open_/home/john_doe/Mailbox:_access_denied._(#4.2.1)/"}),
    # indimail's todo-proc on its way out, as qmail-send's "status: qmail-send: PID queue1 exiting"
    (20, "status_exiting", INFO, {"queue": "queue1", "text": "todo-proc: queue1 stop todo processing asap"}),
    (21, "status_exiting", INFO, {"queue": "queue1", "text": "todo-proc: pid 4711 queue1 exiting"}),
    # its start-up line names the queue directory: the queue is its last part
    (22, "info", INFO, {"queue": "queue1", "text": "todo-proc: pid 4711: /var/indimail/queue/queue1: "
                                                   "conf split=151, todo chunk size=1, bigtodo=yes"}),
    # qmail-send told it to stop (every shutdown of qmail-send): no page at night
    (23, "alert", NOTICE, {"queue": "queue1",
                           "text": "todo-proc: pid 4711 ordered to quit by qmail-send: queue1"}),
    # slowq-send's discarded bounce has no "info: argv0: " in front
    (24, "bounce_deleted", WARNING, {"msg": 656826, "queue": "slowq"}),
    # qscheduler's own lines say "info: qscheduler: ..."; the queue is the directory's last part
    (25, "info", INFO, {"queue": "queue1",
                        "text": "qscheduler: pid 187, queue /var/indimail/queue/queue1, load=0 started"}),
    (26, "info", INFO, {"queue": "queue1",
                        "text": "qscheduler: issue SIGTERM to 187, queue /var/indimail/queue/queue1"}),
    (27, "alert", NOTICE, {"text": "qscheduler: pid 187 has shutdown"}),
    (28, "info", INFO, {"queue": "queue1",
                        "text": "queue-fix: conf split=151, queuedir=/var/indimail/queue/queue1"}),
    (29, "info", INFO, {"text": "qscheduler: exiting"}),
    # already right: indimail's delivery lines end in " QUEUE", an empty report too
    (30, "delivery", WARNING, {"delivery": 13, "result": "failure", "relay_ip": "192.0.2.25",
                               "smtp_code": 550, "dsn": "5.1.1", "queue": "queue1",
                               "text": "192.0.2.25 does not like recipient.\nRemote host said: 550 5.1.1 "
                                       "<bob@example.net>... User unknown\nGiving up on 192.0.2.25.",
                               "text_raw": AUDIT_LINES[30].split("failure: ", 1)[1][:-7]}),
    (31, "delivery", INFO, {"delivery": 12, "result": "success", "text": "", "queue": "queue1"}),
    (32, "alert", ALERT, {"queue": "queue1",
                          "text": "qmail-send: queue1: cannot start: instance already running"}),
    (33, "legacy", INFO, {"text": "local deliveries temporarily held"}),
    # the queue name qmail-send wrote after that line's newline is glued to the next line
    (34, "status", DEBUG, {"local_active": 0, "local_max": 10, "remote_active": 3, "remote_max": 20,
                       "held": "local", "queue": "queue1"}),
    (35, "starting_delivery", INFO, {"delivery": 14, "msg": 656826, "channel": "remote",
                                     "rcpt_to": "bob@example.net", "queue": "queue1"}),
    # a qmail-send that died untold: qscheduler says "info:", qmail-daemon "alert:"
    (36, "info", WARNING, {"queue": "queue1",
                           "text": "qscheduler: pid 187, queue /var/indimail/queue/queue1, load=3 died"}),
    (37, "alert", ALERT, {"queue": "queue1",
                          "text": "qmail-daemon: pid 187, queue /var/indimail/queue/queue1 died"}),
    (38, "alert", ALERT, {"queue": "queue1", "text": "qscheduler: cannot start: qmail-send with queue "
                                                     "/var/indimail/queue/queue1 is already running"}),
    # the TLS patch's certificate path keeps its slashes; "TLS Connected to IP" names the relay
    (39, "delivery", NOTICE, {"delivery": 41, "result": "deferral", "relay_ip": "192.0.2.7",
                              "text": "TLS unable to verify server with control/tlshosts/mx.example.org.pem: "
                                      "certificate has expired; connected to 192.0.2.7.",
                              "text_raw": AUDIT_LINES[39].split("deferral: ", 1)[1]}),
    (40, "delivery", NOTICE, {"delivery": 42, "result": "deferral", "relay_ip": "192.0.2.7",
                              "text": "No TLS achieved while control/tlshosts/mx.example.org.pem exists; "
                                      "connecting to 192.0.2.7.",
                              "text_raw": AUDIT_LINES[40].split("deferral: ", 1)[1]}),
    (41, "delivery", WARNING, {"delivery": 43, "result": "failure", "relay_ip": "192.0.2.7", "smtp_code": 554,
                               "dsn": "5.7.1", "text": "TLS Connected to 192.0.2.7 but greeting failed.\n"
                                                       "Remote host said: 554 5.7.1 go away",
                               "text_raw": AUDIT_LINES[41].split("failure: ", 1)[1]}),
    # DEBUG's "STARTTLS proto=…; cipher=…": tls; the X.509 names keep their slashes
    (42, "delivery", INFO, {"delivery": 44, "result": "success", "relay_ip": "192.0.2.7", "smtp_code": 250,
                            "tls": "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
                            "text": "192.0.2.7 accepted message.\nRemote host said: 250 ok 1700000000 qp 4711\n"
                                    "STARTTLS proto=TLSv1.3; cipher=TLS AES 256 GCM SHA384; "
                                    "subject=/CN=mx.example.org; issuer=/C=US/O=Let's Encrypt/CN=R3;",
                            "text_raw": AUDIT_LINES[42].split("success: ", 1)[1]}),
    # qmail-remote's per-recipient "<From:S To:R> " / "From: <S> RCPT: <R> " before the relay
    (43, "delivery", INFO, {"delivery": 45, "result": "success", "mail_from": "alice@example.net",
                            "recipient": "bob@example.org", "relay_ip": "192.0.2.7", "smtp_code": 250,
                            "text": "<From:alice@example.net To:bob@example.org> 192.0.2.7 accepted message.\n"
                                    "Remote host said: 250 ok 1700000000 qp 4711",
                            "text_raw": AUDIT_LINES[43].split("success: ", 1)[1]}),
    (44, "delivery", NOTICE, {"delivery": 46, "result": "deferral", "mail_from": "",
                              "recipient": "bob@example.org", "relay_ip": "2001:db8::7", "smtp_code": 451,
                              "dsn": "4.7.1", "text": "<From: To:bob@example.org> 2001:db8::7 does not like "
                                                      "recipient.\nRemote host said: 451 4.7.1 greylisted",
                              "text_raw": AUDIT_LINES[44].split("deferral: ", 1)[1]}),
    (45, "delivery", INFO, {"delivery": 47, "result": "success", "mail_from": "alice@example.net",
                            "recipient": "bob@example.org", "relay_ip": "192.0.2.7", "smtp_code": 250,
                            "dsn": "2.0.0", "queue": "queue1",
                            "text": "From: <alice@example.net> RCPT: <bob@example.org> 192.0.2.7 accepted "
                                    "message - Protocol SMTP.\nRemote host said: 250 2.0.0 Ok: queued as "
                                    "4B1C2D3E4F",
                            "text_raw": AUDIT_LINES[45].split("success: ", 1)[1][:-7]}),
    (46, "delivery", WARNING, {"delivery": 48, "result": "failure", "mail_from": "alice@example.net",
                               "recipient": "bob@example.org", "relay_ip": "192.0.2.7", "smtp_code": 550,
                               "dsn": "5.1.1", "queue": "queue1",
                               "text": "From: <alice@example.net> RCPT: <bob@example.org> 192.0.2.7 does not "
                                       "like recipient.\nRemote host said: 550 5.1.1 unknown\n"
                                       "Giving up on 192.0.2.7.",
                               "text_raw": AUDIT_LINES[46].split("failure: ", 1)[1][:-7]}),
    # simscan's three numbers of a SpamAssassin scan: hits, SpamAssassin's and its own level
    (47, "simscan", INFO, {"conn_pid": 23456, "verdict": "CLEAN", "score": 2.1, "threshold": 5.0,
                           "reject_threshold": 5.0, "scan_time": 1.2345, "subject": "Hello there: a subject",
                           "remote_ip": "198.51.100.7", "mail_from": "alice@example.net",
                           "rcpt_to": "bob@example.com"}),
    (48, "simscan", NOTICE, {"conn_pid": 23456, "verdict": "SPAM REJECT", "score": 12.3, "threshold": 5.0,
                             "reject_threshold": 7.0, "scan_time": 1.2345, "subject": "Buy now",
                             "remote_ip": "198.51.100.7", "mail_from": "alice@example.net",
                             "rcpt_to": "bob@example.com,carol@example.com"}),
    # ENABLE_DROPMSG's verdicts: the spam or virus was found all the same
    (49, "simscan", NOTICE, {"conn_pid": 23456, "verdict": "SPAM DROPPED", "score": 12.3, "threshold": 5.0,
                             "reject_threshold": 5.0, "scan_time": 1.2345, "subject": "Buy now",
                             "remote_ip": "198.51.100.7", "mail_from": "alice@example.net",
                             "rcpt_to": "bob@example.com"}),
    (50, "simscan", WARNING, {"conn_pid": 23456, "verdict": "VIRUS DROPPED", "scan_time": 0.3,
                              "virus": "Eicar-Test-Signature", "remote_ip": "198.51.100.7",
                              "mail_from": "alice@example.net", "rcpt_to": "bob@example.com"}),
    # RELAYCLIENT's "-" is simscan's placeholder, not a subject
    (51, "simscan", INFO, {"conn_pid": 23456, "verdict": "RELAYCLIENT", "scan_time": 0.0102,
                           "remote_ip": "198.51.100.7", "mail_from": "alice@example.net",
                           "rcpt_to": "bob@example.com"}),
    # qscheduler scaling up by itself: a busy server, not a page
    (52, "alert", WARNING, {"text": "qscheduler: average load 75 exceeds threshold (> 50)"}),
    # a path inside one queue: the queue below the queue base
    (53, "alert", ALERT, {"queue": "queue6", "text": "qscheduler: queue-fix exit code 1: trouble fixing "
                                                     "queue directory /var/indimail/queue/queue6"}),
    (54, "alert", ALERT, {"queue": "queue3", "text": "qcheduler: unable to switch to "
                                                     "/var/indimail/queue/queue3: file does not exist"}),
    (55, "alert", ALERT, {"queue": "queue1", "text": "qscheduler: cannot start: unable to open "
                                                     "/var/indimail/queue/queue1/lock/sendmutex: "
                                                     "permission denied"}),
    # already right: its "within limits" twin stays info
    (56, "info", INFO, {"text": "qscheduler: average load 12 within limits (<= 50)"}),
    # spamdyke's per-recipient lines, by syslog and by stderr under multilog: "(empty)" and
    # "(unknown)" give no field (already right)
    (57, "spamdyke", INFO, {"action": "ALLOWED", "verdict": "allowed", "mail_from": "alice@example.net",
                            "rcpt_to": "bob@example.com", "remote_ip": "198.51.100.7",
                            "remote_host": "mail.example.net", "auth_user": "alice@example.net", "tls": "TLS"}),
    (58, "spamdyke", NOTICE, {"action": "DENIED_RBL_MATCH", "verdict": "denied", "mail_from": "alice@example.net",
                              "rcpt_to": "bob@example.com", "remote_ip": "198.51.100.7",
                              "reason": "zen.spamhaus.org"}),
    (59, "spamdyke", NOTICE, {"action": "DENIED_GRAYLISTED", "verdict": "denied", "mail_from": "alice@example.net",
                              "rcpt_to": "bob@example.com", "remote_ip": "198.51.100.7",
                              "remote_host": "mail.example.net"}),
    # a timeout is one of spamdyke's rejections (a 421 to the client), as DENIED_*
    (60, "spamdyke", NOTICE, {"action": "TIMEOUT", "verdict": "timeout", "remote_ip": "198.51.100.7",
                              "reason": "TIMEOUT"}),
    # its verbose FILTER_* lines: which filter fired, with the address it fired on
    (61, "spamdyke_filter", INFO, {"action": "FILTER_RBL_MATCH", "remote_ip": "198.51.100.7",
                                   "text": "ip: 198.51.100.7 rbl: zen.spamhaus.org"}),
    (62, "spamdyke_filter", INFO, {"action": "FILTER_GRAYLISTED", "mail_from": "alice@example.net",
                                   "rcpt_to": "bob@example.com",
                                   "text": AUDIT_LINES[62].split("FILTER_GRAYLISTED ", 1)[1]}),
    (63, "spamdyke_filter", INFO, {"action": "FILTER_RELAYING"}),
    (64, "spamdyke_filter", INFO, {"action": "FILTER_WHITELIST_NAME", "remote_ip": "198.51.100.7",
                                   "remote_host": "mail.example.net",
                                   "text": "ip: 198.51.100.7 rdns: mail.example.net "
                                           "file: /etc/spamdyke/whitelist_rdns(12)"}),
    (65, "spamdyke_error", ERR, {"level": "error",
                                 "text": "unable to open config file /etc/spamdyke.conf: No such file or directory"}),
    # DEBUG goes to syslog as LOG_DEBUG; EXCESSIVE is more verbose still
    (66, "spamdyke_message", DEBUG, {"level": "debug", "text": "checking DNS RBL(s); ip: 198.51.100.7"}),
    (67, "spamdyke_message", DEBUG, {"level": "excessive",
                                     "text": "child process exited normally with return value 0"}),
    # dovecot 1.x's "dovecot: " before the process's own name, under a syslog tag of its own
    (68, "dovecot", INFO, {"service": "auth", "auth_user": "alice", "remote_ip": "198.51.100.7",
                           "text": "pam(alice,198.51.100.7): pam_authenticate() failed: Authentication failure"}),
    (69, "pop_auth", INFO, {"service": "imap", "auth_user": "alice", "method": "PLAIN",
                            "remote_ip": "198.51.100.7", "local_ip": "192.0.2.1", "tls": "TLS",
                            "result": "success"}),
    (70, "pop_auth", WARNING, {"service": "pop3", "auth_user": "alice", "method": "PLAIN",
                               "remote_ip": "198.51.100.7", "local_ip": "192.0.2.1", "result": "failure",
                               "reason": "Disconnected (auth failed, 1 attempts)"}),
    (71, "dovecot", INFO, {"service": "dovecot", "text": "Dovecot v1.2.17 starting up"}),
    # lib-sql's "mysql(HOST)": the database's host, not a user
    (72, "dovecot", ERR, {"service": "auth-worker", "level": "error",
                          "text": AUDIT_LINES[72].split("Error: ", 1)[1]}),
    (73, "dovecot", INFO, {"service": "auth-worker", "auth_user": "alice@example.com",
                           "remote_ip": "198.51.100.7", "session_id": "Nq3Xb8kF1gDAqAEC",
                           "text": "sql(alice@example.com,198.51.100.7,<Nq3Xb8kF1gDAqAEC>): unknown user"}),
    # Postfix smtpd, postscreen, cleanup, qmgr, delivery agents and bounce from their
    # format strings (already right unless said)
    (74, "connect", INFO, {"remote_host": "mail.example.net", "remote_ip": "198.51.100.7",
                           "remote_port": 52341}),
    (75, "disconnect", INFO, {"remote_host": "mail.example.net", "remote_ip": "198.51.100.7",
                              "text": "ehlo=1 mail=1 rcpt=0/1 data=0/1 quit=1 commands=3/5"}),
    (76, "session_error", INFO, {"error": "lost connection", "stage": "DATA", "remote_host": "unknown",
                                 "remote_ip": "198.51.100.7"}),
    (77, "session_error", INFO, {"error": "lost connection", "stage": "CONNECT", "remote_host": "unknown",
                                 "remote_ip": "198.51.100.7"}),
    (78, "reject", NOTICE, {"stage": "RCPT", "remote_host": "unknown", "remote_ip": "198.51.100.7",
                            "smtp_code": 554, "dsn": "5.7.1", "mail_from": "alice@example.net",
                            "rcpt_to": "bob@example.com", "proto": "ESMTP", "helo": "mail.example.net",
                            "reason": "<bob@example.com>: Relay access denied"}),
    (79, "warning", WARNING, {"level": "warning", "remote_host": "mail.example.net",
                              "remote_ip": "198.51.100.7", "text": AUDIT_LINES[79].split("warning: ", 1)[1]}),
    (80, "auth_failed", WARNING, {"remote_host": "unknown", "remote_ip": "198.51.100.7", "method": "LOGIN",
                                  "reason": "UGFzc3dvcmQ6"}),
    (81, "client", INFO, {"qid": "4B1C2D3E4F", "remote_host": "mail.example.net", "remote_ip": "198.51.100.7",
                          "method": "PLAIN", "auth_user": "alice@example.com"}),
    (82, "postscreen", INFO, {"remote_ip": "198.51.100.7", "remote_port": 52341, "action": "PASS NEW"}),
    (83, "postscreen", INFO, {"remote_ip": "198.51.100.7", "remote_port": 52341, "action": "DNSBL",
                              "text": "DNSBL rank 3 for [198.51.100.7]:52341"}),
    (84, "postscreen", INFO, {"remote_ip": "198.51.100.7", "remote_port": 52341, "action": "PREGREET",
                              "text": AUDIT_LINES[84].split(": ", 1)[1]}),
    (85, "postscreen", INFO, {"remote_ip": "198.51.100.7", "remote_port": 52341, "action": "HANGUP",
                              "text": "HANGUP after 0.1 from [198.51.100.7]:52341 in tests before SMTP handshake"}),
    (86, "postscreen", INFO, {"remote_ip": "198.51.100.7", "remote_port": 52341, "action": "COMMAND PIPELINING",
                              "text": AUDIT_LINES[86].split(": ", 1)[1]}),
    (87, "message_id", INFO, {"qid": "4B1C2D3E4F", "message_id": "abc@example.net"}),
    (88, "reject", NOTICE, {"qid": "4B1C2D3E4F", "stage": "header", "remote_host": "unknown",
                            "remote_ip": "198.51.100.7", "reason": "spam", "mail_from": "alice@example.net",
                            "rcpt_to": "bob@example.com", "proto": "ESMTP", "helo": "mail.example.net",
                            "dsn": "5.7.1"}),
    (89, "check_action", INFO, {"qid": "4B1C2D3E4F", "stage": "body", "reason": "review", "action": "hold",
                                "mail_from": "alice@example.net", "rcpt_to": "bob@example.com"}),
    # fixed: the client is the log origin, not the first "[IP]" of the Received: header
    (90, "reject", NOTICE, {"qid": "4B1C2D3E4F", "stage": "header", "remote_host": "unknown",
                            "remote_ip": "198.51.100.7", "reason": "no thanks", "mail_from": "alice@example.net",
                            "rcpt_to": "bob@example.com", "proto": "ESMTP", "helo": "helo.example",
                            "dsn": "5.7.1"}),
    (91, "queue_active", INFO, {"qid": "4B1C2D3E4F", "mail_from": "alice@example.net", "size": 1234,
                                "nrcpt": 1}),
    (92, "removed", INFO, {"qid": "4B1C2D3E4F"}),
    (93, "delivery", INFO, {"qid": "4B1C2D3E4F", "rcpt_to": "bob@example.org", "orig_to": "bob@alias.example.org",
                            "relay_host": "mx.example.org", "relay_ip": "192.0.2.25", "relay_port": 25,
                            "delay": 1.2, "delays": "0.1/0.02/0.3/0.8", "dsn": "2.0.0", "status": "sent",
                            "result": "success", "text": "250 2.0.0 Ok: queued as 5C6D7E8F9A",
                            "smtp_code": 250}),
    # fixed: Postfix 3.11's ", tls=…" made the line postfix_other
    (94, "delivery", INFO, {"qid": "4B1C2D3E4F", "rcpt_to": "bob@example.org", "relay_host": "mx.example.org",
                            "relay_ip": "192.0.2.25", "relay_port": 25, "delay": 1.2,
                            "delays": "0.1/0.02/0.3/0.8", "tls_policy": "(secure)/requiretls", "dsn": "2.0.0",
                            "status": "sent", "result": "success", "text": "250 2.0.0 Ok", "smtp_code": 250}),
    (95, "delivery", NOTICE, {"qid": "4B1C2D3E4F", "rcpt_to": "bob@example.com", "delay": 310.0,
                              "delays": "300/0/0/10", "dsn": "4.4.1", "status": "deferred", "result": "deferral",
                              "text": "delivery temporarily suspended: connect to mx.example.org[192.0.2.25]:25: "
                                      "Connection refused"}),
    (96, "bounce", INFO, {"qid": "4B1C2D3E4F", "bounce_qid": "5C6D7E8F9A", "notification": "non-delivery",
                          "bounce_to": "sender"}),
    # fixed: the postmaster's copy was postfix_other
    (97, "bounce", INFO, {"qid": "4B1C2D3E4F", "bounce_qid": "5C6D7E8F9A", "notification": "non-delivery",
                          "bounce_to": "postmaster"}),
    # fixed: Postfix 2.x's forward-confirmation warnings named no client
    (98, "warning", WARNING, {"level": "warning", "remote_host": "mail.example.net", "remote_ip": "198.51.100.7",
                              "text": AUDIT_LINES[98].split("warning: ", 1)[1]}),
    (99, "warning", WARNING, {"level": "warning", "remote_host": "mail.example.net", "remote_ip": "2001:db8::7",
                              "text": "2001:db8::7: address not listed for hostname mail.example.net"}),
]


@pytest.mark.parametrize("i, event, sev, fields", AUDIT_CASES, ids=[f"audit{c[0]}" for c in AUDIT_CASES])
def test_audit_fields_and_severity(i: int, event: str, sev: int, fields: dict[str, Any]) -> None:
    d = LineParser().parse(AUDIT_LINES[i].encode()).to_dict()
    assert d["flags"] == []
    assert (d["event"], _fields(d)) == (event, fields)
    assert severity(d) == sev


def test_audit_cases_cover_every_line() -> None:
    assert sorted(c[0] for c in [*AUDIT_CASES, *AUTH_CASES]) == sorted(AUDIT_LINES)


# The POP3/auth side: vpopmail's vchkpw (semhoun/vpopmail 5.4.x, DerDakon/vpopmail 5.0),
# s/qmail's qmail-popup, checkpassword-pam. A failed login is a warning; every
# password is redacted (test_audit_auth_lines_never_carry_a_password).
_AUTH = {"service": "pop3", "auth_user": "alice@example.com", "remote_ip": "198.51.100.7"}
_WITH_PASSWORD = (202, 205, 214, 221, 222)
AUTH_CASES = [
    (200, "pop_auth", WARNING, {**_AUTH, "result": "failure", "reason": "vpopmail user not found"}),
    (201, "pop_auth", WARNING, {**_AUTH, "service": "smtp", "result": "failure", "reason": "password fail"}),
    (202, "pop_auth", WARNING, {**_AUTH, "service": "submission", "result": "failure",
                                "reason": "password fail"}),
    (203, "pop_auth", INFO, {**_AUTH, "service": "submission", "result": "success", "method": "PLAIN"}),
    (204, "pop_auth", INFO, {**_AUTH, "service": "pop3s", "result": "success", "method": "APOP",
                             "remote_ip": "2001:db8::7"}),
    (205, "pop_auth", WARNING, {**_AUTH, "result": "failure", "reason": "system password fail",
                                "auth_user": "root"}),
    (206, "pop_auth", INFO, {**_AUTH, "result": "success", "auth_user": "bob"}),
    (207, "pop_auth", WARNING, {**_AUTH, "service": "imap", "result": "failure",
                                "reason": "null user name given", "auth_user": ""}),
    # TheName as given, space and all: not "al" in the reason and "ice@..." as the user
    (208, "pop_auth", WARNING, {**_AUTH, "result": "failure", "reason": "invalid user/domain characters",
                                "auth_user": "al ice@example.com"}),
    # "putenv(USER)": was unparsed
    (209, "pop_auth", WARNING, {**_AUTH, "result": "failure", "reason": "putenv(USER) failed errno 12"}),
    (210, "pop_auth", WARNING, {**_AUTH, "result": "failure",
                                "reason": "chdir failed errno 2 /home/vpopmail/domains/example.com/alice"}),
    (211, "pop_auth", WARNING, {**_AUTH, "service": "smtps", "result": "failure", "reason": "smtp access denied"}),
    (212, "pop_auth", WARNING, {**_AUTH, "service": "2525", "result": "failure", "reason": "user has no password"}),
    # vchkpw run by hand: no login, and no sentence as its user (it was auth_user)
    (213, "unparsed", NOTICE, {}),
    (214, "pop_auth", WARNING, {"result": "failure", "reason": "password fail",
                                "auth_user": "alice@example.com", "remote_ip": "198.51.100.7"}),
    # 5.0's other phrases were unparsed
    (215, "pop_auth", WARNING, {"result": "failure", "reason": "setuid 89 failed errno 1",
                                "auth_user": "alice@example.com", "remote_ip": "198.51.100.7"}),
    (216, "pop_auth", WARNING, {"result": "failure", "reason": "invalid user/domain characters",
                                "auth_user": "al ice@example.com", "remote_ip": "198.51.100.7"}),
    (217, "smtp_decision", INFO, {"conn_pid": 4711, "action": "Accept", "check": "AUTH", "condition": "User",
                                  "auth_user": "alice@example.com", "proto": "POP3",
                                  "remote_ip": "198.51.100.7", "remote_host": "unknown"}),
    (218, "smtp_decision", WARNING, {"conn_pid": 4711, "action": "Reject", "check": "AUTH",
                                     "condition": "User", "auth_user": "alice@example.com", "proto": "POP3S",
                                     "remote_ip": "198.51.100.7", "remote_host": "mail.example.net"}),
    (219, "smtp_decision", WARNING, {"conn_pid": 4711, "action": "Reject", "check": "AUTH",
                                     "condition": "Apop", "auth_user": "alice", "proto": "POP3",
                                     "remote_ip": "2001:db8::7", "remote_host": "unknown"}),
    # die_notls()'s "unknown" is a placeholder, not a user (it was auth_user)
    (220, "smtp_decision", NOTICE, {"conn_pid": 4711, "action": "Reject", "check": "STLS",
                                    "condition": "Any", "proto": "POP3", "remote_ip": "198.51.100.7",
                                    "remote_host": "unknown"}),
    # checkpassword-pam 0.95's password line: was unparsed, the password in message and raw
    (221, "checkpassword_debug", DEBUG, {}),
    (222, "checkpassword_debug", DEBUG, {}),
    (223, "unparsed", NOTICE, {}),
]


@pytest.mark.parametrize("i, event, sev, fields", AUTH_CASES, ids=[f"audit{c[0]}" for c in AUTH_CASES])
def test_audit_auth_lines(i: int, event: str, sev: int, fields: dict[str, Any]) -> None:
    d = LineParser().parse(AUDIT_LINES[i].encode()).to_dict()
    assert d["flags"] == (["redacted"] if i in _WITH_PASSWORD else [])
    assert (d["event"], _fields(d)) == (event, fields)
    assert severity(d) == sev


def test_audit_auth_lines_never_carry_a_password() -> None:
    for i in _WITH_PASSWORD:
        d = LineParser().parse(AUDIT_LINES[i].encode()).to_dict()
        assert "hunter2" in AUDIT_LINES[i] and d["flags"] == ["redacted"], i
        assert not [k for k, v in d.items() if "hunter2" in str(v)], i
    # the redacted text keeps the rest of the line
    assert LineParser().parse(AUDIT_LINES[202].encode()).to_dict()["message"] == (
        "vchkpw-submission: password fail (pass: '[REDACTED]') alice@example.com:198.51.100.7")
    assert LineParser().parse(AUDIT_LINES[221].encode()).to_dict()["message"] == (
        "Password '[REDACTED]' read successfully")
    cut = LineParser().parse(b"@4000000065e5a0c0062a4e05 Password 'hunter2 x read succ").to_dict()
    assert (cut["event"], cut["message"]) == ("checkpassword_debug", "Password '[REDACTED]")
