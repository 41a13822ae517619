"""Reading finished inputs in batches: files, multilog directories, stdin, compressed archives.

Used by ``shipper parse``, ``replay``, ``track`` and ``stats`` (the live daemon
uses the follower instead). Lines come out in batches with their byte offsets in
the (decompressed) file, and each file's fingerprint, so a replayed line gets the
same event id as when it was shipped live.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import os
import re
import resource
import stat
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import BinaryIO

from shipper.fingerprint import FINGERPRINT_SCAN, fingerprint

CHUNK = 1 << 20
BATCH_LINES = 4096
# and at most about this many bytes: 4096 lines of 60 KB (a spam filter's header dump)
# held a 250 MB batch, 1 GB of RSS with its records
BATCH_BYTES = 4 << 20
_PLUS_ONE = (1).__add__  # a line's length with its newline


class InputError(Exception):
    """An input that cannot be read; the message is one line for stderr."""


class BinaryInput(InputError):
    """A file of binary data that is not gzip, bzip2 or xz: not read at all."""


@dataclass(slots=True)
class InputBatch:
    source: str
    file_id: str | None
    lines: list[bytes]  # without newline; a line longer than max_line is cut
    offsets: list[int]
    truncated: set[int] | None = None  # indexes of lines that were cut
    partial: int | None = None  # index of a last line that had no newline
    # index of a last line that had no newline, joined with its tail at the start of
    # the next file of the directory (multilog rotated in the middle of a long line)
    continued: int | None = None
    # where the reading is in the file as stored (compressed: fewer bytes than the lines'),
    # for a progress in the files' sizes; None: standard input
    read_to: int | None = None


def is_multilog_dir(path: str) -> bool:
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return "current" in names or any(n.startswith("@") for n in names)


# Archives compressed by other tools (zstd --rm @*.s) are listed too: not read, but said
# (they were passed over without a word, exit 0: 986 of 1,000 lines not replayed)
_READABLE_EXTS = (".gz", ".bz2", ".xz")
_UNREADABLE_EXTS = (".zst", ".zstd", ".lz4", ".lzma", ".lz", ".Z", ".br")
# an archive's or a rotated log's compressed name ends in one of these (one list for
# every pattern below: they had drifted apart)
_COMPRESSED = "|".join(re.escape(e) for e in _READABLE_EXTS + _UNREADABLE_EXTS)
_ARCHIVE_RE = re.compile(rf"@[0-9a-f]{{24}}\.[su]({_COMPRESSED})?")


def _archive_rank(name: str) -> int:
    """Which copy of an archive is read: the plain one, else one compressed readably."""
    return 0 if name[-2:] in (".s", ".u") else 2 if name.endswith(_UNREADABLE_EXTS) else 1


def multilog_files(path: str) -> list[str]:
    """Archives in TAI64N-name order (= chronological), then ``current``.

    Archives an admin compressed by hand (``@….s.gz``, ``.bz2``, ``.xz``) count
    too; where both the plain and a compressed copy exist, the plain one is read, else
    one that can be (by another compressor: said when read).
    """
    names = os.listdir(path)
    best: dict[str, str] = {}
    for n in names:
        m = _ARCHIVE_RE.fullmatch(n)
        if m:
            base = n[: m.start(1)] if m.group(1) else n
            if base not in best or _archive_rank(n) < _archive_rank(best[base]):
                best[base] = n
    files = [os.path.join(path, best[b]) for b in sorted(best)]
    _NEWEST[os.path.normpath(path)] = max(best, default="")[:25]
    if "current" in names:
        files.append(os.path.join(path, "current"))
    for f in files:
        # as the daemon, only regular files: whoever can write a log directory could
        # put a link to /etc/shadow there, named like an archive, for root to read into
        # the SIEM, or a FIFO whose open hangs (a security review)
        try:
            mode = os.lstat(f).st_mode
        except OSError:
            continue  # gone since the listing: its read says so
        if not stat.S_ISREG(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise InputError(f"{f}: {what} in a log directory: not read (remove it, or name "
                             "its target on the command line)")
    _LISTED.update(files)
    return files


# Files found by listing a directory (not named by the admin): opened as the daemon
# does, never through a link nor waiting on a FIFO put there between the listing and
# the open (a security re-test read a root-only file swapped in for current)
_LISTED: set[str] = set()
# A listed multilog directory → its newest archive's label then: multilog may rotate
# current while the archives before it are read (read_joined)
_NEWEST: dict[str, str] = {}


def _rotated_since(paths: list[str]) -> Iterator[str]:
    """``paths``, and before a listed directory's ``current`` the archives multilog made
    of it since the listing. Else the lines current held at the listing were lost, with
    exit 0, when multilog rotated it while the archives before it were read (a replay
    of a live directory: hours of archives). Only a rotation between the last look and
    the open is not seen."""
    for path in paths:
        d = os.path.normpath(os.path.dirname(path))
        if os.path.basename(path) == "current" and d in _NEWEST:
            for _ in range(100):  # each round reads a whole archive: bounded, not endless
                newest = _NEWEST[d]
                try:
                    now = multilog_files(d)
                except (InputError, OSError):
                    break  # (a link put there is refused when the directory is given again)
                # (current is no rotation: named as given, ./log/current, it was never
                # equal to the listing's log/current, and read 101 times)
                fresh = [f for f in now if os.path.basename(f) != "current"
                         and os.path.basename(f)[:25] > newest]
                if not fresh:
                    break
                yield from fresh
        yield _compressed_since(path)


def _compressed_since(path: str) -> str:
    """A listed archive, or the copy gzip/bzip2/xz made of it since the listing (a
    nightly job compressing old archives during a long replay: they were skipped as
    "No such file", their lines lost); the compressor removes the original only once
    its copy is whole."""
    if path not in _LISTED or not _ARCHIVE_RE.fullmatch(os.path.basename(path)) or os.path.lexists(path):
        return path
    for ext in _READABLE_EXTS + _UNREADABLE_EXTS:
        if _ARCHIVE_RE.fullmatch(os.path.basename(path + ext)) and os.path.lexists(path + ext):
            _LISTED.add(path + ext)  # opened as the listed files are: not through a link
            return path + ext
    return path


def open_log_file(path: str) -> int:
    """A log file, read-only, as the daemon opens them: not through a symbolic link, not
    waiting on a FIFO. Anything but a regular file (a directory made by hand where
    ``current`` should be, a FIFO) is refused like a file that cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", path)
    return fd


