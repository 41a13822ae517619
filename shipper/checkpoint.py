"""Checkpoint store: where each source may resume, kept durably (I/O edge).

One JSON file (orjson) for all sources of an agent::

    {"schema": 1, "written_unix_ns": ..., "sources": {"<key>": <position>, ...}}

Written atomically: a temp file in the same directory, write, fsync, rename
over the old file, fsync the directory (without the last step a crash can
leave the rename unrecorded, or a file of NULs: grafana/loki #6268, Filebeat
#25135). A missing, truncated, NUL-filled or otherwise unreadable file never
raises: ``load`` returns no positions, puts a one-line reason in
``warnings`` and counts it in ``corrupt_loads``; the caller restarts those
sources from its configured position. A corrupt file is kept aside as
``<name>.corrupt`` for inspection, so it is not silently lost either.

The store never lives inside a log directory: multilog owns those (its
``n`` limit counts ``@`` files, and other tools list them);
``ensure_outside`` refuses such a path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time
from typing import Any

import orjson

SCHEMA = 1


class CheckpointPathError(ValueError):
    """The checkpoint path is inside a directory we read logs from."""


def ensure_outside(path: str, log_dirs: list[str]) -> None:
    """Raise CheckpointPathError if ``path`` lies inside one of ``log_dirs``."""
    real = os.path.realpath(path)
    for d in log_dirs:
        rd = os.path.realpath(d)
        if real == rd or real.startswith(rd.rstrip(os.sep) + os.sep):
            raise CheckpointPathError(
                f"checkpoint file {path} is inside the log directory {d}: put it elsewhere")


def unsafe_dir_problem(path: str, tightened: frozenset[str] = frozenset()) -> str | None:
    """Why another user could swap the files of directory ``path`` (a symlink in place
    of a state file: the daemon, root as a rule, writes through it where it points;
    a checkpoint or buffer segment of theirs: forged records), or None. ``path`` must
    be this user's (root's will do for root), writable by no one else; each directory
    above it owned by this user or root, and not writable by all or a group (but root's)
    unless sticky (/tmp).
    A symbolic link on the way (systemd's DynamicUser, /var on another disk) is judged
    by where it leads, and must itself be this user's or root's. Missing parts are made
    by us later, 0700. (A security review: a state_dir another user had made first let
    them overwrite any file.) ``tightened``: directories of this user judged as they
    will be once run takes the others' write off them (tighten_own_dirs; for check)."""
    where = os.path.abspath(path)
    prefix = "/"
    for part in where.strip("/").split("/"):
        prefix = os.path.join(prefix, part)
        try:
            st = os.lstat(prefix)
        except OSError:
            break
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (os.geteuid(), 0):
                return _owned_problem(prefix, st.st_uid, f"{prefix}, a link on the way to {path},")
            why = _walk_problem(os.path.realpath(os.path.dirname(prefix)), path, own=False,
                                tightened=tightened)
            if why is not None:
                return why
    real = os.path.realpath(where)
    return _walk_problem(real, path if real == where else f"{real} (where {path} leads)", own=True,
                         tightened=tightened)


def _walk_problem(start: str, path: str, own: bool, tightened: frozenset[str] = frozenset()) -> str | None:
    """unsafe_dir_problem's rules for ``start`` (``own``: the directory itself) and
    each directory above it; ``path`` names it in what is said."""
    me = os.geteuid()
    p = start
    while True:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            st = None
        except OSError:
            return None  # not ours to judge: its use says why
        what = path if own else f"{p}, a directory above {path},"
        mode = st.st_mode & ~0o022 if st is not None and p in tightened else (st.st_mode if st else 0)
        if st is None:
            pass
        elif st.st_uid not in (me, 0):
            return _owned_problem(p, st.st_uid, what, own)
        elif (own and mode & 0o022) or (not own and not mode & 0o1000 and (
                mode & 0o002 or (mode & 0o020 and st.st_gid != 0))):
            # (above it: a group's members could rename it away and make their own,
            # as all could; root's group is root's alone)
            by = "all" if mode & 0o002 else "its group"
            return (f"{what} is writable by {by} (mode {mode & 0o7777:o}): another user "
                    f"could put links or files in place of shipper's; chmod go-w {p}")
        own = False
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def _owned_problem(target: str, uid: int, what: str, own: bool = False) -> str:
    from shipper.config import user_name  # (a heavy module: only when said)

    owner, user = user_name(uid), user_name(os.geteuid())
    # (root running `shipper buffer` on the service user's buffer: run it as that user;
    # a chown to root would stop the service)
    fix = (f"run shipper as {owner} (sudo -u {owner} shipper …), or, if it is to run as {user}, "
           f"chown -R {user} {target}" if own else
           f"use a directory that {owner} cannot change (install -d -m 700 -o {user})")
    return (f"{what} belongs to {owner}, this runs as {user}: {owner} could put links "
            f"or files in place of shipper's; {fix}")


def open_not_through_foreign_link(path: str, flags: int, mode: int, regular_only: bool = True) -> int:
    """``os.open`` that follows a symbolic link at ``path`` only when it is this user's
    or root's: an admin's link (a file sink's path pointing at another disk) works, as
    it did, while one another user planted there is refused (root would write where
    it points; a security review). ``regular_only``: a FIFO or device refused (a
    daemon's file; ``replay --output /dev/null`` is the admin's choice)."""
    flags |= os.O_NONBLOCK  # a FIFO there: not waited on for good (a stop hung on it)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (os.geteuid(), 0):
            from shipper.config import user_name

            raise PermissionError(errno.EPERM, f"a symbolic link of {user_name(st.st_uid)}'s: not "
                                  "written through (remove it, or make it yours)", path) from None
        fd = os.open(path, flags, mode)
    if regular_only and not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or directory): not written", path)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def checkpoint_dir(state_dir: str) -> str:
    """Where the sources' checkpoint files are: one per source, ``<name>.json``."""
    return os.path.join(state_dir, "checkpoints")


def checkpoint_path(state_dir: str, source: str) -> str:
    return os.path.join(checkpoint_dir(state_dir), f"{source}.json")


class CheckpointStore:
    """Positions by source key, saved to one file.

    Positions are set and snapshotted on one thread (the event loop); ``write``,
    the part that waits for the disk, may run on another, one write at a time."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.warnings: list[str] = []
        self.corrupt_loads = 0
        self.writes = 0
        self.write_errors = 0
        self.remade_dirs = 0  # times its directory was found removed and made again
        self._positions: dict[str, Any] = {}
        self._snapshots = 0  # snapshots taken; the newest written is _written
        self._written = 0
        self._write_lock = threading.Lock()

    # -- reading -----------------------------------------------------------

    def load(self, set_aside: bool = True) -> dict[str, Any]:
        """Positions from disk ({} when missing or unreadable; see ``warnings``). A
        corrupt file is kept aside as ``.corrupt`` unless ``set_aside`` is False (a look
        by another part than the source's own: the source says it when it loads)."""
        self._positions = {}
        try:
            with open(self.path, "rb") as f:
                data = f.read(64 << 20)
        except FileNotFoundError:
            self._warn(f"checkpoint {self.path}: missing (first start, or lost)", corrupt=False)
            return {}
        except IsADirectoryError:
            # (a mkdir -p or a restore gone wrong): no save could replace it, and the
            # start was refused, a crash loop under supervise: moved aside, as a corrupt
            # one, under a name free (.corrupt may be an earlier corrupt checkpoint's)
            if not set_aside:
                self._warn(f"checkpoint {self.path}: a directory, not a file")
                return {}
            from pathlib import Path

            from shipper.diskqueue import aside_name  # (the buffer's own naming: .N.corrupt)

            where = str(aside_name(Path(self.path)))
            try:
                os.rename(self.path, where)
            except OSError as exc:
                self._warn(f"checkpoint {self.path}: a directory, not a file, and it cannot be "
                           f"moved aside ({exc.strerror}): remove it; sources restart from their "
                           "start position")
                return {}
            self._warn(f"checkpoint {self.path}: a directory, not a file: moved aside as {where}; "
                       "sources restart from their start position")
            return {}
        except OSError as exc:
            self._warn(f"checkpoint {self.path}: unreadable: {exc.strerror}")
            return {}
        problem = _check(data)
        if problem is not None:
            self._warn(f"checkpoint {self.path}: {problem}; sources restart from their start position")
            if set_aside:
                self._keep_aside(data)
            return {}
        self._positions = dict(orjson.loads(data)["sources"])
        return dict(self._positions)

    def get(self, key: str) -> Any:
        return self._positions.get(key)

    # -- writing -----------------------------------------------------------

    def set(self, key: str, position: Any) -> None:
        self._positions[key] = position

    def pop(self, key: str) -> Any:
        return self._positions.pop(key, None)

    def keys(self) -> list[str]:
        return list(self._positions)

    def save(self) -> bool:
        """Write all positions atomically. False (and a warning) on an I/O error."""
        snap = self.snapshot()
        return snap is not None and self.write(snap)

    def snapshot(self) -> tuple[int, bytes] | None:
        """The document to write now, numbered; None (and a warning) if a position
        cannot be serialised."""
        doc = {"schema": SCHEMA, "written_unix_ns": time.time_ns(), "sources": self._positions}
        try:
            payload = orjson.dumps(doc)
        except TypeError as exc:
            self.write_errors += 1
            self._warn(f"checkpoint {self.path}: write failed: {exc}", corrupt=False)
            return None
        self._snapshots += 1
        return self._snapshots, payload

    def write(self, snap: tuple[int, bytes]) -> bool:
        """Write a snapshot (from any thread, one at a time). One older than a snapshot
        already written is not: a write that waited for the lock must not take the file
        back (a stop's last save can overtake one running in a thread)."""
        number, payload = snap
        with self._write_lock:
            if number <= self._written:
                return True
            try:
                try:
                    atomic_write(self.path, payload)
                except FileNotFoundError:
                    # Its directory removed while we run (rm -rf by hand, a cleaner): made
                    # again, as at start. Else every write failed till the stop, and the next
                    # start found no checkpoint: "end" skipped what was written meanwhile
                    # (3,250 lines in a second's restart), "all" sent every kept line twice.
                    # Not the state_dir above it: that one is made 0700 at start.
                    directory = os.path.dirname(self.path)
                    if os.path.lexists(directory):
                        raise
                    os.mkdir(directory, 0o700)
                    self.remade_dirs += 1
                    atomic_write(self.path, payload)
            except OSError as exc:
                self.write_errors += 1
                self._warn(f"checkpoint {self.path}: write failed: {exc}", corrupt=False)
                return False
            self._written = number
            self.writes += 1
            return True

    # -- internals ---------------------------------------------------------

    def _warn(self, text: str, corrupt: bool = True) -> None:
        if corrupt:
            self.corrupt_loads += 1
        self.warnings.append(text)
        del self.warnings[:-100]  # bounded

    def _keep_aside(self, data: bytes) -> None:
        try:
            atomic_write(self.path + ".corrupt", data)
        except OSError:
            pass


def _check(data: bytes) -> str | None:
    """Why ``data`` is not a usable checkpoint document, or None."""
    if not data:
        return "empty file"
    if data.strip(b"\x00") == b"":
        return "file full of NUL bytes"
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"not JSON ({str(exc).splitlines()[0][:80]})"
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("schema") != SCHEMA:
        return f"unknown schema {doc.get('schema')!r} (expected {SCHEMA})"
    if not isinstance(doc.get("sources"), dict):
        return "no 'sources' object"
    return None


_TEMP_RE = re.compile(r"\.tmp\.(\d+)$")


def remove_stale_temps(directory: str) -> int:
    """Remove the temp files of ``atomic_write`` that a dead process left in
    ``directory`` and below (killed between write and rename); returns how many."""
    removed = 0
    for root, _, files in os.walk(directory):
        for name in files:
            m = _TEMP_RE.search(name)
            if m is None or _alive(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's: alive
    return True


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp, write, fsync, rename, fsync dir."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    tmp = f"{path}.tmp.{os.getpid()}"
    # a new file, never one found there (a symlink planted under our name: its target
    # truncated and written, a security review): a leftover of ours is removed first
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        # not left behind: on a full disk a half-written state of megabytes would keep
        # the space the buffer needs
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
