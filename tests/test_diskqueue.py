"""The disk queue: append/read/ack, reopen, dedup, recovery from damage, size cap, disk full."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from shipper.diskqueue import (
    HEADER_SIZE,
    QUARANTINE_NAME,
    RECENT_WRITES_BYTES,
    SLOT_SIZE,
    STATE_NAME,
    DiskQueue,
    QueueFull,
    QueueLocked,
    list_segments,
    read_quarantine,
    walk_segment,
)

ROOT = Path(__file__).resolve().parent.parent
SEG = 64 << 10  # the smallest segment size: many segments from few records


def rec(i: int, size: int = 200) -> bytes:
    """A record like the pipeline's: JSON with an event time, ~size bytes."""
    head = orjson.dumps({"time_unix_ns": 1_700_000_000_000_000_000 + i, "n": i, "pad": ""})
    return head[:-2] + b"x" * max(0, size - len(head)) + b'"}'


def num(payload: bytes) -> int:
    return orjson.loads(payload)["n"]


def fill(q: DiskQueue, start: int, count: int, batch: int = 50, **kw: object) -> None:
    for i in range(start, start + count, batch):
        n = min(batch, start + count - i)
        q.append([rec(j) for j in range(i, i + n)], **kw)  # type: ignore[arg-type]


def drain(q: DiskQueue, ack: bool = True, limit: int = 100_000) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    for _ in range(limit):
        items = q.read(333, 1 << 20)
        if not items:
            break
        got += items
        if ack:
            q.ack(items[-1][0])
    return got


def open_q(path: Path, **kw: object) -> DiskQueue:
    opts: dict[str, object] = {"segment_bytes": SEG, "max_bytes": 64 << 20, "fsync": "always"}
    opts.update(kw)
    return DiskQueue.open(path, **opts)  # type: ignore[arg-type]


def seg_files(path: Path) -> list[Path]:
    return [p for _, p in list_segments(path)]


