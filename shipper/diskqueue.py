"""Durable disk queue: one per sink, append-only segments, released on acknowledgement.

Layout of a queue directory::

    00000000000000000001.seg   segment files, named by the seq of their first frame
    00000000000000052112.seg
    state                      two checksummed 16 KiB slots, written alternately
    quarantine                 bytes cut out of segments by recovery, with where they were

Frame (little endian): ``length u32 | crc32 u32 | seq u64 | payload``. The CRC covers
seq + payload (``zlib.crc32``; the stdlib has no CRC-32C). The two top bits of the
seq field say what the frame is:

* ``00`` data: one record; seqs of data frames go up by one, contiguous per segment;
* ``10`` commit marker: ends every append's single ``write`` (its low bits are the seq
  of the last data frame before it). Data frames after the last marker of the tail
  are a write cut short by a crash (a SIGKILL can stop a large write part-way), so
  recovery removes them with the torn bytes: an append is on disk whole or not at all.
  Its payload is ``[source_key, position]`` when the append had one (else empty), so
  the dedup memory (design notes §3) can never claim a record the segments do not
  hold: after a crash it is rebuilt from the state snapshot plus the surviving markers;
* ``01`` gap: written by repair where corrupt bytes were cut out; its payload says
  which seqs were lost, so they are counted once, not at every read.

fsync policies (``fsync=``), and what each risks:

* ``always``: every ``append`` is fdatasync'ed before it returns, every ``ack`` writes
  and fsyncs the state. Nothing acknowledged as durable is lost on power failure.
  Slowest (one fsync per batch).
* ``interval`` (default, every ``fsync_interval_ms``): a background thread fsyncs the
  data, then writes and fsyncs the state, every interval; appends never wait for the
  disk. ``durable_seq`` says what is covered: the caller commits source checkpoints
  only up to it, so a power failure loses nothing the sources cannot re-read. A
  process crash (SIGKILL, OOM) loses nothing either: the page cache keeps the writes.
  Acks made since the last flush may be forgotten: those records are sent again
  (same event ids). ``sync()`` does the same at once when the caller needs it.
* ``never``: no fsync (except at ``close``). ``durable_seq`` is the last appended seq:
  safe against a process crash, not against power failure or a kernel crash, where
  the tail of the queue and the dedup memory may be lost or torn (recovery still
  repairs what is left and counts it). For tmpfs or for users who prefer speed.

Damage done to the files by hand or by the system (each said in one line on
``shipper.buffer`` and counted in ``stats``; records lost count in ``corrupt_records``):

* a file named like a segment that does not hold what its name says (its first record
  is not the seq of its name, no valid frame in it, or seqs overlapping the segment
  before it) is set aside at the start: renamed ``NAME.seg.corrupt``, never read. Names
  say where seqs are: trusted blindly, a stray ``…02.seg`` had a whole segment deleted
  and the reader spin. Whatever records it held are counted where they are missing;
* records between the acknowledged end and the oldest segment (the oldest
  unacknowledged segment deleted while stopped) are counted lost at the start;
* a segment deleted while running is counted lost when the reader gets to it, as the
  next start would count it;
* a segment that cannot be read (EACCES after a chmod, EIO) is said once and waited
  for: records are delivered in order, so the ones behind it wait too. The reader
  tries again at every ``read`` for UNREADABLE_GIVE_UP_SECONDS (30 s: time for an
  admin to put a mode right; a bad block does not stop the sink for good), then sets
  it aside, counts its unread records lost and goes on. A tail that cannot be read is
  first replaced by a new segment for the appends;
* ``read`` never turns without progress: a cursor stuck three turns steps to the next
  frame it can take (or past the segment), counting what it steps over.

Size cap: ``bytes_on_disk`` counts every file of the queue (segments, state,
quarantine, segments set aside), each rounded up to a 4 KiB block. Sizes are tracked in memory, not
stat'ed, so the check costs no syscall per append; segments are written sequentially
without holes, so the rounded size is what the file system allocates (st_blocks can
be larger for a moment with speculative preallocation; ``shipper buffer stats``
shows both). Unlike Fluent Bit (#2878) nothing on disk escapes the count.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import struct
import threading
import time
import zlib
from bisect import bisect_left
from collections import deque
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

import orjson

log = logging.getLogger("shipper.buffer")

FsyncPolicy = Literal["always", "interval", "never"]
WhenFull = Literal["block", "drop_newest", "drop_oldest"]

HEADER = struct.Struct("<IIQ")
HEADER_SIZE = HEADER.size
SEQ = struct.Struct("<Q")
LEN_CRC = struct.Struct("<II")
KIND_MASK = 3 << 62
SEQ_MASK = (1 << 62) - 1
KIND_DATA = 0
KIND_MARK = 2 << 62
KIND_GAP = 1 << 62
MAX_RECORD = 1 << 26  # a longer length field is corruption, not a record
BLOCK = 4096
CHUNK = 256 << 10  # read segments in chunks of this size (fits a CPU cache)
# The latest appends kept in memory until the reader has passed them, up to this many
# bytes: a sink a few batches behind reads them from there, not back from the disk
# with each frame's CRC checked (reads of 1,000 records from appends of 1,024 left the
# last write behind at nearly every read: two thirds of all reads went to the disk).
RECENT_WRITES_BYTES = 4 << 20
# What a kept record costs in memory besides its frame's bytes: the bytes object's
# header, its list slot and its cumulative size (tracemalloc: 20-byte records held
# 2.8 times their frame bytes without it)
KEPT_RECORD_OVERHEAD = 80

SEGMENT_SUFFIX = ".seg"
# A delivered segment is renamed at once (cheap) and unlinked by the flusher thread:
# unlinking 16 MiB frees 4,096 blocks, 13 ms of the event loop here, every line arriving
# meanwhile waiting. A start removes those a stop or a crash left.
DELETED_SUFFIX = ".seg.deleted"
SEGMENT_RE = re.compile(r"^(\d{20})\.seg$")
# A segment whose content does not agree with its name is renamed to NAME.seg.corrupt
# (NAME.seg.N.corrupt if taken): kept for an admin to look at, never read again
ASIDE_SUFFIX = ".corrupt"
ASIDE_GLOB = "*" + SEGMENT_SUFFIX + "*" + ASIDE_SUFFIX
# A segment that cannot be read (EACCES after a chmod, EIO) is waited for this long, its
# records and all behind it held back (order matters), then set aside and its unread
# records counted lost: an admin fixing a mode has time to, a bad disk block does not
# stop the sink for good
UNREADABLE_GIVE_UP_SECONDS = 30.0
END_PROBE = 4096  # bytes read from the end of a segment to find its last frame
STATE_NAME = "state"
QUARANTINE_NAME = "quarantine"
STATE_MAGIC = b"SHQS"
STATE_VERSION = 1
SLOT_SIZE = 16384
SLOT_HEADER = struct.Struct("<4sHHQII")  # magic, version, reserved, generation, body length, crc
QUARANTINE_MAGIC = b"SHQQ"
QUARANTINE_HEADER = struct.Struct("<4sQQQII")  # magic, segment, offset, unix ns, length, stored

DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_SEGMENT_BYTES = 16 << 20
MIN_SEGMENT_BYTES = 64 << 10
# Left free on the buffer's filesystem by every append, for the checkpoints and the
# tracking state beside it (state_dir): once appends went in pieces, a full disk was
# filled to the last byte, no checkpoint could be saved, and a stop then sent every
# record since the last save twice (3,732 in the fault probe).
DISK_RESERVE = 256 << 10
_ZERO16 = bytes(16)
_NONZERO = re.compile(rb"[^\x00]")


class QueueError(Exception):
    """Base of the queue's errors."""


class QueueWriteError(QueueError):
    """An append could not be written (ENOSPC, EFBIG, EIO). Nothing of it is kept;
    the queue stays usable and the same append can be retried later. ``problem``: what
    failed, without the buffer's path or the size ("EROFS Read-only file system",
    "cannot start a new segment: EACCES Permission denied"), for health and status."""

    def __init__(self, path: object, problem: str, doing: str = "") -> None:
        super().__init__(f"buffer {path}: {doing}{problem}")
        self.problem = problem


class QueueFull(QueueError):
    """``when_full="block"`` and the append does not fit under ``max_bytes``."""


class QueueLocked(QueueError):
    """Another process has this queue open."""


@dataclass(slots=True)
class AppendResult:
    """What ``append`` did. ``first_seq..last_seq`` are the seqs given to the accepted
    records; when none was accepted, ``first_seq = last_seq + 1`` and ``last_seq`` is
    the last seq in the queue (so waiting for ``durable_seq >= last_seq`` is right)."""

    first_seq: int
    last_seq: int
    accepted: int
    skipped: int = 0  # refused as already in the queue (position at or below the highest)
    dropped: int = 0  # refused by when_full="drop_newest"


@dataclass(slots=True)
class QueueStats:
    """Counters since open (the metrics of one queue)."""

    appended_records: int = 0
    appended_bytes: int = 0
    read_records: int = 0
    acked_records: int = 0
    duplicates_skipped: int = 0
    dropped_newest: int = 0
    dropped_oldest: int = 0
    full_refusals: int = 0  # appends refused with QueueFull (when_full="block")
    write_errors: int = 0
    state_write_errors: int = 0
    fsyncs: int = 0
    segments_deleted: int = 0
    delete_errors: int = 0  # delivered segments that could not be deleted (left on disk)
    repairs: int = 0  # recovery actions taken (each logged once)
    corrupt_records: int = 0  # seqs lost to corrupt or missing bytes
    quarantined_bytes: int = 0
    quarantine_overflow_bytes: int = 0  # corrupt bytes not kept: quarantine at its cap
    truncated_bytes: int = 0  # torn tail cut off (never acknowledged as durable)
    state_fallbacks: int = 0  # state file unusable: rebuilt from the segments
    segments_set_aside: int = 0  # not holding what their name says, or unreadable (*.corrupt)
    read_errors: int = 0  # segments that could not be read (EACCES, EIO), each spell once

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# -- frames and segment scanning (pure, shared with shipper.buffer_tool) ----------------


def encode_frame(seq_field: int, payload: bytes) -> bytes:
    """One frame; ``seq_field`` includes the kind bits."""
    sb = SEQ.pack(seq_field)
    return LEN_CRC.pack(len(payload), zlib.crc32(payload, zlib.crc32(sb))) + sb + payload


@dataclass(slots=True)
class BadRegion:
    """Bytes of a segment that hold no valid frame, and the seqs lost with them."""

    start: int
    end: int
    expected: int  # first data seq that should have been here
    resumes_at: int | None  # data seq expected after the region (None: runs to the end)

    @property
    def lost(self) -> int:
        return 0 if self.resumes_at is None else max(0, self.resumes_at - self.expected)


@dataclass(slots=True)
class SegmentWalk:
    """Result of checking every frame of one segment."""

    first_seq: int
    size: int
    records: int = 0
    next_seq: int = 0  # data seq after the last valid frame
    pieces: list[tuple[int, int] | BadRegion] = field(default_factory=list)  # in file order
    marks: list[tuple[int, bytes]] = field(default_factory=list)  # (low seq, payload)
    gaps: list[dict[str, Any]] = field(default_factory=list)  # gap frames met (earlier repairs)
    first_data: tuple[int, int] | None = None  # payload byte range of the first record
    first_after: tuple[int, int] | None = None  # ... of the first record past ``after``
    last_data: tuple[int, int] | None = None
    valid_end: int = 0  # end of the last valid frame
    commit_end: int = 0  # end of the last commit marker or gap frame: whole writes end here

    @property
    def bad(self) -> list[BadRegion]:
        return [p for p in self.pieces if isinstance(p, BadRegion)]


