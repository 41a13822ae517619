"""The disk queue against a list model (hypothesis stateful): append, re-offer, read,
ack, rewind, sync, clean restart, process crash and power loss."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shipper import diskqueue
from shipper.diskqueue import (
    HEADER_SIZE,
    KIND_DATA,
    KIND_MARK,
    KIND_MASK,
    SEQ_MASK,
    DiskQueue,
    list_segments,
    walk_segment,
)


def payload(ident: int, size: int) -> bytes:
    return b"%d:" % ident + bytes([65 + ident % 26]) * size


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="dq-model."))
        self.q = self._open()
        self.records: list[tuple[int, bytes]] = []  # (seq, payload) in the queue, acked or not
        self.ids: dict[int, int] = {}  # seq -> source position of every record ever appended
        self.next_id = 0
        self.acked = 0
        self.cursor = 1  # next seq read() returns
        self.synced_ack = 0  # ack as of the last state the queue surely saved

    def _open(self) -> DiskQueue:
        # no background flush: durability moves only at sync(), roll and close
        return DiskQueue.open(self.dir, segment_bytes=64 << 10, max_bytes=1 << 30,
                              fsync="interval", fsync_interval_ms=10**9)

    def teardown(self) -> None:
        self.q.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def last(self) -> int:
        return self.records[-1][0] if self.records else self.q.last_seq

    def unacked(self) -> list[tuple[int, bytes]]:
        return [r for r in self.records if r[0] > self.acked]

    @rule(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=30))
    def append(self, sizes: list[int]) -> None:
        ids = list(range(self.next_id, self.next_id + len(sizes)))
        payloads = [payload(i, s) for i, s in zip(ids, sizes, strict=True)]
        given = list(payloads)
        r = self.q.append(given, source_key="src", positions=ids)
        given.clear()  # the caller's list is its own again: the queue keeps nothing of it
        first = self.q.last_seq - len(sizes) + 1
        assert (r.accepted, r.skipped, r.first_seq, r.last_seq) == (len(sizes), 0, first, self.q.last_seq)
        self.records += list(zip(range(first, first + len(sizes)), payloads, strict=True))
        self.ids.update(zip(range(first, first + len(sizes)), ids, strict=True))
        self.next_id += len(sizes)

    @precondition(lambda self: self.next_id > 0)
    @rule(k=st.integers(1, 20))
    def reoffer(self, k: int) -> None:
        """A source re-reading from an older checkpoint: everything is refused."""
        ids = list(range(max(0, self.next_id - k), self.next_id))
        r = self.q.append([payload(i, 1) for i in ids], source_key="src", positions=ids)
        assert (r.accepted, r.skipped) == (0, len(ids))

    @rule(n=st.integers(1, 50))
    def read(self, n: int) -> None:
        items = self.q.read(n, 1 << 30)
        expected = [r for r in self.records if r[0] >= self.cursor][:n]
        assert items == expected
        if items:
            self.cursor = items[-1][0] + 1

    @rule(n=st.integers(1, 50), max_bytes=st.integers(1, 8000))
    def read_bytes(self, n: int, max_bytes: int) -> None:
        """A read bounded by bytes: records up to the first that reaches max_bytes."""
        items = self.q.read(n, max_bytes)
        expected = []
        total = 0
        for r in self.records:
            if r[0] < self.cursor:
                continue
            if len(expected) == n or total >= max_bytes:
                break
            expected.append(r)
            total += len(r[1])
        assert items == expected
        if items:
            self.cursor = items[-1][0] + 1

    @precondition(lambda self: self.cursor - 1 > self.acked)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        upto = data.draw(st.integers(self.acked + 1, self.cursor - 1))
        self.q.ack(upto)
        self.acked = upto

    @rule()
    def rewind(self) -> None:
        self.q.rewind()
        self.cursor = self.acked + 1

    @rule()
    def sync(self) -> None:
        assert self.q.sync() == self.q.last_seq
        self.synced_ack = self.acked

    @rule()
    def restart(self) -> None:
        self.q.close()
        self.q = self._open()
        assert self.q.acked_seq == self.acked and self.q.last_seq == self.last
        self.synced_ack = self.acked
        self.cursor = self.acked + 1

    def _abandon(self) -> None:
        self.q._stop_flusher.set()
        self.q._close_fds()

    @rule()
    def process_crash(self) -> None:
        """SIGKILL: the page cache keeps every write; only unsaved acks are forgotten."""
        self._abandon()
        self.q = self._open()
        assert self.q.last_seq == self.last
        assert self.synced_ack <= self.q.acked_seq <= self.acked
        self.acked = self.q.acked_seq
        self.synced_ack = self.acked
        self.cursor = self.acked + 1
        assert self.q.stats.corrupt_records == 0 and self.q.stats.truncated_bytes == 0

    @rule(data=st.data())
    def power_loss(self, data: st.DataObject) -> None:
        """The tail segment loses a random part of what was written after the last
        fsync (possibly mid-frame); everything durable must survive, whole."""
        durable = self.q.durable_seq
        self._abandon()
        first, tail = list_segments(self.dir)[-1]
        raw = tail.read_bytes()
        keep_from = 0  # end of the last durable frame (and its commit marker)
        pos = 0
        while pos + HEADER_SIZE <= len(raw):
            ln = int.from_bytes(raw[pos:pos + 4], "little")
            sq = int.from_bytes(raw[pos + 8:pos + 16], "little")
            end = pos + HEADER_SIZE + ln
            if (sq & SEQ_MASK) <= durable:
                keep_from = end
            elif sq & KIND_MASK == KIND_DATA:
                break
            pos = end
        cut = data.draw(st.integers(keep_from, len(raw)))
        with open(tail, "r+b") as f:
            f.truncate(cut)
        self.q = self._open()
        q = self.q
        assert q.stats.corrupt_records == 0  # nothing durable was lost
        survivors = q.last_seq
        lost_tail = [r for r in self.records if r[0] > survivors]
        assert all(seq > durable for seq, _ in lost_tail)
        self.records = [r for r in self.records if r[0] <= survivors]
        self.ids = {s: i for s, i in self.ids.items() if s <= survivors}
        assert self.synced_ack <= q.acked_seq <= max(self.acked, survivors)
        self.acked = q.acked_seq
        self.synced_ack = self.acked
        self.cursor = self.acked + 1
        # the source re-reads what was lost: those positions are free again, the rest not
        self.next_id = max(self.ids.values()) + 1 if self.ids else 0

    @rule()
    def clean_stop_then_marker_lost(self) -> None:
        """A clean stop, then the disk loses the tail's last commit marker (not a crash):
        every record was reported durable and stays, and the tail is whole again."""
        self.q.close()
        first, tail = list_segments(self.dir)[-1]
        raw = tail.read_bytes()
        pos, last_start, last_kind = 0, -1, None
        while pos + HEADER_SIZE <= len(raw):
            ln = int.from_bytes(raw[pos:pos + 4], "little")
            last_start, last_kind = pos, int.from_bytes(raw[pos + 8:pos + 16], "little") & KIND_MASK
            pos += HEADER_SIZE + ln
        if last_kind == KIND_MARK and last_start > 0:
            with open(tail, "r+b") as f:
                f.truncate(last_start)
        self.q = self._open()
        assert self.q.last_seq == self.last and self.q.acked_seq == self.acked
        assert self.q.stats.corrupt_records == 0 and self.q.stats.truncated_bytes == 0
        first, tail = list_segments(self.dir)[-1]
        raw = tail.read_bytes()
        assert walk_segment(raw, first).commit_end == len(raw)
        self.synced_ack = self.acked
        self.cursor = self.acked + 1

    @invariant()
    def kept_writes_bounded(self) -> None:
        q = self.q
        kept = list(q._recent)
        assert q._recent_bytes == sum(w.cost for w in kept)
        assert q._recent_bytes <= diskqueue.RECENT_WRITES_BYTES or len(kept) == 1
        for w in kept:  # what is kept is what the segment holds
            assert w.seg in q._segs and w.end <= w.seg.size
            assert list(zip(range(w.first, w.first + len(w.payloads)), w.payloads, strict=True)) == \
                [r for r in self.records if w.first <= r[0] < w.first + len(w.payloads)]

    @invariant()
    def counts_agree(self) -> None:
        q = self.q
        assert q.last_seq == self.last
        assert q.acked_seq == self.acked
        assert q.depth == len(self.unacked())
        files = [p for p in self.dir.iterdir()]
        assert q.bytes_on_disk == sum((p.stat().st_size + 4095) // 4096 * 4096 for p in files)
        assert all(not p.name.endswith(".tmp") for p in files)


QueueModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("DQ_MODEL_EXAMPLES", "60")), stateful_step_count=40,
    deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestDiskQueueModel = pytest.mark.slow(QueueModel.TestCase)


class SmallKeptModel(QueueModel):
    """The same with a few KiB of kept writes: reads start inside, before and after
    the kept ones, and kept writes are let go while the reader is behind them."""

    def __init__(self) -> None:
        self._saved = diskqueue.RECENT_WRITES_BYTES
        diskqueue.RECENT_WRITES_BYTES = 8 << 10
        super().__init__()

    def teardown(self) -> None:
        diskqueue.RECENT_WRITES_BYTES = self._saved
        super().teardown()


SmallKeptModel.TestCase.settings = QueueModel.TestCase.settings
TestDiskQueueSmallKeptModel = pytest.mark.slow(SmallKeptModel.TestCase)
