"""qpsmtpd's lines: what Debian's qpsmtpd 0.94 wrote under multilog (fixtures made by
the set-up of tests/test_qpsmtpd_real.py, at loglevel 6 and 7), its syslog form, the
AUTH credential it logs, and the lines of other programs it must leave alone."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shipper.parse import LineParser, dispatch
from shipper.severity import DEBUG, INFO, NOTICE, severity

SAMPLES = Path(__file__).parent / "fixtures" / "samples"
INFO_LOG = SAMPLES / "qpsmtpd_094_real_multilog.txt"
DEBUG_LOG = SAMPLES / "qpsmtpd_094_real_multilog_debug.txt"
_CORE = {"time_unix_ns", "time", "time_source", "program", "event", "message", "raw", "host",
         "pid", "source", "file_id", "offset", "flags", "event_id"}


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.startswith("# source:")
    lines = [ln.encode() for ln in text.splitlines()[1:]]
    return [r.to_dict() for r in LineParser().parse_batch(lines)]


def _fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _CORE}


AUTH_PLAIN_LOG = SAMPLES / "qpsmtpd_094_real_auth_plain.txt"


@pytest.mark.parametrize("path", [INFO_LOG, DEBUG_LOG, AUTH_PLAIN_LOG], ids=["loglevel6", "loglevel7", "auth"])
def test_every_real_line_is_qpsmtpd(path: Path) -> None:
    records = _records(path)
    assert [r["message"] for r in records if r["program"] != "qpsmtpd" or r["event"] == "unparsed"] == []
    assert all(type(r["pid"]) is int for r in records)
    for r in records:  # typed as docs/records.md says
        for key in ("smtp_code", "qp", "conn_pid", "children", "limit"):
            assert key not in r or type(r[key]) is int, (key, r)


def test_real_lines_fields() -> None:
    records = _records(INFO_LOG)
    by_text = {r["message"].split(" ", 1)[1]: (r["event"], r["pid"], _fields(r)) for r in records}
    assert by_text["Accepted connection 0/15 from 127.0.0.1 / client.example.net"] == (
        "qpsmtpd_accept", 4681,
        {"children": 0, "limit": 15, "remote_ip": "127.0.0.1", "remote_host": "client.example.net"})
    assert by_text["Connection from client.example.net [127.0.0.1]"][2] == {
        "remote_host": "client.example.net", "remote_ip": "127.0.0.1"}
    assert by_text["dispatching MAIL FROM:<a@example.net>"][2] == {
        "verb": "MAIL", "text": "FROM:<a@example.net>", "mail_from": "a@example.net"}
    assert by_text["dispatching RCPT TO:<c@other.test>"][2] == {
        "verb": "RCPT", "text": "TO:<c@other.test>", "rcpt_to": "c@other.test"}
    assert by_text["(rcpt) rcpt_ok: fail: other.test not in morercpthosts"][2] == {
        "hook": "rcpt", "plugin": "rcpt_ok", "text": "fail: other.test not in morercpthosts",
        "plugin_result": "fail"}
    assert by_text["550 Relaying denied (#5.7.1)"][2] == {
        "smtp_code": 550, "reply_class": "5xx", "text": "Relaying denied (#5.7.1)", "dsn": "5.7.1"}
    # the queue plugin's fork logs with its own pid, the qp of the reply after it
    assert by_text["(queue) queue::qmail_2dqueue: (for 4681) Queuing to /tmp/h1/qp/fakeq"][1:] == (
        4701, {"hook": "queue", "plugin": "queue::qmail_2dqueue",
               "text": "(for 4681) Queuing to /tmp/h1/qp/fakeq", "conn_pid": 4681})
    assert by_text["250 Queued! 1796030523 qp 4701 <>"][2] == {
        "smtp_code": 250, "reply_class": "2xx", "text": "Queued! 1796030523 qp 4701 <>", "qp": 4701}
    assert by_text["250-PIPELINING"][2] == {
        "smtp_code": 250, "reply_class": "2xx", "text": "PIPELINING", "continued": True}
    assert by_text["click, disconnecting"][0] == "qpsmtpd_disconnect"
    assert by_text["cleaning up after 4707"] == ("qpsmtpd_child_end", 4554, {"conn_pid": 4707})
    assert by_text["Listening on 127.0.0.1:42527"][0] == "qpsmtpd_info"


def test_debug_lines() -> None:
    records = _records(DEBUG_LOG)
    events = Counter(r["event"] for r in records)
    assert events["qpsmtpd_debug"] == 125 and events["qpsmtpd_hook_result"] == 10
    hook = next(r for r in records if r["event"] == "qpsmtpd_hook_result")
    assert _fields(hook) == {"plugin": "earlytalker", "hook": "connect", "action": "DECLINED"}
    assert {severity(r) for r in records if r["event"] == "qpsmtpd_debug"} == {DEBUG}


def test_severity() -> None:
    records = _records(INFO_LOG)
    refused = [r for r in records if r["event"] == "qpsmtpd_reply" and r["smtp_code"] >= 400]
    assert len(refused) == 3 and {severity(r) for r in refused} == {NOTICE}
    assert {severity(r) for r in records if r["event"] == "qpsmtpd_reply" and r["smtp_code"] < 400} == {INFO}


def test_auth_credential_redacted() -> None:
    line = b"@400000006b0d404630fbd6ec 4704 dispatching AUTH PLAIN AGFsaWNlAHMzY3JldA=="
    r = LineParser().parse(line).to_dict()
    assert r["program"] == "qpsmtpd" and r["event"] == "qpsmtpd_command"
    assert r["message"] == "4704 dispatching AUTH PLAIN [REDACTED]"
    assert "AGFsaWNl" not in r["raw"] and "redacted" in r["flags"]
    assert r["verb"] == "AUTH" and r["text"] == "PLAIN [REDACTED]"
    # the same through the batch path (a multilog batch), which must not take its fast path
    [b] = LineParser().parse_batch([line])
    assert "AGFsaWNl" not in b.raw and b.message == r["message"]
    # AUTH LOGIN has no initial response: nothing to hide
    r = LineParser().parse(b"@400000006b0d404630fbd6ec 4704 dispatching AUTH LOGIN").to_dict()
    assert r["text"] == "LOGIN" and "redacted" not in r["flags"]


def test_ldap_bind_password_at_debug_level_redacted() -> None:
    """auth_ldap_bind (qpsmtpd 0.94, plugins/auth/auth_ldap_bind line 197) logs
    ``user: $user, pass: $passClear`` at LOGDEBUG: the password in clear. No real line
    (it needs an LDAP server): this one is written in the plugin's format, as varlog
    prefixes it. Its LOGINFO ``pass: USER auth success`` holds no password and stays."""
    line = b"@400000006b0d404630fbd6ec 4711 (auth-plain) auth::auth_ldap_bind: user: alice, pass: s3cret, pass: x"
    single = LineParser().parse(line).to_dict()
    [batch] = [r.to_dict() for r in LineParser().parse_batch([line])]
    for r in (single, batch):
        assert "s3cret" not in str(r) and "redacted" in r["flags"], r
        assert r["message"] == "4711 (auth-plain) auth::auth_ldap_bind: user: alice, pass: [REDACTED]"
        assert (r["event"], r["hook"], r["plugin"], r["text"]) == (
            "qpsmtpd_plugin", "auth-plain", "auth::auth_ldap_bind", "user: alice, pass: [REDACTED]")
    r = LineParser().parse(b"@400000006b0d404630fbd6ec 4711 (auth-plain) auth::auth_ldap_bind: "
                           b"pass: alice auth success").to_dict()
    assert r["text"] == "pass: alice auth success" and r["plugin_result"] == "pass" and "redacted" not in r["flags"]


def test_credentials_sent_as_commands_after_a_refused_auth_redacted() -> None:
    """With AUTH refused (no AUTH plugin here) a client's base64 user and password come
    as commands: 'dispatching' logged them, count_unrecognized_commands too (lower-cased),
    shipped as written. recordio's rule for a lone base64 word hides them, in both
    parse paths; AUTH, EHLO, QUIT and 'auth' stay."""
    path = SAMPLES / "qpsmtpd_094_real_auth_refused.txt"
    lines = [ln.encode() for ln in path.read_text().splitlines()[1:]]
    secrets = ("YWxpY2VAZXhhbXBsZS5uZXQ", "SHVudGVyMi1zZWNyZXQ")
    assert sum(s in ln.decode() or s.lower() in ln.decode() for ln in lines for s in secrets) == 4
    batch = [r.to_dict() for r in LineParser().parse_batch(lines)]
    single = [LineParser().parse(ln).to_dict() for ln in lines]
    assert [_fields(r) for r in batch] == [_fields(r) for r in single]
    for records in (batch, single):
        shown = str(records)
        assert not any(s in shown or s.lower() in shown for s in secrets)
        assert [(r["message"], r.get("verb"), r.get("text")) for r in records
                if "redacted" in r["flags"]] == [
            ("20347 dispatching [REDACTED]", "[REDACTED]", None),
            ("20347 (unrecognized_command) count_unrecognized_commands: '[REDACTED]', (2)", None,
             "'[REDACTED]', (2)"),
            ("20347 dispatching [REDACTED]", "[REDACTED]", None),
            ("20347 (unrecognized_command) count_unrecognized_commands: '[REDACTED]', (3)", None,
             "'[REDACTED]', (3)")]
        assert [r.get("verb") for r in records if r["event"] == "qpsmtpd_command"] == [
            "EHLO", "AUTH", "[REDACTED]", "[REDACTED]", "QUIT"]
        assert records[10]["text"] == "'auth', (1)" and records[10]["raw"] == lines[10].decode()


def test_a_reply_with_no_text() -> None:
    """AUTH PLAIN with no initial response: qpsmtpd's challenge is respond(334, ' '),
    logged '334  '; the trailing blanks gone, the bare code was unparsed."""
    records = _records(AUTH_PLAIN_LOG)
    r = records[10]
    assert r["message"] == "24455 334  " and r["raw"].endswith(" 334  ")
    assert (r["program"], r["event"], _fields(r)) == (
        "qpsmtpd", "qpsmtpd_reply", {"smtp_code": 334, "reply_class": "3xx", "text": ""})
    assert dispatch("24455 250")[1:3] == ("qpsmtpd_reply", {"smtp_code": 250, "reply_class": "2xx", "text": ""})
    assert dispatch("24455 2500 x")[1] == "unparsed"


def test_syslog_form() -> None:
    # logging/syslog: tag qpsmtpd[PID], the text without pid or plugin prefix
    r = LineParser(None).parse(
        b"Nov 30 09:22:03 mx qpsmtpd[4681]: dispatching RCPT TO:<b@example.org>").to_dict()
    assert (r["program"], r["event"], r["pid"], r["rcpt_to"]) == ("qpsmtpd", "qpsmtpd_command", 4681,
                                                                 "b@example.org")
    r = LineParser(None).parse(b"Nov 30 09:22:03 mx qpsmtpd[4681]: 451 Sorry, try again later").to_dict()
    assert (r["event"], r["smtp_code"], r["reply_class"]) == ("qpsmtpd_reply", 451, "4xx")


@pytest.mark.parametrize(("text", "program", "event"), [
    # recordio's lines, also "PID text", stay recordio's
    ("4357 < MAIL FROM:<a@example.org>", "recordio", "io_client"),
    ("4357 > 250 ok", "recordio", "io_server"),
    ("4357 > [EOF]", "recordio", "io_eof"),
    # a number then text of no qpsmtpd form: not claimed
    ("12345 hello world", None, "unparsed"),
    ("12345 (not a hook) text", None, "unparsed"),
    ("12345 Accepted connection from somewhere", None, "unparsed"),
    ("12345 cleaning up after lunch", None, "unparsed"),
    ("12345", None, "unparsed"),
])
def test_other_lines_left_alone(text: str, program: str | None, event: str) -> None:
    got = dispatch(text)
    assert (got[0], got[1]) == (program, event)


def test_plugin_forms() -> None:
    assert dispatch("3507 (pre-connection) running plugin: hosts_allow")[:3] == (
        "qpsmtpd", "qpsmtpd_plugin", {"hook": "pre-connection", "plugin": "hosts_allow"})
    got = dispatch("3684 (ehlo) helo: karma -1 (-1)")
    assert got[2]["plugin_result"] == "karma" and got[3] == 3684
    # ident (TCPREMOTEINFO) before the host
    assert dispatch("3684 Connection from joe@client.example.net [192.0.2.1]")[2] == {
        "remote_host": "client.example.net", "remote_ip": "192.0.2.1", "remote_info": "joe"}
    assert severity({"event": "qpsmtpd_plugin", "plugin_result": "fail"}) == INFO
