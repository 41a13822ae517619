"""The other loggers and super-servers, as real programs: runit's svlogd, s6's s6-log
and ipsvd's tcpsvd (Debian's packages; see .ci/run). A missing one fails the test.

* Lines go through the real logger into a directory that rotates several times;
  ``shipper parse DIR`` gives every line once, in order, at the time the logger
  wrote (checked against the stamp's own text and the wall clock), fields parsed.
* The real follower reads a live svlogd / s6-log directory at a few thousand lines a
  second while it rotates (with and without a processor), across a restart of the
  follower and a SIGKILL of the logger: nothing lost, nothing doubled.
* tcpsvd -v/-vv's lines (accepted, denied by an instructions file, the per-IP limit
  hit, children that exit non-zero or are killed) through a real multilog t parse
  into their events with every field.

busybox's tcpsvd is not here: Debian's busybox (1.35, bookworm) is built without
the applet; its lines stay tested from its source's formats (test_parsers_ucspi).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shipper.follower import Gap, LineBatch, MultilogSource
from tests.conftest import FIXTURES, await_until, free_port, require_binary, stop_process

ROOT = Path(__file__).resolve().parent.parent
TAI_UTC_NOW = 37  # TAI - UTC since 2017-01-01; daemontools labels carry 10 of it
ZONE = "Asia/Kolkata"  # +05:30 all year: a local time no UTC reading can pass for


def mail_lines(n: int) -> list[bytes]:
    """qmail-send and tcpserver lines; line i carries i in a field of its event."""
    out = []
    for i in range(n):
        k = i % 4
        if k == 0:
            out.append(b"new msg %d" % (100000 + i))
        elif k == 1:
            out.append(b"info msg %d: bytes %d from <m%06d@example.org> qp %d uid 1000"
                       % (100000 + i, 1000 + i, i, 20000 + i))
        elif k == 2:
            out.append(b"tcpserver: pid %d from 127.0.0.%d" % (30000 + i, 1 + i % 200))
        else:
            out.append(b"tcpserver: ok %d mx.example.org:127.0.0.1:25 :127.0.0.%d::%d"
                       % (30000 + i, 1 + i % 200, 40000 + i))
    return out


def index_of(rec: dict) -> int:
    """Which line a record is, from its parsed fields (and check them)."""
    ev = rec["event"]
    if ev == "new_msg":
        i = rec["msg"] - 100000
        assert i % 4 == 0
    elif ev == "info_msg":
        i = rec["size"] - 1000
        assert (rec["msg"], rec["mail_from"], rec["qp"], rec["uid"]) == (
            100000 + i, f"m{i:06d}@example.org", 20000 + i, 1000)
    elif ev == "tcp_pid":
        i = rec["conn_pid"] - 30000
        assert rec["program"] == "tcpserver" and rec["remote_ip"] == f"127.0.0.{1 + i % 200}"
    else:
        assert ev == "tcp_ok", rec
        i = rec["remote_port"] - 40000
        assert (rec["conn_pid"], rec["remote_ip"], rec["local_ip"], rec["local_port"],
                rec["local_host"]) == (30000 + i, f"127.0.0.{1 + i % 200}", "127.0.0.1", 25,
                                       "mx.example.org")
    return i


def shipper_parse(*args: str, tz: str = "UTC", stdin: bytes | None = None) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TZ": tz}
    out = subprocess.run([sys.executable, "-m", "shipper", "parse", *args], env=env, input=stdin,
                         capture_output=True, timeout=60, check=True).stdout
    return [json.loads(ln) for ln in out.splitlines()]


def label_unix_ns(label: str, tai: bool) -> int:
    v = int(label[1:25], 16)
    return ((v >> 32) - 2**62 - 10 - (TAI_UTC_NOW - 10 if tai else 0)) * 10**9 + (v & 0xFFFFFFFF)


def stamp_ns(text: str, zone: dt.tzinfo, digits: int) -> int:
    """``YYYY-MM-DD?HH:MM:SS.fffff…`` read in ``zone``, to the nanosecond."""
    whole = dt.datetime.strptime(text[:19].replace("_", " ").replace("T", " "),
                                 "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    return int(whole.timestamp()) * 10**9 + int(text[20:20 + digits]) * 10**(9 - digits)


# (program, options) → how the stamp in front of the text reads
CASES = {
    "svlogd -t": ("svlogd", ["-t"]),
    "svlogd -tt": ("svlogd", ["-tt"]),
    "svlogd -ttt": ("svlogd", ["-ttt"]),
    "s6-log t": ("s6-log", ["t"]),
    "s6-log T": ("s6-log", ["T"]),
    "s6-log t T": ("s6-log", ["t", "T"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_real_logger_directory_parses_every_line_at_its_time(tmp_path, case):
    from zoneinfo import ZoneInfo

    program, opts = CASES[case]
    binary = require_binary(program)
    d = tmp_path / "log"
    lines = mail_lines(1600)
    # The logger runs in a zone that is not UTC: a stamp in local time shows it
    env = {**os.environ, "TZ": ZONE}
    if program == "svlogd":
        d.mkdir()
        (d / "config").write_text("s4096\nn200\n")  # svlogd's size and count live there
        cmd = [binary, *opts, str(d)]
    else:
        cmd = [binary, *opts, "s4096", "n200", str(d)]
    before = time.time_ns()
    # Several writes, so that stamps differ and rotations fall between them
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    for k in range(0, len(lines), 200):
        proc.stdin.write(b"".join(ln + b"\n" for ln in lines[k:k + 200]))
        proc.stdin.flush()
        time.sleep(0.02)
    proc.stdin.close()
    assert proc.wait(30) == 0
    after = time.time_ns()
    archives = sorted(n for n in os.listdir(d) if n.startswith("@"))
    assert len(archives) >= 3, f"{case}: rotated {len(archives)} times"
    assert all(n.endswith(".s") for n in archives)

    # s6-log's labels are true TAI: `shipper parse` takes --tai for them (the t T form
    # says so itself); svlogd's are daemontools'
    tai = program == "s6-log"
    records = shipper_parse(*(["--tai"] if opts == ["t"] else []), str(d), tz=ZONE)
    assert [index_of(r) for r in records] == list(range(len(lines))), "every line once, in order"
    zone = ZoneInfo(ZONE)
    utc = dt.UTC
    for r in records:
        raw = r["raw"]
        assert r["message"].encode() in lines[index_of(r)]
        if opts in (["-t"], ["t"], ["t", "T"]):
            assert r["time_source"] == ("tai64n_tai" if tai else "tai64n")
            want = label_unix_ns(raw[:25], tai)
            if opts == ["t", "T"]:
                # "@label YYYY-MM-DD HH:MM:SS.nnnnnnnnn  text": both stamps, one instant
                assert raw[25] == " " and raw[55:57] == "  "
                assert stamp_ns(raw[26:55], zone, 9) == want
        elif opts == ["T"]:
            # s6-log T: local time (the TZ it runs in), nine digits, two blanks
            assert r["time_source"] == "local" and raw[29:31] == "  "
            want = stamp_ns(raw[:29], zone, 9)
        else:
            # svlogd -tt / -ttt: UTC, five digits; "_" or "T" between date and time
            assert r["time_source"] == "svlogd" and raw[10] == ("_" if opts == ["-tt"] else "T")
            want = stamp_ns(raw[:25], utc, 5)
        assert r["time_unix_ns"] == want, raw
        # and that is when the logger wrote it (not 27 s ahead, not 5:30 off)
        assert before - 10**9 <= want <= after + 10**9, (case, raw, before, after)


def test_s6_log_t_without_tai_is_ahead_by_the_leap_seconds(tmp_path):
    """Documented: s6-log's `t` alone looks like multilog's; without --tai the time
    is TAI's (27 s ahead today). Its `t T` form is read right either way."""
    binary = require_binary("s6-log")
    for opts in (["t"], ["t", "T"]):
        d = tmp_path / "-".join(opts)
        subprocess.run([binary, *opts, str(d)], input=b"new msg 1\n", timeout=30, check=True)
        plain = shipper_parse(str(d))[0]
        with_tai = shipper_parse("--tai", str(d))[0]
        assert with_tai["time_source"] == "tai64n_tai"
        if opts == ["t"]:
            assert plain["time_source"] == "tai64n"
            assert plain["time_unix_ns"] - with_tai["time_unix_ns"] == (TAI_UTC_NOW - 10) * 10**9
        else:
            assert plain["time_unix_ns"] == with_tai["time_unix_ns"]
            assert plain["time_source"] == "tai64n_tai"


