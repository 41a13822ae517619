"""tcpserver / sslserver / tcpsvd / rblsmtpd parsers (shipper.parsers.ucspi) through
the full LineParser path: real sample lines field by field, then code literals of
ucspi-tcp 0.88, ucspi-tcp6 (fehQlibs logmsg), ucspi-ssl, ipsvd/busybox tcpsvd and
the rblsmtpd variants. The real tcpserver binary is exercised in
tests/test_parsers_recordio.py (tcpserver -v + recordio session).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.parse import LineParser
from shipper.parsers import ucspi

SAMPLES_DIR = Path(__file__).parent / "fixtures" / "samples"
ELIDED_STAMP = "@4000000052fafd8d3298434c "  # indimail docs write "@..." for a label
OTHER = None  # a line of another program (asserted in its own test file)
MINE = {"tcpserver", "sslserver", "tcpsvd", "rblsmtpd"}


def sample_lines(name: str) -> list[str]:
    lines = (SAMPLES_DIR / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# source: ")
    out = []
    for line in lines[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        out.append(ELIDED_STAMP + line[5:] if line.startswith("@... ") else line)
    return out


def parse(line: str):
    rec = LineParser().parse(line.encode())
    return rec.program, rec.event, rec.pid, rec.fields


SAMPLES: dict[str, list] = {
    # the rblid addon tags a listed client (RBLID, an X-RBL-Check header) and lets it on
    "maexotic_rblsmtpd_rblid": [
        ('rblsmtpd', 'rbl_info', 5591, {'conn_pid': 5591, 'remote_ip': '195.30.1.54', 'text': 'RBLID="SPC"'}),
    ],
    "fail2ban_qmail": [
        ('rblsmtpd', 'rbl_block', 19597,
         {'conn_pid': 19597, 'remote_ip': '198.51.100.77', 'rbl_list': 'sbl-xbl.spamhaus.org', 'smtp_code': 451, 'text': 'http://www.spamhaus.org/query/bl?ip=198.51.100.77'}),
        OTHER,
        ('rblsmtpd', 'rbl_block', None,
         {'rbl_list': 'relays.ordb.org', 'remote_ip': '193.111.120.47', 'remote_host': 'ordb-test.null.dk'}),
        ('rblsmtpd', 'rbl_block', None,
         {'rbl_list': 'relays.osirusoft.com', 'remote_ip': '192.203.178.107', 'remote_host': 'sbl.crynwr.com'}),
    ],
    "fehcom_sqmail_logging_chapter": [
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        ('sslserver', 'tcp_pid', 30556, {'conn_pid': 30556, 'remote_ip': '1.2.3.4'}),
        ('sslserver', 'tcp_ok', 30556,
         {'conn_pid': 30556, 'local_host': 'mail.fehcom.de', 'local_ip': '85.25.149.179', 'local_port': 25, 'remote_host': 'mail40.ml.mailersend.com', 'remote_ip': '1.2.3.4', 'remote_port': 44176}),
        ('sslserver', 'tls_accept', 30554,
         {'conn_pid': 30554, 'tls': 'TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384'}),
        OTHER,
        ('sslserver', 'tcp_end', None,
         {'conn_pid': 30553, 'wait_status': 0, 'exit_code': 0, 'parent': True}),
        ('sslserver', 'tcp_pid', 19782, {'conn_pid': 19782, 'remote_ip': '153.149.230.39'}),
        ('sslserver', 'tcp_ok', 19782,
         {'conn_pid': 19782, 'local_host': 'mail.fehcom.de', 'local_ip': '85.25.149.179', 'local_port': 25, 'remote_host': 'mbkd0138.ocn.ad.jp', 'remote_ip': '153.149.230.39', 'remote_port': 35970}),
        ('rblsmtpd', 'rbl_greetdelay', 19782,
         {'conn_pid': 19782, 'remote_ip': '153.149.230.39', 'delay': 80}),
        OTHER,
        ('sslserver', 'tls_accept', 19782, {'conn_pid': 19782}),
        ('sslserver', 'tcp_end', None,
         {'conn_pid': 19781, 'wait_status': 0, 'exit_code': 0, 'parent': True}),
        ('sslserver', 'tcp_status', None, {'children': 1, 'limit': 10}),
        ('sslserver', 'tcp_pid', 26120, {'conn_pid': 26120, 'remote_ip': '91.20.45.91'}),
        ('sslserver', 'tcp_ok', 26120,
         {'conn_pid': 26120, 'local_host': 'mail.fehcom.net', 'local_ip': '85.25.149.179', 'local_port': 995, 'remote_host': 'p5b142d5b.dip0.t-ipconnect.de', 'remote_ip': '91.20.45.91', 'remote_port': 62745}),
        ('sslserver', 'tls_accept', 26120,
         {'conn_pid': 26120, 'tls': 'TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384'}),
        OTHER,
        ('sslserver', 'tcp_end', None,
         {'conn_pid': 26119, 'wait_status': 256, 'exit_code': 1, 'parent': True}),
        ('sslserver', 'tcp_status', None, {'children': 0, 'limit': 10}),
    ],
    "indimail_docs_samples": [
        ('tcpserver', 'tcp_pid', 49943, {'conn_pid': 49943, 'remote_ip': '192.168.192.11'}),
        ('tcpserver', 'tcp_ok', 49943,
         {'conn_pid': 49943, 'local_host': 'qmailer.fehnet.de', 'local_ip': '192.168.192.2', 'local_port': 25, 'remote_host': 'arkon.fehnet.de', 'remote_ip': '192.168.192.11', 'remote_port': 1074}),
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        ('tcpserver', 'tcp_pid', 49989, {'conn_pid': 49989, 'remote_ip': '192.168.192.11'}),
        ('tcpserver', 'tcp_ok', 49989,
         {'conn_pid': 49989, 'local_host': 'qmailer.fehnet.de', 'local_ip': '192.168.192.2', 'local_port': 25, 'remote_host': 'arkon.fehnet.de', 'remote_ip': '192.168.192.11', 'remote_port': 1077}),
        OTHER,
        ('tcpserver', 'tcp_end', None, {'conn_pid': 49989, 'wait_status': 256, 'exit_code': 1}),
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
    ],
    "indimail_rsmtp_scripts_comments": [
        ('tcpserver', 'tcp_pid', 30906, {'conn_pid': 30906, 'remote_ip': '210.210.122.80'}),
        OTHER,
        ('tcpserver', 'tcp_end', None, {'conn_pid': 30906, 'wait_status': 0, 'exit_code': 0}),
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
    ],
    # indimail's tcpserver: its own ok/deny layout and " sql: N" status suffix
    "indimail_tcpserver_formats": [
        ('tcpserver', 'tcp_status', None, {'children': 0, 'limit': 40}),
        ('tcpserver', 'tcp_pid', 23456, {'conn_pid': 23456, 'remote_ip': '198.51.100.7'}),
        ('tcpserver', 'tcp_ok', 23456,
         {'conn_pid': 23456, 'local_host': 'mail.example.com', 'local_ip': '192.0.2.10', 'local_port': 25, 'remote_host': 'client.example.net', 'remote_ip': '198.51.100.7', 'remote_port': 51234, 'ip_limit': 20}),
        ('tcpserver', 'tcp_deny', 23457,
         {'conn_pid': 23457, 'local_ip': '2001:db8::25', 'local_port': 465, 'remote_ip': '2001:db8::7', 'remote_info': 'ident', 'remote_port': 40001, 'ip_limit': 5}),
        ('tcpserver', 'tcp_end', None, {'conn_pid': 23458, 'text': 'crashed'}),
        ('tcpserver', 'tcp_status', None, {'children': 1, 'limit': 40}),
    ],
    "java_test_tcpserver_comment": [
        ('tcpserver', 'tcp_status', None, {'children': 0, 'limit': 40}),
        ('tcpserver', 'tcp_status', None, {'children': 1, 'limit': 40}),
        ('tcpserver', 'tcp_pid', 12385, {'conn_pid': 12385, 'remote_ip': '127.0.0.1'}),
        ('tcpserver', 'tcp_ok', 12385,
         {'conn_pid': 12385, 'local_host': '0', 'local_ip': '127.0.0.1', 'local_port': 2023, 'remote_ip': '127.0.0.1', 'remote_port': 43666}),
        ('tcpserver', 'tcp_end', None, {'conn_pid': 12385, 'wait_status': 0, 'exit_code': 0}),
        ('tcpserver', 'tcp_status', None, {'children': 0, 'limit': 40}),
    ],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_real_samples_field_by_field(name: str) -> None:
    lines = sample_lines(name)
    expected = SAMPLES[name]
    assert len(lines) == len(expected)
    for line, exp in zip(lines, expected, strict=True):
        got = parse(line)
        if exp is OTHER:
            assert got[0] not in MINE, line
        else:
            assert got == exp, line


# (whole line, program, event, pid, fields)
LITERALS = [
    # formats reference §5 examples
    ("@400000004c5b34b604c9b734 tcpserver: deny 6944 us.es:192.168.1.13:25 :193.147.171.74::40714",
     "tcpserver", "tcp_deny", 6944,
     {"conn_pid": 6944, "local_host": "us.es", "local_ip": "192.168.1.13", "local_port": 25,
      "remote_ip": "193.147.171.74", "remote_port": 40714}),
    ("Oct 14 22:24:55 vpopmail vpopmaild: tcpserver: ok 40045 vpopmail:::ffff:172.16.15.8:89 "
     ":::ffff:172.16.15.9::10422", "tcpserver", "tcp_ok", 40045,
     # an IPv4-mapped address in an IP field as its IPv4 (shipper.ipaddr; the line keeps it)
     {"conn_pid": 40045, "local_host": "vpopmail", "local_ip": "172.16.15.8", "local_port": 89,
      "remote_ip": "172.16.15.9", "remote_port": 10422}),
    # ucspi-tcp6: plain IPv6 addresses with colons, remote info from -r
    ("tcpserver: ok 123 mx.example.org:2001:db8::25:25 client.example:2001:db8:1::99:ident:51000",
     "tcpserver", "tcp_ok", 123,
     {"conn_pid": 123, "local_host": "mx.example.org", "local_ip": "2001:db8::25", "local_port": 25,
      "remote_host": "client.example", "remote_ip": "2001:db8:1::99", "remote_info": "ident",
      "remote_port": 51000}),
    ("tcpserver: deny 124 :::1:25 :::1::40000 ip connection limit:5 exceeded",
     "tcpserver", "tcp_deny", 124,
     {"conn_pid": 124, "local_ip": "::1", "local_port": 25, "remote_ip": "::1", "remote_port": 40000,
      "reason": "ip connection limit:5 exceeded"}),
    ("tcpserver: pid 23904 from 192.168.1.165", "tcpserver", "tcp_pid", 23904,
     {"conn_pid": 23904, "remote_ip": "192.168.1.165"}),
    # wait status: exit = status >> 8, signal = status & 0x7f
    ("tcpserver: end 23904 status 256", "tcpserver", "tcp_end", None,
     {"conn_pid": 23904, "wait_status": 256, "exit_code": 1}),
    ("tcpserver: end 23904 status 25600", "tcpserver", "tcp_end", None,
     {"conn_pid": 23904, "wait_status": 25600, "exit_code": 100}),
    ("tcpserver: end 23904 status 9", "tcpserver", "tcp_end", None,
     {"conn_pid": 23904, "wait_status": 9, "signal": 9}),
    ("tcpserver: end 23904 status 15", "tcpserver", "tcp_end", None,
     {"conn_pid": 23904, "wait_status": 15, "signal": 15}),
    ("tcpserver: end 23904 status 134", "tcpserver", "tcp_end", None,  # SIGABRT + core
     {"conn_pid": 23904, "wait_status": 134, "signal": 6}),
    ("tcpserver: status: 1/40", "tcpserver", "tcp_status", None, {"children": 1, "limit": 40}),
    # errors: 0.88 strerr, then fehQlibs "class: (code) msg[: errmsg]"
    ("tcpserver: fatal: unable to bind: address already used", "tcpserver", "tcp_error", None,
     {"level": "fatal", "text": "unable to bind: address already used"}),
    ("tcpserver: warning: dropping connection, unable to read /etc/tcp.smtp.cdb: file does not exist",
     "tcpserver", "tcp_error", None,
     {"level": "warning",
      "text": "dropping connection, unable to read /etc/tcp.smtp.cdb: file does not exist"}),
    ("tcpserver: fatal: (111) unable to bind", "tcpserver", "tcp_error", None,
     {"level": "fatal", "errno": 111, "text": "unable to bind"}),
    ("tcpserver: drop: (110) unable to read: /etc/tcp.smtp.cdb", "tcpserver", "tcp_error", None,
     {"level": "drop", "errno": 110, "text": "unable to read: /etc/tcp.smtp.cdb"}),
    ("tcpserver: fatal: (-2) unable to figure out port number for smtpx", "tcpserver", "tcp_error",
     None, {"level": "fatal", "errno": -2, "text": "unable to figure out port number for smtpx"}),
    # sslserver (§6)
    ("@400000005a49ba34303796fc sslserver: ended by 30553 status 0", "sslserver", "tcp_end", None,
     {"conn_pid": 30553, "wait_status": 0, "exit_code": 0, "parent": True}),
    ("sslserver: end 30553 status 256", "sslserver", "tcp_end", None,
     {"conn_pid": 30553, "wait_status": 256, "exit_code": 1}),
    ("sslserver: status: 3/10/5", "sslserver", "tcp_status", None,
     {"children": 3, "limit": 10, "ip_limit": 5}),
    ("sslserver: tls 4711 accept TLSv1.3:TLS_AES_256_GCM_SHA384", "sslserver", "tls_accept", 4711,
     {"conn_pid": 4711, "tls": "TLSv1.3:TLS_AES_256_GCM_SHA384"}),
    ("sslserver: fatal: (111) unable to accept TLS from: 1.2.3.4 for pid: 4711 "
     "error:0A000412:SSL routines::sslv3 alert bad certificate", "sslserver", "tcp_error", None,
     {"level": "fatal", "errno": 111,
      "text": "unable to accept TLS from: 1.2.3.4 for pid: 4711 error:0A000412:SSL routines::sslv3 "
              "alert bad certificate", "remote_ip": "1.2.3.4", "conn_pid": 4711}),
    # ucspi-ssl's error_warn(): OpenSSL's queued errors as they are (ERR_error_string_n)
    ("sslserver: error:0A000086:SSL routines::certificate verify failed", "sslserver", "tcp_error", None,
     {"level": "error", "text": "error:0A000086:SSL routines::certificate verify failed"}),
    ("sslserver: error:0A000086:SSL_routines \r", "sslserver", "tcp_error", None,
     {"level": "error", "text": "error:0A000086:SSL_routines"}),
    ("sslserver: error: (110) no client certificate from: 2001:db8::7 for pid: 4712",
     "sslserver", "tcp_error", None,
     {"level": "error", "errno": 110, "text": "no client certificate from: 2001:db8::7 for pid: 4712",
      "remote_ip": "2001:db8::7", "conn_pid": 4712}),
    ("sslserver: deny 4713 mail:85.25.149.179:465 :91.20.45.91::62745 ip connection limit:3 exceeded",
     "sslserver", "tcp_deny", 4713,
     {"conn_pid": 4713, "local_host": "mail", "local_ip": "85.25.149.179", "local_port": 465,
      "remote_ip": "91.20.45.91", "remote_port": 62745, "reason": "ip connection limit:3 exceeded"}),
    # rblsmtpd (§7)
    ("@40000000450b2d2e1529cb14 rblsmtpd: 216.55.155.54 pid 93340: 451 "
     "http://www.spamhaus.org/query/bl?ip=216.55.155.54", "rblsmtpd", "rbl_block", 93340,
     {"conn_pid": 93340, "remote_ip": "216.55.155.54", "smtp_code": 451,
      "text": "http://www.spamhaus.org/query/bl?ip=216.55.155.54"}),
    ("rblsmtpd: 2001:db8::66 pid 5150: 553 listed at zen, see https://example.org/?ip=2001:db8::66",
     "rblsmtpd", "rbl_block", 5150,
     {"conn_pid": 5150, "remote_ip": "2001:db8::66", "smtp_code": 553,
      "text": "listed at zen, see https://example.org/?ip=2001:db8::66"}),
    ("rblsmtpd:  pid 5151: 451 temporary RBL lookup error", "rblsmtpd", "rbl_block", 5151,
     {"conn_pid": 5151, "smtp_code": 451, "text": "temporary RBL lookup error"}),
    ("rblsmtpd: 153.149.230.39 pid 19782: [RBL info] listed in bl.example.org",
     "rblsmtpd", "rbl_info", 19782,
     {"conn_pid": 19782, "remote_ip": "153.149.230.39", "text": "listed in bl.example.org"}),
    # tcpsvd (ipsvd / busybox, §11)
    ("tcpsvd: info: listening on 0.0.0.0:25, starting.", "tcpsvd", "tcp_info", None,
     {"text": "listening on 0.0.0.0:25, starting."}),
    ("tcpsvd: info: status 1/30", "tcpsvd", "tcp_status", None, {"children": 1, "limit": 30}),
    ("tcpsvd: info: pid 8447 from 10.0.0.1", "tcpsvd", "tcp_pid", 8447,
     {"conn_pid": 8447, "remote_ip": "10.0.0.1"}),
    ("tcpsvd: info: concurrency 8447 10.0.0.1 2/5", "tcpsvd", "tcp_info", 8447,
     {"conn_pid": 8447, "remote_ip": "10.0.0.1", "ip_children": 2, "ip_limit": 5,
      "text": "concurrency 8447 10.0.0.1 2/5"}),
    ("tcpsvd: info: start 8447 mail.example.org:10.0.0.2 ::10.0.0.1:33050 ./peers/0",
     "tcpsvd", "tcp_ok", 8447,
     {"conn_pid": 8447, "local_host": "mail.example.org", "local_ip": "10.0.0.2",
      "remote_ip": "10.0.0.1", "remote_port": 33050, "text": "./peers/0"}),
    ("tcpsvd: info: start 8448 mail:10.0.0.2:25 :client.example:10.0.0.1:33051",
     "tcpsvd", "tcp_ok", 8448,
     {"conn_pid": 8448, "local_host": "mail", "local_ip": "10.0.0.2", "local_port": 25,
      "remote_host": "client.example", "remote_ip": "10.0.0.1", "remote_port": 33051}),
    ("tcpsvd: info: deny 8449 mail:10.0.0.2 ::10.0.0.9:33052 ./peers/10.0.0.9",
     "tcpsvd", "tcp_deny", 8449,
     {"conn_pid": 8449, "local_host": "mail", "local_ip": "10.0.0.2", "remote_ip": "10.0.0.9",
      "remote_port": 33052, "text": "./peers/10.0.0.9"}),
    ("tcpsvd: info: end 8447 exit 0", "tcpsvd", "tcp_end", None, {"conn_pid": 8447, "exit_code": 0}),
    ("tcpsvd: info: end 8448 signal 15", "tcpsvd", "tcp_end", None, {"conn_pid": 8448, "signal": 15}),
    ("tcpsvd: fatal: unable to bind: address already in use", "tcpsvd", "tcp_error", None,
     {"level": "fatal", "text": "unable to bind: address already in use"}),
    # s6-networking (skarnet): s6-tcpserver-access.c logit() and its reject path,
    # s6-tcpserverd.c log_accept/log_reject/log_close/log_status/log_start, and
    # the older s6-tcpserver4d.c; skalibs' strerr prefixes "PROG: info: " etc.
    ("s6-tcpserver-access: info: allow pid 12345 ip 192.0.2.7", "s6-tcpserver-access", "tcp_ok",
     12345, {"conn_pid": 12345, "remote_ip": "192.0.2.7"}),
    ("s6-tcpserver-access: info: deny pid 12345 ip 2001:db8::7: Permission denied",
     "s6-tcpserver-access", "tcp_deny", 12345,
     {"conn_pid": 12345, "remote_ip": "2001:db8::7", "reason": "Permission denied"}),
    ("s6-tcpserver-access: fatal: reject pid 12345 ip 192.0.2.7", "s6-tcpserver-access",
     "tcp_deny", 12345, {"conn_pid": 12345, "remote_ip": "192.0.2.7", "reason": "check failed"}),
    ("s6-tcpserver-access: fatal: unable to check cdb ruleset for IP in /etc/rules.cdb: I/O error",
     "s6-tcpserver-access", "tcp_error", None,
     {"level": "fatal", "text": "unable to check cdb ruleset for IP in /etc/rules.cdb: I/O error"}),
    ("s6-tcpserverd: info: accept 2001:db8::7_51234 pid 12345 count 1/40", "s6-tcpserverd",
     "tcp_ok", 12345, {"conn_pid": 12345, "remote_ip": "2001:db8::7", "remote_port": 51234,
                       "ip_children": 1, "ip_limit": 40}),
    ("s6-tcpserverd: info: reject 192.0.2.7_51234 count 40/40", "s6-tcpserverd", "tcp_deny", None,
     {"remote_ip": "192.0.2.7", "remote_port": 51234, "ip_children": 40, "ip_limit": 40,
      "reason": "per-IP connection limit"}),
    ("s6-tcpserverd: info: end pid 12345 exitcode 0 count 0/40", "s6-tcpserverd", "tcp_end", None,
     {"conn_pid": 12345, "exit_code": 0, "ip_children": 0, "ip_limit": 40}),
    ("s6-tcpserverd: info: end pid 12346 signal 9 count 0/40", "s6-tcpserverd", "tcp_end", None,
     {"conn_pid": 12346, "signal": 9, "ip_children": 0, "ip_limit": 40}),
    ("s6-tcpserverd: info: status: 1/40", "s6-tcpserverd", "tcp_status", None,
     {"children": 1, "limit": 40}),
    ("s6-tcpserverd: info: starting - bound to ip 0.0.0.0 port 25", "s6-tcpserverd", "tcp_info",
     None, {"text": "starting - bound to ip 0.0.0.0 port 25"}),
    ("s6-tcpserverd: warning: unable to spawn qmail-smtpd: Resource temporarily unavailable",
     "s6-tcpserverd", "tcp_error", None,
     {"level": "warning", "text": "unable to spawn qmail-smtpd: Resource temporarily unavailable"}),
    ("s6-tcpserver4d: info: allow 192.0.2.7:51234 pid 12345 count 1/10", "s6-tcpserver4d",
     "tcp_ok", 12345, {"conn_pid": 12345, "remote_ip": "192.0.2.7", "remote_port": 51234,
                       "ip_children": 1, "ip_limit": 10}),
    ("s6-tcpserver4d: info: deny 192.0.2.7:51234 count 10/10: Success", "s6-tcpserver4d",
     "tcp_deny", None, {"remote_ip": "192.0.2.7", "remote_port": 51234, "ip_children": 10,
                        "ip_limit": 10, "reason": "Success"}),
    ("s6-tcpserver4d: info: end pid 12345 ip 192.0.2.7 exitcode 0", "s6-tcpserver4d", "tcp_end",
     None, {"conn_pid": 12345, "remote_ip": "192.0.2.7", "exit_code": 0}),
]


@pytest.mark.parametrize(("line", "program", "event", "pid", "fields"), LITERALS)
def test_code_literal_lines(line: str, program: str, event: str, pid: int | None,
                            fields: dict) -> None:
    assert parse(line) == (program, event, pid, fields)
    assert parse(line + "\r") == (program, event, pid, fields)
    assert parse(line + "   ") == (program, event, pid, fields)


def test_tjsi_form_keeps_remote_info_when_given() -> None:
    assert ucspi.parse_rblsmtpd("bl.example.org blocked 192.0.2.1 host.example ident") == (
        "rbl_block", {"rbl_list": "bl.example.org", "remote_ip": "192.0.2.1",
                      "remote_host": "host.example", "remote_info": "ident"})


@pytest.mark.parametrize(("fn", "text"), [
    (ucspi.parse_tcpserver, "status: many"),
    (ucspi.parse_tcpserver, "pid x from 1.2.3.4"),
    (ucspi.parse_tcpserver, "ok"),
    (ucspi.parse_tcpserver, "end 1 status x"),
    (ucspi.parse_tcpserver, "hello world"),
    (ucspi.parse_tcpserver, ""),
    (ucspi.parse_sslserver, "ssl x accept"),
    (ucspi.parse_tcpsvd, "something else"),
    (ucspi.parse_rblsmtpd, "no grammar here"),
    (ucspi.parse_rblsmtpd, "1.2.3.4 pid 5: greetdelay: soon"),
    (ucspi.parse_rblsmtpd, "1.2.3.4 pid 5: what"),
    (ucspi.parse_tcpserver, "end " + "9" * 5000 + " status 0"),
])
def test_not_in_grammar(fn, text: str) -> None:
    assert fn(text) is None


def test_unknown_tcpserver_text_keeps_program() -> None:
    assert parse("tcpserver: something new") == ("tcpserver", "unparsed", None, {})


PARSERS = (ucspi.parse_tcpserver, ucspi.parse_sslserver, ucspi.parse_tcpsvd, ucspi.parse_rblsmtpd,
           ucspi.parse_s6_tcpserver)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(text: str) -> None:
    for fn in PARSERS:
        got = fn(text)
        assert got is None or (isinstance(got[0], str) and isinstance(got[1], dict))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["status: ", "pid ", "ok ", "deny ", "end ", "ended by ", "ssl ", "tls ",
                        "fatal: (", "drop: ", "info: start ", "info: end ", "info: status ",
                        "info: pid ", "info: concurrency ", "1.2.3.4 pid ", " pid ",
                        "info: accept ", "info: allow pid ", "info: end pid ", "fatal: reject pid "]),
       st.text(alphabet=st.sampled_from("0123456789 :/.()-abf[]\r"), max_size=60))
def test_never_raises_on_grammar_shaped_text(head: str, tail: str) -> None:
    for fn in PARSERS:
        got = fn(head + tail)
        assert got is None or (isinstance(got[0], str) and isinstance(got[1], dict))


# -- the one-regex ok/deny fast path must say what the general path says -----------

_HOSTISH = st.text(st.sampled_from("az09.-_é٣"), max_size=10)
_IPISH = st.sampled_from(["192.0.2.1", "2001:db8::1", "::1", "::ffff:192.0.2.7", "", "fe80::1"])


@settings(max_examples=600, deadline=None)
@given(word=st.sampled_from(["ok", "deny"]), pid=st.integers(0, 10**9),
       lhost=_HOSTISH, lip=_IPISH, lport=st.integers(0, 65535), rhost=_HOSTISH, rip=_IPISH,
       rinfo=_HOSTISH, rport=st.integers(0, 65535))
def test_okdeny_fast_path_equals_general_path(word, pid, lhost, lip, lport, rhost, rip, rinfo, rport):
    rest = f"{pid} {lhost}:{lip}:{lport} {rhost}:{rip}:{rinfo}:{rport}"
    got = ucspi.parse_tcpserver(f"{word} {rest}")
    assert ucspi._OKDENY_FAST_RE.fullmatch(rest) is not None  # these all take the fast path
    m = ucspi._OKDENY_RE.fullmatch(rest)
    f: dict = {"pid": int(m.group(1)), "conn_pid": int(m.group(1))}
    ucspi._local_fields(m.group(2), f)
    ucspi._remote_fields(m.group(3), f)
    assert got == ("tcp_ok" if word == "ok" else "tcp_deny", f)


@pytest.mark.parametrize("text", ["", "status:", " status: 1/40", "  ", "end"])
def test_tcpserver_text_without_a_word_and_its_rest_is_not_tcpservers(text):
    # the first word, up to the first blank, names the line's kind; none, or nothing after it
    assert ucspi.parse_tcpserver(text) is None
    assert ucspi.parse_tcpserver("status: 1/40 \r") == ("tcp_status", {"children": 1, "limit": 40})
