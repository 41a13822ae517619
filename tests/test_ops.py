"""Operations: what an administrator's environment does to a running shipper."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port, require_binary, without_root_powers
from rsyslog_util import Rsyslog
from test_daemon import ROOT, _seqs, _stop

DIRS = 80


def test_more_log_directories_than_the_soft_open_files_limit_all_ship(tmp_path):
    """Under daemontools the soft limit is svscan's (often 1024), the hard one higher: a
    directory is an open ``current``, so a glob over more directories than the soft
    limit starved every socket and file and shipped nothing."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= 4 * DIRS, \
        f"the hard open files limit ({hard}) is below what this test needs ({4 * DIRS}): raise it"
    multilog = require_binary("multilog")
    logs = tmp_path / "log"
    logs.mkdir()
    for i in range(DIRS):
        subprocess.run([multilog, "t", str(logs / f"d{i}")], input=f"status: seq {i}\n".encode(),
                       check=True, timeout=10)
    # a soft limit below the directories, the hard one above
    seqs, said = _ship(tmp_path, f"{logs}/*", DIRS, ["sh", "-c", f'ulimit -Sn {DIRS // 2} && exec "$@"', "sh"])
    assert sorted(seqs) == list(range(DIRS)), said[-2000:]


def _ship(tmp_path: Path, paths: str, n: int, wrap: list[str]) -> tuple[list[int], str]:
    """``shipper run`` started by the command ``wrap`` (that sets a limit), following
    ``paths`` from their start into real rsyslog until ``n`` seqs arrive (bounded);
    the seqs arrived and the shipper's log, after a SIGTERM it must exit 0 on."""
    rs = Rsyslog(tmp_path / "rsyslog", ("tcp",))
    rs.start()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
drain_timeout = "2s"
[metrics]
listen = "127.0.0.1:{free_port()}"
[tracking]
enabled = false
[sources.all]
type = "multilog"
paths = ["{paths}"]
start_position = "all"
[sinks.siem]
type = "syslog"
protocol = "tcp"
host = "127.0.0.1"
port = {rs.ports["tcp"]}
""")
    log = open(tmp_path / "shipper.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([*wrap, sys.executable, "-m", "shipper", "run", "-c", str(cfg)],
                            stdout=log, stderr=log, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while len(set(_seqs(rs))) < n and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        seqs = _seqs(rs)
        assert proc.poll() is None
        assert _stop(proc, signal.SIGTERM) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
        rs.stop()
        log.close()
    return seqs, (tmp_path / "shipper.log").read_text()


@pytest.mark.parametrize("what", ["checkpoints", "tracking"])
def test_state_files_of_another_user_refuse_the_start_in_one_line(what):
    """After an upgrade or a run as root: checkpoints another user owns were taken for
    missing (every line read again from start_position, and never saved again), and the
    open mails' state was set aside as if corrupt. Refused instead, naming the path."""
    prefix = without_root_powers()
    multilog = require_binary("multilog")
    top = Path(tempfile.mkdtemp(prefix="shipper-ops-", dir="/tmp"))
    try:
        top.chmod(0o755)
        logdir = top / "log"
        subprocess.run([multilog, "t", str(logdir)], input=b"status: seq 0\n", check=True, timeout=10)
        state = top / "state"
        (state / "checkpoints").mkdir(parents=True)
        cp = state / "checkpoints" / "send.json"
        cp.write_text('{"schema":1,"sources":{}}')
        (state / "tracking.json").write_text("{}")
        cfg = top / "shipper.toml"
        cfg.write_text(f"""
state_dir = "{state}"
[metrics]
enabled = false
[sources.send]
type = "multilog"
paths = ["{logdir}"]
start_position = "all"
[sinks.out]
type = "file"
path = "{top / 'out.ndjson'}"
""")
        bad = state / "checkpoints" if what == "checkpoints" else state / "tracking.json"
        if prefix:  # root: the one part left to another user (an upgrade, a run as root)
            os.chown(bad, pwd.getpwnam("nobody").pw_uid, -1)
            bad.chmod(0o700 if bad.is_dir() else 0o600)
        else:
            bad.chmod(0o500 if bad.is_dir() else 0o000)
        r = subprocess.run([*prefix, sys.executable, "-m", "shipper", "run", "-c", str(cfg)],
                           capture_output=True, text=True, timeout=30, cwd="/")
        assert r.returncode == 2, r.stderr
        lines = r.stderr.splitlines()
        # (a directory another user owns is refused before it is tried: they could swap its files)
        assert len(lines) == 1 and (lines[0].startswith(f"ERROR shipper: cannot start: {bad}: Permission denied")
                                    or lines[0].startswith(f"ERROR shipper: cannot start: {bad} belongs to nobody")), \
            r.stderr
        assert cp.exists() and (state / "tracking.json").exists()  # nothing set aside
        assert not (state / "tracking.json.corrupt").exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize(("a", "b", "named"), [
    ("{d}/*", "{d}/send", "{d}/send"),  # a glob and one of its directories
    ("{d}/send", "{d}/send/", "{d}/send"),  # one directory written two ways
])
def test_two_sources_following_one_log_is_a_config_error(tmp_path, a, b, named):
    """Each line was read and sent twice, each source with its own checkpoint."""
    from shipper.config import ConfigError, load_config_text

    d = tmp_path / "log"
    (d / "send").mkdir(parents=True)
    (d / "smtpd").mkdir()
    text = f"""
state_dir = "{tmp_path / 'state'}"
[sources.all]
type = "multilog"
paths = ["{a.format(d=d)}"]
[sources.send]
type = "multilog"
paths = ["{b.format(d=d)}"]
[sinks.out]
type = "stdout"
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert info.value.errors == [f'sources.send.paths[0]: {b.format(d=d)} names {named.format(d=d)}, which '
                                 'source "all" follows too: every line would be sent twice; follow a log '
                                 'in one source only']
    # apart, both are fine
    load_config_text(text.replace(b.format(d=d), str(tmp_path / "other")))


def test_two_globs_matching_one_directory_now_is_a_warning_not_a_refused_start(tmp_path):
    """Two globs meet only on what the disk holds: a directory made later (a service
    added) would make the next restart a config error, refused again at every restart
    by supervise, nothing shipped; their lines go twice with the same event ids."""
    from shipper.config import load_config_text

    d = tmp_path / "log"
    (d / "smtpd").mkdir(parents=True)
    text = f"""
