"""`shipper replay`: compressed archive sets merged by time, --since/--until, resume,
same event ids as a live run — into a real ClickHouse."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import ch_query, require_binary

REPO = Path(__file__).resolve().parent.parent


def _multilog_dir(tmp: Path, name: str, texts: list[str]) -> Path:
    multilog = require_binary("multilog")
    d = tmp / name
    data = "".join(t + "\n" for t in texts).encode()
    subprocess.run([multilog, "t", "s4096", "n999", str(d)], input=data, check=True, timeout=30)
    return d


def _interrupt_once_sending(args: list[str], out: Path, state: Path) -> bytes:
    """Run replay ``args`` and Ctrl-C it once ``out`` has records and its progress is
    saved under ``state`` (a fixed sleep could land before its handler on a busy
    machine; records out before the progress is, and the next run starts over); its
    stderr."""
    p = subprocess.Popen(args, stderr=subprocess.PIPE, cwd=REPO)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and not (out.exists() and out.stat().st_size
                                              and any((state / "replay").glob("*.json"))):
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    return err


def _compress_archives(d: Path) -> int:
    n = 0
    for i, p in enumerate(sorted(d.glob("@*.s"))):
        opener, ext = [(gzip.open, ".gz"), (bz2.open, ".bz2"), (lzma.open, ".xz")][i % 3]
        with opener(str(p) + ext, "wb") as f:
            f.write(p.read_bytes())
        p.unlink()
        n += 1
    return n


def _labels_utc(d: Path) -> list[str]:
    """Every line's time as the real tai64nlocal prints it in UTC."""
    t64l = require_binary("tai64nlocal")
    files = sorted(d.glob("@*"))
    data = b""
    for f in files:
        raw = f.read_bytes()
        for opener in (gzip.decompress, bz2.decompress, lzma.decompress):
            try:
                raw = opener(raw)
                break
            except (OSError, ValueError, lzma.LZMAError):
                continue
        data += raw
    data += (d / "current").read_bytes()
    out = subprocess.run([t64l], input=data, capture_output=True, check=True, timeout=30,
                         env={**os.environ, "TZ": "UTC"}).stdout.decode()
    return [line[:29] for line in out.splitlines()]


@pytest.mark.slow
def test_replay_compressed_archives_into_clickhouse_twice(tmp_path, clickhouse):
    send = _multilog_dir(tmp_path, "send", [f"status: local 0/10 remote 1/20 seq {i}" for i in range(600)])
    time.sleep(1.1)  # the second directory's labels come later: the merge must interleave nothing wrongly
    smtpd = _multilog_dir(tmp_path, "smtpd", [f"tcpserver: status: {i % 40}/40 seq {i}" for i in range(400)])
    assert _compress_archives(send) >= 3 and _compress_archives(smtpd) >= 2
    stamps = sorted(_labels_utc(send) + _labels_utc(smtpd))
    # a window that cuts both directories' time ranges
    since, until = stamps[100], stamps[900]
    expected = sum(1 for s in stamps if since <= s < until)
    sql = (REPO / "conf" / "clickhouse.sql").read_text()
    ch_query(clickhouse, "DROP TABLE IF EXISTS qmail_log")
    ch_query(clickhouse, sql)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""state_dir = "{tmp_path / 'state'}"
