"""qmail-smtpd / qmail-popup parsers (s/qmail, SPAMCONTROL, indimail, qmail-toaster),
checked field by field through the whole LineParser path on real sample lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.parse import LineParser
from shipper.parsers import smtpd as _smtpd
from shipper.parsers.smtpd import parse_qmail_popup, parse_qmail_smtpd, parse_spamcontrol

SAMPLES = Path(__file__).parent / "fixtures" / "samples"


def _lines(name: str) -> list[str]:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    assert text.startswith("# source:")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _parse(line: str):
    return LineParser().parse(line.encode())


# (line, program, pid, event, fields) — every s/qmail qmail-smtpd/popup line of the fehcom chapter
FEHCOM = [
    ("@400000005a49ba341eefa7a4 qmail-smtpd: pid 30554 Accept::RCPT::Recipients_Pam P:ESMTPS "
     "S:1.2.3.4:mail16.maila.com H:maila.com F:bounce-c8s3-794521509891671878@ml.maila.com T:feh@fehcom.de",
     "qmail-smtpd", 30554, "smtp_decision",
     {"conn_pid": 30554, "action": "Accept", "check": "RCPT", "condition": "Recipients_Pam",
      "proto": "ESMTPS", "remote_ip": "1.2.3.4", "remote_host": "mail16.maila.com", "helo": "maila.com",
      "mail_from": "bounce-c8s3-794521509891671878@ml.maila.com", "rcpt_to": "feh@fehcom.de"}),
    ("@400000005a4a3f293a5eb9e4 qmail-smtpd: pid 19782 Reject::RCPT::Failed_Rcptto P:ESMTP "
     "S:153.149.230.39:mbkd0138.ocn.ad.jp H:mbkd0138.ocn.ad.jp F:www.@silk.ocn.ne.jp T:nelson-qa@aqmail.org",
     "qmail-smtpd", 19782, "smtp_decision",
     {"conn_pid": 19782, "action": "Reject", "check": "RCPT", "condition": "Failed_Rcptto",
      "proto": "ESMTP", "remote_ip": "153.149.230.39", "remote_host": "mbkd0138.ocn.ad.jp",
      "helo": "mbkd0138.ocn.ad.jp", "mail_from": "www.@silk.ocn.ne.jp", "rcpt_to": "nelson-qa@aqmail.org"}),
    ("2018-01-03 23:42:03.206953500 qmail-popup: pid 26120 Accept::AUTH::User P:POP3S "
     "S:91.20.45.91:p5b142d5b.dip0.t-ipconnect.de ?~ 'X@fehcom.de'",
     "qmail-popup", 26120, "smtp_decision",
     {"conn_pid": 26120, "action": "Accept", "check": "AUTH", "condition": "User", "proto": "POP3S",
      "remote_ip": "91.20.45.91", "remote_host": "p5b142d5b.dip0.t-ipconnect.de", "auth_user": "X@fehcom.de"}),
]

_IM = "qmail-smtpd: pid 1821 from 127.0.0.1 "
_IMF = {"conn_pid": 1821, "remote_ip": "127.0.0.1"}
# every qmail-smtpd line of the indimail script comments (some are author templates)
INDIMAIL = [
    (_IM + "HELO <localhost.localdomain> MAIL from: <jbks@tca-os.de> RCPT <yahoo> AUTH <local-rcpt> "
     "Size: 2281 X-Bogocity: No, spam probability=0.208748, cutoff=5.11e-01", "smtp_accept",
     {"helo": "localhost.localdomain", "mail_from": "jbks@tca-os.de", "rcpt_to": "yahoo", "auth": "local-rcpt",
      "size": 2281, "text": "X-Bogocity: No, spam probability=0.208748, cutoff=5.11e-01"}),
    (_IM + "Invalid RELAY client: MAIL from: <mbhangui@indi.com>, RCPT <mbhangui@yahoo.com>", "smtp_reject",
     {"reason": "Invalid RELAY client", "mail_from": "mbhangui@indi.com", "rcpt_to": "mbhangui@yahoo.com",
      "text": "Invalid RELAY client: MAIL from: <mbhangui@indi.com>, RCPT <mbhangui@yahoo.com>"}),
    (_IM + "ETRN", "smtp_other", {"text": "ETRN"}),
    (_IM + "ATRN", "smtp_other", {"text": "ATRN"}),
    (_IM + "Invalid RELAY client: MAIL from <a@indi.com> RCPT <b@indi.com> AUTH <a@indi.com>", "smtp_reject",
     {"reason": "Invalid RELAY client", "mail_from": "a@indi.com", "rcpt_to": "b@indi.com", "auth": "a@indi.com",
      "text": "Invalid RELAY client: MAIL from <a@indi.com> RCPT <b@indi.com> AUTH <a@indi.com>"}),
    (_IM + "SMTP Access denied to <a@indi.com>", "smtp_reject",
     {"reason": "SMTP Access denied", "text": "SMTP Access denied to <a@indi.com>"}),
    (_IM + "Non-existing DNS_MX: MAIL mbhangui@yahoo.com", "smtp_reject",
     {"reason": "Non-existing DNS_MX", "mail_from": "mbhangui@yahoo.com",
      "text": "Non-existing DNS_MX: MAIL mbhangui@yahoo.com"}),
    (_IM + "Non-existing DNS_MX: HELO mbhangui@yahoo.com", "smtp_reject",
     {"reason": "Non-existing DNS_MX", "helo": "mbhangui@yahoo.com",
      "text": "Non-existing DNS_MX: HELO mbhangui@yahoo.com"}),
    (_IM + "Invalid HELO greeting: HELO <helo > FQDN <a@t.com>", "smtp_reject",
     {"reason": "Invalid HELO greeting", "helo": "helo ", "text": "Invalid HELO greeting: HELO <helo > FQDN <a@t.com>"}),
    (_IM + "Invalid SENDER address: MAIL from <a@indi.com>", "smtp_reject",
     {"reason": "Invalid SENDER address", "mail_from": "a@indi.com",
      "text": "Invalid SENDER address: MAIL from <a@indi.com>"}),
    (_IM + "Invalid RECIPIENT address: MAIL from <a@indi.com> RCPT <b@indi.com>", "smtp_reject",
     {"reason": "Invalid RECIPIENT address", "mail_from": "a@indi.com", "rcpt_to": "b@indi.com",
      "text": "Invalid RECIPIENT address: MAIL from <a@indi.com> RCPT <b@indi.com>"}),
    (_IM + "Invalid RECIPIENT address: MAIL from <a@indi.com> RCPT <a@INDI.COM> state <inactive|bounce|not present>",
     "smtp_reject",
     {"reason": "Invalid RECIPIENT address", "mail_from": "a@indi.com", "rcpt_to": "a@INDI.COM",
      "text": "Invalid RECIPIENT address: MAIL from <a@indi.com> RCPT <a@INDI.COM> state <inactive|bounce|not present>"}),
    (_IM + "Routing SENDER address: MAIL from <a@indi.com> ...", "smtp_reject",
     {"reason": "Routing SENDER address", "mail_from": "a@indi.com", "text": "Routing SENDER address: MAIL from <a@indi.com> ..."}),
    (_IM + "Blackholed SENDER address: MAIL <a@indi.com>", "smtp_reject",
     {"reason": "Blackholed SENDER address", "mail_from": "a@indi.com", "text": "Blackholed SENDER address: MAIL <a@indi.com>"}),
    (_IM + "Blackholed SENDER address: MAIL <a@indi.com> Reason ...", "smtp_reject",
     {"reason": "Blackholed SENDER address", "mail_from": "a@indi.com",
      "text": "Blackholed SENDER address: MAIL <a@indi.com> Reason ..."}),
    (_IM + "Too many RECIPIENTS: MAIL from <a@indi.com> Last RCPT <a@indi.com>", "smtp_reject",
     {"reason": "Too many RECIPIENTS", "mail_from": "a@indi.com", "rcpt_to": "a@indi.com",
      "text": "Too many RECIPIENTS: MAIL from <a@indi.com> Last RCPT <a@indi.com>"}),
    (_IM + "qqt failure", "smtp_reject", {"reason": "qqt failure", "text": "qqt failure"}),
    (_IM + "... permanent failure", "smtp_reject", {"reason": "... permanent failure", "text": "... permanent failure"}),
    (_IM + "... temporary failure", "smtp_reject", {"reason": "... temporary failure", "text": "... temporary failure"}),
    (_IM + "going down on SIGTERM", "smtp_other", {"text": "going down on SIGTERM"}),
    (_IM + "Database error", "smtp_other", {"text": "Database error"}),
]


@pytest.mark.parametrize("line,program,pid,event,fields", FEHCOM)
def test_sqmail_sample_lines(line, program, pid, event, fields):
    rec = _parse(line)
    assert (rec.program, rec.pid, rec.event) == (program, pid, event)
    assert rec.fields == fields


@pytest.mark.parametrize("line,event,fields", INDIMAIL)
def test_indimail_sample_lines(line, event, fields):
    rec = _parse(line)
    assert (rec.program, rec.pid, rec.event) == ("qmail-smtpd", 1821, event)
    assert rec.fields == {**_IMF, **fields}


def test_every_smtpd_sample_line_is_in_a_table():
    """The tables above cover every qmail-smtpd/popup line of the copied samples."""
    covered = {ln for ln, *_ in FEHCOM} | {ln for ln, *_ in INDIMAIL}
    for name in ("fehcom_sqmail_logging_chapter.txt", "indimail_rsmtp_scripts_comments.txt"):
        for ln in _lines(name):
            if "qmail-smtpd: " in ln or "qmail-popup: " in ln:
                assert ln in covered, ln
                assert _parse(ln).event != "unparsed"


def test_fail2ban_patched_qmail_smtpd_line():
    rec = _parse("Sep  6 07:18:29 sd6 qmail: 1157519909.633171 qmail-smtpd: 421 badiprbl: ip 198.51.100.54 rbl: example.com")
    assert (rec.program, rec.pid, rec.event, rec.time_source) == ("qmail-smtpd", None, "smtp_reject", "accustamp")
    assert rec.fields == {"smtp_code": 421, "reason": "badiprbl", "remote_ip": "198.51.100.54",
                          "rbl_list": "example.com",
                          "text": "421 badiprbl: ip 198.51.100.54 rbl: example.com"}


def test_qmail_toaster_rcpt_line():
    rec = _parse("Jun 19 09:12:14 denbaguse qmail: 1276913534.111512 qmail-smtpd: pid 13748 RCPT TO: <postmaster@testaja.lg>")
    assert (rec.program, rec.pid, rec.event) == ("qmail-smtpd", 13748, "smtp_other")
    assert rec.fields == {"conn_pid": 13748, "rcpt_to": "postmaster@testaja.lg",
                          "text": "RCPT TO: <postmaster@testaja.lg>"}
    assert _lines("qmail_toaster_chkuser_simscan_public.txt")[1].endswith("RCPT TO: <postmaster@testaja.lg>")


# Grammar cases from smtpdlog.c (s/qmail, older s/qmail with ?=/!=) and SPAMCONTROL LOGGING.
GRAMMAR = [
    # IPv6 client: the host is after the LAST colon
    ("qmail-smtpd: pid 7 Reject::SNDR::Invalid_Relay P:ESMTP S:2001:db8::1:unknown H:x F:a@b T:c@d",
     {"action": "Reject", "check": "SNDR", "condition": "Invalid_Relay", "proto": "ESMTP",
      "remote_ip": "2001:db8::1", "remote_host": "unknown", "helo": "x", "mail_from": "a@b", "rcpt_to": "c@d"}),
    # empty HELO and null sender; HELO with spaces
    ("qmail-smtpd: pid 7 Reject::ORIG::DNS_MF P:SMTP S:10.0.0.1:h H: F: T:u@x",
     {"action": "Reject", "check": "ORIG", "condition": "DNS_MF", "proto": "SMTP", "remote_ip": "10.0.0.1",
      "remote_host": "h", "helo": "", "mail_from": "", "rcpt_to": "u@x"}),
    ("qmail-smtpd: pid 7 Reject::SNDR::Bad_Helo P:ESMTP S:10.0.0.1:h H:my helo name F:a@b T:c@d 'A'",
     {"action": "Reject", "check": "SNDR", "condition": "Bad_Helo", "proto": "ESMTP", "remote_ip": "10.0.0.1",
      "remote_host": "h", "helo": "my helo name", "mail_from": "a@b", "rcpt_to": "c@d", "info": "A"}),
    # smtp_logh: TLS/AUTH required, no F/T
    ("qmail-smtpd: pid 7 Reject::TLS::missing P:ESMTP S:10.0.0.1:h H:x.y",
     {"action": "Reject", "check": "TLS", "condition": "missing", "proto": "ESMTP", "remote_ip": "10.0.0.1",
      "remote_host": "h", "helo": "x.y"}),
    # smtp_logb: failed AUTH with user
    ("qmail-smtpd: pid 7 Reject::AUTH::login P:ESMTPA S:10.0.0.1:h H:x.y ?~ 'bob@x.y'",
     {"action": "Reject", "check": "AUTH", "condition": "login", "proto": "ESMTPA", "remote_ip": "10.0.0.1",
      "remote_host": "h", "helo": "x.y", "auth_user": "bob@x.y"}),
    # older s/qmail: " ?=" auth user, " !=" TLS client DN, condition is the cipher
    ("qmail-smtpd: pid 7 Accept::AUTH::plain P:ESMTPA S:10.0.0.1:h ?= 'bob'",
     {"action": "Accept", "check": "AUTH", "condition": "plain", "proto": "ESMTPA", "remote_ip": "10.0.0.1",
      "remote_host": "h", "auth_user": "bob"}),
    ("qmail-smtpd: pid 7 Accept::TLS::ECDHE-RSA-AES256-GCM-SHA384 P:ESMTPS S:10.0.0.1:h != 'none'",
     {"action": "Accept", "check": "TLS", "condition": "ECDHE-RSA-AES256-GCM-SHA384", "proto": "ESMTPS",
      "remote_ip": "10.0.0.1", "remote_host": "h", "info": "none"}),
    # spamcontrol patches wrote "Condition:" with a colon before the keys
    ("qmail-smtpd: pid 7 Reject::RBL::RBL_Listed: P:ESMTP S:10.0.0.1:h H:x F:a@b T:c@d",
     {"action": "Reject", "check": "RBL", "condition": "RBL_Listed", "proto": "ESMTP", "remote_ip": "10.0.0.1",
      "remote_host": "h", "helo": "x", "mail_from": "a@b", "rcpt_to": "c@d"}),
    ("qmail-smtpd: pid 7 Deferred::GREY::Grey_Listed P:ESMTP S:10.0.0.1:h H:x F:a@b T:c@d\r",
     {"action": "Deferred", "check": "GREY", "condition": "Grey_Listed", "proto": "ESMTP", "remote_ip": "10.0.0.1",
      "remote_host": "h", "helo": "x", "mail_from": "a@b", "rcpt_to": "c@d"}),
    # run without tcpserver (inetd, stunnel): smtpdlog.c writes "unknown" for the unset
    # TCPREMOTEIP; no remote_ip then, for a SIEM that types it as an address would refuse it
    ("qmail-smtpd: pid 7 Accept::RCPT::Recipients_Rcpthosts P:ESMTP S:unknown:h H:x F:a@b T:c@d",
     {"action": "Accept", "check": "RCPT", "condition": "Recipients_Rcpthosts", "proto": "ESMTP",
      "remote_host": "h", "helo": "x", "mail_from": "a@b", "rcpt_to": "c@d"}),
    ("qmail-smtpd: pid 7 Reject::AUTH::missing P:ESMTP S:unknown",
     {"action": "Reject", "check": "AUTH", "condition": "missing", "proto": "ESMTP"}),
]


@pytest.mark.parametrize("line,fields", GRAMMAR)
def test_sqmail_grammar(line, fields):
    rec = _parse("@400000005a49ba341eefa7a4 " + line)
    assert (rec.program, rec.pid, rec.event) == ("qmail-smtpd", 7, "smtp_decision")
    assert rec.fields == {"conn_pid": 7, **fields}


def test_old_spamcontrol_lines_without_prefix():
    rec = _parse("@400000005a49ba341eefa7a4 Reject::ORIG::DNSMX_MF: S:10.0.0.1:mx.example H:mx.example F:a@nx.example T:b@c")
    assert (rec.program, rec.pid, rec.event) == ("qmail-smtpd", None, "smtp_decision")
    assert rec.fields == {"action": "Reject", "check": "ORIG", "condition": "DNSMX_MF", "remote_ip": "10.0.0.1",
                          "remote_host": "mx.example", "helo": "mx.example", "mail_from": "a@nx.example",
                          "rcpt_to": "b@c"}
    rec = _parse("@400000005a49ba341eefa7a4 Accept::SNDR::Relay_Client: 10.0.0.9")
    assert (rec.program, rec.event) == ("qmail-smtpd", "smtp_decision")
    assert rec.fields == {"action": "Accept", "check": "SNDR", "condition": "Relay_Client", "info": "10.0.0.9"}


def test_spamcontrol_rejects_other_text():
    for text in ("status: local 1/10 remote 0/100", "Acceptance test", "Rejected::", "", "A", "tcpserver: ok 1"):
        assert parse_spamcontrol(text) is None


def test_other_text_is_not_ours():
    assert parse_qmail_smtpd("pid x from 1.2.3.4") is None
    assert parse_qmail_smtpd("something else") is None
    assert parse_qmail_popup("") is None
    assert parse_qmail_popup("pid 5 something") == ("smtp_other", {"pid": 5, "conn_pid": 5, "text": "something"})


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    for fn in (parse_qmail_smtpd, parse_qmail_popup, parse_spamcontrol):
        for t in (text, "pid 1 " + text, "pid 1 from " + text, "Reject::" + text):
            got = fn(t)
            assert got is None or (isinstance(got[0], str) and isinstance(got[1], dict))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([" P:", " S:", " H:", " F:", " T:", " '", "'", " ?~", ":", "::", "x", " "]),
                max_size=20))
def test_key_soup_never_raises(parts):
    got = parse_qmail_smtpd("pid 9 Accept::RCPT::X" + "".join(parts))
    assert got is not None and got[0] == "smtp_decision" and got[1]["conn_pid"] == 9


# -- the one-regex fast path must say what the general path says ----------------

_TOKEN = st.text(st.sampled_from("aZ09.-_@:+'<>=~?!/\\\"[]é٣"), max_size=12)
_WORD = st.text(st.sampled_from("aZ09.-_@+'<>=~?!/\\\"[]é٣"), min_size=1, max_size=12)  # no ':'

_IP = st.sampled_from(["192.0.2.1", "2001:db8::1", "::1", "::ffff:192.0.2.7", "", "fe80::1%eth0"])


@settings(max_examples=600, deadline=None)
@given(pid=st.integers(0, 10**12) | st.just(2**70), action=st.sampled_from(["Accept", "Reject", "Deferred"]),
       check=_WORD, cond=_WORD, proto=_TOKEN, ip=_IP, host=_WORD | _TOKEN, helo=_TOKEN,
       sender=_TOKEN, rcpt=_WORD | _TOKEN, tail=st.sampled_from(["", " ", "\r", " 'x y'", " ?~ 'user'"]))
def test_sqmail_fast_path_equals_general_path(pid, action, check, cond, proto, ip, host, helo,
                                              sender, rcpt, tail):
    text = (f"pid {pid} {action}::{check}::{cond} P:{proto} S:{ip}:{host} H:{helo} "
            f"F:{sender} T:{rcpt}{tail}")
    got = _smtpd.parse_qmail_smtpd(text)
    stripped = text.rstrip(_smtpd._TRAILING)
    if _smtpd._SQMAIL_FAST_RE.fullmatch(stripped) is None:
        return  # the general path parsed it: nothing to compare
    rest = stripped.split(" ", 2)[2]
    general = _smtpd._decision(rest, {"pid": pid, "conn_pid": pid})
    assert got == ("smtp_decision", general)
    assert list(got[1]) == list(general)  # the same keys in the same order in the output