def _open_listed(path: str) -> BinaryIO:
    try:
        return os.fdopen(open_log_file(path), "rb")
    except OSError as exc:
        why = ("a symbolic link" if exc.errno == errno.ELOOP else "not a regular file"
               if exc.errno == errno.EISDIR else None)
        raise InputError(f"{path}: " + (f"{why} in a log directory: not read" if why else
                                         str(exc.strerror))) from None


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def expand(paths: list[str]) -> list[str]:
    """Inputs to files in reading order. Raises InputError for a missing path."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
        elif os.path.isdir(p):
            try:
                os.listdir(p)
            except OSError as exc:  # not "not a multilog directory": an unreadable one
                raise InputError(f"{p}: {exc.strerror}") from None
            if is_multilog_dir(p):
                out.extend(multilog_files(p))
            else:
                raise InputError(f"{p}: a directory but not a multilog directory (no current, no @ files)")
        elif os.path.exists(p):
            out.append(p)
        else:
            raise InputError(f"{p}: {_missing_why(p)}")
    return out


def written_to(out: BinaryIO) -> tuple[int, int] | None:
    """The identity of the regular file ``out`` writes to (else None): an input
    that is it would grow as it is read (`replay mail.log* --output mail.log.ndjson`,
    run again to resume: 2.4 GB in 20 s, until the disk was full)."""
    try:
        st = os.fstat(out.fileno())
    except (OSError, ValueError):  # (io.UnsupportedOperation: no file under it)
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def is_output(path: str, output: tuple[int, int] | None) -> bool:
    """Whether ``path`` is the output ``written_to`` told."""
    if output is None or path == "-":
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == output


def _missing_why(path: str) -> str:
    """Why a path does not exist: "no such file or directory", or what stat says when it
    is something else (a symbolic link loop, a file taken for a directory)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT and exc.strerror:
            return exc.strerror
    return "no such file or directory"


