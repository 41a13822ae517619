"""The memory queue: same API as the disk queue, bounded by bytes, durable = delivered."""

from __future__ import annotations

import pytest

from shipper.diskqueue import QueueError, QueueFull
from shipper.memqueue import MemQueue


def rec(i: int, size: int = 100) -> bytes:
    return b"%06d" % i + b"x" * (size - 6)


def test_append_read_ack_rewind() -> None:
    q = MemQueue(max_bytes=1 << 20)
    r = q.append([rec(i) for i in range(10)])
    assert (r.first_seq, r.last_seq, r.accepted) == (1, 10, 10)
    assert q.read(3, 1 << 20) == [(1, rec(0)), (2, rec(1)), (3, rec(2))]
    assert [s for s, _ in q.read(100, 250)] == [4, 5, 6]  # at least one, stops past max_bytes
    q.ack(2)
    assert q.depth == 8 and q.durable_seq == 2  # durable in memory = acknowledged
    q.rewind()
    assert [s for s, _ in q.read(100, 1 << 20)] == list(range(3, 11))
    assert q.read(10, 1 << 20) == []
    q.ack(10)
    assert q.depth == 0 and q.bytes_in_memory == 0 and q.durable_seq == 10
    assert q.append([rec(10)]).first_seq == 11


def test_dedup_positions() -> None:
    q = MemQueue()
    q.append([rec(i) for i in range(5)], source_key="f", positions=[(1, i) for i in range(5)])
    r = q.append([rec(i) for i in range(3, 8)], source_key="f", positions=[[1, i] for i in range(3, 8)])
    assert (r.accepted, r.skipped, r.first_seq) == (3, 2, 6)
    r = q.append([rec(0)], source_key="f", position=(1, 7))
    assert (r.accepted, r.skipped, r.last_seq) == (0, 1, 8)
    assert [p for _, p in q.read(100, 1 << 20)] == [rec(i) for i in range(8)]


def test_block_when_full_and_room_after_ack() -> None:
    q = MemQueue(max_bytes=10 * 116)
    batch = [rec(i) for i in range(5)]
    assert q.has_room(500, 5)
    q.append(batch)
    q.append(batch)
    assert q.bytes_in_memory == 10 * 116
    assert not q.has_room(100, 1)
    with pytest.raises(QueueFull):
        q.append([rec(99)])
    assert q.stats.full_refusals == 1 and q.last_seq == 10
    q.read(5, 1 << 20)
    q.ack(5)
    assert q.has_room(500, 5)
    assert q.append(batch).accepted == 5


def test_drop_newest_and_drop_oldest() -> None:
    q = MemQueue(max_bytes=10 * 116, when_full="drop_newest")
    q.append([rec(i) for i in range(8)])
    r = q.append([rec(i) for i in range(8, 13)])
    assert (r.accepted, r.dropped) == (2, 3) and q.stats.dropped_newest == 3
    assert [p for _, p in q.read(100, 1 << 20)] == [rec(i) for i in range(10)]

    q = MemQueue(max_bytes=10 * 116, when_full="drop_oldest")
    q.append([rec(i) for i in range(8)])
    r = q.append([rec(i) for i in range(8, 13)])
    assert r.accepted == 5 and q.stats.dropped_oldest == 3
    assert q.acked_seq == 3 and q.durable_seq == 3  # dropped on purpose: the checkpoint may pass
    assert [p for _, p in q.read(100, 1 << 20)] == [rec(i) for i in range(3, 13)]


def test_drop_oldest_counts_only_what_the_sink_never_read() -> None:
    """Found with `shipper run` (memory buffer, 1 MiB, drop_oldest, the sink down for
    21 s, 60,000 lines): the sink held its first batch of 900 records through the
    outage and delivered them, yet they were counted dropped too (dropped + received
    was 60,900). Counted as the disk queue counts: records the sink never read."""
    q = MemQueue(max_bytes=10 * 116, when_full="drop_oldest")
    q.append([rec(i) for i in range(8)])
    in_flight = q.read(3, 1 << 20)
    assert len(in_flight) == 3
    r = q.append([rec(i) for i in range(8, 13)])  # drops 0..2, read: in flight, not lost
    assert r.accepted == 5 and q.stats.dropped_oldest == 0
    assert q.acked_seq == 3
    q.append([rec(i) for i in range(13, 15)])  # drops 3, 4: never read
    assert q.stats.dropped_oldest == 2
    assert [p for _, p in q.read(100, 1 << 20)] == [rec(i) for i in range(5, 15)]


def test_oldest_time_and_close() -> None:
    q = MemQueue.open("/ignored", max_bytes=1 << 20, fsync="always")
    assert q.oldest_unacked_time() is None
    q.append([b'{"time_unix_ns":123,"n":1}', b'{"time_unix_ns":456}'])
    assert q.oldest_unacked_time() == 123
    assert q.bytes_on_disk == 0 and q.sync() == 0
    q.close()
    with pytest.raises(QueueError):
        q.append([b"x"])