[sources.q]
type = "multilog"
paths = ["{tmp_path}/logs/*"]
[sinks.ch]
type = "http"
url = "http://127.0.0.1:{clickhouse}/"
format = "clickhouse"
table = "qmail_log"
""")
    args = [sys.executable, "-m", "shipper", "replay", str(send), str(smtpd), "--sink", "ch", "-c", str(cfg),
            "--since", since.replace(" ", "T") + "Z", "--until", until.replace(" ", "T") + "Z"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert f"sent {expected:,} records" in r.stderr
    count = int(ch_query(clickhouse, "SELECT count() FROM qmail_log"))
    assert count == expected
    # time order across the two directories
    times = [int(x) for x in ch_query(clickhouse, "SELECT time_unix_ns FROM qmail_log").split()]
    assert len(times) == expected
    # replay again: the same records, identifiable as duplicates by event id
    r = subprocess.run(args + ["--restart"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert int(ch_query(clickhouse, "SELECT count() FROM qmail_log")) == 2 * expected
    assert int(ch_query(clickhouse, "SELECT uniqExact(event_id) FROM qmail_log")) == expected
    # the ids are those a live `shipper parse` gives the same files
    live = subprocess.run([sys.executable, "-m", "shipper", "parse", str(send), str(smtpd)],
                          capture_output=True, timeout=60, cwd=REPO).stdout
    live_ids = {orjson.loads(x)["event_id"] for x in live.splitlines()}
    ch_ids = set(ch_query(clickhouse, "SELECT DISTINCT event_id FROM qmail_log").split())
    assert ch_ids <= live_ids and len(ch_ids) == expected


@pytest.mark.slow
def test_replay_resumes_after_interruption(tmp_path):
    d = _multilog_dir(tmp_path, "send", [f"new msg {i}" for i in range(3000)])
    _compress_archives(d)
    out = tmp_path / "out.ndjson"
    state = tmp_path / "state"
    args = [sys.executable, "-m", "shipper", "replay", str(d), "--output", str(out), "--state-dir", str(state),
            "--rate", "2000"]
    err = _interrupt_once_sending(args, out, state)
    assert b"run the same command again to resume" in err
    first = out.read_bytes().count(b"\n")
    assert 0 < first < 3000
    # the same directory spelled another way (relative, with a dot): the same replay
    again = [*args[:3], "replay", f"./{d.name}", *args[5:-2]]
    r = subprocess.run(again, capture_output=True, text=True, timeout=60, cwd=d.parent)
    assert r.returncode == 0 and "resuming" in r.stderr, r.stderr
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert all(rec["source"].startswith(str(d) + "/") for rec in recs)  # absolute, as live
    ids = [rec["event_id"] for rec in recs]
    assert len(set(ids)) == 3000
    assert len(ids) - 3000 <= 2000  # at most the batch in flight at the interruption is repeated


def test_a_damaged_archive_is_said_and_skipped_the_rest_goes(tmp_path):
    """Found by fault injection: a corrupt .gz made replay (and parse) die with a
    zlib traceback and send nothing, also not the intact archives."""
    d = tmp_path / "log"
    d.mkdir()
    base = 0x400000006b0b94c9
    n = 0
    for k, kind in enumerate(("plain", "broken", "gz")):
        lines = b"".join(b"@%016x%08x new msg %d\n" % (base + k, i, n + i) for i in range(2000))
        n += 2000
        name = d / f"@{base + k:016x}{0:08x}"
        if kind == "plain":
            (d / (name.name + ".s")).write_bytes(lines)
        else:
            data = bytearray(gzip.compress(lines))
            if kind == "broken":
                for i in range(len(data) // 3, len(data) // 3 + 60):  # damage the deflate stream
                    data[i] ^= 0xA5
            (d / (name.name + ".s.gz")).write_bytes(bytes(data))
    (d / "current").write_bytes(b"")
    out = tmp_path / "out.ndjson"
    r = subprocess.run([sys.executable, "-m", "shipper", "replay", str(d), "--output", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("shipper:")]
    assert len(errs) == 1 and ".s.gz" in errs[0] and "skipped" in errs[0] and "Traceback" not in r.stderr
    # (what the damaged one decoded before zlib saw the damage is sent too: mostly its
    # lines, then some garbage that has no msg)
    msgs = {orjson.loads(ln).get("msg") for ln in out.read_bytes().splitlines()}
    assert set(range(2000)) <= msgs and set(range(4000, 6000)) <= msgs  # the intact archives
    assert out.stat().st_mode & 0o777 == 0o640  # mail addresses: not for all (it was 0644)
    assert len(msgs & set(range(2000, 4000))) < 2000  # the damaged one up to its damage


def test_archives_a_processor_left_as_zstd_are_said_not_sent_as_garbage(tmp_path):
    """Found by a tester: with multilog's `!zstd`, replay exited 0 having sent 32 garbage
    records of compressed bytes, and the 974 lines in the archives were neither read nor
    said. Each such archive is one line, counted, exit 1 (a problem found); parse alike."""
    require_binary("zstd")
    multilog = require_binary("multilog")
    d = tmp_path / "log"
    lines = "".join(f"seq {j} " + "x" * 30 + "\n" for j in range(1, 1001))
    subprocess.run([multilog, "t", "s4096", "n200", "!zstd", str(d)], input=lines.encode(),
                   check=True, timeout=60)
    archives = [n for n in os.listdir(d) if n.startswith("@")]
    assert len(archives) > 10
    out = tmp_path / "out.ndjson"
    r = subprocess.run([sys.executable, "-m", "shipper", "replay", str(d), "--output", str(out),
                        "--state-dir", str(tmp_path / "st")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("shipper:")]
    assert len(errs) == len(archives) and all("binary" in e for e in errs), r.stderr
    assert f"{len(archives)} file(s) could not be read" in r.stderr
    recs = [orjson.loads(ln) for ln in out.read_bytes().splitlines()]
    assert recs and all(rec["message"].startswith("seq ") for rec in recs)  # current's lines only
    p = subprocess.run([sys.executable, "-m", "shipper", "parse", str(d)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and len([ln for ln in p.stderr.splitlines() if "binary" in ln]) == len(archives)
    assert all(orjson.loads(ln)["message"].startswith("seq ") for ln in p.stdout.splitlines())


def test_replay_progress_it_cannot_write_is_one_clear_line(tmp_path):
    """Found by an admin's review: a replay run as root left its progress root-owned in
    the daemon's state_dir, and the same command as the daemon's user then said
    "[Errno 13] Permission denied: '…/replay/….json.tmp.2843'"."""
    import shutil

    d = _multilog_dir(tmp_path, "send", [f"new msg {i}" for i in range(10)])
    state = tmp_path / "state"
    (state / "replay").mkdir(parents=True)
    (state / "replay").chmod(0o500)  # another user's, as far as we are concerned
    prefix: list[str] = []
    if os.geteuid() == 0:  # root without the capability that writes anywhere
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's capabilities"
        prefix = [setpriv, "--bounding-set=-dac_override"]
    r = subprocess.run([*prefix, sys.executable, "-m", "shipper", "replay", str(d), "--output",
                        str(tmp_path / "out.ndjson"), "--state-dir", str(state)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    (state / "replay").chmod(0o700)
    assert r.returncode == 1
    [line] = r.stderr.splitlines()
    assert line.startswith(f"shipper: {state}/replay/") and "Errno" not in line, line
    assert line.endswith(": Permission denied (the replay progress there belongs to another user, "
                         "e.g. root: replay as the daemon's user, or give --state-dir)"), line


def _interrupted_replay(monkeypatch, argv: list[str], saves: int) -> None:
    """Run replay in this process, batches of 10, and interrupt it as Ctrl-C would right
    after its ``saves``-th progress save."""
    import shipper.replay as replay

    real_write = replay.atomic_write
    n = 0

    def write_then_interrupt(path, data):
        nonlocal n
        real_write(path, data)
        n += 1
        if n == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(replay, "BATCH", 10)
    monkeypatch.setattr(replay, "atomic_write", write_then_interrupt)
    assert replay.main(argv) == 130
    monkeypatch.setattr(replay, "atomic_write", real_write)


def _postfix_lines() -> list[bytes]:
    # source: tests/fixtures/samples/fail2ban_postfix.txt (fail2ban's postfix test log)
    fix = REPO / "tests" / "fixtures" / "samples" / "fail2ban_postfix.txt"
    return [ln + b"\n" for ln in fix.read_bytes().splitlines() if ln and not ln.startswith(b"#")]


def test_resume_after_logrotate_sends_the_new_file_whole(tmp_path, monkeypatch):
    """Found probing replay on /var/log/mail.log: the progress was kept by file name, so
    after logrotate had made a new mail.log between the interrupted run and the next,
    the new file's lines up to the old file's offset were counted 'already sent before'
    and never sent (626 of 2,000 lines lost)."""
    import shipper.replay as replay

    lines = _postfix_lines()
    old, new = lines[:40], lines[40:]
    log = tmp_path / "mail.log"
    log.write_bytes(b"".join(old))
    out, state = tmp_path / "out.ndjson", tmp_path / "state"
    argv = [str(log), "--output", str(out), "--state-dir", str(state)]
    _interrupted_replay(monkeypatch, argv, saves=2)
    assert out.read_bytes().count(b"\n") == 20
    log.rename(tmp_path / "mail.log.1")  # logrotate
    log.write_bytes(b"".join(new))
    monkeypatch.setattr(replay, "BATCH", 10)
    assert replay.main(argv) == 0
    raws = [orjson.loads(x)["raw"] for x in out.read_bytes().splitlines()]
    assert raws[20:] == [ln[:-1].decode() for ln in new]


def test_resume_after_a_multilog_rotation_goes_on_where_it_was(tmp_path, monkeypatch):
    """The progress was kept under the list of files: after multilog rotated current to
    an archive, the same command started over and sent everything again."""
    import shipper.replay as replay

    d = tmp_path / "send"
    d.mkdir()
    # source: tests/fixtures/track/qmail_lifecycle.txt's qmail-send lines, as multilog t writes them
    fix = REPO / "tests" / "fixtures" / "track" / "qmail_lifecycle.txt"
    texts = [ln.split(b" ", 1)[1] for ln in fix.read_bytes().splitlines()[1:] if ln]
    first = b"".join(b"@4000000065536f00%08x %s\n" % (i, t) for i, t in enumerate(texts))
    second = b"".join(b"@4000000065537000%08x %s\n" % (i, t) for i, t in enumerate(texts))
    (d / "current").write_bytes(first)
    out, state = tmp_path / "out.ndjson", tmp_path / "state"
    argv = [str(d), "--output", str(out), "--state-dir", str(state)]
    _interrupted_replay(monkeypatch, argv, saves=2)
    (d / "current").rename(d / "@4000000065536fff00000000.s")  # multilog rotates
    (d / "current").write_bytes(second)
    monkeypatch.setattr(replay, "BATCH", 10)
    assert replay.main(argv) == 0
    ids = [orjson.loads(x)["event_id"] for x in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) == 2 * len(texts)


def test_a_directory_given_twice_is_replayed_once(tmp_path):
    d = _multilog_dir(tmp_path, "send", [f"new msg {i}" for i in range(300)])
    out = tmp_path / "out.ndjson"
    r = subprocess.run([sys.executable, "-m", "shipper", "replay", str(d), f"{d}/", str(d / "current"),
                        "--output", str(out)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    ids = [orjson.loads(x)["event_id"] for x in out.read_bytes().splitlines()]
    assert len(ids) == len(set(ids)) == 300


def test_with_a_config_lines_are_parsed_as_its_live_run_parses_them(tmp_path):
    """Found comparing a replay with a live run of the same directory: replay ignored the
    configuration's [parse] and sources, so a replayed multilog line had host null (live:
    the configured or this machine's name), a BSD syslog line the current year whatever
    syslog_year said (and replay had no --year), s6-log labels no leap seconds."""
    from shipper.config import load_config
    from shipper.parse import LineParser
    from shipper.reader import read_batches

    d = tmp_path / "send"
    d.mkdir()
    # source: tests/fixtures/track/send_recordio_ipv6.txt (multilog t lines)
    fix = REPO / "tests" / "fixtures" / "track" / "send_recordio_ipv6.txt"
    (d / "current").write_bytes(b"".join(ln + b"\n" for ln in fix.read_bytes().splitlines()[1:]))
    rotated = tmp_path / "mail.log.1"
    rotated.write_bytes(b"".join(_postfix_lines()[:20]))
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""state_dir = "{tmp_path / 'var'}"
[parse]
host = "mx9.example.net"
syslog_year = 2019
[sources.send]
type = "multilog"
paths = ["{tmp_path}/s*"]
tai_leap = true
[sources.maillog]
type = "file"
paths = ["{tmp_path / 'mail.log'}"]
local_tz = false
[sinks.siem]
type = "stdout"
""")
    r = subprocess.run([sys.executable, "-m", "shipper", "replay", str(d), str(rotated), "-c", str(cfg),
                        "--output", "-"], capture_output=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    got = {rec["event_id"]: rec for rec in map(orjson.loads, r.stdout.splitlines())}
    config = load_config(str(cfg))
    want = {}
    for path, src in ((d / "current", "send"), (rotated, "maillog")):
        parser = LineParser(config.sources[src].parse_options(config.parse), str(path))
        for b in read_batches(str(path)):
            parser.file_id = b.file_id
            want.update((rec["event_id"], rec) for rec in parser.parse_batch_dicts(b.lines, b.offsets))
    assert got == want
    assert {rec["host"] for rec in got.values() if rec["source"].endswith("current")} == {"mx9.example.net"}
    # (the fixture's dates go back and forth: the year turns with them)
    assert {rec["time"][:4] for rec in got.values() if rec["source"] == str(rotated)} == {"2019", "2020"}
    assert {rec["time_source"] for rec in got.values() if rec["source"].endswith("current")} == {"tai64n_tai"}



def test_the_files_logrotate_made_of_one_log_are_read_oldest_first_as_one(tmp_path):
    """Found replaying /var/log/mail.log* across a new year: each file was a stream of
    its own, each starting again at --year, so mail.log's January lines got the year of
    the December before (2024-01-01 instead of 2025-01-01), and came out first."""
    lines = [ln.split(b" ", 3)[3] for ln in _postfix_lines()[:30]]  # host and text, no stamp
    (tmp_path / "mail.log.2.gz").write_bytes(gzip.compress(b"".join(
        b"Dec 20 10:00:%02d %s" % (i, t) for i, t in enumerate(lines[:10]))))
    (tmp_path / "mail.log.1").write_bytes(b"".join(b"Dec 31 23:59:%02d %s" % (i, t) for i, t in enumerate(lines[10:20])))
    (tmp_path / "mail.log").write_bytes(b"".join(b"Jan  1 00:00:%02d %s" % (i, t) for i, t in enumerate(lines[20:])))
    names = ["mail.log", "mail.log.1", "mail.log.2.gz"]  # as the shell's mail.log* gives them
    r = subprocess.run([sys.executable, "-m", "shipper", "replay", "--utc", "--year", "2024",
                        *[str(tmp_path / n) for n in names], "--output", "-"],
                       capture_output=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    got = [(rec["time"][:10], rec["source"].rsplit("/", 1)[1]) for rec in map(orjson.loads, r.stdout.splitlines())]
    assert got == [("2024-12-20", "mail.log.2.gz")] * 10 + [("2024-12-31", "mail.log.1")] * 10 + \
        [("2025-01-01", "mail.log")] * 10


def test_resume_keeps_apart_files_that_begin_alike(tmp_path, monkeypatch):
    """Progress kept by first-line fingerprint alone would mix up two files that begin
    with the same bytes and no label (here the tails of two long lines multilog cut at
    rotations: their event ids collide too, the documented limit): the second's lines
    up to the first's offset were skipped at the resume. A file that begins unlabelled
    keeps its progress under its name as well."""
    import shipper.replay as replay

    d = tmp_path / "send"
    d.mkdir()
    tail = b"x" * 100 + b"_accepted_message./Remote_host_said:_250_ok/\n"
    # source: tests/fixtures/track/qmail_lifecycle.txt's qmail-send lines, as multilog t writes them
    fix = REPO / "tests" / "fixtures" / "track" / "qmail_lifecycle.txt"
    texts = [ln.split(b" ", 1)[1] for ln in fix.read_bytes().splitlines()[1:] if ln]

    def lines(sec: int, n: int) -> bytes:
        return b"".join(b"@40000000655370%02x%08x %s\n" % (sec, i, texts[i % len(texts)]) for i in range(n))

    head = b"@4000000065537000ffffffff delivery 7: success: 192.0.2.9_" + b"y" * 2000
    (d / "@400000006553700100000000.s").write_bytes(lines(0, 5) + head)
    (d / "@400000006553700200000000.s").write_bytes(tail + lines(2, 30))
    (d / "@400000006553700300000000.s").write_bytes(lines(3, 5) + head)
    (d / "current").write_bytes(tail + lines(4, 30))
    out, state = tmp_path / "out.ndjson", tmp_path / "state"
    argv = [str(d), "--output", str(out), "--state-dir", str(state)]
    _interrupted_replay(monkeypatch, argv, saves=4)
    monkeypatch.setattr(replay, "BATCH", 10)
    assert replay.main(argv) == 0
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert {(r["source"], r["offset"]) for r in recs} == {
        (str(d / n), off) for n, off in _line_starts(d)}


def _line_starts(d):
    """(file name, offset) of every line a replay of ``d`` gives: a file's lines, but
    not a joined tail at the start of the file after a fragment."""
    out = []
    names = sorted(p.name for p in d.iterdir() if p.name.startswith("@")) + ["current"]
    for k, n in enumerate(names):
        data = (d / n).read_bytes()
        pos = 0
        if k and not (d / names[k - 1]).read_bytes().endswith(b"\n"):
            pos = data.index(b"\n") + 1
        while pos < len(data):
            out.append((n, pos))
            nl = data.find(b"\n", pos)
            pos = len(data) if nl < 0 else nl + 1
    return out


def test_replay_into_a_pipe_closed_early_stdin_and_bad_rates_are_said_plainly(tmp_path):
    """From the offline probe: 'replay --output - | head' ended with 'shipper: [Errno 32]
    Broken pipe' and exit 1; 'replay -' said '-: No such file or directory'; --rate -5
    and nan were taken and meant no limit."""
    log = tmp_path / "current"
    log.write_bytes(b"".join(b"@400000006b0b94c9%08x new msg %d\n" % (i, i) for i in range(50_000)))
    cmd = [sys.executable, "-m", "shipper", "replay", str(log), "--output", "-"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().startswith(b"{")
    p.stdout.close()  # the reader goes away, as head does
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and b"Broken pipe" not in err and b"Traceback" not in err
    for argv, want in ((["-", "--output", "-"], "for stdin use 'shipper parse -'"),
                       ([str(log), "--output", "-", "--rate", "-5"], "not a rate"),
                       ([str(log), "--output", "-", "--rate", "nan"], "not a rate"),
                       ([str(log), "--output", "-", "--since", "yesterday"], "--since: not a time")):
        r = subprocess.run([sys.executable, "-m", "shipper", "replay", *argv],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 2 and want in r.stderr and r.stdout == "", argv


def test_a_line_still_being_written_is_sent_again_whole_after_a_resume(tmp_path):
    """From the offline probe: a replay of a current still written sent its unfinished
    last line flagged partial and counted it done, so a resumed run skipped the line
    once it was finished."""
    d = tmp_path / "send"
    d.mkdir()
    (d / "current").write_bytes(b"@400000006b0b94c900000001 new msg 1\n"
                                b"@400000006b0b94c900000002 info msg 1: bytes 12")
    later = tmp_path / "later.log"  # a second input, later in time, sent slowly
    later.write_bytes(b"".join(b"@400000006b0b95c9%08x new msg %d\n" % (i, 100 + i)
                               for i in range(400)))
    out = tmp_path / "out.ndjson"
    args = [sys.executable, "-m", "shipper", "replay", str(d), str(later), "--output", str(out),
            "--state-dir", str(tmp_path / "state"), "--rate", "200"]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 30
    while (not out.exists() or out.read_bytes().count(b"\n") < 20) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    first = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert "partial" in first[1]["flags"] and first[1]["event"] != "info_msg"
    with open(d / "current", "ab") as f:
        f.write(b" from <a@example.org> qp 7 uid 89\n")  # multilog finishes the line
    r = subprocess.run(args[:-2], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0 and "resuming" in r.stderr, r.stderr
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    whole = [x for x in recs if x["event_id"] == first[1]["event_id"] and "partial" not in x["flags"]]
    assert len(whole) == 1 and whole[0]["event"] == "info_msg" and whole[0]["qp"] == 7
    assert {x["msg"] for x in recs if x["event"] == "new_msg"} == {1, *range(100, 500)}


def test_replay_with_c_finds_the_source_of_a_directory_reached_through_a_link(tmp_path):
    """Life with qmail links supervise/*/log/main to the log directory, and a config may
    follow the links: replay -c of the path the live run follows (or of the directory it
    links to) found no source, so records were parsed with defaults (no tai_leap: times
    27 s apart from the live run's; not the source's program)."""
    from shipper.config import load_config
    from shipper.replay import source_options

    logs = tmp_path / "log" / "send"
    logs.mkdir(parents=True)
    (tmp_path / "svc" / "qmail-send" / "log").mkdir(parents=True)
    (tmp_path / "svc" / "qmail-send" / "log" / "main").symlink_to(logs)
    (tmp_path / "maillog").write_text("")
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""state_dir = "{tmp_path / 'var'}"
[sources.send]
type = "multilog"
paths = ["{tmp_path}/svc/*/log/main"]
tai_leap = true
[sources.syslog]
type = "file"
paths = ["{tmp_path}/maillog"]
[sinks.siem]
type = "stdout"
""")
    config = load_config(str(cfg))
    for p in (tmp_path / "svc" / "qmail-send" / "log" / "main", logs, logs / "current"):
        assert source_options(config, str(p)).name == "send", p
    assert source_options(config, str(tmp_path / "maillog.1.gz")).name == "syslog"
    # a glob's "*" is one path segment: the file source's rotated copies only, not a
    # file under a directory of that name
    assert source_options(config, str(tmp_path / "maillog.d" / "x")) is None
    assert source_options(config, str(tmp_path / "other")) is None


def test_a_peer_that_resets_after_taking_the_bytes_loses_nothing_of_a_replay(tmp_path):
    """Found by a black-box review (plain syslog sent to a TLS port): a peer whose
    kernel takes each batch and which then resets the connection had the batches
    counted sent; a replay reported them all sent and the peer had none. Now a batch
    counts done once the peer's TCP has it and the connection outlived its probation;
    what a reset lost is sent again."""
    import re
    import socket
    import threading

    d = _multilog_dir(tmp_path, "send", [f"new msg {i}" for i in range(3000)])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(1)
    got: list[bytes] = []
    stop = threading.Event()

    def peer() -> None:
        resets = 0
        t_end = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < t_end:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                if resets < 3:  # takes the bytes into its kernel, reads a little, resets
                    resets += 1
                    time.sleep(0.05)
                    conn.recv(10)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    continue
                while not stop.is_set() and time.monotonic() < t_end:
                    try:
                        data = conn.recv(1 << 16)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    got.append(data)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\npaths = ["{d}"]\n'
                   f'[sinks.s]\ntype = "syslog"\nprotocol = "tcp"\nhost = "127.0.0.1"\n'
                   f'port = {srv.getsockname()[1]}\n')
    try:
        r = subprocess.run([sys.executable, "-m", "shipper", "replay", "-c", str(cfg), "--sink", "s", str(d)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    finally:
        stop.set()
        thread.join(10)
        srv.close()
    assert r.returncode == 0, r.stderr
    assert "replay: sent 3,000 records" in r.stderr, r.stderr
    ids = set(re.findall(rb'event_id="([^"]+)"', b"".join(got)))
    assert len(ids) == 3000, (len(ids), r.stderr[-2000:])


def _pseudonymising_replay(tmp_path: Path, sessions: int, statuses: int = 0, transforms: str = "",
                           sink: str = "") -> tuple[Path, Path, Path]:
    """A multilog directory of ``sessions`` tcpserver lines (each a client name and
    address) and ``statuses`` qmail-send status lines, and a config pseudonymising them
    (with ``transforms`` more) into a file sink (with ``sink`` more): (dir, out, config)."""
    texts = [f"tcpserver: ok {4000 + i} mx.example.org:192.0.2.1:25 client{i}.example.net:198.51.100.{i % 250}::4{i:04d}"
             for i in range(sessions)] + [f"status: local 0/10 remote {i % 20}/20" for i in range(statuses)]
    d = _multilog_dir(tmp_path, "smtpd", texts)
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef")
    key.chmod(0o600)
    out = tmp_path / "out.ndjson"
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "var"}"\n[sources.smtpd]\ntype = "multilog"\npaths = ["{d}"]\n'
                   f'{transforms}[transforms.pseudonymise]\nkey_file = "{key}"\n'
                   f'[sinks.siem]\ntype = "file"\npath = "{out}"\n{sink}')
    return d, out, cfg


def test_replay_ships_as_the_live_run_its_transforms_and_the_sinks_filter(tmp_path):
    """A privacy review: replay --sink ignored [transforms]: clear addresses reached the
    SIEM from a config that pseudonymises, and the lines it excludes went too. The
    resume still works by the files' own ids (the shipped ones are keyed). Not the rate
    limit, which guards a live run against floods: it would drop most of an archive."""
    d, out, cfg = _pseudonymising_replay(tmp_path, 1500, 500, """[transforms]
drop_fields = ["raw"]
[transforms.rate_limit]
rate = 1
burst = 1
""", 'exclude_events = ["status"]\n')
    args = [sys.executable, "-m", "shipper", "replay", str(d), "-c", str(cfg), "--sink", "siem", "--rate", "1000"]
    err = _interrupt_once_sending(args, out, tmp_path / "var")
    r = subprocess.run(args[:-2], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0 and "resuming" in r.stderr, r.stderr
    assert "not taken by the transforms or the sink's filters" in err.decode() + r.stderr
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    shipped = out.read_text()
    assert "example.net" not in shipped and "198.51.100." not in shipped
    assert {rec["event"] for rec in recs} == {"tcp_ok"}
    assert all("raw" not in rec and "pseudonymised" in rec["flags"] for rec in recs)
    ids = [rec["event_id"] for rec in recs]
    assert len(set(ids)) == 1500 and len(ids) - 1500 <= 2000  # resumed, not started over
    from shipper.fingerprint import fingerprint
    plain = {fingerprint(f.read_bytes()[:64]) for f in d.iterdir() if f.is_file()}
    fids = {rec["file_id"] for rec in recs}
    assert len(fids) > 10 and not fids & plain  # keyed


def test_replay_to_a_sink_down_says_it_waits_not_that_a_buffer_holds_the_records(tmp_path):
    """Found by a fault hunt: replay to a receiver that is down said "retrying; records
    wait in the buffer", the daemon's words; replay has no buffer: it waits, and is
    resumed by running it again."""
    import socket
    d = _multilog_dir(tmp_path, "log", ["new msg 1"])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\npaths = ["{d}"]\n'
                   f'[sinks.s]\ntype = "syslog"\nprotocol = "tcp"\nhost = "127.0.0.1"\nport = {port}\n')
    p = subprocess.Popen([sys.executable, "-m", "shipper", "replay", "-c", str(cfg), "--sink", "s", str(d)],
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "retrying" not in line and time.monotonic() < deadline:
            line = p.stderr.readline()
            assert line or p.poll() is None, "replay ended without retrying"
    finally:
        p.kill()
        p.wait(30)
    assert "retrying; the replay waits for it" in line and "buffer" not in line, line


def test_replay_with_summaries_sends_the_mails_with_the_live_ids(tmp_path):
    """A new admin found replay sent line records only: a SIEM refilled from archives had
    no mail summaries. --summaries sends them, with the ids `track --json` (and the live
    run) gives, also for a window: the correlator sees the lines outside it."""
    d = tmp_path / "send"
    d.mkdir()
    texts = ["new msg 1", "info msg 1: bytes 100 from <a@example.org> qp 5 uid 0",
             "starting delivery 1: msg 1 to local bob@example.org", "delivery 1: success: did_1+0+0/",
             "end msg 1"]  # a second apart (multilog would stamp them alike)
    (d / "current").write_text("".join(f"@4000000065e5a0c{i}00000000 {t}\n" for i, t in enumerate(texts)))
    out = tmp_path / "out.ndjson"
    r = subprocess.run([sys.executable, "-m", "shipper", "replay", str(d), "--output", str(out),
                        "--summaries"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    (mail,) = [x for x in recs if x["event"] == "mail"]
    assert len(recs) == 6 and mail["recipients"][0]["rcpt_to"] == "bob@example.org"
    assert "1 of them mail and session summaries" in r.stderr
    t = subprocess.run([sys.executable, "-m", "shipper", "track", "--json", str(d)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert orjson.loads(t.stdout.splitlines()[0])["event_id"] == mail["event_id"]
    # a window holding only the end: the mail whole, its other lines not sent
    end_ns = recs[4]["time_unix_ns"]
    out2 = tmp_path / "out2.ndjson"
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(end_ns // 10**9)) + f".{end_ns % 10**9:09d}Z"
    r = subprocess.run([sys.executable, "-m", "shipper", "replay", str(d), "--output", str(out2),
                        "--summaries", "--since", since], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    recs2 = [orjson.loads(x) for x in out2.read_bytes().splitlines()]
    assert [x["event"] for x in recs2] == ["end_msg", "mail"], recs2
    assert recs2[1]["event_id"] == mail["event_id"] and recs2[1]["birth"] is not None


def test_replay_summaries_for_a_window_see_the_mail_whole_and_leave_open_ones_to_the_live_run(tmp_path):
    """Found by a review: with --since a day before a mail's end, the archives where it
    began were not read at all (the window's skip by name), so its summary came from its
    middle with another event id; and mails still open at the end of the input were sent
    incomplete under the id the live run's complete summary takes."""
    d = tmp_path / "send"
    d.mkdir()
    t0, day = 0x65e5a0c0, 86400

    def lab(t: int) -> str:
        return f"@40000000{t:08x}00000000"

    def write(name: str, items: list[tuple[int, str]]) -> None:
        (d / name).write_text("".join(f"{lab(t)} {x}\n" for t, x in items))
    write(lab(t0 + 10) + ".s", [(t0, "new msg 1"), (t0 + 1, "info msg 1: bytes 100 from <a@example.org> qp 5 uid 0"),
                                (t0 + 2, "starting delivery 1: msg 1 to remote bob@example.net"),
                                (t0 + 3, "delivery 1: deferral: try_again/")])
    for n in (1, 2):
        write(lab(t0 + n * day + 10) + ".s", [(t0 + n * day, "status: local 0/10 remote 0/20")])
    write("current", [(t0 + 3 * day, "starting delivery 2: msg 1 to remote bob@example.net"),
                      (t0 + 3 * day + 1, "delivery 2: success: ok/"), (t0 + 3 * day + 2, "end msg 1"),
                      (t0 + 3 * day + 3, "new msg 2"),
                      (t0 + 3 * day + 4, "info msg 2: bytes 100 from <c@example.org> qp 6 uid 0")])

    def mails(*extra: str) -> tuple[list[dict], str]:
        out = tmp_path / "o.ndjson"
        out.unlink(missing_ok=True)
        r = subprocess.run([sys.executable, "-m", "shipper", "replay", str(d), "--output", str(out),
                            "--summaries", *extra], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert r.returncode == 0, r.stderr
        return [x for x in map(orjson.loads, out.read_bytes().splitlines()) if x["event"] == "mail"], r.stderr
    (whole,), said = mails()
    assert whole["mail_from"] == "a@example.org" and not whole["flags"]
    assert "1 mails and sessions open at the end of the input not summarised" in said  # mail 2
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 3 * day - 3600))
    (win,), _ = mails("--since", since)
    assert (win["event_id"], win["mail_from"], win["flags"]) == (whole["event_id"], "a@example.org", [])


def test_a_resumed_replay_with_summaries_and_pseudonyms_skips_what_it_sent(tmp_path):
    """Found by a review: with --summaries and [transforms.pseudonymise], the progress
    was kept under the keyed file ids, so the run again found none ("0 already sent
    before") and sent everything again."""
    d, out, cfg = _pseudonymising_replay(tmp_path, 3000)
    args = [sys.executable, "-m", "shipper", "replay", str(d), "-c", str(cfg), "--sink", "siem", "--summaries"]
    _interrupt_once_sending([*args, "--rate", "1000"], out, tmp_path / "var")
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    resumed = int(re.search(r"([\d,]+) already sent before", r.stderr).group(1).replace(",", ""))
    assert resumed > 0, r.stderr
    ids = [orjson.loads(x)["event_id"] for x in out.read_bytes().splitlines()]
    assert len(set(ids)) == 3000 and len(ids) < 3000 + 1000, (len(ids), len(set(ids)))
