"""Gaps polling cannot see by name, and bytes multilog deleted before they were read.

The real multilog writes, with a small ``s`` and ``n``, while the follower is driven
directly and does not look (the reading paused, as behind a full buffer): files made
and deleted between two of its looks must still be said (a tester's daemon run at
watch = "poll" lost 3,099 lines without a word), and deleted bytes must not count as
unread.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shipper.follower import Gap, LineBatch, MultilogFollower, MultilogSource
from shipper.watcher import IN_CREATE, IN_Q_OVERFLOW
from tests.conftest import require_binary, stop_process, wait_until
from tests.test_follower_model import drain

PAD = b"x" * 60
LINE = 26 + len(b"seq %08d " % 0 + PAD) + 1  # each line as multilog t writes it


class Multilog:
    """The real multilog on a pipe: lines go in when the test says."""

    def __init__(self, d: Path, *script: str) -> None:
        self.d = d
        self.proc = subprocess.Popen([require_binary("multilog"), *script, str(d)],
                                     stdin=subprocess.PIPE)

    def write(self, first: int, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(b"seq %08d " % i + PAD + b"\n" for i in range(first, first + n)))
        self.proc.stdin.flush()
        last = b"seq %08d " % (first + n - 1)
        wait_until(f"multilog wrote line {first + n - 1}", lambda: self._holds(last), timeout=10)

    def _holds(self, data: bytes) -> bool:
        try:
            names = [n for n in os.listdir(self.d) if n == "current" or n[:1] == "@"]
        except OSError:
            return False
        for n in names:
            try:
                if data in (self.d / n).read_bytes():
                    return True
            except OSError:
                pass
        return False

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        stop_process(self.proc)


def seqs(items: list[LineBatch | Gap]) -> list[int]:
    return [int(ln[30:38]) for it in items if isinstance(it, LineBatch) for ln in it.lines]


def check_walk(items: list[LineBatch | Gap], first: int) -> None:
    """Each run of missing lines has a gap before the next line read: exact gaps say
    exactly its bytes, lower bounds no more than them."""
    expect, exact, lower, inexact = first, 0, 0, False
    for it in items:
        if isinstance(it, Gap):
            if it.exact:
                exact += it.bytes_lost or 0
            else:
                inexact, lower = True, lower + (it.bytes_lost or 0)
            continue
        for ln in it.lines:
            s = int(ln[30:38])
            missing = (s - expect) * LINE
            if inexact:
                assert missing >= exact + lower, f"lines {expect}..{s - 1}: gaps say more was lost"
            else:
                assert missing == exact, f"lines {expect}..{s - 1} missing, exact gaps say {exact} bytes"
            exact, lower, inexact, expect = 0, 0, False, s + 1


def _walked(items: list[LineBatch | Gap], first: int, last: int) -> list[Gap]:
    """The gaps of ``items``, once their lines (``first``..``last``, in order, each
    once) and gaps are checked to account for every line missing (check_walk)."""
    got = seqs(items)
    assert got == sorted(set(got)) and got[-1] == last
    check_walk(items, first)
    return [it for it in items if isinstance(it, Gap)]


def _unseen_rotations(d: Path, overflow: bool) -> list[Gap]:
    """Lines 0..19 read, then ~25 rotations (n3 keeps 2 archives) the follower does not
    look at: by polling, or by inotify whose queue overflowed. The gaps, walked."""
    ml = Multilog(d, "t", "s4096", "n3")
    try:
        ml.write(0, 20)
        f = MultilogFollower(str(d), None, start="all")
        if overflow:
            f.names_seen = lambda: True  # an inotify watch is on: names come by events
        assert seqs(drain(f)) == list(range(20)) and f.live
        ml.write(20, 600)  # the follower does not look meanwhile
        if overflow:
            f.on_change(None, IN_Q_OVERFLOW)  # their events lost
        items = drain(f)
    finally:
        ml.stop()
        if f.reader is not None:
            f.reader.close()
    assert len(seqs(items)) < 600, "multilog's n3 must have deleted files never read"
    gaps = _walked(items, 20, 619)
    assert gaps and not any(g.exact for g in gaps)
    assert f.gaps == len(gaps)
    return gaps


def test_poll_files_made_and_deleted_between_two_looks_are_a_gap(tmp_path):
    """The file read to its end is gone with its archive, never named, and so are the
    files after it but the last two. Nothing ties the oldest archive left to the file
    read: a gap of unknown size, said as polling's, not silence."""
    gaps = _unseen_rotations(tmp_path / "log", overflow=False)
    assert any(g.bytes_lost is None and "polling" in g.reason for g in gaps)


