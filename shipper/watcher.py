"""Change detection for log directories: inotify through ctypes, or polling (I/O edge).

The stdlib has no inotify binding; libc's ``inotify_init1``/``inotify_add_watch``
are called through ``ctypes``, the descriptor is non-blocking and registered
with the event loop (``loop.add_reader``), so a write into ``current`` wakes
its follower within a fraction of a millisecond. Where inotify is missing
(not Linux, no libc symbol, watch limit reached, a filesystem without events
such as some network mounts) the watcher falls back to polling at
``poll_interval`` by itself. Even with inotify a slow safety poll
(``safety_interval``) wakes everybody, in case an event was missed (queue
overflow, a rename across directories).

A callback gets the name of the entry that changed (``str``) and the inotify
mask, or ``(None, 0)`` meaning "anything may have changed: look". Callbacks run in the event loop
and must be cheap (set an event, stat a file).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("shipper.watcher")

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

DIR_MASK = (IN_MODIFY | IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE
            | IN_DELETE_SELF | IN_MOVE_SELF | IN_CLOSE_WRITE)
NAME_EVENTS = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE

_EVENT_HEAD = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)

Callback = Callable[[str | None, int], None]


@dataclass(slots=True)
class InotifyEvent:
    wd: int
    mask: int
    cookie: int
    name: str  # "" for events on the watched directory itself


def parse_events(buf: bytes) -> list[InotifyEvent]:
    """Decode a read() of an inotify descriptor (pure). A torn tail is ignored."""
    out: list[InotifyEvent] = []
    pos = 0
    size = _EVENT_HEAD.size
    while pos + size <= len(buf):
        wd, mask, cookie, length = _EVENT_HEAD.unpack_from(buf, pos)
        raw = buf[pos + size:pos + size + length]
        if len(raw) < length:
            break
        name = raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
        out.append(InotifyEvent(wd, mask, cookie, name))
        pos += size + length
    return out


@functools.cache
def _inotify_calls() -> tuple[Any, Any, Any]:
    """libc's inotify_init1, inotify_add_watch, inotify_rm_watch, loaded once: each
    ``CDLL`` makes a function-pointer class of its own, a reference cycle that each
    reload (each new Inotify) left to Python's full collection."""
    libname = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(libname, use_errno=True)
        init1, add, rm = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
    except (OSError, AttributeError) as exc:
        raise OSError(errno.ENOSYS, f"inotify not available: {exc}") from None
    init1.argtypes = [ctypes.c_int]
    add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    rm.argtypes = [ctypes.c_int, ctypes.c_int]
    return init1, add, rm


