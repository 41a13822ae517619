"""The disk queue against damage done to its files by hand or by the system (found by a
black-box tester with the daemon): stray files named like segments, segments deleted
while stopped or while running, unreadable segments, a zeroed tail. Each test runs as
the daemon does: append, make durable, acknowledge some, close, damage, reopen, read
everything; and checks exactly which seqs come back and what is counted lost."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from conftest import without_root_powers

from shipper.buffer_tool import inspect, repair, verify
from shipper.diskqueue import HEADER_SIZE, DiskQueue, list_segments

SEG = 64 << 10  # the smallest segment size: many segments from few records
N = 1500  # ~216 bytes framed each: 5 segments


def rec(i: int) -> bytes:
    return orjson.dumps({"time_unix_ns": 1_700_000_000_000_000_000 + i, "n": i, "pad": "x" * 150})


def open_q(path: Path, **kw: object) -> DiskQueue:
    opts: dict[str, object] = {"segment_bytes": SEG, "max_bytes": 64 << 20, "fsync": "always"}
    opts.update(kw)
    return DiskQueue.open(path, **opts)  # type: ignore[arg-type]


def make(path: Path, ack: int, **kw: object) -> list[Path]:
    """A buffer of N records, acknowledged up to ``ack``, closed; its segment files."""
    q = open_q(path, **kw)
    for i in range(0, N, 50):
        q.append([rec(j) for j in range(i, i + 50)])
    q.sync()
    q.read(ack)
    q.ack(ack)
    q.close()
    return [p for _, p in list_segments(path)]


def drain(q: DiskQueue) -> list[int]:
    """Every seq the reader gives, each acknowledged as a sink would."""
    got: list[int] = []
    for _ in range(1000):
        items = q.read(333, 1 << 20)
        if not items:
            break
        got += [s for s, _ in items]
        q.ack(items[-1][0])
    return got


def run(fn, path: Path) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    return fn(path, out=out), out.getvalue()


def said(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# -- 1. a file named like a segment whose content does not agree with its name ----------


def test_a_stray_file_named_like_a_segment_is_set_aside_and_nothing_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`echo junk > BUF/00000000000000000002.seg` next to segment 1: the queue deleted
    segment 1 at the first ack (its name said segment 2 held seq 2 on), counted 1,654
    records lost, then read() spun for good at seq 201; verify said 1,852 lost."""
    segs = make(tmp_path, 200)
    assert segs[0].name == "00000000000000000001.seg" and len(segs) >= 4
    stray = tmp_path / "00000000000000000002.seg"
    stray.write_bytes(b"junk\n")

    code, text = run(verify, tmp_path)  # says what the start will do
    assert code == 1
    assert "00000000000000000002.seg: does not hold what its name says" in text, text
    assert inspect(tmp_path).lost_records == 0  # it said 1,852, before the first record

    caplog.set_level(logging.WARNING, logger="shipper.buffer")
    q = open_q(tmp_path)
    assert drain(q) == list(range(201, N + 1))  # every intact record, once
    assert q.stats.corrupt_records == 0 and q.stats.segments_set_aside == 1 and q.depth == 0
    assert (tmp_path / "00000000000000000002.seg.corrupt").read_bytes() == b"junk\n"
    assert not stray.exists()
    assert len(said(caplog, "00000000000000000002.seg")) == 1
    q.close()
    assert run(verify, tmp_path)[0] == 0
    q = open_q(tmp_path)  # nothing more to do, nothing read twice
    assert q.stats.repairs == 0 and drain(q) == []
    q.close()


def test_a_copy_under_another_segments_name_and_an_overlapping_one_are_set_aside(
        tmp_path: Path) -> None:
    """A segment's first record must be the seq of its name, and its seqs must not run
    into the next segment's; repair does what a start does, and then nothing is left."""
    segs = make(tmp_path, 0)
    raw = segs[0].read_bytes()
    (tmp_path / "00000000000000000002.seg").write_bytes(raw)  # cp of segment 1
    # the second half of segment 1 under the name of its first record: a valid segment by
    # itself, whose seqs overlap segment 1's
    pos, seq = 0, 0
    while seq != 100:  # to the data frame of seq 100 (markers have high kind bits)
        ln = int.from_bytes(raw[pos:pos + 4], "little")
        pos += HEADER_SIZE + ln
        seq = int.from_bytes(raw[pos + 8:pos + 16], "little")
    assert seq == 100
    (tmp_path / f"{seq:020d}.seg").write_bytes(raw[pos:])

    code, text = run(repair, tmp_path)
    assert code == 0, text
    assert text.count("does not hold what its name says") == 2, text
    assert "its first record is seq 1" in text and "overlap" in text
    assert run(verify, tmp_path)[0] == 0
    q = open_q(tmp_path)
    assert drain(q) == list(range(1, N + 1))
    assert q.stats.corrupt_records == 0
    q.close()


