"""A whole qmail host end to end: SMTP sessions through the real tcpserver and recordio
into real multilog, qmail-send's lines for the mails they queued into another, and
``shipper run`` with tracking on, killed (-9) and started again while mail flows, once
after an outage of a few seconds, so that it catches up on one log ahead of the other.
What the sink holds is checked against the truth the programs wrote: every line there,
a copy only under its first id; every mail linked by qp to the session that queued it;
every session naming its message once. (Found so: mails read before their session's
``250 ok … qp`` went out with no session; qlog's and recordio's qp listed twice.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, require_binary, wait_until

from shipper.tai64n import decode_ns

ROOT = Path(__file__).resolve().parent.parent

# qmail-smtpd as tcpserver runs it under recordio (its pid is the connection's): SMTP on
# stdin/stdout, the qlog patch's qlogreceived line on stderr, each message "queued"
# (a file in SPOOL, its qp a real pid) before the 250 that names it
SMTPD = r'''
import json, os, subprocess, sys
pid = os.getpid()
def reply(s):
    sys.stdout.write(s + "\r\n"); sys.stdout.flush()
reply("220 mx ESMTP")
sender, rcpts = "", []
for line in sys.stdin.buffer:
    cmd = line.decode().rstrip("\r\n")
    if cmd.startswith("MAIL FROM:"):
        sender, rcpts = cmd[10:].strip("<>"), []
        reply("250 ok")
    elif cmd.startswith("RCPT TO:"):
        rcpts.append(cmd[8:].strip("<>"))
        reply("250 ok")
    elif cmd == "DATA":
        reply("354 go ahead")
        for d in sys.stdin.buffer:
            if d.rstrip(b"\r\n") == b".":
                break
        p = subprocess.Popen(["true"]); p.wait(); qp = p.pid
        tmp = os.path.join(os.environ["SPOOL"], f".{qp}")
        with open(tmp, "w") as f:
            json.dump({"qp": qp, "conn_pid": pid, "sender": sender, "rcpts": rcpts}, f)
        os.rename(tmp, os.path.join(os.environ["SPOOL"], f"{qp}.json"))
        sys.stderr.write(f"qlogreceived: result=accepted code=250 reason=queueaccept detail= helo=c "
                         f"mailfrom={sender} rcptto={','.join(rcpts)} relay=no rcpthosts= size=300 "
                         f"authuser= authtype= encrypted= sslverified=no localip=127.0.0.1 localport=25 "
                         f"remoteip=127.0.0.1 remoteport=1 remotehost= qp={qp} pid={pid}\n")
        sys.stderr.flush()
        reply(f"250 ok 1796000000 qp {qp}")
    elif cmd == "QUIT":
        reply("221 mx")
        break
    else:
        reply("250 ok")
'''

# qmail-send: each message taken from SPOOL is queued and delivered (lines a few ms
# apart, as qmail-send writes them), its truth kept in DONE; ends on STOP, spool empty
SEND = r'''
import json, os, sys, time
spool, done, stop = sys.argv[1:4]
ids = iter(range(1, 10**6))
msg = 100000
t_end = time.monotonic() + 90
def out(s):
    sys.stdout.write(s + "\n"); sys.stdout.flush()
while time.monotonic() < t_end:
    names = sorted(n for n in os.listdir(spool) if n.endswith(".json"))
    for n in names:
        with open(os.path.join(spool, n)) as f:
            m = json.load(f)
        msg += 1
        out(f"new msg {msg}")
        out(f"info msg {msg}: bytes 300 from <{m['sender']}> qp {m['qp']} uid 89")
        for rc in m["rcpts"]:
            d = next(ids)
            out(f"starting delivery {d}: msg {msg} to remote {rc}")
            time.sleep(0.005)
            out(f"delivery {d}: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/")
        out(f"end msg {msg}")
        m["msg"] = msg
        with open(os.path.join(done, n), "w") as f:
            json.dump(m, f)
        os.unlink(os.path.join(spool, n))
    if not names and os.path.exists(stop):
        break
    time.sleep(0.01)
'''


def _session(port: int, k: int) -> None:
    """One SMTP session queuing one message (k < 0: a try whether tcpserver listens, which
    sends none)."""
    if k < 0:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False  # type: ignore[return-value]
        return None
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s, s.makefile("rwb") as f:
        def cmd(c: str) -> bytes:
            f.write(c.encode() + b"\r\n")
            f.flush()
            return f.readline()
        f.readline()
        cmd("EHLO c")
        cmd(f"MAIL FROM:<s{k}@example.net>")
        for i in range(1 + k % 2):
            cmd(f"RCPT TO:<r{k}.{i}@example.org>")
        cmd("DATA")
        assert cmd(f"Subject: {k}\r\n.").startswith(b"250 ok")  # (a body's lines go redacted)
        cmd("QUIT")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_bytes().split(b"\n")[:-1] if ln]


def _log_lines(logdir: Path) -> list[tuple[int, str]]:
    out = []
    for d in ("send", "smtpd"):
        for p in sorted((logdir / d).iterdir()):
            if p.name == "current" or p.name.startswith("@"):
                for ln in p.read_bytes().split(b"\n")[:-1]:
                    label, text = ln.decode().split(" ", 1)
                    out.append((decode_ns(label), text))
    return out


@pytest.mark.slow
def test_a_whole_host_through_kills_links_every_mail_to_its_session(tmp_path: Path) -> None:
    multilog, tcpserver, recordio = (require_binary(b) for b in ("multilog", "tcpserver", "recordio"))
    for d in ("log", "spool", "done", "state"):
        (tmp_path / d).mkdir()
    (tmp_path / "smtpd.py").write_text(SMTPD)
    (tmp_path / "send.py").write_text(SEND)
    out = tmp_path / "out.ndjson"
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
drain_timeout = "5s"
[metrics]
enabled = false
[sources.qmail]
type = "multilog"
paths = ["{tmp_path / 'log'}/*"]
start_position = "all"
[tracking]
enabled = true
save_interval = "1s"
[sinks.out]
type = "file"
path = "{out}"
""")
    env = dict(os.environ, SPOOL=str(tmp_path / "spool"))
    port = free_port()
    py = sys.executable
    # n1000: up to 400 sessions, ~2.7 KB of smtpd log each; with n100 multilog deleted
    # the oldest (149 of 261 connections' ends left) and the test waited for them
    send = subprocess.Popen(f"{py} {tmp_path / 'send.py'} {tmp_path / 'spool'} {tmp_path / 'done'} "
                            f"{tmp_path / 'STOP'} | {multilog} t s4096 n1000 {tmp_path / 'log' / 'send'}",
                            shell=True, start_new_session=True)
    smtpd = subprocess.Popen(f"{tcpserver} -v -R -H -l mx -c 10 127.0.0.1 {port} {recordio} {py} "
                             f"{tmp_path / 'smtpd.py'} 2>&1 | {multilog} t s4096 n1000 {tmp_path / 'log' / 'smtpd'}",
                             shell=True, env=env, start_new_session=True)
    log = open(tmp_path / "shipper.log", "ab")  # noqa: SIM115 - handed to the children
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen([py, "-m", "shipper", "run", "-c", str(cfg)],
                                      stdout=log, stderr=log, cwd=ROOT))
        return procs[-1]

    try:
        wait_until("tcpserver listening", lambda: _session(port, -1) is None, 15)
        ship = start()
        # mail once it runs (tcpserver's first status line read): a first start on a
        # backlog may read the send log before any smtpd line (those mails go unlinked)
        wait_until("the shipper reading", lambda: any(
            r["program"] == "tcpserver" for r in _records(out)), 30)
        t0 = time.monotonic()
        k, kills = 0, 0
        # ~12 s of mail; kill -9 at 3 s, down 3 s (a backlog in both logs), at 8 s again
        while time.monotonic() - t0 < 12 and k < 400:
            _session(port, k)
            k += 1
            el = time.monotonic() - t0
            if (kills == 0 and el > 3) or (kills == 1 and el > 8):
                os.kill(ship.pid, signal.SIGKILL)
                ship.wait(10)
                kills += 1
                if kills == 1:
                    t_down = time.monotonic()
                    while time.monotonic() - t_down < 3:
                        _session(port, k)
                        k += 1
                ship = start()
        (tmp_path / "STOP").touch()
        assert send.wait(60) == 0
        wait_until("every connection's end logged", lambda: sum(
            t.startswith("tcpserver: end ") for _, t in _log_lines(tmp_path / "log")) >= k + 1, 15)
        os.killpg(smtpd.pid, signal.SIGTERM)
        smtpd.wait(10)
        lines = _log_lines(tmp_path / "log")
        qps = {json.loads((tmp_path / "done" / n).read_text())["qp"] for n in os.listdir(tmp_path / "done")}

        def caught_up() -> bool:
            recs = _records(out)
            return (len({r["event_id"] for r in recs if r["event"] not in ("mail", "smtp_session")})
                    >= len(lines) and qps <= {r["qp"] for r in recs if r["event"] == "mail"})
        wait_until("the shipper caught up", caught_up, 40)
        ship.send_signal(signal.SIGTERM)
        assert ship.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        for group in (send, smtpd):
            if group.poll() is None:
                os.killpg(group.pid, signal.SIGKILL)
                group.wait(5)
        log.close()
    assert kills == 2 and k >= 20
    recs = _records(out)
    # each line (a label and text; pipelined replies may share both) under one id a copy
    ids: dict[tuple[int, str], set[str]] = {}
    for r in recs:
        if r["event"] not in ("mail", "smtp_session"):
            ids.setdefault((r["time_unix_ns"], r["message"]), set()).add(r["event_id"])
    want = Counter(lines)
    missing = [ln for ln, n in want.items() if len(ids.get(ln, ())) < n]
    assert not missing, f"{len(missing)} of {len(lines)} lines not shipped, e.g. {missing[:3]}"
    again = [ln for ln, n in want.items() if len(ids[ln]) > n]
    assert not again, f"lines shipped again under another id: {again[:3]}"
    truth = [json.loads((tmp_path / "done" / n).read_text()) for n in os.listdir(tmp_path / "done")]
    mails = {r["qp"]: r for r in recs if r["event"] == "mail"}
    sessions = {r["conn_pid"]: r for r in recs if r["event"] == "smtp_session"}
    unlinked = [(t["qp"], mails[t["qp"]].get("session")) for t in truth
                if (mails[t["qp"]].get("session") or {}).get("conn_pid") != t["conn_pid"]
                or mails[t["qp"]]["session"]["link"] != "qp"]
    assert not unlinked, f"{len(unlinked)} of {len(truth)} mails not linked to their session by qp: {unlinked[:3]}"
    assert all(sessions[t["conn_pid"]]["qps"] == [t["qp"]] for t in truth), "a session's qps"
