"""The shipper command: parse, exit codes, one-line errors."""

from __future__ import annotations

import gzip
import lzma
import os
import select
import subprocess
import sys
import threading

import orjson
import pytest
from conftest import require_binary, without_root_powers


def run(*args, input=None):
    return subprocess.run([sys.executable, "-m", "shipper", *args], input=input, capture_output=True,
                          timeout=60)


def test_parse_stdin_ndjson():
    r = run("parse", input=b"@4000000052fafd8d3298434c new msg 3890\nplain line\n")
    assert r.returncode == 0, r.stderr
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 2
    assert recs[0]["time"] == "2014-02-12T04:50:11.848839500Z"
    assert recs[0]["source"] == "-" and recs[0]["event_id"] is None
    assert recs[1]["time_source"] == "inferred"


def test_parse_pretty():
    r = run("parse", "--pretty", input=b"x\n")
    assert r.returncode == 0 and r.stdout.startswith(b"{\n  ")


def test_parse_multilog_dir_and_errors(tmp_path):
    multilog = require_binary("multilog")
    d = tmp_path / "log"
    subprocess.run([multilog, "t", str(d)], input=b"a\nb\n", check=True, timeout=10)
    r = run("parse", str(d), str(tmp_path / "missing"))
    assert r.returncode == 2  # a path given wrong: a usage error, as in track and stats
    err = r.stderr.decode().strip().splitlines()
    assert err == [f"shipper: {tmp_path / 'missing'}: no such file or directory"]


def test_parse_continues_after_bad_input(tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"x\n")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x1f\x8b\x08\x00broken")
    r = run("parse", str(bad), str(good))
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 1
    assert len(r.stderr.decode().strip().splitlines()) == 1


def test_usage_errors():
    r = run("frobnicate")
    assert r.returncode == 2 and b"unknown command" in r.stderr
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith(b"shipper ")
    r = run("parse", "--help")
    assert r.returncode == 0 and b"NDJSON" in r.stdout


def test_parse_dir_carries_a_cut_secret_from_an_archive_to_the_next(tmp_path):
    """A recordio line cut by "+" at a multilog rotation: its pieces are in two files
    of one directory, parsed with one parser's state."""
    import orjson

    d = tmp_path / "log"
    d.mkdir()
    (d / "@400000005a49ba3400000000.s").write_bytes(b"@400000005a49ba341eefa7a4 97 < PASS secr+\n")
    (d / "current").write_bytes(b"@400000005a49ba351eefa7a4 97 < et!\r \n")
    r = run("parse", str(d))
    assert r.returncode == 0, r.stderr
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [x["message"] for x in recs] == ["97 < PASS [REDACTED]+", "97 < [REDACTED]\r "]
    assert b"et!" not in r.stdout and b"secr" not in r.stdout