def disk_blocks(path: Path) -> int:
    return sum((p.stat().st_size + 4095) // 4096 * 4096 for p in path.iterdir())


# -- basics ------------------------------------------------------------------------------


def test_append_read_ack_in_order_and_segments_deleted(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    r = q.append([rec(0), rec(1), rec(2)])
    assert (r.first_seq, r.last_seq, r.accepted, r.skipped, r.dropped) == (1, 3, 3, 0, 0)
    fill(q, 3, 997)
    assert q.last_seq == 1000 and q.depth == 1000 and q.durable_seq == 1000
    assert len(seg_files(tmp_path)) == q.segments > 3  # 1000 x ~216 bytes over 64 KiB segments
    got = drain(q, ack=False)
    assert [s for s, _ in got] == list(range(1, 1001))
    assert [num(p) for _, p in got] == list(range(1000))
    assert got[0][1] == rec(0)
    assert q.read(10, 1 << 20) == []
    assert q.depth == 1000 and q.unread == 0
    q.ack(500)
    assert q.depth == 500
    # segments wholly at or below seq 500 are gone; the one holding 501 is kept
    firsts = [first for first, _ in list_segments(tmp_path)]
    assert firsts[0] <= 501 and (len(firsts) == 1 or firsts[1] > 501)
    assert q.stats.segments_deleted >= 1
    q.ack(1000)
    assert q.depth == 0 and len(seg_files(tmp_path)) == 1
    assert q.bytes_on_disk == disk_blocks(tmp_path)
    q.close()


def test_read_limits_and_oversized_record(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    q.append([rec(i) for i in range(10)] + [b"y" * 300_000] + [rec(11)])
    assert len(q.read(4, 1 << 20)) == 4
    by_bytes = q.read(100, 500)  # at least one record, stops once over max_bytes
    assert [s for s, _ in by_bytes] == [5, 6, 7]
    rest = q.read(100, 1 << 20)
    assert [s for s, _ in rest] == [8, 9, 10, 11, 12]
    assert rest[3][1] == b"y" * 300_000  # larger than a read chunk and than a segment
    q.close()


def test_a_reader_a_few_writes_behind_reads_them_from_memory(tmp_path: Path, monkeypatch) -> None:
    """Reads of 333 from appends of 50 records: every read spans writes, some across
    segments; all are served from the writes kept in memory, none from the disk."""
    q = open_q(tmp_path, segment_bytes=64 << 10)
    fill(q, 0, 1000)
    assert q.segments > 2

    def no_disk(*args: object) -> bytes:
        raise AssertionError("read back from the disk")

    monkeypatch.setattr(os, "pread", no_disk)
    got = drain(q)
    assert [s for s, _ in got] == list(range(1, 1001))
    assert [num(p) for _, p in got] == list(range(1000))
    monkeypatch.undo()
    # a rewind behind the kept writes reads the disk, the same records
    fill(q, 1000, 500)
    first = q.read(333, 1 << 20)
    q.read(333, 1 << 20)
    q.rewind()
    again = drain(q)
    assert again[:333] == first
    assert [s for s, _ in again] == list(range(1001, 1501))
    q.close()


def test_the_writes_kept_in_memory_hold_about_their_bound_even_for_small_records(
        tmp_path: Path) -> None:
    """From the buffer review: the bound counted frame bytes only, and 20-byte records
    held 2.8 times it (11.8 MB for a 4 MiB bound: their objects, list slots, sizes)."""
    import tracemalloc

    from shipper import diskqueue

    q = open_q(tmp_path, max_bytes=1 << 30, segment_bytes=8 << 20)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for b in range(150):  # a sink that reads nothing: every write is kept, up to the bound
            q.append([b"%07d:%012d" % (b, i) for i in range(1000)])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1.3 * diskqueue.RECENT_WRITES_BYTES, held
    got = drain(q, limit=1_000_000)
    assert len(got) == 150_000 and got[-1][1] == b"%07d:%012d" % (149, 999)
    q.close()


def test_reopen_rereads_unacked_and_rewind(tmp_path: Path) -> None:
    q = open_q(tmp_path, fsync="interval")
    fill(q, 0, 600)
    first = q.read(100, 1 << 20)
    second = q.read(100, 1 << 20)
    q.ack(first[-1][0])
    q.rewind()
    again = q.read(100, 1 << 20)
    assert again == second  # the unacknowledged batch, same seqs, same bytes
    q.ack(150)  # mid-batch
    q.rewind()
    assert q.read(1, 1 << 20)[0][0] == 151
    q.close()
    q = open_q(tmp_path, fsync="interval")
    assert q.depth == 450 and q.acked_seq == 150
    got = drain(q)
    assert [s for s, _ in got] == list(range(151, 601))
    assert [num(p) for _, p in got] == list(range(150, 600))
    r = q.append([rec(600)])
    assert r.first_seq == 601  # seqs go on after reopen, never reused
    q.close()


def test_durable_seq_per_policy(tmp_path: Path) -> None:
    for policy in ("always", "never"):
        q = open_q(tmp_path / policy, fsync=policy)
        r = q.append([rec(0), rec(1)])
        assert q.durable_seq == r.last_seq == 2
        q.close()
    q = open_q(tmp_path / "interval", fsync="interval", fsync_interval_ms=50)
    r = q.append([rec(0), rec(1)])
    deadline = time.monotonic() + 5
    while q.durable_seq < r.last_seq and time.monotonic() < deadline:
        time.sleep(0.01)
    assert q.durable_seq == 2  # the background flush covered it
    q2 = open_q(tmp_path / "interval-slow", fsync="interval", fsync_interval_ms=60_000)
    r = q2.append([rec(0)])
    assert q2.durable_seq == 0
    assert q2.sync() == 1 == q2.durable_seq
    q.close()
    q2.close()


def test_second_open_is_refused(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    with pytest.raises(QueueLocked, match="in use"):
        open_q(tmp_path)
    q.close()
    open_q(tmp_path).close()


def test_oldest_unacked_time(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    assert q.oldest_unacked_time() is None
    fill(q, 0, 300)
    assert q.oldest_unacked_time() == 1_700_000_000_000_000_000
    q.ack(200)
    assert q.oldest_unacked_time() == 1_700_000_000_000_000_200
    q.close()


# -- dedup across re-reads ----------------------------------------------------------------


def test_dedup_by_positions_survives_reopen_and_lost_state(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    r = q.append([rec(i) for i in range(10)], source_key="f1", positions=[("a", i * 100) for i in range(10)])
    assert r.accepted == 10
    # a source re-read after a crash offers 5..14 again: 5..9 are refused, 10..14 taken
    r = q.append([rec(i) for i in range(5, 15)], source_key="f1",
                 positions=[("a", i * 100) for i in range(5, 15)])
    assert (r.accepted, r.skipped, r.first_seq, r.last_seq) == (5, 5, 11, 15)
    r = q.append([rec(i) for i in range(3)], source_key="f2", position=("b", 7))
    assert r.accepted == 3
    q.close()
    for damage in ("none", "delete state"):
        if damage == "delete state":
            (tmp_path / STATE_NAME).unlink()
        q = open_q(tmp_path)
        r = q.append([rec(14)], source_key="f1", positions=[("a", 1400)])
        assert (r.accepted, r.skipped) == (0, 1)
        assert (r.first_seq, r.last_seq) == (q.last_seq + 1, q.last_seq)
        r = q.append([rec(0), rec(1)], source_key="f2", position=("b", 7))
        assert (r.accepted, r.skipped) == (0, 2)
        q.close()
    q = open_q(tmp_path)
    got = drain(q)
    assert [num(p) for _, p in got] == list(range(15)) + [0, 1, 2]
    q.close()


def test_dedup_positions_kept_in_state_after_segments_deleted(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    fill(q, 0, 1000, source_key="f", position=("x", 1))
    drain(q)  # everything acknowledged: the markers' segments are deleted
    assert len(seg_files(tmp_path)) == 1
    q.close()
    q = open_q(tmp_path)
    r = q.append([rec(0)], source_key="f", position=("x", 1))
    assert r.skipped == 1  # remembered through the state snapshot
    q.close()


# -- recovery from damage -----------------------------------------------------------------


def frame_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, seq field) of each frame of a segment file."""
    data = path.read_bytes()
    out = []
    pos = 0
    while pos + HEADER_SIZE <= len(data):
        ln = int.from_bytes(data[pos:pos + 4], "little")
        out.append((pos, int.from_bytes(data[pos + 8:pos + 16], "little")))
        pos += HEADER_SIZE + ln
    return out


def flip(path: Path, offset: int, n: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_old_segment_skip_one_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    q = open_q(tmp_path)
    fill(q, 0, 1000)
    q.close()
    seg = seg_files(tmp_path)[1]
    offset, seq = frame_offsets(seg)[7]
    flip(seg, offset + HEADER_SIZE + 20)  # inside the payload of one record
    caplog.set_level(logging.WARNING, logger="shipper.buffer")
    q = open_q(tmp_path)
    got = drain(q)
    assert [s for s, _ in got] == [s for s in range(1, 1001) if s != seq]
    assert [num(p) for _, p in got] == [i for i in range(1000) if i != seq - 1]
    assert q.stats.corrupt_records == 1 and q.stats.repairs == 1
    assert q.stats.quarantined_bytes > 0 and q.depth == 0
    entries = read_quarantine(tmp_path / QUARANTINE_NAME)
    assert len(entries) == 1
    assert entries[0]["offset"] == offset and entries[0]["segment"] == int(seg.name[:20])
    repairs = [r for r in caplog.records if "corrupt region" in r.getMessage()]
    assert len(repairs) == 1  # logged once
    q.close()


def test_corrupt_record_in_tail_kept_records_after_it(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    fill(q, 0, 100)
    q.close()
    seg = seg_files(tmp_path)[-1]
    offsets = frame_offsets(seg)
    data_frames = [(o, s) for o, s in offsets if s >> 62 == 0]
    offset, seq = data_frames[-5]
    flip(seg, offset + 2)  # the length field: an impossible length
    q = open_q(tmp_path)
    got = drain(q, ack=False)
    assert [s for s, _ in got] == [s for s in range(1, q.last_seq + 1) if s != seq]
    assert q.stats.corrupt_records == 1
    assert q.append([rec(100)]).first_seq == q.last_seq  # appends go on after the repair
    q.close()
    q = open_q(tmp_path)
    assert q.stats.repairs == 0  # repaired for good: nothing found the second time
    q.close()


def test_torn_tail_is_cut_and_appends_go_on(tmp_path: Path) -> None:
    q = open_q(tmp_path, fsync="interval", fsync_interval_ms=60_000)
    fill(q, 0, 200)
    q.sync()
    q.append([rec(200), rec(201)])
    # simulate a crash mid-write: the last frame half on disk, no clean close
    seg = seg_files(tmp_path)[-1]
    size = seg.stat().st_size
    q._stop_flusher.set()
    q._close_fds()
    with open(seg, "r+b") as f:
        f.truncate(size - 50)
    q = open_q(tmp_path)
    assert q.stats.truncated_bytes > 0 and q.stats.corrupt_records == 0
    # the whole interrupted append (seqs 201, 202) is gone, not just its torn frame:
    # an append is on disk whole or not at all
    assert q.last_seq == 200
    r = q.append([rec(200), rec(201)])
    assert r.first_seq == 201
    got = drain(q)
    assert [num(p) for _, p in got] == list(range(202))
    q.close()


def test_a_tail_cut_short_after_a_clean_stop_keeps_its_durable_records(tmp_path: Path) -> None:
    """From the offline probe: a cleanly closed buffer whose last segment lost its last
    1,000 bytes (the disk, not a crash) lost 53 records, not the 5 the cut touched: the
    whole last write was cut back to its commit marker, though the state reported all of
    it durable (so the sources would not read those lines again)."""
    q = open_q(tmp_path)
    fill(q, 0, 200, batch=100)  # two writes of 100 records (~230 bytes framed each)
    q.close()
    seg = seg_files(tmp_path)[-1]
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 1000)
    q = open_q(tmp_path)
    got = [num(p) for _, p in drain(q)]
    lost = 200 - len(got)
    assert got == list(range(len(got))) and 1 <= lost <= 6, lost
    assert q.stats.corrupt_records == lost  # said: reported durable, not on disk
    r = q.append([rec(500)])
    assert r.first_seq == 201  # no seq reused
    q.close()
    q = open_q(tmp_path)
    assert [num(p) for _, p in drain(q)] == [500]
    assert q.stats.repairs == 0
    q.close()


def test_records_kept_without_their_commit_marker_are_committed_at_recovery(tmp_path: Path) -> None:
    """A tail cut by the disk exactly at the last commit marker after a clean stop: its
    records are kept (reported durable), and recovery writes a marker for them, says so
    and counts it. Without one they stayed an "unfinished write" that ``shipper buffer
    repair`` could not mend, and a later start with an unusable state file cut them as
    a torn tail, uncounted, though their sources had moved on."""
    from shipper import buffer_tool

    q = open_q(tmp_path)
    for i in (0, 10):
        q.append([rec(j) for j in range(i, i + 10)], source_key="s", position=i + 9)
    q.close()
    seg = seg_files(tmp_path)[-1]
    data = seg.read_bytes()
    mark_len = HEADER_SIZE + len(walk_segment(data, 1).marks[-1][1])
    with open(seg, "r+b") as f:
        f.truncate(len(data) - mark_len)
    q = open_q(tmp_path)
    assert q.stats.repairs == 1 and q.stats.corrupt_records == 0 and q.last_seq == 20
    q.close()
    assert buffer_tool.verify(tmp_path, io.StringIO()) == 0
    (tmp_path / STATE_NAME).write_bytes(bytes(2 * SLOT_SIZE))  # the state lost
    q = open_q(tmp_path)
    assert q.stats.truncated_bytes == 0
    assert [num(p) for _, p in drain(q)] == list(range(20))
    q.close()


def test_truncated_old_segment_counts_missing_records(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    fill(q, 0, 1000)
    q.close()
    segs = seg_files(tmp_path)
    victim = segs[1]
    lost_from = frame_offsets(victim)[10]
    with open(victim, "r+b") as f:
        f.truncate(lost_from[0] + 30)
    next_first = int(segs[2].name[:20])
    q = open_q(tmp_path)
    got = drain(q)
    seqs = [s for s, _ in got]
    lost = set(range(lost_from[1], next_first))
    assert seqs == [s for s in range(1, 1001) if s not in lost]
    assert q.stats.corrupt_records == len(lost) and q.depth == 0
    q.close()


def test_nul_run_inside_a_segment(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    fill(q, 0, 1000)
    q.close()
    seg = seg_files(tmp_path)[1]
    data = bytearray(seg.read_bytes())
    data[4096:8192] = bytes(4096)  # a lost page
    seg.write_bytes(bytes(data))
    q = open_q(tmp_path)
    got = drain(q)
    missing = sorted(set(range(1, 1001)) - {s for s, _ in got})
    assert 15 <= len(missing) <= 22  # ~4 KiB of ~216-byte records
    assert missing == list(range(missing[0], missing[-1] + 1))
    assert q.stats.corrupt_records == len(missing)
    q.close()


@pytest.mark.parametrize("damage", ["delete", "nul", "garbage", "empty"])
def test_state_file_damage_falls_back_to_segments(tmp_path: Path, damage: str) -> None:
    q = open_q(tmp_path)
    for i in range(0, 1000, 50):
        q.append([rec(j) for j in range(i, i + 50)], source_key="f", position=("p", i + 49))
    q.ack(400)
    q.close()
    state = tmp_path / STATE_NAME
    if damage == "delete":
        state.unlink()
    elif damage == "nul":
        state.write_bytes(bytes(2 * SLOT_SIZE))
    elif damage == "garbage":
        state.write_bytes(os.urandom(2 * SLOT_SIZE))
    else:
        state.write_bytes(b"")
    q = open_q(tmp_path)
    assert q.stats.state_fallbacks == 1
    first_kept = int(seg_files(tmp_path)[0].name[:20])
    got = drain(q)
    # acknowledgements are lost with the state: records before the first segment are
    # gone (= acknowledged), the rest is delivered again; nothing is lost
    assert [s for s, _ in got] == list(range(first_kept, 1001))
    assert first_kept <= 401
    assert q.append([rec(0)], source_key="f", position=("p", 999)).skipped == 1
    assert q.append([rec(1000)], source_key="f", position=("p", 1000)).accepted == 1
    q.close()


def test_one_torn_state_slot_uses_the_other(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    fill(q, 0, 100)
    q.ack(60)
    q.close()
    state = tmp_path / STATE_NAME
    raw = bytearray(state.read_bytes())
    gens = [int.from_bytes(raw[i * SLOT_SIZE + 8:i * SLOT_SIZE + 16], "little") for i in (0, 1)]
    newest = gens.index(max(gens))
    raw[newest * SLOT_SIZE + 40] ^= 0xFF  # tear the newest slot
    state.write_bytes(bytes(raw))
    q = open_q(tmp_path)
    assert q.stats.state_fallbacks == 0
    assert q.acked_seq == 60  # the previous slot already had it (close wrote it again)
    q.close()


# -- size cap -----------------------------------------------------------------------------


def test_cap_block(tmp_path: Path) -> None:
    cap = 512 << 10
    q = open_q(tmp_path, max_bytes=cap, when_full="block")
    batch = [rec(i) for i in range(50)]
    appended = 0
    for _ in range(1000):
        if not q.has_room(sum(map(len, batch)), len(batch)):
            break
        appended += q.append(batch).accepted
        assert q.bytes_on_disk <= cap
    assert not q.has_room(sum(map(len, batch)), len(batch))
    # has_room keeps a few hundred bytes of slack: at most one more batch goes in
    with pytest.raises(QueueFull, match="full"):
        for _ in range(2):
            appended += q.append(batch).accepted
    assert q.stats.full_refusals == 1 and q.last_seq == appended
    assert q.bytes_on_disk == disk_blocks(tmp_path) <= cap
    got = drain(q)  # the sink catches up: room again
    assert len(got) == appended
    assert q.has_room(sum(map(len, batch)), len(batch))
    assert q.append(batch).accepted == 50
    q.close()


def test_cap_drop_newest(tmp_path: Path) -> None:
    cap = 512 << 10
    q = open_q(tmp_path, max_bytes=cap, when_full="drop_newest")
    accepted = dropped = 0
    for b in range(60):
        r = q.append([rec(b * 50 + i) for i in range(50)])
        accepted += r.accepted
        dropped += r.dropped
        assert q.bytes_on_disk <= cap
    assert dropped > 0 and q.stats.dropped_newest == dropped
    assert accepted + dropped == 3000
    got = drain(q)
    assert [num(p) for _, p in got] == list(range(accepted))  # the oldest kept, in order
    q.close()


def test_cap_drop_oldest(tmp_path: Path) -> None:
    cap = 512 << 10
    q = open_q(tmp_path, max_bytes=cap, when_full="drop_oldest")
    for b in range(60):
        r = q.append([rec(b * 50 + i) for i in range(50)])
        assert r.accepted == 50
        assert q.bytes_on_disk <= cap
    assert q.stats.dropped_oldest > 0
    got = drain(q)
    nums = [num(p) for _, p in got]
    assert nums == list(range(3000 - len(nums), 3000))  # the newest kept, in order
    assert q.stats.dropped_oldest + len(nums) == 3000
    q.close()


def test_drop_oldest_counts_what_the_sink_never_read_and_says_it_once(tmp_path: Path, caplog) -> None:
    """Found by fault injection: records the sink had read (in flight, delivered later from
    memory) were counted as dropped, and every dropped segment logged a warning."""
    import logging
    cap = 512 << 10
    q = open_q(tmp_path, max_bytes=cap, when_full="drop_oldest")
    fill(q, 0, 500)
    in_flight = q.read(200, 1 << 30)  # read, not acknowledged
    assert len(in_flight) == 200
    with caplog.at_level(logging.WARNING, logger="shipper.buffer"):
        for b in range(60):
            q.append([rec(1000 + b * 50 + i) for i in range(50)])
    rest = drain(q, ack=False)
    # dropped: exactly the records that were never read and are not in the queue any more
    kept = {num(p) for _, p in rest}
    never_read = [n for n in list(range(200, 500)) + list(range(1000, 4000)) if n not in kept]
    assert q.stats.dropped_oldest == len(never_read)
    assert sum("dropped" in r.getMessage() for r in caplog.records) == 1
    q.close()


# -- disk full ----------------------------------------------------------------------------

FILE_SIZE_LIMIT_CHILD = textwrap.dedent("""
    import json, os, resource, sys
    from shipper.diskqueue import DiskQueue, QueueWriteError
    path, big = sys.argv[1], int(sys.argv[2])
    q = DiskQueue.open(path, segment_bytes=4 << 20, max_bytes=1 << 30, fsync="always")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, hard))  # no file beyond 150 kB
    accepted, errors = [], []
    i = 0
    for _ in range(1000):
        n = 200 if big and len(accepted) >= 40 else 10  # 200 records: 180 kB, in no file
        batch = [b"record %06d " % j + b"x" * 900 for j in range(i, i + n)]
        try:
            r = q.append(batch)
        except QueueWriteError as exc:
            errors.append(str(exc))
            if len(errors) == 3 or not big:
                break
            continue
        accepted.append([r.first_seq, r.last_seq, i])
        i += n
        if len(accepted) == 100:
            break
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the limit is lifted
    for _ in range(5):
        batch = [b"record %06d " % j + b"x" * 900 for j in range(i, i + 10)]
        r = q.append(batch)
        accepted.append([r.first_seq, r.last_seq, i])
        i += 10
    sizes = [e.stat().st_size for e in os.scandir(path) if e.name.endswith(".seg")]
    q.close()
    print(json.dumps({"accepted": accepted, "errors": errors, "records": i, "sizes": sizes}))
""")


def _under_a_file_size_limit(qdir: Path, big: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT_CHILD, str(qdir), str(int(big))],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    seqs = [(a, b) for a, b, _ in out["accepted"]]
    assert seqs[0][0] == 1 and all(a2 == b1 + 1 for (_, b1), (a2, _) in zip(seqs, seqs[1:], strict=False))
    q = open_q(qdir, segment_bytes=4 << 20)
    assert q.stats.repairs == 0 and q.stats.truncated_bytes == 0  # no half record left
    got = drain(q)
    assert [p[:14] for _, p in got] == [b"record %06d " % j for j in range(out["records"])]
    assert [s for s, _ in got] == list(range(1, out["records"] + 1))
    q.close()
    return out


def test_an_append_bigger_than_any_file_may_be_fails_cleanly_then_works(tmp_path: Path) -> None:
    out = _under_a_file_size_limit(tmp_path / "q", big=True)
    assert len(out["errors"]) == 3
    assert "EFBIG" in out["errors"][0] and "\n" not in out["errors"][0]


def test_a_segment_at_the_file_size_limit_makes_way_for_a_new_one(tmp_path: Path) -> None:
    """A file size limit below segment_bytes (ulimit -f in a run script, a filesystem's
    largest file): the segment that reached it gets a successor, with nothing delivered
    yet. Found by fault injection (prlimit --fsize on a running shipper): EFBIG was
    taken for a full disk, and the reading stopped for good with the sink up."""
    out = _under_a_file_size_limit(tmp_path / "q", big=False)
    assert out["errors"] == [] and out["records"] == 1050
    # 930 kB in files of at most 150 kB (but the tail, written to once the limit was lifted)
    assert len(out["sizes"]) >= 7 and sorted(out["sizes"])[-2] <= 150_000


def test_walk_segment_reports_every_region(tmp_path: Path) -> None:
    q = open_q(tmp_path)
    fill(q, 0, 200)
    q.close()
    seg = seg_files(tmp_path)[0]
    offs = [o for o in frame_offsets(seg) if o[1] >> 62 == 0]  # data frames
    data = bytearray(seg.read_bytes())
    data[offs[3][0] + 20] ^= 1  # payload
    data[offs[70][0] + 4] ^= 1  # CRC
    w = walk_segment(bytes(data), 1)
    bad = w.bad
    assert [(b.start, b.expected, b.lost) for b in bad] == [(offs[3][0], 4, 1), (offs[70][0], 71, 1)]
    assert w.records == len(offs) - 2


def test_stray_files_named_like_segments_do_not_stop_it(tmp_path: Path) -> None:
    """Found by fault injection: a file named 99999999999999999999.seg (beyond the
    sequence space) crashed run and every buffer tool; a directory named like a
    segment too."""
    q = DiskQueue.open(tmp_path / "q")
    q.append([b"a", b"b"])
    q.close()
    (tmp_path / "q" / "99999999999999999999.seg").write_bytes(b"garbage")
    (tmp_path / "q" / "00000000000000000500.seg").mkdir()
    q = DiskQueue.open(tmp_path / "q")
    assert [p for _, p in q.read(10, 1 << 20)] == [b"a", b"b"]
    q.close()


def test_a_full_disk_with_everything_delivered_frees_the_segment(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC while the segment holds only acknowledged records: a new segment frees the
    old one and the append goes through (found by fault injection: on a small state_dir
    reading stopped for good, every record delivered)."""

    from shipper import diskqueue as dq
    q = open_q(tmp_path, segment_bytes=64 << 20)
    fill(q, 0, 100)
    assert len(drain(q)) == 100  # read and acknowledged
    real = dq._write_all
    calls = {"n": 0}

    def full_once(fd, buf, offset):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, buf, offset)
    monkeypatch.setattr(dq, "_write_all", full_once)
    before = seg_files(tmp_path)
    r = q.append([rec(100), rec(101)])
    assert (r.first_seq, r.last_seq) == (101, 102) and calls["n"] == 2
    assert q.stats.write_errors == 0  # a way out taken is no error
    assert before[0] not in seg_files(tmp_path)  # the delivered segment is gone
    assert [p for _, p in drain(q)] == [rec(100), rec(101)]
    # records not yet delivered are never given up that way: the error stands
    q.append([rec(102)])
    calls["n"] = 0
    with pytest.raises(dq.QueueWriteError):
        q.append([rec(103)])
    q.close()


def test_an_append_leaves_room_for_the_checkpoints_beside_it(tmp_path: Path, monkeypatch) -> None:
    """Found by fault injection (a 2 MB tmpfs state_dir, the sink down): appends going in
    pieces filled the disk to the last byte, the checkpoint could not be saved, and the
    restart sent 3,732 records twice. An append now leaves DISK_RESERVE free, refused
    as a full disk's otherwise (nothing of it written), and goes in once there is room."""
    from shipper import diskqueue as dq
    q = open_q(tmp_path, segment_bytes=64 << 20)
    fill(q, 0, 10)
    real = os.fstatvfs
    free = [(256 << 10) + 30_000]  # bytes the filesystem says it has free: 30 kB above the reserve

    def fstatvfs(fd: int) -> os.statvfs_result:
        st = real(fd)
        return os.statvfs_result((4096, 4096, st.f_blocks or 1 << 20, free[0] // 4096, free[0] // 4096,
                                  st.f_files, st.f_ffree, st.f_favail, st.f_flag, st.f_namemax))
    monkeypatch.setattr(os, "fstatvfs", fstatvfs)
    size = seg_files(tmp_path)[-1].stat().st_size
    with pytest.raises(dq.QueueWriteError, match="256 KiB would be left"):
        q.append([rec(j) for j in range(10, 210)])  # 40 kB
    assert seg_files(tmp_path)[-1].stat().st_size == size
    r = q.append([rec(j) for j in range(10, 60)])  # 10 kB fits above the reserve
    assert (r.first_seq, r.last_seq) == (11, 60)
    free[0] += 1 << 20  # space returns
    r = q.append([rec(j) for j in range(60, 260)])
    assert (r.first_seq, r.last_seq) == (61, 260)
    assert [num(p) for _, p in drain(q)] == list(range(260))
    q.close()


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_a_buffer_deleted_while_running_says_so_and_starts_again(tmp_path: Path, fsync: str) -> None:
    """rm -rf of the buffer by hand: new records go to a new buffer in the same place
    (found by fault injection: they went to deleted files, and the loss was silent), the
    records not read yet that are kept in memory go there first (they were lost, with
    those read: 43 of 50 unacknowledged in the fault round), and what is lost is
    counted and said: those read, not acknowledged."""
    import shutil
    qdir = tmp_path / "q"
    q = open_q(qdir, fsync=fsync, fsync_interval_ms=20)
    fill(q, 0, 10, batch=10)
    items = q.read(5, 1 << 20)
    q.ack(items[2][0])  # 3 acknowledged, 2 with the sink
    shutil.rmtree(qdir)
    q.sync()
    assert q.stats.corrupt_records == 2 and qdir.is_dir() and (qdir / STATE_NAME).exists()
    r = q.append([rec(j) for j in range(10, 15)])
    assert (r.first_seq, r.last_seq) == (16, 20)  # after the 5 written again as 11..15
    assert [p for _, p in q.read(100, 1 << 20)] == [rec(j) for j in range(5, 15)]
    q.close()
    q = open_q(qdir)
    assert [p for _, p in drain(q)] == [rec(j) for j in range(5, 15)]
    q.close()


def test_a_buffer_deleted_while_running_saves_what_memory_still_holds(tmp_path: Path) -> None:
    """Appends older than the kept writes (RECENT_WRITES_BYTES) are gone with the files:
    counted, and the kept ones after them are written again all the same."""
    import shutil
    qdir = tmp_path / "q"
    q = open_q(qdir)
    big = 256 << 10
    n = RECENT_WRITES_BYTES // big + 4  # one record a write: the first 4 or so are not kept
    for j in range(n):
        q.append([rec(j).ljust(big, b".")])
    shutil.rmtree(qdir)
    q.sync()
    kept = [p for _, p in drain(q)]
    assert 0 < len(kept) < n and q.stats.corrupt_records == n - len(kept)
    assert kept == [rec(j).ljust(big, b".") for j in range(n - len(kept), n)]
    q.close()


def test_a_delivered_segment_that_cannot_be_deleted_is_left_not_a_crash_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Found by fault injection (chattr +i on the buffer directory): the unlink of a
    delivered segment raised out of ack(), the daemon died, and every start died on
    the same unlink in recovery. It is said once, left on disk, deleted later."""
    q = open_q(tmp_path)
    fill(q, 0, 1000)
    drain(q, ack=False)
    real_unlink = Path.unlink

    def immutable(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "unlink", immutable)
    q.ack(1000)  # no exception
    assert q.depth == 0 and q.stats.delete_errors >= 1 and q.stats.segments_deleted == 0
    left = len(seg_files(tmp_path))
    assert left > 1
    assert sum("cannot delete the delivered segment" in r.getMessage() for r in caplog.records) == 1
    q.close()
    q = open_q(tmp_path)  # a start while it still cannot delete: no crash, nothing to resend
    assert q.depth == 0 and q.read(10, 1 << 20) == []
    q.close()
    monkeypatch.setattr(Path, "unlink", real_unlink)
    q = open_q(tmp_path)  # the flag removed: the leftovers go
    assert q.depth == 0 and len(seg_files(tmp_path)) == 1
    q.close()


def test_a_failing_fsync_under_always_leaves_the_append_readable_not_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """From the buffer review: under fsync = "always" an EIO of fdatasync escaped
    append() as a plain OSError (the pipeline catches QueueWriteError) after the seq
    and the dedup position had moved on."""
    q = open_q(tmp_path, fsync="always")
    fill(q, 0, 10)
    assert q.durable_seq == 10

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    fill(q, 10, 10)  # no exception
    fill(q, 20, 10)
    assert q.durable_seq == 10 and q.last_seq == 30
    assert sum("fsync failed" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.undo()
    fill(q, 30, 1)  # the next fsync that works covers what came before
    assert q.durable_seq == 31
    assert [num(p) for _, p in drain(q)] == list(range(31))
    q.close()


def test_a_failing_fsync_is_said_once_and_nothing_becomes_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """From the same fault review: sync() let an EIO out of fdatasync, which ended the
    pipeline's syncer task. Nothing is durable then, so no checkpoint moves."""
    q = open_q(tmp_path, fsync="interval", fsync_interval_ms=600_000.0)
    fill(q, 0, 10)
    q.sync()
    fill(q, 10, 10)

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    assert q.sync() == 10 and q.sync() == 10  # no exception, nothing more durable
    assert sum("fsync failed" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.undo()
    assert q.sync() == 20
    q.close()


def test_appends_failing_on_a_read_only_state_dir_are_said_once_a_spell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The ops probe: ext4 remounted read-only under a running shipper (errors=remount-ro)
    logged "append failed" at every retry of the pipeline, once a second (32 lines in
    30 s), beside the pipeline's own one line; said once a spell now, and again after
    appends worked in between."""
    from shipper import diskqueue as dq
    q = open_q(tmp_path, fsync="interval")
    fill(q, 0, 10)
    real = dq._write_all

    def erofs(fd: int, buf: bytes, offset: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    caplog.set_level(logging.ERROR, logger="shipper.buffer")
    monkeypatch.setattr(dq, "_write_all", erofs)
    for i in range(30):
        with pytest.raises(dq.QueueWriteError):
            q.append([rec(10 + i)])
    assert sum("append failed" in r.getMessage() for r in caplog.records) == 1
    assert q.stats.write_errors == 30
    monkeypatch.setattr(dq, "_write_all", real)
    fill(q, 10, 1)
    monkeypatch.setattr(dq, "_write_all", erofs)
    with pytest.raises(dq.QueueWriteError):
        q.append([rec(11)])  # a new spell: said again
    assert sum("append failed" in r.getMessage() for r in caplog.records) == 2
    monkeypatch.setattr(dq, "_write_all", real)
    assert [num(p) for _, p in drain(q)] == list(range(11))
    q.close()


def test_a_failing_fsync_at_close_ends_the_stop_not_in_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The ops probe: the state_dir read-only at the stop, DiskQueue.close() let EROFS of
    fdatasync out, and `shipper run` ended in a traceback with exit 1. The records not
    made durable stay unclean in the state (recovery looks at them), never taken as
    durable."""
    q = open_q(tmp_path, fsync="interval", fsync_interval_ms=600_000.0)
    fill(q, 0, 10)
    q.sync()
    fill(q, 10, 5)

    def erofs(fd: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "fdatasync", erofs)
    with caplog.at_level(logging.ERROR, logger="shipper.buffer"):
        q.close()  # no exception
    assert q.durable_seq == 10
    assert [r.getMessage() for r in caplog.records if "at stop" in r.getMessage()] == [
        f"buffer {tmp_path}: fsync at stop failed: Read-only file system (records 11..15 not "
        "made durable; their lines are read again at the next start)"]
    monkeypatch.undo()
    q = open_q(tmp_path)
    assert [num(p) for _, p in drain(q)] == list(range(15))  # written, only not synced
    q.close()


def test_a_repair_behind_the_ack_position_does_not_misplace_a_rewind(tmp_path: Path) -> None:
    """From the buffer review: a repair rewrites a segment, and frames after a bad
    region move, while the remembered position of the acknowledged end (and the read
    marks) keep their old offsets. A rewind (a sink reconnecting) then reads from the
    middle of a frame: the second look finds the segment sound and the reader finds
    its place by seq, so nothing is lost nor read twice (this holds it). A record
    acknowledged before its bytes went bad was counted lost: it was delivered."""
    q = open_q(tmp_path, segment_bytes=4 << 20)
    for i in range(0, 100, 10):
        q.append([rec(j, 10_000) for j in range(i, i + 10)])
    q.close()
    q = open_q(tmp_path, segment_bytes=4 << 20)
    first = q.read(30, 1 << 30)
    q.ack(first[-1][0])
    q.read(20, 1 << 30)  # read, not acknowledged: the sink's batch in flight
    seg = seg_files(tmp_path)[0]
    frames = [(o, s) for o, s in frame_offsets(seg) if s >> 62 == 0]
    flip(seg, frames[9][0] + HEADER_SIZE + 100)  # record 10: acknowledged already
    flip(seg, frames[69][0] + HEADER_SIZE + 100)  # record 70: not read yet
    got = [s for s, _ in drain(q, ack=False)]
    assert 70 not in got and q.stats.corrupt_records == 1
    q.rewind()  # the sink reconnected: everything after the acknowledged end again
    again = [s for s, _ in drain(q)]
    assert again == [s for s in range(31, 101) if s != 70]
    assert q.stats.corrupt_records == 1
    q.close()


def test_a_buffer_deleted_while_idle_is_noticed_before_the_next_append(tmp_path: Path) -> None:
    """fsync=interval: an idle flusher sleeps (nothing to make durable), and no longer
    looked every interval for its files deleted under it. The next batch then went to
    the deleted files; read by the sink before the flusher woke to notice, it was
    counted lost (and was, if the sink then failed to deliver it: the rewind found
    nothing, and its position was committed). Now an append after the flusher slept
    looks first, so the batch goes to the new buffer."""
    import shutil
    qdir = tmp_path / "q"
    q = open_q(qdir, fsync="interval", fsync_interval_ms=20)
    fill(q, 0, 10, batch=10)
    drain(q)  # all delivered
    deadline = time.monotonic() + 5
    while not q._idle() and time.monotonic() < deadline:  # the flusher wrote the state
        time.sleep(0.01)
    time.sleep(0.2)  # ten intervals with nothing to do
    shutil.rmtree(qdir)
    time.sleep(0.2)
    r = q.append([rec(j) for j in range(10, 15)])
    assert (r.first_seq, r.last_seq) == (11, 15)
    items = q.read(100, 1 << 20)  # the sink has them, not yet delivered
    assert [p for _, p in items] == [rec(j) for j in range(10, 15)]
    q.sync()
    assert q.stats.corrupt_records == 0 and q.stats.repairs == 1
    q.rewind()  # the sink failed to deliver: they are read again
    assert [p for _, p in q.read(100, 1 << 20)] == [rec(j) for j in range(10, 15)]
    q.close()
    q = open_q(qdir)
    assert [p for _, p in drain(q)] == [rec(j) for j in range(10, 15)]
    q.close()


def test_close_while_the_flusher_wakes_from_its_interval_returns(tmp_path: Path) -> None:
    """fsync=interval: close() sets the flusher's stop and wake, then joins it. When the
    flusher's interval ran out just before and it cleared the wake just after (a loaded
    machine switching threads there), the wake was lost: it synced, found nothing to do
    and slept on the wake for good, and close() (a pipeline's stop, on the event loop)
    waited forever: a full suite run hung in a pipeline test, its main thread in that
    join. The interleaving is forced here: close() runs between the two."""
    import threading

    q = open_q(tmp_path / "q", fsync="interval", fsync_interval_ms=20)
    wake = q._flush_wanted
    real_clear = wake.clear
    closers: list[threading.Thread] = []

    def close_then_clear() -> None:  # in the flusher, its interval just out
        if not closers:
            closer = threading.Thread(target=q.close, daemon=True)
            closer.start()
            closers.append(closer)
            for _ in range(500):  # until close() has set the stop, then the wake
                if q._stop_flusher.is_set() and wake.is_set():
                    break
                time.sleep(0.01)
        real_clear()

    wake.clear = close_then_clear  # type: ignore[method-assign]
    q.append([rec(0)])
    for _ in range(500):
        if closers:
            break
        time.sleep(0.01)
    closers[0].join(10)
    assert not closers[0].is_alive(), "close() hangs joining the flusher"


def test_delivered_segments_are_unlinked_off_the_callers_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unlinking a delivered 16 MiB segment held the event loop 13 ms (ext4 frees its
    4,096 blocks), every line arriving meanwhile waiting. Under the default fsync policy
    ack() renames it (cheap) and the flusher thread unlinks it."""
    import threading

    from conftest import wait_until

    unlinked_on: list[int] = []
    real_unlink = Path.unlink

    def recording(self: Path, missing_ok: bool = False) -> None:
        unlinked_on.append(threading.get_ident())
        real_unlink(self, missing_ok)

    q = open_q(tmp_path, fsync="interval")
    try:
        fill(q, 0, 1000)
        monkeypatch.setattr(Path, "unlink", recording)
        drain(q)
        assert q.depth == 0 and q.stats.segments_deleted > 0
        assert len(seg_files(tmp_path)) == 1  # the tail; the others renamed at once
        wait_until("the renamed segments unlinked", lambda: not list(tmp_path.glob("*.deleted")), 10)
        assert len(unlinked_on) == q.stats.segments_deleted
        assert threading.get_ident() not in unlinked_on
    finally:
        q.close()


def test_delivered_segments_a_stop_or_crash_left_are_removed_at_the_start(tmp_path: Path) -> None:
    q = open_q(tmp_path, fsync="interval")
    fill(q, 0, 300)
    q.close()
    left = tmp_path / f"{1:020d}.seg.deleted"
    left.write_bytes(b"x" * 1000)  # as a crash between the rename and the unlink leaves it
    q = open_q(tmp_path, fsync="interval")
    try:
        assert not left.exists()
        assert [p for _, p in drain(q)] == [rec(j) for j in range(300)]
    finally:
        q.close()


def test_a_delivered_segment_that_cannot_be_renamed_is_left_not_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """chattr +i under the default fsync policy: the rename fails as the unlink did."""
    q = open_q(tmp_path, fsync="interval")
    try:
        fill(q, 0, 1000)

        def immutable(self: Path, target: object) -> None:
            raise PermissionError(1, "Operation not permitted", str(self))

        monkeypatch.setattr(Path, "rename", immutable)
        drain(q)  # no exception
        assert q.depth == 0 and q.stats.delete_errors >= 1 and q.stats.segments_deleted == 0
        assert len(seg_files(tmp_path)) > 1
        assert sum("cannot delete the delivered segment" in r.getMessage() for r in caplog.records) == 1
    finally:
        monkeypatch.undo()
        q.close()