state_dir = "{tmp_path / 'state'}"
[sources.all]
type = "multilog"
paths = ["{d}/*"]
[sources.send]
type = "multilog"
paths = ["{d}/s*"]
[sinks.out]
type = "stdout"
"""
    (d / "smtpd").rmdir()
    assert not [w for w in load_config_text(text).warnings if "follows too" in w]
    (d / "send").mkdir()
    assert [w for w in load_config_text(text).warnings if "follows too" in w] == [
        f'sources.send.paths[0]: {d}/s* names {d}/send now, which source "all" follows too: '
        "its lines are sent twice (with the same event ids); follow a log in one source only"]


def test_a_file_beside_a_multilog_glob_s_directories_is_no_overlap(tmp_path):
    """A multilog glob follows directories only (the follower leaves out the files it
    matches): a file source for a syslog file among the log directories was refused as
    following one log twice, and the daemon did not start."""
    from shipper.config import ConfigError, load_config_text

    d = tmp_path / "log"
    (d / "send").mkdir(parents=True)
    (d / "maillog").write_text("x\n")
    text = f"""
state_dir = "{tmp_path / 'state'}"
[sources.qmail]
type = "multilog"
paths = ["{d}/*"]
[sources.syslog]
type = "file"
paths = ["{d}/maillog"]
[sinks.out]
type = "stdout"
"""
    load_config_text(text)
    load_config_text(text.replace(f'"{d}/maillog"', f'"{d}/mail*"'))  # two globs
    # one glob for both: the file source takes the files, the multilog one the directories
    load_config_text(text.replace(f'"{d}/maillog"', f'"{d}/*"'))
    # a file source's glob does follow files: two of them over one file still overlap
    with pytest.raises(ConfigError):
        load_config_text(text.replace('"multilog"', '"file"'))


@pytest.mark.parametrize("other", ["{svc}/*/log/main", "{svc}/qmail-send/log/main"])
def test_two_sources_following_one_log_through_a_symlink_are_warned_of(tmp_path, other):
    """Life with qmail links supervise/qmail-send/log/main to /var/log/qmail/send: a
    source by the link and one by the target read every line twice, with no word."""
    from shipper.config import load_config_text

    d = tmp_path / "log"
    (d / "send").mkdir(parents=True)
    svc = tmp_path / "svc"
    (svc / "qmail-send" / "log").mkdir(parents=True)
    (svc / "qmail-send" / "log" / "main").symlink_to(d / "send")
    text = f"""