# -- following a live svlogd / s6-log directory ----------------------------------------

SEQ_RE = re.compile(rb"seq (\d{8}) ")


def _feed(proc: subprocess.Popen, start: int, n: int, rate: float) -> None:
    """Write seq lines start..start+n-1 at about ``rate`` a second."""
    assert proc.stdin is not None
    t0 = time.monotonic()
    for k in range(start, start + n, 50):
        proc.stdin.write(b"".join(b"seq %08d " % i + b"x" * 60 + b"\n"
                                  for i in range(k, min(k + 50, start + n))))
        proc.stdin.flush()
        ahead = (k + 50 - start) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)


def _written(d: Path, seq: int, timeout: float) -> bool:
    """Whether the logger wrote line ``seq`` (to current, or a file it rotated since)."""
    needle = b"seq %08d " % seq
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = sorted(n for n in os.listdir(d) if n.startswith("@"))[-2:]
        for name in (*names, "previous", "current"):
            try:
                if needle in (d / name).read_bytes():
                    return True
            except FileNotFoundError:
                pass
        time.sleep(0.01)
    return False


def _restart(cmd: list[str], d: Path) -> subprocess.Popen:
    """Start the logger again after a SIGKILL, as its supervisor would: again if it dies at
    once. s6-log (2.11.3.2) killed while its processor ran archives ``previous`` as @L.u,
    then ``current`` under the same stamp: "unable to finish current .u ...: File exists",
    exit 111 (seen once in ~7 kills at the test's rates, under load); the next start
    archives ``current`` under a new stamp. Ready once ``current`` is a new file (or after
    5 s: svlogd keeps an empty one)."""
    old = os.stat(d / "current").st_ino
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if os.stat(d / "current").st_ino != old:
                    return proc
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        if proc.poll() is None:
            return proc
        assert proc.returncode == 111, proc.returncode
    raise AssertionError("the logger did not start again")


