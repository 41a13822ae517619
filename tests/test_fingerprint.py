"""File ids (shipper.fingerprint): unique for files that begin with a cut line's tail,
unchanged for the others, settled once and for all."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from shipper.fingerprint import FINGERPRINT_SCAN, fingerprint, legacy_fingerprint
from shipper.follower import Gap, LineBatch, MultilogFollower
from shipper.reader import multilog_files, read_joined
from tests.conftest import require_binary


def drain(f, rounds: int = 200) -> list:
    out = []
    for _ in range(rounds):
        got = f.poll()
        if not got:
            break
        out += got
    return out


def test_a_file_whose_first_line_is_stamped_keeps_its_id():
    """Event ids of ordinary files do not change: the hash of the first line (64 bytes)."""
    for head in (b"@400000006b02a2aa2bcb057c new msg 1\n@400000006b02a2aa2bcb057d x\n",
                 b"2024-01-01_12:34:56.12345 new msg 1\nmore\n",
                 b"2024-01-01 12:34:56.123456789 new msg 1\nmore\n",
                 b"@400000006b02a2aa2bcb057c " + b"y" * 200 + b"\n",
                 b"status: local 0/10 remote 0/20\nstatus: local 1/10 remote 0/20\n"):  # unstamped log
        key = head[:min(head.index(b"\n"), 64)]
        assert fingerprint(head) == hashlib.blake2b(key, digest_size=8).hexdigest()
        assert fingerprint(head) == legacy_fingerprint(head)


def test_files_that_begin_with_equal_tails_get_distinct_ids():
    """Found by a tester: files that begin with the unstamped tail of a line cut at a
    rotation (runs of 'x') shared one file id, and so lines an event id."""
    tails = [b"x" * n + b"\n" for n in (10, 63, 64, 100, 3000)]
    for tail in tails:
        a = tail + b"@400000006b02a2aa2bcb057c seq 1\n"
        b = tail + b"@400000006b02a2aa2bcb057d seq 1\n"
        c = tail + b"2024-01-01_12:34:56.12345 seq 1\n"
        assert len({fingerprint(a), fingerprint(b), fingerprint(c)}) == 3
        assert legacy_fingerprint(a) == legacy_fingerprint(b)


def test_an_id_once_settled_never_changes_as_the_file_grows():
    rnd = random.Random(3)
    stamps = [b"@400000006b02a2aa2bcb057c ", b"2024-01-01_12:34:56.12345 ", b""]
    for _ in range(3000):
        parts = [b"x" * rnd.randint(0, 300) + b"\n"] if rnd.random() < 0.6 else []
        parts += [rnd.choice(stamps) + b"y" * rnd.randint(0, 90) + b"\n" for _ in range(rnd.randint(0, 4))]
        data = b"".join(parts)
        final = fingerprint(data, complete=True)
        for n in range(len(data) + 1):
            got = fingerprint(data[:n])
            assert got is None or got == final, (data[:n], data)


@pytest.mark.parametrize("logger", ["multilog", "svlogd"])
def test_real_logger_files_that_begin_with_a_tail_give_unique_event_ids(tmp_path, logger):
    """Long lines of 'x' through a real logger: each file after a cut begins with a tail of
    x's. Every line read has its own (file id, offset), live as in replay."""
    d = tmp_path / "log"
    rnd = random.Random(5)
    data = b"".join(b"seq %d " % i + b"x" * rnd.randint(3000, 9000) + b"\n" for i in range(60))
    if logger == "multilog":
        subprocess.run([require_binary("multilog"), "t", "s4096", "n999", str(d)], input=data,
                       check=True, timeout=30)
    else:
        d.mkdir()
        (d / "config").write_text("s4096\nn999\n")
        subprocess.run([require_binary("svlogd"), "-tt", str(d)], input=data, check=True, timeout=30)
    files = multilog_files(str(d))
    starts = [Path(p).read_bytes()[:64] for p in files]
    assert len(starts) - len(set(starts)) > 5  # many files begin alike: runs of x
    f = MultilogFollower(str(d), None, start="all")
    items = drain(f)
    f.reader.close()
    assert not [it for it in items if isinstance(it, Gap)]
    live = [(it.file_id, off) for it in items if isinstance(it, LineBatch) for off in it.offsets]
    assert len(live) == 60 and len(set(live)) == 60
    ids = {fid for fid, _ in live}
    replay = [(b.file_id, off) for b in read_joined(files) for off in b.offsets]
    assert replay == live
    # files that hold a line of their own (a piece of a line alone, all x, is alike another,
    # but none of its lines is its own: it is in the line joined in the file before), whose
    # first stamped line starts within FINGERPRINT_SCAN (a longer tail keeps the legacy id)
    per_file = [fingerprint(data, complete=True) for p in files
                if 0 <= (nl := (data := Path(p).read_bytes()).find(b"\n")) < FINGERPRINT_SCAN - 27
                and len(data) > nl + 27]
    assert None not in per_file and len(set(per_file)) == len(per_file) > 20  # (0.1.0: many alike)
    assert None not in ids


