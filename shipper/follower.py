"""Following log files live: multilog directories and plain syslog files (I/O edge).

Contract (used by the pipeline)
-------------------------------
A source yields, in order, ``LineBatch`` and ``Gap`` items::

    source = MultilogSource(["/var/log/qmail/*"], "/var/lib/shipper/checkpoints.json")
    async for item in source.batches():       # LineBatch | Gap
        ...                                   # make the records durable, then:
        source.commit(item.position)          # sync, cheap
    await source.close()                      # writes the checkpoint

* ``LineBatch``: ``source`` (the directory or file path: the key), ``path``
  (file the lines were read from at the time, e.g. ``…/current``),
  ``file_id`` (``shipper.fingerprint.fingerprint`` of the file's first line,
  the same function replay uses, so event ids match), ``lines`` (bytes, no
  newline), ``offsets`` (byte offset of each line's first byte in that file;
  for a gzip archive, in the decompressed data), ``line_flags`` (index →
  the line's flags: ``"continuation"``: a long line split across a rotation,
  joined here (through every file it spans, when longer than a whole file:
  kept up to ``max_line``), or a tail we could not join; ``"partial"``: a last line without
  newline, e.g. at the end of a ``.u`` file; ``"truncated"``: cut at
  ``max_line``, also a joined line), and
  ``position``.
* ``Gap``: data we know is gone (multilog's ``n`` limit deleted a file before
  we read it, ``current`` truncated by hand, a checkpointed file vanished):
  ``source``, ``file``, ``bytes_lost`` (what we know: exact when ``exact``,
  else a lower bound; None when unknown), ``first_time_ns``/``last_time_ns``
  (from neighbouring TAI64N labels), ``reason``, ``position``.
* ``position`` is opaque to callers and JSON-serialisable: "everything up to
  and including this item". ``commit`` records it; the checkpoint file is
  written at most every ``commit_interval`` and on ``close`` (with tracking on,
  by the pipeline with the tracking state instead: ``autosave``), and never
  moves past what was committed. After a restart reading resumes exactly
  there: the file is found again by (device, inode) and confirmed by its
  first-line fingerprint and a hash of the 32 bytes before the offset
  (Fluent Bit's offset marker); if it became ``@….s`` it is read there; if
  it is gone, a ``Gap`` is emitted and reading continues with the oldest
  file still present after it.
* A bounded queue (``queue_batches``) sits between the followers and the
  consumer: a slow consumer stops the reading; multilog's files wait on disk.
  Batches hold up to ``batch_lines`` lines and about ``batch_bytes`` bytes.

multilog specifics
------------------
``current`` is tracked by inode; when it is renamed, the old descriptor is
read to its end first (multilog wrote and fsync'd everything before the
rename), then the archive with the same inode is marked done. Archives are
ordered by TAI64N name. ``.u`` files may end without a newline (flagged
``partial``). With a ``!processor`` the archive is a new inode holding the
processor's output: when we read the raw lines from ``current`` before the
rotation (the normal case) the archive is recognised by the fingerprint of
its (decompressed) first line — ``!cat`` and ``!gzip`` keep it — or, for an
undecodable output (binary, see ``multilog.content_kind``, or empty), by order,
and skipped: no line is read twice. When we were behind and the raw file is
gone, the archive is read instead: gzip, bzip2 and xz are decompressed (same
fingerprint, so the same event ids); other binary output, or none, is reported
as a Gap. A processor that rewrites text (e.g.
``!tai64nlocal``) cannot be matched: its archives are read again (duplicates,
with other event ids) — documented limitation. ``previous``/``processed``
are transient names; ``processed`` is never read. multilog unlinks
``previous`` before it names ``processed`` as an archive, so while a finished
``processed`` has no ``previous`` (or a listing raced a rotation) only the
archives listed are read, and ``previous``/``current`` wait for the next
listing. Inode numbers of deleted files come back at once (two numbers can
take turns for ``current`` at hundreds of rotations a second): a file opened
as ``previous``/``current`` is taken only if no archive came or went since
the listing it was planned from.

Gaps are exact when every archive is observed when it appears: the watcher
callback lists the directory on every name event (inotify) and records each
new archive's identity and size even while the consumer is blocked, and the
follower takes the queued events before each listing of its own (a long poll
would otherwise pass an archive made and deleted meanwhile before its event
came). With
polling, an archive created and deleted between two polls cannot be named.
multilog deletes the oldest file first, so while any file of the last listing
is still there, every file made since is listed now; when none is, files made
and deleted between the two looks may be missing, how many cannot be told
(nothing ties the oldest archive left to the file before it): that is a Gap
before the oldest archive left, never exact: of unknown size, or at least the
size of a ``current`` we had not read (see ``_note_break``).

runit's svlogd and s6's s6-log keep the same layout (s6-log rotates through
``previous`` even without a processor). svlogd with a processor renames
``current`` to ``@L.u``, feeds it to the processor, whose output (``@L.t``)
becomes ``@L.s`` under the same label, and unlinks ``@L.u``: a ``.u`` known
under a label gives way to the ``.s`` that comes under it.
"""

from __future__ import annotations

import asyncio
import bisect
import bz2
import contextlib
import errno
import fnmatch
import glob
import hashlib
import logging
import lzma
import math
import os
import resource
import stat
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import accumulate
from operator import add
from typing import Any

from shipper import multilog as ml
from shipper.checkpoint import CheckpointStore, ensure_outside
from shipper.fingerprint import FINGERPRINT_SCAN, fingerprint, fingerprints, legacy_fingerprint
from shipper.reader import open_log_file
from shipper.watcher import (
    IN_CREATE,
    IN_DELETE_SELF,
    IN_MODIFY,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Watcher,
)

log = logging.getLogger("shipper.follower")

CHUNK = 256 * 1024
MARKER_BYTES = 32
HEAD_BYTES = 512
STATE_VERSION = 1
SEEN_MAX = 1000  # archive labels kept in a position (see MultilogFollower._seen)
# Seconds a listing is trusted to name the next archive to read (see _listing_will_do)
LISTING_REUSE = 0.25
CURRENT_LOOK = 0.5  # seconds between looks at a current we are behind (_look_at_current)
PROCESSED_WAIT = 30.0  # seconds a finished `processed` with no `previous` holds reading back
# Seconds a file stays unopenable before the log says so (see _cannot_open)
OPEN_SAY_AFTER = 1.0

F_CONTINUATION = "continuation"
F_PARTIAL = "partial"
F_TRUNCATED = "truncated"

Position = tuple[str, dict[str, Any]]  # (source key, follower state); opaque to callers


@dataclass(slots=True)
class LineBatch:
    source: str
    path: str
    file_id: str | None
    lines: list[bytes]
    offsets: list[int]
    line_flags: dict[int, tuple[str, ...]] | None  # index → the line's flags (F_*)
    position: Position


@dataclass(slots=True)
class Gap:
    source: str
    file: str | None
    bytes_lost: int | None
    exact: bool
    first_time_ns: int | None
    last_time_ns: int | None
    reason: str
    position: Position


Item = LineBatch | Gap


@dataclass(slots=True)
class _Break:
    """Two listings in a row that share no file, names not seen between them (polling):
    multilog rotated and deleted (n limit) all the first one held, so files it made and
    deleted meanwhile were never named. Said as a gap before ``before``, the oldest
    archive of the second listing (None: before the raw files)."""

    before: str | None
    after: str  # the newest file of the first listing, by the name it had then
    unread: int  # bytes of the first listing's raw files never read: lost for sure
    overflow: bool = False  # names were lost by an inotify queue overflow, not by polling


GONE_FORGET = 60.0  # seconds a log directory a glob found may be gone before it is forgotten
FORGOTTEN_MAX = 1000  # positions of forgotten directories kept in the checkpoint
# Files kept for sinks, buffers, state and metrics beside the logs followed (as the
# daemon's FD_HEADROOM): a log is not followed when it would take one of these
FD_RESERVE = 64


def _drained(f: Any) -> bool:
    """Whether a follower has read all its open file holds (its directory may be gone)."""
    r = f.reader
    if r is None:
        return True
    try:
        return os.fstat(r.fd).st_size <= r.raw_pos
    except (OSError, AttributeError):
        return True


def marker(tail: bytes) -> str:
    return hashlib.blake2b(tail, digest_size=8).hexdigest()


def _decompressor(kind: str) -> Any:
    if kind == ml.GZIP:
        return zlib.decompressobj(wbits=47)
    if kind == ml.BZIP2:
        return bz2.BZ2Decompressor()
    if kind == ml.XZ:
        return lzma.LZMADecompressor()
    return None


def decode_head(raw: bytes, kind: str) -> bytes:
    """The first decoded bytes of a (possibly compressed) file head."""
    dec = _decompressor(kind)
    if dec is None:
        return raw
    try:
        return dec.decompress(raw, max(HEAD_BYTES, FINGERPRINT_SCAN))
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        return b""


class _Reader:
    """An open file being read: raw position, decoder, and the line cutter state."""

    __slots__ = ("fd", "ident", "name", "path", "label", "kind", "dec", "raw_pos", "pos", "buf",
                 "head", "file_id", "tail", "skipping", "unsafe", "size_seen", "ready", "join")

    def __init__(self, fd: int, ident: ml.Ident, name: str, path: str, label: str | None,
                 kind: str) -> None:
        self.fd = fd
        self.ident = ident
        self.name = name
        self.path = path
        self.label = label
        self.kind = kind
        self.dec = _decompressor(kind)
        self.raw_pos = 0
        self.pos = 0  # offset of buf[0] in the (decoded) file: a line start
        self.buf = b""  # an incomplete line
        self.head = b""
        self.file_id: str | None = None
        self.tail = b""  # the MARKER_BYTES bytes before pos
        self.skipping = False  # inside a line longer than max_line
        self.unsafe = name.endswith(".u")
        self.size_seen = 0
        self.ready = b""  # decoded bytes not yet cut
        self.join: tuple[bytes, int, str | None, str] | None = None  # fragment to prepend

    def read(self, n: int) -> bytes:
        """Next (decoded) bytes; b"" at the current end of the file."""
        if self.ready:
            data, self.ready = self.ready, b""
            return data
        while True:
            raw = os.pread(self.fd, n, self.raw_pos)
            self.raw_pos += len(raw)
            if self.raw_pos > self.size_seen:
                self.size_seen = self.raw_pos
            if self.dec is None or not raw:
                return raw
            out = self._decode(raw)
            if out:
                return out

    def _decode(self, raw: bytes) -> bytes:
        try:
            out = self.dec.decompress(raw)
            # gzip files may hold several members (``cat a.gz b.gz``)
            while self.kind == ml.GZIP and self.dec.eof and self.dec.unused_data:
                rest = self.dec.unused_data
                self.dec = _decompressor(self.kind)
                out += self.dec.decompress(rest)
        except (zlib.error, OSError, EOFError, lzma.LZMAError):
            self.raw_pos = self.size_seen = os.fstat(self.fd).st_size  # corrupt: stop here
            return b""
        return out

    def skip_to(self, offset: int) -> bool:
        """Position at a decoded offset (reading through compressed data). False if short."""
        if self.dec is None:
            size = os.fstat(self.fd).st_size
            if size < offset:
                return False
            start = max(0, offset - MARKER_BYTES)
            self.tail = os.pread(self.fd, offset - start, start)
            self.raw_pos = self.pos = offset
            self.size_seen = max(size, offset)
            return True
        done = 0
        tail = b""
        while done < offset:
            data = self.read(CHUNK)
            if not data:
                return False
            need = offset - done
            if len(data) > need:
                self.ready = data[need:]
                data = data[:need]
            done += len(data)
            tail = (tail + data)[-MARKER_BYTES:]
        self.tail = tail
        self.pos = offset
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fid_now(r: _Reader, complete: bool, settle: bool = True) -> None:
    """Settle r.file_id from the file's first bytes (decoded for compressed files).
    ``settle``: with what is there, even if the id is not settled yet (a file that
    begins with a cut line's tail is known by its next line too: reading on waits
    for it, as its lines do, so the id is the one replay gives)."""
    if r.dec is None:
        r.head = os.pread(r.fd, FINGERPRINT_SCAN, 0)
    else:
        r.head = decode_head(os.pread(r.fd, HEAD_BYTES * 8, 0), r.kind)[:FINGERPRINT_SCAN]
    r.file_id = fingerprint(r.head, complete=complete)
    if r.file_id is None and settle:
        r.file_id = fingerprint(r.head, complete=True)


def cut_lines(r: _Reader, data: bytes, max_line: int
              ) -> tuple[list[bytes], list[int], list[int]]:
    """Split ``data`` (following r.buf) into complete lines; keep the rest in r.buf.

    Returns (lines, offsets, indexes of lines cut at max_line). Memory is bounded
    by the chunk and max_line; the split and the offsets run in C.
    """
    if r.buf:
        data = r.buf + data
    base = r.pos
    start = 0
    lines: list[bytes] = []
    offsets: list[int] = []
    cut: list[int] = []
    if r.skipping:
        nl = data.find(b"\n")
        if nl < 0:
            r.tail = (r.tail + data[-MARKER_BYTES:])[-MARKER_BYTES:]
            r.pos = base + len(data)
            r.buf = b""
            return lines, offsets, cut
        start = nl + 1
        r.skipping = False
    end = data.rfind(b"\n")
    if end >= start:
        lines = data[start:end].split(b"\n")
        offs = accumulate(map(len, lines), initial=base + start)
        offsets = list(map(add, offs, range(len(lines))))
        consumed = end + 1
    else:
        consumed = start
    rest = data[consumed:]
    if len(rest) > max_line:
        cut.append(len(lines))
        lines.append(rest[:max_line])
        offsets.append(base + consumed)
        consumed = len(data)
        rest = b""
        r.skipping = True
    if consumed >= MARKER_BYTES:
        r.tail = data[consumed - MARKER_BYTES:consumed]
    elif consumed:
        r.tail = (r.tail + data[:consumed])[-MARKER_BYTES:]
    r.pos = base + consumed
    r.buf = rest
    return lines, offsets, cut