FOLLOW_CASES = {
    "svlogd": ("svlogd", None),
    # svlogd hands @L.u (the rotated current) to the processor and replaces it with
    # the output as @L.s, same label: the follower used to open the gone .u when it
    # was behind, report a false gap and skip the @L.s (lines lost)
    "svlogd !cat": ("svlogd", "!cat"),
    "svlogd !gzip": ("svlogd", "!gzip"),
    "s6-log": ("s6-log", None),
    "s6-log !cat": ("s6-log", "!cat"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FOLLOW_CASES))
async def test_real_logger_followed_live_across_restarts(tmp_path, case):
    program, processor = FOLLOW_CASES[case]
    binary = require_binary(program)
    d = tmp_path / "log"
    if program == "svlogd":
        d.mkdir()
        (d / "config").write_text("s4096\nn400\n" + (processor + "\n" if processor else ""))
        cmd = [binary, "-tt", str(d)]
    else:
        cmd = [binary, "t", "s4096", "n400", *([processor] if processor else []), str(d)]
    total, part = 9000, 3000
    cp = str(tmp_path / "cp.json")
    got: list[int] = []
    gaps: list[Gap] = []

    async def follow(until: int, timeout: float) -> None:
        # a consumer that falls behind (small batches, a pause each): it reads archives,
        # not current, as a busy shipper does
        src = MultilogSource([str(d)], cp, start="all", batch_lines=20)
        try:
            async def run() -> None:
                async for it in src.batches():
                    if isinstance(it, Gap):
                        gaps.append(it)
                    else:
                        assert isinstance(it, LineBatch)
                        got.extend(int(m.group(1)) for ln in it.lines
                                   if (m := SEQ_RE.search(ln)) is not None)
                    src.commit(it.position)
                    await asyncio.sleep(0.002)
                    if got and got[-1] >= until:
                        return
            await asyncio.wait_for(run(), timeout)
        except TimeoutError:
            pass
        finally:
            await src.close()  # the checkpoint: a restart of the shipper

    loop = asyncio.get_running_loop()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    try:
        # 1) 3000 lines at 4000/s, followed; the follower stops half way
        feeding = loop.run_in_executor(None, _feed, proc, 0, part, 4000.0)
        await follow(part // 2, 20)
        await feeding
        # 2) the logger is killed once it wrote them all (current is left as it was:
        #    its next start makes it @….u) and started again; 3000 more lines while
        #    the follower is down
        assert await loop.run_in_executor(None, _written, d, part - 1, 10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = await loop.run_in_executor(None, _restart, cmd, d)
        await loop.run_in_executor(None, _feed, proc, part, part, 4000.0)
        # 3) the follower starts again from its checkpoint, 3000 more lines meanwhile
        feeding = loop.run_in_executor(None, _feed, proc, 2 * part, total - 2 * part, 4000.0)
        await follow(total - 1, 40)
        await feeding
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        stop_process(proc, 10)
    names = os.listdir(d)
    assert any(n.endswith(".u") for n in names), "the kill left a .u archive"
    assert not gaps, [(g.file, g.reason) for g in gaps]
    assert got == list(range(total)), (
        f"{len(got)} lines, {len(set(got))} distinct; missing "
        f"{sorted(set(range(total)) - set(got))[:5]}")


def test_svlogd_rotating_between_the_stat_of_current_and_the_listing_is_no_gap(tmp_path, monkeypatch):
    """Met once by the live svlogd !gzip test above, on a loaded machine: svlogd rotated
    current (to @L.u, then its processor's @L.s, a new inode; the .u unlinked) between
    the follower's stat of current and its listing of the directory. That listing had
    the old current and its archive both; the next took the old current for gone
    unarchived: a gap "at least 3100 bytes lost", though every line was read from the
    .s. The rotation is made here, by hand as svlogd does it, at that very moment."""
    import gzip

    import shipper.follower as follower

    def label(t: int) -> str:
        return f"@4000000060000000{t:08x}"

    def lines(t: int, seqs: range) -> bytes:
        return b"".join(b"%s n%d\n" % (label(t).encode(), i) for i in seqs)

    d = tmp_path / "log"
    d.mkdir()
    for k in range(2):  # the follower is behind: two archives to read before current
        (d / f"{label(10 + k)}.s").write_bytes(lines(10 + k, range(k * 10, k * 10 + 10)))
    (d / "current").write_bytes(lines(20, range(20, 30)))
    f = follower.MultilogFollower(str(d), None, start="all", batch_lines=5)
    items = f.poll(1)
    real_raw_entry = follower._raw_entry
    rotated: list[str] = []

    def stat_then_rotate(directory: str, name: str) -> Any:
        entry = real_raw_entry(directory, name)
        ino = os.stat(d / "current").st_ino
        if (name == "current" and not rotated and sys._getframe(1).f_code.co_name == "_observe_once"
                and f.listing.current is not None and f.listing.current.ident[1] == ino
                and (f.reader is None or f.reader.ident[1] != ino)):  # listed, not being read
            u, t, s = (d / f"{label(30)}{ext}" for ext in (".u", ".t", ".s"))
            os.rename(d / "current", u)
            (d / "current").write_bytes(lines(40, range(30, 35)))  # svlogd's new current
            t.write_bytes(gzip.compress(u.read_bytes()))  # its processor, done at once
            os.rename(t, s)
            u.unlink()
            rotated.append(name)
        return entry

    monkeypatch.setattr(follower, "_raw_entry", stat_then_rotate)
    for _ in range(50):
        got = f.poll(1)
        items += got
        if not got and rotated:
            break
    if f.reader is not None:
        f.reader.close()
    assert rotated
    assert not [(g.file, g.reason) for g in items if isinstance(g, Gap)]
    assert [int(ln.rsplit(b" n", 1)[1]) for it in items if isinstance(it, LineBatch)
            for ln in it.lines] == list(range(35))


# -- ipsvd's tcpsvd --------------------------------------------------------------------

CHILD = r"""
import os, signal, sys, time
cmd = sys.stdin.readline().strip()
sys.stdout.write("got " + cmd + "\n")
sys.stdout.flush()
if cmd == "exit3":
    sys.exit(3)
if cmd == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if cmd == "sleep":
    time.sleep(1.0)
"""


def _connect(port: int, cmd: str, src: str = "127.0.0.1") -> tuple[int, bytes]:
    """One connection from ``src``: (its local port, what came back)."""
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(cmd.encode() + b"\n")
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        return s.getsockname()[1], data


def _wait_for(path: Path, needle: bytes, timeout: float, count: int = 1) -> bytes:
    """``path``'s bytes once they hold ``needle`` ``count`` times (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        data = path.read_bytes() if path.exists() else b""
        if data.count(needle) >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.02)


def test_real_ipsvd_tcpsvd_lines_through_multilog(tmp_path):
    tcpsvd = require_binary("tcpsvd")
    multilog = require_binary("multilog")
    child = tmp_path / "child.py"
    child.write_text("#!" + sys.executable + "\n" + CHILD)
    child.chmod(0o755)
    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / "127.0.0.2").write_text("")
    (inst / "127.0.0.2").chmod(0)  # neither read nor execute: the connection is closed
    (inst / "127.0.0.3").write_text("+GREETING=hi\n")
    d = tmp_path / "log"
    port = free_port()
    log = subprocess.Popen([multilog, "t", str(d)], stdin=subprocess.PIPE)
    # ipsvd writes its -v lines to stdout (tcpserver: stderr)
    srv = subprocess.Popen([tcpsvd, "-vv", "-C", "1:busy", "-i", str(inst), "127.0.0.1",
                            str(port), str(child)], stdout=log.stdin, stderr=subprocess.PIPE)
    try:
        assert b"listening on" in _wait_for(d / "current", b"starting.", 10)
        ports = {}
        for i, (name, cmd, src) in enumerate((
                ("ok", "ok", "127.0.0.1"), ("exit3", "exit3", "127.0.0.1"),
                ("kill", "kill", "127.0.0.1"), ("denied", "ok", "127.0.0.2"),
                ("inst", "ok", "127.0.0.3"))):
            ports[name], answer = _connect(port, cmd, src)
            assert answer == (b"" if name == "denied" else b"got " + cmd.encode() + b"\n")
            # this connection's end logged (not only an earlier one's): a child still
            # running from 127.0.0.1 would count against the per-IP limit below
            _wait_for(d / "current", b"info: end ", 10, count=i + 1)
        # the per-IP limit (-C 1): a second connection while the first sleeps
        with socket.socket() as first:
            first.settimeout(10)
            first.connect(("127.0.0.1", port))
            first.sendall(b"sleep\n")
            assert first.recv(100) == b"got sleep\n"
            ports["limit"], answer = _connect(port, "ok")
            assert answer == b"busy"
            ports["sleep"] = first.getsockname()[1]
            assert first.recv(100) == b""
        # the sleeper's end, logged once tcpsvd has reaped it: a SIGTERM before that
        # lost the line (a fresh-clone CI run, once: 6 ends of 7)
        _wait_for(d / "current", b"info: end ", 10, count=len(ports))
    finally:
        stop_process(srv, 10)
        assert log.stdin is not None
        log.stdin.close()
        log.wait(10)
    data = (d / "current").read_bytes()
    assert b"sigterm received, exit." in data
    records = [r for r in shipper_parse(str(d)) if r["program"] == "tcpsvd"]
    assert len(records) == len(data.splitlines())
    assert not [r for r in records if r["event"] in ("unparsed", "tcp_error")]
    by_port = {r["remote_port"]: r for r in records if "remote_port" in r}
    pids = {}
    for name, p in ports.items():
        r = by_port[p]
        pids[name] = r["conn_pid"]
        assert r["event"] == ("tcp_deny" if name in ("denied", "limit") else "tcp_ok"), r
        assert (r["pid"], r["local_ip"]) == (r["conn_pid"], "127.0.0.1")
        assert r["remote_ip"] == {"denied": "127.0.0.2", "inst": "127.0.0.3"}.get(name, "127.0.0.1")
        assert r.get("text") == {"denied": f"{inst}/127.0.0.2",
                                 "inst": f"{inst}/127.0.0.3: +GREETING=hi"}.get(name), r
        assert "local_port" not in r  # ipsvd names the local address, not its port
    ends = {r["conn_pid"]: r for r in records if r["event"] == "tcp_end"}
    assert len(ends) == len(ports)
    # ipsvd 1.0.0 logs a child killed by a signal as "exit 0" (docs/records.md)
    want = {"ok": 0, "exit3": 3, "kill": 0, "denied": 100, "inst": 0, "limit": 100, "sleep": 0}
    assert {n: ends[pid]["exit_code"] for n, pid in pids.items()} == want
    assert all("signal" not in e for e in ends.values())
    for name, pid in pids.items():
        tcp_pid = next(r for r in records if r["event"] == "tcp_pid" and r["conn_pid"] == pid)
        assert tcp_pid["remote_ip"] == by_port[ports[name]]["remote_ip"]
        conc = next(r for r in records if r["event"] == "tcp_info" and r.get("conn_pid") == pid)
        assert (conc["remote_ip"], conc["ip_limit"]) == (tcp_pid["remote_ip"], 1)
        assert conc["ip_children"] == (2 if name == "limit" else 1)
    status = [r for r in records if r["event"] == "tcp_status"]
    assert status and all(r["limit"] == 30 for r in status)
    assert max(r["children"] for r in status) == 2


def test_ipsvd_fixture_lines_parse():
    """Real lines, kept: ipsvd 1.0.0-5 (Debian bookworm) tcpsvd -vv, as the test above runs it."""
    lines = [ln for ln in (FIXTURES / "samples" / "ipsvd_100_tcpsvd_vv_real.txt").read_bytes()
             .splitlines() if not ln.startswith(b"#")]
    records = shipper_parse(stdin=b"\n".join(lines) + b"\n")
    assert len(records) == len(lines) == 44
    assert {r["program"] for r in records} == {"tcpsvd"}
    got = [(r["event"], {k: r[k] for k in ("conn_pid", "local_ip", "remote_ip", "remote_port",
                                            "ip_children", "ip_limit", "exit_code", "children",
                                            "limit", "text") if k in r}) for r in records]
    assert got[:5] == [
        ("tcp_info", {"text": "listening on 127.0.0.1:23454, starting."}),
        ("tcp_status", {"children": 1, "limit": 30}),
        ("tcp_pid", {"conn_pid": 22585, "remote_ip": "127.0.0.1"}),
        ("tcp_info", {"conn_pid": 22585, "remote_ip": "127.0.0.1", "ip_children": 1,
                      "ip_limit": 1, "text": "concurrency 22585 127.0.0.1 1/1"}),
        # "-vv" ends the start line with a blank when no instructions file matched
        ("tcp_ok", {"conn_pid": 22585, "local_ip": "127.0.0.1", "remote_ip": "127.0.0.1",
                    "remote_port": 44379})]
    assert ("tcp_end", {"conn_pid": 22588, "exit_code": 3}) in got
    assert ("tcp_info", {"conn_pid": 22616, "remote_ip": "127.0.0.1", "ip_children": 2,
                         "ip_limit": 1, "text": "concurrency 22616 127.0.0.1 2/1"}) in got
    assert ("tcp_deny", {"conn_pid": 22616, "local_ip": "127.0.0.1", "remote_ip": "127.0.0.1",
                         "remote_port": 51769}) in got
    assert ("tcp_deny", {"conn_pid": 22598, "local_ip": "127.0.0.1", "remote_ip": "127.0.0.2",
                         "remote_port": 45913, "text": "inst/127.0.0.2"}) in got
    assert ("tcp_ok", {"conn_pid": 22602, "local_ip": "127.0.0.1", "remote_ip": "127.0.0.3",
                       "remote_port": 53511, "text": "inst/127.0.0.3: +GREETING=hi"}) in got
    assert got[-1] == ("tcp_info", {"text": "sigterm received, exit."})


@pytest.mark.slow
async def test_s6_log_killed_while_its_processor_runs(tmp_path):
    """s6-log SIGKILLed while its processor reads ``previous``: its next start archives
    ``previous`` as @L.u and dies on ``current`` ("File exists", the same stamp); the one
    after archives ``current``. A follower reading live meanwhile gets every line once."""
    binary = require_binary("s6-log")
    d = tmp_path / "log"
    pidfile = tmp_path / "processor.pid"
    slow = tmp_path / "slowcat"
    slow.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nsleep 5\nexec cat\n")
    slow.chmod(0o755)
    cmd = [binary, "t", "s4096", "n400", f"!{slow}", str(d)]
    got: list[int] = []
    gaps: list[Gap] = []
    src = MultilogSource([str(d)], None, start="all")
    loop = asyncio.get_running_loop()

    async def collect(until: int, timeout: float) -> None:
        async def run() -> None:
            async for it in src.batches():
                if isinstance(it, Gap):
                    gaps.append(it)
                else:
                    got.extend(int(m.group(1)) for ln in it.lines
                               if (m := SEQ_RE.search(ln)) is not None)
                if got and got[-1] >= until:
                    return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run(), timeout)

    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    try:
        await loop.run_in_executor(None, _feed, proc, 0, 60, 4000.0)
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and (d / "previous").exists()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (d / "previous").exists()
        # one rotation (60 lines of 100 bytes, s4096): previous, being processed (5 s)
        written = sum((d / n).read_bytes().count(b"\n") for n in ("previous", "current"))
        assert 0 < written <= 60
        await collect(written - 1, 4)  # read live from previous and current
        assert (d / "previous").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)  # its orphaned processor
        first = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        assert first.returncode == 111 and b"File exists" in first.stderr, first
        proc = await loop.run_in_executor(None, _restart, cmd, d)
        assert proc.poll() is None
        await loop.run_in_executor(None, _feed, proc, 60, 40, 4000.0)
        await collect(99, 20)
    finally:
        await src.close()
        if proc.stdin is not None:
            proc.stdin.close()
        stop_process(proc, 10)
    names = sorted(n for n in os.listdir(d) if n.startswith("@"))
    assert [n[-1] for n in names][:2] == ["u", "u"], names  # previous, then current
    assert not gaps, [(g.file, g.reason) for g in gaps]
    # the lines s6-log had not read from its pipe when killed (blocked on its processor)
    # are lost with it, not by the follower
    want = [*range(written), *range(60, 100)]
    assert got == want, (len(got), sorted(set(want) - set(got))[:5])


@pytest.mark.slow
@pytest.mark.parametrize("program", ["multilog", "s6-log"])
async def test_an_encrypting_processor_s_archives_are_not_shipped_as_garbage(tmp_path, program):
    """Found by a tester: with `!openssl enc …` (or zstd, lz4, zlib), shipper running
    throughout shipped 3000 lines as 3505 records, 505 of them ciphertext: an archive was
    called binary only when over 10 % of its first bytes were control bytes, and random
    bytes have ~10.5 %: a coin flip (39 of 92 archives came out text, read as new lines).
    Every line once, nothing else, no gap: the archives are the raw files read already."""
    binary = require_binary(program)
    require_binary("openssl")
    d = tmp_path / "log"
    cmd = [binary, "t", "s4096", "n400", "!openssl enc -aes-256-cbc -pbkdf2 -pass pass:x", str(d)]
    total = 2000
    got: list[int] = []
    other: list[bytes] = []
    gaps: list[Gap] = []
    src = MultilogSource([str(d)], None, start="all")

    async def run() -> None:
        async for it in src.batches():
            if isinstance(it, Gap):
                gaps.append(it)
                continue
            for ln in it.lines:
                m = SEQ_RE.search(ln)
                if m is None:
                    other.append(ln)
                else:
                    got.append(int(m.group(1)))
            if got and got[-1] >= total - 1:
                return

    loop = asyncio.get_running_loop()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    reading = asyncio.ensure_future(run())
    try:
        # a few lines, no rotation yet: once they are read, the follower is at current
        await loop.run_in_executor(None, _feed, proc, 0, 10, 1000.0)
        await await_until("the first lines read", lambda: len(got) >= 10)
        await loop.run_in_executor(None, _feed, proc, 10, total - 10, 1000.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reading, 30)
    finally:
        reading.cancel()
        await src.close()
        if proc.stdin is not None:
            proc.stdin.close()
        stop_process(proc, 10)
    archives = [n for n in os.listdir(d) if n.startswith("@")]
    assert len(archives) > 30 and all((d / n).read_bytes()[:8] == b"Salted__" for n in archives)
    assert not other, other[:2]
    assert not gaps, [(g.file, g.reason) for g in gaps]
    assert got == list(range(total))