def test_a_position_saved_by_0_1_0_in_a_file_that_begins_with_a_tail_is_taken_up(tmp_path):
    """The file being read when the previous version stopped is named in its position by
    the old id: recognised (not taken for gone, a gap, and read again or skipped)."""
    d = tmp_path / "log"
    d.mkdir()
    first = b"x" * 100 + b"\n@400000006000000000000001 n1\n"
    (d / "current").write_bytes(first)
    f = MultilogFollower(str(d), None, start="all")
    drain(f)
    state = f.state()
    f.reader.close()
    assert state["f"]["fid"] == fingerprint(first) != legacy_fingerprint(first)
    state["f"]["fid"] = legacy_fingerprint(first)  # as 0.1.0 saved it
    with open(d / "current", "ab") as fh:
        fh.write(b"@400000006000000000000002 n2\n")
    f = MultilogFollower(str(d), state, start="all")
    items = drain(f)
    f.reader.close()
    assert not [it for it in items if isinstance(it, Gap)]
    assert [ln for it in items for ln in it.lines] == [b"@400000006000000000000002 n2"]
    # its lines keep 0.1.0's id: read again after a kill -9 of 0.1.0, a SIEM knows them
    # by the event ids it had (an upgrade hunt: 45 of 91 re-sent lines had new ids)
    assert {it.file_id for it in items} == {legacy_fingerprint(first)}


def test_a_pending_file_saved_by_0_1_0_is_matched_with_its_processor_s_archive(tmp_path):
    """A raw file read to its end before the stop, named in ``pend`` by the old id, whose
    archive is a processor's output (``!gzip``: another inode): skipped as ours, not read
    again."""
    import gzip

    d = tmp_path / "log"
    d.mkdir()
    raw = b"x" * 100 + b"\n@400000006000000000000001 n1\n"
    (d / "@400000006000000000000002.s").write_bytes(gzip.compress(raw))
    (d / "current").write_bytes(b"@400000006000000000000003 n3\n")
    st = os.stat(d / "current")
    state = {"v": 1, "done": "@400000006000000000000000", "f": None,
             "pend": [[st.st_dev, st.st_ino + 1, legacy_fingerprint(raw)]],
             "seen": ["@400000006000000000000000"]}
    f = MultilogFollower(str(d), state, start="all")
    items = drain(f)
    f.reader.close()
    assert not [it for it in items if isinstance(it, Gap)]
    assert [ln for it in items for ln in it.lines] == [b"@400000006000000000000003 n3"]


# ------------------------------------------------ mutation audit (session 22): edges

LABEL = b"@4000000052fafd8d3298434c "


def _h(key: bytes) -> str:
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def test_the_key_at_its_edges():
    # an empty first line is unstamped: the id takes the next line too
    assert fingerprint(b"\n" + LABEL + b"x\n") == _h(b"\n" + LABEL + b"x")
    assert legacy_fingerprint(b"\n" + LABEL + b"x\n") == _h(b"")
    # 64 bytes of a stamped first line settle it, its newline need not have come
    line = LABEL + b"y" * (64 - len(LABEL))
    assert fingerprint(line) == legacy_fingerprint(line) == _h(line)
    assert fingerprint(line[:63]) is None and legacy_fingerprint(line[:63]) is None
    # a file that will not grow: its short first line without a newline is the key
    assert fingerprint(LABEL + b"x", complete=True) == legacy_fingerprint(LABEL + b"x", complete=True) == _h(LABEL + b"x")
    assert fingerprint(b"", complete=True) is None and legacy_fingerprint(b"", complete=True) is None
    # an unstamped first line with no newline in FINGERPRINT_SCAN bytes: settled then, by its start
    # (4096 written out: saved positions name files by ids of that many bytes)
    assert fingerprint(b"x" * 4095) is None
    assert fingerprint(b"x" * 4096) == fingerprint(b"x" * 5000) == _h(b"x" * 64)


def test_an_id_settled_near_the_scan_limit_never_changes_as_the_file_grows():
    shapes = [b"y" * 4050 + b"\n" + LABEL + b"z" * 200 + b"\n",  # the second line crosses the limit
              b"y" * 4000 + b"\n" + LABEL + b"q\n" + LABEL + b"r\n",
              b"y" * 4070 + b"\n" + LABEL + b"z\n",  # the second line's stamp crosses it
              b"y" * 5000 + b"\n" + LABEL + b"z\n"]
    for data in shapes:
        final = fingerprint(data, complete=True)
        assert fingerprint(data[:FINGERPRINT_SCAN]) == final  # no byte after the scan counts
        for n in range(3990, len(data) + 1):
            got = fingerprint(data[:n])
            assert got is None or got == final, (n, data[:60])


def test_fingerprints_names_the_legacy_id_only_when_it_differs():
    from shipper.fingerprint import fingerprints

    stamped = LABEL + b"x\n"
    assert fingerprints(stamped) == (_h(LABEL + b"x"), None)
    tail = b"y" * 10 + b"\n" + stamped
    assert fingerprints(tail) == (_h(b"y" * 10 + b"\n" + LABEL + b"x"), _h(b"y" * 10))
    assert fingerprints(b"y" * 10 + b"\n") == (None, None)  # not settled: no legacy id either
