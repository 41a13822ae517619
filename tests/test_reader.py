"""Reading finished inputs: order of a real multilog directory, compression, caps, offsets."""

from __future__ import annotations

import gzip
import lzma
import os
import subprocess
import sys

import orjson
import pytest
from conftest import require_binary, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

import shipper.reader
from shipper.fingerprint import fingerprint
from shipper.reader import InputError, expand, is_multilog_dir, read_batches, read_joined


def _all(path, **kw):
    return _joined(read_batches(path, **kw))


def _joined(batches):
    lines, offsets, trunc, partial = [], [], set(), None
    for b in batches:
        base = len(lines)
        lines += b.lines
        offsets += b.offsets
        trunc |= {base + i for i in (b.truncated or ())}
        if b.partial is not None:
            partial = base + b.partial
    return lines, offsets, trunc, partial


def test_real_multilog_dir_reads_in_order(tmp_path):
    multilog = require_binary("multilog")
    d = tmp_path / "log"
    n = 3000
    data = b"".join(b"line %06d %s\n" % (i, b"x" * 60) for i in range(n))
    subprocess.run([multilog, "t", "s4096", "n999", str(d)], input=data, check=True, timeout=30)
    assert is_multilog_dir(str(d))
    files = expand([str(d)])
    assert files[-1].endswith("/current") and len(files) > 20
    seen = []
    for f in files:
        lines, offsets, _, _ = _all(f, batch_lines=100)
        with open(f, "rb") as fh:
            content = fh.read()
        for ln, off in zip(lines, offsets, strict=True):
            assert content[off:off + len(ln)] == ln
            seen.append(int(ln.split(b" ")[2]))
    assert seen == list(range(n))


def test_a_rotation_while_the_archives_before_current_are_read_loses_nothing(tmp_path):
    """Found replaying a live directory: multilog rotated current while the archives
    before it were read, and the lines current had held (now in an archive listed after
    the start) were never read: 53 of 3,000 lines lost, exit 0."""
    multilog = require_binary("multilog")
    d = tmp_path / "log"
    p = subprocess.Popen([multilog, "t", "s4096", "n9999", str(d)], stdin=subprocess.PIPE)
    assert p.stdin is not None
    try:
        p.stdin.write(b"".join(b"new msg %d\n" % i for i in range(1000)))
        p.stdin.flush()
        wait_until("multilog wrote line 999", lambda: (d / "current").exists()
                   and b"new msg 999\n" in (d / "current").read_bytes())
        files = expand([str(d)])
        archives = len(files) - 1
        assert archives >= 3 and (d / "current").stat().st_size > 0
        batches = read_joined(files)
        got = next(batches).lines  # reading the first archive: multilog rotates meanwhile
        p.stdin.write(b"".join(b"new msg %d\n" % i for i in range(1000, 2000)))
        p.stdin.flush()
        wait_until("multilog rotated and wrote line 1999",
                   lambda: len(list(d.glob("@*.s"))) >= archives + 3
                   and b"new msg 1999\n" in (d / "current").read_bytes())
        got += [ln for b in batches for ln in b.lines]
    finally:
        p.stdin.close()
        p.wait(10)
    assert [int(ln.rsplit(b" ", 1)[1]) for ln in got] == list(range(2000))


@pytest.mark.parametrize("spelling", ["{d}", "./{n}", "{d}/", "{d}//", "{d}/."])
def test_a_directory_named_in_any_spelling_is_read_once(tmp_path, monkeypatch, spelling):
    """Found by a review: ``shipper parse ./log`` printed current 101 times (the look for
    archives made meanwhile took current, named ./log/current, for a new one each round)."""
    d = tmp_path / "log"
    subprocess.run([require_binary("multilog"), "t", "s4096", "n9999", str(d)],
                   input=b"".join(b"new msg %d\n" % i for i in range(300)), check=True, timeout=30)
    monkeypatch.chdir(tmp_path)
    files = expand([spelling.format(d=d, n="log")])
    got = [ln for b in read_joined(files) for ln in b.lines]
    assert [int(ln.rsplit(b" ", 1)[1]) for ln in got] == list(range(300))