state_dir = "{tmp_path / 'state'}"
[sources.all]
type = "multilog"
paths = ["{d}/*"]
[sources.supervised]
type = "multilog"
paths = ["{other.format(svc=svc)}"]
[sinks.out]
type = "stdout"
"""
    (w,) = [w for w in load_config_text(text).warnings if "follows too" in w]
    assert w.startswith("sources.supervised.paths[0]: ") and \
        f'names {d / "send"} now, which source "all" follows too' in w
    (svc / "qmail-send" / "log" / "main").unlink()
    (svc / "qmail-send" / "log" / "main").mkdir()
    assert not [w for w in load_config_text(text).warnings if "follows too" in w]


def test_glob_matches_lists_what_glob_lists(tmp_path):
    """glob's * leaves out hidden names: the overlap check took a hidden directory named
    beside a glob (a log kept apart as .old) for one the glob follows, a config error,
    and a removed source's checkpoint of it went to the glob's source."""
    import glob as globmod

    from shipper.config import glob_matches

    for name in ("send", ".old", "..x"):
        (tmp_path / name).mkdir()
    for pat in ("*", ".*", "?end", "[.]old", "s*"):
        listed = set(globmod.glob(str(tmp_path / pat)))
        for name in ("send", ".old", "..x"):
            p = str(tmp_path / name)
            assert glob_matches(p, str(tmp_path / pat)) == (p in listed), (pat, name)


def _catches_sighup(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_a_sighup_while_starting_is_a_reload_not_the_end(tmp_path):
    """svc -h just after svc -u: before the daemon's handlers were in place (imports,
    config, buffers: over 0.6 s measured) SIGHUP's default action ended the process.
    Here the start is held in the config's loading by a secret read from a FIFO."""
    import threading

    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    logdir = tmp_path / "log"
    (logdir).mkdir()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[metrics]
enabled = false
[tracking]
enabled = false
[sources.send]
type = "multilog"
paths = ["{logdir}"]
[sinks.siem]
type = "http"
url = "http://127.0.0.1:{free_port()}/"
[sinks.siem.auth]
type = "bearer"
token_file = "{fifo}"
""")
    shlog = tmp_path / "shipper.log"
    log = open(shlog, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "shipper", "run", "-c", str(cfg)],
                            stdout=log, stderr=log, cwd=ROOT)

    def feed(times: int) -> None:  # the token, once per load of the config
        for _ in range(times):
            fd = os.open(fifo, os.O_WRONLY)  # waits for the reader
            os.write(fd, b"secret-token\n")
            os.close(fd)
            while True:  # till that reader is gone: the next write is for the next load
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:  # ENXIO: no reader
                    break
                time.sleep(0.01)

    feeder = threading.Thread(target=feed, args=(2,), daemon=True)  # start + reload
    try:
        # a loaded machine takes seconds to get there (5 s were not always enough)
        deadline = time.monotonic() + 30
        while not _catches_sighup(proc.pid) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert _catches_sighup(proc.pid), "SIGHUP not caught while the config loads"
        os.kill(proc.pid, signal.SIGHUP)  # the config is not loaded yet: it waits for the token
        time.sleep(0.3)
        assert proc.poll() is None, f"ended by the SIGHUP while starting (rc {proc.returncode})"
        feeder.start()
        deadline = time.monotonic() + 30
        while "reloaded" not in shlog.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, shlog.read_text()
            time.sleep(0.05)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
        log.close()
        if feeder.is_alive():  # failed early: let a feeder waiting for a reader go
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))


def test_a_hard_open_files_limit_below_the_directories_is_said_at_start(tmp_path):
    """Raising the soft limit cannot pass the hard one: with more directories than it
    allows, some fail with 'Too many open files' one by one; say it once, at start."""
    logs = tmp_path / "log"
    for i in range(DIRS):
        (logs / f"d{i}").mkdir(parents=True)
        (logs / f"d{i}" / "current").write_bytes(b"")
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
drain_timeout = "1s"
[tracking]
enabled = false
[sources.all]
type = "multilog"
paths = ["{logs}/*"]
[sinks.out]
type = "file"
path = "{tmp_path / 'out.ndjson'}"
""")
    log = tmp_path / "shipper.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", "-c", f'ulimit -n {DIRS + 20} && exec "$0" -m shipper run -c "$1"',
                                 sys.executable, str(cfg)], stdout=out, stderr=out, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while b"started" not in log.read_bytes() and time.monotonic() < deadline \
                    and proc.poll() is None:
                time.sleep(0.1)
        finally:
            _stop(proc, signal.SIGTERM)
    said = [ln for ln in log.read_text().splitlines() if "log directories to follow" in ln]
    assert len(said) == 1 and f"{DIRS} log directories" in said[0] and "LimitNOFILE" in said[0], \
        log.read_text()[-2000:]