def test_status_says_in_one_line_what_it_cannot_read(tmp_path):
    """Found by fault injection: a bad URL, a peer that is not ours and a damaged
    metrics.addr each gave a traceback."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def garbage() -> None:  # answers anything with bytes that are no HTTP
        conn, _ = srv.accept()
        conn.recv(1024)
        conn.sendall(b"\x1b[2JNOT HTTP\r\n\r\n")
        conn.close()
    t = threading.Thread(target=garbage, daemon=True)
    t.start()
    for url in ("http://[::1", f"http://127.0.0.1:{port}"):
        r = subprocess.run([sys.executable, "-m", "shipper", "status", "--url", url],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "\x1b" not in r.stderr
    t.join(5)
    srv.close()


def test_the_demo_ends_when_its_reader_goes_away():
    """"shipper run --demo | head -c1": found by fault injection to retry forever. The
    reader is gone before the first write (with head, a loaded machine could let the
    demo's 30 KB fit in the pipe before head left: no error to see, exit 0)."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "shipper", "run", "--demo"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 1, p.stderr
    assert "standard output was closed by its reader" in p.stderr and "Traceback" not in p.stderr


def test_status_says_idle_down_and_up_as_they_are():
    """From an admin's review: a sink that had nothing to send yet showed "down", and a
    sink that had recovered still showed its old error."""
    from shipper.status import render

    metrics = {
        "shipper_sink_connected": [({"sink": "fresh"}, 0.0), ({"sink": "dead"}, 0.0), ({"sink": "back"}, 1.0)],
        "shipper_sink_acked_total": [({"sink": "fresh"}, 0.0), ({"sink": "dead"}, 5.0), ({"sink": "back"}, 9.0)],
        "shipper_sink_last_error_info": [({"sink": "dead", "error": "connect refused"}, 1.0),
                                         ({"sink": "back", "error": "timed out"}, 1.0)],
    }
    rows = {ln.split()[0]: ln for ln in render(metrics).splitlines()[4:] if ln.strip()}
    assert rows["fresh"].split()[1] == "idle"
    assert rows["dead"].split()[1] == "down" and rows["dead"].endswith("connect refused")
    assert rows["back"].split()[1] == "up" and "timed out" not in rows["back"]


def test_parse_reads_a_pipe_by_name_and_compressed_standard_input(tmp_path):
    """`shipper parse <(zcat @….s.gz)` (a pipe by name) and a FIFO ended in a traceback
    (the compression check seeked back); `zcat`-less `shipper parse - < @….s.gz` gave
    binary garbage as unparsed lines."""
    # source: tests/fixtures (qmail-send's lines as multilog stamps them)
    text = b"@4000000052fafd8d3298434c new msg 3890\n@4000000052fafd8d3298434c end msg 3890\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as f:
            f.write(lzma.compress(text))

    t = threading.Thread(target=write, daemon=True)
    t.start()
    r = run("parse", str(fifo))
    t.join(10)
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(x)["event"] for x in r.stdout.splitlines()] == ["new_msg", "end_msg"]
    r = run("parse", "-", input=gzip.compress(text))
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(x)["event"] for x in r.stdout.splitlines()] == ["new_msg", "end_msg"]


@pytest.mark.parametrize(("command", "prefix", "rc"), [
    (["parse"], "shipper", 2), (["stats"], "shipper stats", 2), (["track", "--to", "bob"], "shipper track", 2)])
@pytest.mark.parametrize("multilog", [True, False])
def test_a_directory_that_may_not_be_listed_says_so(tmp_path, command, prefix, rc, multilog):
    """parse said "a directory but not a multilog directory" of a log directory it may not
    list; track and stats ended in a PermissionError's traceback (a black-box review;
    multilog makes its directories 0700, open to root alone)."""
    d = tmp_path / "log"
    d.mkdir()
    (d / ("current" if multilog else "mail.log")).write_bytes(b"")
    d.chmod(0o000)
    try:
        r = subprocess.run([*without_root_powers(), sys.executable, "-m", "shipper", command[0], str(d),
                            *command[1:]], capture_output=True, timeout=60)
    finally:
        d.chmod(0o755)
    assert r.returncode == rc
    assert r.stderr.decode().splitlines() == [f"{prefix}: {d}: Permission denied"]


@pytest.mark.parametrize(("argv", "message"), [
    (["track", "x", "--max-open", "-1"], "argument --max-open: at least 1, not -1"),
    (["stats", "x", "--max-open", "0"], "argument --max-open: at least 1, not 0"),
    (["stats", "x", "--top", "-1"], "argument --top: at least 1, not -1"),
    (["parse", "--year", "0", "-"], "argument --year: a year from 1970 to 9999, not 0"),
    (["replay", "--year", "99999", "--output", "o", "x"], "argument --year: a year from 1970 to 9999, not 99999"),
    (["track", "x", "--year", "abc"], "argument --year: not a year: 'abc'"),
])
def test_numbers_out_of_their_range_are_usage_errors(argv, message):
    """--max-open -1 ended in a traceback, 0 reported every mail incomplete; --year 0 made
    every stamped line a bad stamp (a black-box review)."""
    r = run(*argv, input=b"")
    assert r.returncode == 2 and r.stderr.decode().splitlines()[-1].endswith(message)


