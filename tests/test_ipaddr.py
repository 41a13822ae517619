"""One spelling of an IPv4-mapped address in every program's IP fields (shipper.ipaddr).

A client that reached an IPv6 socket over IPv4 is ``::ffff:1.2.3.4`` in the lines of
the programs that print the socket's address as is; its records said so in
``remote_ip`` (indimail, Dovecot, tcpserver) while Courier's and Plesk's said
``1.2.3.4``: a search for ``remote_ip:1.2.3.4`` missed half of them. Each program's
line, through both parse paths (a multilog batch, a single line); the line's own
spelling stays in ``message``/``raw``.

Real lines where the program's own log with a mapped address is public (indimail,
Dovecot, Courier, tcpserver); for the others (fehcom's sslserver and s/qmail's
``S:``, Postfix, Plesk's smtp_auth, tcpsvd) a real line of that program with its
address written mapped, as the program would print it from such a socket.
"""

from __future__ import annotations

from typing import Any

import pytest

from shipper.ipaddr import ip_field, unmap_fields
from shipper.parse import LineParser
from shipper.transforms import Pseudonymiser

LABEL = "@400000004bac90a33711966c "
# (line, program, event, the IP fields the record holds)
CASES: list[tuple[str, str, str, dict[str, str]]] = [
    # real: tests/fixtures/samples/indimail_readme_multiqueue_tai64nlocal.txt
    (LABEL + "qmail-smtpd: pid 14544 from ::ffff:127.0.0.1 HELO <indimail.org> MAIL from "
     "<sitelist-bounces@lists.sourceforge.net> RCPT <mailstore@indimail.org> AUTH <local-rcpt> "
     "Size: 7330", "qmail-smtpd", "smtp_accept", {"remote_ip": "127.0.0.1"}),
    # real: tests/fixtures/samples/public_lines_s14.txt (wazuh's Dovecot test lines)
    ("May 31 09:43:57 Info: pop3-login: Aborted login (1 authentication attempts): "
     "user=<username>, method=PLAIN, rip=::ffff:1.2.3.4, lip=::ffff:1.2.3.5, secured",
     "dovecot", "dovecot", {"remote_ip": "1.2.3.4", "local_ip": "1.2.3.5"}),
    ("Mar 13 15:25:07 Info: auth(default): passwd-file(user@example.com,::ffff:1.2.3.4): unknown user",
     "dovecot", "dovecot", {"remote_ip": "1.2.3.4"}),
    # real: the same file (fail2ban's Courier test lines)
    ("Apr 27 09:00:00 servername imapd: LOGIN FAILED, user=tester, ip=[::ffff:192.0.2.5], port=[255]",
     "imapd", "pop_auth", {"remote_ip": "192.0.2.5"}),
    # real: tests/test_parsers_ucspi.py's vpopmaild box (tcpserver behind syslog)
    ("Oct 14 22:24:55 vpopmail vpopmaild: tcpserver: ok 40045 vpopmail:::ffff:172.16.15.8:89 "
     ":::ffff:172.16.15.9::10422", "tcpserver", "tcp_ok",
     {"local_ip": "172.16.15.8", "remote_ip": "172.16.15.9"}),
    # fehcom's sslserver and s/qmail (tests/fixtures/samples/fehcom_sqmail_logging_chapter.txt),
    # the client's address written mapped
    (LABEL + "sslserver: pid 26120 from ::ffff:91.20.45.91", "sslserver", "tcp_pid",
     {"remote_ip": "91.20.45.91"}),
    (LABEL + "sslserver: ok 26120 mail.fehcom.net:::ffff:85.25.149.179:995 "
     "p5b142d5b.dip0.t-ipconnect.de:::ffff:91.20.45.91::62745", "sslserver", "tcp_ok",
     {"local_ip": "85.25.149.179", "remote_ip": "91.20.45.91"}),
    (LABEL + "qmail-smtpd: pid 19782 Reject::RCPT::Failed_Rcptto P:ESMTP "
     "S:::ffff:153.149.230.39:mbkd0138.ocn.ad.jp H:mbkd0138.ocn.ad.jp F:www.@silk.ocn.ne.jp "
     "T:nelson-qa@aqmail.org", "qmail-smtpd", "smtp_decision", {"remote_ip": "153.149.230.39"}),
    # tcpsvd (ipsvd's -v line, tests/fixtures/samples/ipsvd_100_tcpsvd_vv_real.txt)
    (LABEL + "tcpsvd: info: pid 3465 from ::ffff:127.0.0.1", "tcpsvd", "tcp_pid",
     {"remote_ip": "127.0.0.1"}),
    # Postfix 3.7 (tests/fixtures/samples/postfix_3.7_real.txt), the client mapped
    ("Nov 30 06:29:35 mx postfix/smtpd[10059]: connect from localhost[::ffff:127.0.0.1]",
     "postfix/smtpd", "connect", {"remote_ip": "127.0.0.1"}),
    ("Nov 30 06:29:35 mx postfix/smtpd[10059]: 19F2220C76D: client=localhost[::ffff:127.0.0.1]",
     "postfix/smtpd", "client", {"remote_ip": "127.0.0.1"}),
    ("Nov 30 06:29:35 mx postfix/smtp[10063]: 19F2220C76D: to=<ok1@relay.test>, "
     "relay=127.0.0.1[::ffff:127.0.0.1]:36297, delay=0.02, delays=0.01/0.01/0/0.01, dsn=2.0.0, "
     "status=sent (250 2.0.0 Ok: queued as RCV123)", "postfix/smtp", "delivery",
     {"relay_ip": "127.0.0.1"}),
    # Plesk's smtp_auth (public_lines_s14.txt's forum post)
    ("Feb 10 10:19:33 s60418 smtp_auth: SMTP connect from unknown@ [::ffff:207.219.92.194]",
     "smtp_auth", "smtp_auth", {"remote_ip": "207.219.92.194"}),
]