def test_the_directories_counted_against_the_limit_are_those_followed(tmp_path):
    """A multilog glob over /var/log/qmail matches qmail-send's own archives too: those
    are not followed (and hold nothing open)."""
    from shipper.config import load_config_text
    from shipper.daemon import followed_now

    logs = tmp_path / "log"
    for i in range(3):
        (logs / f"d{i}").mkdir(parents=True)
    for i in range(5):
        (logs / f"@40000000659340620000000{i}.s").write_bytes(b"")
    (tmp_path / "mail.log").write_bytes(b"")
    config = load_config_text(f"""
state_dir = "{tmp_path / 'state'}"
[sources.ml]
type = "multilog"
paths = ["{logs}/*"]
[sources.syslog]
type = "file"
paths = ["{tmp_path}/*.log"]
[sinks.out]
type = "stdout"
""", "shipper.toml")
    assert followed_now(config) == 3 + 1


@pytest.mark.slow
def test_a_file_size_limit_below_a_batch_and_a_segment_ships_every_line(tmp_path):
    """A file size limit on the shipper (ulimit -f in a run script, prlimit --fsize) of
    400 kB: below one catch-up batch (1,024 of these lines: 600 kB in the buffer) and
    below segment_bytes. Found by fault injection: every append failed with EFBIG, was
    retried whole each second for good, and not one line was shipped, the sink up."""
    multilog = require_binary("multilog")
    prlimit = require_binary("prlimit")
    logdir = tmp_path / "log"
    n = 6000
    text = "".join(f"status: local 0/10 remote 1/20 seq {i} {'x' * 40}\n" for i in range(n))
    subprocess.run([multilog, "t", "s4000000", str(logdir)], input=text.encode(), check=True, timeout=30)
    seqs, said = _ship(tmp_path, str(logdir), n, [prlimit, "--fsize=400000"])
    assert sorted(set(seqs)) == list(range(n)), said[-2000:]
    segs = list((tmp_path / "state" / "buffer" / "siem").glob("*.seg"))
    assert segs and all(s.stat().st_size <= 400_000 for s in segs)


def _file_seqs(path: Path) -> tuple[list[int], int]:
    """The seqs of the line records a file sink wrote, and its gap records."""
    seqs, gaps = [], 0
    if path.exists():
        for line in path.read_bytes().split(b"\n")[:-1]:  # whole lines: the sink may be writing
            rec = json.loads(line)
            if rec.get("event") == "gap":
                gaps += 1
            elif (m := re.search(r"seq (\d+)", rec.get("message", ""))):
                seqs.append(int(m.group(1)))
    return seqs, gaps


