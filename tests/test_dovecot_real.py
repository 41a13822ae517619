"""A real dovecot (Debian bookworm's 2.3.19) on loopback: real IMAP and POP3 logins,
failures and TLS through imaplib and poplib, its log read back by ``shipper parse`` as
a user would, field by field.

Three ways an admin keeps dovecot's log, each its own run: its own log file
(``log_path``, the default ``log_timestamp``), and stderr under daemontools
(``dovecot -F 2>&1 | multilog t ./log``) with the default ``log_timestamp`` and
with it empty. The multilog runs log the ports too (``login_log_format_elements``
with ``rport``/``lport``), so each client's own port identifies its lines."""

from __future__ import annotations

import imaplib
import os
import poplib
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import free_port, require_binary, require_root, stop_process

# three dovecot runs, ~3.5 s each (most of it the clients' failed logins and dovecot's
# shutdown); the tests themselves read what they parsed
pytestmark = pytest.mark.slow

# Each failing client comes from its own loopback address: dovecot's auth penalty
# (anvil, by remote IP) delays every later login from an address that failed by
# 2, 4, 8 ... s, which would make the module slow and its timing depend on order.
OK_IP, WRONG_PW_IP, UNKNOWN_IP, NO_AUTH_IP, POP_WRONG_IP, POP_UNKNOWN_IP = (
    "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
USER, PASSWORD = "alice", "s3cret-pw"
# scenario: (service, the client's address, the listener it talks to)
SCENARIOS = {
    "imap_ok": ("imap", OK_IP, "imap"), "imap_wrong_pw": ("imap", WRONG_PW_IP, "imap"),
    "imap_unknown": ("imap", UNKNOWN_IP, "imap"), "imap_no_auth": ("imap", NO_AUTH_IP, "imap"),
    "imaps_ok": ("imap", OK_IP, "imaps"), "imap_starttls_ok": ("imap", OK_IP, "imap"),
    "pop3_ok": ("pop3", OK_IP, "pop3"), "pop3_wrong_pw": ("pop3", POP_WRONG_IP, "pop3"),
    "pop3_unknown": ("pop3", POP_UNKNOWN_IP, "pop3"), "pop3_stls_ok": ("pop3", OK_IP, "pop3"),
}
PORTS_FORMAT = ("user=<%u> method=%m rip=%r rport=%{rport} lip=%l lport=%{lport} mpid=%e %c "
                "session=<%{session}>")

CONFIG = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {log_path}
{info_log}
{timestamp}
auth_verbose = yes
auth_verbose_passwords = no
auth_failure_delay = 0
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
protocols = imap pop3
listen = 127.0.0.1
# pop3s off: POP3's TLS is STLS on the plain port, IMAP's both imaps and STARTTLS
mail_location = maildir:~/Maildir
{elements}
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = {d}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


@dataclass
class Run:
    mode: str
    ports: dict[str, int]  # the listeners
    clients: dict[str, int] = field(default_factory=dict)  # scenario -> the client's own port
    records: list[dict[str, Any]] = field(default_factory=list)
    log_text: str = ""


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the certificate is self-signed, made for this run
    return ctx


def _from(ip: str, port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout, source_address=(ip, 0))


def _from_address(base: type) -> type:
    """The stdlib client ``base``, connecting from a chosen loopback address."""

    class Client(base):  # type: ignore[misc, valid-type]
        def __init__(self, src: str, port: int, **kw: Any) -> None:
            self.src = src
            super().__init__("127.0.0.1", port, timeout=10, **kw)

        def _create_socket(self, timeout: float | None) -> socket.socket:
            sock = _from(self.src, self.port, timeout or 10)
            if isinstance(self, imaplib.IMAP4_SSL):  # imaps: TLS from the first byte
                return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            return sock

    return Client


_IMAP, _IMAPS, _POP3 = map(_from_address, (imaplib.IMAP4, imaplib.IMAP4_SSL, poplib.POP3))


def _traffic(run: Run) -> None:
    """The clients: each scenario's own connection, its local port noted."""
    p = run.ports
    c = _IMAP(OK_IP, p["imap"])
    run.clients["imap_ok"] = c.sock.getsockname()[1]
    c.login(USER, PASSWORD)
    c.select("INBOX")
    c.logout()

    c = _IMAP(WRONG_PW_IP, p["imap"])
    run.clients["imap_wrong_pw"] = c.sock.getsockname()[1]
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(USER, "wrong")
    c.logout()

    c = _IMAP(UNKNOWN_IP, p["imap"])
    run.clients["imap_unknown"] = c.sock.getsockname()[1]
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login("nobody-here", "x")
    c.logout()

    # a client that reads the greeting and goes: no authentication at all
    with _from(NO_AUTH_IP, p["imap"]) as s:
        run.clients["imap_no_auth"] = s.getsockname()[1]
        assert s.makefile("rb").readline().startswith(b"* OK ")

    c = _IMAPS(OK_IP, p["imaps"], ssl_context=_tls())
    run.clients["imaps_ok"] = c.sock.getsockname()[1]
    c.login(USER, PASSWORD)
    c.logout()

    c = _IMAP(OK_IP, p["imap"])
    run.clients["imap_starttls_ok"] = c.sock.getsockname()[1]
    c.starttls(ssl_context=_tls())
    c.login(USER, PASSWORD)
    c.logout()

    c = _POP3(OK_IP, p["pop3"])
    run.clients["pop3_ok"] = c.sock.getsockname()[1]
    c.user(USER)
    c.pass_(PASSWORD)
    assert c.stat() == (0, 0)
    c.quit()

    # wrong password, then the client hangs up without QUIT
    c = _POP3(POP_WRONG_IP, p["pop3"])
    run.clients["pop3_wrong_pw"] = c.sock.getsockname()[1]
    c.user(USER)
    with pytest.raises(poplib.error_proto, match="Authentication failed"):
        c.pass_("wrong")
    c.close()

    c = _POP3(POP_UNKNOWN_IP, p["pop3"])
    run.clients["pop3_unknown"] = c.sock.getsockname()[1]
    c.user("nobody-here")
    with pytest.raises(poplib.error_proto, match="Authentication failed"):
        c.pass_("x")
    c.quit()

    c = _POP3(OK_IP, p["pop3"])
    run.clients["pop3_stls_ok"] = c.sock.getsockname()[1]
    c.stls(_tls())
    c.user(USER)
    c.pass_(PASSWORD)
    c.quit()


# What the traffic above writes, counted on the raw log: the run waits for all of it.
EXPECTED_COUNTS = {
    "master: Info: Dovecot v2.3.19": 1,
    "-login: Info: Login: ": 5,
    ": Info: Disconnected: Logged out": 5,
    "auth failed, 1 attempts": 4,
    "no auth attempts": 1,
    "): Password mismatch": 2,
    "): unknown user": 2,
}


def _log_text(d: Path, mode: str) -> str:
    if mode == "file":
        p = d / "dovecot.log"
        return p.read_text(errors="replace") if p.exists() else ""
    p = d / "log" / "current"
    return p.read_text(errors="replace") if p.exists() else ""


def _wait_for(d: Path, mode: str, wanted: dict[str, int], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.05) + 1):  # bounded by count and by time
        text = _log_text(d, mode)
        if all(text.count(k) >= n for k, n in wanted.items()):
            return text
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    missing = {k: (text.count(k), n) for k, n in wanted.items() if text.count(k) < n}
    pytest.fail(f"dovecot did not log {missing} (got, wanted) in {seconds} s:\n{text[-3000:]}")


