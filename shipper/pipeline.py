"""The pipeline: source → parse → (transform, correlate) → buffer → sink, and acks back.

Chain of custody (docs/design.md):
  * a batch read from a source is parsed, serialised once, and appended to the
    queue of every sink; the source checkpoint moves past it only once those
    appends are durable in every queue (after the fsync that covered them);
  * each sink reads its own queue, delivers, and acknowledges; the queue frees
    records only on acknowledgement; a failed send rewinds to the oldest
    unacknowledged record and sends the same records (same event ids) again.

Backpressure: when a queue is full under ``when_full = "block"``, the source
task waits, so nothing more is read; multilog keeps writing its own files.
Every stage works on lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from shipper.diskqueue import QueueWriteError
from shipper.parse import LineParser, ParseOptions
from shipper.record import rfc3339_ns
from shipper.sinks.base import Backoff, PermanentError, Sink, deliver

log = logging.getLogger("shipper.pipeline")


class Queue(Protocol):
    def append(self, payloads: list[bytes]) -> Any: ...
    def sync(self) -> None: ...
    @property
    def durable_seq(self) -> int: ...
    def read(self, max_records: int, max_bytes: int) -> list[tuple[int, bytes]]: ...
    def ack(self, up_to_seq: int) -> None: ...
    def rewind(self) -> None: ...
    def has_room(self, nbytes: int, nrecords: int | None = None) -> bool: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class SinkRoute:
    """A sink, its queue, and which records it wants."""

    name: str
    sink: Sink
    queue: Queue
    wants: Callable[[dict[str, Any]], bool] = lambda rec: True
    batch_records: int = 1000
    batch_bytes: int = 1 << 20
    dead_letter: Callable[[list[dict[str, Any]], PermanentError], None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class SourceStats:
    lines: int = 0
    bytes: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    last_event_ns: int = 0  # event time of the newest line read, for lag


@dataclass(slots=True)
class PipelineStats:
    lines: int = 0
    records: int = 0
    by_event: dict[tuple[str, str], int] = field(default_factory=dict)
    by_source: dict[str, SourceStats] = field(default_factory=dict)  # per directory / file
    blocked_seconds: float = 0.0

    def source(self, key: str) -> SourceStats:
        st = self.by_source.get(key)
        if st is None:
            st = self.by_source[key] = SourceStats()
        return st


def gap_record(gap: Any, host: str | None) -> dict[str, Any]:
    """A follower's Gap as a record: data we know multilog deleted before we read it."""
    now = time.time_ns()
    fields = {k: v for k, v in (
        ("gap_source", getattr(gap, "source", None)),
        ("gap_file", getattr(gap, "file", None) or getattr(gap, "name", None)),
        ("bytes_lost", getattr(gap, "bytes_lost", None)),
        ("reason", getattr(gap, "reason", None)),
        ("gap_first_unix_ns", getattr(gap, "first_time_ns", None)),
        ("gap_last_unix_ns", getattr(gap, "last_time_ns", None)),
    ) if v is not None}
    text = f"gap: {fields.get('gap_file', '?')} lost ({fields.get('bytes_lost', 'unknown')} bytes): " \
           f"{fields.get('reason', '')}"
    rec = {"event_id": None, "time": rfc3339_ns(now), "time_unix_ns": now, "time_source": "ingest",
           "host": host, "program": "shipper", "pid": None, "event": "gap"}
    rec.update(fields)
    rec.update({"message": text, "raw": text, "flags": [], "source": fields.get("gap_source"),
                "file_id": None, "offset": None})
    return rec