def _file_sink_config(tmp_path: Path, logdir: Path, out: Path, more: str = "") -> Path:
    """A config following ``logdir`` from its start into the file sink ``out``."""
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
drain_timeout = "2s"
[metrics]
enabled = false
[tracking]
enabled = false
[sources.send]
type = "multilog"
paths = ["{logdir}"]
start_position = "all"
[sinks.out]
type = "file"
path = "{out}"
{more}""")
    return cfg


def _run_logged(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    """``shipper run -c cfg``, its output into ``log``."""
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "shipper", "run", "-c", str(cfg)],
                                stdout=f, stderr=f, cwd=ROOT)


def _log_lines(multilog: str, logdir: Path, first: int, n: int) -> None:
    """Lines seq ``first``.. through multilog (which appends to its current)."""
    text = "".join(f"delivery {i}: success: did_0+0+1/ seq {i}\n" for i in range(first, first + n))
    subprocess.run([multilog, "t", str(logdir)], input=text.encode(), check=True, timeout=10)


def _wait_file_seqs(path: Path, n: int, proc: subprocess.Popen[bytes], timeout: float) -> tuple[list[int], int]:
    deadline = time.monotonic() + timeout
    got = _file_seqs(path)
    while len(got[0]) < n and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        got = _file_seqs(path)
    return got


@pytest.mark.slow
def test_a_current_unreadable_at_start_is_waited_for_at_its_offset(tmp_path):
    """current made unreadable (chmod 000, a wrong umask or owner after a service was
    re-created) while the shipper is stopped: at the start it was taken for deleted ('gap:
    current: deleted before it was read to the end'), and once readable read again from
    its first byte (1,501 duplicates of 6,000 in the fault round). It is waited for, and
    read on from the checkpoint's offset once it can be opened."""
    prefix = without_root_powers()
    multilog = require_binary("multilog")
    logdir, out = tmp_path / "log", tmp_path / "out.ndjson"
    cfg = _file_sink_config(tmp_path, logdir, out)

    def log_lines(first: int, n: int) -> None:
        _log_lines(multilog, logdir, first, n)

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / "shipper.log", "ab") as log:
            return subprocess.Popen([*prefix, sys.executable, "-m", "shipper", "run", "-c", str(cfg)],
                                    stdout=log, stderr=log, cwd=ROOT)

    log_lines(0, 300)
    proc = start()
    try:
        seqs, _ = _wait_file_seqs(out, 300, proc, 30)
        assert _stop(proc) == 0 and len(seqs) == 300
        log_lines(300, 200)
        (logdir / "current").chmod(0)
        proc = start()
        said = ""
        deadline = time.monotonic() + 20
        while "cannot open current" not in said and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            said = (tmp_path / "shipper.log").read_text()
        assert "cannot open current: Permission denied; waiting for it (to read on from offset" in said, said
        assert _file_seqs(out) == (list(range(300)), 0)
        # readable again, in a directory no one writes to (the watcher's safety poll looks)
        (logdir / "current").chmod(0o644)
        seqs, gaps = _wait_file_seqs(out, 500, proc, 20)
        assert proc.poll() is None
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
    said = (tmp_path / "shipper.log").read_text()
    assert (seqs, gaps) == (list(range(500)), 0), said
    assert "gap" not in said and "current can be opened again" in said, said


# Run as: python -c DNS_JAIL PIDFILE CMD...: a name server on 127.0.0.1:53 that takes
# every query and never answers, then CMD (its pid in PIDFILE), in the caller's namespaces
DNS_JAIL = r"""
import fcntl, socket, struct, subprocess, sys
# the new network namespace's loopback is down: up (SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP),
# here rather than by iproute2's "ip", which a minimal Debian image lacks
ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH14x", fcntl.ioctl(ctl, 0x8913, struct.pack("16sH14x", b"lo", 0)))[1]
fcntl.ioctl(ctl, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 53))
tcp = socket.socket()
tcp.bind(("127.0.0.1", 53))
tcp.listen(64)
proc = subprocess.Popen(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(proc.pid))
sys.exit(proc.wait())
"""