def test_an_archive_compressed_while_the_ones_before_it_are_read_is_read_compressed(tmp_path):
    """Found gzipping archives (as a nightly job does) during a replay: the ones listed
    but not yet read were "No such file or directory", their lines lost (328 of 3,000)."""
    d = tmp_path / "log"
    data = b"".join(b"new msg %d\n" % i for i in range(1500))
    subprocess.run([require_binary("multilog"), "t", "s4096", "n9999", str(d)], input=data, check=True,
                   timeout=30)
    files = expand([str(d)])
    batches = read_joined(files)
    got = next(batches).lines  # reading the first archive
    later = files[-4:-1]
    subprocess.run([require_binary("gzip"), *later], check=True, timeout=30)
    got += [ln for b in batches for ln in b.lines]
    assert [int(ln.rsplit(b" ", 1)[1]) for ln in got] == list(range(1500))


def test_offsets_and_partial_last_line(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"a\nbb\n\nccc")
    lines, offsets, trunc, partial = _all(str(p))
    assert lines == [b"a", b"bb", b"", b"ccc"] and offsets == [0, 2, 5, 6]
    assert partial == 3 and not trunc


def test_long_lines_are_capped_with_memory_bounded(tmp_path):
    p = tmp_path / "f"
    big = b"y" * (3 << 20)  # bigger than a read chunk
    p.write_bytes(b"short\n" + big + b"\nafter\n")
    lines, offsets, trunc, partial = _all(str(p), max_line=1000)
    assert lines == [b"short", b"y" * 1000, b"after"]
    assert offsets == [0, 6, 6 + len(big) + 1] and trunc == {1} and partial is None


def test_a_batch_of_long_lines_is_bounded_by_bytes_not_only_by_lines(tmp_path):
    """Found measuring replay's RSS: 4096 lines of 60 KB (under the 64 KB cap; a filter
    logging whole headers) made one 250 MB batch, 1 GB of RSS with its records."""
    p = tmp_path / "f"
    line = b"@400000005a49ba341ef3c1a4 " + b"x" * 60_000 + b"\n"
    p.write_bytes(line * 300)
    batches = list(read_batches(str(p)))
    assert sum(len(b.lines) for b in batches) == 300
    # 4 MiB, checked after each read: a chunk (1 MiB) more at most
    assert max(sum(map(len, b.lines)) for b in batches) <= 5 << 20


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), max_size=60), chunk=st.integers(1, 64),
       max_line=st.integers(1, 30), batch_lines=st.integers(1, 8), newline_at_end=st.booleans())
def test_lines_offsets_and_caps_match_a_plain_reading(tmp_path_factory, lengths, chunk, max_line,
                                                       batch_lines, newline_at_end):
    # Model: split the file by hand. Chunks smaller than lines, lines over the cap
    # in the middle of a chunk, batches cut anywhere: the reader must agree.
    body = b"".join(bytes([97 + i % 26]) * n + b"\n" for i, n in enumerate(lengths))
    if not newline_at_end:
        body += b"tail"
    p = tmp_path_factory.mktemp("r") / "f"
    p.write_bytes(body)
    want_lines, want_offsets, want_trunc, pos = [], [], set(), 0
    for i, ln in enumerate(body.split(b"\n")[:-1] if newline_at_end else body.split(b"\n")):
        if len(ln) > max_line:
            want_trunc.add(i)
        want_lines.append(ln[:max_line])
        want_offsets.append(pos)
        pos += len(ln) + 1
    old = shipper.reader.CHUNK
    shipper.reader.CHUNK = chunk
    try:
        batches = list(read_batches(str(p), max_line=max_line, batch_lines=batch_lines))
    finally:
        shipper.reader.CHUNK = old
    got = _joined(batches)
    assert got[:3] == (want_lines, want_offsets, want_trunc)
    assert got[3] == (None if newline_at_end else len(want_lines) - 1)
    # batches stay bounded (memory, and output while the input goes on): a chunk's
    # lines at most beyond batch_lines, even while over-long lines are being cut
    sizes = [len(b.lines) for b in batches]
    assert all(n <= batch_lines + chunk for n in sizes), sizes


