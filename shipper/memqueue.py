"""Memory-only queue with the disk queue's API, for users who prefer latency to durability.

Bounded by bytes (payload bytes + 16 per record, like a disk frame). Nothing survives
a restart, so "durable" means delivered: ``durable_seq`` is the acknowledged seq (and
the seq of records dropped on purpose), which makes the pipeline commit a source
checkpoint only once the sink has acknowledged its records (design notes §3). After a
crash the sources re-read everything not yet delivered: nothing is lost, the price is
a longer re-read and holding the checkpoint back while the sink is down.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from shipper.diskqueue import (
    HEADER_SIZE,
    AppendResult,
    QueueError,
    QueueFull,
    QueueStats,
    WhenFull,
    _tuples,
    payload_time,
)

log = logging.getLogger("shipper.buffer")

DEFAULT_MAX_BYTES = 64 << 20


class MemQueue:
    """A FIFO of byte records in memory, released on acknowledgement. Thread-safe."""

    persistent = False  # gone at a stop: its records are read again from the logs

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, when_full: WhenFull = "block") -> None:
        if when_full not in ("block", "drop_newest", "drop_oldest"):
            raise ValueError(f"when_full must be block, drop_newest or drop_oldest, not {when_full!r}")
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.stats = QueueStats()
        self._lock = threading.Lock()
        self._items: deque[tuple[int, bytes]] = deque()  # unacknowledged, in seq order
        self._bytes = 0
        self._last_seq = 0
        self._ack_seq = 0
        self._read_index = 0  # position in _items of the next record to read
        self._positions: dict[str, Any] = {}
        self._closed = False

    @classmethod
    def open(cls, path: object = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
             when_full: WhenFull = "block", **_ignored: object) -> MemQueue:
        """Same call shape as ``DiskQueue.open``; ``path`` and fsync settings are ignored."""
        return cls(max_bytes=max_bytes, when_full=when_full)

    def has_room(self, nbytes: int, nrecords: int | None = None) -> bool:
        """False only under ``when_full="block"`` when the records would not fit (without
        ``nrecords``, a quarter of ``nbytes`` is assumed for overhead); an empty queue
        always has room."""
        if self.when_full != "block":
            return True
        overhead = HEADER_SIZE * nrecords if nrecords is not None else nbytes // 4
        return not self._items or self._bytes + nbytes + overhead <= self.max_bytes

    def append(self, payloads: list[bytes], source_key: str | None = None, position: Any = None,
               positions: list[Any] | None = None) -> AppendResult:
        """As ``DiskQueue.append`` (dedup by ``source_key`` + ``position``/``positions``
        within this process's lifetime)."""
        with self._lock:
            if self._closed:
                raise QueueError("queue is closed")
            n = len(payloads)
            skipped = 0
            mark_pos = position
            if source_key is not None and (positions is not None or position is not None):
                high = self._positions.get(source_key)
                if positions is not None:
                    if len(positions) != n:
                        raise ValueError("positions must have one entry per payload")
                    if high is not None:
                        keep = [i for i, p in enumerate(positions) if not _le(p, high)]
                        skipped = n - len(keep)
                        payloads = [payloads[i] for i in keep]
                        positions = [positions[i] for i in keep]
                    mark_pos = positions[-1] if positions else None
                elif high is not None and _le(position, high):
                    skipped, payloads = n, []
                self.stats.duplicates_skipped += skipped
            else:
                source_key = None
            if not payloads:
                return AppendResult(self._last_seq + 1, self._last_seq, 0, skipped, 0)
            sizes = [len(p) + HEADER_SIZE for p in payloads]
            need = sum(sizes)
            dropped = 0
            if self._items and self._bytes + need > self.max_bytes:
                if self.when_full == "block":
                    self.stats.full_refusals += 1
                    raise QueueFull(f"memory queue is full ({self._bytes} of {self.max_bytes} bytes)")
                if self.when_full == "drop_oldest":
                    self._drop_oldest(need)
                else:
                    keep = len(payloads)
                    while keep and self._bytes + need > self.max_bytes:
                        keep -= 1
                        need -= sizes[keep]
                    dropped = len(payloads) - keep
                    if dropped and not self.stats.dropped_newest:
                        log.warning("memory queue full: dropping newest records (when_full=drop_newest)")
                    self.stats.dropped_newest += dropped
                    payloads = payloads[:keep]
                    if positions is not None:
                        positions = positions[:keep]
                        mark_pos = positions[-1] if positions else None
                    if not payloads:
                        return AppendResult(self._last_seq + 1, self._last_seq, 0, skipped, dropped)
            first = self._last_seq + 1
            self._items.extend(zip(range(first, first + len(payloads)), payloads, strict=True))
            self._last_seq = first + len(payloads) - 1
            self._bytes += need
            if source_key is not None and mark_pos is not None:
                self._positions.pop(source_key, None)
                self._positions[source_key] = _tuples(mark_pos)
            self.stats.appended_records += len(payloads)
            self.stats.appended_bytes += need
            return AppendResult(first, self._last_seq, len(payloads), skipped, dropped)

    def _drop_oldest(self, need: int) -> None:
        dropped = 0
        while self._items and self._bytes + need > self.max_bytes:
            seq, p = self._items.popleft()
            self._bytes -= len(p) + HEADER_SIZE
            self._ack_seq = seq
            if self._read_index:
                # read by the sink: in flight, delivered from its batch (as the disk
                # queue counts): a 1 MiB cap over an outage counted the 900 records
                # the SIEM got first as dropped too
                self._read_index -= 1
            else:
                dropped += 1
        if dropped:
            if not self.stats.dropped_oldest:
                log.warning("memory queue full: dropping oldest records (when_full=drop_oldest)")
            self.stats.dropped_oldest += dropped

    def read(self, max_records: int = 1000, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Up to ``max_records`` records (at least one, about ``max_bytes``) from the cursor."""
        with self._lock:
            items = self._items
            i = self._read_index
            end = min(len(items), i + max_records)
            out: list[tuple[int, bytes]] = []
            nbytes = 0
            while i < end and nbytes < max_bytes:
                item = items[i]
                out.append(item)
                nbytes += len(item[1])
                i += 1
            self._read_index = i
            self.stats.read_records += len(out)
            return out

    def ack(self, up_to_seq: int) -> None:
        """Release every record with seq <= ``up_to_seq``."""
        with self._lock:
            if up_to_seq <= self._ack_seq:
                return
            up_to = min(up_to_seq, self._last_seq)
            items = self._items
            freed = 0
            count = 0
            while items and items[0][0] <= up_to:
                freed += len(items.popleft()[1]) + HEADER_SIZE
                count += 1
            self._bytes -= freed
            self._read_index = max(0, self._read_index - count)
            self.stats.acked_records += up_to - self._ack_seq
            self._ack_seq = up_to

    def rewind(self) -> None:
        """Read again from the oldest unacknowledged record."""
        with self._lock:
            self._read_index = 0

    def sync(self) -> int:
        """Nothing to flush; returns ``durable_seq``."""
        return self._ack_seq

    @property
    def durable_seq(self) -> int:
        """The acknowledged seq: in memory, only delivered records are safe."""
        return self._ack_seq

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def acked_seq(self) -> int:
        return self._ack_seq

    @property
    def depth(self) -> int:
        return self._last_seq - self._ack_seq

    @property
    def unread(self) -> int:
        return len(self._items) - self._read_index

    @property
    def bytes_in_memory(self) -> int:
        return self._bytes

    @property
    def bytes_on_disk(self) -> int:
        return 0

    def oldest_unacked_time(self) -> int | None:
        with self._lock:
            return payload_time(self._items[0][1]) if self._items else None

    def close(self) -> None:
        """Drop what is left (it was never durable; the sources re-read it)."""
        with self._lock:
            self._closed = True
            if self._items:
                log.info("memory queue closed with %d undelivered record(s); the sources "
                         "re-read them after restart", len(self._items))
            self._items.clear()
            self._bytes = 0

    def __enter__(self) -> MemQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _le(pos: Any, high: Any) -> bool:
    try:
        return bool(_tuples(pos) <= high)
    except TypeError:
        return False
