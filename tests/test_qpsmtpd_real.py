"""A real qpsmtpd (Debian bookworm's 0.94, ``qpsmtpd-forkserver``) on loopback: four
SMTP sessions (a mail accepted with one recipient refused, a bad HELO, an early
talker, a client that drops the connection), its stderr through a real ``multilog t``
as a daemontools qmail site keeps it, read back by ``shipper parse`` line by line.

Its plugins: ``earlytalker`` (deny), ``helo`` (lenient policy with a ``badhelo``
file: no DNS), ``rcpt_ok`` (``rcpthosts``) and ``queue/qmail-queue`` whose
``QMAILQUEUE`` is a script that keeps the message and envelope in the test's
directory. The forkserver asks DNS for every client's PTR name (Net::DNS, always):
a resolver configuration loaded before the server points it at a small responder
of the test's on a free loopback port, which names 127.0.0.1 ``client.example.net``.
(qpsmtpd runs in taint mode, where Net::DNS ignores RES_NAMESERVERS and
``.resolv.conf``; only a ``config_file`` given to its first ``new()`` is trusted.)"""

from __future__ import annotations

import os
import pwd
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import free_port, require_binary, stop_process

from shipper.track.correlator import Correlator

pytestmark = pytest.mark.slow  # ~6 s: earlytalker holds every greeting 1 s

PLUGINS = """\
earlytalker wait 1 action deny
helo
count_unrecognized_commands 4
rcpt_ok
queue/qmail-queue
"""
FAKE_QUEUE = """#!/bin/sh
# stands in for qmail-queue: the message on fd 0, the envelope on fd 1
cat > "{d}/queued/msg.$$" && cat <&1 > "{d}/queued/env.$$"
"""
# The forkserver as Debian ships it, after Net::DNS's defaults are set from our file
PRELUDE = ('use Net::DNS::Resolver; Net::DNS::Resolver->new(config_file => $ENV{{QP_TEST_RESOLV}});'
           ' @ARGV = qw(-u {user} -l 127.0.0.1 -p {port}); do "{server}"; die $@ if $@')
CLIENT_HOST = "client.example.net"
USER_B64, PASSWORD_B64 = "YWxpY2VAZXhhbXBsZS5uZXQ=", "SHVudGVyMi1zZWNyZXQ="  # alice@example.net, Hunter2-secret


def _dns_responder(sock: socket.socket, stop: threading.Event) -> None:
    """Answer every query with one PTR record naming CLIENT_HOST (what 127.0.0.1 asks)."""
    rdata = b"".join(bytes([len(p)]) + p.encode() for p in CLIENT_HOST.split(".")) + b"\0"
    sock.settimeout(0.2)
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            query, peer = sock.recvfrom(512)
        except TimeoutError:
            continue
        end = query.find(b"\0", 12)
        if len(query) < 17 or end < 0:
            continue
        question = query[12:end + 5]
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 12, 1, 60, len(rdata)) + rdata
        sock.sendto(query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question + answer, peer)