class _FollowerBase:
    """Batch assembly shared by the multilog and plain-file followers."""

    def __init__(self, key: str, batch_lines: int, batch_bytes: int, max_line: int,
                 chunk: int) -> None:
        self.key = key
        self.batch_lines = batch_lines
        self.batch_bytes = batch_bytes
        self.max_line = max_line
        self.chunk = chunk
        self.reader: _Reader | None = None
        self.warnings: list[str] = []
        self.gaps = 0
        self._last_line_ns: int | None = None  # the label of the last line read, if it had one
        self.more = False  # the last poll stopped at max_items with data left
        # Takes the watcher's queued events (the source sets it): called before a listing
        self.catch_up: Callable[[], None] | None = None
        self._out: list[Item] = []
        self._b_lines: list[bytes] = []
        self._b_offsets: list[int] = []
        self._b_flags: dict[int, tuple[str, ...]] = {}
        self._b_bytes = 0
        self._b_reader: _Reader | None = None
        self._b_full = False
        # archives the n limit deleted unread, one after another, since the first said:
        # one line for the run (a shipper SIGSTOPped for 8 s at 1,000 lines/s logged 47)
        self._nlimit_run: list[str] = []

    def taken(self) -> list[Item]:
        """The items the last ``poll`` produced, also when it raised part way."""
        return list(self._out)

    def _warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)
        del self.warnings[:-100]

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _reader_unread(self) -> int:
        """Bytes of the file being read that are not read yet."""
        r = self.reader
        if r is None:
            return 0
        try:
            return max(0, os.fstat(r.fd).st_size - r.raw_pos)
        except OSError:
            return 0

    def _file_state(self, r: _Reader, live: bool) -> dict[str, Any]:
        return {"name": r.name, "dev": r.ident[0], "ino": r.ident[1], "fid": r.file_id,
                "off": r.pos, "mk": marker(r.tail) if r.tail is not None else "", "lab": r.label, "size": r.size_seen,
                "skip": r.skipping, "live": live, "kind": r.kind}

    def _end_nlimit_run(self) -> None:
        run, self._nlimit_run = self._nlimit_run, []
        if len(run) > 1:
            self._warn(f"{self.key}: gap: {len(run) - 1} more archive(s) after it, {run[1]} .. "
                       f"{run[-1]}: deleted by multilog before they were read (n limit)")

    def _flush(self) -> None:
        r = self._b_reader
        if r is not None and self._b_lines:
            if r.file_id is None:  # lines to go out: their id is what the file has now
                fid_now(r, complete=False)
            if self._nlimit_run:
                self._end_nlimit_run()
            self._out.append(LineBatch(self.key, r.path, r.file_id, self._b_lines, self._b_offsets,
                                       self._b_flags or None, (self.key, self.state())))
            last = self._b_lines[-1]
            if last[:1] == b"@":
                t = ml.label_time_ns(last[:25].decode("ascii", "replace"))
                if t is not None:
                    self._last_line_ns = t
        self._b_lines, self._b_offsets, self._b_flags = [], [], {}
        self._b_bytes = 0
        self._b_reader = None
        self._b_full = False

    def _emit_single(self, path: str, file_id: str | None, line: bytes, offset: int,
                     flags: tuple[str, ...], state: dict[str, Any]) -> None:
        self._flush()
        self._out.append(LineBatch(self.key, path, file_id, [line], [offset], {0: flags},
                                   (self.key, state)))

    def _emit_gap(self, file: str | None, bytes_lost: int | None, exact: bool, reason: str,
                  first_ns: int | None = None, last_ns: int | None = None, nlimit: bool = False) -> None:
        """A Gap record; ``nlimit``: an archive the n limit deleted unread (a run of them
        is said in two lines, see _end_nlimit_run)."""
        self._flush()
        if first_ns is not None and self._last_line_ns is not None and self._last_line_ns < first_ns:
            # From the last line read: a line multilog stamped just before a rotation can
            # land in the file after it, with a time before that rotation's label
            first_ns = self._last_line_ns
        self.gaps += 1
        if nlimit:
            self._nlimit_run.append(file or "?")
        elif self._nlimit_run:
            self._end_nlimit_run()
        if len(self._nlimit_run) <= 1:  # the first of a run is said as it comes
            self._warn(f"{self.key}: gap: {file or '?'}: {reason}")
        self._out.append(Gap(self.key, file, bytes_lost, exact, first_ns, last_ns, reason,
                             (self.key, self.state())))

    def _read_batch(self, r: _Reader, live: bool, max_items: int) -> bool:
        """Read r into batches until EOF (True) or max_items (False)."""
        if self._b_reader is not r:
            self._flush()
            self._b_reader = r
        while len(self._out) < max_items:
            data = r.read(self.chunk)
            if not data:
                if r.file_id is None and not live:
                    fid_now(r, complete=True)
                return True
            if self._b_full:
                # A full batch waits until more data shows the file goes on: at the end
                # of a finished file it is flushed after the file is accounted for.
                self._split_flush()
                self._b_reader = r
            lines, offsets, cut = cut_lines(r, data, self.max_line)
            if not lines:
                continue
            if r.file_id is None:
                fid_now(r, complete=False, settle=False)  # see _flush
            if r.join is not None:
                self._join_first(r, lines, offsets, cut)
                if not lines:
                    continue
            n0 = len(self._b_lines)
            for i in cut:
                self._b_flags[n0 + i] = (F_TRUNCATED,)
            self._b_lines += lines
            self._b_offsets += offsets
            self._b_bytes += len(data)
            if len(self._b_lines) >= self.batch_lines or self._b_bytes >= self.batch_bytes:
                self._b_full = True
        return False

    def _split_flush(self) -> None:
        """Flush whole batches of at most batch_lines lines."""
        r = self._b_reader
        lines, offsets, flags = self._b_lines, self._b_offsets, self._b_flags
        n = self.batch_lines
        while len(lines) > n:
            # a full batch that ends before the last cut line: position = start of the next line
            head_flags = {i: f for i, f in flags.items() if i < n} or None
            assert r is not None
            if r.file_id is None:
                fid_now(r, complete=False)
            first = max(0, n - 32)
            context = b"\n".join(lines[first:n]) + b"\n"
            if offsets[n] - offsets[first] != len(context):
                context = b""  # a cut line in the way: no exact marker
            st = self._state_at(r, offsets[n], context)
            self._out.append(LineBatch(self.key, r.path, r.file_id, lines[:n], offsets[:n],
                                       head_flags, (self.key, st)))
            lines, offsets = lines[n:], offsets[n:]
            flags = {i - n: f for i, f in flags.items() if i >= n}
        self._b_lines, self._b_offsets, self._b_flags = lines, offsets, flags
        self._flush()

    def _state_at(self, r: _Reader, offset: int, context: bytes) -> dict[str, Any]:
        """State as if r had consumed exactly up to ``offset``; ``context`` = bytes before it."""
        saved = (r.pos, r.tail, r.skipping)
        r.pos, r.skipping = offset, False
        exact = len(context) >= MARKER_BYTES or len(context) == offset
        r.tail = context[-MARKER_BYTES:] if exact else None  # type: ignore[assignment]
        try:
            return self.state()
        finally:
            r.pos, r.tail, r.skipping = saved

    def _join_first(self, r: _Reader, lines: list[bytes], offsets: list[int],
                    cut: list[int]) -> None:
        """r starts with the unstamped tail of the previous file's last line: join them."""
        assert r.join is not None
        frag, frag_off, frag_fid, frag_path = r.join
        if offsets[0] != 0:
            return
        r.join = None
        self._clear_carry_state()
        joined = frag + lines[0]
        # cut here or, the tail alone, by cut_lines: the parser sees max_line bytes at
        # most and cannot tell, so the flag is given here
        flags = ((F_CONTINUATION, F_TRUNCATED) if len(joined) > self.max_line or cut[:1] == [0]
                 else (F_CONTINUATION,))
        joined = joined[:self.max_line]
        if len(lines) > 1:
            st = self._state_at(r, offsets[1], lines[0] + b"\n")
        else:
            st = self.state()
        self._emit_single(frag_path, frag_fid, joined, frag_off, flags, st)
        self._b_reader = r
        del lines[0], offsets[0]
        for j in range(len(cut)):
            cut[j] -= 1
        while cut and cut[0] < 0:
            cut.pop(0)

    def _clear_carry_state(self) -> None:
        pass


def _raw_entry(directory: str, name: str) -> ml.Entry | None:
    """``current`` or ``previous`` as it is now, with its first line's fingerprint: an
    inode number alone may be one we read under before (reused at once at high rates:
    taken for that file, a new current was skipped after a restart)."""
    path = os.path.join(directory, name)
    try:
        st = os.stat(path, follow_symlinks=name != "current")
    except OSError:
        return None
    fid = old = None
    if st.st_size and stat.S_ISREG(st.st_mode):
        got = _read_head(path, FINGERPRINT_SCAN)
        if got is not None and got[0] == (st.st_dev, st.st_ino):  # not rotated meanwhile
            fid, old = fingerprints(got[2], complete=False)
    return ml.Entry(name, st.st_dev, st.st_ino, st.st_size, fid, old)


def _name_of(directory: str, ident: ml.Ident) -> str | None:
    """The name ``ident`` has in ``directory`` now (None: none, or it cannot be listed)."""
    try:
        with os.scandir(directory) as it:
            for e in it:
                if e.inode() == ident[1] and e.stat(follow_symlinks=False).st_dev == ident[0]:
                    return e.name
    except OSError:
        pass
    return None