def _open_stored(path: str) -> tuple[BinaryIO, BinaryIO]:
    """A file opened for reading, decompressing gzip/bzip2/xz by their magic bytes (not
    by name: a multilog ``!gzip`` processor leaves gzip data in ``@….s``; nor for standard
    input), and the file as stored under it. Pipes too (``<(zcat …)``, a FIFO): the magic
    is peeked, not read back. A file of other binary data (a ``!zstd`` or encrypting
    processor's output) is refused with BinaryInput: its bytes cut at newlines would be
    garbage records."""
    if path == "-":
        f = sys.stdin.buffer
    elif path in _LISTED:
        f = _open_listed(path)
    else:
        try:
            f = open(path, "rb")  # noqa: SIM115 - returned to the caller
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror}") from None
    try:
        magic = f.peek(6)[:6]  # type: ignore[attr-defined]
    except OSError as exc:  # a directory opened by name, ...
        if f is not sys.stdin.buffer:
            f.close()
        raise InputError(f"{path}: {exc.strerror}") from None
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f), f  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(f), f  # type: ignore[return-value]
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(f), f  # type: ignore[return-value]
    if f is not sys.stdin.buffer and _binary(f):
        f.close()
        if path.endswith(_UNREADABLE_EXTS):
            raise BinaryInput(f"{path}: compressed by a tool other than gzip, bzip2 or xz: not "
                              "read (decompress it first)")
        raise BinaryInput(f"{path}: binary data, not text nor gzip, bzip2 or xz (a processor's "
                          "output such as zstd or encrypted?): not read")
    return f, f


def _binary(f: BinaryIO) -> bool:
    """Whether a file's first bytes are binary data (by multilog.content_kind). Not for
    standard input: a pipe's first peek may hold a few bytes only."""
    from shipper.multilog import BINARY, content_kind

    try:
        head = f.peek(512)[:512]  # type: ignore[attr-defined]
    except OSError:
        return False  # said by the read that follows
    return content_kind(head) == BINARY


_DECOMPRESSED = (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)


Opened = dict[str, tuple[BinaryIO, BinaryIO]]


_HELD = [0]  # descriptors held_open holds now, of every set (replay reads them all at once)


