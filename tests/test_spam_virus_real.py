"""SpamAssassin's spamd and ClamAV's clamd, the real daemons, as a qmail-toaster runs
them: spamd ``-s stderr`` and clamd's stdout (``Foreground yes``) each into a real
``multilog t``, clamd's LogFile with ``LogTime yes`` beside. Real traffic (``spamc``
with a ham and a GTUBE mail, ``clamdscan`` and raw INSTREAM/SCAN/RELOAD commands),
then every line they logged is parsed: none unparsed, each verdict field by field.

No network: spamd runs with local rules only (``-L``, the rules Debian ships, no
sa-update); clamd reads a signature database of its own, made here (an ``.hdb`` for
the EICAR test file, an ``.ndb`` for a marker of ours), as freshclam cannot fetch one.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper.parse import LineParser
from shipper.severity import ERR, INFO, NOTICE, WARNING, severity
from tests.conftest import free_port, require_binary, stop_process

pytestmark = pytest.mark.slow

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
MARKER = b"SHIPPER-TEST-VIRUS-MARKER-7f3a"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
HAM = ("From: alice@example.org\nTo: bob@example.com\nSubject: lunch\n"
       "Message-ID: <ham-1@example.org>\nDate: Mon, 30 Nov 2026 06:00:00 +0000\n\n"
       "Shall we meet for lunch at noon tomorrow?\n")
SPAM = ("From: spammer@example.net\nTo: bob@example.com\nSubject: offer\n"
        "Message-ID: <gtube-1@example.net>\nDate: Mon, 30 Nov 2026 06:00:00 +0000\n\n"
        f"{GTUBE}\n")
WAIT = 30.0  # seconds for a daemon to come up or log a line; spamd needs ~2 s here


def _wait_for(what: str, check: Any, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{p.args[0]} exited ({p.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT:.0f} s")
        time.sleep(0.1)


def _clamd_cmd(port: int, command: bytes, payload: bytes | None = None) -> bytes:
    """One clamd command (``z`` form: NUL-terminated); INSTREAM sends ``payload``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"z" + command + b"\0")
        if payload is not None:
            s.sendall(struct.pack(">I", len(payload)) + payload + struct.pack(">I", 0))
        reply = b""
        while not reply.endswith(b"\0"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.rstrip(b"\0")


def _current(logdir: Path) -> list[str]:
    f = logdir / "current"
    return f.read_text(errors="replace").splitlines() if f.exists() else []


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run both daemons, feed them, stop them; their log lines, by log, and the facts
    the lines must show (ports, paths)."""
    spamd, spamc = require_binary("spamd"), require_binary("spamc")
    clamd, clamdscan = require_binary("clamd"), require_binary("clamdscan")
    multilog = require_binary("multilog")
    d = tmp_path_factory.mktemp("spamvirus")
    started: list[subprocess.Popen] = []
    try:
        # --- spamd, as a toaster's run script: "spamd -x -u vpopmail -s stderr 2>&1 | multilog t"
        spam_port = free_port()
        home = d / "spamd-home"
        home.mkdir()
        user = "nobody"  # spamd refuses to run its children as root; any user that exists
        if os.geteuid() == 0:
            os.chown(home, 65534, 65534)
        spamlog = d / "spamd-log"
        spam_ml = subprocess.Popen([multilog, "t", str(spamlog)], stdin=subprocess.PIPE,
                                   start_new_session=True)
        started.append(spam_ml)
        spamd_cmd = [spamd, "--syslog=stderr", "-L", "-x", "-H", str(home),
                     f"--listen=127.0.0.1:{spam_port}", "-r", str(d / "spamd.pid"),
                     "--min-children=1", "--max-children=1"]
        if os.geteuid() == 0:
            spamd_cmd += ["-u", user]
        spamd_proc = subprocess.Popen(spamd_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=spam_ml.stdin, start_new_session=True)
        started.append(spamd_proc)
        assert spam_ml.stdin is not None
        spam_ml.stdin.close()  # spamd holds the pipe now: multilog ends when spamd does

        # --- clamd: Foreground, its stdout into multilog, a LogFile with LogTime beside
        clam_port = free_port()
        db = d / "clamdb"
        db.mkdir()
        (db / "shipper.hdb").write_text(f"{EICAR_MD5}:{len(EICAR)}:Eicar-Test-Signature\n")
        (db / "shipper.ndb").write_text(f"Shipper-Test-Marker:0:*:{MARKER.hex()}\n")
        (d / "clamtmp").mkdir()
        conf = d / "clamd.conf"
        conf.write_text(
            f"Foreground yes\nDatabaseDirectory {db}\nTCPSocket {clam_port}\nTCPAddr 127.0.0.1\n"
            f"LogFile {d / 'clamd.log'}\nLogTime yes\nLogClean yes\nPidFile {d / 'clamd.pid'}\n"
            f"TemporaryDirectory {d / 'clamtmp'}\nSelfCheck 3600\n")
        clamlog = d / "clamd-log"
        clam_ml = subprocess.Popen([multilog, "t", str(clamlog)], stdin=subprocess.PIPE,
                                   start_new_session=True)
        started.append(clam_ml)
        clamd_proc = subprocess.Popen([clamd, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=clam_ml.stdin, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        started.append(clamd_proc)
        assert clam_ml.stdin is not None
        clam_ml.stdin.close()

        def clamd_up() -> bool:
            try:
                return _clamd_cmd(clam_port, b"PING") == b"PONG"
            except OSError:
                return False

        _wait_for("spamd 'server started' line",
                  lambda: any("server started" in ln for ln in _current(spamlog)), [spamd_proc])
        _wait_for("clamd PONG", clamd_up, [clamd_proc])

        # --- traffic
        for mail in (HAM, SPAM):
            got = subprocess.run([spamc, "-d", "127.0.0.1", "-p", str(spam_port), "-u", "vpopmail", "-c"],
                                 input=mail.encode(), capture_output=True, timeout=30)
            assert got.stdout.strip(), got
        # simscan's work dir: SIMSCAN_WORKDIR/<unique>/ holds the mail and its parts
        work = d / "simscan" / "1796020805.123456.4242"
        work.mkdir(parents=True)
        (work / "msg.clean").write_text(HAM)
        (work / "msg.eicar").write_bytes(EICAR)
        (work / "msg.marked").write_bytes(HAM.encode() + MARKER + b"\n")
        for f in work.iterdir():
            f.chmod(0o644)
        work.chmod(0o755)
        got = subprocess.run([clamdscan, "-c", str(conf), "--no-summary", *sorted(map(str, work.iterdir()))],
                             capture_output=True, timeout=30)
        assert got.returncode == 1, got  # 1: something found
        assert _clamd_cmd(clam_port, b"INSTREAM", HAM.encode() + MARKER) == b"stream: Shipper-Test-Marker.UNOFFICIAL FOUND"
        assert b"ERROR" in _clamd_cmd(clam_port, b"SCAN " + str(d / "missing").encode())
        assert _clamd_cmd(clam_port, b"RELOAD") == b"RELOADING"
        _wait_for("clamd reload", lambda: "Database correctly reloaded" in (d / "clamd.log").read_text(),
                  [clamd_proc])
        _wait_for("spamd result lines",
                  lambda: sum(" result: " in ln for ln in _current(spamlog)) == 2, [spamd_proc])
    finally:
        for p in started[::-1]:
            if p.args[0] != multilog:
                stop_process(p)
        for p in started:  # multilog ends at its input's end
            if p.args[0] == multilog:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    stop_process(p)
    yield {"spamd": _current(spamlog), "clamd_stdout": _current(clamlog),
           "clamd_logfile": (d / "clamd.log").read_text().splitlines(),
           "spam_port": spam_port, "clam_port": clam_port, "work": str(work), "missing": str(d / "missing")}


def _parsed(lines: list[str]) -> list[dict[str, Any]]:
    p = LineParser()
    return [p.parse(ln.encode()).to_dict() for ln in lines]


def test_every_spamd_line_parsed(logs: dict[str, Any]) -> None:
    recs = _parsed(logs["spamd"])
    assert len(recs) >= 10
    for r in recs:
        assert r["time_source"] == "tai64n", r
        assert r["program"] == "spamd" and r["event"] != "unparsed", r
        assert type(r["pid"]) is int and r["level"] in ("info", "warning", "debug", "error"), r
    events = [r["event"] for r in recs]
    assert events.count("spam_result") == 2 and events.count("spam_check") == 2
    assert any(r.get("component") == "prefork" for r in recs)
    stop = [r for r in recs if r.get("text", "").startswith("server killed by SIGTERM")]
    assert len(stop) == 1 and stop[0]["component"] == "spamd"


def test_spamd_verdicts_field_by_field(logs: dict[str, Any]) -> None:
    recs = _parsed(logs["spamd"])
    conns = [r for r in recs if r["event"] == "spamd" and r["text"].startswith("connection from ")]
    assert [(c["remote_ip"], c["local_port"]) for c in conns] == [("127.0.0.1", logs["spam_port"])] * 2
    results = [r for r in recs if r["event"] == "spam_result"]
    ham, spam = results
    # each result line names the client port of its connection line
    assert [ham["remote_port"], spam["remote_port"]] == [c["remote_port"] for c in conns]
    uid = ham["uid"]
    assert type(uid) is int
    for r in results:
        assert r["user"] == "vpopmail" and r["uid"] == uid
        assert r["threshold"] == 5.0 and r["remote_host"] == "localhost" and r["remote_ip"] == "127.0.0.1"
        assert type(r["scan_time"]) is float and r["autolearn_force"] == "no"
    assert ham["spam"] is False and ham["score"] == 0.0 and ham["message_id"] == "ham-1@example.org"
    assert "GTUBE" not in ham["tests"] and ham["size"] == len(HAM)
    # GTUBE scores 1000; the other rules hit may take a little off
    assert spam["spam"] is True and spam["score"] >= 900.0 and spam["message_id"] == "gtube-1@example.net"
    assert "GTUBE" in spam["tests"] and spam["size"] == len(SPAM) and spam["tests"] == sorted(spam["tests"])
    assert severity(ham) == INFO and severity(spam) == NOTICE
    checks = [r for r in recs if r["event"] == "spam_check"]
    assert [c["spam"] for c in checks] == [False, True]
    assert checks[0]["score"] == 0.0 and checks[1]["score"] >= 900.0
    assert [(c["user"], c["uid"], c["threshold"], c["size"]) for c in checks] == [
        ("vpopmail", uid, 5.0, len(HAM)), ("vpopmail", uid, 5.0, len(SPAM))]
    # the same score: to one decimal in the summary, cut to an integer by the result
    # line's %2d (seen: 999.95 logged as "1000.0" and as "999")
    assert -0.05 <= checks[1]["score"] - spam["score"] <= 1.0
    assert severity(checks[0]) == INFO and severity(checks[1]) == NOTICE
    asked = [r for r in recs if r["event"] == "spamd" and r["text"].startswith("checking message ")]
    assert [(a["message_id"], a["user"]) for a in asked] == [
        ("ham-1@example.org", "vpopmail"), ("gtube-1@example.net", "vpopmail")]


def test_clamd_lines_in_both_logs_parsed(logs: dict[str, Any]) -> None:
    for name in ("clamd_stdout", "clamd_logfile"):
        recs = _parsed(logs[name])
        assert len(recs) >= 5, name
        for r in recs:
            assert r["program"] == "clamd" and r["event"] != "unparsed", (name, r)
            if name == "clamd_stdout":
                assert r["time_source"] == "tai64n"


def test_clamd_verdicts_field_by_field(logs: dict[str, Any]) -> None:
    recs = _parsed(logs["clamd_logfile"])
    work = logs["work"]
    # clamd's threads log each verdict after replying: sorted, not in the order asked
    found = sorted((r for r in recs if r["event"] == "virus_found"), key=lambda r: r["path"])
    assert [(r["path"], r["virus"], r.get("simscan_dir")) for r in found] == [
        (found[0]["path"], "Eicar-Test-Signature.UNOFFICIAL", work),
        (found[1]["path"], "Shipper-Test-Marker.UNOFFICIAL", work),
        (found[2]["path"], "Shipper-Test-Marker.UNOFFICIAL", None)]
    assert [r["path"] for r in found[:2]] == [f"{work}/msg.eicar", f"{work}/msg.marked"]
    stream = found[2]
    assert stream["path"] == f"instream(127.0.0.1@{stream['remote_port']})"
    assert stream["remote_ip"] == "127.0.0.1" and 0 < stream["remote_port"] < 65536
    assert {severity(r) for r in found} == {WARNING}
    clean = [r for r in recs if r.get("scan") == "clean"]
    assert [r["path"] for r in clean] == [f"{work}/msg.clean"] and severity(clean[0]) == INFO
    warn = [r for r in recs if r.get("level") == "warning"]
    assert [r["text"] for r in warn] == [f"File path check failure on: {logs['missing']}"]
    assert severity(warn[0]) == WARNING
    texts = [r["text"] for r in recs if r["event"] == "clamd"]
    assert "Database correctly reloaded (2 signatures)" in texts
    assert any(t.startswith("--- Stopped at ") for t in texts)
    assert not [r for r in recs if severity(r) == ERR]
    # the same verdicts on stdout, where multilog stamped them
    out = sorted((r for r in _parsed(logs["clamd_stdout"]) if r["event"] == "virus_found"), key=lambda r: r["path"])
    assert [(r["path"], r["virus"]) for r in out] == [(r["path"], r["virus"]) for r in found]
