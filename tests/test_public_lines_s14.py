"""Lines people posted (forums, blogs, other tools' test logs) that we read wrong or
not at all before session 14: Plesk's qmail (its handlers, relaylock, smtp_auth) and
the Courier-IMAP it ran, a local-time stamp with microseconds, and pasted lines
still indented. tests/fixtures/samples/public_lines_s14.txt names each line's source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipper.parse import LineParser, dispatch
from shipper.severity import CRIT, INFO, NOTICE, WARNING, severity
from shipper.stamps import split_envelope

SAMPLE = Path(__file__).parent / "fixtures" / "samples" / "public_lines_s14.txt"
_CORE = {"time_unix_ns", "time", "time_source", "program", "event", "message", "raw", "host",
         "pid", "source", "file_id", "offset", "flags", "event_id"}


def _lines() -> list[str]:
    text = SAMPLE.read_text(encoding="utf-8")
    assert text.startswith("# source:")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


LINES = _lines()


def _rec(line: str) -> dict[str, Any]:
    # a fixed read time: the unstamped lines' time is when they were read
    return LineParser().parse(line.encode(), now_ns=1_700_000_000 * 10**9).to_dict()


def _fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _CORE}


_TIMEOUT_TEXT = ('possibly qmail-smtpd exited by timeout, reset connection. ^I^I^I^ISee '
                 '"http://pobox.com/~djb/docs/smtplf.html." for get more information.')
CASES: list[tuple[int, str, str, int, dict[str, Any]]] = [
    (0, "qmail-local-handlers", "plesk_handler", INFO,
     {"stage": "local", "mailbox": "/var/qmail/mailnames/my-domain.co.uk/meg"}),
    (1, "qmail-queue-handlers", "plesk_handler", INFO, {"stage": "queue", "text": _TIMEOUT_TEXT}),
    (2, "qmail-queue-handlers", "plesk_handler", INFO, {"stage": "queue", "text": _TIMEOUT_TEXT}),
    # the poster masked the address into no address: no remote_ip, the rest read
    (3, "pop3d", "pop_logout", INFO,
     {"service": "pop3", "reason": "disconnected", "auth_user": "meg@my-domain.co.uk", "top": 0,
      "retr": 263787, "bytes_in": 258, "bytes_out": 269885, "duration_s": 485.0}),
    (4, "pop3d", "pop_logout", INFO,
     {"service": "pop3", "reason": "timeout", "auth_user": "meg@my-domain.co.uk", "top": 0,
      "retr": 227668, "bytes_in": 162, "bytes_out": 232382, "duration_s": 666.0}),
    (6, "qmail-remote-handlers", "plesk_handler", INFO,
     {"stage": "remote", "mail_from": "avs2904@webgenie.com"}),
    (7, "qmail-remote-handlers", "plesk_handler", INFO,
     {"stage": "remote", "rcpt_to": "paulsingh@jadoo.com.au"}),
    (9, "qmail-remote-handlers", "plesk_handler", INFO, {"stage": "remote", "mail_from": "avs@webgenie.com"}),
    (10, "qmail-remote-handlers", "plesk_handler", INFO, {"stage": "remote", "rcpt_to": "s_unger@yoo-design.com"}),
    (11, "qmail-remote-handlers", "plesk_handler", INFO,
     {"stage": "remote", "text": "Handlers Filter before-remote for qmail started ..."}),
    (12, "qmail-local-handlers", "plesk_handler", INFO,
     {"stage": "local", "text": "Handlers Filter before-local for qmail started ..."}),
    (13, "qmail-local-handlers", "plesk_handler", INFO,
     {"stage": "local", "mail_from": "anonymous@yourserver.com"}),
    (14, "qmail-local-handlers", "plesk_handler", INFO,
     {"stage": "local", "rcpt_to": "info@clientsdomain.com.au"}),
    (15, "relaylock", "relaylock", INFO,
     {"remote_ip": "44.33.22.11", "remote_port": 17249, "remote_host": "yourdesktop.com"}),
    (16, "smtp_auth", "smtp_auth", INFO,
     {"text": "SMTP connect from unknown@ [207.219.92.194]", "remote_ip": "207.219.92.194"}),
    (17, "smtp_auth", "pop_auth", INFO,
     {"service": "smtp", "result": "success", "auth_user": "[USER]", "remote_ip": "207.219.92.194"}),
    (18, "smtp_auth", "pop_auth", WARNING,
     {"service": "smtp", "result": "failure", "reason": "password incorrect", "auth_user": "[USER]",
      "remote_ip": "207.219.92.194"}),
    # Courier's IPv4-mapped addresses are IPv4 addresses
    (19, "imapd", "pop_auth", WARNING,
     {"service": "imap", "result": "failure", "auth_user": "sales@example.com", "remote_ip": "1.2.3.4"}),
    (20, "pop3d", "pop_auth", WARNING,
     {"service": "pop3", "result": "failure", "auth_user": "info@example.com", "remote_ip": "198.51.100.76"}),
    (21, "imapd-ssl", "pop_auth", WARNING,
     {"service": "imap", "result": "failure", "auth_user": "user@domain.tld", "remote_ip": "198.51.100.33"}),
    (22, "courierpop3login", "pop_auth", WARNING,
     {"service": "pop3", "result": "failure", "auth_user": "USER@EXAMPLE.org", "remote_ip": "1.2.3.4"}),
    (23, "imapd-ssl", "pop_auth", WARNING,
     {"service": "imap", "result": "failure", "method": "PLAIN", "remote_ip": "192.0.2.4"}),
    (24, "imapd", "pop_auth", WARNING,
     {"service": "imap", "result": "failure", "auth_user": "tester", "remote_ip": "192.0.2.5",
      "remote_port": 255}),
    (25, "qmail-send", "delivery", NOTICE,
     {"delivery": 2518, "result": "deferral", "text": "Sorry, I couldn't find any host by that name. (#4.1.2)",
      "text_raw": "Sorry,_I_couldn't_find_any_host_by_that_name._(#4.1.2)/", "dsn": "4.1.2"}),
    # masked addresses ("XXX.XXX.XXX.XXX", "xx.21.xx.195") are no addresses: no remote_ip
    (30, "pop3d", "pop_connect", INFO, {"service": "pop3"}),
    (31, "pop3d", "pop_auth", INFO,
     {"service": "pop3", "result": "success", "auth_user": "april@mailserver.com", "remote_port": 1060}),
    (32, "pop3d", "pop_logout", INFO,
     {"service": "pop3", "reason": "logout", "auth_user": "april@mailserver.com", "remote_port": 1060,
      "top": 0, "retr": 0, "bytes_in": 12, "bytes_out": 39, "duration_s": 1.0}),
    (33, "pop3d", "pop_auth", INFO,
     {"service": "pop3", "result": "success", "auth_user": "leo", "remote_ip": "61.93.253.82",
      "remote_port": 2800}),
    (34, "pop3d", "pop_logout", INFO,
     {"service": "pop3", "reason": "logout", "auth_user": "leo", "remote_ip": "61.93.253.82",
      "remote_port": 2800, "top": 0, "retr": 0, "bytes_in": 12, "bytes_out": 39, "duration_s": 0.0}),
    (35, "pop3d", "pop_logout", INFO,
     {"service": "pop3", "reason": "logout", "auth_user": "<user>@<domain>", "remote_port": 56089,
      "tls": "STARTTLS", "top": 0, "retr": 0, "bytes_in": 12, "bytes_out": 39, "duration_s": 0.0}),
    (36, "pop3d-ssl", "pop_auth", INFO,
     {"service": "pop3", "result": "success", "auth_user": "<user>@<domain>.de", "remote_port": 48668}),
    (26, "qmail-send", "delivery", INFO,
     {"delivery": 2479, "result": "success", "text": "did 0+0+1", "text_raw": "did_0+0+1/"}),
    # dovecot 1.x: its master's start line (no process named) and its level-first lines
    (37, "dovecot", "dovecot", INFO,
     {"service": "dovecot", "text": "Dovecot v1.2.rc3 starting up (core dumps disabled)"}),
    (38, "dovecot", "dovecot", CRIT,
     {"service": "auth", "level": "fatal", "text": "Support not compiled in for passdb driver 'ldap'"}),
    (39, "dovecot", "dovecot", CRIT,
     {"service": "dovecot", "level": "fatal", "text": "Auth process died too early - shutting down"}),
    (40, "dovecot", "dovecot", INFO,
     {"service": "pop3", "level": "info", "auth_user": "username", "method": "PLAIN",
      "remote_ip": "1.2.3.4", "local_ip": "1.2.3.5",  # mapped: as IPv4 (shipper.ipaddr)
      "text": "Aborted login (1 authentication attempts)"}),
    (41, "dovecot", "dovecot", INFO,
     {"service": "auth", "level": "info", "auth_user": "user@example.com", "remote_ip": "1.2.3.4",
      "text": "passwd-file(user@example.com,::ffff:1.2.3.4): unknown user"}),
    (42, "dovecot", "dovecot", INFO,
     {"service": "IMAP", "auth_user": "username", "level": "info", "text": "Disconnected: Logged out bytes=59/566"}),
]


@pytest.mark.parametrize("i, program, event, sev, fields", CASES, ids=[str(c[0]) for c in CASES])
def test_fields_and_severity(i: int, program: str, event: str, sev: int, fields: dict[str, Any]) -> None:
    d = _rec(LINES[i])
    assert (d["program"], d["event"], _fields(d)) == (program, event, fields)
    assert severity(d) == sev
    assert d["flags"] in ([], ["time_inferred"], ["time_ingest"])


def test_lines_that_were_already_right_stay_right() -> None:
    got = [(d["program"], d["event"], d.get("delivery"), d.get("relay_ip"), d.get("conn_pid"))
           for d in map(_rec, (LINES[5], LINES[8], LINES[27], LINES[28], LINES[29]))]
    assert got == [("qmail-send", "starting_delivery", 293, None, None),
                   ("qmail-send", "delivery", 293, "103.146.112.32", None),
                   ("tcpserver", "tcp_pid", None, None, 30906),
                   ("qmail-smtpd", "smtp_accept", None, None, 1821),
                   ("tcpserver", "tcp_end", None, None, 30906)]


def test_second_hunt_lines_that_were_already_right_stay_right() -> None:
    got = [_rec(LINES[i]) for i in range(43, 50)]
    assert [(d["program"], d["event"]) for d in got] == [
        ("dovecot", "dovecot"), ("dovecot", "dovecot"), ("qmail-smtpd", "smtp_decision"),
        ("tcpserver", "tcp_deny"), ("tcpserver", "tcp_ok"), ("qmail-send", "info_msg"),
        ("qmail-send", "delivery")]
    assert (got[0]["service"], got[0]["auth_user"], got[0]["remote_ip"]) == ("auth-worker", "user@example.com", "1.2.3.4")
    assert (got[1]["service"], got[1]["remote_ip"], got[1]["local_ip"]) == ("pop3", "1.2.3.4", "1.2.3.5")
    assert (got[2]["check"], got[2]["auth_user"], got[2]["conn_pid"]) == ("AUTH", "administrator@xxx.com", 9539)
    assert (got[3]["remote_ip"], got[3]["remote_port"], got[3]["local_port"]) == ("193.147.171.74", 40714, 25)
    assert (got[5]["msg"], got[5]["size"], got[5]["qp"]) == (81231893, 2813, 32384)
    assert (got[6]["result"], got[6]["dsn"]) == ("failure", "5.1.1")


def test_plesk_handler_pids_link_a_from_to_its_to() -> None:
    # qmail-remote-handlers logs from= and to= under one pid: the pid is what joins them
    a, b = _rec(LINES[6]), _rec(LINES[7])
    assert (a["pid"], b["pid"]) == (3882, 3882)


def test_local_time_with_microseconds() -> None:
    env = split_envelope(LINES[25], local_tz=False)
    assert (env.time_ns, env.time_source, env.text[:14]) == (
        1054082244_417470000, "local", "delivery 2518:")
    # nine digits, tai64nlocal's own, unchanged
    env = split_envelope("2020-06-25 08:00:09.681525500 new msg 100926020 queue5", local_tz=False)
    assert (env.time_ns, env.text) == (1593072009_681525500, "new msg 100926020 queue5")
    # neither six nor nine digits: no stamp
    assert split_envelope("2003-05-28 00:37:24.4174 delivery 1: success: did_1+0+0/").time_ns is None


@pytest.mark.parametrize("indent", [" ", "    ", "\t", " \t "])
def test_an_indented_paste_reads_as_the_line(indent: str) -> None:
    for line in (LINES[16], LINES[11], LINES[25], "@400000004ccc70a30b5515bc new msg 78833",
                 "2020-06-25 08:00:09.681525500 new msg 100926020 queue5"):
        plain, indented = _rec(line), _rec(indent + line + "\r")
        assert indented["raw"] == indent + line + "\r"
        assert {k: v for k, v in indented.items() if k not in ("raw", "file_id")} == \
            {k: v for k, v in plain.items() if k not in ("raw", "file_id")}


def test_courier_counters_of_other_digits_are_not_numbers() -> None:
    # str.isdigit() takes superscripts and other scripts' digits; int() refuses them
    # (a parser error record before): such a counter is left out, the rest is read
    got = dispatch("pop3d: LOGOUT, user=bob, ip=[10.0.0.1], port=[4²], top=0, retr=١٢, time=5")
    assert got[1] == "pop_logout"
    assert got[2]["remote_ip"] == "10.0.0.1" and got[2]["top"] == 0 and got[2]["duration_s"] == 5.0
    assert "remote_port" not in got[2] and "retr" not in got[2]


@pytest.mark.parametrize(("text", "user", "more"), [
    # the name the client typed, ", " and all (Courier writes it as given)
    ("LOGIN, user=joe, smith, ip=[::ffff:192.0.2.7], port=[1234], protocol=POP3", "joe, smith",
     {"remote_port": 1234, "proto": "POP3"}),
    # a name that looks like the address and port: the address is the one Courier wrote
    ("LOGIN FAILED, user=x, ip=[198.51.100.6], port=[1], ip=[::ffff:192.0.2.7]",
     "x, ip=[198.51.100.6], port=[1]", {}),
    ("LOGIN FAILED, method=PLAIN, user=a=b, c, ip=[::ffff:192.0.2.7]", "a=b, c", {"method": "PLAIN"}),
])
def test_courier_user_is_whole_up_to_the_address(text: str, user: str, more: dict[str, Any]) -> None:
    got = dispatch("imapd: " + text)
    assert got[1] == "pop_auth"
    assert got[2] == {"service": "imap", "result": "success" if text.startswith("LOGIN,") else "failure",
                      "auth_user": user, "remote_ip": "192.0.2.7", **more}


def test_digit_runs_past_int_s_limit_leave_the_line_its_fields() -> None:
    # int() refuses > 4,300 digits (ValueError out of the parser: a parse_error record,
    # the line's time and fields lost); such a number is left out, the rest is read
    run_ = "9" * 5000
    p = LineParser()
    got = p.parse(f"Nov 30 06:00:00 h pop3d: LOGOUT, user=a, ip=[192.0.2.7], port=[{run_}], top=0, "
                  f"time={'9' * 400}".encode()).to_dict()
    assert (got["time_source"], got["event"]) == ("syslog", "pop_logout")
    assert _fields(got) == {"service": "pop3", "reason": "logout", "auth_user": "a",
                            "remote_ip": "192.0.2.7", "top": 0}
    got = p.parse(f"Nov 30 06:00:00 h relaylock: /var/qmail/bin/relaylock: mail from 192.0.2.7:{run_} (h)".encode()
                  ).to_dict()
    assert (got["time_source"], got["event"], got["text"][:26]) == ("syslog", "relaylock", "/var/qmail/bin/relaylock: ")
    # within the limit and beyond 64 bits: FIELD_text and flagged, as any parser's number
    got = p.parse(f"Nov 30 06:00:00 h pop3d: LOGIN, user=a, ip=[192.0.2.7], port=[{'9' * 30}]".encode()).to_dict()
    assert got["remote_port_text"] == "9" * 30 and "malformed" in got["flags"]


@pytest.mark.parametrize("tag,text", [
    ("Error", "config: cannot open /etc/app.yml"),
    ("Info", "auth: token expired for bob"),
    ("Warning", "log: rotated 3 files"),
])
def test_a_level_tag_is_dovecot_1s_only_before_one_of_its_processes(tag: str, text: str) -> None:
    """dovecot 1.x's log file names a process after the level ('Info: pop3-login: ...',
    'Info: auth(default): ...', 'Info: IMAP(user): ...'). Any program whose syslog tag
    is 'Error' or 'Info' and whose text starts 'config: ', 'auth: ' or 'log: ' (names of
    2.x services, never so in 1.x's file) was made a dovecot record with that service."""
    program, event, fields, _ = dispatch(text, tag)
    assert (program, event) == (tag, "unparsed")
    assert "service" not in fields
