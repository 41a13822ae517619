"""The pipeline: source → parse → (pseudonymise, correlate, select) → buffer → sink, and acks back.

Chain of custody (what "nothing lost" rests on):
  * a batch read from a source is parsed, serialised once, and appended to the
    queue of every sink that wants it (a route's filter may want none of it); the source checkpoint moves past it only once those
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
import contextlib
import hashlib
import logging
import math
import operator
import pickle
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from shipper.diskqueue import QueueWriteError
from shipper.parse import LineParser, ParseOptions
from shipper.parse_worker import WorkerDied, WorkerError, WorkerProcess, parse_to_dicts
from shipper.record import dumps_batch, every_record, rfc3339_ns
from shipper.sinks.base import (
    Backoff,
    PermanentError,
    Prepared,
    Sink,
    SinkError,
    SinkGone,
    deliver,
    describe_error,
    note_failure,
    printable,
)
from shipper.tai64n import tai_to_unix
from shipper.transforms import OTHER_PROGRAMS, Transformer

log = logging.getLogger("shipper.pipeline")


class Queue(Protocol):
    persistent: bool  # its records survive a stop (disk) or not (memory)

    def append(self, payloads: list[bytes]) -> Any: ...
    def sync(self) -> None: ...
    @property
    def durable_seq(self) -> int: ...
    @property
    def depth(self) -> int: ...  # appended, not yet acknowledged
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
    wants: Callable[[dict[str, Any]], bool] = every_record
    batch_records: int = 1000
    batch_bytes: int = 1 << 20
    # seconds a batch short of batch_records waits to fill (batch_max_age), from the
    # append of its first record (unread_since, time.monotonic(); None: none unread)
    batch_age: float = 0.0
    unread_since: float | None = None
    unread_bytes: int = 0  # appended since unread_since (only while batch_age is set)
    dead_letter: Callable[[list[dict[str, Any]], PermanentError], None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # The dicts of the latest appends, (first seq, dicts), while unacknowledged: the
    # sink takes them rather than parse the JSON it reads back (see _recent_dicts).
    recent: deque[tuple[int, list[dict[str, Any]]]] = field(default_factory=deque)
    recent_count: int = 0
    backoff: Backoff = field(default_factory=Backoff)
    gone: bool = False  # the sink can never deliver again (SinkGone): no drain waits for it
    # time.monotonic() since the queue cannot take the next batch (full, or its disk
    # failing): reading is paused for it; and whether the log said it is full
    paused_since: float | None = None
    full_said: bool = False
    # why the last append of this pause failed ("EROFS Read-only file system"); "" when
    # the buffer is full: health and status tell the admin which of the two it is
    append_error: str = ""
    # connections in a row that went before the peer acknowledged anything (_take_confirmed)
    lost_in_a_row: int = 0
    dead_letter_error: str = ""  # why the dead letter could not be written ("": it can)


# Connections in a row that go before the peer acknowledges a byte: a peer that takes
# the bytes and then closes or resets, every time, which is said as a warning
LOST_SAY_AFTER = 3


# (program, event) pairs counted by name (shipper_records_total); more, as "(other)"
BY_EVENT_CAP = 2000


# A full buffer (when_full = block) pauses reading; said in the log, and unhealthy
# (healthz), once it lasts this long: a sink taking a burst is not news.
FULL_SAY_AFTER = 10.0
PAUSE_PROBE_BYTES = 64 << 10  # a batch's worth: a queue that cannot take it is full
# After "appends work again", a new append failure within this many seconds is said
# only once it lasts FULL_SAY_AFTER: catching up on a nearly full disk, each batch
# failed until the sink freed a segment, and the log said the failure and its end
# every second (26 lines in 13 s of a 3 MB tmpfs state_dir).
WRITE_RESAY_AFTER = 60.0
# Seconds from the start to the first save of the tracking state and checkpoints
FIRST_SAVE_AFTER = 0.5


_program_event = operator.itemgetter("program", "event")

# Records per sink whose dicts are kept after their append (RECENT_MAX * ~1.2 KiB of
# memory): enough for the sink to take the batches just appended.
RECENT_MAX = 8192
# With nothing read for this long, the correlator is fed nothing, to age what is open
CORRELATE_TICK = 5.0
HELD_TICK = 1.0  # s: the tick while the correlator holds mails for their session's reply
# Loop turns a source gives a lagging sink after each batch, and how many in a row
# without an acknowledgement end them (see _give_sinks_turns)
SINK_TURNS = 64
SINK_IDLE_TURNS = 8
# A reload's drain gives up a sink connected but acknowledging nothing for this long
DRAIN_STALL = 2.0


def _note_paused(route: SinkRoute, full: bool) -> None:
    now = time.monotonic()
    if route.paused_since is None:
        route.paused_since = now
    elif full and not route.full_said and now - route.paused_since >= FULL_SAY_AFTER:
        route.full_said = True
        log.warning("buffer of sink %s is full: reading paused until the sink takes records "
                    "(multilog keeps the logs until its n limit; then gaps)", route.name)


def _note_room(route: SinkRoute) -> None:
    if route.full_said:
        assert route.paused_since is not None
        log.info("buffer of sink %s has room again: reading resumed after %.0f s", route.name,
                 time.monotonic() - route.paused_since)
    route.paused_since = None
    route.full_said = False
    route.append_error = ""


def _recent_dicts(route: SinkRoute, items: list[tuple[int, bytes]]) -> list[dict[str, Any]] | None:
    """The dicts of ``items`` (seq, payload) from the recent appends, or None when
    some are not there (read back after a restart, or the sink is behind).

    JSON read back equals the dicts it was made from (``dumps_batch`` says when it
    does not, and those are not kept), so a record is encoded the same whichever
    way it comes: the first send and a re-send after a restart carry the same bytes."""
    seq, last = items[0][0], items[-1][0]
    if last - seq + 1 != len(items):
        return None
    out: list[dict[str, Any]] = []
    for start, dicts in route.recent:
        end = start + len(dicts)
        if end <= seq:
            continue
        if start > seq:
            return None
        take = dicts[seq - start:last + 1 - start]
        out += take
        seq += len(take)
        if seq > last:
            return out
    return None


def _ack_answered(route: SinkRoute, batch: Any, items: list[tuple[int, bytes]]) -> None:
    """A batch cut short by a stop or a reload: what the receiver answered of it (RELP's
    200 OKs, from the first record) is delivered, and acknowledged here. Else the next
    pipeline sent it again: 299 duplicates where the window the frozen peer left
    unanswered was 128 (a reload with rsyslog stopped, on a loaded machine)."""
    answered = getattr(route.sink, "answered", None)
    n = answered(batch) if answered is not None else 0
    if n:
        route.queue.ack(items[n - 1][0])
        _forget_recent(route, items[n - 1][0])


def _forget_recent(route: SinkRoute, acked_seq: int, limit: int = 0) -> None:
    """Drop recent appends up to ``acked_seq``, and the oldest beyond ``limit`` records."""
    recent = route.recent
    while recent and (recent[0][0] + len(recent[0][1]) - 1 <= acked_seq
                      or (limit and route.recent_count > limit)):
        route.recent_count -= len(recent.popleft()[1])


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
    # records a sink took as dicts kept from their append / parsed back from the buffer
    sent_from_memory: int = 0
    sent_from_buffer: int = 0

    def source(self, key: str) -> SourceStats:
        st = self.by_source.get(key)
        if st is None:
            st = self.by_source[key] = SourceStats()
        return st


def _true_tai(ns: int | None) -> int | None:
    """A time the follower decoded from a label as daemontools' (TAI - 10 s), for a
    source whose labels are true TAI (s6-log, ``tai_leap``): as its lines' times."""
    if ns is None:
        return None
    unix, nanos, _ = tai_to_unix(*divmod(ns, 1_000_000_000))
    return unix * 1_000_000_000 + nanos