def test_batches_keep_coming_while_every_chunk_ends_inside_a_long_line(tmp_path, monkeypatch):
    # Only the line being cut waits (it may end the file: partial); the others go out,
    # or a pipe of long lines would give nothing until its end, in one huge batch.
    p = tmp_path / "f"
    body = [b"%d" % i + b"y" * 2999 + b"\n" for i in range(40)]
    p.write_bytes(b"".join(body))
    monkeypatch.setattr(shipper.reader, "CHUNK", 1000)
    batches = list(read_batches(str(p), max_line=100, batch_lines=4))
    assert max(len(b.lines) for b in batches) <= 5 and len(batches) >= 8
    lines, offsets, trunc, partial = _joined(batches)
    assert len(lines) == 40 and trunc == set(range(40)) and partial is None
    assert offsets == [sum(map(len, body[:i])) for i in range(40)] and lines[7].startswith(b"7yy")


@pytest.mark.parametrize("opener", [gzip.open, lzma.open])
def test_compressed_archive_same_ids_as_plain(tmp_path, opener):
    content = b"@4000000052fafd8d3298434c new msg 3890\n@4000000052fafd8d387554bc end msg 3890\n"
    plain = tmp_path / "@4000000052fafd8d387554bc.s"
    plain.write_bytes(content)
    packed = tmp_path / "archive"  # no telling suffix: detected by magic bytes
    with opener(packed, "wb") as f:
        f.write(content)
    a = list(read_batches(str(plain)))[0]
    b = list(read_batches(str(packed)))[0]
    assert a.file_id == b.file_id == fingerprint(content)
    assert a.lines == b.lines and a.offsets == b.offsets


def test_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        expand([str(tmp_path / "missing")])
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a multilog directory"):
        expand([str(tmp_path / "plain")])
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError):
        list(read_batches(str(bad)))


def test_unreadable_file(tmp_path):
    if os.geteuid() == 0:
        p = tmp_path / "dir-as-file"
        p.mkdir()
        with pytest.raises(InputError):
            list(read_batches(str(p)))
    else:
        p = tmp_path / "f"
        p.write_bytes(b"x\n")
        p.chmod(0)
        with pytest.raises(InputError):
            list(read_batches(str(p)))


