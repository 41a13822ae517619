"""Local sinks: an NDJSON file (size-rotated) and stdout. For debugging, audits, the demo.

``FileSink`` writes one record per line (the documented JSON form). Before a
write would take the file past ``max_bytes`` it is renamed ``PATH.1`` (older
ones shift up to ``PATH.<keep>``; beyond that they are deleted and counted in
``stats.extra["files_dropped"]``). Rotation happens only between records, so
each file holds whole lines; a single record larger than ``max_bytes`` gets a
file of its own.

fsync policy: ``"batch"`` (default) — a batch is acknowledged only once it is on
disk; ``"rotate"`` — only when a file is closed (rotation, close); ``"never"``.
The file I/O runs in a worker thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import Any, BinaryIO

import orjson

from shipper.checkpoint import open_not_through_foreign_link
from shipper.sinks.base import SinkError, SinkGone, SinkStats

FSYNC_POLICIES = ("batch", "rotate", "never")
log = logging.getLogger(__name__)


def rotate_files(path: str, keep: int) -> bool:
    """PATH → PATH.1 → ... → PATH.keep; True if the oldest file had to be deleted."""
    dropped = False
    oldest = f"{path}.{keep}" if keep else path
    if os.path.exists(oldest):
        os.unlink(oldest)
        dropped = True
    for i in range(keep - 1, 0, -1):
        if os.path.exists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    if keep and os.path.exists(path):
        os.replace(path, f"{path}.1")
    return dropped


def ndjson_lines(records: list[dict[str, Any]]) -> list[bytes]:
    dumps = orjson.dumps
    return [dumps(r, default=str) + b"\n" for r in records]


def _append_all(f: BinaryIO, data: bytes) -> None:
    """All of ``data`` at the end of ``f``, or none of it: a write that fails part way
    (ENOSPC) is cut back, so the file never holds half a record glued to the next."""
    fd = f.fileno()
    start = os.fstat(fd).st_size
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, view[done:])
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _still_at(f: BinaryIO, path: str) -> bool:
    """Whether ``path`` still names the open file ``f``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(f.fileno())
    return (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev)


def _private_opener(path: str, flags: int) -> int:
    # never through a symlink another user planted at the path (root appending records
    # where it points); an admin's own link is followed, as before
    return open_not_through_foreign_link(path, flags, 0o640)


class FileSink:
    """Append NDJSON to ``path``, rotating at ``max_bytes`` and keeping ``keep`` old files."""

    def __init__(self, path: str, *, name: str = "file", max_bytes: int = 100 << 20, keep: int = 5,
                 fsync: str = "batch") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.name = name
        self.stats = SinkStats()
        self.stats.connected = True  # local: nothing to be connected to; up
        self.stats.extra.update(files_dropped=0, rotations=0)
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self._f: BinaryIO | None = None
        self._size = 0

    async def send(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        lines = ndjson_lines(records)
        self.stats.sent += len(records)
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            self._close_file()
            self.stats.connected = False  # "down" while the file cannot be written
            raise SinkError(f"{self.path}: {exc.strerror or exc}") from None
        self.stats.connected = True
        self.stats.acked += len(records)

    async def close(self) -> None:
        await asyncio.to_thread(self._close_file)

    def _open(self) -> BinaryIO:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # 0640 at most: records hold mail addresses. The umask narrows it (the service
        # files' 077 makes it 0600; widen the group's read by hand if wanted)
        # unbuffered: every write is ours to cut back if it fails half way (a full disk)
        f = open(self.path, "ab", buffering=0, opener=_private_opener)  # noqa: SIM115 -- kept open
        self._size = f.tell()
        return f

    def _write(self, lines: list[bytes]) -> None:
        f = self._f
        if f is not None and not _still_at(f, self.path):
            # moved or deleted (logrotate without copytruncate, an rm): a record written
            # on would go into the renamed file, or into none at all, and count delivered
            self._close_file()
            self.stats.extra["reopened"] = self.stats.extra.get("reopened", 0) + 1
            log.info("file sink %s: %s was moved or deleted: writing to a new one", self.name, self.path)
            f = None
        if f is None:
            f = self._open()
        self._f = f
        start = 0
        size = self._size
        for i, line in enumerate(lines):
            if size and size + len(line) > self.max_bytes:
                _append_all(f, b"".join(lines[start:i]))
                f = self._rotate(f)
                start, size = i, 0
            size += len(line)
        _append_all(f, b"".join(lines[start:]))
        if self.fsync == "batch":
            os.fsync(f.fileno())
        self._size = size

    def _rotate(self, f: BinaryIO) -> BinaryIO:
        f.flush()
        if self.fsync != "never":
            os.fsync(f.fileno())
        f.close()
        self._f = None
        if rotate_files(self.path, self.keep):
            self.stats.extra["files_dropped"] += 1
        self.stats.extra["rotations"] += 1
        self._f = f = self._open()
        return f

    def _close_file(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.flush()
                if self.fsync != "never":
                    os.fsync(f.fileno())
            finally:
                f.close()


class StdoutSink:
    """NDJSON on standard output (or any binary stream), flushed per batch."""

    def __init__(self, *, name: str = "stdout", stream: BinaryIO | None = None) -> None:
        self.name = name
        self.stats = SinkStats()
        self.stats.connected = True  # local: nothing to be connected to; up
        self._stream = stream

    async def send(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        data = b"".join(ndjson_lines(records))
        self.stats.sent += len(records)
        try:
            await asyncio.to_thread(self._write, data)
        except BrokenPipeError:  # "shipper run | head": nobody will ever read it again
            self.stats.connected = False
            raise SinkGone("standard output was closed by its reader") from None
        except OSError as exc:  # full disk behind a redirect
            self.stats.connected = False
            raise SinkError(f"{exc.strerror or exc}") from None
        self.stats.connected = True
        self.stats.acked += len(records)

    def _write(self, data: bytes) -> None:
        stream = self._stream if self._stream is not None else sys.stdout.buffer
        stream.write(data)
        stream.flush()

    async def close(self) -> None:
        return None