class Smtp:
    """A bare SMTP client: the replies as qpsmtpd sent them, each wait bounded."""

    def __init__(self, port: int, early: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if early:
            self.sock.sendall(early)
        self.buf = b""

    def reply(self) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if line[3:4] == b" ":
                    self.buf = b"\r\n".join(lines[i + 1:])
                    return b"\r\n".join(lines[:i + 1]).decode()
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        return self.buf.decode()

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def _records(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "shipper", "parse", str(path)], check=True,
                         capture_output=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    return [orjson.loads(x) for x in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def qpsmtpd_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
    server = require_binary("qpsmtpd-forkserver")
    multilog = require_binary("multilog")
    perl = require_binary("perl")
    d = tmp_path_factory.mktemp("qpsmtpd")
    config, spool, queued = d / "config", d / "spool", d / "queued"
    for sub in (config, spool, queued):
        sub.mkdir()
    spool.chmod(0o700)
    (config / "plugins").write_text(PLUGINS)
    (config / "plugin_dirs").write_text("/usr/share/qpsmtpd/plugins\n")
    (config / "loglevel").write_text("6\n")  # LOGINFO, Debian's default
    (config / "me").write_text("mx.example.org\n")
    (config / "rcpthosts").write_text("example.org\n")
    (config / "badhelo").write_text("localhost\n")
    (config / "spool_dir").write_text(f"{spool}\n")
    fake_queue = d / "fake-qmail-queue"
    fake_queue.write_text(FAKE_QUEUE.format(d=d))
    fake_queue.chmod(0o755)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    (d / "resolv.conf").write_text(
        f"nameserver 127.0.0.1\noptions port:{dns.getsockname()[1]} timeout:2 attempts:1\n")
    stop = threading.Event()
    responder = threading.Thread(target=_dns_responder, args=(dns, stop), daemon=True)
    responder.start()
    port = free_port()
    user = pwd.getpwuid(os.geteuid()).pw_name
    env = {**os.environ, "QPSMTPD_CONFIG": str(config), "QMAILQUEUE": str(fake_queue),
           "QP_TEST_RESOLV": str(d / "resolv.conf")}
    # qpsmtpd-forkserver 2>&1 | multilog t ./log
    ml = subprocess.Popen([multilog, "t", str(d / "log")], cwd=d, stdin=subprocess.PIPE)
    assert ml.stdin is not None
    qp = subprocess.Popen([perl, "-T", "-e", PRELUDE.format(user=user, port=port, server=server)],
                          cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=ml.stdin, stderr=ml.stdin)
    ml.stdin.close()  # the server's now: multilog ends when it does
    current = d / "log" / "current"
    replies: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and b"Running as user" not in (
                current.read_bytes() if current.exists() else b""):
            assert qp.poll() is None, current.read_text() if current.exists() else "qpsmtpd died"
            time.sleep(0.05)
        # 1. a mail: one recipient accepted, one refused (not in rcpthosts), queued
        c = Smtp(port)
        replies["mail"] = [c.reply(), c.cmd(f"EHLO {CLIENT_HOST}"), c.cmd("MAIL FROM:<alice@example.net>"),
                           c.cmd("RCPT TO:<bob@example.org>"), c.cmd("RCPT TO:<carol@other.test>"),
                           c.cmd("DATA"), c.cmd("Subject: hello\r\nMessage-ID: <m1@example.net>\r\n\r\nhi\r\n."),
                           c.cmd("QUIT")]
        c.close()
        # 2. a HELO in badhelo
        c = Smtp(port)
        replies["badhelo"] = [c.reply(), c.cmd("HELO localhost")]
        c.close()
        # 3. an early talker: the client speaks before the greeting
        c = Smtp(port, early=b"EHLO early.example.net\r\n")
        replies["early"] = [c.reply()]
        c.close()
        # 4. a client that drops the connection after MAIL FROM
        c = Smtp(port)
        replies["dropped"] = [c.reply(), c.cmd("EHLO drop.example.net"), c.cmd("MAIL FROM:<>")]
        c.close()
        # 5. a client that sends its AUTH LOGIN credentials though AUTH is not offered
        c = Smtp(port)
        replies["auth"] = [c.reply(), c.cmd("EHLO auth.example.net"), c.cmd("AUTH LOGIN"),
                           c.cmd(USER_B64), c.cmd(PASSWORD_B64), c.cmd("QUIT")]
        c.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and current.read_bytes().count(b"cleaning up after") < 5:
            time.sleep(0.05)
    finally:
        stop_process(qp)
        ml.wait(15)
        stop.set()
        responder.join(5)
        dns.close()
    replies["queued"] = sorted(p.name.split(".")[0] for p in queued.iterdir())
    replies["queued_msg"] = next((p.read_bytes() for p in queued.glob("msg.*")), b"")
    yield _records(current), replies


def _sessions(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The lines of each connection (by the child's pid), in the order they began."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r["event"] == "qpsmtpd_accept" or r["pid"] in by_pid:
            by_pid.setdefault(r["pid"], []).append(r)
    return list(by_pid.values())


def _brief(r: dict[str, Any]) -> tuple[Any, ...]:
    keep = {k: v for k, v in r.items() if k in (
        "smtp_code", "verb", "helo", "mail_from", "rcpt_to", "hook", "plugin", "plugin_result",
        "dsn", "qp", "message_id", "remote_ip", "remote_host", "children", "limit", "continued")}
    return (r["event"], keep)


def test_every_line_is_qpsmtpd_and_parsed(qpsmtpd_log) -> None:
    records, replies = qpsmtpd_log
    assert replies["mail"][-2].startswith("250 Queued! ")
    assert records and all(r["program"] == "qpsmtpd" and r["event"] != "unparsed" for r in records), [
        r["message"] for r in records if r["event"] == "unparsed" or r["program"] != "qpsmtpd"]
    assert all(type(r["pid"]) is int for r in records)
    assert records[0]["event"] == "qpsmtpd_info" and records[0]["text"].startswith("Listening on 127.0.0.1:")
    parent = records[0]["pid"]
    ends = [r for r in records if r["event"] == "qpsmtpd_child_end"]
    sessions = _sessions(records)
    assert len(sessions) == 5
    assert [r["pid"] for r in ends] == [parent] * 5
    assert [r["conn_pid"] for r in ends] == [s[0]["pid"] for s in sessions]


def test_accepted_mail(qpsmtpd_log) -> None:
    records, replies = qpsmtpd_log
    session = _sessions(records)[0]
    pid = session[0]["pid"]
    queue_line = next(r for r in records if r["event"] == "qpsmtpd_plugin" and r.get("hook") == "queue")
    qp = queue_line["pid"]
    assert queue_line["conn_pid"] == pid and queue_line["plugin"] == "queue::qmail_2dqueue"
    assert replies["queued"] == ["env", "msg"] and b"Subject: hello" in replies["queued_msg"]
    got = [_brief(r) for r in session]
    assert got == [
        ("qpsmtpd_accept", {"children": 0, "limit": 15, "remote_ip": "127.0.0.1", "remote_host": CLIENT_HOST}),
        ("qpsmtpd_connect", {"remote_ip": "127.0.0.1", "remote_host": CLIENT_HOST}),
        ("qpsmtpd_plugin", {"hook": "connect", "plugin": "earlytalker", "plugin_result": "pass"}),
        ("qpsmtpd_reply", {"smtp_code": 220}),
        ("qpsmtpd_command", {"verb": "EHLO", "helo": CLIENT_HOST}),
        ("qpsmtpd_plugin", {"hook": "ehlo", "plugin": "helo", "plugin_result": "pass"}),
        ("qpsmtpd_reply", {"smtp_code": 250, "continued": True}),
        ("qpsmtpd_reply", {"smtp_code": 250, "continued": True}),
        ("qpsmtpd_reply", {"smtp_code": 250}),
        ("qpsmtpd_command", {"verb": "MAIL", "mail_from": "alice@example.net"}),
        ("qpsmtpd_reply", {"smtp_code": 250}),
        ("qpsmtpd_command", {"verb": "RCPT", "rcpt_to": "bob@example.org"}),
        ("qpsmtpd_plugin", {"hook": "rcpt", "plugin": "rcpt_ok", "plugin_result": "pass"}),
        ("qpsmtpd_reply", {"smtp_code": 250}),
        ("qpsmtpd_command", {"verb": "RCPT", "rcpt_to": "carol@other.test"}),
        ("qpsmtpd_plugin", {"hook": "rcpt", "plugin": "rcpt_ok", "plugin_result": "fail"}),
        ("qpsmtpd_reply", {"smtp_code": 550, "dsn": "5.7.1"}),
        ("qpsmtpd_command", {"verb": "DATA"}),
        ("qpsmtpd_reply", {"smtp_code": 354}),
        ("qpsmtpd_info", {}),
        ("qpsmtpd_reply", {"smtp_code": 250, "qp": qp, "message_id": "m1@example.net"}),
        ("qpsmtpd_command", {"verb": "QUIT"}),
        ("qpsmtpd_reply", {"smtp_code": 221}),
        ("qpsmtpd_disconnect", {}),
    ]
    texts = {r["event"] + ":" + r.get("text", "") for r in session}
    assert "qpsmtpd_plugin:fail: other.test not in morercpthosts" in texts
    assert "qpsmtpd_info:spooling message to disk" in texts
    assert replies["mail"][4] == "550 Relaying denied (#5.7.1)"


def test_bad_helo_and_early_talker(qpsmtpd_log) -> None:
    records, replies = qpsmtpd_log
    _, badhelo, early, _, _ = _sessions(records)
    assert replies["badhelo"][1] == "550 I do not believe you are localhost."
    assert [_brief(r) for r in badhelo[3:]] == [
        ("qpsmtpd_reply", {"smtp_code": 220}),
        ("qpsmtpd_command", {"verb": "HELO", "helo": "localhost"}),
        ("qpsmtpd_plugin", {"hook": "helo", "plugin": "helo", "plugin_result": "karma"}),
        ("qpsmtpd_plugin", {"hook": "helo", "plugin": "helo", "plugin_result": "fail"}),
        ("qpsmtpd_reply", {"smtp_code": 550}),
        ("qpsmtpd_disconnect", {}),
    ]
    assert badhelo[6]["text"] == "fail, in badhelo"
    assert replies["early"][0].startswith("550 Connecting host started transmitting")
    assert [_brief(r) for r in early[2:]] == [
        ("qpsmtpd_plugin", {"hook": "connect", "plugin": "earlytalker", "plugin_result": "karma"}),
        ("qpsmtpd_plugin", {"hook": "connect", "plugin": "earlytalker", "plugin_result": "fail"}),
        ("qpsmtpd_reply", {"smtp_code": 550}),
        ("qpsmtpd_disconnect", {}),
    ]
    assert early[3]["text"] == "fail, remote started talking before we said hello"


def test_dropped_connection(qpsmtpd_log) -> None:
    records, _ = qpsmtpd_log
    dropped = _sessions(records)[3]
    # no QUIT: the session's last lines are the MAIL's, then the parent reaps the child
    assert [_brief(r) for r in dropped[-3:]] == [
        ("qpsmtpd_reply", {"smtp_code": 250}),
        ("qpsmtpd_command", {"verb": "MAIL", "mail_from": ""}),
        ("qpsmtpd_reply", {"smtp_code": 250}),
    ]
    assert not any(r["event"] == "qpsmtpd_disconnect" for r in dropped)


def test_sessions_tracked(qpsmtpd_log) -> None:
    records, _ = qpsmtpd_log
    c = Correlator()
    out = c.feed(records) + c.finish()
    pids = [s[0]["pid"] for s in _sessions(records)]
    assert [(o["event"], o["server"], o["conn_pid"], o["result"], o["flags"]) for o in out] == [
        ("smtp_session", "qpsmtpd", pids[0], "accepted", []),
        ("smtp_session", "qpsmtpd", pids[1], "rejected", []),
        ("smtp_session", "qpsmtpd", pids[2], "rejected", []),
        ("smtp_session", "qpsmtpd", pids[3], "no_mail", []),
        ("smtp_session", "qpsmtpd", pids[4], "rejected", []),  # AUTH refused, 500s
    ]
    qp = next(r["qp"] for r in records if r.get("qp"))
    assert out[0]["qps"] == [qp] and out[0]["accepted_rcpts"] == ["bob@example.org"]
    assert out[3]["mail_from"] == "" and out[3]["helo"] == "drop.example.net"


def test_credentials_sent_after_a_refused_auth_are_redacted(qpsmtpd_log) -> None:
    """qpsmtpd reads AUTH's continuation lines itself (unlogged) only when it does AUTH:
    with no AUTH plugin (or after HELO, or before TLS) it refuses it, and a client that
    goes on sends its base64 user and password as commands, logged by 'dispatching'
    and by count_unrecognized_commands (lower-cased). recordio's rule for a lone base64
    word hides them: they were shipped as written."""
    records, replies = qpsmtpd_log
    auth = _sessions(records)[4]
    assert replies["auth"][2].startswith("5") and replies["auth"][3].startswith("500 ")
    text = "\n".join(r["raw"] + r["message"] + orjson.dumps(r).decode() for r in records)
    for secret in (USER_B64, PASSWORD_B64):
        assert secret not in text and secret.lower() not in text
    cmds = [r for r in auth if r["event"] == "qpsmtpd_command"]
    assert [(r["verb"], r.get("text"), "redacted" in r["flags"]) for r in cmds] == [
        ("EHLO", "auth.example.net", False), ("AUTH", "LOGIN", False),
        ("[REDACTED]", None, True), ("[REDACTED]", None, True), ("QUIT", None, False)]
    assert [r["message"].split(" ", 1)[1] for r in cmds[2:4]] == ["dispatching [REDACTED]"] * 2
    counted = [r["text"] for r in auth if r.get("plugin") == "count_unrecognized_commands"]
    assert counted[-2:] == ["'[REDACTED]', (2)", "'[REDACTED]', (3)"] or counted == [
        "'[REDACTED]', (1)", "'[REDACTED]', (2)"], counted