@pytest.fixture(scope="module", params=["file", "multilog", "multilog_bare"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """A private dovecot in a temporary directory; the traffic; its log parsed."""
    dovecot = require_binary("dovecot")
    openssl = require_binary("openssl")
    multilog = require_binary("multilog")
    mode = request.param
    # as Debian installs it, the master starts its login, auth and mail processes as
    # dovenull, dovecot and the mail user
    require_root("a real dovecot as packaged needs root")
    # dovecot's unprivileged processes (auth as user dovecot, the mail process as the
    # test user) read and write here: pytest's own temp dirs are closed to them (0700)
    d = Path(tempfile.mkdtemp(prefix="shipper-dovecot-"))
    procs: list[subprocess.Popen] = []
    try:
        d.chmod(0o755)
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"),
                        "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
        # the mail process runs as the user's uid, which dovecot refuses to be 0
        mail = pwd.getpwnam("nobody")
        home = d / "home" / USER
        home.mkdir(parents=True)
        os.chown(home, mail.pw_uid, mail.pw_gid)
        (d / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{mail.pw_uid}:{mail.pw_gid}::{home}::\n")
        ports = {"imap": free_port(), "imaps": free_port(), "pop3": free_port()}
        conf = CONFIG.format(
            d=d, **ports,
            log_path=d / "dovecot.log" if mode == "file" else "/dev/stderr",
            info_log=f"info_log_path = {d / 'dovecot.log'}" if mode == "file" else "",
            timestamp='log_timestamp = ""' if mode == "multilog_bare" else "",
            elements="" if mode == "file" else f"login_log_format_elements = {PORTS_FORMAT}")
        (d / "dovecot.conf").write_text(conf)
        cmd = [dovecot, "-c", str(d / "dovecot.conf"), "-F"]
        if mode == "file":
            out = open(d / "stderr", "wb")  # noqa: SIM115 -- closed with the run
            procs.append(subprocess.Popen(cmd, cwd=d, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
            out.close()
        else:
            # dovecot -F 2>&1 | multilog t ./log
            ml = subprocess.Popen([multilog, "t", str(d / "log")], cwd=d, stdin=subprocess.PIPE)
            procs.append(ml)
            procs.insert(0, subprocess.Popen(cmd, cwd=d, stdout=ml.stdin, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL))
            ml.stdin.close()  # dovecot's now: multilog ends when dovecot does
        _wait_for(d, mode, {"master: Info: Dovecot v2.3.19": 1}, 20)
        r = Run(mode, ports)
        _traffic(r)
        _wait_for(d, mode, EXPECTED_COUNTS, 20)
        stop_process(procs[0], 15)
        for p in procs[1:]:
            p.wait(15)
        r.log_text = _wait_for(d, mode, {"master: Warning: Killed with signal 15": 1}, 10)
        path = d / "dovecot.log" if mode == "file" else d / "log"
        out = subprocess.run([sys.executable, "-m", "shipper", "parse", str(path)],
                             capture_output=True, timeout=60, check=True)
        r.records = [orjson.loads(x) for x in out.stdout.splitlines()]
        yield r
    finally:
        for p in procs:
            stop_process(p, 15)
        shutil.rmtree(d, ignore_errors=True)


def _one(run: Run, **want: Any) -> dict[str, Any]:
    got = [r for r in run.records if all(r.get(k) == v for k, v in want.items())]
    assert len(got) == 1, (want, [r["raw"] for r in got], run.log_text)
    return got[0]


def _client(run: Run, scenario: str) -> dict[str, Any]:
    """The fields every line of a scenario's login process has (the ports when logged)."""
    service, ip, listener = SCENARIOS[scenario]
    f: dict[str, Any] = {"remote_ip": ip, "local_ip": "127.0.0.1"}
    if run.mode != "file":
        f["remote_port"] = run.clients[scenario]
        f["local_port"] = run.ports[listener]
    return f


def _login(run: Run, scenario: str) -> dict[str, Any]:
    f = _client(run, scenario)
    if run.mode != "file":
        return _one(run, event="pop_auth", remote_port=f["remote_port"])
    # no ports logged: the successes from 127.0.0.1 apart by service and order
    service = SCENARIOS[scenario][0]
    same = [r for r in run.records if r["event"] == "pop_auth" and r["remote_ip"] == OK_IP
            and r["service"] == service]
    order = [s for s in run.clients if SCENARIOS[s][0] == service and SCENARIOS[s][1] == OK_IP]
    assert len(same) == len(order), (same, order)
    return same[order.index(scenario)]


def test_every_line_is_dovecot_and_parsed(run: Run) -> None:
    # nothing unparsed and nothing taken for another program's (a session id has "/",
    # the tag of a mail process's line once went to the Postfix parser for it)
    assert len(run.records) == len(run.log_text.splitlines())
    assert [(r["program"], r["event"]) for r in run.records
            if r["program"] != "dovecot" or r["event"] not in ("dovecot", "pop_auth")] == []
    assert all(r["time_source"] == ("syslog" if run.mode == "file" else "tai64n") for r in run.records)


SUCCESSES = {"imap_ok": None, "imaps_ok": "TLS", "imap_starttls_ok": "TLS", "pop3_ok": None,
             "pop3_stls_ok": "TLS"}  # scenario: tls


@pytest.mark.parametrize("scenario", SUCCESSES)
def test_successful_logins(run: Run, scenario: str) -> None:
    service, tls = SCENARIOS[scenario][0], SUCCESSES[scenario]
    rec = _login(run, scenario)
    mail_pid, session = rec["mail_pid"], rec["session_id"]
    assert isinstance(mail_pid, int) and mail_pid > 1 and len(session) == 16
    fields = {"service": service, "level": "info", "auth_user": USER, "method": "PLAIN",
              **_client(run, scenario), "mail_pid": mail_pid, "session_id": session, "result": "success"}
    if tls:
        fields["tls"] = tls
    assert {k: rec[k] for k in fields} == fields
    assert rec.get("tls") == tls
    if tls is None:  # 127.0.0.1 to itself: dovecot's %c reads "secured", which is no TLS
        assert ", secured, session=<" in rec["raw"]
    assert rec.get("reason") is None
    # the mail process the login started: its user, pid and session, its byte counts
    out = _one(run, event="dovecot", service=service, mail_pid=mail_pid)
    assert (out["level"], out["auth_user"], out["session_id"]) == ("info", USER, session)
    assert out["text"].startswith("Disconnected: Logged out ")
    assert out["raw"].endswith(out["text"])


ABORTED = r"Disconnected: Aborted login by logging out \(auth failed, 1 attempts in \d+ secs\)"
FAILURES = {  # scenario: (user, the auth process's reason, the login process's)
    "imap_wrong_pw": (USER, "Password mismatch", ABORTED),
    "imap_unknown": ("nobody-here", "unknown user", ABORTED),
    # the client hung up without QUIT
    "pop3_wrong_pw": (USER, "Password mismatch",
                      r"Disconnected: Connection closed \(auth failed, 1 attempts in \d+ secs\)"),
    "pop3_unknown": ("nobody-here", "unknown user", ABORTED),
}


@pytest.mark.parametrize("scenario", FAILURES)
def test_failed_logins_and_the_auth_process_reason(run: Run, scenario: str) -> None:
    service, (user, auth_text, reason) = SCENARIOS[scenario][0], FAILURES[scenario]
    f = _client(run, scenario)
    rec = _one(run, event="pop_auth", remote_ip=f["remote_ip"])
    session = rec["session_id"]
    fields = {"service": service, "level": "info", "auth_user": user, "method": "PLAIN", **f,
              "session_id": session, "result": "failure"}
    assert {k: rec[k] for k in fields} == fields
    assert re.fullmatch(reason, rec["reason"]), rec["reason"]  # "in 0 secs", or 1 or more
    assert rec.get("mail_pid") is None and rec.get("tls") is None
    # the auth process names why: "passwd-file(USER,IP,<SESSION>): Password mismatch"
    auth = _one(run, event="dovecot", service="auth", remote_ip=f["remote_ip"])
    assert (auth["level"], auth["auth_user"], auth["session_id"]) == ("info", user, session)
    assert auth["text"] == f"passwd-file({user},{f['remote_ip']},<{session}>): {auth_text}"


def test_client_gone_before_auth(run: Run) -> None:
    f = _client(run, "imap_no_auth")
    rec = _one(run, remote_ip=NO_AUTH_IP)
    assert {k: rec[k] for k in f} == f
    assert (rec["event"], rec["service"], rec["level"]) == ("dovecot", "imap", "info")
    assert rec["text"].startswith("Disconnected") and "(no auth attempts in " in rec["text"]
    assert rec.get("auth_user") is None and rec.get("result") is None and len(rec["session_id"]) == 16


def test_master_lines(run: Run) -> None:
    up = _one(run, service="master", level="info")
    assert up["event"] == "dovecot"
    assert up["text"] == "Dovecot v2.3.19.1 (9b53102964) starting up for imap, pop3 (core dumps disabled)"
    down = _one(run, service="master", level="warning")
    assert down["event"] == "dovecot"
    assert down["text"].startswith("Killed with signal 15 (by pid=")