@pytest.mark.slow
def test_a_name_server_that_does_not_answer_stalls_no_other_sink_nor_the_stop(tmp_path):
    """Sinks named by host, and a name server that does not answer (30 s a look-up).
    asyncio's look-up runs in the default executor, which a timeout does not free: each
    retry of each sink took one more thread, the file sink, whose writes need one, got
    none (70 s without a line in the fault round) and the stop waited for the look-ups
    (36 s with a 5 s drain). Run in a user, mount and network namespace of its own, with
    its own resolv.conf."""
    multilog = require_binary("multilog")
    unshare = require_binary("unshare")
    logdir, out = tmp_path / "log", tmp_path / "out.ndjson"
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    far = "".join(f"""
[sinks.far{i}]
type = "{'http' if i == 0 else 'syslog'}"
{'url = "http://siem0.test:8123/"' if i == 0 else f'protocol = "tcp"{chr(10)}host = "siem{i}.test"{chr(10)}port = 6514'}
connect_timeout = "1s"
""" for i in range(6)) + """
[sinks.far6]
type = "gelf"
transport = "tcp"
host = "siem6.test"
port = 6514
connect_timeout = "1s"
"""
    cfg = _file_sink_config(tmp_path, logdir, out, far)

    def log_lines(first: int, n: int) -> None:
        _log_lines(multilog, logdir, first, n)

    log_lines(0, 200)
    pidfile = tmp_path / "pid"
    with open(tmp_path / "shipper.log", "wb") as log:
        jail = subprocess.Popen(
            [unshare, "-r", "-m", "-n", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv), sys.executable, "-c", DNS_JAIL, str(pidfile),
             sys.executable, "-m", "shipper", "run", "-c", str(cfg)], stdout=log, stderr=log, cwd=ROOT)
    try:
        seqs, _ = _wait_file_seqs(out, 200, jail, 30)
        assert len(seqs) == 200, (tmp_path / "shipper.log").read_text()
        time.sleep(8)  # the sinks retry their look-ups meanwhile (a try each 1 s and its backoff)
        log_lines(200, 200)
        # a deadline for a loaded machine, well below the fault's 70 s without a line
        seqs, _ = _wait_file_seqs(out, 400, jail, 30)
        assert sorted(seqs) == list(range(400)), f"{len(seqs)} of 400 in the file sink"
        t0 = time.monotonic()
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        assert jail.wait(30) == 0
        # the drain's 2 s and the closes, not the 30 s look-ups (36 s before the fix);
        # room for a loaded CI machine
        assert time.monotonic() - t0 < 12
    finally:
        if jail.poll() is None:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
            jail.wait(10)
    said = (tmp_path / "shipper.log").read_text()
    assert "siem1.test:6514" not in said  # nothing got as far as a connect
    for i in range(1, 7):  # one line each, one wording: said once (GELF: as syslog)
        assert said.count(f"sink far{i}: siem{i}.test: cannot resolve the host name: "
                          "Temporary failure in name resolution (retrying") == 1, said
    assert said.count("sink far0: http://siem0.test:8123/: cannot resolve the host name: "
                      "Temporary failure in name resolution (retrying") == 1, said