def test_inotify_queue_overflow_is_a_gap_like_polling(tmp_path):
    """Watching by inotify, but the kernel's event queue overflowed: files multilog made
    and deleted meanwhile were never named. The overflow makes the next look compare
    listings as a poll does: a gap that says why, not silence."""
    gaps = _unseen_rotations(tmp_path / "log", overflow=True)
    assert any("inotify queue overflowed" in g.reason for g in gaps)
    assert not any("polling" in g.reason for g in gaps)


def test_poll_current_deleted_unread_is_at_least_its_size(tmp_path):
    """Behind, reading the oldest archive, when multilog rotates and deletes all the
    directory held: the archive listed is lost exactly, the current never read at least
    by its size, and what came after it unseen is not claimed exact."""
    d = tmp_path / "log"
    ml = Multilog(d, "t", "s4096", "n3")
    try:
        ml.write(0, 100)
        cur = (d / "current").stat().st_size
        assert cur > 0
        f = MultilogFollower(str(d), None, start="all", batch_lines=5, chunk=256)
        first = seqs(f.poll(max_items=1))
        assert first and f.reader is not None and not f.live
        ml.write(100, 600)
        items = drain(f)
    finally:
        ml.stop()
        if f.reader is not None:
            f.reader.close()
    gaps = _walked(items, first[-1] + 1, 699)
    unread = [g for g in gaps if not g.exact and g.bytes_lost == cur]
    assert unread and "polling" in unread[0].reason and "at least" in unread[0].reason


def test_archives_named_by_events_and_deleted_count_as_deleted_not_unread(tmp_path):
    """inotify names each archive as multilog makes it (sized then), no listing since
    (the reading paused): those multilog's n limit deleted are deleted_unread, not
    unread (a tester's r8: 6.4 MB unread with 2.7 MB on disk, 0 deleted)."""
    d = tmp_path / "log"
    ml = Multilog(d, "t", "s4096", "n3")
    named: dict[str, tuple[int, int]] = {}  # name -> (size, inode) when named
    try:
        ml.write(0, 10)
        f = MultilogFollower(str(d), None, start="all")
        assert seqs(drain(f)) == list(range(10)) and f.live
        for i in range(8):  # a rotation or two each, named as the watcher's events do
            ml.write(10 + 30 * i, 30)
            for name in sorted(os.listdir(d)):
                if name[:1] == "@" and name not in named:
                    st = os.stat(d / name)
                    f.on_change(name, IN_CREATE)
                    named[name] = (st.st_size, st.st_ino)
        r = f.reader
        assert r is not None
        # the file being read is still there for us through its descriptor: not lost
        gone = [size for n, (size, ino) in named.items() if not (d / n).exists() and ino != r.ident[1]]
        assert len(gone) >= 2, "multilog's n3 must have deleted archives named before"
        unread = f.unread_bytes()
        assert f.deleted_unread == (len(gone), sum(gone))
        on_disk = (os.fstat(r.fd).st_size - r.raw_pos + (d / "current").stat().st_size
                   + sum(p.stat().st_size for p in d.glob("@*") if p.stat().st_ino != r.ident[1]))
        assert unread <= on_disk, f"{unread} bytes unread, {on_disk} on disk"
        items = drain(f)
    finally:
        ml.stop()
        if f.reader is not None:
            f.reader.close()
    check_walk(items, 10)
    assert [it for it in items if isinstance(it, Gap)]
    f.unread_bytes()
    assert f.deleted_unread == (0, 0)


async def test_the_source_tells_its_followers_whether_names_come_by_events(tmp_path):
    """With inotify every archive is named as it appears (gaps are exact, as before); when
    polling (asked for, or inotify's fallback), listings that share no file are a gap."""
    d = tmp_path / "log"
    d.mkdir()
    (d / "current").write_bytes(b"")
    for watch, seen in (("poll", False), ("inotify", True)):
        src = MultilogSource([str(d)], None, watch=watch)
        try:
            src._launch()
            f = src.followers[str(d)]
            assert isinstance(f, MultilogFollower) and f.names_seen is not None
            assert f.names_seen() is seen
        finally:
            await src.close()