def _check_frame(data: bytes, mv: memoryview, pos: int, size: int,
                 expected: int) -> tuple[int, int, int, int] | None:
    """(end, kind, low, next expected) if a valid frame starts at pos, else None.
    Valid: sane length, CRC right, and seq not going backwards."""
    if size - pos < HEADER_SIZE:
        return None
    ln, crc, sq = HEADER.unpack_from(data, pos)
    end = pos + HEADER_SIZE + ln
    if ln > MAX_RECORD or end > size or zlib.crc32(mv[pos + 8:end]) != crc:
        return None
    kind = sq & KIND_MASK
    low = sq & SEQ_MASK
    if kind == KIND_DATA:
        return (end, kind, low, low + 1) if low >= expected else None
    if kind == KIND_MARK:
        return (end, kind, low, max(expected, low + 1)) if low + 1 >= expected else None
    if kind == KIND_GAP:
        try:
            first = int(orjson.loads(data[pos + HEADER_SIZE:end])["first"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return (end, kind, low, low + 1) if first >= expected and low >= first else None
    return None


def _resync(data: bytes, mv: memoryview, start: int, size: int,
            expected: int) -> tuple[int, tuple[int, int, int, int]] | None:
    """The next valid frame at or after ``start``: its offset and check result.

    Instead of trying every byte, look for the high half of the seq field the next
    frame can carry (data, marker or gap near ``expected``), and jump over NUL runs."""
    patterns = [SEQ.pack(kind | max(expected - 1, 0))[4:] for kind in (KIND_DATA, KIND_MARK, KIND_GAP)]
    patterns += [SEQ.pack(kind | expected)[4:] for kind in (KIND_DATA, KIND_MARK, KIND_GAP)]
    patterns = list(dict.fromkeys(patterns))
    cursor = {p: start for p in patterns}
    while True:
        best = -1
        for pat in patterns:
            c = cursor[pat]
            if c < 0:
                continue
            hit = data.find(pat, c + 12)
            while hit >= 0 and hit - 12 < start:
                hit = data.find(pat, hit + 1)
            cursor[pat] = hit - 12 if hit >= 0 else -1
            if hit >= 0 and (best < 0 or hit - 12 < best):
                best = hit - 12
        if best < 0:
            return None
        found = _check_frame(data, mv, best, size, expected)
        if found is not None:
            return best, found
        nxt = best + 1
        if data[best:best + HEADER_SIZE] == _ZERO16:  # NUL run: no frame starts inside it
            m = _NONZERO.search(data, best)
            if m is None:
                return None
            nxt = max(nxt, m.start() - HEADER_SIZE + 1)
        for pat in patterns:
            if cursor[pat] >= 0 and cursor[pat] < nxt:
                cursor[pat] = nxt
        start = nxt


def walk_segment(data: bytes, first_seq: int, next_first: int | None = None,
                 after: int | None = None) -> SegmentWalk:
    """Check every frame of a segment's bytes. ``next_first`` is the first seq of the
    following segment, if any, to count what a cut-short segment lost; ``after`` asks
    for the first record with a seq above it (the oldest unacknowledged)."""
    size = len(data)
    mv = memoryview(data)
    w = SegmentWalk(first_seq=first_seq, size=size, next_seq=first_seq)
    pos = 0
    expected = first_seq
    span = 0
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    while pos < size:
        # fast path: the next data frame, in order
        if size - pos >= HEADER_SIZE:
            ln, crc, sq = unpack(data, pos)
            end = pos + HEADER_SIZE + ln
            if sq == expected and end <= size and ln <= MAX_RECORD and crc32(mv[pos + 8:end]) == crc:
                if w.first_data is None:
                    w.first_data = (pos + HEADER_SIZE, end)
                if after is not None and w.first_after is None and sq > after:
                    w.first_after = (pos + HEADER_SIZE, end)
                w.last_data = (pos + HEADER_SIZE, end)
                w.records += 1
                expected += 1
                pos = end
                continue
        found = _check_frame(data, mv, pos, size, expected)
        bad_start = pos
        if found is None:
            nxt = _resync(data, mv, pos + 1, size, expected)
            if nxt is None:
                if span < pos:
                    w.pieces.append((span, pos))
                resumes = next_first if next_first is not None and next_first >= expected else None
                w.pieces.append(BadRegion(pos, size, expected, resumes))
                w.valid_end = pos
                w.next_seq = expected
                return w
            pos, found = nxt
        end, kind, low, new_expected = found
        jump_to = low if kind == KIND_DATA else (low + 1 if kind == KIND_MARK else None)
        if kind == KIND_GAP:
            jump_to = int(orjson.loads(data[pos + HEADER_SIZE:end])["first"])
        if pos > bad_start or (jump_to is not None and jump_to > expected):
            if span < bad_start:
                w.pieces.append((span, bad_start))
            w.pieces.append(BadRegion(bad_start, pos, expected, jump_to if jump_to else expected))
            span = pos
        if kind == KIND_DATA:
            if w.first_data is None:
                w.first_data = (pos + HEADER_SIZE, end)
            if after is not None and w.first_after is None and low > after:
                w.first_after = (pos + HEADER_SIZE, end)
            w.last_data = (pos + HEADER_SIZE, end)
            w.records += 1
        elif kind == KIND_MARK:
            if end > pos + HEADER_SIZE:
                w.marks.append((low, data[pos + HEADER_SIZE:end]))
            w.commit_end = end
        else:
            w.gaps.append(orjson.loads(data[pos + HEADER_SIZE:end]))
            w.commit_end = end
        expected = new_expected
        pos = end
    if span < pos:
        w.pieces.append((span, pos))
    w.valid_end = pos
    w.next_seq = expected
    if next_first is not None and next_first > expected:  # cut exactly at a frame boundary
        w.pieces.append(BadRegion(pos, pos, expected, next_first))
    return w


def _durable_end(data: bytes, start: int, durable: int) -> int:
    """Where to cut a write whose commit marker is missing, from ``start`` (the end of
    the last whole write): after its whole data frames that the previous run reported
    durable (their source checkpoints may have moved past them: cut, they would be lost
    for good: a segment cut short after a clean stop lost 52 records that way), before
    the first one it did not (torn by a crash: the sources read those lines again)."""
    pos = start
    while len(data) - pos >= HEADER_SIZE:
        ln, _, sq = HEADER.unpack_from(data, pos)
        if sq & KIND_MASK != KIND_DATA or sq & SEQ_MASK > durable:
            break
        pos += HEADER_SIZE + ln
    return min(pos, len(data))


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(path: Path) -> list[tuple[int, Path]]:
    """(first seq, path) of every segment file, in order."""
    found = []
    for entry in os.scandir(path):
        m = SEGMENT_RE.match(entry.name)
        # A number beyond the sequence space is no segment of ours (a stray file): it
        # stays where it is, untouched, rather than crash every start on it.
        if m and int(m.group(1)) <= SEQ_MASK and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    found.sort()
    return found


def list_delivered(path: Path) -> list[int]:
    """First seqs of the delivered segments a stop or a crash left (``*.seg.deleted``),
    in order: the records up to the next segment were acknowledged."""
    firsts = []
    for entry in path.glob("*" + DELETED_SUFFIX):
        head = entry.name[:-len(DELETED_SUFFIX)]
        if len(head) == 20 and head.isdigit():
            firsts.append(int(head))
    return sorted(firsts)


def missing_before(ack: int, oldest_first: int, delivered: list[int]) -> tuple[int, int] | None:
    """Seqs between the acknowledged end and the oldest segment that nothing explains
    (the oldest unacknowledged segment deleted by hand), or None. Segments delivered
    and renamed, not unlinked yet (``delivered``), explain theirs: the state saying so
    may not have been written before a crash."""
    last = oldest_first - 1
    explained = [d for d in delivered if d < oldest_first]
    if explained:
        last = min(last, explained[0] - 1)
    return (ack + 1, last) if last > ack else None


@dataclass(slots=True)
class SegmentCheck:
    """What ``sort_out_segments`` found in one segment file."""

    first: int  # from its name
    path: Path
    size: int = 0
    last: int | None = None  # seq of its last frame (None: not known)
    frameless: bool = False  # no valid frame in it (or empty)
    problem: str = ""  # why it does not hold what its name says ("": it does)
    error: str = ""  # it cannot be read now ("EACCES Permission denied"): not judged


def _frame_start(data: bytes) -> int | None:
    """The first seq a valid frame at the start of ``data`` stands for, or None."""
    if len(data) < HEADER_SIZE:
        return None
    ln, crc, sq = HEADER.unpack_from(data)
    end = HEADER_SIZE + ln
    if ln > MAX_RECORD or end > len(data) or zlib.crc32(memoryview(data)[8:end]) != crc:
        return None
    kind, low = sq & KIND_MASK, sq & SEQ_MASK
    if kind == KIND_DATA:
        return low
    if kind == KIND_MARK:
        return low + 1
    if kind == KIND_GAP:
        try:
            return int(orjson.loads(data[HEADER_SIZE:end])["first"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
    return None


def _end_seq(data: bytes) -> int | None:
    """The seq (low bits) of a valid frame ending exactly where ``data`` ends (the last
    marker of a segment, or gap frame), or None."""
    n = len(data)
    unpack = LEN_CRC.unpack_from
    for ln in range(0, n - HEADER_SIZE + 1):
        pos = n - HEADER_SIZE - ln
        got, crc = unpack(data, pos)
        if got == ln and zlib.crc32(memoryview(data)[pos + 8:]) == crc:
            return SEQ.unpack_from(data, pos + 8)[0] & SEQ_MASK
    return None


def sort_out_segments(segments: list[tuple[int, Path]], appended: int | None) -> list[SegmentCheck]:
    """Check that each segment holds what its name says, cheaply (its first frame and
    its last; all of it only when one of those is damaged). Names alone said where
    seqs are: a stray ``00000000000000000002.seg`` next to segment 1 had the reader
    look for seq 201 in it and spin, and the acknowledgement of seq 1 delete segment 1
    with 1,652 records unread. ``problem`` is set for a segment whose first record is
    not the seq of its name, that holds no valid frame (the tail may: a first write
    torn by a crash, when its name follows on from the segment before or from
    ``appended``, the last seq the state knows), or whose seqs overlap those of the
    segment before it. Shared by recovery and ``shipper buffer verify``."""
    checks: list[SegmentCheck] = []
    for first, path in segments:
        c = SegmentCheck(first, path)
        checks.append(c)
        try:
            with open(path, "rb") as f:
                c.size = os.fstat(f.fileno()).st_size
                head = f.read(HEADER_SIZE)
                ln = HEADER.unpack(head)[0] if len(head) == HEADER_SIZE else MAX_RECORD + 1
                start = _frame_start(head + f.read(ln)) if ln <= MAX_RECORD else None
                if start is not None and start != first:
                    c.problem = f"its first record is seq {start}"
                    continue
                f.seek(max(0, c.size - END_PROBE))
                c.last = _end_seq(f.read())
                if start is None or c.last is None:  # damaged somewhere: look at all of it
                    f.seek(0)
                    w = walk_segment(f.read(), first)
                    c.frameless = not any(isinstance(p, tuple) for p in w.pieces)
                    if c.frameless:
                        c.last = None
                    elif c.last is None:
                        c.last = w.next_seq - 1
        except OSError as exc:
            c.error = _oserror(exc)
    ours = [c for c in checks if not c.problem]
    prev: SegmentCheck | None = None
    for i, c in enumerate(ours):
        if c.frameless:
            if i < len(ours) - 1:
                c.problem = "no valid record in it" if c.size else "empty"
                continue
            follows = prev.last + 1 if prev is not None and prev.last is not None else None
            if not (c.first == follows or (appended is not None and c.first <= appended + 1)
                    or (follows is None and appended is None)):
                c.problem = ("no valid record in it" if c.size else "empty") + \
                    ", and its name is past the last record"
                continue
        if prev is not None and prev.last is not None and c.first <= prev.last:
            c.problem = f"its seqs from {c.first} overlap those of {prev.path.name} (up to {prev.last})"
            continue
        prev = c
    return checks


def aside_name(path: Path) -> Path:
    """Where a segment is set aside: NAME.seg.corrupt, or NAME.seg.N.corrupt if taken."""
    target = path.with_name(path.name + ASIDE_SUFFIX)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{n}{ASIDE_SUFFIX}")
        n += 1
    return target


def decode_state(raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """The newest valid slot of a state file, and a note per unusable slot."""
    best: tuple[int, dict[str, Any]] | None = None
    notes = []
    for i in range(2):
        slot = raw[i * SLOT_SIZE:(i + 1) * SLOT_SIZE]
        name = "AB"[i]
        if len(slot) < SLOT_HEADER.size:
            notes.append(f"slot {name}: missing")
            continue
        magic, version, _, gen, blen, crc = SLOT_HEADER.unpack_from(slot)
        if magic != STATE_MAGIC:
            notes.append(f"slot {name}: " + ("all NUL" if not slot.strip(b"\0") else "bad magic"))
            continue
        body = slot[SLOT_HEADER.size:SLOT_HEADER.size + blen]
        if version != STATE_VERSION or len(body) != blen or \
                zlib.crc32(body, zlib.crc32(struct.pack("<QI", gen, blen))) != crc:
            notes.append(f"slot {name}: bad checksum (torn write?)")
            continue
        try:
            state = orjson.loads(body)
        except orjson.JSONDecodeError:
            notes.append(f"slot {name}: undecodable body")
            continue
        state["generation"] = gen
        if best is None or gen > best[0]:
            best = (gen, state)
    return (best[1] if best else None), notes


def encode_state_slot(generation: int, body: bytes) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<QI", generation, len(body))))
    return SLOT_HEADER.pack(STATE_MAGIC, STATE_VERSION, 0, generation, len(body), crc) + body


def read_quarantine(path: Path) -> list[dict[str, Any]]:
    """Entries of a quarantine file (without their bytes)."""
    entries: list[dict[str, Any]] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return entries
    pos = 0
    while pos + QUARANTINE_HEADER.size <= len(data):
        magic, seg, off, t_ns, length, stored = QUARANTINE_HEADER.unpack_from(data, pos)
        if magic != QUARANTINE_MAGIC:
            entries.append({"error": f"unreadable entry at byte {pos}"})
            break
        entries.append({"segment": seg, "offset": off, "time_unix_ns": t_ns, "length": length,
                        "stored": stored})
        pos += QUARANTINE_HEADER.size + stored
    return entries


def _tuples(value: Any) -> Any:
    """JSON arrays back to tuples, so restored positions compare like the caller's."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _blocks(n: int) -> int:
    return (n + BLOCK - 1) & ~(BLOCK - 1)


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "EIO")


def _oserror(exc: OSError) -> str:
    """"ENOSPC No space left on device": the errno's name and its text."""
    return f"{_errname(exc)} {exc.strerror or exc}"


class _Kept:
    """An append kept in memory (see RECENT_WRITES_BYTES): where its write lies in its
    segment, its first seq, and the payloads it framed, served as they are (no frame
    parsed or payload copied), with their cumulative sizes to find a seq's frame."""

    __slots__ = ("seg", "start", "end", "first", "payloads", "cum", "cost")

    def __init__(self, seg: _Segment, start: int, end: int, first: int, payloads: list[bytes]) -> None:
        self.seg = seg
        self.start = start
        self.end = end  # after its commit marker
        self.first = first
        self.payloads = payloads
        self.cum = list(accumulate(map(len, payloads), initial=0))  # payload bytes before each
        self.cost = end - start + KEPT_RECORD_OVERHEAD * len(payloads)  # memory, about

    def offset(self, i: int) -> int:
        """Where the frame of the i-th record (i = len(payloads): the marker) starts."""
        return self.start + self.cum[i] + i * HEADER_SIZE


class _Done(Exception):
    """The reader is at the end of the data."""


class _SegmentError(Exception):
    """A segment could not be read: its file deleted under us, EACCES, EIO."""

    def __init__(self, seg: _Segment, exc: OSError) -> None:
        super().__init__(str(exc))
        self.seg = seg
        self.exc = exc


class _Segment:
    __slots__ = ("first", "path", "size")

    def __init__(self, first: int, path: Path, size: int) -> None:
        self.first = first
        self.path = path
        self.size = size


class DiskQueue:
    """A durable FIFO of opaque byte records with acknowledged release. Thread-safe
    (one lock), synchronous and batch-wise; see the module doc for the format."""

    persistent = True  # survives a restart

    def __init__(self, path: Path, *, max_bytes: int, segment_bytes: int, fsync: FsyncPolicy,
                 fsync_interval_ms: float, when_full: WhenFull) -> None:
        """Use ``DiskQueue.open``."""
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {fsync!r}")
        if when_full not in ("block", "drop_newest", "drop_oldest"):
            raise ValueError(f"when_full must be block, drop_newest or drop_oldest, not {when_full!r}")
        self.path = path
        self.max_bytes = max_bytes
        # several segments fit under the cap, so drop_oldest frees space in steps
        self.segment_bytes = max(MIN_SEGMENT_BYTES, min(segment_bytes, max_bytes // 4))
        self.fsync = fsync
        self.fsync_interval = fsync_interval_ms / 1000.0
        self.when_full = when_full
        self.stats = QueueStats()
        self._lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._stop_flusher = threading.Event()
        # Set by what the flusher must make durable (appends, acks, skips, a failed state
        # write): with nothing to do it sleeps on it, where its clock woke it 10 times a
        # second on an idle daemon.
        self._flush_wanted = threading.Event()
        self._flusher_asleep = False  # then appends look for our files deleted (see append)
        self._flusher: threading.Thread | None = None
        self._unlink_later: list[Path] = []  # delivered segments renamed, for the flusher
        self._segs: list[_Segment] = []
        self._closed_bytes = 0  # rounded bytes of all segments but the tail
        self._aside_bytes = 0  # rounded bytes of the segments set aside (*.corrupt)
        self._unreadable: tuple[_Segment, float] | None = None  # and since when (monotonic)
        self._wfd = -1
        self._state_fd = -1
        self._state_gen = 0
        self._quarantine_size = 0
        self._quarantine_cap = max(max_bytes // 16, 64 << 10)
        self._last_seq = 0
        self._ack_seq = 0
        self._durable_seq = 0
        self._synced_ack = 0
        self._needs_truncate = False
        self._last_sync = time.monotonic()
        self._sync_failed = False  # the last sync() failed: said once, until one works
        # errno of the appends failing now (0: the last one worked): said once a spell; a
        # read-only state_dir (ext4 errors=remount-ro) said it at every retry, once a second
        self._append_failing = 0
        self._state_anew_failed = False  # the state file deleted and not made again: said
        self._state_dirty = False
        self._positions: dict[str, Any] = {}
        self._map_seq = 0
        # reader
        self._rseq = 1
        self._rseg: _Segment | None = None
        self._roff = 0
        self._rpos_ok = False
        self._rfd = -1
        self._rfd_seg: _Segment | None = None
        self._rbuf = b""
        self._rbase = 0
        self._rbuf_seg: _Segment | None = None
        self._max_seen = 0  # highest seq the reader got to (missing seqs counted once)
        self._skipped: dict[int, int] = {}  # first -> last of seqs the reader found absent
        self._disk_last = 0
        # the latest appends, oldest first, served to a reader that keeps up (see
        # RECENT_WRITES_BYTES), and the memory they hold (_Kept.cost)
        self._recent: deque[_Kept] = deque()
        self._recent_bytes = 0
        self._read_marks: deque[tuple[int, _Segment, int]] = deque(maxlen=256)
        self._ack_pos: tuple[_Segment, int] | None = None
        self._oldest_time: tuple[int, int | None] | None = None
        self._closed = False
        self._drops_unsaid = 0
        self._drops_said_at = -1e9

    # -- open and recovery ------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
             segment_bytes: int = DEFAULT_SEGMENT_BYTES, fsync: FsyncPolicy = "interval",
             fsync_interval_ms: float = 100.0, when_full: WhenFull = "block",
             full_check: bool = False) -> DiskQueue:
        """Open (creating if needed) the queue in directory ``path`` and recover it.

        Recovery never raises on bad data: a torn tail is cut off, corrupt frames are
        moved to the quarantine file and counted, an unusable state file is rebuilt from
        the segments; each action is logged once on ``shipper.buffer`` and counted in
        ``stats``. ``full_check`` also checks (and repairs) every older segment now
        instead of when the reader reaches it (``shipper buffer repair``).
        Raises ``QueueLocked`` when another process holds the queue, OSError when the
        directory cannot be used at all."""
        q = cls(Path(path), max_bytes=max_bytes, segment_bytes=segment_bytes, fsync=fsync,
                fsync_interval_ms=fsync_interval_ms, when_full=when_full)
        try:
            q._recover(full_check)
        except BaseException:
            q._close_fds()
            raise
        if fsync == "interval":
            q._flusher = threading.Thread(target=q._flush_loop, name=f"fsync {q.path.name}",
                                          daemon=True)
            q._flusher.start()
        return q

    def _recover(self, full_check: bool) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        state_path = self.path / STATE_NAME
        set_aside: list[str] = []
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IFMT(os.lstat(state_path).st_mode) not in (stat.S_IFREG, stat.S_IFLNK):
                # a directory (a mkdir -p or a restore gone wrong) failed every start with
                # "Is a directory": a crash loop, where the segments hold all it knows
                target = aside_name(state_path)
                try:
                    state_path.rename(target)
                    set_aside.append(f"not a file: set aside as {target.name}")
                except OSError:
                    pass  # (a mount point: the open below says why it cannot be used)
        existed = state_path.exists()
        self._state_fd = os.open(state_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._state_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QueueLocked(f"{self.path} is in use by another process") from None
        raw = os.pread(self._state_fd, 2 * SLOT_SIZE, 0)
        state, notes = decode_state(raw) if existed else (None, [])
        if len(raw) < 2 * SLOT_SIZE:  # make both slots real blocks: later writes need no space
            os.pwrite(self._state_fd, bytes(2 * SLOT_SIZE - len(raw)), len(raw))
            os.fsync(self._state_fd)
        segments = list_segments(self.path)
        for leftover in self.path.glob("*.seg.tmp"):
            log.warning("buffer %s: removing %s left by an interrupted repair", self.path, leftover.name)
            try:
                leftover.unlink()
            except OSError as exc:  # a directory: it failed every start (a repair makes its own)
                log.error("buffer %s: cannot remove %s: %s; left there", self.path, leftover.name,
                          _oserror(exc))
        delivered_firsts = list_delivered(self.path)
        for delivered in self.path.glob("*" + DELETED_SUFFIX):
            with contextlib.suppress(OSError):  # else a later start tries again
                delivered.unlink()
        if state is None and (existed or segments or set_aside):
            why = "; ".join(set_aside + notes) or "missing"
            log.warning("buffer %s: state file unusable (%s): rebuilding it from %d segment(s)",
                        self.path, why, len(segments))
            self.stats.state_fallbacks += 1
            self.stats.repairs += 1
        if state is not None:
            self._state_gen = int(state["generation"])
        try:
            self._quarantine_size = os.stat(self.path / QUARANTINE_NAME).st_size
        except FileNotFoundError:
            self._quarantine_size = 0
        known = max(int(state.get("appended", 0)), int(state.get("durable", 0))) if state else None
        kept = []
        for c in sort_out_segments(segments, known):
            if c.problem:
                self._set_aside(c.path, f"it does not hold what its name says: {c.problem}")
            else:
                kept.append((c.first, c.path))
        segments = kept
        self._aside_bytes = sum(_blocks(p.stat().st_size) for p in self.path.glob(ASIDE_GLOB))

        self._segs = [_Segment(first, p, p.stat().st_size) for first, p in segments]
        prev_policy = state.get("fsync") if state else None
        state_durable = int(state.get("durable", 0)) if state else 0
        tail_walk: SegmentWalk | None = None
        unmarked = False  # the tail ends in whole records kept without their commit marker
        if self._segs:
            tail = self._segs[-1]
            data = tail.path.read_bytes()
            tail_walk = walk_segment(data, tail.first)
            # a corrupt spot followed by frames never confirmed durable is a torn write
            # (pages written out of order): cut from there, like a torn tail
            horizon = None if prev_policy == "always" or state is None else state_durable
            cut = None
            durable_cut = False
            for piece in tail_walk.pieces:
                if isinstance(piece, BadRegion) and (
                        piece.resumes_at is None
                        or (horizon is not None and piece.resumes_at > horizon + 1)):
                    cut = piece.start
                    # records the previous run reported durable are in it: damage
                    durable_cut = state is not None and piece.expected <= state_durable
                    break
            if cut is not None:
                self._truncate_tail(tail, data, cut, durable_cut)
                data = data[:cut]
                tail_walk = walk_segment(data, tail.first)
            if tail_walk.bad:
                self._repair_segment(tail, data, tail_walk, None)
                data = tail.path.read_bytes()
                tail_walk = walk_segment(data, tail.first)
            if tail_walk.commit_end < len(data):  # whole frames of a write cut short
                keep = _durable_end(data, tail_walk.commit_end, state_durable)
                if keep < len(data):
                    self._truncate_tail(tail, data, keep)
                    tail_walk = walk_segment(data[:keep], tail.first)
                if tail_walk.commit_end < keep:
                    # kept: a marker is written for them below, so that they are a whole
                    # write for every later recovery (whatever its state says) and for
                    # ``shipper buffer verify``; the dedup position the marker held is gone
                    # (the state's, if trusted, still has it; else: duplicates, not loss)
                    unmarked = True
                    first_kept = HEADER.unpack_from(data, tail_walk.commit_end)[2] & SEQ_MASK
                    log.warning("buffer %s: segment %s: the commit marker after records %d..%d "
                                "is missing; keeping them (reported durable by the previous "
                                "run)", self.path, tail.path.name, first_kept,
                                tail_walk.next_seq - 1)
                    self.stats.repairs += 1
        if full_check:
            for i, seg in enumerate(self._segs[:-1]):
                try:
                    data = seg.path.read_bytes()
                except OSError as exc:
                    log.error("buffer %s: segment %s cannot be read: %s; not checked",
                              self.path, seg.path.name, _oserror(exc))
                    continue
                w = walk_segment(data, seg.first, self._segs[i + 1].first)
                if w.bad:
                    self._repair_segment(seg, data, w, self._segs[i + 1].first)

        disk_next = tail_walk.next_seq if tail_walk is not None else 1
        next_seq = disk_next
        state_ack = int(state.get("ack", 0)) if state else 0
        if state is not None and state_durable >= disk_next and state_durable > state_ack:
            lost = state_durable - max(disk_next - 1, state_ack)
            log.error("buffer %s: %d record(s) up to seq %d were reported durable but are "
                      "not on disk (fsync=%s in the previous run)", self.path, lost,
                      state_durable, prev_policy)
            self.stats.corrupt_records += lost
            self.stats.repairs += 1
        # never reuse a seq the previous run acknowledged or reported durable
        next_seq = max(next_seq, state_durable + 1, state_ack + 1)
        if not self._segs:
            self._new_segment(next_seq)
        else:
            self._wfd = os.open(self._segs[-1].path, os.O_WRONLY)
            if next_seq > disk_next:  # say where those seqs went, once, in the data
                gap = {"first": disk_next, "last": next_seq - 1, "reason": "lost in a crash"}
                try:
                    self._write(self._segs[-1], encode_frame(KIND_GAP | (next_seq - 1), orjson.dumps(gap)))
                except QueueWriteError:
                    pass  # disk full: the reader counts the missing seqs instead
            elif unmarked:  # commit the records kept without their marker
                try:
                    self._write(self._segs[-1], encode_frame(KIND_MARK | (disk_next - 1), b""))
                except QueueWriteError:
                    pass  # disk full: the next start keeps them again (the state still says durable)
            if self.fsync != "never":
                os.fdatasync(self._wfd)
        self._last_seq = next_seq - 1
        self._disk_last = disk_next - 1
        floor = self._segs[0].first - 1
        gone = missing_before(state_ack, self._segs[0].first, delivered_firsts) \
            if state is not None and segments else None
        if gone is not None:
            # the oldest unacknowledged segment was deleted while stopped: its records
            # were taken as acknowledged, silently
            log.error("buffer %s: records %d..%d are missing (before segment %s, the oldest: "
                      "deleted?)", self.path, gone[0], gone[1], self._segs[0].path.name)
            self.stats.corrupt_records += gone[1] - gone[0] + 1
            self.stats.repairs += 1
        self._ack_seq = min(max(state_ack, floor), self._last_seq)
        self._synced_ack = self._ack_seq
        self._closed_bytes = sum(_blocks(s.size) for s in self._segs[:-1])
        self._durable_seq = self._last_seq
        self._restore_positions(state, tail_walk)
        self._rseq = self._ack_seq + 1
        self._max_seen = self._ack_seq
        self._delete_acked()
        self._write_state(sync=True, clean=False)

    def _restore_positions(self, state: dict[str, Any] | None, tail_walk: SegmentWalk | None) -> None:
        """Dedup memory = state snapshot + position markers written after it."""
        map_seq = int(state.get("map_seq", 0)) if state else 0
        trusted = state is not None and map_seq <= self._disk_last
        if state is not None and not trusted:
            log.warning("buffer %s: dedup positions in the state are ahead of the data "
                        "(records lost in a crash): rebuilding them from the segments", self.path)
            self.stats.repairs += 1
        positions: dict[str, Any] = {}
        if trusted and state is not None:
            positions = {k: _tuples(v) for k, v in (state.get("positions") or {}).items()}
        else:
            map_seq = 0
        walks: list[tuple[int, bytes]] = []
        for i, seg in enumerate(self._segs):
            seg_last = self._segs[i + 1].first - 1 if i + 1 < len(self._segs) else self._last_seq
            if seg_last <= map_seq:
                continue
            if tail_walk is not None and seg.first == tail_walk.first_seq:
                walks.extend(tail_walk.marks)
            elif seg.size:
                try:
                    w = walk_segment(seg.path.read_bytes(), seg.first)
                except OSError:  # unreadable: the reader says it; duplicates at worst
                    continue
                walks.extend(w.marks)
        for low, payload in walks:
            if low <= map_seq:
                continue
            try:
                key, pos = orjson.loads(payload)
            except (orjson.JSONDecodeError, ValueError, TypeError):
                continue
            positions.pop(key, None)
            positions[key] = _tuples(pos)
        self._positions = positions
        self._map_seq = self._last_seq

    def _truncate_tail(self, seg: _Segment, data: bytes, cut: int, durable: bool = False) -> None:
        """Cut ``seg`` at ``cut``; ``durable``: records the previous run reported durable
        are cut too (counted lost by the caller: said here as damage, not as a torn
        write, which it said of 8 KiB zeroed at the end of a cleanly closed buffer)."""
        torn = data[cut:]
        if durable:
            log.warning("buffer %s: segment %s: cutting %d byte(s) of damaged tail at offset "
                        "%d (unreadable, holding records the previous run reported durable)",
                        self.path, seg.path.name, len(torn), cut)
        else:
            log.warning("buffer %s: segment %s: cutting %d byte(s) of torn tail at offset %d "
                        "(a write interrupted by a crash; never reported durable)",
                        self.path, seg.path.name, len(torn), cut)
        self._quarantine(seg.first, cut, torn)
        fd = os.open(seg.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, cut)
            os.fsync(fd)
        finally:
            os.close(fd)
        seg.size = cut
        self.stats.truncated_bytes += len(torn)
        self.stats.repairs += 1

    def _repair_segment(self, seg: _Segment, data: bytes, walk: SegmentWalk,
                        next_first: int | None) -> bool:
        """Quarantine the bad regions of a segment and rewrite it without them, with a
        gap frame where seqs were lost. Returns False when the rewrite failed (the
        reader then skips the regions in memory)."""
        lost = 0
        parts: list[bytes] = []
        for piece in walk.pieces:
            if isinstance(piece, BadRegion):
                if piece.end > piece.start:
                    self._quarantine(seg.first, piece.start, data[piece.start:piece.end])
                if piece.lost:
                    # seqs the sink acknowledged already were delivered: not lost (at
                    # open the acknowledged end is not known yet: all count)
                    lost += max(0, piece.resumes_at - max(piece.expected, self._ack_seq + 1))  # type: ignore[operator]
                    gap = {"first": piece.expected, "last": piece.resumes_at - 1,  # type: ignore[operator]
                           "bytes": piece.end - piece.start, "offset": piece.start}
                    parts.append(encode_frame(KIND_GAP | (piece.resumes_at - 1), orjson.dumps(gap)))  # type: ignore[operator]
            else:
                parts.append(data[piece[0]:piece[1]])
        bad = walk.bad
        nbytes = sum(b.end - b.start for b in bad)
        log.warning("buffer %s: segment %s: %d corrupt region(s), %d byte(s) quarantined, "
                    "%d record(s) lost; rewriting the segment without them",
                    self.path, seg.path.name, len(bad), nbytes, lost)
        self.stats.corrupt_records += lost
        self.stats.repairs += 1
        new = b"".join(parts)
        tmp = seg.path.with_name(seg.path.name + ".tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # a leftover: made anew, never written through (a link)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _write_all(fd, new, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, seg.path)
            self._fsync_dir()
        except OSError as exc:
            log.error("buffer %s: could not rewrite segment %s (%s); skipping its corrupt "
                      "regions in memory", self.path, seg.path.name, exc)
            try:
                tmp.unlink()
            except OSError:
                pass
            return False
        old = seg.size
        seg.size = len(new)
        if seg is not (self._segs[-1] if self._segs else None):
            self._closed_bytes += _blocks(seg.size) - _blocks(old)
        if self._rbuf_seg is seg:
            self._rbuf_seg = None
        self._forget_writes(seg)
        if self._rfd_seg is seg:
            os.close(self._rfd)
            self._rfd, self._rfd_seg = -1, None
        return True

    def _set_aside(self, path: Path, why: str, say: bool = True) -> str | None:
        """Rename a segment file to NAME.seg.corrupt: kept for an admin, never read
        again; counted, and said in one line unless ``say`` is False (the caller says
        it). Returns the new name, None if the rename failed (said)."""
        self.stats.segments_set_aside += 1
        self.stats.repairs += 1
        try:
            target = aside_name(path)
            path.rename(target)
        except OSError as exc:
            log.error("buffer %s: segment %s: %s; could not set it aside (%s): not read",
                      self.path, path.name, why, _oserror(exc))
            return None
        with contextlib.suppress(OSError):
            self._aside_bytes += _blocks(target.stat().st_size)
        if say:
            log.warning("buffer %s: segment %s: %s; set aside as %s, not read", self.path,
                        path.name, why, target.name)
        return target.name

    def _quarantine(self, seg_first: int, offset: int, chunk: bytes) -> None:
        """Keep corrupt bytes aside with where they were, within the quarantine cap."""
        stored = chunk if self._quarantine_size + len(chunk) <= self._quarantine_cap else b""
        if not stored and chunk:
            self.stats.quarantine_overflow_bytes += len(chunk)
            log.warning("buffer %s: quarantine full (%d bytes): %d corrupt byte(s) from "
                        "segment %d offset %d not kept", self.path, self._quarantine_cap,
                        len(chunk), seg_first, offset)
        entry = QUARANTINE_HEADER.pack(QUARANTINE_MAGIC, seg_first, offset, time.time_ns(),
                                       len(chunk), len(stored)) + stored
        qpath = self.path / QUARANTINE_NAME
        try:
            fd = os.open(qpath, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            try:
                _write_all(fd, entry, None)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("buffer %s: could not write the quarantine file (%s): %d corrupt "
                      "byte(s) not kept", self.path, exc, len(chunk))
            self.stats.quarantine_overflow_bytes += len(stored)
            return
        self._quarantine_size += len(entry)
        self.stats.quarantined_bytes += len(stored)

    # -- writing ------------------------------------------------------------------------

    def _new_segment(self, first: int) -> None:
        """Start segment ``first`` as the tail (the old tail fdatasync'ed first)."""
        path = self.path / segment_name(first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # fails: nothing changed
        if self._wfd >= 0:
            if self.fsync != "never":
                os.fdatasync(self._wfd)
                self.stats.fsyncs += 1
                self._durable_seq = self._last_seq
            os.close(self._wfd)
        if self._segs:
            self._closed_bytes += _blocks(self._segs[-1].size)
        self._wfd = fd
        self._segs.append(_Segment(first, path, 0))
        if self.fsync != "never":
            self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _disk_after(self, framed: int) -> int:
        """bytes_on_disk after appending ``framed`` bytes (rolling if it would)."""
        tail = self._segs[-1].size
        fixed = 2 * SLOT_SIZE + _blocks(self._quarantine_size) + self._aside_bytes
        if tail and tail + framed > self.segment_bytes:
            return self._closed_bytes + _blocks(tail) + _blocks(framed) + fixed
        return self._closed_bytes + _blocks(tail + framed) + fixed

    def _fits(self, framed: int) -> bool:
        if self._disk_after(framed) <= self.max_bytes:
            return True
        # everything acknowledged: rolling frees the whole tail
        return self._ack_seq >= self._last_seq and \
            2 * SLOT_SIZE + _blocks(self._quarantine_size) + self._aside_bytes + _blocks(framed) \
            <= self.max_bytes

    def has_room(self, nbytes: int, nrecords: int | None = None) -> bool:
        """Whether an append of ``nrecords`` payloads totalling ``nbytes`` would be taken
        now (pass ``nrecords``; without it a quarter of ``nbytes`` is assumed for frame
        headers). False only under ``when_full="block"``; an empty queue always has room
        (a batch bigger than the cap then goes in alone rather than blocking forever)."""
        if self.when_full != "block":
            return True
        overhead = HEADER_SIZE * nrecords if nrecords is not None else nbytes // 4
        with self._lock:
            return self._last_seq <= self._ack_seq or self._fits(nbytes + overhead + 512)

    def append(self, payloads: list[bytes], source_key: str | None = None, position: Any = None,
               positions: list[Any] | None = None) -> AppendResult:
        """Append records; returns their seqs. One write (and under ``fsync="always"``
        one fdatasync) per call.

        Dedup (design notes §3): with ``source_key``, the queue remembers the highest
        position appended for that key, across restarts. ``positions`` (one per payload,
        comparable, increasing, JSON-able; lists come back as tuples) refuses exactly the
        records at or below it; ``position`` (of the batch's last record) refuses the
        whole batch when it is at or below it.

        Raises ``QueueFull`` (``when_full="block"`` and no room) or ``QueueWriteError``
        (disk full, I/O error): nothing of the batch is then in the queue."""
        with self._lock:
            if self._closed:
                raise QueueError("queue is closed")
            if self._flusher_asleep and self._gone_locked():
                # the flusher looks every interval only while it has work: after it
                # slept, a batch would go to deleted files (lost if read and not sent)
                try:
                    self._rehome_locked()
                except OSError as exc:
                    self.stats.write_errors += 1
                    raise QueueWriteError(self.path, f"cannot start a new buffer: {_oserror(exc)}") from exc
            n = len(payloads)
            skipped = 0
            mark_pos = position
            if source_key is not None and (positions is not None or position is not None):
                high = self._positions.get(source_key)
                if positions is not None:
                    if len(positions) != n:
                        raise ValueError("positions must have one entry per payload")
                    if high is not None:
                        keep = [i for i, p in enumerate(positions) if not _at_or_below(p, high, self.path)]
                        skipped = n - len(keep)
                        if skipped:
                            payloads = [payloads[i] for i in keep]
                            positions = [positions[i] for i in keep]
                    mark_pos = positions[-1] if positions else None
                elif high is not None and _at_or_below(position, high, self.path):
                    skipped, payloads = n, []
                if skipped:
                    self.stats.duplicates_skipped += skipped
            else:
                source_key = None
            if not payloads:
                return AppendResult(self._last_seq + 1, self._last_seq, 0, skipped, 0)

            mark = b""
            if source_key is not None:
                mark = orjson.dumps([source_key, mark_pos])
            sizes = [len(p) for p in payloads]
            framed = sum(sizes) + HEADER_SIZE * (len(payloads) + 1) + len(mark)
            dropped = 0
            if not self._fits(framed) and self._last_seq > self._ack_seq:
                if self.when_full == "block":
                    self.stats.full_refusals += 1
                    raise QueueFull(f"buffer {self.path} is full ({self.bytes_on_disk} of "
                                    f"{self.max_bytes} bytes)")
                if self.when_full == "drop_oldest":
                    self._drop_oldest(framed)
                else:
                    keep = len(payloads)
                    while keep and not self._fits(framed):
                        keep -= 1
                        framed -= sizes[keep] + HEADER_SIZE
                    dropped = len(payloads) - keep
                    if dropped:
                        if not self.stats.dropped_newest:
                            log.warning("buffer %s: full: dropping newest records "
                                        "(when_full=drop_newest)", self.path)
                        self.stats.dropped_newest += dropped
                        payloads = payloads[:keep]
                        if positions is not None:
                            positions = positions[:keep]
                            mark = orjson.dumps([source_key, positions[-1]]) if positions else b""
                    if not payloads:
                        return AppendResult(self._last_seq + 1, self._last_seq, 0, skipped, dropped)
            tail = self._segs[-1]
            if tail.size and (tail.size + framed > self.segment_bytes or
                              (self._ack_seq >= self._last_seq and not self._fits_no_roll(framed))):
                try:
                    self._new_segment(self._last_seq + 1)
                except OSError as exc:
                    self.stats.write_errors += 1
                    raise QueueWriteError(self.path, f"cannot start a new segment: {_oserror(exc)}") from exc
                self._delete_acked()
                tail = self._segs[-1]
            first = self._last_seq + 1
            payloads = list(payloads)  # kept (see _Kept): the caller's list may change
            buf = self._frames(payloads, first, mark)
            # Errors a new segment gets round: a segment that can grow no more (EFBIG: a
            # file size limit below segment_bytes, which stopped the reading for good),
            # and a full disk when all this segment holds is acknowledged (a new segment
            # frees it, else a small disk stays full of delivered records for good).
            way_out = ((errno.EFBIG,) + ((errno.ENOSPC,) if self._ack_seq >= self._last_seq else ())
                       if tail.size else ())
            try:
                self._write(tail, buf, way_out=way_out, payloads=payloads, first=first)
            except QueueWriteError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, OSError) and cause.errno in way_out):
                    raise
                try:
                    self._new_segment(self._last_seq + 1)
                except OSError as exc2:
                    raise QueueWriteError(self.path, f"cannot start a new segment: {_oserror(exc2)}") from exc2
                self._delete_acked()
                tail = self._segs[-1]
                self._write(tail, buf, payloads=payloads, first=first)
            last = first + len(payloads) - 1
            self._last_seq = last
            if mark:
                self._positions.pop(source_key, None)  # type: ignore[arg-type]
                self._positions[source_key] = _tuples(orjson.loads(mark)[1])  # type: ignore[index]
            self.stats.appended_records += len(payloads)
            self.stats.appended_bytes += len(buf)
            if self.fsync == "always":
                try:
                    os.fdatasync(self._wfd)
                except OSError as exc:
                    # EIO: written (readable, sent) but not durable, so no checkpoint
                    # moves past it; the next fsync that works covers it. It escaped
                    # as a plain OSError, after the seq and dedup position had moved on
                    if not self._sync_failed:
                        log.error("buffer %s: fsync failed: %s (records wait; retrying)",
                                  self.path, exc.strerror or exc)
                    self._sync_failed = True
                else:
                    self._sync_failed = False
                    self.stats.fsyncs += 1
                    self._durable_seq = last
            elif self.fsync == "never":
                self._durable_seq = last
            else:
                self._flush_wanted.set()
            return AppendResult(first, last, len(payloads), skipped, dropped)

    def _fits_no_roll(self, framed: int) -> bool:
        return self._disk_after(framed) <= self.max_bytes

    @staticmethod
    def _frames(payloads: list[bytes], seq: int, mark: bytes) -> bytes:
        # map() over C functions, not a loop: no bytecode runs per record (a third less
        # time for the frames of a batch)
        n = len(payloads)
        seqs = range(seq, seq + n)
        crcs = map(zlib.crc32, payloads, map(zlib.crc32, map(SEQ.pack, seqs)))
        parts: list[bytes] = [b""] * (2 * n)
        parts[0::2] = map(HEADER.pack, map(len, payloads), crcs, seqs)
        parts[1::2] = payloads
        parts.append(encode_frame(KIND_MARK | (seq + n - 1), mark))  # commits the write
        return b"".join(parts)

    def _write(self, tail: _Segment, buf: bytes, way_out: tuple[int, ...] = (),
               payloads: list[bytes] | None = None, first: int = 0) -> None:
        """``way_out``: errnos the caller has a way out of: neither said nor counted
        here (only if the way out fails too). ``payloads``: the
        data frames of an append, from seq ``first``, kept for the reader (_Kept)."""
        fd = self._wfd
        if self._needs_truncate:
            try:
                os.ftruncate(fd, tail.size)
                self._needs_truncate = False
            except OSError:
                pass
        try:
            _leave_room(fd, len(buf))
            _write_all(fd, buf, tail.size)
        except OSError as exc:
            try:  # leave no half batch behind (recovery would cut it anyway)
                os.ftruncate(fd, tail.size)
            except OSError:
                self._needs_truncate = True
            if exc.errno not in way_out:
                self.stats.write_errors += 1
                if self.stats.write_errors == 1 or (exc.errno != self._append_failing and exc.errno
                                                    not in (errno.ENOSPC, errno.EFBIG)):
                    log.error("buffer %s: append failed: %s", self.path, exc)
                self._append_failing = exc.errno or -1
            raise QueueWriteError(self.path, _oserror(exc), f"append of {len(buf)} bytes failed: ") from exc
        if payloads is not None:
            self._recent.append(_Kept(tail, tail.size, tail.size + len(buf), first, payloads))
            self._recent_bytes += self._recent[-1].cost
            while self._recent_bytes > RECENT_WRITES_BYTES and len(self._recent) > 1:
                w = self._recent.popleft()
                self._recent_bytes -= w.cost
        tail.size += len(buf)
        self._append_failing = 0

    def _forget_writes(self, seg: _Segment | None) -> None:
        """Drop the kept appends into ``seg`` (None: all): its bytes change or go."""
        self._recent = deque(w for w in self._recent if seg is not None and w.seg is not seg)
        self._recent_bytes = sum(w.cost for w in self._recent)

    def _recent_write(self, seg: _Segment, off: int) -> _Kept | None:
        """The kept append whose write holds offset ``off`` of ``seg``, if any. Those
        the reader has passed are dropped on the way: it reads forward (a rewind that
        goes back past them reads the disk)."""
        recent = self._recent
        while recent:
            w = recent[0]
            if w.seg is seg:
                if off < w.start:
                    return None
                if off < w.end:
                    return w
            elif w.seg.first > seg.first:
                return None
            recent.popleft()
            self._recent_bytes -= w.cost
        return None

    def _read_kept(self, w: _Kept, out: list[tuple[int, bytes]], want: int, max_bytes: int) -> int | None:
        """``read`` from a kept append: up to ``want`` records (at least one, about
        ``max_bytes`` payload bytes) from the read cursor, the payloads as appended
        (they never went through the disk: no CRC to check). Returns the payload bytes
        added, or None when the cursor is not at one of its frames (the disk decides)."""
        i = self._rseq - w.first
        n = len(w.payloads)
        if not 0 <= i <= n or w.offset(i) != self._roff:
            return None
        cum = w.cum
        # the first record that reaches max_bytes is the last taken, as in read()
        end = min(n, i + want, bisect_left(cum, cum[i] + max_bytes, i + 1))
        out += zip(range(self._rseq, w.first + end), w.payloads[i:end], strict=True)
        self._rseq = w.first + end
        self._roff = w.offset(end) if end < n else w.end  # past the commit marker
        return cum[end] - cum[i]

    def _drop_oldest(self, framed: int) -> None:
        while not self._fits(framed) and self._last_seq > self._ack_seq:
            if len(self._segs) == 1:
                if self._segs[0].size == 0:
                    return
                try:
                    self._new_segment(self._last_seq + 1)
                except OSError as exc:
                    # no inode left (ENOSPC), EROFS: a plain OSError ended the daemon,
                    # and every start again (a crash loop); the append waits instead
                    self.stats.write_errors += 1
                    raise QueueWriteError(self.path, f"cannot start a new segment: {_oserror(exc)}") from exc
            seg_last = self._segs[1].first - 1
            # records the sink has read are in flight (it may still deliver them from
            # memory): counted as dropped are those it never read
            dropped = max(0, seg_last - max(self._ack_seq, self._rseq - 1))
            if dropped:
                self.stats.dropped_oldest += dropped
                self._say_dropped(dropped)
            self._ack_seq = max(self._ack_seq, seg_last)
            self._state_dirty = True
            self._delete_acked()
        if self._rseq <= self._ack_seq:
            self._rseq = self._ack_seq + 1
            self._rpos_ok = False

    def _say_dropped(self, n: int) -> None:
        """One warning a minute at most while drop_oldest drops (a long outage drops a
        segment every few seconds)."""
        self._drops_unsaid += n
        now = time.monotonic()
        if now - self._drops_said_at >= 60.0:
            log.warning("buffer %s: full: dropped %d oldest record(s) not yet sent "
                        "(when_full=drop_oldest; %d in all)", self.path, self._drops_unsaid,
                        self.stats.dropped_oldest)
            self._drops_unsaid, self._drops_said_at = 0, now

    def _delete_acked(self) -> None:
        """Delete segments whose every record is acknowledged (never the tail)."""
        while len(self._segs) > 1 and self._segs[1].first - 1 <= self._ack_seq:
            if self._map_seq < self._segs[1].first - 1 or (
                    self._flusher is None and self._synced_ack < self._segs[1].first - 1):
                # its commit markers hold dedup positions the state has not saved yet; or
                # the state does not say its records were acknowledged: a crash right
                # after the unlink would have the next start count them lost (with a
                # flusher the file is only renamed, and unlinked after the state write)
                self._write_state(sync=self.fsync != "never", clean=False)
            seg = self._segs[0]
            self._drop_segment(seg)
            try:
                if self._flusher is not None:
                    gone = seg.path.with_name(seg.path.name[:-len(SEGMENT_SUFFIX)] + DELETED_SUFFIX)
                    seg.path.rename(gone)
                    self._unlink_later.append(gone)
                    self._flush_wanted.set()
                else:
                    seg.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                # EPERM (chattr +i), EROFS, EIO: a file left on disk, not a crash loop
                # (this runs at every ack and at every start); a later start deletes it
                self.stats.delete_errors += 1
                if self.stats.delete_errors == 1:
                    log.error("buffer %s: cannot delete the delivered segment %s: %s (left on "
                              "disk; deleted at a later start; said once)", self.path,
                              seg.path.name, exc.strerror)
                continue
            self.stats.segments_deleted += 1

    def _drop_segment(self, seg: _Segment) -> None:
        """Forget a segment that is not the tail (its file is dealt with by the caller)."""
        self._segs.remove(seg)
        self._closed_bytes -= _blocks(seg.size)
        if self._rfd_seg is seg:
            os.close(self._rfd)
            self._rfd, self._rfd_seg = -1, None
        if self._rbuf_seg is seg:
            self._rbuf_seg, self._rbuf = None, b""
        self._forget_writes(seg)
        if self._rseg is seg:
            self._rpos_ok = False
        if self._ack_pos is not None and self._ack_pos[0] is seg:
            self._ack_pos = None
        if self._unreadable is not None and self._unreadable[0] is seg:
            self._unreadable = None

    # -- durability and state -----------------------------------------------------------

    def sync(self) -> int:
        """Make everything appended and acknowledged so far durable now (fsync under
        ``always``/``interval``, a plain state write under ``never``); blocks for the
        fsync. Returns ``durable_seq``. Under ``interval`` a background thread already
        does this every ``fsync_interval_ms``: reading ``durable_seq`` is enough."""
        with self._lock:
            if not self._closed:
                try:
                    self._sync_locked()
                    self._sync_failed = False
                except OSError as exc:  # EIO, ENOSPC: nothing becomes durable; said once a run
                    if not self._sync_failed:
                        log.error("buffer %s: fsync failed: %s (records wait; retrying)",
                                  self.path, exc.strerror or exc)
                    self._sync_failed = True
            return self._durable_seq

    def _gone_locked(self) -> bool:
        """Our files were deleted under us (``rm -rf`` of the buffer, by hand): what we
        write goes to unlinked inodes, lost at close. The state file alone deleted is
        made anew here (False)."""
        try:
            state_gone = os.fstat(self._state_fd).st_nlink == 0
            tail_gone = os.fstat(self._wfd).st_nlink == 0
        except OSError:
            return True
        if state_gone and not tail_gone:
            # made again, or tried again at the next look: the segments are whole either
            # way (one failure taken for the whole buffer gone forgot them all: a review)
            self._state_anew()
            return False
        if tail_gone and not state_gone:
            return not self._tail_anew()
        return state_gone or tail_gone

    def _tail_anew(self) -> bool:
        """Only the newest segment was deleted (an ``rm`` of the biggest file): taken for
        the whole buffer gone, every older segment was forgotten, their records not in
        memory counted lost (15,000 of 30,000 for a tail of 1,000) and deleted as
        delivered at the next start. We still hold it open: it is written again, whole,
        from there. If that fails, a new tail (what the reader cannot read of the old
        one is counted missing, as for any segment deleted). False: neither worked."""
        tail = self._segs[-1]
        fd = -1
        try:
            with open(f"/proc/self/fd/{self._wfd}", "rb") as f:  # the deleted file, still open
                data = f.read(tail.size)
            if len(data) != tail.size:
                raise OSError(errno.EIO, f"{len(data)} of {tail.size} bytes read back")
            fd = os.open(tail.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            _write_all(fd, data, 0)
            if self.fsync != "never":
                os.fdatasync(fd)
                self._fsync_dir()
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(OSError):
                    tail.path.unlink()
            try:
                self._new_segment(self._last_seq + 1)
            except OSError:
                return False  # nowhere to write: start a new buffer, or say why not
            log.error("buffer %s: segment %s, the newest, was deleted while the shipper ran, "
                      "and could not be written again (%s): new records go to %s", self.path,
                      tail.path.name, _oserror(exc), self._segs[-1].path.name)
            self.stats.repairs += 1
            return True
        os.close(self._wfd)
        self._wfd = fd
        if self._rfd_seg is tail:  # the reader's file would not see the appends from now on
            os.close(self._rfd)
            self._rfd, self._rfd_seg = -1, None
        log.warning("buffer %s: segment %s, the newest, was deleted while the shipper ran: "
                    "written again from the open file (nothing lost)", self.path, tail.path.name)
        self.stats.repairs += 1
        return True

    def _state_anew(self) -> bool:
        """Only the state file was deleted (an ``rm`` of it by hand, a cleaner): the
        segments are all there, a new state file is all it takes. Taken for the whole
        buffer gone, every segment was left behind and forgotten, the records not in
        memory counted lost (the sink never got them), and the next start deleted those
        files as delivered. False if it cannot be made now (said once; tried again)."""
        path = self.path / STATE_NAME
        fd = -1
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the buffer's lock is on it
            os.pwrite(fd, bytes(2 * SLOT_SIZE), 0)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            if not self._state_anew_failed:
                self._state_anew_failed = True
                log.error("buffer %s: its state file was deleted while the shipper ran, and "
                          "cannot be made again: %s (retrying)", self.path, _oserror(exc))
            return False
        self._state_anew_failed = False
        with self._state_lock:
            old, self._state_fd = self._state_fd, fd
        os.close(old)
        log.warning("buffer %s: its state file was deleted while the shipper ran: made again "
                    "(the segments are all there: nothing lost)", self.path)
        self.stats.repairs += 1
        self._write_state(sync=self.fsync != "never", clean=False)
        return True

    def _rehome_locked(self) -> None:
        """After our files were deleted: start a new buffer in the same place, seqs going
        on, with the records the sink had not read yet that are still kept in memory
        (the latest appends, RECENT_WRITES_BYTES) written again first; say and count
        what is lost: the rest of what no sink had acknowledged. Found by fault
        injection: 43 of 9,000 records were lost at an rm -rf, every unread one of them
        still in memory."""
        kept = {w.first + i: p for w in self._recent for i, p in enumerate(w.payloads)}
        saved = [kept[seq] for seq in range(self._rseq, self._last_seq + 1) if seq in kept]
        lost = self._last_seq - self._ack_seq - len(saved)
        log.error("buffer %s: its files were deleted while the shipper ran: starting a new buffer "
                  "there%s; %s", self.path,
                  f" with the {len(saved)} record(s) the sink had not read yet (still in memory)"
                  if saved else "",
                  f"up to {lost} record(s) not yet acknowledged by the sink are lost (those it had "
                  "already read may still arrive)" if lost else "nothing lost")
        self.stats.corrupt_records += lost
        self.stats.repairs += 1
        self._close_fds()
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._state_fd = os.open(self.path / STATE_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self._state_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours: a fresh file
        os.pwrite(self._state_fd, bytes(2 * SLOT_SIZE), 0)
        self._segs, self._closed_bytes = [], 0
        self._ack_seq = self._durable_seq = self._synced_ack = self._max_seen = self._last_seq
        self._disk_last = self._last_seq
        self._rseq, self._rseg, self._rpos_ok, self._roff = self._last_seq + 1, None, False, 0
        self._rbuf, self._rbase = b"", 0
        self._forget_writes(None)
        self._read_marks.clear()
        self._ack_pos = None
        self._oldest_time = None
        self._skipped.clear()
        self._new_segment(self._last_seq + 1)
        if saved:  # under new seqs, in their order, before anything appended from now on
            first = self._last_seq + 1
            self._write(self._segs[-1], self._frames(saved, first, b""), payloads=saved, first=first)
            self._last_seq += len(saved)
        self._write_state(sync=self.fsync != "never", clean=False)

    def _sync_locked(self) -> None:
        if self._gone_locked():
            self._rehome_locked()
        self._last_sync = time.monotonic()
        if self._durable_seq < self._last_seq:
            if self.fsync != "never":
                os.fdatasync(self._wfd)
                self.stats.fsyncs += 1
            self._durable_seq = self._last_seq
        if self._state_changed():
            self._write_state(sync=self.fsync != "never", clean=False)

    def _state_changed(self) -> bool:
        return self._state_dirty or self._synced_ack != self._ack_seq or self._map_seq != self._last_seq

    def _flush_loop(self) -> None:
        """fsync=interval: make data and state durable every interval, off the caller's
        thread (fsync releases the GIL), so appends never wait for the disk."""
        failures = 0
        while True:
            if not failures and self._idle():
                self._flusher_asleep = True
                self._flush_wanted.wait()
                self._flusher_asleep = False
            if self._stop_flusher.wait(self.fsync_interval):
                return
            self._flush_wanted.clear()  # before the sync reads what is to be done
            if self._stop_flusher.is_set():
                # close() came since the interval ran out, and the clear may have taken its
                # wake: sleeping on it now would hold close()'s join for good; close() syncs
                return
            try:
                self._background_sync()
                failures = 0
            except OSError as exc:
                failures += 1
                if failures == 1:
                    log.error("buffer %s: background fsync failed: %s", self.path, exc)
                continue  # delivered segments stay until a state says they were
            self._unlink_delivered()

    def _idle(self) -> bool:
        """Everything appended is durable, the state written, delivered segments unlinked."""
        with self._lock:
            return (self._durable_seq >= self._last_seq and not self._state_changed()
                    and not self._unlink_later)

    def _unlink_delivered(self) -> None:
        """Unlink the delivered segments renamed since the last time (off the caller's
        thread; a failure leaves a file a later start removes)."""
        with self._lock:
            todo, self._unlink_later = self._unlink_later, []
        for path in todo:
            with contextlib.suppress(OSError):
                path.unlink()

    def _background_sync(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._gone_locked():
                self._rehome_locked()
            target = self._last_seq
            fd = os.dup(self._wfd) if self._durable_seq < target else -1
        if fd >= 0:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        with self._lock:
            if self._closed:
                return
            self._last_sync = time.monotonic()
            if target > self._durable_seq:
                self._durable_seq = target
                self.stats.fsyncs += 1
            if not self._state_changed():
                return
            gen, slot = self._state_slot(clean=False)
        self._put_state(gen, slot, sync=True)

    def _write_state(self, sync: bool, clean: bool) -> None:
        gen, slot = self._state_slot(clean)
        self._put_state(gen, slot, sync)

    def _state_slot(self, clean: bool) -> tuple[int, bytes]:
        """The next state slot (caller holds the queue lock)."""
        positions = self._positions
        body = b""
        while True:
            body = orjson.dumps({
                "ack": self._ack_seq, "durable": self._durable_seq, "appended": self._last_seq,
                "map_seq": self._last_seq, "positions": positions, "fsync": self.fsync,
                "clean": clean, "time_unix_ns": time.time_ns()})
            if len(body) <= SLOT_SIZE - SLOT_HEADER.size:
                break
            # too many sources to remember: forget the least recently appended ones
            # (their re-offered records would be taken again: duplicates, not loss)
            drop = max(1, len(positions) // 8)
            log.warning("buffer %s: dedup memory over %d bytes: forgetting %d source(s)",
                        self.path, SLOT_SIZE, drop)
            positions = dict(list(positions.items())[drop:])
            self._positions = positions
        self._state_gen += 1
        self._state_dirty = False
        self._synced_ack = self._ack_seq
        self._map_seq = self._last_seq
        return self._state_gen, encode_state_slot(self._state_gen, body)

    def _put_state(self, gen: int, slot: bytes, sync: bool) -> None:
        """Write a slot; one write at a time, each fsynced before the next (when
        syncing), so a torn write can only ever hit one of the two slots."""
        with self._state_lock:
            if self._state_fd < 0:
                return
            try:
                _write_all(self._state_fd, slot, (gen % 2) * SLOT_SIZE)
                if sync:
                    os.fdatasync(self._state_fd)
                    self.stats.fsyncs += 1
            except OSError as exc:
                self.stats.state_write_errors += 1
                self._state_dirty = True
                self._flush_wanted.set()  # the flusher tries again
                if self.stats.state_write_errors == 1:
                    log.error("buffer %s: state write failed: %s", self.path, exc)

    # -- reading ------------------------------------------------------------------------

    def read(self, max_records: int = 1000, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Up to ``max_records`` records (at least one, at most about ``max_bytes``
        payload bytes) from the read cursor, as (seq, payload). The cursor moves on;
        the records stay in the queue until ``ack``."""
        with self._lock:
            out: list[tuple[int, bytes]] = []
            if self._closed:
                return out
            nbytes = 0
            last_at: tuple[Any, ...] = ()
            stuck = 0
            while len(out) < max_records and nbytes < max_bytes and self._rseq <= self._last_seq:
                # Never spin: a turn that moved nothing, thrice, and the reader steps past
                # what holds it (a segment at odds with its neighbours span 100,000 turns
                # of every read, at 70% CPU, without a record)
                at = (self._rseg, self._roff, self._rseq, len(out), self._rpos_ok,
                      self._rseg.size if self._rseg is not None else -1)
                stuck = stuck + 1 if at == last_at else 0
                last_at = at
                try:
                    if stuck >= 3 and self._rseg is not None:
                        self._force_past(self._rseg)
                        stuck = 0
                    nbytes += self._read_turn(out, max_records, max_bytes, nbytes)
                except _SegmentError as err:
                    if not self._segment_failed(err.seg, err.exc):
                        break
                    continue
                except _Done:
                    break
            if out:
                last = out[-1][0]
                if last > self._max_seen:
                    self._max_seen = last
                self._read_marks.append((last, self._rseg, self._roff))  # type: ignore[arg-type]
                self.stats.read_records += len(out)
            return out

    def _read_turn(self, out: list[tuple[int, bytes]], max_records: int, max_bytes: int,
                   nbytes: int) -> int:
        """One turn of ``read``: records from the cursor's segment into ``out`` (``nbytes``
        of payload taken so far); returns the payload bytes added. Raises _Done at the
        end of the data, _SegmentError when the segment cannot be read."""
        if not self._rpos_ok:
            self._locate_reader()
        seg = self._rseg
        assert seg is not None
        limit = seg.size
        off = self._roff
        if off >= limit:
            if seg is self._segs[-1]:
                raise _Done
            self._next_segment()
            return 0
        kept = self._recent_write(seg, off) if self._recent else None
        if kept is not None:
            # the sink keeps up: these records are one of the latest appends, still in
            # our memory
            added = self._read_kept(kept, out, max_records - len(out), max_bytes - nbytes)
            if added is not None:
                return added
        unpack = HEADER.unpack_from
        crc32 = zlib.crc32
        add = out.append
        start = nbytes
        buf, base = self._chunk(seg, off, limit, HEADER_SIZE), self._rbase
        pos = off - base
        lim = min(len(buf), limit - base)
        expected = self._rseq
        want = max_records - len(out)
        while want and nbytes < max_bytes and pos + HEADER_SIZE <= lim:
            ln, crc, sq = unpack(buf, pos)
            end = pos + HEADER_SIZE + ln
            if end > lim:
                break
            if sq != expected:
                if sq == KIND_MARK | (expected - 1):  # a commit marker: nothing to read
                    pos = end
                    continue
                break
            body = buf[pos + 8:end]
            if crc32(body) != crc:
                break
            add((sq, body[8:]))
            nbytes += ln
            expected += 1
            want -= 1
            pos = end
        if pos + HEADER_SIZE <= lim:  # step over a commit marker right after
            ln, crc, sq = unpack(buf, pos)
            if sq == KIND_MARK | (expected - 1) and pos + HEADER_SIZE + ln <= lim:
                pos += HEADER_SIZE + ln
        self._roff = base + pos
        self._rseq = expected
        if len(out) >= max_records or nbytes >= max_bytes or self._roff >= limit:
            return nbytes - start
        return nbytes - start + self._slow_frame(seg, out)

    def _slow_frame(self, seg: _Segment, out: list[tuple[int, bytes]]) -> int:
        """The frame at the read cursor is not the next data record in order: a marker,
        a gap, a seq jump, a frame across the chunk end, or corruption. Returns the
        payload bytes it added to ``out``."""
        off = self._roff
        limit = seg.size
        if limit - off < HEADER_SIZE:
            self._corruption(seg)
            return 0
        buf = self._chunk(seg, off, limit, HEADER_SIZE)
        if len(buf) - (off - self._rbase) < HEADER_SIZE:
            # fewer bytes than we wrote: the file was cut short under us (truncated by
            # hand, a filesystem error); the struct.error of reading on ended the daemon
            self._corruption(seg)
            return 0
        ln = HEADER.unpack_from(buf, off - self._rbase)[0]
        if ln > MAX_RECORD or off + HEADER_SIZE + ln > limit:
            self._corruption(seg)
            return 0
        buf = self._chunk(seg, off, limit, HEADER_SIZE + ln)
        pos = off - self._rbase
        found = _check_frame(buf, memoryview(buf), pos, len(buf), self._rseq)
        if found is None:
            self._corruption(seg)
            return 0
        end, kind, low, new_expected = found
        added = 0
        if kind == KIND_DATA:
            if low > self._rseq:
                self._count_missing(self._rseq, low - 1, f"segment {seg.path.name}")
            out.append((low, buf[pos + HEADER_SIZE:end]))
            added = end - pos - HEADER_SIZE
        elif kind == KIND_MARK and low >= self._rseq:
            self._count_missing(self._rseq, low, f"segment {seg.path.name}")
        elif kind == KIND_GAP:  # lost seqs a repair already counted
            self._skip(self._rseq, low)
        self._rseq = new_expected
        self._roff = off + (end - pos)
        return added

    def _count_missing(self, first: int, last: int, where: str) -> None:
        """Seqs the reader found missing without a gap frame; counted once."""
        self._skip(first, last)
        first = max(first, self._max_seen + 1)
        if last < first:
            return
        self._max_seen = max(self._max_seen, last)
        log.warning("buffer %s: records %d..%d are missing (%s)", self.path, first, last, where)
        self.stats.corrupt_records += last - first + 1
        self.stats.repairs += 1

    def _skip(self, first: int, last: int) -> None:
        """Seqs that will never be read: acknowledge them with the records around them,
        so ``depth`` reaches 0 and their segment can go."""
        if last < first:
            return
        if self._skipped.get(first, -1) < last:
            self._skipped[first] = last
        self._apply_skips()
        self._flush_wanted.set()

    def _apply_skips(self) -> None:
        skipped = self._skipped
        while skipped:
            last = skipped.pop(self._ack_seq + 1, None)
            if last is None:
                break
            self._ack_seq = max(self._ack_seq, last)
            self._state_dirty = True
        if len(skipped) > 64:
            for first in [f for f, last in skipped.items() if last <= self._ack_seq]:
                del skipped[first]

    def _corruption(self, seg: _Segment) -> None:
        """Bad bytes at the read cursor: repair the segment, or skip in memory."""
        idx = self._segs.index(seg)
        next_first = self._segs[idx + 1].first if idx + 1 < len(self._segs) else None
        data = self._read_file(seg)
        if next_first is None and len(data) < seg.size:
            # the tail cut short under us, at a frame's end (0 bytes): its lost records end
            # at our last seq. Found nothing bad, it was stepped past, and the appends after
            # left a hole of NULs where it was: the next start counted the records again
            next_first = self._last_seq + 1
        walk = walk_segment(data, seg.first, next_first)
        is_tail = seg is self._segs[-1]
        if is_tail:
            # the tail holds only what we wrote since open; bytes changed under us
            tail_lost = next_first is None and walk.pieces and isinstance(walk.pieces[-1], BadRegion) \
                and walk.pieces[-1].resumes_at is None
            if tail_lost:
                last_region = walk.pieces[-1]
                assert isinstance(last_region, BadRegion)
                last_region.resumes_at = self._last_seq + 1
        if walk.bad and self._repair_segment(seg, data, walk, next_first):
            if is_tail:
                os.close(self._wfd)
                self._wfd = os.open(seg.path, os.O_WRONLY)
            self._rpos_ok = False
            return
        # could not rewrite (or nothing found bad on a second look): skip in memory
        for piece in walk.pieces:
            if isinstance(piece, BadRegion) and piece.start <= self._roff < max(piece.end, piece.start + 1):
                self._roff = piece.end
                resumes = piece.resumes_at if piece.resumes_at is not None else next_first
                if resumes is not None and resumes > self._rseq:
                    self._skip(self._rseq, resumes - 1)
                    self._rseq = resumes
                return
        self._rpos_ok = False
        if not walk.bad:
            self._rbuf_seg = None  # stale chunk; read again
            if self._rfd_seg is seg:
                # and maybe a stale file: the one at its path is whole (replaced under
                # us); read through the old one, every turn met the same short read
                # with the cursor moving nowhere, and read() never returned
                os.close(self._rfd)
                self._rfd, self._rfd_seg = -1, None
            return
        self._roff = seg.size

    def _next_segment(self) -> None:
        idx = self._segs.index(self._rseg)  # type: ignore[arg-type]
        nxt = self._segs[idx + 1]
        if nxt.first > self._rseq:
            self._count_missing(self._rseq, nxt.first - 1, f"before segment {nxt.path.name}")
            self._rseq = nxt.first
        self._rseg = nxt
        self._roff = 0

    def _chunk(self, seg: _Segment, off: int, limit: int, need: int) -> bytes:
        """Bytes of ``seg`` from at most ``off`` holding ``need`` bytes at ``off`` if the
        segment has them; reads CHUNK bytes at a time."""
        buf = self._rbuf
        if self._rbuf_seg is seg and self._rbase <= off and off + need <= self._rbase + len(buf):
            return buf
        try:
            if self._rfd_seg is not seg:
                if self._rfd >= 0:
                    os.close(self._rfd)
                    self._rfd, self._rfd_seg = -1, None
                self._rfd = os.open(seg.path, os.O_RDONLY)
                self._rfd_seg = seg
            size = min(max(CHUNK, need), limit - off)
            buf = os.pread(self._rfd, size, off)
        except OSError as exc:
            raise _SegmentError(seg, exc) from exc
        if self._unreadable is not None:
            self._readable_again(seg)
        self._rbuf, self._rbase, self._rbuf_seg = buf, off, seg
        return buf

    def _read_file(self, seg: _Segment) -> bytes:
        """All of ``seg``'s bytes."""
        try:
            data = _pread_all(seg.path, seg.size)
        except OSError as exc:
            raise _SegmentError(seg, exc) from exc
        if self._unreadable is not None:
            self._readable_again(seg)
        return data

    def _readable_again(self, seg: _Segment) -> None:
        if self._unreadable is not None and self._unreadable[0] is seg:
            self._unreadable = None
            log.warning("buffer %s: segment %s can be read again: its records go on",
                        self.path, seg.path.name)

    def _segment_failed(self, seg: _Segment, exc: OSError) -> bool:
        """``seg`` could not be read. True: the reader went past it; False: it waits
        (``read`` returns what it has; the next read tries again).

        Deleted under us: its records are counted missing at once, as the next start
        would. Unreadable (EACCES, EIO): said once; the reader waits for it (order
        matters: the records behind it wait too) up to UNREADABLE_GIVE_UP_SECONDS, then
        sets it aside, counts its unread records lost and goes on (it raised out of
        ``read``, and the daemon stopped with exit 1: a crash loop, nothing shipped)."""
        self._rpos_ok = False
        if seg not in self._segs:
            return True  # gone meanwhile (acknowledged)
        is_tail = seg is self._segs[-1]
        if exc.errno == errno.ENOENT:
            if is_tail:  # every record of ours in it: start a new buffer
                if self._gone_locked():
                    try:
                        self._rehome_locked()
                    except OSError as exc2:
                        log.error("buffer %s: cannot start a new buffer: %s", self.path, _oserror(exc2))
                        return False
                    return True
                if seg is self._segs[-1]:
                    return False
                # a new tail was started: it is an old segment now, deleted
            self._lose_segment(seg, "was deleted", None)
            return True
        now = time.monotonic()
        if self._unreadable is None or self._unreadable[0] is not seg:
            self._unreadable = (seg, now)
            self.stats.read_errors += 1
            log.error("buffer %s: segment %s cannot be read: %s; its records and those after "
                      "it wait (retrying; after %d s it is set aside and its records are "
                      "counted lost)", self.path, seg.path.name, _oserror(exc),
                      UNREADABLE_GIVE_UP_SECONDS)
            return False
        if now - self._unreadable[1] < UNREADABLE_GIVE_UP_SECONDS:
            return False
        self._unreadable = None
        if is_tail:
            try:  # new records go to a file that can be read
                self._new_segment(self._last_seq + 1)
            except OSError as exc2:
                log.error("buffer %s: cannot start a new segment: %s", self.path, _oserror(exc2))
                return False
        self._lose_segment(seg, f"could still not be read after {UNREADABLE_GIVE_UP_SECONDS:g} s "
                                f"({_oserror(exc)})", seg.path)
        return True

    def _lose_segment(self, seg: _Segment, why: str, aside: Path | None) -> None:
        """Go past ``seg`` (not the tail), forgotten, its unread records counted missing,
        said in one line; its file set aside when ``aside`` names it."""
        nxt = self._segs[self._segs.index(seg) + 1]
        self._drop_segment(seg)
        where = f"segment {seg.path.name} {why}"
        if aside is not None:
            target = self._set_aside(aside, why, say=False)
            where += f"; set aside as {target}" if target else ""
        first = max(self._rseq, seg.first)
        if max(first, self._max_seen + 1) < nxt.first:
            self._count_missing(first, nxt.first - 1, where)  # says it
        else:
            self._skip(first, nxt.first - 1)
            log.warning("buffer %s: %s (its records were read already)", self.path, where)
        self._rseq = max(self._rseq, nxt.first)
        self._rseg, self._roff, self._rpos_ok = nxt, 0, nxt.first >= self._rseq

    def _force_past(self, seg: _Segment) -> None:
        """The reader made no progress in ``seg`` (see ``read``): go on from the next
        valid frame after the cursor holding seq ``_rseq`` or later, else past the
        segment; what it steps over is counted missing."""
        data = self._read_file(seg)
        found = _resync(data, memoryview(data), self._roff + 1, len(data), self._rseq) \
            if self._roff + 1 < len(data) else None
        where = f"segment {seg.path.name}: nothing readable at offset {self._roff}"
        log.warning("buffer %s: segment %s: the reader could not get past offset %d (seq %d): "
                    "going on from %s", self.path, seg.path.name, self._roff, self._rseq,
                    f"offset {found[0]}" if found is not None else "the next segment")
        self._rbuf_seg = None
        self._rpos_ok = True
        if found is not None:
            # a frame the reader takes with seq _rseq or later: the frame itself says
            # which seqs are missing before it (see _slow_frame)
            self._roff = found[0]
            return
        self._roff = seg.size
        if seg is self._segs[-1]:
            self._count_missing(self._rseq, self._last_seq, where)
            self._rseq = self._last_seq + 1
        else:
            nxt = self._segs[self._segs.index(seg) + 1]
            self._count_missing(self._rseq, nxt.first - 1, where)
            self._rseq = max(self._rseq, nxt.first)

    def _locate(self, seq: int) -> tuple[_Segment, int]:
        """Segment and offset of the first frame that holds ``seq`` or comes after it."""
        seg = self._segs[0]
        for s in self._segs:
            if s.first <= seq:
                seg = s
            else:
                break
        if seg.first >= seq:
            return seg, 0
        data = self._read_file(seg)
        pos = 0
        size = len(data)
        while pos + HEADER_SIZE <= size:
            ln, _, sq = HEADER.unpack_from(data, pos)
            low = sq & SEQ_MASK
            if ln > MAX_RECORD or low >= seq or (sq & KIND_MASK == KIND_MARK and low + 1 >= seq):
                return seg, pos
            pos += HEADER_SIZE + ln
        return seg, min(pos, size)

    def _locate_reader(self) -> None:
        self._rseg, self._roff = self._locate(self._rseq)
        self._rpos_ok = True

    def ack(self, up_to_seq: int) -> None:
        """Acknowledge every record with seq <= ``up_to_seq`` (delivered by the sink).
        Fully acknowledged segments are deleted."""
        with self._lock:
            if self._closed or up_to_seq <= self._ack_seq:
                return
            up_to = min(up_to_seq, self._last_seq)
            self.stats.acked_records += up_to - self._ack_seq
            self._ack_seq = up_to
            self._apply_skips()
            up_to = self._ack_seq
            self._ack_pos = None
            for mark_seq, seg, off in self._read_marks:
                if mark_seq == up_to:
                    self._ack_pos = (seg, off)
                    break
            while self._read_marks and self._read_marks[0][0] <= up_to:
                self._read_marks.popleft()
            if self._rseq <= up_to:
                self._rseq = up_to + 1
                self._rpos_ok = False
            self._delete_acked()
            if self.fsync == "always":
                self._write_state(sync=True, clean=False)
            elif self.fsync == "never":
                self._write_state(sync=False, clean=False)
            else:  # interval: the flusher thread writes the state
                self._flush_wanted.set()

    def rewind(self) -> None:
        """Move the read cursor back to the oldest unacknowledged record (after a sink
        reconnect: records read but not acknowledged are read again)."""
        with self._lock:
            self._rseq = self._ack_seq + 1
            self._read_marks.clear()
            if self._ack_pos is not None and self._ack_pos[0] in self._segs:
                self._rseg, self._roff = self._ack_pos
                self._rpos_ok = True
            else:
                self._rpos_ok = False

    # -- introspection ------------------------------------------------------------------

    @property
    def durable_seq(self) -> int:
        """Highest seq such that it and every record before it are durable (per policy)."""
        return self._durable_seq

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def acked_seq(self) -> int:
        return self._ack_seq

    @property
    def depth(self) -> int:
        """Records appended and not yet acknowledged."""
        return self._last_seq - self._ack_seq

    @property
    def unread(self) -> int:
        """Records not yet returned by ``read`` since the last rewind."""
        return max(0, self._last_seq - self._rseq + 1)

    @property
    def bytes_on_disk(self) -> int:
        """Every file of the queue, rounded up to 4 KiB blocks (see the module doc)."""
        with self._lock:
            tail = self._segs[-1].size if self._segs else 0
            return self._closed_bytes + _blocks(tail) + 2 * SLOT_SIZE + \
                _blocks(self._quarantine_size) + self._aside_bytes

    @property
    def segments(self) -> int:
        return len(self._segs)

    def oldest_unacked_time(self) -> int | None:
        """``time_unix_ns`` of the oldest unacknowledged record when its payload is a
        JSON object that has one (the pipeline's records do), else None."""
        with self._lock:
            if self._ack_seq >= self._last_seq:
                return None
            if self._oldest_time is not None and self._oldest_time[0] == self._ack_seq:
                return self._oldest_time[1]
            value: int | None = None
            try:
                seg, off = self._locate(self._ack_seq + 1)
                with open(seg.path, "rb") as f:
                    while off + HEADER_SIZE <= seg.size:
                        f.seek(off)
                        head = f.read(HEADER_SIZE)
                        if len(head) < HEADER_SIZE:
                            break
                        ln, _, sq = HEADER.unpack(head)
                        if ln > MAX_RECORD:
                            break
                        if sq & KIND_MASK == KIND_DATA:
                            value = payload_time(f.read(ln))
                            break
                        off += HEADER_SIZE + ln
            except (_SegmentError, OSError):
                return None  # the reader says why (unreadable, deleted)
            self._oldest_time = (self._ack_seq, value)
            return value

    def close(self) -> None:
        """Make everything durable, mark the state clean, release the directory."""
        if self._drops_unsaid:  # dropped since the last warning: say it before going
            self._drops_said_at = -1e9
            self._say_dropped(0)
        if self._flusher is not None:
            self._stop_flusher.set()
            self._flush_wanted.set()
            self._flusher.join()
            self._flusher = None
        with self._lock:
            if self._closed:
                return
            try:
                if self._wfd >= 0 and self._state_fd >= 0:
                    # the state file or the newest segment deleted since the last look (none
                    # under fsync=always or never): made again now, or what was appended
                    # to it went with the process. The whole buffer gone: nothing to do
                    self._gone_locked()
                if self._wfd >= 0 and self._durable_seq < self._last_seq:
                    try:
                        os.fdatasync(self._wfd)
                    except OSError as exc:
                        # EIO, a state_dir gone read-only: the stop goes on (it ended in a
                        # traceback and exit 1), the state stays unclean, and no
                        # checkpoint moved past these records: their lines are read again
                        log.error("buffer %s: fsync at stop failed: %s (records %d..%d not "
                                  "made durable; their lines are read again at the next "
                                  "start)", self.path, exc.strerror or exc,
                                  self._durable_seq + 1, self._last_seq)
                        return
                    self._durable_seq = self._last_seq
                self._write_state(sync=True, clean=True)
            finally:
                self._closed = True
                self._close_fds()
        # after the state saying they were delivered (else the next start finds their
        # records missing); a failed stop leaves them for the next start to remove
        self._unlink_delivered()

    def _close_fds(self) -> None:
        for fd in (self._wfd, self._rfd, self._state_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wfd = self._rfd = self._state_fd = -1
        self._rfd_seg = self._rbuf_seg = None

    def __enter__(self) -> DiskQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def payload_time(payload: bytes) -> int | None:
    """``time_unix_ns`` of a JSON-object payload, if it has an integer one."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    t = obj.get("time_unix_ns") if isinstance(obj, dict) else None
    return t if isinstance(t, int) else None


def _at_or_below(pos: Any, high: Any, where: Path) -> bool:
    try:
        return bool(_tuples(pos) <= high)
    except TypeError:
        log.warning("buffer %s: positions %r and %r do not compare; taking the record",
                    where, pos, high)
        return False


def _leave_room(fd: int, nbytes: int) -> None:
    """Raise ENOSPC if writing ``nbytes`` would leave less than DISK_RESERVE free."""
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return  # the write itself says what is wrong
    if st.f_blocks and st.f_bavail * st.f_frsize < nbytes + DISK_RESERVE:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (or less than "
                                    f"{DISK_RESERVE >> 10} KiB would be left for the checkpoints)")


def _write_all(fd: int, data: bytes, offset: int | None) -> None:
    """Write all of ``data`` (at ``offset``, or at the file position); a short write
    (disk full, file size limit) continues until the error shows."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        n = os.write(fd, view[done:]) if offset is None else os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


def _pread_all(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)
