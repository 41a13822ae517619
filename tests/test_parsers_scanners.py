"""spamd's and clamd's lines, field by field with their severity: the real lines
tests/test_spam_virus_real.py collected from the daemons (tests/fixtures/samples/
spamd_clamd_real.txt), and lines written from the programs' own format strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipper.parse import LineParser
from shipper.parsers.scanners import parse_clamd, parse_clamd_log, parse_spamd, parse_spamd_stderr
from shipper.severity import ERR, INFO, NOTICE, WARNING, severity
from tests.test_parsers_source_formats import _fields

SAMPLE = Path(__file__).parent / "fixtures" / "samples" / "spamd_clamd_real.txt"


def _lines() -> list[str]:
    text = SAMPLE.read_text(encoding="utf-8")
    assert text.startswith("# source:")
    return [ln for ln in text.splitlines()[1:] if ln.strip()]


LINES = _lines()


# (line, program, pid, event, severity, fields)
REAL = [
    (0, 'spamd', 28412, 'spamd', INFO, {'component': 'zoom', 'text': "able to use 408/408 'body_0' compiled rules (100%)", 'level': 'info'}),
    (1, 'spamd', 28412, 'spamd', INFO, {'component': 'spamd', 'text': 'server started on IO::Socket::IP [127.0.0.1]:38897 (running version 4.0.1)', 'level': 'info'}),
    (2, 'spamd', 28412, 'spamd', INFO, {'component': 'spamd', 'text': 'server pid: 28412', 'level': 'info'}),
    (3, 'spamd', 28412, 'spamd', INFO, {'component': 'spamd', 'text': 'server successfully spawned child process, pid 28417', 'level': 'info'}),
    (4, 'spamd', 28412, 'spamd', INFO, {'component': 'prefork', 'text': 'child states: I', 'level': 'info'}),
    (5, 'spamd', 28417, 'spamd', INFO, {'component': 'spamd', 'text': 'connection from localhost [127.0.0.1]:44204 to port 38897, fd 4', 'remote_host': 'localhost', 'remote_ip': '127.0.0.1', 'remote_port': 44204, 'local_port': 38897, 'level': 'info'}),
    (6, 'spamd', 28417, 'spamd', INFO, {'component': 'spamd', 'text': 'checking message <ham-1@example.org> for vpopmail:65534', 'message_id': 'ham-1@example.org', 'user': 'vpopmail', 'uid': 65534, 'level': 'info'}),
    (7, 'spamd', 28417, 'spamd', WARNING, {'component': 'plugin', 'text': 'eval failed: bayes: (in learn) locker: safe_lock: cannot create tmp lockfile /nonexistent/.spamassassin/bayes.lock.vm.28417 for /nonexistent/.spamassassin/bayes.lock: No such file or directory', 'level': 'warning'}),
    (8, 'spamd', 28417, 'spam_check', INFO, {'spam': False, 'score': -0.0, 'threshold': 5.0, 'user': 'vpopmail', 'uid': 65534, 'scan_time': 0.1, 'size': 172, 'level': 'info'}),
    (9, 'spamd', 28417, 'spam_result', INFO, {'spam': False, 'score': 0.0, 'tests': ['NO_RECEIVED', 'NO_RELAYS'], 'scan_time': 0.1, 'size': 172, 'user': 'vpopmail', 'uid': 65534, 'threshold': 5.0, 'remote_host': 'localhost', 'remote_ip': '127.0.0.1', 'remote_port': 44204, 'message_id': 'ham-1@example.org', 'autolearn': 'unavailable', 'autolearn_force': 'no', 'level': 'info'}),
    (10, 'spamd', 28412, 'spamd', INFO, {'component': 'prefork', 'text': 'child states: B', 'level': 'info'}),
    (11, 'spamd', 28412, 'spamd', INFO, {'component': 'prefork', 'text': 'server reached --max-children setting, consider raising it', 'level': 'info'}),
    (12, 'spamd', 28417, 'spamd', INFO, {'component': 'spamd', 'text': 'connection from localhost [127.0.0.1]:44212 to port 38897, fd 4', 'remote_host': 'localhost', 'remote_ip': '127.0.0.1', 'remote_port': 44212, 'local_port': 38897, 'level': 'info'}),
    (13, 'spamd', 28417, 'spamd', INFO, {'component': 'spamd', 'text': 'checking message <gtube-1@example.net> for vpopmail:65534', 'message_id': 'gtube-1@example.net', 'user': 'vpopmail', 'uid': 65534, 'level': 'info'}),
    (14, 'spamd', 28417, 'spam_check', NOTICE, {'spam': True, 'score': 1000.0, 'threshold': 5.0, 'user': 'vpopmail', 'uid': 65534, 'scan_time': 0.0, 'size': 203, 'level': 'info'}),
    (15, 'spamd', 28417, 'spam_result', NOTICE, {'spam': True, 'score': 999.0, 'tests': ['GTUBE', 'NO_RECEIVED', 'NO_RELAYS', 'TVD_SPACE_RATIO'], 'scan_time': 0.0, 'size': 203, 'user': 'vpopmail', 'uid': 65534, 'threshold': 5.0, 'remote_host': 'localhost', 'remote_ip': '127.0.0.1', 'remote_port': 44212, 'message_id': 'gtube-1@example.net', 'autolearn': 'no', 'autolearn_force': 'no', 'level': 'info'}),
    (16, 'spamd', 28412, 'spamd', INFO, {'component': 'prefork', 'text': 'child states: I', 'level': 'info'}),
    (17, 'spamd', 28412, 'spamd', INFO, {'component': 'spamd', 'text': 'server killed by SIGTERM, shutting down', 'level': 'info'}),
    (18, 'clamd', None, 'clamd', INFO, {'text': '+++ Started at Mon Nov 30 06:38:06 2026'}),
    (19, 'clamd', None, 'clamd', INFO, {'text': 'Received 0 file descriptor(s) from systemd.'}),
    (20, 'clamd', None, 'clamd', INFO, {'text': 'clamd daemon 1.4.6 (OS: Linux, ARCH: x86_64, CPU: x86_64)'}),
    (21, 'clamd', None, 'clamd', INFO, {'text': 'Log file size limited to 1048576 bytes.'}),
    (22, 'clamd', None, 'clamd', INFO, {'text': 'Reading databases from /tmp/s14/spam/spamvirus-bthxo7b2/clamdb'}),
    (23, 'clamd', None, 'clamd', INFO, {'text': 'Not loading PUA signatures.'}),
    (24, 'clamd', None, 'clamd', INFO, {'text': 'Bytecode: Security mode set to "TrustSigned".'}),
    (25, 'clamd', None, 'clamd', INFO, {'text': 'Loaded 2 signatures.'}),
    (26, 'clamd', None, 'clamd', INFO, {'text': 'TCP: Bound to [127.0.0.1]:49171'}),
    (27, 'clamd', None, 'clamd', INFO, {'text': 'TCP: Setting connection queue length to 200'}),
    (28, 'clamd', None, 'clamd', INFO, {'text': 'Limits: Global time limit set to 120000 milliseconds.'}),
    (29, 'clamd', None, 'clamd', INFO, {'text': 'Detection using image fuzzy hash enabled.'}),
    (30, 'clamd', None, 'clamd', INFO, {'text': 'AlertExceedsMax heuristic detection disabled.'}),
    (31, 'clamd', None, 'clamd', INFO, {'text': 'Heuristic alerts enabled.'}),
    (32, 'clamd', None, 'clamd', INFO, {'text': 'Self checking every 3600 seconds.'}),
    (33, 'clamd', None, 'clamd', INFO, {'path': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.clean', 'simscan_dir': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242', 'scan': 'clean', 'text': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.clean: OK'}),
    (34, 'clamd', None, 'virus_found', WARNING, {'virus': 'Eicar-Test-Signature.UNOFFICIAL', 'path': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.eicar', 'simscan_dir': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242'}),
    (35, 'clamd', None, 'virus_found', WARNING, {'virus': 'Shipper-Test-Marker.UNOFFICIAL', 'path': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.marked', 'simscan_dir': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242'}),
    (36, 'clamd', None, 'virus_found', WARNING, {'virus': 'Shipper-Test-Marker.UNOFFICIAL', 'path': 'instream(127.0.0.1@40850)', 'remote_ip': '127.0.0.1', 'remote_port': 40850}),
    (37, 'clamd', None, 'clamd', WARNING, {'level': 'warning', 'text': 'File path check failure on: /tmp/s14/spam/spamvirus-bthxo7b2/missing'}),
    (38, 'clamd', None, 'clamd', INFO, {'text': 'Reading databases from /tmp/s14/spam/spamvirus-bthxo7b2/clamdb'}),
    (39, 'clamd', None, 'clamd', INFO, {'text': 'Database correctly reloaded (2 signatures)'}),
    (40, 'clamd', None, 'clamd', INFO, {'text': 'Activating the newly loaded database...'}),
    (41, 'clamd', None, 'clamd', INFO, {'text': 'Pid file removed.'}),
    (42, 'clamd', None, 'clamd', INFO, {'text': '--- Stopped at Mon Nov 30 06:38:07 2026'}),
    (43, 'clamd', None, 'clamd', INFO, {'path': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.clean', 'simscan_dir': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242', 'scan': 'clean', 'text': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.clean: OK'}),
    (44, 'clamd', None, 'virus_found', WARNING, {'virus': 'Eicar-Test-Signature.UNOFFICIAL', 'path': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.eicar', 'simscan_dir': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242'}),
    (45, 'clamd', None, 'virus_found', WARNING, {'virus': 'Shipper-Test-Marker.UNOFFICIAL', 'path': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242/msg.marked', 'simscan_dir': '/tmp/s14/spam/spamvirus-bthxo7b2/simscan/1796020805.123456.4242'}),
    (46, 'clamd', None, 'virus_found', WARNING, {'virus': 'Shipper-Test-Marker.UNOFFICIAL', 'path': 'instream(127.0.0.1@40850)', 'remote_ip': '127.0.0.1', 'remote_port': 40850}),
    (47, 'clamd', None, 'clamd', INFO, {'text': '--- Stopped at Mon Nov 30 06:38:07 2026'}),
]


@pytest.mark.parametrize(("i", "program", "pid", "event", "sev", "fields"), REAL)
def test_real_lines(i: int, program: str, pid: int | None, event: str, sev: int, fields: dict) -> None:
    d = LineParser().parse(LINES[i].encode()).to_dict()
    assert (d["program"], d["pid"], d["event"], severity(d)) == (program, pid, event, sev)
    assert _fields(d) == fields
    # multilog's label gives the time; clamd's own LogFile has none we read
    assert d["time_source"] == ("tai64n" if LINES[i].startswith("@") else "ingest")


def test_every_real_line_has_its_case() -> None:
    assert [c[0] for c in REAL] == list(range(len(LINES)))


# Written from the programs' format strings (origin named on each)
SOURCE = [
    # SpamdForkScaling.pm's own comment, a syslog line: "Jan 29 12:53:17 dogma spamd[18518]: prefork: child states: BI"
    ("Jan 29 12:53:17 dogma spamd[18518]: prefork: child states: BI", "spamd", 18518, "spamd", INFO,
     {"component": "prefork", "text": "child states: BI"}),
    # spamd.raw: sprintf("spamd: result: %s %2d - %s %s", …), the items in its push order (rmid,
    # bayes "%06f"), under syslog (ident spamd, "spamd: " the component)
    ("Nov 30 06:38:07 mail spamd[28417]: spamd: result: Y 15 - BAYES_99,HTML_MESSAGE,RDNS_NONE "
     "scantime=1.2,size=4567,user=vpopmail,uid=89,required_score=5.0,rhost=mx.example.net,raddr=192.0.2.7,"
     "rport=45678,mid=<abc@example.com>,rmid=<r@example.com>,bayes=1.000000,autolearn=spam autolearn_force=no",
     "spamd", 28417, "spam_result", NOTICE,
     {"spam": True, "score": 15.0, "tests": ["BAYES_99", "HTML_MESSAGE", "RDNS_NONE"], "scan_time": 1.2,
      "size": 4567, "user": "vpopmail", "uid": 89, "threshold": 5.0, "remote_host": "mx.example.net",
      "remote_ip": "192.0.2.7", "remote_port": 45678, "message_id": "abc@example.com",
      "resent_message_id": "r@example.com", "bayes": 1.0, "autolearn": "spam", "autolearn_force": "no"}),
    # the same with no test hit ("%s" of an empty list: two blanks), a negative score (%2d of -3.4),
    # no Message-ID ("(unknown)") and a plugin's item of its own
    ("spamd[7]: spamd: result: . -3 -  scantime=0.3,size=1200,user=alice,uid=1001,required_score=6.5,"
     "rhost=localhost,raddr=127.0.0.1,rport=4711,mid=(unknown),autolearn=ham autolearn_force=no,shortcircuit=no",
     "spamd", 7, "spam_result", INFO,
     {"spam": False, "score": -3.0, "tests": [], "scan_time": 0.3, "size": 1200, "user": "alice", "uid": 1001,
      "threshold": 6.5, "remote_host": "localhost", "remote_ip": "127.0.0.1", "remote_port": 4711,
      "autolearn": "ham", "autolearn_force": "no"}),
    # the form a toaster's multilog shows after its stamp (spamd's "spamd: " read as the name)
    ("@400000004c5a1b2c3a2f1e2d spamd: result: Y 15 - BAYES_99,HTML_MESSAGE scantime=1.2,size=4567,"
     "user=vpopmail,uid=89,required_score=5.0,rhost=localhost,raddr=127.0.0.1,rport=45678,"
     "mid=<abc@example.com>,bayes=1.000000,autolearn=spam",
     "spamd", None, "spam_result", NOTICE,
     {"spam": True, "score": 15.0, "tests": ["BAYES_99", "HTML_MESSAGE"], "scan_time": 1.2, "size": 4567,
      "user": "vpopmail", "uid": 89, "threshold": 5.0, "remote_host": "localhost",
      "remote_ip": "127.0.0.1", "remote_port": 45678, "message_id": "abc@example.com", "bayes": 1.0,
      "autolearn": "spam"}),
    # spamd.raw: info("spamd: $was_it_spam ($msg_score/$msg_threshold) for $current_user:$> in …")
    ("spamd[1234]: spamd: identified spam (15.0/5.0) for vpopmail:89 in 1.2 seconds, 4567 bytes.",
     "spamd", 1234, "spam_check", NOTICE,
     {"spam": True, "score": 15.0, "threshold": 5.0, "user": "vpopmail", "uid": 89, "scan_time": 1.2,
      "size": 4567}),
    # spamd.raw: "processing message $msgid aka $rmsgid for $current_user:$>" (PROCESS, a Resent-Message-ID)
    ("spamd[1234]: spamd: processing message <m@example.org> aka <r@example.org> for alice@example.org:89",
     "spamd", 1234, "spamd", INFO,
     {"component": "spamd", "text": "processing message <m@example.org> aka <r@example.org> for "
      "alice@example.org:89", "message_id": "m@example.org", "resent_message_id": "r@example.org",
      "user": "alice@example.org", "uid": 89}),
    # spamd.raw: warn("spamd: unauthorized $msg"); Logger::Stderr before 3.3 (or --log-timestamp-fmt=''):
    # "[PID] LEVEL: text" with no stamp
    ("@400000004c5a1b2c3a2f1e2d [812] warn: spamd: unauthorized connection from host.example [192.0.2.9]:5555 "
     "to port 783, fd 6", "spamd", 812, "spamd", WARNING,
     {"component": "spamd", "level": "warning", "text": "unauthorized connection from host.example "
      "[192.0.2.9]:5555 to port 783, fd 6", "remote_host": "host.example", "remote_ip": "192.0.2.9",
      "remote_port": 5555, "local_port": 783}),
    # spamd.raw: warn("spamd: timeout: $err") — "timeout:" is spamd's text, not a component
    ("@400000004c5a1b2c3a2f1e2d Nov  3 06:38:07.386 [812] error: spamd: timeout: (30 second timeout while "
     "trying to CHECK)", "spamd", 812, "spamd", ERR,
     {"component": "spamd", "level": "error", "text": "timeout: (30 second timeout while trying to CHECK)"}),
    # clamd/scanner.c: "%s: %s(%s:%llu) FOUND" (ExtendedDetectionInfo), under LogSyslog
    ("Nov 30 06:38:07 mail clamd[1234]: /var/qmail/simscan/1796020805.123456.4242/msg: "
     "Eicar-Test-Signature(44d88612fea8a8f36de82e1278abb02f:68) FOUND", "clamd", 1234, "virus_found", WARNING,
     {"virus": "Eicar-Test-Signature", "file_md5": "44d88612fea8a8f36de82e1278abb02f", "file_size": 68,
      "path": "/var/qmail/simscan/1796020805.123456.4242/msg",
      "simscan_dir": "/var/qmail/simscan/1796020805.123456.4242"}),
    # the form of a clamd line after multilog's stamp with a "clamd: " name
    ("@400000004c5a1b2c3a2f1e2d clamd: /var/qmail/simscan/1234.5678/msg: Eicar-Test-Signature FOUND",
     "clamd", None, "virus_found", WARNING,
     {"virus": "Eicar-Test-Signature", "path": "/var/qmail/simscan/1234.5678/msg",
      "simscan_dir": "/var/qmail/simscan/1234.5678"}),
    # scanner.c scanfd(): "instream(local)" over a LocalSocket; no LogTime: a bare verdict on stdout
    ("@400000004c5a1b2c3a2f1e2d instream(local): Eicar-Test-Signature FOUND", "clamd", None, "virus_found",
     WARNING, {"virus": "Eicar-Test-Signature", "path": "instream(local)"}),
    # scanner.c: "%s: %s ERROR" with cl_strerror(CL_EOPEN); LogTime's ctime day blank-padded
    ("@400000004c5a1b2c3a2f1e2d Mon Nov  3 06:38:07 2026 -> /var/qmail/simscan/1.2.3/msg: "
     "Can't open file or directory ERROR", "clamd", None, "clamd", ERR,
     {"path": "/var/qmail/simscan/1.2.3/msg", "simscan_dir": "/var/qmail/simscan/1.2.3", "scan": "error",
      "level": "error", "text": "/var/qmail/simscan/1.2.3/msg: Can't open file or directory ERROR"}),
    # scanner.c: logg(LOGG_ERROR, "thread dispatch failed\n"): logg() writes "ERROR: " before it
    ("@400000004c5a1b2c3a2f1e2d Mon Nov 30 06:38:07 2026 -> ERROR: thread dispatch failed", "clamd", None,
     "clamd", ERR, {"level": "error", "text": "thread dispatch failed"}),
    # clamd's SelfCheck (server-th.c), under syslog
    ("Nov 30 06:38:07 mail clamd[1234]: SelfCheck: Database modification detected. Forcing reload.", "clamd",
     1234, "clamd", INFO, {"text": "SelfCheck: Database modification detected. Forcing reload."}),
]


@pytest.mark.parametrize(("line", "program", "pid", "event", "sev", "fields"), SOURCE)
def test_source_format_lines(line: str, program: str, pid: int | None, event: str, sev: int,
                             fields: dict) -> None:
    d = LineParser().parse(line.encode()).to_dict()
    assert (d["program"], d["pid"], d["event"], severity(d)) == (program, pid, event, sev)
    assert _fields(d) == fields


@pytest.mark.parametrize("text", [
    "", "[12] info:", "[x] info: spamd: a", "Mon Nov 30 06:38:07 2026 ->", "FOUND", ": FOUND",
    "spamd: result: Y 9" + "9" * 5000 + " - A b", "result: Y 1 - A size=" + "9" * 5000,
    "clean message (nan/5.0) for a:1 in 0.1 seconds, 1 bytes.", "\r\n", "a: b FOUND\r",
])
def test_odd_text_never_raises(text: str) -> None:
    for fn in (parse_spamd, parse_spamd_stderr, parse_clamd, parse_clamd_log):
        got = fn(text)
        assert got is None or isinstance(got[1], dict)
    d = LineParser().parse(text.encode()).to_dict()
    assert "parse_error" not in d


def test_other_lines_are_not_taken() -> None:
    # qmail-send's and tcpserver's lines, simscan's "[PID]:" text: none of these grammars
    for text in ("new msg 12345", "tcpserver: status: 1/40", "[4321]:CLEAN (0.00/5.00):0.1s:x:1.2.3.4:a@b:c@d",
                 "Mon Nov 30 06:38:07 2026 x> not clamd", "a line that ends in FOUND"):
        assert parse_spamd_stderr(text) is None
        assert parse_clamd_log(text) is None


@pytest.mark.parametrize(("line", "text"), [
    # another program's, by syslog: the text after its tag is what the grammars see
    ("Nov 30 06:00:00 mx myapp[12]: user lookup: NOT FOUND", "user lookup: NOT FOUND"),
    ("Nov 30 06:00:00 mx ldapd: entry: NOT FOUND", "entry: NOT FOUND"),
    # under multilog, with its own name: the whole line
    ("myapp[12]: config: Foo.Bar FOUND", "myapp[12]: config: Foo.Bar FOUND"),
    ("error: key: NOT FOUND", "error: key: NOT FOUND"),
])
def test_another_program_s_line_ending_in_found_is_no_virus(line: str, text: str) -> None:
    # a bare "PATH: NAME FOUND" names no program: any line ending so was clamd's
    # virus_found (a warning, program clamd, virus "NOT")
    d = LineParser().parse(line.encode()).to_dict()
    assert d["event"] == "unparsed" and d["program"] != "clamd"
    assert parse_clamd_log(text) is None


def test_a_bare_verdict_is_still_clamd_s() -> None:
    # indimail's qhpsi log (README.qhpsi) and clamd's stdout: a signature name has "." or "-"
    for text, virus in (("/var/indimail/queue/queue3/mess/4/89439: Worm.Klez.H FOUND", "Worm.Klez.H"),
                        ("/tmp/x/msg.eicar: Eicar-Test-Signature FOUND", "Eicar-Test-Signature"),
                        ("./relative path/a b: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1")):
        got = parse_clamd_log(text)
        assert got is not None and got[0] == "virus_found" and got[1]["virus"] == virus
        assert got[1]["path"] == text.rsplit(": ", 1)[0]