def _both_ways(line: str) -> list[dict[str, Any]]:
    """The record of ``line`` as one line and, for a multilog line, in a batch."""
    got = [LineParser(source="current", file_id="0123456789abcdef").parse(
        line.encode(), 0, now_ns=1_700_000_000 * 10**9).to_dict()]
    if line.startswith("@"):
        other = "@400000004bac90a33711966d tcpserver: status: 1/40"
        batch = LineParser(source="current", file_id="0123456789abcdef").parse_batch_dicts(
            [other.encode(), line.encode()], [0, 100])
        got.append(batch[1])
    return got


@pytest.mark.parametrize("line, program, event, ips", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_mapped_address_is_ipv4_in_every_programs_fields(line: str, program: str, event: str,
                                                         ips: dict[str, str]) -> None:
    for rec in _both_ways(line):
        assert (rec["program"], rec["event"]) == (program, event), rec
        assert {k: rec.get(k) for k in ips} == ips
        assert "::ffff:" in rec["message"] and "::ffff:" in rec["raw"]


def test_other_addresses_are_kept_as_written() -> None:
    for text in ("192.0.2.1", "2001:db8::1", "2001:DB8::1", "::1", "fe80::1%eth0", "::ffff",
                 "unknown", "ffff:192.0.2.1", "", "::ffff:1.2.3.999",
                 "::FFFF:192.0.2.1"):  # (no program writes upper case: see may_hold_mapped)
        assert ip_field(text) == text
    for text, want in (("::ffff:192.0.2.1", "192.0.2.1"), ("0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"),
                       ("::ffff:c000:201", "192.0.2.1")):
        assert ip_field(text) == want


def test_pseudonym_of_a_mapped_address_is_its_ipv4_ones() -> None:
    """The field (IPv4 now) and the line's text (mapped) get one pseudonym."""
    (rec,) = _both_ways(CASES[3][0])
    p = Pseudonymiser(key=b"k" * 32)
    (out,) = p.apply([dict(rec)])
    assert out["remote_ip"] == p.ip("::ffff:192.0.2.5") == p.ip("192.0.2.5")
    assert out["remote_ip"] in out["message"]


def test_only_ip_fields_holding_text_are_unmapped() -> None:
    """A HELO name or a user name that happens to be a mapped address is what the client
    said, not an address of ours: kept as written; a field with no text is left alone."""
    mapped = "::ffff:192.0.2.1"
    fields: dict[str, Any] = {"remote_ip": mapped, "helo": mapped, "user": mapped, "ip": mapped,
                              "relay_ip": None, "local_ip": "::1", "pid": 4250}
    unmap_fields(fields)
    assert fields == {"remote_ip": "192.0.2.1", "helo": mapped, "user": mapped, "ip": mapped,
                      "relay_ip": None, "local_ip": "::1", "pid": 4250}