def gap_record(gap: Any, host: str | None, tai_leap: bool = False) -> dict[str, Any]:
    """A follower's Gap as a record: data we know multilog deleted before we read it."""
    now = time.time_ns()
    first_ns, last_ns = getattr(gap, "first_time_ns", None), getattr(gap, "last_time_ns", None)
    if tai_leap:
        first_ns, last_ns = _true_tai(first_ns), _true_tai(last_ns)
    lost = getattr(gap, "bytes_lost", None)
    exact = bool(getattr(gap, "exact", False))
    if not exact and not lost:
        lost = None  # a lower bound of 0 says nothing: unknown, not "nothing lost"
    fields = {k: v for k, v in (
        ("gap_source", getattr(gap, "source", None)),
        ("gap_file", getattr(gap, "file", None) or getattr(gap, "name", None)),
        ("bytes_lost", lost),
        ("bytes_lost_exact", exact if lost is not None else None),
        ("reason", getattr(gap, "reason", None)),
        ("gap_first_unix_ns", first_ns),
        ("gap_last_unix_ns", last_ns),
    ) if v is not None}
    size = ("unknown size" if lost is None else f"{lost} bytes" if exact
            else f"at least {lost} bytes")
    text = f"gap: {fields.get('gap_file', '?')} lost ({size}): {fields.get('reason', '')}"
    # An id of its own, the same when a restart from an older checkpoint finds the gap
    # again (it was null: the SIEM could not tell the second report from a second loss)
    key = "\0".join(str(fields.get(k)) for k in ("gap_source", "gap_file", "reason",
                                                 "gap_first_unix_ns", "gap_last_unix_ns"))
    eid = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest() + "-gap"
    rec = {"event_id": eid, "time": rfc3339_ns(now), "time_unix_ns": now, "time_source": "ingest",
           "host": host, "program": "shipper", "pid": None, "event": "gap", "message": text,
           "raw": text, "flags": [], "source": fields.get("gap_source"), "file_id": None,
           "offset": None}
    rec.update(fields)  # after the core keys, as every record's fields (docs/records.md)
    return rec