@pytest.mark.parametrize("pack", [gzip.compress, lzma.compress])
def test_a_truncated_archive_keeps_what_was_read_before_the_damage(tmp_path, pack):
    """Found by probing replay/parse on a half-copied @….s.gz: read(1 MiB) on a
    decompressor decodes until it has 1 MiB and drops it all when the stream ends
    early, so an archive under 1 MiB gave no line at all (and only the error)."""
    from conftest import FIXTURES

    real = [ln.encode() for ln in (FIXTURES / "track" / "fehcom_sqmail_logging_chapter.txt")
            .read_text().splitlines() if ln and not ln.startswith("#")]
    lines = [b"%s %d" % (real[i % len(real)], i) for i in range(3000)]
    data = b"".join(ln + b"\n" for ln in lines)
    assert len(data) < shipper.reader.CHUNK
    packed = pack(data)
    p = tmp_path / "@400000005a4a8d2b0a8c2f6c.s.gz"
    p.write_bytes(packed[: len(packed) // 2])
    got = []
    with pytest.raises(InputError, match=p.name):
        for b in read_batches(str(p)):
            got.append(b)
    lines_got, offsets, _, partial = _joined(got)
    assert len(lines_got) > 500  # the first half, about
    assert lines_got[:-1] == lines[: len(lines_got) - 1]
    assert lines[len(lines_got) - 1].startswith(lines_got[-1])
    assert partial == len(lines_got) - 1  # cut by the damage
    assert offsets[: 3] == [0, len(lines[0]) + 1, len(lines[0]) + len(lines[1]) + 2]


def test_a_line_multilog_cut_at_a_rotation_is_joined_as_live(tmp_path):
    """Found comparing replay with a live run: multilog rotates in the middle of a line
    longer than ~2000 bytes (the archive ends without a newline, the next file starts
    with the rest, unstamped). The follower joins the two; parse, replay and track gave
    the head (flagged partial) and the tail (a line of its own, 'unparsed', with no
    stamp) instead: 523 records for 300 lines where the live run sent 373."""
    from conftest import FIXTURES

    from shipper.reader import multilog_files, read_joined

    multilog = require_binary("multilog")
    # source: tests/fixtures/track/fehcom_sqmail_logging_chapter.txt (qmail-send lines, s/qmail)
    real = [ln.split(" ", 2)[2] for ln in (FIXTURES / "track" / "fehcom_sqmail_logging_chapter.txt")
            .read_text().splitlines()[1:5]]
    long = real[3].replace("250_OK", "250_OK_" + "x" * 6000)  # a remote's long reply
    texts = [*real[:3], long, *real[:3], long, *real[:3]]
    d = tmp_path / "send"
    subprocess.run([multilog, "t", "s4096", "n99", str(d)], input="".join(t + "\n" for t in texts).encode(),
                   check=True, timeout=30)
    files = multilog_files(str(d))
    assert len(files) > 3
    batches = list(read_joined(files))
    lines = [ln for b in batches for ln in b.lines]
    assert [ln.split(b" ", 1)[1].decode() for ln in lines] == texts
    joined = [(b.source, b.offsets[b.continued]) for b in batches if b.continued is not None]
    assert len(joined) == 2 and all(b.partial is None for b in batches)
    # each at its head's place: the archive it starts in, as the live follower names it
    for src, off in joined:
        with open(src, "rb") as f:
            f.seek(off)
            assert f.read(26)[:1] == b"@" and f.read().find(b"\n") < 0
    # one file at a time (parse of single files, a .u file's end): no join
    single = [ln for f in files for b in read_joined([f]) for ln in b.lines]
    assert len(single) > len(lines)


def test_a_joined_line_longer_than_max_line_is_cut_and_flagged(tmp_path):
    """The joined line was cut to max_line with no flag: the parser, seeing exactly
    max_line bytes, could not tell. `shipper parse` gives it both flags."""
    from shipper.reader import multilog_files, read_joined

    multilog = require_binary("multilog")
    long = "delivery 1: success: 250_OK_" + "x" * 6000
    d = tmp_path / "send"
    subprocess.run([multilog, "t", "s4096", "n99", str(d)], input=f"new msg 1\n{long}\nend msg 1\n".encode(),
                   check=True, timeout=30)
    files = multilog_files(str(d))
    assert len(files) > 1
    batches = list(read_joined(files, max_line=5000))
    got = [(ln, i in (b.truncated or ()), i == b.continued) for b in batches for i, ln in enumerate(b.lines)]
    assert [(len(ln) if cut else ln[26:], cut, cont) for ln, cut, cont in got] == [
        (b"new msg 1", False, False), (5000, True, True), (b"end msg 1", False, False)]
    out = subprocess.run([sys.executable, "-m", "shipper", "parse", "--max-line", "5000", str(d)],
                         capture_output=True, check=True, timeout=60).stdout.splitlines()
    flags = [orjson.loads(ln)["flags"] for ln in out]
    assert flags == [[], ["truncated", "continuation"], []]


@pytest.mark.parametrize("max_line", [64 * 1024, 5000])
def test_a_line_longer_than_a_whole_file_is_joined_across_three_files(tmp_path, max_line):
    """Found by a tester: a line longer than multilog's size limit spans three files, the
    middle one without a newline; parse and replay gave its head (partial) and the rest
    (a line of its own, 'unparsed'). Joined as live; cut at max_line and flagged when longer,
    its rest not a line of its own."""
    from shipper.reader import multilog_files, read_joined

    multilog = require_binary("multilog")
    long = "seq 2 " + "x" * 10000
    d = tmp_path / "log"
    subprocess.run([multilog, "t", "s4096", str(d)], input=f"seq 1 short\n{long}\nseq 3 short\n".encode(),
                   check=True, timeout=30)
    files = multilog_files(str(d))
    assert len(files) >= 3
    batches = list(read_joined(files, max_line=max_line))
    got = [(ln, i in (b.truncated or ()), i == b.continued, i == b.partial)
           for b in batches for i, ln in enumerate(b.lines)]
    assert [ln[26:32] for ln, *_ in got] == [b"seq 1 ", b"seq 2 ", b"seq 3 "]
    ln, cut, cont, partial = got[1]
    assert (cont, partial, cut) == (True, False, max_line < len(long) + 26)
    assert ln[26:] == long.encode()[:max_line - 26]
    assert batches[[i for i, b in enumerate(batches) if b.continued is not None][0]].source == files[0]


def test_an_archive_of_binary_data_is_said_not_read(tmp_path):
    """Found by a tester: a processor writing zstd (or ciphertext) left archives that parse
    and replay cut at newlines into garbage records, without a word. Such a file is said
    (InputError) and not read; gzip, bzip2 and xz are decoded."""
    from shipper.reader import BinaryInput, read_joined

    d = tmp_path / "log"
    d.mkdir()
    (d / "@400000006b0b94c900000000.s").write_bytes(b"Salted__" + os.urandom(4000))
    (d / "@400000006b0b94ca00000000.s").write_bytes(gzip.compress(b"@400000006b0b94c900000001 hi\n"))
    (d / "current").write_bytes(b"@400000006b0b94cb00000000 there\n")
    errs: list = []
    files = sorted(str(p) for p in d.iterdir())
    lines = [ln for b in read_joined(files, on_error=lambda p, e: errs.append((p, e))) for ln in b.lines]
    assert lines == [b"@400000006b0b94c900000001 hi", b"@400000006b0b94cb00000000 there"]
    assert len(errs) == 1 and errs[0][0] == files[0] and isinstance(errs[0][1], BinaryInput)
    assert "binary" in str(errs[0][1]) and "\n" not in str(errs[0][1])


def test_the_end_of_a_u_file_is_not_joined(tmp_path):
    """A .u file ends mid-line because multilog died: what follows is not its tail."""
    from shipper.reader import read_joined

    d = tmp_path / "log"
    d.mkdir()
    (d / "@400000005a4a8d2b0a8c2f6c.u").write_bytes(b"@400000005a4a8d2b0a8c2f6c status: local 1/10 re")
    (d / "current").write_bytes(b"mote 0/20\n@400000005a4a8d2c0a8c2f6c status: local 0/10 remote 0/20\n")
    batches = list(read_joined([str(d / "@400000005a4a8d2b0a8c2f6c.u"), str(d / "current")]))
    assert [b.partial for b in batches] == [0, None] and all(b.continued is None for b in batches)
    assert [len(b.lines) for b in batches] == [1, 2]


def test_an_archive_named_before_its_directory_is_read_once_not_dropped(tmp_path):
    """`replay dir/@….s dir` (or track, stats): the directory's set replaced the one the
    archive had started, and the archive, already seen, was read by neither."""
    from shipper.reader import input_sets

    d = tmp_path / "send"
    d.mkdir()
    arch = d / "@400000003e382910351ebf4c.s"
    arch.write_bytes(b"@400000003e382910351ebf4c new msg 1\n")
    (d / "current").write_bytes(b"@400000003e382911351ebf4c new msg 2\n")
    for args in ([str(arch), str(d)], [str(d), str(arch)], [str(d / "current"), str(arch), str(d)]):
        (st,) = input_sets(args)
        assert st.multilog and st.files == [str(arch), str(d / "current")], args


def test_a_link_or_fifo_in_a_log_directory_is_not_read(tmp_path):
    """A security review: whoever can write a log directory put a link named like an
    archive to /etc/shadow there, and `shipper replay`, run as root, sent it to the
    SIEM (the daemon refused it); a FIFO so named hung the command."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:20228:0:99999:7:::\n")
    d = tmp_path / "log"
    d.mkdir()
    (d / "current").write_bytes(b"@400000005a49ba341eefa7a5 status: local 0/10 remote 0/20\n")
    for what in ("link", "fifo"):
        name = d / "@400000005a49ba341eefa7a4.s"
        if what == "link":
            os.symlink(secret, name)
        else:
            os.mkfifo(name)
        with pytest.raises(InputError, match=r"@400000005a49ba341eefa7a4\.s: (a symbolic link|not a regular file) "
                                              r"in a log directory: not read"):
            expand([str(d)])
        r = subprocess.run([sys.executable, "-m", "shipper", "parse", str(d)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and "secret" not in r.stdout and "not read" in r.stderr, r.stderr
        name.unlink()


def test_a_file_swapped_for_a_link_after_the_listing_is_not_read(tmp_path):
    """A security re-test: the listing checked each file, the open came later and
    followed a link the directory's owner put in place of current meanwhile."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:20228:0:99999:7:::\n")
    d = tmp_path / "log"
    d.mkdir()
    (d / "current").write_bytes(b"@400000005a49ba341eefa7a5 status: local 0/10 remote 0/20\n")
    files = expand([str(d)])
    (d / "current").unlink()
    os.symlink(secret, d / "current")
    with pytest.raises(InputError, match="a symbolic link in a log directory: not read"):
        list(read_batches(files[-1]))