def _voluntary_switches(pid: int) -> int:
    """Of every thread of ``pid``: each wake from a sleep is one."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))
    return total


def _tracking_daemon(tmp_path: Path, lines: int) -> tuple[subprocess.Popen[bytes], str, Path, Path, Path]:
    """A daemon with tracking on (saves every 1 s) into a file sink, once it has shipped
    the first ``lines`` lines: (process, multilog, log directory, output, config)."""
    multilog = require_binary("multilog")
    logdir, out = tmp_path / "log", tmp_path / "out.ndjson"
    cfg = _file_sink_config(tmp_path, logdir, out)
    cfg.write_text(cfg.read_text().replace("[tracking]\nenabled = false", '[tracking]\nenabled = true\nsave_interval = "1s"'))
    _log_lines(multilog, logdir, 0, lines)
    with open(tmp_path / "shipper.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "shipper", "run", "-c", str(cfg)],
                                stdout=log, stderr=log, cwd=ROOT)
    seqs, _ = _wait_file_seqs(out, lines, proc, 30)
    if len(seqs) != lines:
        _stop(proc, signal.SIGKILL)
        raise AssertionError(f"{len(seqs)} of {lines} lines shipped")
    return proc, multilog, logdir, out, cfg


@pytest.mark.slow
def test_an_idle_daemon_sleeps_and_writes_nothing(tmp_path):
    """Found measuring a daemon with nothing to read: 1.3 % of a core, its event loop
    woken ~25 times a second (the syncer's 50 ms clock, each sink's 200 ms one), each
    buffer's flusher thread 10 times a second, and the tracking state written and
    fsynced every save_interval, unchanged. An agent beside a mail server that sleeps
    most of the day must cost it nothing then. Counted as the threads' voluntary
    context switches (each wake is one), not as CPU time."""
    state = tmp_path / "state" / "tracking.json"
    proc, multilog, logdir, out, _ = _tracking_daemon(tmp_path, 50)
    try:
        deadline = time.monotonic() + 20
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        # the save with the last checkpoints, then nothing more to do: waited for as the
        # state left 3 s unchanged (a fixed 3 s assumed that save done by then)
        saved, quiet_since = state.stat().st_mtime_ns, time.monotonic()
        deadline = quiet_since + 30
        while time.monotonic() - quiet_since < 3:
            assert time.monotonic() < deadline, "the tracking state was written again and again with nothing read"
            time.sleep(0.1)
            if state.stat().st_mtime_ns != saved:
                saved, quiet_since = state.stat().st_mtime_ns, time.monotonic()
        before = _voluntary_switches(proc.pid)
        time.sleep(10)
        woken = _voluntary_switches(proc.pid) - before
        assert state.stat().st_mtime_ns == saved, "the tracking state was written again with nothing read"
        # wakes that remain: each sink's 1 s safety clock, the follower's rescan and
        # the watcher's safety poll (5 s each): 12-20 in 10 s here. Before: ~460 (the loop's
        # 20 a second, the buffer flusher's 10), then ~30-40 with the checkpoint saver's
        # 0.5 s clock
        assert woken < 25, f"{woken} wakes in 10 s"
        _log_lines(multilog, logdir, 50, 10)  # and it wakes for work at once
        seqs, _ = _wait_file_seqs(out, 60, proc, 10)
        assert sorted(seqs) == list(range(60))
        t0 = time.monotonic()
        assert _stop(proc) == 0
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
    assert state.stat().st_mtime_ns > saved  # the stop saved what the last lines changed


@pytest.mark.slow
def test_with_tracking_a_failed_checkpoint_write_is_tried_again_without_new_lines(tmp_path):
    """With tracking on the checkpoints are written with the tracking state. A save made
    only when lines were fed (so an idle daemon writes nothing) gave up a checkpoint
    whose write failed until the next line came: a quiet log then kept its old
    position, and a restart sent again what had been read (found by the review of the
    idle change). The checkpoint directory is a plain file for a while (root ignores
    permissions)."""
    cps = tmp_path / "state" / "checkpoints"
    proc, multilog, logdir, out, cfg = _tracking_daemon(tmp_path, 20)
    try:
        deadline = time.monotonic() + 20
        while not any(cps.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(cps)
        cps.write_text("not a directory")
        _log_lines(multilog, logdir, 20, 20)
        seqs, _ = _wait_file_seqs(out, 40, proc, 10)
        assert sorted(seqs) == list(range(40))
        time.sleep(3)  # saves due, and failing
        cps.unlink()
        deadline = time.monotonic() + 10
        while not any(cps.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(cps.glob("*.json")), (tmp_path / "shipper.log").read_text()
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
    # the restart reads nothing again
    with open(tmp_path / "shipper.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "shipper", "run", "-c", str(cfg)],
                                stdout=log, stderr=log, cwd=ROOT)
    try:
        time.sleep(3)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
    assert sorted(_file_seqs(out)[0]) == list(range(40))


def test_plain_syslog_to_a_tls_port_is_said_as_such(tmp_path):
    """A fault hunt: a plain TCP sink pointed at rsyslog's TLS port lost nothing (the
    records wait), but said only, at INFO, again and again, that "its connection went
    with records the peer had not acknowledged". Now a warning names the likely cause."""
    from conftest import wait_until
    from rsyslog_util import make_certs

    multilog = require_binary("multilog")
    certs = make_certs(tmp_path / "certs")
    r = Rsyslog(tmp_path / "rs", ("tls",), certs)
    r.start()
    logdir, out = tmp_path / "log", tmp_path / "out.ndjson"
    cfg = _file_sink_config(tmp_path, logdir, out, f"""
[sinks.siem]
type = "syslog"
protocol = "tcp"
host = "127.0.0.1"
port = {r.ports["tls"]}
""")
    _log_lines(multilog, logdir, 0, 50)
    log = tmp_path / "shipper.log"
    proc = _run_logged(cfg, log)
    try:
        # probations of 0.25, 1 and 4 s, each cut short, and the backoffs between
        wait_until("the warning", lambda: "Does it want TLS" in log.read_text(), timeout=60)
        assert r.messages("tls") == []
    finally:
        _stop(proc)
        r.stop()
    said = log.read_text()
    assert said.count('its last 3 connections went before the peer acknowledged anything') == 1, said
    assert "WARNING" in said.split("Does it want TLS")[0].splitlines()[-1]