def _read_head(path: str, n: int = HEAD_BYTES * 8) -> tuple[ml.Ident, int, bytes] | None:
    try:
        fd = open_log_file(path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino), st.st_size, os.pread(fd, n, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


class MultilogFollower(_FollowerBase):
    """Follows one multilog directory. Synchronous core; ``poll`` does the reading.

    ``state`` is a position's state from a previous run (None: ``start`` applies).
    """

    def __init__(self, directory: str, state: dict[str, Any] | None = None, *, start: str = "end",
                 key: str | None = None, batch_lines: int = 1024, batch_bytes: int = 256 << 10,
                 max_line: int = 1 << 20, chunk: int = CHUNK, known_cap: int = 10000) -> None:
        if start not in ("end", "current", "all"):
            raise ValueError(f"start must be end, current or all, not {start!r}")
        directory = os.path.abspath(directory)
        super().__init__(key or directory, batch_lines, batch_bytes, max_line, chunk)
        self.dir = directory
        self.start = start
        self.known: dict[str, ml.Known] = {}
        self.listing = ml.Listing()
        # archives of the last listing deleted unread since (files, bytes): unread_bytes
        self.deleted_unread = (0, 0)
        self.done: str | None = None
        self.pending: list[ml.Pending] = []
        self.live = False
        self.known_cap = known_cap
        self._resume = state
        self._started = False
        self._finished: ml.Ident | None = None
        self._finished_fid: str | None = None
        self._carry: tuple[bytes, int, str | None, str] | None = None
        self._carry_state: dict[str, Any] | None = None
        self._replans = 0
        self._open_error: str | None = None
        self._open_errno: int | None = None
        # files we could not open: since when (time.monotonic()), and those said in the log
        self._unopenable: dict[str, float] = {}
        self._unopenable_said: set[str] = set()
        # Why the directory cannot be listed (None: it can). Meanwhile nothing is taken
        # for deleted: an unreadable or renamed-away directory is not an empty one.
        self._list_error: str | None = None
        self._current_away: str | None = None  # current missing, not rotated: warned once
        self._away_since: float | None = None  # since when current is missing (monotonic)
        # The newest archive at or below ``done`` there when the position was saved: while
        # it is there, multilog (which deletes the oldest first) deleted nothing after it
        # while we were stopped. None: none known, or said already.
        self._anchor: str | None = None
        self._processed_seen: tuple[tuple[int, int, int], float] | None = None  # see _processed_ready
        # Archive labels present at the last listing (None: not listed yet). An archive
        # labelled at or below ``done`` that was not there is new: the clock went back.
        # Those at or below ``done`` go into the position (the newest SEEN_MAX), so a
        # restart tells them from archives made while we were stopped.
        self._seen: set[str] | None = None
        self._seen_floor: str | None = None  # older than what the position kept: seen
        self._seen_version = 0  # changes with _seen
        self._seen_sorted: tuple[int, list[str]] = (-1, [])  # (_seen_version, sorted(_seen))
        # Labels above ``done`` already read: ``done`` was moved back below them when
        # the clock went back (see _clock_went_back); kept in the position.
        self._ahead: set[str] = set()
        self._listed_at = -math.inf  # time.monotonic() of the last listing
        self._named = 0  # archives named by the watcher's events: a count, to see new ones
        self.skipped_bytes = 0  # skipped at start for want of a position (see _say_skipped)
        # Why there is no saved position though a previous run left state (set by the
        # source; None: a first start): what start_position skips is said then
        self.no_position: str | None = None
        # The directory's (dev, ino) at the last listing: another one means it was removed
        # (rm -rf) and made again, and what it held unread went with it
        self._dir_ident: ml.Ident | None = None
        # the (dev, ino) the path named before the one listed now: ``mv smtpd smtpd.old``
        # and smtpd made again, its reader still in smtpd.old (see _Source._renamed_away)
        self.dir_before: ml.Ident | None = None
        self._gone_with_dir: set[str] = set()  # archive labels removed with the directory
        # inotify said the directory was deleted (its inode number may come back at once
        # for the new one, so (dev, ino) alone does not tell)
        self._dir_deleted = False
        self._replaced = False  # removed and made again, not yet compared (_note_vanished)
        self._cur_seen: ml.Entry | None = None  # current at the last listing that had one
        self._cur_seen_labels: frozenset[str] = frozenset()  # archives known then
        self._cur_looked = -math.inf  # time.monotonic() of the last _look_at_current
        # a current made since the last listing (inotify's create), and written to
        self._cur_unlisted = False
        self._cur_written = False
        self._unlisted_at_removal = False  # so when the directory was removed
        # a current gone unread without being archived: (name, bytes at least, why), said
        # as gap records at the next plan (found by a listing, maybe outside poll)
        self._vanished: list[tuple[str, int | None, str]] = []
        # Whether every archive made is named to on_change as it appears (an inotify watch
        # on the directory; set by the source; None: as long as on_change has named one).
        # Else (polling) only listings name archives, and two listings in a row that
        # share no file are a _Break.
        self.names_seen: Callable[[], bool] | None = None
        self._named_by_event = False  # on_change named an archive
        # an inotify queue overflow since the last look: the archives known then
        self._events_lost: frozenset[str] | None = None
        # (archive labels, current, previous) of the last listing that held any file
        self._last_look: tuple[frozenset[str], ml.Entry | None, ml.Entry | None] | None = None
        self._breaks: list[_Break] = []  # oldest first, said as gaps by _say_breaks

    # -- observation (cheap; also called from the watcher callback) --------

    def on_change(self, name: str | None, mask: int = 0) -> None:
        """Watcher callback: list the directory on name events, so archives are seen
        (and sized) as they appear, even while the consumer is blocked."""
        if name is None:
            if mask & IN_Q_OVERFLOW:
                # events were dropped: this look must tell, as a poll does, whether
                # files were made and deleted meanwhile, never named (_note_break);
                # those named before it count as looked at
                self._events_lost = frozenset(self.known)
            if mask & IN_DELETE_SELF:
                self._dir_deleted = True
                # later events are the new directory's
                self._unlisted_at_removal = self._cur_unlisted and self._cur_written
                self._cur_unlisted = self._cur_written = False
            self.observe()
        elif name == "current":
            if mask & IN_CREATE:  # a rotation's new current, not listed yet
                self._cur_unlisted, self._cur_written = True, False
            elif mask & IN_MODIFY and self._started:
                self._cur_written = True
                self._look_at_current()
        elif mask & (IN_CREATE | IN_MOVED_TO) and ml.is_archive(name):
            label = ml.archive_label(name)
            if name[-1] == "u" and os.path.lexists(os.path.join(self.dir, label + ".s")) \
                    and _crashed(self.dir, name):
                label = ml.leftover_label(label)
            self._named_by_event = True
            if (label not in self.known and label not in self._ahead
                    and (self.done is None or label > self.done)):
                # Seen here, not only by the next listing: ``done`` may pass it before
                # then. (One at or below ``done`` is left to the listing, which tells
                # that the clock went back.)
                if self._seen is not None:
                    self._seen.add(label)
                    self._seen_version += 1
                self._named += 1
                # deleted before we could look (a busy machine, a tiny n): named, size unknown
                k = self._inspect(name) or ml.Known(name, (0, 0), None, None, ml.TEXT)
                if k is not None:
                    self.known[label] = k
                    if len(self.known) > self.known_cap:
                        self._cap_known()

    def observe(self) -> None:
        """List the directory; record new archives (identity, size, fingerprint).

        ``current`` is stat'ed before the listing, so a file rotated out of it
        is in the listing (as ``previous`` or an archive); a ``previous`` that
        vanishes between listing and stat means a rotation ran meanwhile: list
        again.
        """
        for _ in range(10):
            if self._observe_once():
                break
        if len(self.known) > self.known_cap:
            self._cap_known()

    def _observe_once(self) -> bool:
        listed_at = time.monotonic()
        listing = ml.Listing()
        listing.current = _raw_entry(self.dir, "current")
        try:
            names = os.listdir(self.dir)
            dst = os.stat(self.dir)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if self._list_error != why:
                self._warn(f"{self.key}: cannot list the directory: {why}; waiting (nothing "
                           "in it is taken for deleted meanwhile)")
            self._list_error = why
            return True  # the last listing stays: what it lists is still there, as far as we know
        if self._list_error is not None:
            log.info("%s: the directory can be listed again", self.key)
            self._list_error = None
        if listing.current is not None:
            # current rotated between its stat and the listing: with a processor (svlogd's
            # !gzip, done meanwhile on a loaded machine) its archive is a new inode, listed
            # already, and the next listing took the old current for gone: list again
            try:
                st = os.stat(os.path.join(self.dir, "current"), follow_symlinks=False)
            except OSError:
                return False
            if (st.st_dev, st.st_ino) != listing.current.ident:
                return False
        present: set[str] = set()
        newcomers: list[str] = []
        s_labels = {n[:25] for n in names if n[-2:] == ".s"}
        for name in names:
            kind = ml.classify(name)
            if kind in (ml.ARCHIVE_S, ml.ARCHIVE_U):
                label = ml.archive_label(name)
                if kind == ml.ARCHIVE_U and label in s_labels and _crashed(self.dir, name):
                    label = ml.leftover_label(label)
                present.add(label)
                if label in self._ahead:
                    continue  # read before the clock went back
                if self.done is not None and label <= self.done:
                    if (self._seen is not None and label not in self._seen
                            and (self._seen_floor is None or label > self._seen_floor)):
                        newcomers.append(label)
                    continue  # accounted for already
                k = self.known.get(label)
                if k is None or (name[-1] == "s" and k.name[-1] == "u" and k.name != name):
                    # (svlogd with a processor: @L.u is the processor's input, and its
                    # output, @L.s, replaces it under the same label: read that one)
                    got = self._inspect(name)
                    if got is None:
                        if k is None:
                            continue  # deleted meanwhile (n limit)
                    else:
                        k = self.known[label] = got
                listing.archives[label] = ml.Entry(name, k.ident[0], k.ident[1], k.size, k.file_id,
                                                   k.old_id)
            elif kind == ml.PREVIOUS:
                listing.previous = _raw_entry(self.dir, name)
                if listing.previous is None:
                    return False  # archived meanwhile: the listing is stale
            elif kind == ml.PROCESSED:
                ready = self._processed_ready(name)
                if ready is None:
                    return False  # renamed meanwhile: list again to see its archive
                listing.processed = ready
        listing.archive_names = _archive_names(names)
        # a finished processed without previous: multilog names it an archive next
        listing.rotating = listing.processed and listing.previous is None
        if listing.previous is not None or listing.processed:
            # previous is stat'ed after the listing: a processor may have finished and
            # a later rotation made a new previous meanwhile, with archives this
            # listing lacks (reading that previous first would put it before them).
            # Any such change adds an archive name: then only the archives listed are
            # read now (they are older than anything new), and the raw files wait for
            # the next listing.
            try:
                again = os.listdir(self.dir)
            except OSError:
                again = names
            if _archive_names(again) != listing.archive_names:
                listing.rotating = True
        self._seen, self._seen_floor = present, None
        self._seen_version += 1
        if newcomers:
            self._clock_went_back(min(newcomers), present - set(newcomers))
            return False  # list again, with the new archives after ``done``
        self._note_break(listing, present, (dst.st_dev, dst.st_ino))  # before _note_vanished
        self._note_vanished(listing, (dst.st_dev, dst.st_ino))
        self.listing = listing
        self._listed_at = listed_at
        if self._ahead:  # bounded: gone (deleted by the n limit) or passed by ``done``
            done = self.done
            self._ahead = {lb for lb in self._ahead if lb in present and (done is None or lb > done)}
        return True

    def _note_break(self, new: ml.Listing, labels: set[str], dir_ident: ml.Ident) -> None:
        """Compare the last listing with ``new`` when archive names reach us only by
        listings (polling; inotify falls back to it on file systems without events).
        multilog deletes the oldest file first, so the files of a listing are a run of
        the files it made, with no hole: if any file of the last listing is still there,
        every file made since is there too, listed (and sized) now. If none is, multilog
        rotated and deleted them all meanwhile, and files it made after the newest of
        them may have gone too, never named: how many cannot be seen (its archive labels
        are rotation times, and nothing ties the oldest archive left to the file before
        it). Found by a tester: at poll 1 s, n3, a burst of 6.8 MB made and deleted three
        1 MB archives between two looks while the reading was paused: 3,099 lines lost
        without a word. Said as a gap (_say_breaks) before ``new``'s oldest archive."""
        old = self._last_look
        if not (labels or new.current is not None or new.previous is not None):
            return  # nothing there (current renamed aside, between runs): wait and see
        self._last_look = (frozenset(labels), new.current, new.previous)
        named, self._events_lost = self._events_lost, None
        overflow = named is not None
        seen = self.names_seen() if self.names_seen is not None else self._named_by_event
        if old is None or not self._started or (seen and not overflow):
            return
        if self._dir_deleted or (self._dir_ident is not None and dir_ident != self._dir_ident):
            return  # removed and made again: _note_vanished says what went with it
        old_labels, old_cur, old_prev = old
        if named:
            old_labels = old_labels.union(named)
        if not labels or old_labels & labels:
            # none at all (deleted by hand, not multilog's rotation: _note_vanished), or
            # an archive of the last listing is still there: no hole
            return
        raws = [e for e in (old_cur, old_prev) if e is not None]
        now = [e for e in (new.current, new.previous, *new.archives.values()) if e is not None]
        for e in raws:
            if any(ml.same_raw(e.ident, e.file_id, n) for n in now) or (
                    e.file_id is not None and any(a.file_id == e.file_id for a in new.archives.values())):
                return  # still there, or archived (a processor's output: the same first line)
            other = _name_of(self.dir, e.ident)
            if other is not None and ml.classify(other) == ml.OTHER:
                return  # renamed aside by hand
        r = self.reader

        def ours(e: ml.Entry) -> bool:  # read, being read, or archived under a name we saw
            if r is not None and ml.same_raw(r.ident, r.file_id, e):
                return True
            if self._finished is not None and ml.same_raw(self._finished, self._finished_fid, e):
                return True
            return any(ml.same_raw(p.ident, p.file_id, e) for p in self.pending) or any(
                k.ident == e.ident and (k.file_id is None or e.file_id is None or k.file_id == e.file_id)
                for k in self.known.values())

        unread = sum(e.size for e in raws if not ours(e))
        after = raws[0].name if raws else f"{max(old_labels)}.s"
        before = min(labels)
        last = self._breaks[-1] if self._breaks else None
        if last is not None and (last.before is None or last.before not in labels):
            # what followed the last break is gone too: one hole, before the files here
            last.before, last.unread = before, last.unread + unread
            last.overflow |= overflow
        else:
            self._breaks.append(_Break(before, after, unread, overflow))
            del self._breaks[:-1000]  # bounded, whatever happens to the directory

    def _say_breaks(self, upto: str | None) -> None:
        """The gaps of the breaks (see _note_break) before archive ``upto`` (None: all of
        them, raw files are next)."""
        while self._breaks and (upto is None or (self._breaks[0].before is not None
                                                 and self._breaks[0].before <= upto)):
            b = self._breaks.pop(0)
            self._emit_carry()  # the file after the hole is not known to continue its line
            last_ns = None
            if b.before is not None:
                k = self.known.get(b.before)
                got = _read_head(os.path.join(self.dir, k.name), 25) if k is not None else None
                # lost lines come before the first line of the file after the hole
                last_ns = ((ml.label_time_ns(got[2].decode("ascii", "replace")) if got else None)
                           or ml.label_time_ns(b.before))
            where = f"{b.before}.s" if b.before is not None else "current"
            if b.unread:
                how = (f"{b.after} ({b.unread} bytes when last looked at) was deleted unread, and "
                       f"the files multilog made after it and before {where} may be lost too: "
                       f"at least {b.unread} bytes lost")
            else:
                how = (f"the files multilog made after {b.after} (the last file read) and before "
                       f"{where} may be lost (how much, if anything, is not known)")
            why = ("the inotify queue overflowed (events were lost), so" if b.overflow
                   else "watching by polling,")
            self._emit_gap(None, b.unread or None, False,
                           f"{why} the follower could not see which files multilog "
                           "made and deleted between two looks: it rotated and deleted (n limit) "
                           f"every file of the first; {how}",
                           self._last_line_ns or ml.label_time_ns(self.done), last_ns)

    def _note_vanished(self, new: ml.Listing, dir_ident: ml.Ident) -> None:
        """Compare the ``current`` last listed with ``new``'s: one we never read that is
        gone without becoming ``previous`` or an archive (the directory removed and made
        again, or, with no inotify, rotated and its archive deleted between two listings)
        lost its lines: at least its size as last seen. Found by fault injection (rm -rf
        of a directory while the reading was paused, a new multilog in its place): 87,740
        bytes of the old current gone without a word."""
        if self._dir_deleted or (self._dir_ident is not None and dir_ident != self._dir_ident):
            self._replaced = True
            if self._dir_ident is not None and dir_ident != self._dir_ident:
                self.dir_before = self._dir_ident  # renamed away, maybe (_Source._take_over)
            done = self.done
            # those there at the last listing; others may have gone by the n limit before
            self._gone_with_dir |= {lb for lb in self.listing.archives
                                    if (done is None or lb > done) and lb not in new.archives}
        self._dir_ident, self._dir_deleted = dir_ident, False
        cur = new.current
        if cur is None:
            return  # missing (renamed aside, multilog not started yet): wait and see
        old, self._cur_seen = self._cur_seen, cur
        unlisted, self._unlisted_at_removal = self._unlisted_at_removal, False
        self._cur_unlisted = False
        labels, self._cur_seen_labels = self._cur_seen_labels, frozenset(new.archives).union(self.known)
        replaced, self._replaced = self._replaced, False
        if old is None or not self._started:
            return
        if cur.ident == old.ident and (
                not replaced or (old.file_id is not None and cur.file_id == old.file_id)):
            return  # the same file

        def ours(ident: ml.Ident, fid: str | None) -> bool:
            # inode numbers come back at once: a file deleted before with this one is not it
            return ident == old.ident and (fid is None or old.file_id is None or fid == old.file_id)

        r = self.reader
        if (r is not None and ours(r.ident, r.file_id)) or ours(self._finished or (0, 0), self._finished_fid) \
                or any(ours(p.ident, p.file_id) for p in self.pending) \
                or any(ours(k.ident, k.file_id) for k in self.known.values()):
            # being read (through its descriptor), read already, or archived (read from
            # there, or its deletion is a gap of its own). A current made after it and
            # written, never listed, went with a removed directory: how much, unknown
            if replaced and unlisted:
                self._vanished.append(("current", None, "the log directory was removed and made "
                                       "again before this file was read; it was made and written "
                                       "after our last look: how much it held is not known"))
            return
        if not replaced:
            if any(e is not None and e.ident == old.ident
                   for e in (new.previous, *new.archives.values())):
                return  # rotated
            done = self.done
            if new.processed or new.rotating or any(
                    lb not in labels for lb in (*new.archives, *self.known)
                    if done is None or lb > done):
                return  # a new archive may be it (a processor's output has another inode)
            if _name_of(self.dir, old.ident) is not None:
                return  # still there under another name
            why = ("gone without being archived (deleted by hand, or rotated and its archive "
                   f"deleted by the n limit before we looked): at least {old.size} bytes lost")
        else:
            why = ("the log directory was removed and made again before this file was read: "
                   f"at least {old.size} bytes lost (its size when last looked at)")
        if old.size:
            self._vanished.append(("current", old.size, why))

    def _look_at_current(self) -> None:
        """As current is written, the directory is listed now and then (CURRENT_LOOK), not
        only by the safety poll, for when the reading is paused: if the directory is removed,
        the gaps then say what it held (at a fast rotation, the current removed had never
        been listed: 60,610 bytes lost without a word, and the archives made since the
        last listing were said deleted by the n limit)."""
        now = time.monotonic()
        if now - self._cur_looked >= CURRENT_LOOK:
            self._cur_looked = now
            self.observe()

    def _dir_replaced_now(self) -> bool:
        """Whether the directory was removed since the last listing (made again or not)."""
        if self._dir_deleted:
            return True
        try:
            st = os.stat(self.dir)
        except OSError:
            return False  # unreadable or renamed away: not known to be removed
        return self._dir_ident is not None and (st.st_dev, st.st_ino) != self._dir_ident

    def _processed_ready(self, name: str) -> bool | None:
        """Whether ``processed`` is a processor's finished output (multilog made it u+x)
        that becomes an archive next; None: gone meanwhile. Believed for
        PROCESSED_WAIT seconds at most: a multilog killed in that moment renames it
        only when it starts again (and writes nothing till then)."""
        try:
            st = os.stat(os.path.join(self.dir, name), follow_symlinks=False)
        except OSError:
            return None
        if not st.st_mode & stat.S_IXUSR:
            return False  # still being written: previous is there (a rerun keeps the inode)
        # Timed from when it is finished (chmod u+x changed its ctime), so a processor
        # that ran or failed for long still gets the full wait, and so does a later
        # processed that reuses the inode number
        now = time.monotonic()
        key = (st.st_dev, st.st_ino, st.st_ctime_ns)
        if self._processed_seen is None or self._processed_seen[0] != key:
            self._processed_seen = (key, now)
        return now - self._processed_seen[1] < PROCESSED_WAIT

    def _clock_went_back(self, label: str, accounted: set[str]) -> None:
        """An archive labelled at or below ``done`` appeared: multilog's clock went back
        (after running ahead), so labels no longer follow the order of rotations.
        ``done`` moves to just below it, so it and the archives after it are read; those
        already read (``accounted``, labelled above it and at or below the old ``done``)
        are skipped."""
        before = ml.label_before(label)
        self._ahead |= {lb for lb in accounted if before < lb <= (self.done or "")}
        self._warn(f"{self.key}: the clock went back: new archive {label}.s is labelled before "
                   f"{self.done}, already read; reading it and what follows it")
        self.done = before

    def _inspect(self, name: str) -> ml.Known | None:
        path = os.path.join(self.dir, name)
        got = _read_head(path)
        if got is None:
            try:  # there but unreadable (permissions): known, so it is waited for, not skipped
                st = os.stat(path)
            except OSError:
                return None  # deleted meanwhile (n limit)
            return ml.Known(name, (st.st_dev, st.st_ino), st.st_size, None, ml.TEXT)
        ident, size, head = got
        kind = ml.content_kind(head[:HEAD_BYTES])
        if not size and name[-1] == "s":
            kind = ml.EMPTY  # named when finished: a processor's output of nothing
        text = decode_head(head, kind) if kind in ml.COMPRESSED else head
        fid, old = fingerprints(text[:FINGERPRINT_SCAN], complete=True) if kind != ml.BINARY \
            else (None, None)
        if kind in ml.COMPRESSED and not text:
            fid = old = None
        return ml.Known(name, ident, size, fid, kind, old)

    def _cap_known(self) -> None:
        # Far behind for a long time: forget the oldest deleted archives, as one gap later.
        gone = sorted(lb for lb in self.known if lb not in self.listing.archives)
        for lb in gone[: len(self.known) - self.known_cap]:
            del self.known[lb]

    # -- state --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        if self._carry_state is not None:
            return self._carry_state
        r = self.reader
        st = {"v": STATE_VERSION, "done": self.done,
              "pend": [[p.ident[0], p.ident[1], p.file_id] for p in self.pending],
              "f": self._file_state(r, self.live) if r is not None else None}
        if self._ahead:
            st["ahead"] = sorted(self._ahead)
        seen = self._seen_at_or_below_done()
        if seen:
            st["seen"] = seen
        return st

    def unread_bytes(self) -> int:
        """Bytes in the directory not read yet: the rest of the file being read, the
        archives after it, and ``current`` when we are not at it (0 when caught up).
        Sizes as last seen; a processor's archives count as stored (compressed), those
        of files read already (``!cat``, ``!gzip``: same first line) not at all.

        An archive of the last listing that multilog has deleted since (its ``n`` limit,
        while the reading was paused by a full buffer) is not unread but lost: it counts
        in ``deleted_unread`` (files, bytes), set here, until the next listing makes it a
        gap record; so an alert need not wait for the reading to resume."""
        r = self.reader
        n = self._reader_unread()
        done = self.done
        # not a processor's archive of a file read already (as previous or current):
        # ml.is_ours against every pending file, in sets
        pend = self.pending
        fids = {p.file_id for p in pend if p.file_id is not None}
        idents = {p.ident for p in pend}
        idents_nofid = {p.ident for p in pend if p.file_id is None}
        archives = self.listing.archives
        # what a listing found lost for sure, never named as an archive (polling)
        gone = sum(1 for b in self._breaks if b.unread)
        gone_bytes = sum(b.unread for b in self._breaks)
        for lb, k in self.known.items():
            if k.size and (done is None or lb > done) and (r is None or lb != r.label):
                ours = (k.file_id in fids if k.file_id is not None else k.ident in idents) \
                    or k.ident in idents_nofid
                if r is not None and k.ident == r.ident and k.file_id in (None, r.file_id):
                    ours = True  # the file being read, archived since: counted above, by its fd
                if not ours:
                    # Not only those of the last listing: one named by an inotify event since
                    # (the reading paused, nothing lists) was counted unread after multilog
                    # deleted it (a tester's r8: 6.4 MB unread, 2.7 MB on disk, 0 deleted)
                    entry = archives.get(lb)
                    if not os.path.lexists(os.path.join(self.dir, entry.name if entry else k.name)):
                        gone += 1
                        gone_bytes += k.size
                        continue
                    n += k.size
        self.deleted_unread = (gone, gone_bytes)
        if not self.live:
            with contextlib.suppress(OSError):
                n += os.stat(os.path.join(self.dir, "current")).st_size
        return n

    def _seen_at_or_below_done(self) -> list[str]:
        """The archive labels at or below ``done`` present at the last listing, newest
        SEEN_MAX. A state is taken per batch: the labels are sorted once per listing
        (a sort per file read made catching up on thousands of archives quadratic)."""
        done = self.done
        if done is None or not self._seen:
            return []
        if self._seen_sorted[0] != self._seen_version:
            self._seen_sorted = (self._seen_version, sorted(self._seen))
        labels = self._seen_sorted[1]
        end = bisect.bisect_right(labels, done)
        return labels[max(0, end - SEEN_MAX):end]

    def _clear_carry_state(self) -> None:
        self._carry_state = None

    # -- reading ------------------------------------------------------------

    def poll(self, max_items: int = 8) -> list[Item]:
        """Read what is available, up to about max_items batches/gaps."""
        self._out = []
        if not self._started:
            self._started = True
            if not self._begin():
                self._started = False
                return []
        r = self.reader
        if self.live and r is not None and self._rewritten(r):
            self._reset_current(r, os.fstat(r.fd).st_size, "current rewritten under us (truncated "
                                f"by hand and written again past offset {r.pos}): what "
                                "was written before the truncation and not read is lost; "
                                "reading it again from the start")
        guard = 0
        self._replans = 0
        while len(self._out) < max_items and guard < 10000:
            guard += 1
            r = self.reader
            if r is None:
                if not self._advance():
                    break
                continue
            if r.join is not None and r.pos == 0 and not r.buf and not self._decide_join(r):
                break  # the next file's first bytes are not there yet
            if not self._read_batch(r, self.live, max_items):
                break  # max_items
            if self.live:
                status = self._check_current(r)
                if status == "same":
                    break  # at the end of current: wait for more
                if status == "rotated":
                    self.live = False  # renamed: drain the old inode to its end once more
                continue
            self._finish(r)
        self._flush()
        self.more = len(self._out) >= max_items
        if self._nlimit_run and not self.more:  # caught up: the run is over for now
            self._end_nlimit_run()
        out, self._out = self._out, []
        return out

    def _begin(self) -> bool:
        """Take up the saved position (or the start position). False: not now, try again."""
        st = self._resume
        self._resume = None
        if isinstance(st, dict) and isinstance(st.get("done"), str):
            try:
                st = self._after_clock_step(st)
            except (KeyError, TypeError, ValueError):
                pass  # an unusable position: _resume_from below says so and starts afresh
            self.done = st["done"]  # so the listing does not inspect archives already done
            ahead = st.get("ahead")
            if isinstance(ahead, list):
                self._ahead = {lb for lb in ahead if isinstance(lb, str) and lb > self.done}
            seen = st.get("seen")
            if isinstance(seen, list) and seen and all(
                    isinstance(lb, str) and ml.is_position_label(lb) for lb in seen):
                self._seen = set(seen)
                self._seen_floor = min(seen) if len(seen) >= SEEN_MAX else None
                self._seen_version += 1
                self._anchor = max(seen)
        self.observe()
        if self._list_error is not None or self._checkpointed_current_aside(st):
            self._resume = st  # not now: a position is not taken up against no listing
            return False
        if self.listing.rotating and st is not None:
            # multilog is between unlinking previous and naming its processed output as
            # an archive: the file we were reading may be only in there. Once it is an
            # archive it is found by its fingerprint and read on from our offset.
            self._resume = st
            return False
        if isinstance(st, dict) and isinstance(st.get("done"), str) and self.done != st["done"]:
            st = {**st, "done": self.done}  # moved back: archives made while we were stopped
        if st is not None and isinstance(st, dict) and st.get("v") == STATE_VERSION:
            try:
                if not self._resume_from(st):
                    self._resume = st  # the file is there but cannot be opened: wait for it
                    return False
                return True
            except (KeyError, TypeError, ValueError) as exc:
                self._warn(f"{self.key}: unusable position ({exc}); starting at {self.start}")
                self.done, self.pending, self.reader = None, [], None
        elif st is not None:
            self._warn(f"{self.key}: unusable position; starting at {self.start}")
        self._start_fresh()
        return True

    def _after_clock_step(self, st: dict[str, Any]) -> dict[str, Any]:
        """``st`` with ``done`` moved back if the clock went back while we were stopped.

        multilog names an archive by the time of its rotation. After the clock ran
        ahead (an archive labelled in the future, read and counted done) and was set
        back, the file we were reading may be archived under a label below ``done``,
        and with it the archives after it: "done" would skip them all. Found by its
        identity (and fingerprint), it is read on from our offset, then everything
        labelled after it but the archives the checkpoint says were read.
        """
        f = st.get("f")
        if not isinstance(f, dict) or not int(f.get("off") or 0):
            return st
        ident, fid = (int(f["dev"]), int(f["ino"])), f.get("fid")
        try:
            names = os.listdir(self.dir)
        except OSError:
            return st
        for name in sorted(names):
            if ml.classify(name) not in (ml.ARCHIVE_S, ml.ARCHIVE_U):
                continue
            label = ml.archive_label(name)
            if label > st["done"]:
                break
            try:  # a stat each (at start only); the head only of the one with our inode
                st_a = os.stat(os.path.join(self.dir, name))
            except OSError:
                continue
            if (st_a.st_dev, st_a.st_ino) != ident:
                continue
            got = _read_head(os.path.join(self.dir, name))
            if got is None or got[0] != ident or (
                    fid is not None and fid not in fingerprints(got[2], complete=True)):
                continue
            before = ml.label_before(label)
            # the archives read before the stop (the checkpoint's "seen", labelled after
            # it, up to the old done) are skipped, as a live run skips them: all of them
            # came again (a black-box review: 190 of 200 lines twice after a step of 600 s)
            seen = st.get("seen")
            read = {lb for lb in seen if isinstance(lb, str) and before < lb <= st["done"]} \
                if isinstance(seen, list) else set()
            ahead = st.get("ahead")
            read |= {lb for lb in ahead if isinstance(lb, str)} if isinstance(ahead, list) else set()
            self._warn(f"{self.key}: the clock went back: {name}, which we were reading, is labelled "
                       f"before {st['done']}, already read; reading on from it, and skipping the "
                       f"{len(read)} archives after it read before")
            return {**st, "done": before, "ahead": sorted(read)}
        return st

    def _start_fresh(self) -> None:
        done, what = ml.start_position(self.listing, self.start)
        self.done = done
        for lb in [lb for lb in self.known if done is not None and lb <= done]:
            del self.known[lb]
        prev = self.listing.previous
        if what != "oldest" and prev is not None:
            got = _read_head(os.path.join(self.dir, "previous"))
            if got is not None:
                self.pending.append(ml.Pending(got[0], fingerprint(got[2], complete=True)))
        if what == "oldest" or self.listing.current is None:
            return
        r = self._open("current", None, live=True)
        if r is None:
            return
        off = 0
        if what == "end":
            size = os.fstat(r.fd).st_size
            look = min(size, 1 << 16)
            tail = os.pread(r.fd, look, size - look)
            nl = tail.rfind(b"\n")
            off = size - look + nl + 1 if nl >= 0 else size
            r.skip_to(off)
            r.skipping = nl < 0 and size > 0
            if off:
                fid_now(r, complete=False)
        self._say_skipped(what, off)

    def _say_skipped(self, what: str, off: int) -> None:
        """No saved position though a previous run left state (a checkpoint lost or set
        aside, a directory new to it): what start_position skips, in one warning. Found
        by fault injection: a lost checkpoint with the default "end" skipped what multilog
        wrote while we were stopped without a word."""
        if self.no_position is None or what == "oldest":
            return
        listing = self.listing
        labels = sorted(listing.archives)
        parts = []
        if labels:
            size = sum(e.size or 0 for e in listing.archives.values())
            parts.append(f"{len(labels)} archive(s), {labels[0]}.s .. {labels[-1]}.s ({size} bytes)")
        if listing.previous is not None and listing.previous.size:
            parts.append(f"previous ({listing.previous.size} bytes)")
        if off:
            parts.append(f"current from 0 to offset {off}")
        total = (sum(e.size or 0 for e in listing.archives.values()) + off
                 + (listing.previous.size if listing.previous is not None else 0))
        if total:
            self._warn(f"{self.key}: no saved position ({self.no_position}): starting at "
                       f"start_position = \"{self.start}\", skipping the {total} bytes multilog kept "
                       f"(what it wrote while we were stopped is among them, not sent): "
                       f"{', '.join(parts)} (start_position = \"all\" sends what a directory "
                       "holds when it has no position)")
        self.skipped_bytes = total

    def _open(self, name: str, label: str | None, live: bool, kind: str = ml.TEXT
              ) -> _Reader | None:
        path = os.path.join(self.dir, name)
        try:
            fd = open_log_file(path)
        except OSError as exc:
            self._open_error = exc.strerror
            self._open_errno = exc.errno
            return None
        st = os.fstat(fd)
        r = _Reader(fd, (st.st_dev, st.st_ino), name, path, label, kind)
        r.size_seen = st.st_size
        self.reader = r
        self.live = live
        if self._carry is not None:
            r.join = self._carry
            self._carry = None
        return r

    def _resume_from(self, st: dict[str, Any]) -> bool:
        """Take up ``st``. False: the file we were reading is there but cannot be opened
        now (permissions): not taken for gone (a false gap, then read again from its
        start once readable), the position is taken up when it can be."""
        self.done = st["done"]
        self.pending = [ml.Pending((int(d), int(i)), fid, True) for d, i, fid in st["pend"]]
        for lb in [lb for lb in self.known if self.done is not None and lb <= self.done]:
            del self.known[lb]
        f = st["f"]
        if f is None:
            self._done_gone_while_stopped()
            return True
        ident = (int(f["dev"]), int(f["ino"]))
        if int(f["off"]) == 0 and not f.get("skip"):
            # Nothing of that file was consumed: the plan finds it (or its archive) again,
            # without trusting an inode number that may have been reused. If it is gone,
            # whatever it held by then is lost.
            listing = self.listing
            if not any(e is not None and e.ident == ident for e in
                       (listing.current, listing.previous, *listing.archives.values())):
                self._emit_gap(f["name"], None, False,
                               "gone before we read anything of it (we were stopped)",
                               ml.label_time_ns(st["done"]), None)
            elif f.get("live") and listing.current is not None and listing.current.ident == ident:
                # Still `current` by its inode number. But multilog deletes the oldest
                # archive first: if the last archive read (the anchor) is gone, ours was
                # rotated and deleted too, and this `current` is a new file that took
                # its inode number (ext4 reuses them at once): a gap, not a resume.
                self._done_gone_while_stopped()
            return True
        fid, off = f["fid"], int(f["off"])
        if off < 0:  # (a seek there said only "Invalid argument")
            raise ValueError(f"a negative offset, {off}")
        where: list[tuple[str, str | None, bool, str]] = []
        cur, prev = self.listing.current, self.listing.previous
        if cur is not None and cur.ident == ident:
            where.append(("current", None, True, ml.TEXT))
        if prev is not None and prev.ident == ident:
            where.append(("previous", None, False, ml.TEXT))
        for label, e in sorted(self.listing.archives.items()):
            k = self.known.get(label)
            if k is None:
                continue
            if e.ident == ident or (fid is not None and fid in (k.file_id, k.old_id)):
                where.append((e.name, label, False, k.content))
        for name, label, live, kind in where:
            r = self._open(name, label, live, kind)
            if r is None and self._open_errno != errno.ENOENT:
                self._cannot_open(name, f" (to read on from offset {off}; the lines after it wait too)")
                return False
            if r is None:
                continue
            self._opened(name)
            fid_now(r, complete=not live)
            # A file with no id yet (shorter than a first line) is not the one we
            # read `off` bytes of: its inode number was reused after that one was
            # deleted (seen on ext4). Taking it for ours would skip the archives.
            if fid is not None and r.file_id != fid and legacy_fingerprint(
                    r.head, complete=not live) != fid:  # (a position saved by 0.1.0 names it so)
                r.close()
                self.reader = None
                continue
            if fid is not None and r.file_id != fid:
                # named by 0.1.0's id: this file's lines keep the ids 0.1.0 gave them, so
                # those read again after its kill are known to the SIEM as the same
                r.file_id = fid
            if not r.skip_to(off) or (f["mk"] and f["mk"] != marker(r.tail)):
                self._emit_gap(name, None, False,
                               f"file changed under us at offset {off} (truncated or rewritten): "
                               "reading it again from the start")
                r.close()
                r = self._open(name, label, live, kind)
                if r is None:
                    continue
            else:
                r.skipping = bool(f.get("skip"))
            if label is not None:
                r.label = label
            return True
        # The file is gone: report it, then continue after it.
        self.reader = None
        # An archive with its inode number is ours if its fingerprint agrees, or it has
        # none yet and is long enough: an empty .u that reused the number is not
        seen = next((lb for lb, k in sorted(self.known.items())
                     if (k.ident == ident and (fid in (k.file_id, k.old_id) or (
                         k.file_id is None and (k.size or 0) >= off)))
                     or (fid is not None and fid in (k.file_id, k.old_id))), None)
        if seen is not None:  # we saw it archived before it was deleted: exact
            k = self.known[seen]
            self.done = seen
            self._prune()
            self._emit_gap(k.name, (k.size - off) if k.size is not None and k.size >= off else None,
                           k.size is not None,
                           "deleted before it was read to the end (we were stopped or behind)",
                           ml.label_time_ns(st["done"]), ml.label_time_ns(seen))
            return True
        size = f.get("size") or 0
        lost = size - off if size >= off else None
        exact = f.get("lab") is not None and not f.get("live")
        nxt = min((lb for lb in self.listing.archives if self.done is None or lb > self.done),
                  default=None)
        if f.get("lab"):
            self.done = max(self.done or "", f["lab"])
        if not exact:
            # this gap says that later files may be lost too: not again (the anchor's
            # gap, same time range, when a file read before it is gone as well)
            self._anchor = None
        self._emit_gap(f["name"], lost, exact,
                       "deleted before it was read to the end (we were stopped or behind)"
                       + ("" if exact else "; later files may be lost too"),
                       ml.label_time_ns(st["done"]), ml.label_time_ns(nxt))
        return True

    def _checkpointed_current_aside(self, st: Any) -> bool:
        """The saved position is in ``current``, and ``current`` is missing while its
        file is in the directory under another name (renamed aside by hand): wait for
        it rather than take it for gone (a false gap, then the file read twice)."""
        if self.listing.current is not None or not isinstance(st, dict):
            return False
        f = st.get("f")
        if not isinstance(f, dict) or not f.get("live"):
            return False
        try:
            ident = (int(f["dev"]), int(f["ino"]))
        except (KeyError, TypeError, ValueError):
            return False
        name = _name_of(self.dir, ident)
        return name is not None and ml.classify(name) == ml.OTHER

    def _anchor_gone(self) -> bool:
        """Whether the newest archive at or below ``done`` when the position was saved is
        gone: then multilog deleted it while we were stopped, and maybe files made after
        it that we never saw. While it is there, nothing after it was deleted."""
        a = self._anchor
        names = self.listing.archive_names
        return a is not None and f"{a}.s" not in names and f"{a}.u" not in names

    def _done_gone_while_stopped(self) -> None:
        """The position says: read up to and including archive ``done``, nothing after;
        if the anchor is gone, files made after it may be gone unread: a gap."""
        if self.pending or self.done is None or not self.listing.archives or not self._anchor_gone():
            return  # pending files: see plan_next's ``gone``
        self._anchor = None
        self._emit_gap(None, None, False,
                       "files made while we were stopped may have been deleted by multilog "
                       "before we could read them (n limit): the last archive read before the "
                       "stop is gone", ml.label_time_ns(self.done),
                       ml.label_time_ns(min(self.listing.archives)))

    def _check_current(self, r: _Reader) -> str:
        """At the end of the live file: 'same' (wait), 'rotated' (drain, move on) or
        'reset' (truncated by hand: reading it again from 0)."""
        try:
            st = os.stat(os.path.join(self.dir, "current"))
        except OSError as exc:
            return self._current_missing(r, exc)
        self._away_since = None
        if self._current_away is not None:
            log.info("%s: current is back", self.key)
            self._current_away = None
        if (st.st_dev, st.st_ino) != r.ident:
            return "rotated"
        if st.st_size < r.raw_pos:
            # truncated by hand: what was written after our last read is lost
            self._reset_current(r, st.st_size, f"current truncated from {r.raw_pos} to "
                                f"{st.st_size} bytes by hand: reading it again from the start")
            return "reset"
        return "same"

    def _current_missing(self, r: _Reader, exc: OSError) -> str:
        """``current`` cannot be stat'ed. A rotation when our file is gone or where
        multilog's rotation puts it (``previous``, ``processed``, an archive); otherwise
        (renamed aside by hand, the directory unreadable) wait: it is still being
        written, and taking it for done would skip what is written to it meanwhile."""
        where: str | None = None
        if exc.errno == errno.ENOENT:
            try:
                if os.fstat(r.fd).st_nlink == 0:
                    return self._rotated()  # rotated and already deleted (a tiny n)
            except OSError:
                pass
            where = _name_of(self.dir, r.ident)
            if where is not None and ml.classify(where) in (
                    ml.PREVIOUS, ml.PROCESSED, ml.ARCHIVE_S, ml.ARCHIVE_U):
                return self._rotated()
            try:  # unlinked while we looked (a processor's previous, once archived)
                if where is None and os.fstat(r.fd).st_nlink == 0:
                    return self._rotated()
            except OSError:
                pass
        why = (f"renamed to {where}" if where is not None else
               "not in the directory" if exc.errno == errno.ENOENT else exc.strerror or str(exc))
        # Said once it lasts: in a fast rotation the file can be renamed and its archive
        # deleted while we look (a directory scan may miss a name renamed meanwhile)
        now = time.monotonic()
        if self._away_since is None:
            self._away_since = now
        elif self._current_away != why and now - self._away_since >= 1.0:
            self._current_away = why
            self._warn(f"{self.key}: current is missing, and its file was not rotated ({why}); "
                       "waiting for it to come back (its lines are read then)")
        return "same"

    def _rotated(self) -> str:
        self._away_since = None
        return "rotated"

    def _reset_current(self, r: _Reader, size: int, why: str) -> None:
        """Read the live ``current`` again from 0, after a gap record saying why."""
        nr = _Reader(os.dup(r.fd), r.ident, "current", r.path, None, ml.TEXT)
        nr.size_seen = size
        self._flush()
        r.close()
        self.reader = nr
        self._emit_gap("current", None, False, why)

    def _rewritten(self, r: _Reader) -> bool:
        """The live file no longer holds, just before where we are, the bytes we read
        there: it was truncated and written again between two looks (a poll, or a wake
        the consumer was too busy to take). Its size alone cannot tell."""
        tail = r.tail  # the bytes before pos, what we consumed last
        if not tail or r.kind != ml.TEXT or r.pos < len(tail):
            return False
        try:
            return os.pread(r.fd, len(tail), r.pos - len(tail)) != tail
        except OSError:
            return False

    def _finish(self, r: _Reader) -> None:
        """r is read to its end and will not grow: account for it, keep a cut last line.

        The last batch of r is flushed after the accounting, so its position
        says "r is done" (done label / pending), not "somewhere in r": a restart
        then does not look for r, which may be gone by then.
        """
        label = r.label
        if label is None:
            label = next((lb for lb, k in sorted(self.known.items())
                          if k.ident == r.ident and (self.done is None or lb > self.done)
                          and (r.file_id is None or k.file_id in (None, r.file_id))), None)
        unsafe = r.unsafe or (label is not None and self.known.get(label, ml.Known(
            "", (0, 0), 0, None, "")).name.endswith(".u"))
        if r.file_id is None:
            fid_now(r, complete=True)
        goes_on = None  # the line of a fragment, gone through r: it may go on in the next file
        if r.join is not None:  # a file with no newline at all after a fragment
            frag, frag_off, frag_fid, frag_path = r.join
            r.join = None
            if unsafe or r.skipping:
                self._carry_state = None
                self._emit_carried(frag_path, frag_fid, frag, frag_off)
            else:
                # the middle of a line longer than a whole file (the logger's size limit):
                # kept up to max_line + 1 bytes (more says it is cut); the position stays
                # at its start, in the fragment's file (_carry_state)
                goes_on = ((frag + r.buf)[:self.max_line + 1], frag_off, frag_fid, frag_path)
                r.pos += len(r.buf)
                r.buf = b""
        frag = r.buf if not r.skipping else b""
        if frag and not unsafe:
            self._carry_state = self.state()  # resume here until the join is emitted
            self._carry = (frag, r.pos, r.file_id, r.path)
        if label is not None:
            # Archives labelled before `label` not read yet: made after it, so the clock
            # went back. They are read next; this one is read, not to be read again.
            # (With raw files pending, an older label is a processor's output for one
            # of them, not a clock step.)
            unread = [] if self.pending else [
                lb for lb in self.known if lb < label and (self.done is None or lb > self.done)]
            if unread:
                self._warn(f"{self.key}: the clock went back: {min(unread)} is labelled before "
                           f"{label}, which was made earlier; reading it next")
                self._ahead.add(label)
                del self.known[label]
            else:
                self.done = label
                if r.label is None:  # a raw file: older raw files' archives are older too
                    self.pending = []
        else:
            self.pending.append(ml.Pending(r.ident, r.file_id))
            del self.pending[:-1000]  # bounded, whatever happens to the directory
        if goes_on is not None:
            self._carry = goes_on
        self._finished = r.ident
        self._finished_fid = r.file_id
        self.reader = None
        self._flush()
        r.close()
        if frag and unsafe:
            off = r.pos
            r.pos += len(frag)
            self._emit_single(r.path, r.file_id, frag, off, (F_PARTIAL,), self.state())
        self._prune()

    def _prune(self) -> None:
        if self.done is not None:
            for lb in [lb for lb in self.known if lb <= self.done]:
                del self.known[lb]

    def _emit_carry(self) -> None:
        if self._carry is not None:
            frag, off, fid, path = self._carry
            self._carry = None
            self._carry_state = None
            self._emit_carried(path, fid, frag, off)

    def _emit_carried(self, path: str, fid: str | None, frag: bytes, off: int) -> None:
        """A carried fragment that is not joined: a partial line (cut at max_line, flagged,
        when it went through files longer than that)."""
        flags = (F_PARTIAL, F_TRUNCATED) if len(frag) > self.max_line else (F_PARTIAL,)
        self._emit_single(path, fid, frag[:self.max_line], off, flags, self.state())

    def _decide_join(self, r: _Reader) -> bool:
        """Before reading a file that may start with a previous line's tail. False: wait."""
        assert r.join is not None
        head = os.pread(r.fd, 26, 0) if r.dec is None else decode_head(
            os.pread(r.fd, HEAD_BYTES * 8, 0), r.kind)[:26]
        if len(head) < 26 and b"\n" not in head and self.live:
            return False
        frag, off, fid, path = r.join
        if not ml.should_join(head):
            r.join = None
            self._carry_state = None
            self._emit_carried(path, fid, frag, off)
        return True

    def _advance(self) -> bool:
        """Choose the next file. False when there is nothing to read now."""
        if self.catch_up is not None:
            # names first: an archive deleted before this listing is still known (a gap)
            self.catch_up()
        if not self._listing_will_do():
            # and those made (and deleted) while we listed: they are named now, so list
            # again, else one still there would be missing from the listing, taken for
            # lost and skipped. (Not after the last try: a rare extra loss, not a skip.)
            for tries_left in range(4, -1, -1):
                self.observe()
                named = self._named
                if self.catch_up is None or not tries_left:
                    break
                self.catch_up()
                if self._named == named:
                    break
        if self._list_error is not None:
            return False
        listing = self.listing

        def present(p: ml.Pending) -> bool:
            return any(e is not None and ml.same_raw(p.ident, p.file_id, e)
                       for e in (listing.current, listing.previous, *listing.archives.values()))

        prev_done = self.done
        plan = ml.plan_next(listing, self.known, self.done, self.pending, self._finished, present,
                            self._finished_fid)
        if plan.lost and self._carry is not None:
            self._emit_carry()
        self.pending = plan.pending
        if any(p.restored for p in plan.gone) and self._anchor_gone():
            # A file read before the stop is gone, and its archive with it, unseen: the n
            # limit deleted it while we were stopped, and maybe files made after it that
            # we never saw (seen at high rates: lines lost without a word)
            nxt = min((lb for lb in listing.archives if prev_done is None or lb > prev_done),
                      default=None)
            self._anchor = None
            self._emit_gap(None, None, False,
                           "files made while we were stopped may have been deleted by multilog "
                           "before we could read them (n limit): the last file read before the "
                           "stop and its archive are gone",
                           ml.label_time_ns(prev_done), ml.label_time_ns(nxt))
        seq = sorted([*plan.skipped, *(lb for lb, _ in plan.lost)])
        # A file read to its end whose archive was deleted before we could stat it
        # cannot be told from a file never read (after a stop, or under starvation,
        # the first gap was often ours): as many unstatted archives as such files
        # get a gap that says so. By order alone it would be ours, unless its name
        # never reached us (a lost inotify event: silent; polling: see _note_break). By order, such
        # files' archives are the first lost: one of them that was stat'ed (a processor's
        # output, not ours by its content) takes its place, and later ones were never read.
        unsure = len(plan.gone)
        for label, k in plan.lost:
            i = seq.index(label)
            last = seq[i - 1] if i else prev_done
            self._say_breaks(label)  # a hole polling could not see comes before it
            self.done = label
            sized = k is not None and k.size is not None
            reason = "deleted by multilog before it was read (n limit)"
            nlimit = label not in self._gone_with_dir
            if label in self._gone_with_dir:
                self._gone_with_dir.discard(label)
                reason = ("removed with the log directory (deleted and made again) before "
                          "it was read")
            elif unsure:
                unsure -= 1
                if not sized:
                    reason = ("deleted by multilog before we could look at it (n limit): lost "
                              "lines unless it was the archive of the file read just before")
            self._emit_gap(k.name if k else label, k.size if k else None,
                           sized and k.content == ml.TEXT, reason,
                           ml.label_time_ns(last), ml.label_time_ns(label),
                           nlimit=nlimit)
        if plan.done is not None:
            self._say_breaks(plan.done)
        for name, size, why in self._vanished:  # newer than any archive lost above
            self._emit_gap(name, size, False, why, self._last_line_ns, None)
        self._vanished = []
        self.done = plan.done
        self._prune()
        if plan.unreadable is not None:
            self._say_breaks(plan.unreadable)
            k = self.known.get(plan.unreadable)
            self._emit_carry()
            self.done = plan.unreadable
            self._emit_gap(k.name if k else plan.unreadable, k.size if k else None, False,
                           "archive is empty: its processor wrote none of the lines (no raw lines "
                           "left)" if k is not None and k.content == ml.EMPTY else
                           "archive holds processor output that is not text (no raw lines left)",
                           ml.label_time_ns(prev_done), ml.label_time_ns(plan.unreadable))
            self._prune()
            return True
        if plan.open_label is not None:
            self._say_breaks(plan.open_label)
            k = self.known[plan.open_label]
            r = self._open(k.name, plan.open_label, live=False, kind=k.content)
            if r is None and self._open_errno in (errno.EISDIR, errno.ENXIO):
                # a FIFO or a directory named like an archive: never readable, and
                # multilog's n limit never removes a directory: skipped, said as a gap
                self._emit_carry()
                self.done = plan.open_label
                self._emit_gap(k.name, None, False, "not a regular file (a FIFO, socket or "
                               "directory named like an archive): skipped",
                               ml.label_time_ns(prev_done), ml.label_time_ns(plan.open_label))
                self._prune()
                return True
            if r is None and self._open_errno != errno.ENOENT:
                # e.g. permissions: wait for it (said once), and the lines after it with
                # it, rather than skip it for good; multilog's n limit ends the wait at worst
                self._cannot_open(k.name, " (the lines after it wait too)")
                return False
            self._opened(k.name)
            if r is None and k.name[-1] == "u" and len(plan.open_label) == 25:
                # svlogd with a processor put its output in @L.s and removed @L.u (its
                # input) since the listing: that is the archive now
                got = self._inspect(k.name[:-1] + "s")
                if got is not None:
                    self.known[plan.open_label] = got
                    return self._retry_plan()
            if r is None:  # deleted between listing and open
                self._emit_carry()
                self.done = plan.open_label
                with_dir = plan.open_label in self._gone_with_dir or self._dir_replaced_now()
                self._emit_gap(k.name, k.size, k.size is not None and k.content == ml.TEXT,
                               "removed with the log directory (deleted and made again) before "
                               "it was read" if with_dir else
                               "deleted by multilog before it was read (n limit; at open)",
                               ml.label_time_ns(prev_done), ml.label_time_ns(plan.open_label),
                               nlimit=not with_dir)
                self._prune()
            return True
        for wanted, name, live in ((plan.open_previous, "previous", False),
                                   (plan.open_current, "current", True)):
            if not wanted:
                continue
            self._say_breaks(None)  # every archive is behind us
            entry = listing.previous if name == "previous" else listing.current
            r = self._open(name, None, live=live)
            if r is None and self._open_errno != errno.ENOENT:
                # e.g. a current made 0600 by another user: say so once, and wait
                self._cannot_open(name, "")
                return False
            self._opened(name)
            if (r is not None and entry is not None and r.ident == entry.ident
                    and self._archives_unchanged()):
                return True
            # rotated between the listing and the open: plan again from a new listing
            if r is not None:
                self._carry = r.join
                r.close()
                self.reader = None
            return self._retry_plan()
        return False

    def _cannot_open(self, name: str, more: str) -> None:
        """Said once it lasts OPEN_SAY_AFTER: multilog makes a new current 0600 and then
        chmods it 0644, so a user not multilog's may meet it unreadable for an instant."""
        now = time.monotonic()
        since = self._unopenable.setdefault(name, now)
        if name not in self._unopenable_said and now - since >= OPEN_SAY_AFTER:
            self._unopenable_said.add(name)
            self._warn(f"{self.key}: cannot open {name}: {self._open_error}; waiting for it{more}")

    def stuck(self) -> str | None:
        """Why the reading waits now, if it is for the admin (a ``NOT_FOLLOWED`` key): the
        directory or a file cannot be read by this user, or a file is a symbolic link or
        not a regular file (multilog renames a symlinked ``current`` to an archive, where
        it waited for good, ``unread`` growing, all green: a hunt). None: it does not."""
        why = self._list_error
        if why is not None and why != os.strerror(errno.ENOENT):  # (gone: let go of in time)
            return "unreadable" if why == os.strerror(errno.EACCES) else "blocked"
        if self._unopenable_said and self._unopenable and self._open_errno != errno.ENOENT:
            return "unreadable" if self._open_errno in (errno.EACCES, errno.EPERM) else "blocked"
        return None

    def _opened(self, name: str) -> None:
        if self._unopenable.pop(name, None) is not None and name in self._unopenable_said:
            self._unopenable_said.discard(name)
            log.info("%s: %s can be opened again", self.key, name)

    def _listing_will_do(self) -> bool:
        """Whether the last listing, made moments ago, can choose the next file: it
        lists every archive known to be still unread, so the next is the oldest of
        them. A listing per file made catching up on n archives cost n² (half a
        minute for 3000). Raw files (previous, current, pending ones) always get a
        fresh look; an archive deleted since is found out when it is opened (a gap),
        one that came since is in ``known`` but not listed (look again), and a clock
        set back shows in the next listing."""
        if self.pending or time.monotonic() - self._listed_at > LISTING_REUSE:
            return False
        known = self.known.keys()
        return bool(known) and known <= self.listing.archives.keys()

    def _archives_unchanged(self) -> bool:
        """No archive came or went since the listing the plan was made from. Else the
        file just opened as previous or current may be a later one than planned,
        whose inode number was freed and given out again in between (seen: two
        numbers taking turns at hundreds of rotations a second), and archives it
        must come after are not in the plan."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return True  # the open succeeded; nothing better to go by
        return _archive_names(names) == self.listing.archive_names

    def _retry_plan(self) -> bool:
        self._replans += 1
        return self._replans < 100


class PlainFileFollower(_FollowerBase):
    """Follows one plain log file (e.g. Postfix's /var/log/mail.log) across logrotate.

    * ``create`` (rename + new file): the old inode is read to its end and for
      ``rotate_grace`` seconds more (syslog daemons keep writing to it until
      they are told to reopen), then the new file is read from its start.
    * ``copytruncate``: the file shrinks under us. Lines written between our
      last read and the truncation are in the copy: a sibling (``path.1``,
      ``path-20240101``, ...) with the same first-line fingerprint is read
      from our offset to its end; without one, a Gap is reported. Then the
      file is read again from its start.
    * After a restart the checkpointed file is found by identity (path, or a
      rotated sibling) and fingerprint, finished, then the live file read.
    """

    def __init__(self, path: str, state: dict[str, Any] | None = None, *, start: str = "end",
                 key: str | None = None, batch_lines: int = 1024, batch_bytes: int = 256 << 10,
                 max_line: int = 1 << 20, chunk: int = CHUNK, rotate_grace: float = 1.0) -> None:
        if start not in ("end", "current", "all"):
            raise ValueError(f"start must be end, current or all, not {start!r}")
        path = os.path.abspath(path)
        super().__init__(key or path, batch_lines, batch_bytes, max_line, chunk)
        self.path = path
        self.dir = os.path.dirname(path)
        self.start = start
        self.rotate_grace = rotate_grace
        self.live = False  # reader is the file at self.path
        self._resume = state
        self._started = False
        self._old_quiet_since: float | None = None  # draining a rotated file: idle since
        self.retry_after: float | None = None  # seconds until poll wants to run again

    def on_change(self, name: str | None, mask: int = 0) -> None:
        pass  # nothing to record between polls

    def wants(self, name: str | None) -> bool:
        base = os.path.basename(self.path)
        return name is None or name.startswith(base)

    def unread_bytes(self) -> int:
        """Bytes of the file not read yet (0 when caught up)."""
        return self._reader_unread()

    def state(self) -> dict[str, Any]:
        r = self.reader
        return {"v": STATE_VERSION, "kind": "file",
                "f": self._file_state(r, self.live) if r is not None else None}

    def poll(self, max_items: int = 8) -> list[Item]:
        self._out = []
        self.retry_after = None
        if not self._started:
            self._started = True
            self._begin()
        guard = 0
        while len(self._out) < max_items and guard < 10000:
            guard += 1
            r = self.reader
            if r is None:
                if not self._open_path(0):
                    break
                continue
            if not self._read_batch(r, True, max_items):
                break
            if not self.live:  # a rotated file (or a sibling after restart)
                if r.path != self.path or self._rotated_and_quiet(r):
                    self._flush()
                    r.close()
                    self.reader = None
                    continue
                break
            status = self._check(r)
            if status == "same":
                break
            if status == "rotated":
                self.live = False
                self._old_quiet_since = time.monotonic()
            # "reset": the new reader is in place; loop
        self._flush()
        self.more = len(self._out) >= max_items
        out, self._out = self._out, []
        return out

    def _rotated_and_quiet(self, r: _Reader) -> bool:
        now = time.monotonic()
        if self._old_quiet_since is None:
            self._old_quiet_since = now
        if r.raw_pos > r.size_seen - 1 and now - self._old_quiet_since >= self.rotate_grace:
            return True
        self.retry_after = max(0.0, self.rotate_grace - (now - self._old_quiet_since)) + 0.01
        return False

    def _check(self, r: _Reader) -> str:
        try:
            st = os.stat(self.path)
        except OSError:
            return "rotated"
        if (st.st_dev, st.st_ino) != r.ident:
            return "rotated"
        if st.st_size < r.raw_pos:
            old_pos, fid = r.pos, r.file_id
            self._flush()
            sib = self._sibling(fid, old_pos, exclude=r.ident)
            r.close()
            self.reader = None
            if sib is not None:
                # copytruncate: the copy holds what we had not read yet
                self._warn(f"{self.path}: truncated (copytruncate?): finishing {sib.path}")
                self.reader = sib
                self.live = False
                self._old_quiet_since = 0.0
                return "reset"
            self._open_path(0)
            self._emit_gap(self.path, None, False,
                           f"truncated from {old_pos} to {st.st_size} bytes and no rotated copy "
                           "found: lines written after our last read are lost")
            return "reset"
        return "same"

    def _sibling(self, fid: str | None, offset: int, exclude: ml.Ident | None) -> _Reader | None:
        """A rotated copy of the file we were reading (same first line), positioned at offset."""
        if fid is None:
            return None
        names = sorted(set(glob.glob(glob.escape(self.path) + ".*") +
                           glob.glob(glob.escape(self.path) + "-*")))
        for p in names:
            got = _read_head(p)
            if got is None:
                continue
            ident, _, head = got
            if ident == exclude:
                continue
            kind = ml.content_kind(head[:HEAD_BYTES])
            text = decode_head(head, kind) if kind in ml.COMPRESSED else head
            if kind == ml.BINARY or fid not in fingerprints(text[:FINGERPRINT_SCAN], complete=True):
                continue
            try:
                fd = open_log_file(p)
            except OSError:
                continue
            st = os.fstat(fd)
            r = _Reader(fd, (st.st_dev, st.st_ino), os.path.basename(p), p, None, kind)
            r.size_seen = st.st_size
            r.file_id = fid
            if r.skip_to(offset):
                return r
            r.close()
        return None

    def _open_path(self, offset: int) -> bool:
        try:
            fd = open_log_file(self.path)
        except OSError:
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return False
        r = _Reader(fd, (st.st_dev, st.st_ino), os.path.basename(self.path), self.path, None,
                    ml.TEXT)
        r.size_seen = st.st_size
        self.reader = r
        self.live = True
        if offset:
            r.skip_to(offset)
            fid_now(r, complete=False)
        return True

    def _begin(self) -> None:
        st = self._resume
        self._resume = None
        if isinstance(st, dict) and st.get("v") == STATE_VERSION and st.get("kind") == "file":
            try:
                self._resume_from(st["f"])
                return
            except (KeyError, TypeError, ValueError) as exc:
                self._warn(f"{self.key}: unusable position ({exc}); starting at {self.start}")
        elif st is not None:
            self._warn(f"{self.key}: unusable position; starting at {self.start}")
        if self.start == "end":
            try:
                size = os.stat(self.path).st_size
                fd = open_log_file(self.path)
            except OSError:
                return
            try:
                look = min(size, 1 << 16)
                tail = os.pread(fd, look, size - look)
            finally:
                os.close(fd)
            nl = tail.rfind(b"\n")
            self._open_path(size - look + nl + 1 if nl >= 0 else size)
        else:
            self._open_path(0)

    def _resume_from(self, f: dict[str, Any] | None) -> None:
        if f is None:
            self._open_path(0)
            return
        ident = (int(f["dev"]), int(f["ino"]))
        fid, off = f["fid"], int(f["off"])
        if off < 0:  # (a seek there said only "Invalid argument")
            raise ValueError(f"a negative offset, {off}")
        if self._open_path(0):
            r = self.reader
            assert r is not None
            fid_now(r, complete=False)
            if r.ident == ident and (fid is None or r.file_id in (None, fid)
                                     or legacy_fingerprint(r.head) == fid):
                if fid is not None and r.file_id not in (None, fid):
                    r.file_id = fid  # 0.1.0's id: its lines keep the ids they had (see above)
                if r.skip_to(off) and (not f["mk"] or f["mk"] == marker(r.tail)):
                    r.skipping = bool(f.get("skip"))
                    return
                sib = self._sibling(fid, off, exclude=r.ident)
                r.close()
                self.reader = None
                if sib is not None:
                    self.reader, self.live = sib, False
                    self._old_quiet_since = 0.0
                    return
                self._open_path(0)
                self._emit_gap(self.path, None, False,
                               f"changed under us at offset {off} (truncated or rewritten) "
                               "while we were stopped: reading it again from the start")
                return
            r.close()
            self.reader = None
        sib = self._sibling(fid, off, exclude=None)
        if sib is not None:
            sib.skipping = bool(f.get("skip"))
            self.reader, self.live = sib, False
            self._old_quiet_since = 0.0
            return
        size = f.get("size") or 0
        self._open_path(0)
        self._emit_gap(f.get("name") or self.path, size - off if size >= off else None, False,
                       "rotated away and not found while we were stopped")


# -- sources: many followers, one bounded queue, one checkpoint file --------------------


# The sources of this process, for the file-descriptor budget they share (_fd_room)
_SOURCES: weakref.WeakSet[_Source] = weakref.WeakSet()


class _Source:
    """Runs followers for the paths matching some globs; yields their items."""

    follower_kind = "multilog"

    def __init__(self, patterns: list[str], checkpoint: CheckpointStore | str | None, *,
                 start: str = "end", recover_from: str = "all", watch: str = "auto",
                 poll_interval: float = 1.0, safety_interval: float = 5.0,
                 rescan_interval: float = 5.0, commit_interval: float = 0.5,
                 queue_batches: int = 8, batch_lines: int = 1024, batch_bytes: int = 256 << 10,
                 max_line: int = 1 << 20, chunk: int = CHUNK, max_items: int = 4) -> None:
        self.patterns = list(patterns)
        self.start = start
        self.recover_from = recover_from
        self.rescan_interval = rescan_interval
        self.commit_interval = commit_interval
        # False: the pipeline calls save() itself, when the tracking state it saves with
        # the checkpoint matches it (a checkpoint ahead of that state loses mail lines)
        self.autosave = True
        self.queue_batches = queue_batches
        self.max_items = max_items
        self.follower_opts = {"batch_lines": batch_lines, "batch_bytes": batch_bytes,
                              "max_line": max_line, "chunk": chunk}
        if isinstance(checkpoint, str):
            checkpoint = CheckpointStore(checkpoint)
        self.store = checkpoint
        self.watcher = Watcher(watch, poll_interval, safety_interval)
        self.followers: dict[str, _FollowerBase] = {}
        self.warnings: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wakes: dict[str, asyncio.Event] = {}
        self._handles: dict[str, int] = {}
        self._queue: asyncio.Queue[Item] | None = None
        self._committed: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self._save_wanted = asyncio.Event()  # a position moved: the saver's turn (see _saver)
        self._save_failing = False  # a checkpoint write failed and none worked since
        self.save_errors = 0  # checkpoint writes that failed (a metric)
        self.save_failing_since: float | None = None  # monotonic: when the spell began
        self._closed = False
        self._saved_positions: dict[str, Any] = {}
        self._bad_checkpoint = False
        self._unmatched: dict[str, str] = {}  # pattern → what was said about it
        self._scanned: set[str] = set()  # the paths the last scan found to follow
        # A log directory a glob found that is gone (since when), and those forgotten
        # for it: followed forever, 6,000 of them made and removed cost 18 % of a core
        # idle, 60 MB and a checkpoint of 6,600 entries (a resource hunt)
        self._gone_since: dict[str, float] = {}
        self._forgotten: OrderedDict[str, None] = OrderedDict()
        self._retired_gaps = 0
        self._follow_tasks: dict[str, asyncio.Task[None]] = {}
        # Directories watched for a configured path to appear in (or, made, to get its
        # first files): an event there scans at once, not after rescan_interval (found by
        # fault injection: multilog s4096 n5 at 3,000 lines/s in a directory made after
        # the start had deleted 14,709 lines before the 5 s rescan saw it)
        self._awaited: dict[str, tuple[int, set[str]]] = {}  # directory → (watcher handle, names)
        self._awaited_names: dict[str, frozenset[str]] = {}  # directory → names at the last look
        self._scan_now = asyncio.Event()
        self._no_room_said = False  # logs left unfollowed for want of file descriptors
        # those logs: said once in the log only, an admin who missed that line saw all
        # green in /metrics, status and /healthz while they were not shipped (not_followed)
        self.waiting: list[str] = []
        self._refused: set[str] = set()  # logs matched this user cannot read (the last scan)
        self._idle: set[str] = set()  # followers waiting for a change, all they read queued
        # Log directories let go of (gone, renamed): their lag is no longer shown (it
        # grew for good once forgotten, an alert for each service removed)
        self.let_go: set[str] = set()
        _SOURCES.add(self)

    # -- what to follow -------------------------------------------------------

    def _why_not(self, path: str) -> str | None:
        """Why ``path`` is not followed (None: it is)."""
        raise NotImplementedError

    def _scan(self) -> list[str]:
        """The paths to follow now, and, once per change, why a configured path is
        not: missing (it is followed when it appears), unreadable by this user, or
        not (yet) a log. Silence there looks like a quiet mail server."""
        out: list[str] = []
        refused: set[str] = set()
        for pat in self.patterns:
            paths = expand(pat)
            reasons = []
            if self.follower_kind == "multilog" and glob.has_magic(pat):
                # a glob over log directories also matches the files beside them ("lock",
                # "state", or a whole multilog directory's "current" when qmail-send logs
                # in the parent, as in Life with qmail): not ours to follow or warn about
                paths = [p for p in paths if not os.path.isfile(p)]
                hint = parent_log_hint(pat, self.patterns)
                if hint and hint not in self.warnings:
                    log.warning("%s", hint)
                    self.warnings.append(hint)
            for p in paths:
                why = self._why_not(p)
                if why is None:
                    out.append(os.path.abspath(p))
                elif glob.has_magic(pat) and not os.path.lexists(p):
                    continue  # a match removed since the glob listed it: nothing to follow or say
                else:
                    reasons.append(why)
                    if "Permission denied" in why:
                        refused.add(os.path.abspath(p))
            if not paths:
                reasons = [unmatched_problem(pat)]
            text = "; ".join(reasons)
            if text != self._unmatched.get(pat, ""):
                self._unmatched[pat] = text
                if text:
                    (log.error if "Permission denied" in text else log.warning)("%s", text)
                    self.warnings.append(text)
        out = self._one_name_each(out)
        self._scanned = set(out)
        self._refused = refused
        self._await_missing(out)
        return out

    def _one_name_each(self, paths: list[str]) -> list[str]:
        """``paths`` with one name of each directory or file: a glob matching a log and a
        symbolic link to it shipped every line twice, with nothing said (a black-box
        review). The name followed already keeps it (its checkpoint is under it)."""
        first: dict[str, str] = {}
        for p in sorted(paths, key=lambda p: (p not in self.followers, p)):
            first.setdefault(os.path.realpath(p), p)
        kept = set(first.values())
        for p in paths:
            if p not in kept:
                note = (f"{p} is {first[os.path.realpath(p)]} under another name (a symbolic "
                        f"link): followed once, as the latter")
                if note not in self.warnings:
                    log.warning("%s", note)
                    self.warnings.append(note)
        return [p for p in paths if p in kept]

    def _await_missing(self, followed: list[str]) -> None:
        """Watch where configured paths not followed yet will appear (their parent, or
        the directory itself while it has no log files), and stop watching once they are
        followed. A name made there (matching the pattern) scans at once."""
        want: dict[str, set[str]] = {}  # directory → names (fnmatch) that matter there
        for pat in self.patterns:
            root = pat
            while glob.has_magic(root):
                root = os.path.dirname(root)
            if root != pat:  # a glob: new matches appear in the directory it lists
                rest = os.path.relpath(pat, root or ".").split(os.sep)[0]
                want.setdefault(os.path.abspath(root or "."), set()).add(rest)
                for m in expand(pat):  # matched, no log files yet
                    if os.path.abspath(m) not in followed and os.path.isdir(m):
                        want.setdefault(os.path.abspath(m), set()).add("*")
            elif os.path.abspath(pat) not in followed:
                path = os.path.abspath(pat)
                if os.path.isdir(path):  # made, no log files yet
                    want.setdefault(path, set()).add("*")
                else:
                    want.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
        for d in [d for d in self._awaited if d not in want or self._awaited[d][1] != want[d]]:
            self.watcher.unwatch(self._awaited.pop(d)[0])
            self._awaited_names.pop(d, None)
        for d, names in sorted(want.items()):
            if d in self._awaited or not os.path.isdir(d):
                continue

            def seen(name: str | None, mask: int, d: str = d, names: set[str] = names) -> None:
                if name is None:
                    # a look with no name (no inotify watch: out of them; or the safety
                    # poll): the directory listed for a name new there. Left to the 5 s
                    # rescan, multilog s16384 n5 at 3,000 lines/s in a directory made
                    # there had deleted 6,968 of its first 9,000 lines (a scale hunt)
                    if self._awaited_look(d, names):
                        self._scan_now.set()
                # (not multilog's own files: qmail-send may log in the directory a glob lists)
                elif mask & (IN_CREATE | IN_MOVED_TO) and (
                        "*" in names or ml.classify(name) == ml.OTHER) and any(
                        fnmatch.fnmatchcase(name, n) for n in names):
                    self._scan_now.set()
            self._awaited_look(d, names)
            self._awaited[d] = (self.watcher.watch(d, seen), names)
            self._scan_now.set()  # made before the watch: look once more

    def _awaited_look(self, d: str, names: set[str]) -> bool:
        """Whether awaited directory ``d`` holds a name (matching ``names``) it did not
        at the last look."""
        try:
            now = frozenset(n for n in os.listdir(d) if "*" in names or (
                ml.classify(n) == ml.OTHER and any(fnmatch.fnmatchcase(n, p) for p in names)))
        except OSError:
            now = frozenset()
        before = self._awaited_names.get(d)
        self._awaited_names[d] = now
        return before is not None and not now <= before

    def _make(self, path: str, state: dict[str, Any] | None, start: str) -> _FollowerBase:
        raise NotImplementedError

    def _watch_dir(self, path: str) -> str:
        raise NotImplementedError

    # -- the consumer's side ----------------------------------------------------

    async def batches(self) -> AsyncIterator[Item]:
        """All items of all followers, in order per source. Ends after ``close``."""
        self._launch()
        assert self._queue is not None
        q = self._queue
        while True:
            item = await q.get()
            if item is _END:  # type: ignore[comparison-overlap]
                return
            yield item

    def saved_state(self, key: str) -> Any:
        """The state checkpointed for ``key`` when this source started (None: none)."""
        return self._saved_positions.get(key)

    def commit(self, position: Position) -> None:
        """Everything up to and including ``position`` is safe (cheap; saved later)."""
        key, state = position
        if key in self.let_go and key not in self._forgotten:
            # renamed (_take_over): the new name's position covers these lines; stored,
            # the old name came back to the checkpoint, a stale entry for good
            return
        self._committed[key] = state
        if self.store is not None:
            self.store.set(key, state)
        self._dirty = True
        self._save_wanted.set()

    @property
    def unsaved(self) -> bool:
        """A position moved since the last checkpoint written (its write may have failed)."""
        return self._dirty

    def save(self, final: bool = False) -> None:
        """Write the checkpoint if a position moved since. ``final``: the last one, at a
        stop: its failure is said whatever was said before (what was read since the last
        checkpoint that worked is read again at the next start)."""
        if self.store is not None and self._dirty:
            remade = self.store.remade_dirs
            self._dirty = False  # set again by a position moving meanwhile, or a failure
            self._saved(self.store.save(), remade, final)

    async def save_off_loop(self) -> None:
        """``save``, with the file written and fsynced in a thread: its two fsyncs held
        the event loop 3-10 ms twice a second, every line arriving meanwhile waiting
        (most of the 5 ms of issue 8's latency target)."""
        if self.store is None or not self._dirty:
            return
        remade = self.store.remade_dirs
        snap = self.store.snapshot()
        self._dirty = False
        try:
            ok = snap is not None and await asyncio.to_thread(self.store.write, snap)
        except asyncio.CancelledError:
            # a stop: its last save writes again, after this one (CheckpointStore.write)
            self._dirty = True
            raise
        self._saved(ok, remade, False)

    def _saved(self, ok: bool, remade: int, final: bool) -> None:
        assert self.store is not None
        if ok:
            if self.store.remade_dirs != remade:
                log.warning("checkpoint %s: its directory was removed while running; made "
                            "again and written", self.store.path)
            if self._save_failing:  # the end of a spell of failures said, as its start
                self._save_failing = False
                log.info("checkpoint %s: written again", self.store.path)
            self.save_failing_since = None
            return
        self._dirty = True
        self.save_errors += 1
        if self.save_failing_since is None:
            self.save_failing_since = time.monotonic()
        if final:
            log.error("%s at stop: what was read since the last checkpoint written is "
                      "read again at the next start (the same event ids)", self.store.warnings[-1])
        elif not self._save_failing:  # once a spell: the first write failed since one worked
            self._save_failing = True
            log.error("%s (the position is kept in memory; retrying)", self.store.warnings[-1])

    async def close(self, save: bool = True) -> None:
        """Stop the followers, write the checkpoint (unless ``save`` is False: the
        tracking state it goes with could not be saved), release files and watches."""
        if self._closed:
            return
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if save:
            self.save(final=True)
        for f in self.followers.values():
            if f.reader is not None:
                f.reader.close()
        self.watcher.close()
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_END)  # type: ignore[arg-type]

    @property
    def gaps(self) -> int:
        return self._retired_gaps + sum(f.gaps for f in self.followers.values())

    # -- machinery --------------------------------------------------------------

    def _launch(self) -> None:
        if self._queue is not None:
            return
        self._queue = asyncio.Queue(self.queue_batches)
        if self.store is not None:
            self._saved_positions = self.store.load()
            self._bad_checkpoint = self.store.corrupt_loads > 0
            if self._bad_checkpoint:  # a corrupt checkpoint was set aside: say it, once
                for text in self.store.warnings:
                    log.error("%s", text)
            self.warnings.extend(self.store.warnings)
            self.store.warnings.clear()
        loop = asyncio.get_running_loop()
        self._follow_new(self._scan(), initial=True)
        self._tasks.append(loop.create_task(self._rescan(), name="source rescan"))
        self._tasks.append(loop.create_task(self._saver(), name="checkpoint saver"))

    def _follow_new(self, paths: list[str], initial: bool) -> None:
        """Follow the paths not followed yet, as many as there are file descriptors for.
        Each followed log holds one open: with 1,000 directories and ``ulimit -n 256``
        they took every descriptor, so the sink could not open its file, no checkpoint
        was written, nothing at all was shipped, and the log got 770 warnings and a
        traceback a second (a scale hunt). The others wait, said once, and are followed
        (all of what multilog kept) once there is room: a limit raised, a log gone."""
        new = [p for p in paths if p not in self.followers]
        room = self._fd_room() if new else None
        left = new[max(room, 0):] if room is not None else []
        renamed = self._renamed_away() if new and not initial else {}
        for path in new[:len(new) - len(left)]:
            if renamed and not self._take_over(path, renamed):
                continue
            self._add(path, initial)
        self.waiting = left
        if left and not self._no_room_said:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            text = (f"{len(left)} logs matched are not followed (the first: {left[0]}): this "
                    f"process may open {soft} files (ulimit -n) and each log followed holds one "
                    f"open, {FD_RESERVE} kept for sinks, buffers and state; raise the limit "
                    "(LimitNOFILE=, ulimit -Hn) and restart. They are followed, from their "
                    "oldest file, once there is room")
            log.error("%s", text)
            self.warnings.append(text)
        elif not left and self._no_room_said:
            log.info("every log matched is followed now")
        self._no_room_said = bool(left)

    def not_followed(self) -> dict[str, str]:
        """The logs matched and not followed now, each with why (a ``NOT_FOLLOWED`` key):
        left for want of file descriptors, or this user cannot read them (found so, or
        followed and their directory or a file of theirs unreadable since: with its
        directory chmod 000, a follower read 28 of 200 lines, and /metrics, status and
        /healthz said 0 bytes unread, all green, a hunt)."""
        out = dict.fromkeys(self.waiting, "file_descriptors")
        out.update(dict.fromkeys(self._refused, "unreadable"))
        for key, f in self.followers.items():
            why = getattr(f, "stuck", None)
            if why is not None and why() is not None:
                out[key] = why()
        return out

    def multilog_running(self, locks: frozenset[int] | None) -> dict[str, bool]:
        """Whether a multilog holds the lock of each followed directory that has one
        (``locks``: held_locks()). Stopped (its service down, or dead), nothing is logged
        there, and the service's lines wait in its pipe or are lost; the shipper showed a
        lag growing, as on a quiet log (a hunt)."""
        if locks is None or self.follower_kind != "multilog":
            return {}
        out = {}
        for key in self.followers:
            try:
                ino = os.stat(os.path.join(self._watch_dir(key), "lock")).st_ino
            except OSError:
                continue  # no lock file: not multilog's (svlogd, s6-log) or not started yet
            out[key] = ino in locks
        return out

    def disk_free(self) -> dict[str, int]:
        """Bytes free (to a user, not root's reserve) on the file system of each followed
        log. Full, multilog pauses (``unable to write … pausing: out of disk space``) and
        its service waits on it: the shipper showed only a lag growing, as on a quiet
        log, with multilog running (a hunt, a 64 KiB tmpfs)."""
        out = {}
        for key in self.followers:
            try:
                st = os.statvfs(self._watch_dir(key))
            except OSError:
                continue
            out[key] = st.f_bavail * st.f_frsize
        return out

    def _renamed_away(self) -> dict[tuple[int, int], tuple[str, ml.Ident | None]]:
        """The followed log directories gone from their path while a file of theirs is
        open: (device, inode) of that file → their key, and the (device, inode) of the
        directory when its path names another one now. Renamed (``mv smtpd smtpd.old``
        under the glob), one may be found under its new name (``_take_over``); and made
        again at once (``mkdir smtpd``, or its multilog restarted), the new name was read
        as a new log, from its oldest file: 82-105 of 400 lines shipped twice, all those
        multilog kept there (a hunt, real multilog, s4096 n3)."""
        if self.follower_kind != "multilog":
            return {}
        out: dict[tuple[int, int], tuple[str, ml.Ident | None]] = {}
        for key, f in self.followers.items():
            if f.reader is None:
                continue
            d = self._watch_dir(key)
            if key not in self._scanned and not os.path.lexists(d):
                out[f.reader.ident] = (key, None)
                continue
            was = getattr(f, "_dir_ident", None)
            if was is None:
                continue
            try:
                st = os.stat(d)
            except OSError:
                continue
            before = getattr(f, "dir_before", None)
            if (st.st_dev, st.st_ino) != was:  # made again, not listed since
                out[f.reader.ident] = (key, was)
            elif before is not None:  # listed since
                out[f.reader.ident] = (key, before)
        return out

    def _take_over(self, path: str, renamed: dict[tuple[int, int], tuple[str, ml.Ident | None]]
                   ) -> bool:
        """Whether to follow ``path`` now. A followed directory renamed to it is followed
        on from where its follower is, and that follower retired: the new name read from
        its oldest file shipped again what the old one had read (87 of 400 lines in a
        hunt, the old follower reading on meanwhile), with nothing said. False: that
        follower has lines in flight; the next scan, soon, tries again."""
        try:
            names = os.listdir(path)
            here = os.stat(path)
        except OSError:
            return True
        for name in names:
            if name != "current" and name[:1] != "@":
                continue
            try:
                st = os.stat(os.path.join(path, name))
            except OSError:
                continue
            key, was = renamed.get((st.st_dev, st.st_ino), ("", None))
            if key not in self.followers:
                continue
            old = self.followers[key]
            if was is not None:
                # its path names another directory now: this is the one it followed, by
                # (dev, ino), and holds the very file it reads (by its first line too)
                r = old.reader
                if (here.st_dev, here.st_ino) != was or r is None or r.file_id is None \
                        or r.file_id not in _head_fids(os.path.join(path, name)):
                    continue
            elif not _same_log_dir(key, path, old.state()):
                continue
            if key not in self._idle:  # (idle, all it read is queued)
                asyncio.get_running_loop().call_later(0.1, self._scan_now.set)
                return False
            # From what is committed, not from what it read: its batches still queued
            # are not durable yet, and its commits are not taken after this (a review:
            # 50 of 50 lines in flight lost at a stop). What it read and did not commit
            # is read again under the new name (same event ids)
            state = self._committed.get(key) or self._saved_positions.get(key)
            if state is None:
                return True  # nothing of it committed: the new name is read as a new log
            self._retire(key)
            self.let_go.add(key)
            self._saved_positions.pop(key, None)
            self._forgotten.pop(key, None)
            self._committed.pop(key, None)
            self._saved_positions[path] = state
            if self.store is not None:
                self.store.pop(key)
                self.store.set(path, state)
                self._dirty = True
                self._save_wanted.set()
            log.info("%s resumes where %s left it (the log directory was renamed%s)", path, key,
                     f"; {key} is another one now, followed as a new log" if was else "")
            if was is not None:
                self._scan_now.set()  # the new one there: followed now, not at the rescan
            return True
        return True

    def _fd_room(self) -> int | None:
        """How many more logs may be opened, leaving FD_RESERVE for the rest (None: no
        limit known). Followers not begun yet hold no file so far but will."""
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            open_now = len(os.listdir("/proc/self/fd"))
        except OSError as exc:
            return 0 if exc.errno in (errno.EMFILE, errno.ENFILE) else None  # (out of them now)
        except ValueError:
            return None
        if soft == resource.RLIM_INFINITY:
            return None
        # every source's (each starts its followers before the others' have opened
        # anything: two sources of 100 logs under 200 files took 193, a review)
        unopened = sum(1 for src in list(_SOURCES) for f in src.followers.values() if f.reader is None)
        return soft - FD_RESERVE - open_now - unopened

    def _add(self, path: str, initial: bool) -> None:
        if path in self.followers:
            return
        if self.store is not None:
            ensure_outside(self.store.path, [self._watch_dir(path)] if
                           self.follower_kind == "multilog" else [])
        state = self._saved_positions.get(path)
        if state is None and self.follower_kind == "multilog":
            state = self._moved_position(path)
        if state is not None:
            start = self.start
        elif self._bad_checkpoint:
            start = self.recover_from
        else:
            start = self.start if initial else "all"  # appeared later: all of it is new
        f = self._make(path, state, start)
        if state is None and initial and start != "all" and isinstance(f, MultilogFollower):
            f.no_position = self._why_no_position()
        self.followers[path] = f
        wake = self._wakes[path] = asyncio.Event()
        wake.set()

        def on_change(name: str | None, mask: int, f: _FollowerBase = f,
                      wake: asyncio.Event = wake) -> None:
            if isinstance(f, PlainFileFollower) and not f.wants(name):
                return
            f.on_change(name, mask)  # type: ignore[attr-defined]
            wake.set()

        handle = self._handles[path] = self.watcher.watch(self._watch_dir(path), on_change)
        f.catch_up = self.watcher.catch_up
        if isinstance(f, MultilogFollower):
            f.names_seen = lambda w=self.watcher, h=handle: w.names_seen(h)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(f, wake, fresh=state is None), name=f"follow {path}")
        self._tasks.append(task)
        self._follow_tasks[path] = task
        self._forgotten.pop(path, None)
        self.let_go.discard(path)

    def _why_no_position(self) -> str | None:
        """Why a directory followed from the start has no saved position, if a previous
        run left state (then starting at the end skips what was written while we were
        stopped); None: none left (a first start)."""
        if self.store is None:
            return None
        if self._bad_checkpoint:
            return f"the checkpoint {self.store.path} was unusable"
        if self._saved_positions:
            return f"none in {self.store.path} for this directory (new, or its position lost)"
        cp_dir = os.path.dirname(self.store.path)
        state_dir = os.path.dirname(cp_dir)
        try:
            others = [n for n in os.listdir(cp_dir) if n.endswith(".json")
                      and os.path.join(cp_dir, n) != self.store.path]
        except OSError:
            others = []
        if others or (os.path.basename(cp_dir) == "checkpoints"
                      and os.path.exists(os.path.join(state_dir, "tracking.json"))):
            return (f"the checkpoint {self.store.path} is missing (lost, or a new source) while "
                    "other state of a previous run is there")
        return None

    def _moved_position(self, path: str) -> dict[str, Any] | None:
        """The position saved under another path of the same log directory, taken over
        for ``path``: the directory renamed (an admin's mv, the config changed with it)
        or reached by another path (a symlink, its target). Keyed by path, it was not
        found: the directory started from start_position again, and with "end" what
        multilog wrote while we were stopped was lost without a word (with "all", every
        line it kept came twice). A key still followed is not taken."""
        for key, state in self._saved_positions.items():
            if key in self.followers or key in self._scanned or not _same_log_dir(key, path, state):
                continue
            del self._saved_positions[key]
            self._saved_positions[path] = state
            if self.store is not None:  # the old key goes with the next save
                self.store.pop(key)
                self.store.set(path, state)
                self._dirty = True
                self._save_wanted.set()
            log.info("%s resumes where %s left it (the same log directory: moved, or "
                     "reached by another path)", path, key)
            return state  # type: ignore[no-any-return]
        return None

    async def _run(self, f: _FollowerBase, wake: asyncio.Event, fresh: bool = False) -> None:
        assert self._queue is not None
        q = self._queue
        while True:
            wake.clear()
            try:
                items = f.poll(self.max_items)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - e.g. the directory vanished: say so, look again later
                if isinstance(exc, OSError):
                    f._warn(f"{f.key}: {exc}")
                else:  # a bug of ours: the whole story, then carry on with this directory
                    log.exception("%s: following failed; trying again in 1 s", f.key)
                # what poll read before the error is in its state already: ship it, not lose it
                items = f.taken()
                await asyncio.sleep(1.0)
            if fresh and getattr(f, "_started", True):  # begun: its state says where it is
                fresh = False
                if not items:
                    # No checkpoint yet and nothing to read from where we started (the
                    # end, by default): keep that place now. Else a quiet directory
                    # would have none at the next start, which would start at the end
                    # again and skip what was written while we were stopped.
                    self.commit((f.key, f.state()))
            for item in items:
                await q.put(item)
            if f.more:
                await asyncio.sleep(0)
                continue
            retry = getattr(f, "retry_after", None)
            self._idle.add(f.key)  # all it read is queued: safe to retire (_take_over)
            try:
                if retry is None:
                    await wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), retry)
            finally:
                self._idle.discard(f.key)

    async def _rescan(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # every rescan_interval, or at once when an awaited directory saw a name made
            timer = loop.call_later(self.rescan_interval, self._scan_now.set)
            try:
                await self._scan_now.wait()
            finally:
                timer.cancel()
            self._scan_now.clear()
            self._follow_new(self._scan(), initial=False)
            # a directory made again where a followed one was (a name made in an awaited
            # parent scans at once): watched now, not at the poll tick, up to 1 s later,
            # while multilog wrote and rotated there unwatched
            self.watcher.rewatch()
            if self.follower_kind == "multilog":
                self._forget_gone()

    def _forget_gone(self) -> None:
        """Stop following a log directory a glob found once it is gone for GONE_FORGET
        (a service removed; not a directory moved and made again, which comes back
        within it) and all it held was read (a paused reading drains first: no loss).
        Its position is kept, for FORGOTTEN_MAX such directories (the oldest then go):
        made again, or found under another name, it resumes there. Configured by name,
        it is followed still."""
        named = {os.path.abspath(p) for p in self.patterns if not glob.has_magic(p)}
        now = time.monotonic()
        for path in list(self.followers):
            if path in named or os.path.lexists(self._watch_dir(path)):
                self._gone_since.pop(path, None)
                continue
            f = self.followers[path]
            if now - self._gone_since.setdefault(path, now) < GONE_FORGET or not _drained(f):
                continue
            self._retire(path)
            self.let_go.add(path)
            kept = self._committed.pop(path, None) or self._saved_positions.get(path)
            if kept is not None:
                self._saved_positions[path] = kept
            self._forgotten[path] = None
            self._forgotten.move_to_end(path)
            while len(self._forgotten) > FORGOTTEN_MAX:
                old, _ = self._forgotten.popitem(last=False)
                self.let_go.discard(old)  # (bounded as the positions kept)
                if old not in self.followers:
                    self._saved_positions.pop(old, None)
                    if self.store is not None and self.store.pop(old) is not None:
                        self._dirty = True
                        self._save_wanted.set()
            log.info("%s: the log directory is gone (for %.0f s): no longer followed (its "
                     "position is kept: made again, it resumes there)", path, GONE_FORGET)

    def _retire(self, path: str) -> None:
        """Stop following ``path``: its task, watch and open file go."""
        f = self.followers.pop(path)
        self._retired_gaps += f.gaps
        task = self._follow_tasks.pop(path, None)
        if task is not None:
            task.cancel()
            self._tasks.remove(task)
        handle = self._handles.pop(path, None)
        if handle is not None:
            self.watcher.unwatch(handle)
        self._wakes.pop(path, None)
        self._gone_since.pop(path, None)
        self._idle.discard(path)
        if f.reader is not None:
            f.reader.close()
            f.reader = None

    async def _saver(self) -> None:
        # at most every commit_interval, and only after a position moved: on a quiet log
        # its clock woke the daemon twice a second for nothing
        while True:
            await self._save_wanted.wait()
            await asyncio.sleep(self.commit_interval)
            self._save_wanted.clear()
            if self.autosave:
                await self.save_off_loop()
                if self._dirty:  # not written (a write error, said once): try again
                    self._save_wanted.set()


_END = object()


def _same_log_dir(old: str, new: str, state: Any) -> bool:
    """Whether the multilog directory checkpointed as ``old`` is ``new``: one directory
    (a symlink's two ends), or ``old`` gone and a file of its position (the file being
    read, or one pending) in ``new``, by device and inode and by its first line (or, for
    a file saved before it had one, with the last archive read there too). The inode
    number alone is not enough: ``old`` deleted, a file of another directory takes it
    (ext4 reuses them at once), and that directory took ``old``'s position: a false gap
    ("deleted before it was read to the end"), and ``old``'s "done" label for its own."""
    try:
        if os.path.samefile(old, new):
            return True
    except OSError:
        pass
    if os.path.lexists(old) or not isinstance(state, dict):
        return False
    f = state.get("f")
    idents = {(p[0], p[1]): p[2] if len(p) >= 3 else None
              for p in state.get("pend") or () if isinstance(p, list) and len(p) >= 2}
    if isinstance(f, dict):
        idents[(f.get("dev"), f.get("ino"))] = f.get("fid")
    try:
        names = os.listdir(new)
    except OSError:
        return False
    done = state.get("done")
    anchored = isinstance(done, str) and (f"{done}.s" in names or f"{done}.u" in names)
    for name in names:
        if name == "current" or name[:1] == "@":
            path = os.path.join(new, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in idents and (anchored if idents[ident] is None
                                    else idents[ident] in _head_fids(path)):
                return True
    return False


def _head_fids(path: str) -> tuple[str | None, str | None]:
    """The file id (fingerprint of the first line, decoded for compressed archives) of
    ``path`` as fid_now makes it, and the legacy one when it differs (a position saved
    by 0.1.0 names the file so); None when it cannot be read or has none."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEAD_BYTES * 8)
    except OSError:
        return None, None
    head = decode_head(raw, ml.content_kind(raw))[:FINGERPRINT_SCAN]
    return fingerprints(head) if fingerprint(head) else fingerprints(head, complete=True)


def _crashed(directory: str, name: str) -> bool:
    """Whether ``@L.u`` is a crashed ``current`` (its logger never made it u+x) rather than
    svlogd's input to a processor (made u+x before the rename, replaced by ``@L.s``). When
    s6-log starts after a kill, it archives a finished ``processed`` as ``@L.s`` and the
    crashed ``current`` as ``@L.u`` with one stamp: two files, both to read."""
    try:
        st = os.lstat(os.path.join(directory, name))
    except OSError:
        return False
    return not st.st_mode & stat.S_IXUSR


def _archive_names(names: list[str]) -> frozenset[str]:
    """The names of a listing that are multilog's ("@…"): any change in them is a rotation
    or a deletion."""
    return frozenset(n for n in names if n[:1] == "@")


class MultilogSource(_Source):
    """Follows the multilog directories matching globs (e.g. ``/var/log/qmail/*``),
    including directories that appear later (read from their oldest archive)."""

    def _make(self, path: str, state: dict[str, Any] | None, start: str) -> _FollowerBase:
        return MultilogFollower(path, state, start=start, **self.follower_opts)

    def _why_not(self, path: str) -> str | None:
        return multilog_dir_problem(path)

    def _watch_dir(self, path: str) -> str:
        return path


class FileSource(_Source):
    """Follows plain log files matching globs (e.g. ``/var/log/mail.log``)."""

    follower_kind = "file"

    def _make(self, path: str, state: dict[str, Any] | None, start: str) -> _FollowerBase:
        return PlainFileFollower(path, state, start=start, **self.follower_opts)

    def _why_not(self, path: str) -> str | None:
        return file_problem(path)

    def _watch_dir(self, path: str) -> str:
        return os.path.dirname(path)


# Why a log matched is not followed (the reason of ``shipper_source_not_followed``), in
# the words /healthz and ``shipper status`` say it with: what to do about it
NOT_FOLLOWED = {
    "file_descriptors": "for want of file descriptors (ulimit -n {nofile}: raise LimitNOFILE= "
                        "or ulimit -Hn and restart; followed, from the oldest file, once there "
                        "is room)",
    "unreadable": "unreadable by this user (owner and mode in the log, and in `shipper check` "
                  "run as this user: chgrp to a group of its and chmod 750)",
    "blocked": "a file or the directory cannot be read: a symbolic link, not a regular file "
               "or an I/O error (the log names it; the lines after it wait: replace or remove it)",
}


PID_NS_INIT = 0xEFFFFFFC  # the inode of the first pid namespace (Linux's PROC_PID_INIT_INO)


def held_locks() -> frozenset[int] | None:
    """The inode numbers of the files locked now on this machine (``/proc/locks``, read
    only: a lock tried on multilog's ``lock`` would make a multilog starting then exit);
    None where it cannot be read, or may not list them all: in a pid namespace of its
    own (a container) it lists only the locks of that namespace's processes, and a
    multilog outside would be said stopped. Inodes only: the device there is not always
    stat's (btrfs subvolumes), and a false "running" is the safe side."""
    try:
        if os.readlink("/proc/self/ns/pid") != f"pid:[{PID_NS_INIT}]":
            return None
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":  # (a waiter, not a holder)
            continue
        dev_ino = parts[5].rsplit(":", 1)
        if len(dev_ino) == 2 and dev_ino[1].isdigit():
            out.add(int(dev_ino[1]))
    return frozenset(out)


def not_followed_problem(sources: list[Any]) -> str:
    """What /healthz says of the logs matched and not followed ("": none). Unhealthy:
    their lines are not shipped, and multilog's n limit deletes them meanwhile (taken up
    later, a log is read from its oldest file: what was deleted before goes unsaid)."""
    by_reason: dict[str, list[str]] = {}
    for src in sources:
        for path, reason in getattr(src, "not_followed", dict)().items():
            by_reason.setdefault(reason, []).append(path)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    out = []
    for reason, paths in sorted(by_reason.items()):
        paths.sort()
        more = f" and {len(paths) - 1:,} more" if len(paths) > 1 else ""
        why = NOT_FOLLOWED.get(reason, reason).format(nofile=nofile)
        out.append(f"{len(paths):,} log{'s' if len(paths) > 1 else ''} not followed, {why}: "
                   f"{paths[0]}{more}")
    return "; ".join(out)


def parent_log_hint(pattern: str, patterns: list[str]) -> str | None:
    """A hint when the directory a glob looks into is itself a multilog directory not
    configured (``/var/log/qmail/*`` where qmail-send logs in ``/var/log/qmail``)."""
    parent = os.path.dirname(pattern)
    if glob.has_magic(parent) or not os.path.isfile(os.path.join(parent, "current")):
        return None
    if any(os.path.abspath(p) == os.path.abspath(parent) for p in patterns):
        return None
    return (f"{parent} is itself a multilog directory (it holds a current) and is not followed: "
            f"add \"{parent}\" to paths to ship it too")


def expand(pattern: str) -> list[str]:
    """The paths a configured pattern names now: its glob's matches, or itself."""
    return sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]


def unmatched_problem(pattern: str) -> str:
    """Why ``pattern`` names nothing now, in one line. ``glob`` and ``os.path.exists``
    say nothing of a directory this user may not read or search: that is said, not
    taken for "not there yet" (silence would look like a quiet mail server)."""
    root = pattern
    while glob.has_magic(root):
        root = os.path.dirname(root)
    if root != pattern:  # the directory the glob lists
        try:
            os.listdir(root or ".")
        except FileNotFoundError:
            pass
        except OSError as exc:
            return (f"{pattern}: cannot list {root}: {exc.strerror} (the shipper's user needs "
                    "to read it)")
    return _unreachable(root) or f"{pattern}: matches nothing yet; followed when it appears"


def _unreachable(path: str) -> str | None:
    """Why ``path`` cannot be looked at, if it is there for all we know (not ENOENT)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return (f"{path}: cannot reach it: {exc.strerror} (the shipper's user needs to search "
                "every directory above it)")
    return None


def multilog_dir_problem(path: str) -> str | None:
    """Why ``path`` is not followed as a multilog directory, in one line (None: it is)."""
    if not os.path.exists(path):
        return _unreachable(path) or f"{path}: no such directory yet; followed when it appears"
    if not os.path.isdir(path):
        return f"{path}: not a directory (a multilog source names the log directory)"
    gone = f"{path}: no such directory yet; followed when it appears"
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return gone
    except OSError as exc:
        return f"{path}: cannot read it: {exc.strerror} ({_dir_access_hint(path)})"
    if not os.access(path, os.X_OK):  # listed, but its files cannot be opened (mode r without x)
        # (or removed meanwhile: said as a permission error, as root, for directories
        # of a glob removed 50 a second, a scale hunt)
        return gone if not os.path.isdir(path) else (
            f"{path}: cannot read it: Permission denied ({_dir_access_hint(path)})")
    if not any(n in ("current", "lock") or ml.is_archive(n) for n in names):
        return f"{path}: no multilog files in it yet (current, lock, @*.s); followed when they appear"
    current = os.path.join(path, "current")
    if "current" in names and os.path.islink(current):
        # opened without following links (O_NOFOLLOW), it was never read: the follower
        # said "Too many levels of symbolic links; waiting for it" after 5 s, and check ok
        try:
            to = f" to {os.readlink(current)}"
        except OSError:
            to = ""
        return (f"{path}: current is a symbolic link{to}: links in a log directory are not "
                "followed; name the directory multilog writes in")
    return None


def _dir_access_hint(path: str) -> str:
    """Who owns ``path`` and how to let this user in. multilog makes a missing log
    directory 0700, where adding the shipper's user to the owning group is no help."""
    import grp

    from shipper.config import user_name

    try:
        st = os.stat(path)
    except OSError:
        return "the shipper's user needs to read the log directory"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    me = user_name(os.geteuid())
    return (f"owner {user_name(st.st_uid)}:{group} mode "
            f"{stat.S_IMODE(st.st_mode):04o}; the shipper's user ({me}) needs r and x on it: "
            f"chgrp it to a group {me} is in and chmod 750 it")


def file_problem(path: str) -> str | None:
    """Why ``path`` is not followed as a log file, in one line (None: it is)."""
    if not os.path.exists(path):
        return _unreachable(path) or f"{path}: no such file yet; followed when it appears"
    if not os.path.isfile(path):
        return f"{path}: not a regular file"
    if not os.access(path, os.R_OK):
        return f"{path}: cannot read it: Permission denied (the shipper's user needs to read it)"
    return None