class Pipeline:
    """Runs sources into queues and queues into sinks until stopped."""

    def __init__(self, sources: list[tuple[Any, ParseOptions]], routes: list[SinkRoute],
                 transform: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                 correlate: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                 sync_interval: float = 0.05) -> None:
        self.sources = [s for s, _ in sources]
        self._opts = {id(s): o for s, o in sources}
        self.routes = routes
        self.transform = transform
        self.correlate = correlate
        self.sync_interval = sync_interval
        self.stats = PipelineStats()
        self._parsers: dict[str, LineParser] = {}
        # (source, position, {route name: last seq}) awaiting durability, in order
        self._pending: deque[tuple[Any, Any, dict[str, int]]] = deque()
        self._write_error_logged = False
        self._stop_reading = asyncio.Event()
        self._stop_sending = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    # -- source side -------------------------------------------------------

    def _records_for(self, source: Any, batch: Any, now_ns: int) -> list[dict[str, Any]]:
        parser = self._parsers.get(batch.source)
        if parser is None:
            parser = self._parsers[batch.source] = LineParser(self._opts[id(source)])
        parser.source = batch.path
        parser.file_id = batch.file_id
        records = parser.parse_batch(batch.lines, batch.offsets, now_ns)
        flags = getattr(batch, "line_flags", None)
        if flags:
            for i, flag in flags.items():
                records[i].add_flag(flag)
        self.stats.lines += len(records)
        st = self.stats.source(batch.source)
        st.lines += len(records)
        st.bytes += sum(map(len, batch.lines)) + len(records)
        dicts = [r.to_dict() for r in records]
        if records:
            st.last_event_ns = records[-1].time_ns or 0
        for d in dicts:
            d["ingest_unix_ns"] = now_ns
        return dicts

    async def _run_source(self, source: Any) -> None:
        async for item in source.batches():
            if self._stop_reading.is_set():
                break
            now_ns = time.time_ns()
            if hasattr(item, "lines"):
                dicts = self._records_for(source, item, now_ns)
                position = item.position
            else:  # a Gap
                st = self.stats.source(item.source)
                st.gaps += 1
                st.gap_bytes += getattr(item, "bytes_lost", None) or 0
                dicts = [gap_record(item, self._opts[id(source)].host)]
                position = getattr(item, "position", None)
            if self.transform is not None:
                dicts = self.transform(dicts)
            if self.correlate is not None:
                dicts = dicts + self.correlate(dicts)
            await self._append(source, position, dicts)

    async def _append(self, source: Any, position: Any,
                      dicts: list[dict[str, Any]]) -> None:
        by_event = self.stats.by_event
        for d in dicts:
            key = (d.get("program") or "", d.get("event") or "")
            by_event[key] = by_event.get(key, 0) + 1
        self.stats.records += len(dicts)
        dumps = orjson.dumps
        all_payloads = [dumps(d) for d in dicts]
        seqs: dict[str, int] = {}
        for route in self.routes:
            wants = route.wants
            payloads = [p for p, d in zip(all_payloads, dicts, strict=True) if wants(d)]
            if not payloads:
                continue
            nbytes = sum(map(len, payloads))
            t0 = time.monotonic()
            while True:
                if not route.queue.has_room(nbytes, len(payloads)):
                    # when_full = block: stop reading until the sink drains its queue
                    if self._stop_reading.is_set():
                        return  # not appended, not committed: read again after restart
                    await asyncio.sleep(0.05)
                    continue
                try:
                    # No dedup positions: after a crash the source re-reads from its
                    # checkpoint and those records may be queued twice; they carry
                    # the same event ids, so the SIEM can drop them.
                    result = route.queue.append(payloads)
                    break
                except QueueWriteError as exc:  # disk full or I/O error: wait, try again
                    if not self._write_error_logged:
                        log.error("buffer of sink %s: %s (reading paused until it works)", route.name, exc)
                        self._write_error_logged = True
                    if self._stop_reading.is_set():
                        return
                    await asyncio.sleep(1.0)
            self._write_error_logged = False
            self.stats.blocked_seconds += time.monotonic() - t0
            seqs[route.name] = result.last_seq
            route.wake.set()
        if position is not None:
            self._pending.append((source, position, seqs))

    async def _run_syncer(self) -> None:
        """Make appends durable on a clock, then let sources commit past them."""
        while True:
            try:
                await asyncio.wait_for(self._stop_sending.wait(), self.sync_interval)
            except TimeoutError:
                pass
            self.sync_and_commit()
            if self._stop_sending.is_set():
                return

    def sync_and_commit(self, force: bool = False) -> None:
        """Commit source positions whose records are durable in every queue.

        The queues make appends durable by their own fsync policy (a clock for
        ``interval``); ``force`` syncs them now, as at shutdown.
        """
        if not self._pending:
            return
        if force:
            for route in self.routes:
                route.queue.sync()
        durable = {route.name: route.queue.durable_seq for route in self.routes}
        latest: dict[int, tuple[Any, Any]] = {}
        while self._pending:
            source, position, seqs = self._pending[0]
            if any(seq > durable[name] for name, seq in seqs.items()):
                break
            self._pending.popleft()
            latest[id(source)] = (source, position)
        for source, position in latest.values():
            source.commit(position)

    # -- sink side ---------------------------------------------------------

    async def _run_sink(self, route: SinkRoute) -> None:
        backoff = Backoff()
        loads = orjson.loads
        while True:
            items = route.queue.read(route.batch_records, route.batch_bytes)
            if not items:
                if self._stop_sending.is_set():
                    return
                route.wake.clear()
                try:
                    await asyncio.wait_for(route.wake.wait(), 0.2)
                except TimeoutError:
                    pass
                continue
            records = [loads(p) for _, p in items]
            try:
                ok = await deliver(route.sink, records, backoff, self._stop_sending)
            except PermanentError as exc:
                log.error("sink %s refused a batch of %d records for good: %s", route.name,
                          len(records), exc)
                if route.dead_letter is not None:
                    route.dead_letter(records, exc)
                route.sink.stats.dead_lettered += len(records)
                ok = True
            if not ok:  # stopping: leave the batch unacknowledged in the queue
                route.queue.rewind()
                return
            route.queue.ack(items[-1][0])

    # -- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run_source(s), name=f"source {i}")
                       for i, s in enumerate(self.sources)]
        self._tasks += [loop.create_task(self._run_sink(r), name=f"sink {r.name}") for r in self.routes]
        self._tasks.append(loop.create_task(self._run_syncer(), name="syncer"))
        await asyncio.gather(*self._tasks)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop reading, deliver what is queued for up to ``drain_timeout``, commit, close.

        Whatever is not delivered stays in the disk queues and goes out after the
        next start; nothing is lost by stopping early.
        """
        self._stop_reading.set()
        source_tasks = self._tasks[: len(self.sources)]
        for t in source_tasks:
            t.cancel()
        await asyncio.gather(*source_tasks, return_exceptions=True)
        self.sync_and_commit(force=True)
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and any(getattr(r.queue, "depth", 0) for r in self.routes):
            await asyncio.sleep(0.05)
        self._stop_sending.set()
        rest = self._tasks[len(self.sources):]
        done, pending = await asyncio.wait(rest, timeout=max(0.1, deadline - time.monotonic()) + 1)
        for t in pending:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        self.sync_and_commit(force=True)
        for s in self.sources:
            await s.close()
        for r in self.routes:
            await r.sink.close()
            r.queue.close()