def held_open(paths: list[str]) -> Opened:
    """The files logrotate made of one log, opened before the first is read: it renames
    them all at once (mail.log.1 to mail.log.2.gz, mail.log to mail.log.1), and the
    names read later held other lines (a day of them lost, exit 0). One that cannot
    be opened is left to its reading, which says why. Bounded, a descriptor a file:
    at most 256 a set and half the open-files limit in all (five sets of 300 files
    under 1,024 failed "Too many open files", 301 files unread); give back what is
    left with ``release``."""
    opened: Opened = {}
    if len(paths) < 2:
        return opened
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = 256 if soft == resource.RLIM_INFINITY else min(256, soft // 2 - _HELD[0])
    for p in paths[:max(0, room)]:
        try:
            opened[p] = _open_stored(p)
        except InputError:
            continue
        _HELD[0] += 1
    return opened


def release(opened: Opened) -> None:
    """Close the files held_open opened and nothing read (a replay stopped early)."""
    for f, stored in opened.values():
        f.close()
        stored.close()
        _HELD[0] -= 1
    opened.clear()


def read_batches(path: str, max_line: int = 64 * 1024, batch_lines: int = BATCH_LINES,
                 opened: Opened | None = None) -> Iterator[InputBatch]:
    """Batches of lines of one file. Memory is bounded by the chunk and the line cap. A
    read error (a truncated or corrupt archive) ends the file there: the lines read
    before it come out (the last one, cut by the damage, flagged partial), then
    InputError. ``opened``: files opened before (held_open), taken from it."""
    if opened and path in opened:
        f, stored = opened.pop(path)
        _HELD[0] -= 1
    else:
        f, stored = _open_stored(path)
    failed: list[BaseException] = []
    try:
        yield from _split(f, path, max_line, batch_lines, failed, stored)
    finally:
        if f is not sys.stdin.buffer:
            f.close()
            stored.close()  # (a decompressor does not close the file it was given)
    if failed:
        raise InputError(f"{path}: {failed[0]}")


def _split(f: BinaryIO, path: str, max_line: int, batch_lines: int,
           failed: list[BaseException], stored: BinaryIO | None = None) -> Iterator[InputBatch]:
    """The batches of ``f``; a read error ends them, put in ``failed``. ``stored``: the
    file under a decompressor, whose position each batch tells (``read_to``)."""
    def read_to() -> int | None:
        try:
            return stored.tell() if stored is not None and path != "-" else None
        except (OSError, ValueError):
            return None

    file_id: str | None = None
    head = b""
    pos = 0  # offset of the first byte of `carry`
    carry = b""
    skipping = False  # inside a line already cut at max_line
    lines: list[bytes] = []
    offsets: list[int] = []
    truncated: set[int] = set()
    # read1, not read: a decompressor's read(n) decodes until it has n bytes and drops
    # them all when the stream breaks before (read1 gives what one step decoded, so
    # the lines before the damage are kept), and a pipe's read(n) waits for n bytes
    # (`tail -F current | shipper parse -` showed nothing until 1 MiB had come)
    read = f.read1
    source = path
    while True:
        try:
            chunk = read(CHUNK)
        except _READ_ERRORS as exc:
            failed.append(exc)
            chunk = b""
        if file_id is None and path != "-":
            head += chunk[:FINGERPRINT_SCAN - len(head)]
            file_id = fingerprint(head, complete=not chunk)
        if not chunk:
            break
        data = carry + chunk if carry else chunk
        start = 0
        if skipping:
            nl = data.find(b"\n")
            if nl < 0:
                pos += len(data)
                carry = b""
                continue
            start = nl + 1
            skipping = False
        end = data.rfind(b"\n")
        if end >= start:
            parts = data[start:end].split(b"\n")
            # Offsets: each line's start, summed in C rather than in a loop here
            offsets += accumulate(map(_PLUS_ONE, map(len, parts)), initial=pos + start)
            offsets.pop()  # where the next line starts
            if max(map(len, parts)) > max_line:
                for i, ln in enumerate(parts):
                    if len(ln) > max_line:
                        truncated.add(len(lines) + i)
                        parts[i] = ln[:max_line]
            lines += parts
            rest = data[end + 1:]
            pos += end + 1
        else:
            rest = data[start:]
            pos += start
        if len(rest) > max_line:
            # A line longer than the cap: keep its start, skip to its newline.
            truncated.add(len(lines))
            lines.append(rest[:max_line])
            offsets.append(pos)
            pos += len(rest)
            rest = b""
            skipping = True
        carry = rest
        # A short read: a pipe with no more for now (a file's only at its end). What it
        # gave goes on at once, not when the batch is full: `tail -F current | shipper
        # parse -` is read as it comes. (A decompressor's steps are short reads too.)
        # (Not before the file's id is settled: a file of one line not stamped as the
        # fingerprint knows stamps, a syslog mail.log, went out with no id, where the
        # daemon gives it one; the end of the file settles it.)
        if (len(lines) >= batch_lines or (lines and pos - offsets[0] >= BATCH_BYTES)
                or (lines and len(chunk) < CHUNK and not isinstance(f, _DECOMPRESSED)
                    and (file_id is not None or path == "-"))):
            if not skipping:
                yield InputBatch(source, file_id, lines, offsets, truncated or None, read_to=read_to())
                lines, offsets, truncated = [], [], set()
            elif len(lines) > 1:
                # the line being cut (the last) may yet end the file, and is flagged
                # partial then: it alone waits for the next batch
                k = len(lines) - 1
                yield InputBatch(source, file_id, lines[:k], offsets[:k],
                                 {i for i in truncated if i < k} or None, read_to=read_to())
                lines, offsets, truncated = lines[k:], offsets[k:], {0}
    partial = None
    if skipping:
        partial = len(lines) - 1  # the cut line had no newline either
    elif carry:
        partial = len(lines)
        lines.append(carry)
        offsets.append(pos)
    if lines:
        yield InputBatch(source, file_id, lines, offsets, truncated or None, partial, read_to=read_to())


_UNSAFE_RE = re.compile(rf"\.u({_COMPRESSED})?\Z")


def read_joined(paths: list[str], max_line: int = 64 * 1024, batch_lines: int = BATCH_LINES,
                on_error: Callable[[str, InputError], None] | None = None,
                opened: Opened | None = None) -> Iterator[InputBatch]:
    """The batches of the files of one multilog directory, in order, with a line that
    multilog cut at a rotation (longer than ~2000 bytes: the archive ends without a
    newline, the next file starts with the rest, unstamped) joined again, as the live
    follower joins it: one line at the fragment's file and offset, flagged continuation
    (``InputBatch.continued``), and the tail is not a line of its own; a line longer than
    a whole file (the logger's size limit) spans three files or more, the middle ones
    without a newline: they are joined too, up to ``max_line``. A ``.u`` file's
    last line (multilog died) is not joined, nor a fragment cut by the line cap or by
    damage. ``on_error``: a file that cannot be read to its end is told to it and the
    next one goes on (else InputError is raised). ``opened``: see read_batches."""
    held: InputBatch | None = None  # the previous file's last batch, ending in a fragment
    for path in _rotated_since(paths):
        first = True
        last: InputBatch | None = None
        damaged = False
        goes_on = False  # held's line went through this file: it may go on in the next
        try:
            for b in read_batches(path, max_line, batch_lines, opened):
                if first and held is not None:
                    goes_on = _join(held, b, max_line, not _UNSAFE_RE.search(path))
                    if not goes_on:
                        yield held
                        held = None
                first = False
                if last is not None:
                    yield last
                    last = None
                if b.partial is None:  # only a file's last batch, ending mid-line, may join
                    if b.lines:        # the next file's first: the others go at once (a pipe's
                        yield b        # lines as they come)
                else:
                    last = b
        except InputError as exc:
            if on_error is None:
                if held is not None:
                    yield held
                if last is not None:
                    yield last
                raise
            damaged = True
            on_error(path, exc)
        if held is not None and (damaged or not goes_on):  # this file had no line: the fragment stays one
            yield held
            held = None
        if last is None:
            continue
        if (not damaged and last.partial is not None and last.partial == len(last.lines) - 1
                and last.partial not in (last.truncated or ()) and not _UNSAFE_RE.search(path)):
            held = last
        else:
            yield last
    if held is not None:
        yield held


def _join(held: InputBatch, b: InputBatch, max_line: int, middle_ok: bool) -> bool:
    """Join ``held``'s fragment with the first line of ``b`` (the next file) if that line
    is its tail: at the file's start, and not stamped. True: ``b`` held no newline, only
    the line's middle, joined to the fragment (``middle_ok``: not a ``.u`` file, cut by a
    crash), which stays held, to go on in the file after."""
    from shipper.multilog import should_join

    if not b.lines or b.offsets[0] != 0:
        return False
    i = held.partial
    assert i is not None
    if not should_join(b.lines[0][:26]):
        return False
    if b.partial == 0:
        if not middle_ok or len(b.lines) != 1 or 0 in (b.truncated or ()):
            return False  # the next file has no complete line: both stay as they are
        # the middle of a line longer than a file: up to max_line, flagged when cut
        joined = held.lines[i] + b.lines[0]
        if len(joined) > max_line:
            held.truncated = (held.truncated or set()) | {i}
        held.lines[i] = joined[:max_line]
        b.lines, b.offsets, b.partial = [], [], None
        return True
    joined = held.lines[i] + b.lines[0]
    if len(joined) > max_line or 0 in (b.truncated or ()):
        # the parser gets max_line bytes at most and could not tell it was cut
        held.truncated = (held.truncated or set()) | {i}
    held.lines[i] = joined[:max_line]
    held.partial, held.continued = None, i
    del b.lines[0], b.offsets[0]
    if b.truncated:
        b.truncated = {j - 1 for j in b.truncated if j > 0} or None
    if b.partial is not None:
        b.partial -= 1
    return False


_ROTATED_RE = re.compile(r"(?P<base>.+?)(?:\.(?P<n>\d{1,4})|-(?P<date>\d{8}(?:\d{2})?))?(?:\.gz|\.bz2|\.xz)?\Z")


def _rotation(path: str) -> tuple[str, tuple[int, int]]:
    """(the live file's path, place) of a file logrotate made or may make: ``mail.log.2.gz``,
    ``mail.log.1``, ``mail.log-20240101.gz``, ``mail.log``; oldest first."""
    d, name = os.path.split(path)
    m = _ROTATED_RE.match(name)
    assert m is not None
    if m.group("n") is not None:
        return os.path.join(d, m.group("base")), (1, -int(m.group("n")))
    if m.group("date") is not None:
        return os.path.join(d, m.group("base")), (0, int(m.group("date")))
    return os.path.join(d, m.group("base")), (2, 0)


@dataclass(slots=True)
class InputSet:
    """Files read as one stream, in this order, with one parser."""

    files: list[str]
    multilog: bool  # the files of one multilog directory: a line cut at a rotation is joined
    name: str  # the directory, or the log's live file (mail.log for mail.log.2.gz)


_COMPRESSED_RE = re.compile(rf"({_COMPRESSED})\Z")
_MEMBER_RE = re.compile(rf"@[0-9a-f]{{24}}\.[su]({_COMPRESSED})?\Z|current\Z")


def _multilog_place(path: str) -> str:
    """A file of a multilog directory's place in it: archives by label, current last."""
    name = os.path.basename(path)
    return "~" if name == "current" else name[:25]


def input_sets(paths: list[str], plain_dirs: bool = False) -> list[InputSet]:
    """The arguments of parse-like commands → the streams to read. A multilog directory
    is one (archives by label, then current); so are its files named one by one, in
    whatever order ($(ls -r dir/@*)): lines of one microsecond on both sides of a
    rotation then stay in order. The files logrotate made of one log (mail.log.2.gz,
    mail.log.1, mail.log) are one, oldest first. A file named twice (a directory given
    twice, or with one of its files) is read once. ``plain_dirs``: a directory that is
    not multilog's gives its files (else it is an InputError, as a missing path is)."""
    sets: dict[tuple[str, str], InputSet] = {}
    seen: set[str] = set()
    for p in paths:
        if p == "-":
            sets[("-", str(len(sets)))] = InputSet(["-"], False, "-")
            continue
        if os.path.isdir(p) and not is_multilog_dir(p) and plain_dirs:
            try:
                names = os.listdir(p)
            except OSError as exc:  # multilog makes its directories 0700: not root's alone
                raise InputError(f"{p}: {exc.strerror}") from None
            # regular files only, not links (see multilog_files)
            files = sorted(os.path.join(p, n) for n in names
                           if not n.startswith(".") and _regular(os.path.join(p, n)))
            _LISTED.update(files)
        else:
            files = expand([p])
        fresh = [f for f in files if os.path.realpath(f) not in seen]
        seen.update(os.path.realpath(f) for f in files)
        if os.path.isdir(p) and is_multilog_dir(p):
            got = sets.get(("dir", os.path.realpath(p)))
            if got is not None:  # some of its files were named before it: one stream still
                got.files.extend(fresh)
            elif fresh:
                sets[("dir", os.path.realpath(p))] = InputSet(fresh, True, p)
            continue
        for f in fresh:
            parent = os.path.dirname(os.path.abspath(f))
            if _MEMBER_RE.match(os.path.basename(f)) and is_multilog_dir(parent):
                key, multilog, name = ("dir", os.path.realpath(parent)), True, parent
            else:
                base, _ = _rotation(f)
                key, multilog, name = ("log", base), False, base
            got = sets.get(key)
            if got is None:
                sets[key] = InputSet([f], multilog, name)
            else:
                got.files.append(f)
    for st in sets.values():
        if st.multilog:
            st.files.sort(key=_multilog_place)
        elif len(st.files) > 1:
            # a compressed copy beside its original (gzip -k, logrotate compressing it
            # right now: a torn .gz) is the same lines: the original is read, as in a
            # multilog directory (both were, every record twice)
            plain = set(st.files)
            st.files = [f for f in st.files if _COMPRESSED_RE.sub("", f) == f or _COMPRESSED_RE.sub("", f) not in plain]
            st.files.sort(key=lambda f: _rotation(f)[1])
    return list(sets.values())