def test_a_stray_file_named_past_the_last_segment_does_not_move_the_seqs(tmp_path: Path) -> None:
    make(tmp_path, 0)
    (tmp_path / "00000000000000099999.seg").write_bytes(b"junk\n")
    q = open_q(tmp_path)
    assert q.last_seq == N and drain(q) == list(range(1, N + 1))
    assert q.stats.corrupt_records == 0 and q.stats.segments_set_aside == 1
    assert q.append([rec(N)]).first_seq == N + 1
    q.close()


# -- 2. the oldest unacknowledged segment deleted while stopped --------------------------


def test_the_oldest_unacknowledged_segment_deleted_while_stopped_is_counted_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its records were taken as acknowledged, silently, and verify said OK."""
    segs = make(tmp_path, 100)
    second = int(segs[1].name[:20])
    segs[0].unlink()

    code, text = run(verify, tmp_path)
    assert code == 1 and f"records 101..{second - 1} are missing" in text, text

    caplog.set_level(logging.WARNING, logger="shipper.buffer")
    q = open_q(tmp_path)
    assert q.stats.corrupt_records == second - 101
    assert said(caplog, f"records 101..{second - 1} are missing")
    assert drain(q) == list(range(second, N + 1))
    q.close()
    q = open_q(tmp_path)  # counted once
    assert q.stats.corrupt_records == 0 and drain(q) == []
    q.close()
    assert run(verify, tmp_path)[0] == 0


def test_a_segment_delivered_just_before_a_crash_is_not_counted_lost(tmp_path: Path) -> None:
    """The other side of the test above: under fsync="interval" an ack deletes a
    delivered segment (renamed, unlinked by the flusher after the state says so); a
    crash before the state was written leaves the state's ack behind the segments."""
    q = open_q(tmp_path, fsync="interval", fsync_interval_ms=60_000)
    for i in range(0, N, 50):
        q.append([rec(j) for j in range(i, i + 50)])
    q.sync()
    second = list_segments(tmp_path)[1][0]
    q.read(second)
    q.ack(second)  # segment 1 delivered
    q._stop_flusher.set()  # a crash: no flush, no clean close
    q._close_fds()
    q = open_q(tmp_path)
    assert q.stats.corrupt_records == 0
    assert drain(q) == list(range(second, N + 1))  # its last ack forgotten: sent again
    q.close()


# -- 3. a segment that cannot be read ---------------------------------------------------


UNREADABLE_CHILD = textwrap.dedent("""
    import json, logging, os, sys, time
    from pathlib import Path
    import orjson
    import shipper.diskqueue as dq
    from shipper import buffer_tool
    import io

    dq.UNREADABLE_GIVE_UP_SECONDS = 0.5  # 30 s in the daemon
    path, again = Path(sys.argv[1]), sys.argv[2] == "again"
    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger("shipper.buffer").addHandler(Keep())
    def open_q():
        return dq.DiskQueue.open(path, segment_bytes=64 << 10, fsync="always")
    q = open_q()
    for i in range(0, 1500, 50):
        q.append([orjson.dumps({"n": j, "pad": "x" * 150}) for j in range(i, i + 50)])
    q.close()  # reopened below: the records are read from the files, not from memory
    firsts = [first for first, _ in dq.list_segments(path)]
    victim = dq.list_segments(path)[1][1]
    os.chmod(victim, 0)
    out = io.StringIO()
    code = buffer_tool.verify(path, out=out)
    verify = [code, out.getvalue()]
    q = open_q()
    got, empty = [], 0
    start = time.monotonic()
    while time.monotonic() - start < 5:
        items = q.read(333, 1 << 20)
        if items:
            got += [s for s, _ in items]
            q.ack(items[-1][0])
        elif q.unread == 0:
            break
        else:
            empty += 1
            if again and empty == 2:
                os.chmod(victim, 0o600)  # the admin puts the mode right
            time.sleep(0.05)
    print(json.dumps({"firsts": firsts, "got": got, "lost": q.stats.corrupt_records, "lines": lines,
                      "victim": victim.name, "left": sorted(os.listdir(path)),
                      "verify": verify, "depth": q.depth}))
    q.close()
""")