class Inotify:
    """A non-blocking inotify descriptor. Raises OSError where unavailable."""

    def __init__(self) -> None:
        self._init1, self._add, self._rm = _inotify_calls()
        fd = self._init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int:
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        return wd

    def rm_watch(self, wd: int) -> None:
        self._rm(self.fd, wd)

    def read(self) -> list[InotifyEvent]:
        """All queued events (empty when none)."""
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not data:
                break
            chunks.append(data)
            if len(data) < 4096:
                break
        return parse_events(b"".join(chunks)) if chunks else []

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Watcher:
    """Calls back on changes in watched directories. ``mode``: auto | inotify | poll."""

    def __init__(self, mode: str = "auto", poll_interval: float = 1.0,
                 safety_interval: float = 5.0) -> None:
        if mode not in ("auto", "inotify", "poll"):
            raise ValueError(f"watch mode must be auto, inotify or poll, not {mode!r}")
        self.requested = mode
        self.poll_interval = poll_interval
        self.safety_interval = safety_interval
        self.mode = "poll" if mode == "poll" else "inotify"
        self.overflows = 0
        self._overflow_said = -math.inf
        self._inotify: Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_wd: dict[int, dict[int, Callback]] = {}
        self._handles: dict[int, tuple[str, int | None, Callback]] = {}
        self._next_handle = 1
        self._ticker: asyncio.Task[None] | None = None
        self._delivering = False
        self.unwatched = 0  # watches refused for lack of room (ENOSPC) in the last look
        # handles being told of the watch they just got (see names_seen)
        self._blind: set[int] = set()
        self._no_watch_said = False

    def _start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self.mode == "inotify":
            try:
                self._inotify = Inotify()
                self._loop.add_reader(self._inotify.fd, self._on_readable)
            except OSError as exc:
                # out of instances (fs.inotify.max_user_instances, all of this user's
                # programs together): an admin's limit, said even in auto mode
                self._fall_back(str(exc), exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM))
        self._ticker = self._loop.create_task(self._tick(), name="watcher poll")

    def _fall_back(self, reason: str, limit: bool = False) -> None:
        if self.requested == "inotify" or limit:
            log.warning("inotify %s (%s%s): polling every %.3gs",
                        "unavailable" if limit else "requested but unavailable", reason,
                        "; the limit is for all programs of this user: sysctl "
                        "fs.inotify.max_user_instances" if limit else "", self.poll_interval)
        self.mode = "poll"
        if self._inotify is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        self._by_wd.clear()

    def watch(self, directory: str, callback: Callback) -> int:
        """Watch a directory (its entries); returns a handle for ``unwatch``.

        Must be called from a running event loop.
        """
        self._start()
        handle = self._next_handle
        self._next_handle += 1
        self._handles[handle] = (directory, None, callback)
        self._attach(handle, directory, callback)
        return handle

    def _attach(self, handle: int, directory: str, callback: Callback) -> None:
        """An inotify watch for ``handle`` (at ``watch``, and again on the poll tick for a
        directory that had none: gone, replaced, or not there yet)."""
        if self._inotify is None:
            return
        try:
            wd = self._inotify.add_watch(directory, DIR_MASK | IN_ONLYDIR)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                # out of watches (fs.inotify.max_user_watches): only the directories
                # without one are polled, each poll tick trying again; all of them
                # polled, 1,000 directories cost 4 % of a core idle and a second of
                # latency each, and nothing was said in auto mode (a scale hunt)
                self.unwatched += 1
                if not self._no_watch_said:
                    self._no_watch_said = True
                    log.warning("inotify: out of watches (%s; the limit is for all programs "
                                "of this user: sysctl fs.inotify.max_user_watches): directories "
                                "without one are polled every %.3gs", exc, self.poll_interval)
                return
            if exc.errno in (errno.ENOSYS, errno.EINVAL):
                self._fall_back(str(exc))
                for h, (d, _, cb) in list(self._handles.items()):
                    self._handles[h] = (d, None, cb)
            return  # ENOENT etc.: the directory is gone; the poll tick looks again
        self._by_wd.setdefault(wd, {})[handle] = callback
        self._handles[handle] = (directory, wd, callback)

    def unwatch(self, handle: int) -> None:
        entry = self._handles.pop(handle, None)
        if entry is None:
            return
        _, wd, _ = entry
        if wd is not None and wd in self._by_wd:
            cbs = self._by_wd[wd]
            cbs.pop(handle, None)
            if not cbs:
                del self._by_wd[wd]
                if self._inotify is not None:
                    self._inotify.rm_watch(wd)

    def names_seen(self, handle: int) -> bool:
        """Whether every name made in ``handle``'s directory reaches its callback as an
        event (an inotify watch is on it). False while polling: a file made and deleted
        between two looks is never named."""
        entry = self._handles.get(handle)
        return (self._inotify is not None and entry is not None and entry[1] is not None
                and handle not in self._blind)

    def catch_up(self) -> None:
        """Deliver the events queued now, before the event loop would. A follower
        calls it before it lists its directory: an archive made and deleted while a
        long poll read file after file is in no listing, and its event, handled only
        after the poll had passed it, would come too late to make it a gap."""
        if self._inotify is not None and not self._delivering:
            self._on_readable()

    def _on_readable(self) -> None:
        assert self._inotify is not None
        try:
            events = self._inotify.read()
        except OSError as exc:
            log.error("inotify read failed (%s): falling back to polling", exc)
            self._fall_back(str(exc))
            return
        self._delivering = True  # a callback's catch_up must not deliver later events first
        try:
            self._deliver(events)
        finally:
            self._delivering = False

    def _deliver(self, events: list[InotifyEvent]) -> None:
        for ev in events:
            if ev.mask & IN_Q_OVERFLOW:
                # events were dropped: every directory is listed again, and its follower
                # told why (files made and deleted meanwhile were not seen by name)
                self.overflows += 1
                now = time.monotonic()
                if now - self._overflow_said >= 60:
                    self._overflow_said = now
                    log.warning("inotify queue overflowed (%d times so far): events were lost; "
                                "listing every directory again", self.overflows)
                self._call_all(IN_Q_OVERFLOW)
                continue
            cbs = self._by_wd.get(ev.wd)
            if not cbs:
                continue
            if ev.mask & (IN_IGNORED | IN_MOVE_SELF | IN_DELETE_SELF):
                # removed, unmounted or renamed away: the path may name another directory
                # next (mv log log.old; mkdir log): looked at and watched again from the
                # poll tick, not after the safety interval with a watch on the old one
                del self._by_wd[ev.wd]
                if not ev.mask & IN_IGNORED and self._inotify is not None:
                    with contextlib.suppress(OSError):
                        self._inotify.rm_watch(ev.wd)
                for h in list(cbs):
                    if h in self._handles:
                        d, _, cb = self._handles[h]
                        self._handles[h] = (d, None, cb)
            name = ev.name or None
            for cb in list(cbs.values()):
                _safe_call(cb, name, ev.mask)

    def _call_all(self, mask: int = 0) -> None:
        for _, _, cb in list(self._handles.values()):
            _safe_call(cb, None, mask)

    async def _tick(self) -> None:
        """Polling mode: everybody looks every poll_interval. inotify: the slow safety poll;
        plus a poll_interval look for handles whose directory has no watch."""
        while True:
            if self.mode == "poll":
                await asyncio.sleep(self.poll_interval)
                self._call_all()
                continue
            waited = 0.0
            while waited < self.safety_interval and self.mode == "inotify":
                await asyncio.sleep(self.poll_interval)
                waited += self.poll_interval
                self.unwatched = 0
                self.rewatch()
                if self._no_watch_said and not self.unwatched and self._inotify is not None:
                    self._no_watch_said = False
                    log.info("inotify: every directory has a watch again")
            self._call_all()

    def rewatch(self) -> None:
        """Try again to watch the directories that have no watch (gone, replaced, not
        there yet, or out of watches), and call back each of them to look. That look
        compares as a poll's (names_seen is False for it): names made before the watch
        were not seen. A directory renamed away and made again had its watch back at the
        next tick, and its first look after it taken for one that had seen every name: the
        archives multilog made and deleted meanwhile (s4096 n3, 1,000 lines/s: 175-560
        lines) were lost without a gap (a hunt)."""
        if self._inotify is None:
            return  # polling: every tick looks anyway
        for h, (d, wd, cb) in list(self._handles.items()):
            if wd is None:
                self._attach(h, d, cb)
                self._blind.add(h)
                try:
                    _safe_call(cb, None, 0)
                finally:
                    self._blind.discard(h)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        self._by_wd.clear()
        self._handles.clear()
        self._loop = None


def _safe_call(cb: Callback, name: str | None, mask: int) -> None:
    try:
        cb(name, mask)
    except Exception:  # a broken callback must not stop the watcher
        log.exception("watcher callback failed")