def test_every_option_of_every_command_says_what_it_does(monkeypatch):
    """Found reading the --help texts as an admin: replay's --no-redact, check's -c and
    buffer's command had no word of help."""
    import argparse

    from shipper.cli import COMMANDS

    class Built(Exception):
        pass

    parsers: dict[str, argparse.ArgumentParser] = {}

    def capture(self, args=None, namespace=None):
        parsers[self.prog] = self
        raise Built

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr("signal.signal", lambda *a: None)  # run's early-SIGHUP note
    for func, _ in COMMANDS.values():
        try:
            func(["--help"])
        except Built:
            pass
    assert len(parsers) == len(COMMANDS), sorted(parsers)
    silent = [f"{prog} {action.option_strings or action.dest}" for prog, p in parsers.items()
              for action in p._actions  # noqa: SLF001 - what --help prints
              if not isinstance(action, argparse._HelpAction) and not action.help]  # noqa: SLF001
    assert silent == [], silent


def test_parse_of_a_pipe_shows_each_line_as_it_comes():
    """`tail -F current | shipper parse -` showed nothing until 1 MiB had come (a
    pipe's read waited for a full chunk, the batch for 4,096 lines, the reader held the
    last batch back and the output was not flushed): an admin watching a log saw nothing."""
    p = subprocess.Popen([sys.executable, "-m", "shipper", "parse", "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdin is not None and p.stdout is not None
        for n in (1, 2):  # source: tests/fixtures (qmail-send's lines as multilog stamps them)
            p.stdin.write(b"@4000000052fafd8d3298434c new msg %d\n" % n)
            p.stdin.flush()
            ready, _, _ = select.select([p.stdout], [], [], 20)  # the pipe stays open
            assert ready, f"line {n}: no record while its input stays open"
            assert orjson.loads(p.stdout.readline())["msg"] == n
        p.stdin.close()
        assert p.wait(20) == 0 and p.stdout.read() == b""
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def test_parse_gives_each_input_its_own_time_for_unstamped_lines(tmp_path):
    """Parsers were kept per directory: nostamp.log's lines took s1.log's time (the same
    directory). A multilog directory's archive and current, named one by one, are one."""
    stamped = tmp_path / "s1.log"
    stamped.write_bytes(b"@4000000052fafd8d3298434c new msg 3890\n")
    bare = tmp_path / "nostamp.log"
    bare.write_bytes(b"new msg 1\n")
    r = run("parse", str(stamped), str(bare))
    assert r.returncode == 0, r.stderr
    assert [orjson.loads(x)["time_source"] for x in r.stdout.splitlines()] == ["tai64n", "ingest"]
    d = tmp_path / "log"
    d.mkdir()
    (d / "@4000000052fafd8d3298434c.s").write_bytes(b"@4000000052fafd8d3298434c new msg 3890\n")
    (d / "current").write_bytes(b"end msg 3890\n")
    r = run("parse", str(d / "@4000000052fafd8d3298434c.s"), str(d / "current"))
    assert [orjson.loads(x)["time_source"] for x in r.stdout.splitlines()] == ["tai64n", "inferred"]


def test_every_option_the_docs_show_a_command_is_one_it_takes(monkeypatch):
    """The README, the annotated configs, docs/, the run script and the unit show command
    lines to copy: each `shipper COMMAND --option` in them is an option of that command
    (a renamed option would leave an admin's copied line failing)."""
    import argparse
    import glob
    import re
    from pathlib import Path

    from shipper.cli import COMMANDS

    root = Path(__file__).resolve().parent.parent
    paths = [root / "README.md", root / "service" / "shipper" / "run", root / "systemd" / "shipper.service",
             *map(Path, glob.glob(str(root / "conf" / "**" / "*.toml"), recursive=True)),
             *map(Path, glob.glob(str(root / "docs" / "*.md")))]
    shown: dict[str, set[str]] = {}
    for p in paths:
        for m in re.finditer(r"\bshipper (run|check|status|parse|replay|track|stats|buffer)\b([^\n`#|]*)",
                             p.read_text().replace("\\\n", " ")):  # (a line continued)
            shown.setdefault(m.group(1), set()).update(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", m.group(2)))
    assert set(COMMANDS) <= set(shown)
    assert sum(map(len, shown.values())) >= 15

    class Built(Exception):
        pass

    options: dict[str, set[str]] = {}

    def capture(self, args=None, namespace=None):
        options[self.prog.removeprefix("shipper ")] = {o for a in self._actions for o in a.option_strings}
        raise Built

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr("signal.signal", lambda *a: None)  # run's early-SIGHUP note
    for command, opts in shown.items():
        with pytest.raises(Built):
            COMMANDS[command][0]([])
        assert opts - options[command] == set(), command