class Pipeline:
    """Runs sources into queues and queues into sinks until stopped."""

    def __init__(self, sources: list[tuple[Any, ParseOptions]], routes: list[SinkRoute],
                 transform: Transformer | None = None,
                 correlate: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
                 sync_interval: float = 0.05, parse_workers: int = 0,
                 worker_inflight: int = 4, save_state: Callable[[], bool | None] | None = None,
                 save_interval: float = 30.0,
                 snapshot_state: Callable[[], Callable[[], bool]] | None = None) -> None:
        self.sources = [s for s, _ in sources]
        self._opts = {id(s): o for s, o in sources}
        self.routes = routes
        self.transform = transform
        self.correlate = correlate
        self.sync_interval = sync_interval
        self.parse_workers = parse_workers  # worker processes that parse (0: parse here)
        self.worker_inflight = worker_inflight  # batches per source sent ahead to a worker
        self._workers: list[WorkerProcess] = []
        self._workers_lock = asyncio.Lock()
        # Tracking state (open mails) saved with the checkpoints it matches: see _run_syncer
        self.save_state = save_state
        self.save_interval = save_interval
        # The state as it is now, and the write of it (file and fsync) to run in a thread:
        # with it the running saves write off the event loop (_start_save)
        self.snapshot_state = snapshot_state
        self._saving: asyncio.Task[None] | None = None  # a save's writes under way
        if save_state is not None:
            # Checkpoints are written only with the state (_run_syncer): one written
            # alone, ahead of the state, would skip lines the saved state has not seen
            # after a kill -9 (a mail cut in two, or sent again changed under its id).
            for s in self.sources:
                if hasattr(s, "autosave"):
                    s.autosave = False
        self.left_at_stop = 0  # records in the queues when stop() closed them
        self._unappended = 0
        self._correlated_at = time.monotonic()  # when the correlator was last fed (see _tick_correlator)
        # The first save comes soon: a shipper killed before its first save (a crash
        # loop, an OOM kill under a catch-up) moved no checkpoint, and each start sent
        # everything since the last one again (6 kills -9 at 1-2 s: 97,356 lines twice
        # of 40,000)
        self._next_save = time.monotonic() + min(save_interval, FIRST_SAVE_AFTER)
        self._state_ahead = False  # a correlated batch was given up (see _append)
        self._give_up_at = math.inf  # stopping: when a batch waiting for room is given up
        self._gate_open_until = -math.inf  # the save gate holds nobody till then (a stalled sink)
        self.state_kept = True  # False: stop saved neither state nor checkpoints (see stop)
        self.stats = PipelineStats()
        self._parsers: dict[str, LineParser] = {}
        # (source, position, {route name: last seq}) awaiting durability, in order
        self._pending: deque[tuple[Any, Any, dict[str, int]]] = deque()
        self._write_error_logged = False
        self._write_ok_said_at = -math.inf  # when "appends work again" was said last
        self._stop_reading = asyncio.Event()
        self._stop_sending = asyncio.Event()
        # Work for the syncer: positions to commit, or a state to save. An idle daemon
        # then wakes for nothing (the syncer's clock woke it 20 times a second, and the
        # tracking state was written and fsynced every save_interval unchanged).
        self._sync_wanted = asyncio.Event()
        self._fed_since_save = False
        self._tasks: list[asyncio.Task[Any]] = []

    # -- source side -------------------------------------------------------

    def _parser(self, source: Any, key: str) -> LineParser:
        parser = self._parsers.get(key)
        if parser is None:
            parser = self._parsers[key] = LineParser(self._opts[id(source)])
            saved = getattr(source, "saved_state", None)
            state = saved(key) if saved is not None else None
            if isinstance(state, dict):  # what the checkpoint carried (see _append)
                parser.carry_on(state.get("parse"))
        return parser

    def _records_for(self, source: Any, batch: Any, now_ns: int) -> list[dict[str, Any]]:
        """Parse a batch here, in the daemon's process."""
        parser = self._parser(source, batch.source)
        parser.source = batch.path
        parser.file_id = batch.file_id
        dicts = parse_to_dicts(parser, batch.lines, batch.offsets,
                               getattr(batch, "line_flags", None), now_ns)
        self._count_lines(batch, dicts[-1]["time_unix_ns"] if dicts else None)
        return dicts

    def _count_lines(self, batch: Any, last_ns: int | None) -> None:
        n = len(batch.lines)
        self.stats.lines += n
        st = self.stats.source(batch.source)
        st.lines += n
        st.bytes += sum(map(len, batch.lines)) + n
        if last_ns is not None:
            st.last_event_ns = last_ns

    def _gap(self, source: Any, gap: Any) -> list[dict[str, Any]]:
        st = self.stats.source(gap.source)
        st.gaps += 1
        st.gap_bytes += getattr(gap, "bytes_lost", None) or 0
        opts = self._opts[id(source)]
        return [gap_record(gap, opts.host, opts.tai_leap)]

    def _finish(self, dicts: list[dict[str, Any]], payloads: list[bytes] | None
                ) -> tuple[list[bytes], list[dict[str, Any]], bool]:
        """Transform and correlate a batch's dicts; serialise what is new or changed.

        ``payloads``: the dicts already serialised (by the parse worker), kept
        as they are when no transform can have changed them. The flag says
        whether the dicts are exactly what the payloads hold.
        """
        exact = False
        t = self.transform
        if t is not None:  # pseudonyms before the correlator: its state holds no address
            dicts = t.pseudonymise(dicts)
            payloads = None
        summaries = None
        if self.correlate is not None:
            self._unappended += 1  # until _append returns: the tracking state is ahead
            self._fed_since_save = True
            self._sync_wanted.set()
            self._correlated_at = time.monotonic()
            summaries = self.correlate(dicts)
        if t is not None:  # the filters after it: a mail's summary has all its lines
            dicts = t.select(dicts)
        if payloads is None:
            payloads, exact = dumps_batch(dicts)
        if summaries:
            summaries, more, more_exact = self._summaries(summaries)
            dicts = dicts + summaries
            payloads = payloads + more
            exact = exact and more_exact
        return payloads, dicts, exact

    def _summaries(self, summaries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes], bool]:
        """The correlator's summaries as they are appended: tidied by the transform, serialised."""
        if self.transform is not None:
            summaries = self.transform.tidy_summaries(summaries)
        payloads, exact = dumps_batch(summaries)
        return summaries, payloads, exact

    async def _run_source(self, source: Any) -> None:
        # A source always goes to the same worker: its batches are parsed in order.
        worker = await self._worker_for(self.sources.index(source))
        if worker is not None:
            await self._run_source_with_worker(source, worker)
            return
        async for item in source.batches():
            if self._stop_reading.is_set():
                break
            if hasattr(item, "lines"):
                dicts = self._records_for(source, item, time.time_ns())
            else:  # a Gap
                dicts = self._gap(source, item)
            await self._save_gate()
            if self._stop_reading.is_set():
                break  # stopping: correlate nothing more (it could not be appended)
            payloads, dicts, exact = self._finish(dicts, None)
            await self._append(source, getattr(item, "position", None), payloads, dicts, exact)
            # Let the sinks run between batches: catching up on a large backlog
            # would otherwise read all of it before the first record is sent.
            await asyncio.sleep(0)
            await self._give_sinks_turns()

    async def _give_sinks_turns(self) -> None:
        """A sink that delivers but lags behind gets a few more loop turns.

        In a catch-up the source is always ready, and takes a whole batch of CPU
        each turn, while a sink needs several turns a batch (read, send, drain,
        ack): it falls behind until its records are no longer in memory and must
        be parsed back from the buffer (3 µs each; a tenth of all the work).
        Never a wait: the turns end when the sink stops taking records (it waits
        for its peer, not for us), and a slow or stalled sink must not slow
        reading, or multilog deletes what is unread. Lag and progress are in
        records the sink has not taken (sent), not in those not acknowledged: a
        new connection acknowledges nothing for its probation (sinks.confirm),
        and the turns ended while the sink sent on.
        """
        idle = 0
        for _ in range(SINK_TURNS):
            lagging = [r.queue for r in self.routes
                       if r.backoff.attempt == 0 and r.queue.unread > RECENT_MAX // 2]
            if not lagging:
                return
            before = sum(q.unread for q in lagging)
            await asyncio.sleep(0)
            if sum(q.unread for q in lagging) < before:
                idle = 0
            else:
                idle += 1
                if idle >= SINK_IDLE_TURNS:
                    return

    # -- parsing in a worker process ---------------------------------------

    def _worker_died(self) -> None:
        """The worker died (killed by hand, out of memory): work here from now on."""
        if self.parse_workers:
            log.error("parse worker died; parsing and encoding in the daemon's process from now on")
            self.parse_workers = 0

    async def _start_workers(self) -> bool:
        if self.parse_workers <= 0:
            return False
        async with self._workers_lock:  # sources and sinks ask at once
            if not self._workers and self.parse_workers > 0:
                try:
                    for _ in range(self.parse_workers):
                        self._workers.append(await WorkerProcess.start())
                except OSError as exc:
                    log.error("cannot start a parse worker (%s); parsing in the daemon's process", exc)
                    self.parse_workers = 0
                    await self.close_workers()
        return self.parse_workers > 0

    async def _worker_for(self, index: int) -> WorkerProcess | None:
        if not await self._start_workers():
            return None
        return self._workers[index % len(self._workers)]

    async def _run_source_with_worker(self, source: Any, worker: WorkerProcess) -> None:
        """Read and submit batches while the worker parses earlier ones; append
        their results strictly in order. A few batches in flight keep both
        processes busy; the bound keeps memory and re-reading after a crash small."""
        loop = asyncio.get_running_loop()
        inflight: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.worker_inflight)
        appender = loop.create_task(self._append_parsed(source, inflight))
        opts = self._opts[id(source)]
        started: set[str] = set()
        try:
            async for item in source.batches():
                if self._stop_reading.is_set() or appender.done():
                    break
                now_ns = time.time_ns()
                fut = None
                if hasattr(item, "lines") and self.parse_workers > 0:
                    carried = None
                    if item.source not in started:  # its first batch: the checkpoint's state
                        started.add(item.source)
                        carried = self._parser(source, item.source).carried()
                    fut = worker.submit(
                        "parse", item.source, opts, item.path, item.file_id, item.lines,
                        item.offsets, getattr(item, "line_flags", None) or None, now_ns, carried)
                await inflight.put((item, now_ns, fut))
            await inflight.put(None)
            await appender
        finally:
            if not appender.done():
                appender.cancel()
                await asyncio.gather(appender, return_exceptions=True)

    async def _append_parsed(self, source: Any, inflight: asyncio.Queue[Any]) -> None:
        loads = orjson.loads
        while (entry := await inflight.get()) is not None:
            item, now_ns, fut = entry
            parsed = None
            if fut is not None:
                try:
                    parsed = await fut
                except WorkerDied:
                    self._worker_died()
                except WorkerError as exc:  # a bug: here from now on, with the parser's state
                    log.error("parse worker failed on a batch (%s)", exc)
                    self._worker_died()
            await self._save_gate()
            if self._stop_reading.is_set():
                return  # stopping: correlate nothing more (it could not be appended)
            if parsed is not None:
                payloads, metas, last_ns, carried = parsed
                # The daemon's parser follows the worker's, to take over if it dies: the
                # time for unstamped lines, and recordio lines cut inside a secret.
                self._parser(source, item.source).carry_on(carried or {})
                self._count_lines(item, last_ns)
                exact = False
                if self.transform is not None or self.correlate is not None:
                    payloads, dicts, exact = self._finish([loads(p) for p in payloads], payloads)
                else:  # sink filters and counters look at program and event only
                    dicts = [{"program": p, "event": e} for p, e in metas]
            elif hasattr(item, "lines"):  # no worker (any more): parse here
                payloads, dicts, exact = self._finish(self._records_for(source, item, now_ns), None)
            else:  # a Gap
                payloads, dicts, exact = self._finish(self._gap(source, item), None)
            await self._append(source, getattr(item, "position", None), payloads, dicts, exact)
            if self._stop_reading.is_set():
                return

    async def _append(self, source: Any, position: Any, all_payloads: list[bytes],
                      dicts: list[dict[str, Any]], exact: bool = False) -> None:
        if position is not None:
            parser = self._parsers.get(position[0])
            if parser is not None and (parser.open_lines or parser.in_fold):
                # A recordio line cut inside a secret goes on after this position: the
                # checkpoint keeps it, so a restart redacts its next piece too. And in
                # the hour a DST change repeats, the last line's time: a restart there
                # put the second pass's lines in the first, an hour early (a review).
                position = (position[0], {**position[1], "parse": parser.carried()})
        appended = False
        try:
            appended = await self._append_to_queues(source, position, all_payloads, dicts, exact)
        finally:
            if self.correlate is not None:
                if not appended:
                    # correlated, not appended (stopping while it waited for room): the
                    # state has its lines and summaries, no checkpoint will; a state saved
                    # now would make a restart skip them, summaries and all
                    self._state_ahead = True
                self._unappended -= 1
                if not self._unappended:
                    self._save_if_due()

    async def _append_to_queues(self, source: Any, position: Any, all_payloads: list[bytes],
                                dicts: list[dict[str, Any]], exact: bool = False) -> bool:
        """Append to every route's queue; False when stopping left it not (all) appended."""
        by_event = self.stats.by_event
        # counted per batch (a record at a time cost 0.26 µs a line): a batch holds few kinds
        try:
            counts = Counter(map(_program_event, dicts))
        except KeyError:  # a transform removed one of them
            counts = Counter((d.get("program"), d.get("event")) for d in dicts)
        for (program, event), n in counts.items():
            key = (program or "", event or "")
            if key not in by_event and len(by_event) >= BY_EVENT_CAP:
                # syslog tags are free text: past the cap, counted under one name (the
                # metric stopped at 10,000 series and the rest went uncounted)
                key = (OTHER_PROGRAMS, event or "")
            by_event[key] = by_event.get(key, 0) + n
        self.stats.records += len(dicts)
        seqs: dict[str, int] = {}
        for route in self.routes:
            wants = route.wants
            wanted = [] if wants is every_record else [i for i, d in enumerate(dicts) if wants(d)]
            if wants is every_record or len(wanted) == len(dicts):
                payloads, route_dicts = all_payloads, dicts
            else:
                payloads = [all_payloads[i] for i in wanted]
                route_dicts = [dicts[i] for i in wanted]
            if not payloads:
                continue
            # Appended in pieces when a whole batch cannot be written (a disk with less
            # free space than one catch-up batch, a file size limit): halved at each
            # failure, doubled again at each success. One batch of 1.4 MB on a disk with
            # 750 kB free stopped the reading for good while the buffer was empty.
            done, step = 0, len(payloads)
            failed = waited = False
            while done < len(payloads):
                piece = payloads if step == len(payloads) else payloads[done:done + step]
                nbytes = sum(map(len, piece))
                if not route.queue.has_room(nbytes, len(piece)):
                    # when_full = block: stop reading until the sink drains its queue
                    if self._stop_reading.is_set() and time.monotonic() >= self._give_up_at:
                        return False  # not appended, not committed: read again after restart
                    _note_paused(route, full=True)
                    route.append_error = ""
                    await asyncio.sleep(0.05)
                    continue
                try:
                    # No dedup positions: after a crash the source re-reads from its
                    # checkpoint and those records may be queued twice; they carry
                    # the same event ids, so the SIEM can drop them.
                    result = route.queue.append(piece)
                except QueueWriteError as exc:  # disk full or I/O error: wait, try again
                    route.append_error = exc.problem
                    _note_paused(route, full=False)
                    now = time.monotonic()
                    assert route.paused_since is not None
                    if not self._write_error_logged and (
                            now - self._write_ok_said_at >= WRITE_RESAY_AFTER
                            or now - route.paused_since >= FULL_SAY_AFTER):
                        log.error("buffer of sink %s: %s (reading paused until it works)", route.name, exc)
                        self._write_error_logged = True
                    failed = True
                    if self._stop_reading.is_set() and time.monotonic() >= self._give_up_at:
                        return False  # pieces appended go again after restart (same ids)
                    if step > 1:
                        step = (min(step, len(payloads) - done) + 1) // 2
                        continue
                    waited = True
                    await asyncio.sleep(1.0)
                    continue
                if exact and result.accepted == len(piece):
                    route.recent.append((result.first_seq, route_dicts[done:done + len(piece)]))
                    route.recent_count += len(piece)
                    _forget_recent(route, -1, RECENT_MAX)
                done += len(piece)
                step = min(2 * step, len(payloads) - done) or step
                route.wake.set()  # a piece sent and acknowledged may make the room the rest needs
                if route.unread_since is None:
                    route.unread_since = time.monotonic()
                if route.batch_age:
                    route.unread_bytes += nbytes
            if waited and self._write_error_logged and route.paused_since is not None:
                # the end of a spell said (a state_dir read-only for a while): say it too
                log.info("buffer of sink %s: appends work again: reading resumed after %.0f s",
                         route.name, time.monotonic() - route.paused_since)
                self._write_error_logged = False
                self._write_ok_said_at = time.monotonic()
            elif not failed:  # said again only after a batch went in whole: one line a spell
                self._write_error_logged = False
            if route.paused_since is not None:
                _note_room(route)
            seqs[route.name] = result.last_seq
        if position is not None:
            self._pending.append((source, position, seqs))
            self._sync_wanted.set()
        return True

    async def _run_syncer(self) -> None:
        """Make appends durable on a clock, then let sources commit past them; with
        tracking on, save the state and the checkpoints together when due."""
        while True:
            if not self._pending and not self._fed_since_save:
                self._sync_wanted.clear()
                await self._sync_wanted.wait()
            try:  # asyncio.timeout, not wait_for: no task made at each turn
                async with asyncio.timeout(self.sync_interval):
                    await self._stop_sending.wait()
            except TimeoutError:
                pass
            if not self._save_if_due():
                self.sync_and_commit()
            if self._stop_sending.is_set():
                return

    def _save_if_due(self) -> bool:
        """Save the tracking state and the checkpoints (see _save_together) if due and if
        now is a moment they match: every batch the correlator has seen is appended (none
        waits for room). Called by the syncer and at the end of each append: under
        backpressure a source nearly always waits for room when the syncer looks."""
        if (self.save_state is None or self._unappended or self._state_ahead or self._saving
                or not self._fed_since_save or time.monotonic() < self._next_save):
            return False
        if self.snapshot_state is None:
            self._save_together()
        else:
            self._start_save()
        return True

    def _start_save(self) -> None:
        """``_save_together`` with its writes (the state, then the checkpoints) and their
        fsyncs in a thread: they held the event loop 4-12 ms every save_interval, the
        lines arriving meanwhile waiting. Until the writes end no position is committed
        (sync_and_commit waits), so the checkpoints written in the thread are those of
        the moment the state was taken."""
        assert self.snapshot_state is not None
        t0, fed, write = self._take_save(self.snapshot_state)
        # the loop's part only: saves grow rarer as it grows
        self._next_save = t0 + max(self.save_interval, 20 * (time.monotonic() - t0))
        self._saving = asyncio.get_running_loop().create_task(self._end_save(write, fed),
                                                              name="state save")

    async def _end_save(self, write: Callable[[], bool], fed: bool) -> None:
        try:
            saved = await asyncio.to_thread(write)
        except Exception:  # noqa: BLE001 - a bug of ours: the next save tries again
            log.exception("saving the tracking state and checkpoints failed")
            saved = False
        finally:
            self._saving = None
        self._save_done(saved, fed)
        self._sync_wanted.set()  # the commits waiting for it

    async def _save_gate(self) -> None:
        """With a save due, a source waits here before it correlates its next batch: the
        batches between correlator and buffer then end, the last one's append saves
        (see _save_if_due), and the wait is over. Without it two sources under
        backpressure always had one batch in flight, and nothing was ever saved. A sink
        that has made no room for FULL_SAY_AFTER (stalled, maybe one this source does
        not feed) holds nobody: the save then waits for the blocked batch instead."""
        now = time.monotonic()
        if self.save_state is None or now < self._next_save or now < self._gate_open_until:
            return
        self._save_if_due()
        while (self._unappended and time.monotonic() >= self._next_save
               and not self._stop_reading.is_set()):
            if self.paused_by():
                self._gate_open_until = time.monotonic() + self.save_interval
                return
            await asyncio.sleep(0.01)

    def _save_together(self) -> bool:
        """The tracking state, then the checkpoints: a forced sync commits every batch
        the correlator has seen, so after a crash the lines re-read from a checkpoint
        are ones the saved state has not seen (a state ahead of its checkpoint is
        harmless: the correlator skips lines it had), and a mail that spans the crash
        is one record. A state that could not be saved keeps the checkpoints where they
        were. Saves grow rarer as the state grows (at most ~5 % of the time)."""
        assert self.save_state is not None
        save_state = self.save_state
        t0, fed, write = self._take_save(lambda: save_state)
        saved = self._save_done(write(), fed)
        now = time.monotonic()
        self._next_save = now + max(self.save_interval, 20 * (now - t0))
        return saved

    def _take_save(self, snapshot: Callable[[], Callable[[], bool | None]]
                   ) -> tuple[float, bool, Callable[[], bool]]:
        """On the loop, at a moment the state and the checkpoints match: the positions
        committed and the state taken (``snapshot`` gives its write). Returns when,
        whether input was fed since the last save, and the writes (the state, then the
        checkpoints; False if the state could not be written, and then no checkpoint is)."""
        t0 = time.monotonic()
        self.sync_and_commit(force=True)
        fed, self._fed_since_save = self._fed_since_save, False
        write_state = snapshot()
        saves = [save for s in self.sources if (save := getattr(s, "save", None)) is not None]

        def write() -> bool:
            if write_state() is False:
                return False
            for save in saves:
                save()
            return True

        return t0, fed, write

    def _save_done(self, saved: bool, fed: bool) -> bool:
        if not saved:
            self._fed_since_save = self._fed_since_save or fed  # to be tried again
        elif any(getattr(s, "unsaved", False) for s in self.sources):
            self._fed_since_save = True  # a checkpoint's write failed: the next save tries again
        return saved

    def reading_paused(self) -> bool:
        """A buffer (full, or its disk failing) holds a batch back now."""
        return any(r.paused_since is not None for r in self.routes)

    def carry_from(self, old: Pipeline) -> None:
        """After a reload, what the running pipeline knew that the new one cannot see
        at once: a sink whose buffer paused the reading stays paused since then (healthz
        said ok for 10 s after each reload, for good with reloads that often), and a
        source's newest event time keeps its lag (the lag metric was gone until the
        next line: a quiet log's lag alert cleared by a reload)."""
        routes = {r.name: r for r in old.routes}
        for r in self.routes:
            o = routes.get(r.name)
            # (only while its queue is still full: a pause nothing would end (no more
            # records for it, a bigger buffer) would stay unhealthy for good)
            if o is not None and o.paused_since is not None and r.paused_since is None \
                    and not o.append_error and not r.queue.has_room(PAUSE_PROBE_BYTES):
                r.paused_since, r.full_said = o.paused_since, o.full_said
        for key, st in old.stats.by_source.items():
            if st.last_event_ns:
                new = self.stats.source(key)
                new.last_event_ns = max(new.last_event_ns, st.last_event_ns)

    def paused_by(self) -> list[tuple[str, float, str]]:
        """The sinks whose buffer (full, or its disk failing) has paused the reading for
        FULL_SAY_AFTER or more: (name, seconds, why its appends fail; "" when full)."""
        now = time.monotonic()
        return [(r.name, now - r.paused_since, r.append_error) for r in self.routes
                if r.paused_since is not None and now - r.paused_since >= FULL_SAY_AFTER]

    def sync_and_commit(self, force: bool = False) -> None:
        """Commit source positions whose records are durable in every queue.

        The queues make appends durable by their own fsync policy (a clock for
        ``interval``); ``force`` syncs them now, as at shutdown.
        """
        if not self._pending or (self._saving is not None and not force):
            return  # (a save's checkpoints are being written: see _start_save)
        if force:
            for route in self.routes:
                route.queue.sync()
        durable = {route.name: route.queue.durable_seq for route in self.routes}
        while self._pending:
            source, position, seqs = self._pending[0]
            if any(seq > durable[name] for name, seq in seqs.items()):
                break
            self._pending.popleft()
            # Every one, in order: a source's positions are per directory (a glob follows
            # several), so the last of a source is not the last of each directory.
            source.commit(position)

    # -- sink side ---------------------------------------------------------

    async def _run_sink(self, route: SinkRoute) -> None:
        backoff = route.backoff
        loads = orjson.loads
        worker = await self._encoding_worker(route)
        await self._connect_early(route)
        # A stream sink's sends its peer has not acknowledged yet (see sinks.confirm): the
        # last seq of each, and whether the sink counts it (a dead-lettered batch is not
        # sent). They stay in the queue, unacknowledged, until the peer has them.
        confirm = getattr(route.sink, "confirm", None)
        unconfirmed: deque[tuple[int, bool]] = deque()
        ask_after = 0.01  # while some wait: ask again soon, less often while none comes
        while True:
            linger = self._linger(route)
            items = route.queue.read(route.batch_records, route.batch_bytes) if not linger else None
            if not items:
                # appends and the stop set the wake; the clock is a safety net, and the
                # asking after confirmations while some wait; a short batch, its age
                wait = linger or 1.0
                if unconfirmed:
                    before = len(unconfirmed)
                    self._take_confirmed(route, confirm, unconfirmed)
                    ask_after = 0.01 if len(unconfirmed) < before else min(0.2, ask_after * 2)
                    wait = min(wait, ask_after) if unconfirmed else wait
                if self._stop_sending.is_set():
                    return
                route.wake.clear()
                # asyncio.timeout, not wait_for: no extra task, so the sink wakes one
                # loop turn after an append and takes the batch while it is in memory.
                try:
                    async with asyncio.timeout(wait):
                        await route.wake.wait()
                except TimeoutError:
                    pass
                continue
            ask_after = 0.01
            if not route.queue.unread:
                route.unread_since, route.unread_bytes = None, 0
            batch: Any = None
            if worker is not None:
                try:
                    payload, truncated = await worker.submit("encode", route.name,
                                                             [p for _, p in items])
                    batch = Prepared(payload, len(items), truncated)
                except WorkerDied:
                    self._worker_died()
                    worker = None
                except WorkerError as exc:  # this sink's batches are encoded here from now on
                    log.error("parse worker failed to encode for sink %s (%s); encoding here",
                              route.name, exc)
                    worker = None
            if batch is None:
                batch = _recent_dicts(route, items)
                if batch is None:
                    batch = [loads(p) for _, p in items]
                    self.stats.sent_from_buffer += len(batch)
                else:
                    self.stats.sent_from_memory += len(batch)
            sent = True  # to the peer: a dead-lettered batch is not (no confirmation comes)
            try:
                ok = await deliver(route.sink, batch, backoff, self._stop_sending)
            except SinkGone:
                route.gone = True
                raise
            except asyncio.CancelledError:  # a stop's or reload's drain gave this sink up
                _ack_answered(route, batch, items)
                raise
            except PermanentError as exc:
                records = [loads(p) for _, p in items]
                if exc.refused is not None:  # the rest of the batch was delivered
                    records = [records[i] for i in exc.refused if 0 <= i < len(records)]
                # the peer's words, escaped: a reply must not forge lines of our log
                if not route.dead_letter_error:  # (not again at each try to keep them)
                    log.error("sink %s refused a batch of %d records for good: %s", route.name,
                              len(records), printable(str(exc), 2000))
                # the last error a monitor sees (it kept an older 503 while 100 were refused)
                route.sink.stats.last_error = printable(f"refused for good: {exc}", 500)
                if route.dead_letter is not None:
                    try:
                        route.dead_letter(records, exc)
                    except OSError as dexc:
                        # Kept, not acknowledged: the batch exists nowhere else. The sink
                        # waits and tries again (a full disk); it ended the daemon, and
                        # at every restart again.
                        await self._dead_letter_failed(route, dexc, items)
                        continue
                    if route.dead_letter_error:
                        log.info("sink %s: the dead-letter file is written again", route.name)
                        route.dead_letter_error = ""
                route.sink.stats.dead_lettered += len(records)
                ok, sent = True, False
            if not ok:  # stopping: leave the batch unacknowledged in the queue
                _ack_answered(route, batch, items)
                route.queue.rewind()
                return
            if confirm is None:
                route.queue.ack(items[-1][0])
                _forget_recent(route, items[-1][0])
            else:
                unconfirmed.append((items[-1][0], sent))
                self._take_confirmed(route, confirm, unconfirmed)

    async def _dead_letter_failed(self, route: SinkRoute, exc: OSError,
                                  items: list[tuple[int, bytes]]) -> None:
        """A refused batch that cannot be written to the dead letter: said, counted as a
        failing sink (status, health), left unacknowledged, tried again after a backoff."""
        stats = route.sink.stats
        why = f"cannot write the dead-letter file: {describe_error(exc)}"
        stats.failed += 1
        if why != route.dead_letter_error:
            log.error("sink %s: %s; the refused batch of %d records stays in the buffer "
                      "(tried again)", route.name, why, len(items))
        route.dead_letter_error = stats.last_error = why
        stats.failing = True
        route.queue.rewind()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(route.backoff.next_delay()):
                await self._stop_sending.wait()

    def _linger(self, route: SinkRoute) -> float:
        """Seconds a short batch of ``route`` waits yet to fill (0: send now): until
        ``batch_age`` after its first record, never when stopping (the drain sends it)."""
        since = route.unread_since
        if not route.batch_age or since is None or self._stop_reading.is_set():
            return 0.0
        left = since + route.batch_age - time.monotonic()
        return left if left > 0 and 0 < route.queue.unread < route.batch_records \
            and route.unread_bytes < route.batch_bytes else 0.0

    async def _connect_early(self, route: SinkRoute) -> None:
        """Connect a stream sink at the start rather than at its first batch: that batch
        then waits for no connect or TLS handshake (7 ms of the first lines' latency
        here, more over TLS), and a receiver down or a refused certificate is in the log
        at once, not when the first mail comes. One attempt (a failure counted and said as
        a send's); the first batch tries again. A stop does not wait for it (a receiver
        that drops SYNs, or never answers the handshake)."""
        connect = getattr(route.sink, "connect", None)
        if connect is None:
            return
        attempt = asyncio.ensure_future(connect())
        stopping = asyncio.ensure_future(self._stop_sending.wait())
        try:
            await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not attempt.done():
                attempt.cancel()
            await asyncio.gather(attempt, stopping, return_exceptions=True)
        if attempt.cancelled():
            return
        exc = attempt.exception()
        if isinstance(exc, SinkError):
            note_failure(route.sink, route.backoff, exc)
        elif exc is not None:
            raise exc

    def _take_confirmed(self, route: SinkRoute, confirm: Callable[[], tuple[int, bool]],
                        unconfirmed: deque[tuple[int, bool]]) -> None:
        """Acknowledge in the queue the sends the peer now has; when a connection went
        with the rest, read every unacknowledged record again (duplicates, same ids)."""
        n, lost = confirm()
        last = None
        while unconfirmed and (n or not unconfirmed[0][1]):
            seq, counted = unconfirmed.popleft()
            n -= counted
            last = seq
        if last is not None:
            route.queue.ack(last)
            _forget_recent(route, last)
            route.lost_in_a_row = 0
        if lost and unconfirmed:
            route.lost_in_a_row += 1
            if route.lost_in_a_row == LOST_SAY_AFTER:  # (a TLS port given plain syslog)
                log.warning("sink %s: its last %d connections went before the peer acknowledged "
                            "anything: it takes the bytes, then closes or resets. Does it want TLS "
                            "(protocol = \"tls\"), or refuse us? (records kept, sent again)",
                            route.name, LOST_SAY_AFTER)
            log.info("sink %s: its connection went with records the peer had not acknowledged: "
                     "sending them again", route.name)
            route.sink.stats.extra["resent_unacknowledged"] = (
                route.sink.stats.extra.get("resent_unacknowledged", 0) + len(unconfirmed))
            unconfirmed.clear()
            route.queue.rewind()

    async def _encoding_worker(self, route: SinkRoute) -> WorkerProcess | None:
        """The worker that encodes this sink's batches, if the sink's encoding can
        run there: reading the buffer and sending stay here, the CPU work goes there."""
        encoding = getattr(route.sink, "encoding", None)
        if encoding is None:
            return None
        worker = await self._worker_for(self.routes.index(route))
        if worker is not None:
            try:
                # Runs before any batch of this sink (calls run in order); its own
                # failure shows as the first encode's.
                worker.submit("register", route.name, encoding).add_done_callback(
                    lambda f: f.cancelled() or f.exception())
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                log.warning("sink %s encodes in the daemon's process: %s", route.name, exc)
                return None
        return worker

    # -- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        if self._stop_reading.is_set():  # stopped before it started
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run_source(s), name=f"source {i}")
                       for i, s in enumerate(self.sources)]
        self._tasks += [loop.create_task(self._run_sink(r), name=f"sink {r.name}") for r in self.routes]
        self._tasks.append(loop.create_task(self._run_syncer(), name="syncer"))
        if self.correlate is not None:
            self._tasks.append(loop.create_task(self._tick_correlator(), name="correlator tick"))
        await asyncio.gather(*self._tasks)

    async def _tick_correlator(self) -> None:
        """Feed the correlator nothing when nothing came for CORRELATE_TICK s: it ages
        what is open (a denied session after 60 s, a session or mail past its max age)
        only when fed, and on a quiet server they waited for the next line (a black-box
        review: a deny with no end not said after 80 s)."""
        assert self.correlate is not None
        # Mails held for their session's reply (Tracking.waiting) age at HELD_TICK: looked
        # at each HELD_TICK, as a mail may be held by a batch while this waits
        waiting = getattr(self.correlate, "waiting", None)
        step = CORRELATE_TICK if waiting is None else min(HELD_TICK, CORRELATE_TICK)
        while True:
            try:
                await asyncio.wait_for(self._stop_reading.wait(), step)
                return
            except TimeoutError:
                pass
            tick = HELD_TICK if waiting is not None and waiting() else CORRELATE_TICK
            if self._unappended or time.monotonic() - self._correlated_at < tick:
                continue
            self._correlated_at = time.monotonic()
            summaries = self.correlate([])
            if not summaries:
                continue  # (what aged without a summary is saved with the next batch)
            summaries, payloads, exact = self._summaries(summaries)
            self._unappended += 1
            self._fed_since_save = True
            self._sync_wanted.set()
            await self._append(None, None, payloads, summaries, exact)

    async def stop(self, drain_timeout: float = 10.0, wait_for_down: bool = True) -> None:
        """Stop reading, deliver what is queued for up to ``drain_timeout``, commit, close.

        Whatever is not delivered stays in the disk queues and goes out after the
        next start; nothing is lost by stopping early. ``wait_for_down=False`` (a
        reload): no waiting for the queues of sinks not connected.
        """
        # The whole stop keeps within drain_timeout: the last part of it (a second at most)
        # is for the batch in flight and the sinks' closes (a stopped peer held them 1.4 s over)
        end = time.monotonic() + drain_timeout
        self._stop_reading.set()
        # With tracking, batches the correlator has seen are appended before the sources
        # go (the sinks still run, making room), for up to half the drain time: given up,
        # no state could be saved with the checkpoints (see _append).
        self._give_up_at = time.monotonic() + (drain_timeout / 2 if self.correlate is not None else 0)
        while self._unappended and time.monotonic() < self._give_up_at:
            await asyncio.sleep(0.02)
        source_tasks = self._tasks[: len(self.sources)]
        for t in source_tasks:
            t.cancel()
        await asyncio.gather(*source_tasks, return_exceptions=True)
        if self._saving is not None:  # its checkpoints are those of its state: let it end
            await asyncio.gather(self._saving, return_exceptions=True)
        self.sync_and_commit(force=True)
        reserve = min(1.0, drain_timeout / 4)
        deadline = end - reserve
        # A reload also stops waiting for a sink connected but acknowledging nothing for
        # DRAIN_STALL (a frozen peer): the new pipeline sends its records from the queue.
        # Waiting for it stopped the reading for the whole drain_timeout at each reload.
        stalled: set[str] = set()
        depth = {r.name: r.queue.depth for r in self.routes}
        moved = dict.fromkeys(depth, time.monotonic())
        while True:
            now = time.monotonic()
            waiting = False
            for r in self.routes:
                d = r.queue.depth
                if d < depth[r.name]:
                    moved[r.name] = now
                depth[r.name] = d
                if not d or r.gone or not (wait_for_down or r.sink.stats.connected):
                    continue
                if not wait_for_down and now - moved[r.name] >= DRAIN_STALL:
                    stalled.add(r.name)
                    continue
                waiting = True
            if not waiting or now >= deadline:
                break
            await asyncio.sleep(0.05)
        if stalled:
            log.info("sink(s) %s acknowledged nothing for %.0f s: their records wait in the "
                     "buffer for the reloaded pipeline", ", ".join(sorted(stalled)), DRAIN_STALL)
        self._stop_sending.set()
        self._sync_wanted.set()
        for route in self.routes:  # an idle sink waits a second for its wake
            route.wake.set()
        if not wait_for_down:  # nor for one down, which may hang in a connect (a frozen peer)
            stalled |= {r.name for r in self.routes if not r.sink.stats.connected}
        rest = self._tasks[len(self.sources):]
        given_up = {f"sink {name}" for name in stalled}  # the names run() gives the tasks
        for task in rest:
            if task.get_name() in given_up:
                task.cancel()  # what it sent unacknowledged stays in the queue: sent again
        if rest:  # none when stopped before run() got going
            _, pending = await asyncio.wait(rest, timeout=max(0.1, end - reserve / 2 - time.monotonic()))
            for t in pending:
                t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        # The tasks are over. A cancelled one keeps its CancelledError, whose traceback
        # holds the task's frames and so this pipeline: a cycle, freed only by a full
        # collection; with a peer frozen, each reload left ~4.5 MB in it (buffered
        # records, the queues' recent writes) until Python's rare full collection
        self._tasks = []
        keep = True
        if self.save_state is None:
            self.sync_and_commit(force=True)
        elif self._state_ahead:
            # A batch the correlator had was given up: neither the state nor the
            # checkpoints move, and the restart reads on from the last pair saved
            # (duplicates, same ids) rather than skip what the state has seen.
            keep = False
        else:
            keep = self._save_together()  # the state before the checkpoints the closes write
        self.state_kept = keep
        for s in self.sources:
            await s.close(save=keep)
        self.left_at_stop = 0
        for r in self.routes:
            # A peer that stopped reading must not hold the stop past its timeout, nor
            # one a reload gave up (a frozen RELP peer never answers its close) the reload
            limit = DRAIN_STALL / 4 if r.name in stalled else end - time.monotonic()
            try:
                await asyncio.wait_for(r.sink.close(), max(0.1, limit))
            except TimeoutError:
                log.warning("sink %s: closing its connection timed out; dropped it", r.name)
            left = r.queue.depth
            self.left_at_stop += left
            if left and wait_for_down and not r.gone:
                # a stop: how much did not go, and where it is (the admin had to ask
                # status before the stop to know)
                where = ("kept in the disk buffer, sent after the next start"
                         if r.queue.persistent else
                         "not kept (memory buffer): read again from the logs at the next start")
                log.warning("sink %s: %d records not delivered within the drain time; %s",
                            r.name, left, where)
            r.queue.close()
        await self.close_workers()

    async def close_workers(self) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)