def unreadable(tmp_path: Path, again: bool) -> dict:  # type: ignore[type-arg]
    """Run UNREADABLE_CHILD where file modes hold (root: without its capabilities)."""
    r = subprocess.run([*without_root_powers(), sys.executable, "-c", UNREADABLE_CHILD,
                        str(tmp_path / "q"), "again" if again else "never"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": "."},
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_an_unreadable_segment_is_waited_for_then_set_aside_and_counted(tmp_path: Path) -> None:
    """chmod 000 of a segment: read() raised PermissionError, the pipeline failed, exit
    1, a crash loop, nothing behind it shipped. Now: said once, waited for (30 s in the
    daemon), then set aside, its records counted lost, and those behind it flow."""
    out = unreadable(tmp_path, again=False)
    first, nxt = out["firsts"][1:3]
    assert out["got"] == [s for s in range(1, 1501) if not first <= s < nxt]
    assert out["lost"] == nxt - first and out["depth"] == 0
    assert out["victim"] + ".corrupt" in out["left"]
    assert sum("cannot be read" in line for line in out["lines"]) == 1, out["lines"]
    assert sum(f"records {first}..{nxt - 1} are missing" in line for line in out["lines"]) == 1
    code, text = out["verify"]
    assert code == 1 and "Errno" not in text
    assert f"{out['victim']}: cannot be read (EACCES Permission denied)" in text, text


def test_an_unreadable_segment_made_readable_again_loses_nothing(tmp_path: Path) -> None:
    out = unreadable(tmp_path, again=True)
    assert out["got"] == list(range(1, 1501)) and out["lost"] == 0
    assert any("can be read again" in line for line in out["lines"]), out["lines"]


# -- 4. a segment deleted while running -------------------------------------------------


def test_a_segment_deleted_while_running_is_counted_as_a_restart_would(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """rm of a segment not yet read: read() raised FileNotFoundError, the daemon exit 1."""
    make(tmp_path, 0)
    q = open_q(tmp_path)  # reads from the files (nothing in memory since the reopen)
    got = [s for s, _ in q.read(100, 1 << 20)]
    q.ack(got[-1])
    segs = list_segments(tmp_path)
    (first, victim), (nxt, _) = segs[2], segs[3]
    victim.unlink()
    caplog.set_level(logging.WARNING, logger="shipper.buffer")
    got += drain(q)
    assert got == [s for s in range(1, N + 1) if not first <= s < nxt]
    assert q.stats.corrupt_records == nxt - first and q.depth == 0
    assert len(said(caplog, f"records {first}..{nxt - 1} are missing")) == 1
    q.close()
    q = open_q(tmp_path)  # counted once
    assert q.stats.corrupt_records == 0 and drain(q) == []
    q.close()


# -- 5. a zeroed tail after a clean stop ------------------------------------------------


def test_a_zeroed_tail_with_durable_records_is_not_called_a_torn_write(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The last 8 KiB of the tail zero-filled after a clean stop: recovery said "cutting
    ... torn tail ... never reported durable", then that the same records were reported
    durable and are not on disk."""
    segs = make(tmp_path, 0)
    tail = segs[-1]
    size = tail.stat().st_size
    with open(tail, "r+b") as f:
        f.seek(size - 8192)
        f.write(bytes(8192))
    caplog.set_level(logging.WARNING, logger="shipper.buffer")
    q = open_q(tmp_path)
    got = drain(q)
    lost = N - len(got)
    assert got == list(range(1, len(got) + 1)) and 30 <= lost <= 40
    assert q.stats.corrupt_records == lost
    cut = said(caplog, "cutting")
    assert len(cut) == 1 and "never reported durable" not in cut[0], cut
    assert "damaged tail" in cut[0] and "reported durable" in cut[0]
    q.close()
