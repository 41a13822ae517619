"""multilog directory semantics and the follower's decisions (pure: no I/O).

A daemontools ``multilog`` directory holds (DT src/multilog.c, 0.76):

* ``current`` — the live file; ``@<tai64n>.s`` — rotated archives ("safe"),
  ``@<tai64n>.u`` — a ``current``/``previous`` left by a crash (may end
  without a newline); archives sort chronologically by name (lowercase hex);
* ``previous`` / ``processed`` — transient names while a ``!processor`` runs;
  with a processor the archive is the processor's *output* (a new inode);
* ``state``, ``newstate``, ``lock`` — never log data.

Rotation without a processor is rename(current→previous), link(previous,
@ts.s), unlink(previous): the archive is the same inode as the ``current`` we
were reading. Then the oldest ``@`` files are unlinked while ``n`` is exceeded.
With a processor, multilog (blocked, writing nothing) waits for it, then
unlink(previous) *before* rename(processed, @ts.s): for a moment the rotated
data is only in ``processed``, under no name the follower reads.

The follower keeps, per directory: ``done`` (the label of the newest archive
whose data is fully accounted for: read, skipped as ours, or reported lost),
``pending`` (raw files we read to the end whose archive we have not seen yet)
and what it has observed of the archives (``Known``, kept even after an
archive is deleted, so a lost file can be named and sized). ``plan_next``
decides, from those and a listing of the directory, what to read next.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shipper.tai64n import LabelError, decode_ns

# File kinds in a multilog directory.
CURRENT = "current"
ARCHIVE_S = "archive_s"
ARCHIVE_U = "archive_u"
PREVIOUS = "previous"
PROCESSED = "processed"
STATE = "state"
LOCK = "lock"
OTHER = "other"

_ARCHIVE_RE = re.compile(r"@[0-9a-f]{24}\.[su]\Z")
_LABEL_RE = re.compile(r"@[0-9a-f]{24}")
_STAMP_RE = re.compile(rb"@[0-9a-f]{24}[ \t]")

# Content kinds of an archive, told apart by the first bytes (a !processor
# such as gzip leaves compressed data in @….s).
TEXT = "text"
GZIP = "gzip"
BZIP2 = "bzip2"
XZ = "xz"
BINARY = "binary"
# An empty @….s: a processor that wrote nothing (loggers never rotate an empty
# current), so like BINARY it holds none of its raw file's lines
EMPTY = "empty"
UNREADABLE = (BINARY, EMPTY)
COMPRESSED = (GZIP, BZIP2, XZ)

Ident = tuple[int, int]  # (st_dev, st_ino)


def classify(name: str) -> str:
    """Kind of a directory entry by its name."""
    if name == "current":
        return CURRENT
    if name.startswith("@"):
        if _ARCHIVE_RE.match(name):
            return ARCHIVE_S if name[-1] == "s" else ARCHIVE_U
        return OTHER
    if name == "previous":
        return PREVIOUS
    if name == "processed":
        return PROCESSED
    if name in ("state", "newstate"):
        return STATE
    if name == "lock":
        return LOCK
    return OTHER


def is_archive(name: str) -> bool:
    return _ARCHIVE_RE.match(name) is not None


def is_label(text: str) -> bool:
    """Whether ``text`` is an archive label as multilog writes it (``@`` + 24 hex digits)."""
    return _LABEL_RE.fullmatch(text) is not None


def is_position_label(text: str) -> bool:
    """Whether ``text`` may stand in a saved position: a label, or the ``leftover_label``
    of a crashed ``current`` archived beside a processor's output under one stamp."""
    return is_label(text[:25]) and text[25:] in ("", "u")


def label_before(label: str) -> str:
    """The label just below ``label``: as ``done``, it leaves ``label`` and all after it to read."""
    return "@%024x" % (int(label[1:25], 16) - 1)


def archive_label(name: str) -> str:
    """``@400…​.s`` → ``@400…`` (the 25-character label that orders archives)."""
    return name[:25]


def leftover_label(label: str) -> str:
    """The label of a crashed ``current`` archived as ``@L.u`` beside a processor's ``@L.s``
    under the same label (s6-log's restart stamps both finishes alike): read after it,
    before any later label."""
    return label + "u"


def order_archives(names: Iterable[str]) -> list[str]:
    """Archive names in chronological order: by TAI64N label, never by mtime."""
    return sorted((n for n in names if is_archive(n)), key=archive_label)


def label_time_ns(label: str | None) -> int | None:
    if label is None:
        return None
    try:
        return decode_ns(label[:25])
    except LabelError:
        return None


# Magic numbers of binary formats a processor may write that we cannot decode:
# zstd, lz4 (frame), openssl enc's salted header, zlib (78 01/5e/9c/da)
_BINARY_MAGICS = (b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18", b"Salted__",
                  b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
# C0 controls other than TAB, LF, VT, FF, CR and ESC: rare in logs
_CTRL = bytes((*range(0, 9), *range(14, 27), *range(28, 32)))


def content_kind(head: bytes) -> str:
    """What an archive holds, from its first bytes (up to ~512).

    Text logs are lines of UTF-8 or an 8-bit charset (Latin-1): mostly printable
    ASCII, few control bytes. Compressed or encrypted data (a ``!processor``'s
    output) looks random: ~10 % of its bytes are controls and ~half are high bytes
    that are no valid UTF-8; a single test on controls alone called random data
    text about half the time (its archives were then shipped as garbage lines).
    """
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:3] == b"BZh":
        return BZIP2
    if head[:6] == b"\xfd7zXZ\x00":
        return XZ
    if not head or is_stamped(head[:26]):
        return TEXT  # a multilog label: a text log, whatever its lines hold
    ctrl = len(head) - len(head.translate(None, _CTRL))
    if ctrl * 10 > len(head):
        return BINARY
    if not ctrl and head.isascii():
        return TEXT
    # bytes that are no valid UTF-8 (the last may be a character cut by the head's end)
    bad = sum(1 for c in head.decode("utf-8", "surrogateescape") if "\udc80" <= c <= "\udcff")
    if head.startswith(_BINARY_MAGICS) and (ctrl or bad):
        return BINARY  # (a text line may begin "x^" or "Salted__", but holds no such bytes)
    # Random bytes: controls *and* many undecodable bytes. Latin-1 or KOI8 text has many
    # high bytes but no controls; a log line with a stray NUL has few high bytes.
    if ctrl * 50 > len(head) and bad * 4 > len(head):
        return BINARY
    return TEXT


def is_stamped(line_start: bytes) -> bool:
    """Does a line begin with a TAI64N label and a separator (multilog ``t``)?"""
    return _STAMP_RE.match(line_start) is not None


def should_join(next_first: bytes) -> bool:
    """Join a file's unterminated last line with the next file's first line (whose
    first bytes are ``next_first``)?

    multilog rotates in the middle of a line only when the line is longer than
    about 2000 bytes: the archive ends without a newline and the next
    ``current`` starts with the tail, *without* a stamp. A ``.u`` file ends
    mid-line because multilog died; what follows is a new, stamped line (its
    callers do not join after a ``.u``).
    """
    # A stamped first line starts a line of its own, whatever the fragment is (an
    # unstamped fragment may be the middle of a line split across three files,
    # or the garbage end of a damaged archive).
    return not is_stamped(next_first[:26])


@dataclass(slots=True)
class Entry:
    """A file in the directory as listed and stat'ed now."""

    name: str
    dev: int
    ino: int
    size: int
    # fingerprint of its first line (None: not read, or too short yet). Inode numbers
    # are reused at once at high rotation rates: an identity alone does not tell a new
    # current from the file we read under that number before
    file_id: str | None = None
    old_id: str | None = None  # fingerprint.legacy_fingerprint when it differs (positions of 0.1.0)

    @property
    def ident(self) -> Ident:
        return (self.dev, self.ino)


@dataclass(slots=True)
class Known:
    """An archive as first observed (kept after it is deleted, until done)."""

    name: str
    ident: Ident  # (0, 0) when it was gone before we could stat it
    size: int | None  # None: gone before we could stat it
    file_id: str | None  # fingerprint of its (decoded) first line
    content: str  # TEXT, GZIP, ..., BINARY, EMPTY
    old_id: str | None = None  # fingerprint.legacy_fingerprint when it differs (positions of 0.1.0)


@dataclass(slots=True)
class Pending:
    """A raw file (a former ``current``) read to its end, archive not yet seen."""

    ident: Ident
    file_id: str | None
    # from the saved position: read in an earlier run. Gone (no archive of it, the
    # file itself neither) means the n limit deleted its archive while we were
    # stopped, and maybe files made after it, never seen
    restored: bool = False


@dataclass(slots=True)
class Listing:
    """What a directory holds now: names that matter, with identities."""

    current: Entry | None = None
    previous: Entry | None = None
    archives: dict[str, Entry] = field(default_factory=dict)  # label → entry
    processed: bool = False  # a processor's finished output, about to be an archive
    # A rotation is under way: previous and current may be ahead of the archives
    # listed (a processor's output not named yet, or a later rotation seen in part)
    rotating: bool = False
    archive_names: frozenset[str] = frozenset()  # every archive name listed


@dataclass(slots=True)
class Plan:
    """Outcome of ``plan_next``."""

    done: str | None
    pending: list[Pending]
    lost: list[tuple[str, Known | None]]  # (label, what we knew) of files gone unread
    skipped: list[str]  # labels that were ours (same data already read)
    open_label: str | None = None  # open this archive from its start
    open_current: bool = False  # or open current from its start
    open_previous: bool = False  # or open previous (rotated, unread, not archived yet)
    unreadable: str | None = None  # label of an archive we cannot decode
    gone: list[Pending] = field(default_factory=list)  # pending files dropped: gone, archive unseen


def is_ours(p: Pending, k: Known) -> bool:
    if p.file_id is not None and k.file_id is not None:
        # a file saved in a position by 0.1.0 may be named by the id it gave
        return p.file_id == k.file_id or (p.restored and p.file_id == k.old_id)
    return p.ident == k.ident


def same_raw(ident: Ident | None, file_id: str | None, e: Entry) -> bool:
    """Whether ``e`` is the raw file known as (ident, file_id): the same inode number,
    and the same first line when both are known."""
    return (ident == e.ident
            and (file_id is None or e.file_id is None or file_id in (e.file_id, e.old_id)))


def plan_next(listing: Listing, known: dict[str, Known], done: str | None,
              pending: list[Pending], finished: Ident | None,
              present_ident: Callable[[Pending], bool], finished_fid: str | None = None) -> Plan:
    """Decide what to read after the file we finished (or at start).

    Archives newer than ``done`` are taken in label order. One that holds a
    pending raw file's data (same identity or same first-line fingerprint,
    i.e. no processor, ``!cat`` or ``!gzip``) is skipped: its lines were read
    from ``current``. A processor's undecodable output is taken as the next
    pending file's archive when there is one (its raw lines were read), else
    reported. An archive we knew but that is gone is reported lost. Else the
    first remaining archive is opened; with none, ``previous`` if it holds a
    rotated file we have not read, else ``current`` (unless it is the file we
    just finished).

    ``present_ident`` tells whether a pending raw file still exists under any name;
    a pending file whose archive cannot be recognised once the file is gone
    is dropped (its data was read; only its archive is unaccounted for).
    """
    pend = list(pending)
    lost: list[tuple[str, Known | None]] = []
    skipped: list[str] = []
    gone: list[Pending] = []
    # In order, but lazily: the first label nearly always decides, and sorting every
    # unread archive for each file read made catching up on thousands quadratic
    labels = [lb for lb in known if done is None or lb > done]
    heapq.heapify(labels)
    while labels:
        label = heapq.heappop(labels)
        k = known[label]
        present = label in listing.archives
        if pend:
            idx = next((i for i, p in enumerate(pend) if is_ours(p, k)), None)
            if idx is None and k.content in UNREADABLE:
                idx = 0  # processor output we cannot read: by order, it is ours
            if idx is None and k.content in COMPRESSED and k.file_id is None:
                idx = 0  # compressed, head not decodable yet: by order
            if idx is not None:
                done = label
                skipped.append(label)
                del pend[:idx + 1]
                continue
            # Not ours: drop pending files that are gone (archive unrecognisable).
            gone += [p for p in pend if not present_ident(p)]
            pend = [p for p in pend if present_ident(p)]
        if not present:
            lost.append((label, k))
            done = label
            continue
        if k.content in UNREADABLE:
            return Plan(done, pend, lost, skipped, unreadable=label, gone=gone)
        return Plan(done, pend, lost, skipped, open_label=label, gone=gone)
    prev = listing.previous
    if listing.rotating:
        # e.g. multilog unlinked previous and renames processed to an archive next (till
        # then current is empty: multilog is blocked): raw files wait for the archives
        return Plan(done, pend, lost, skipped, gone=gone)
    if prev is not None and not same_raw(finished, finished_fid, prev) and not any(
            same_raw(p.ident, p.file_id, prev) for p in pend):
        # a rotated current not archived yet, that we have not read: it comes
        # before current (with a processor it may stay there for a while)
        pend = _drop_restored_gone(pend, present_ident, gone)
        return Plan(done, pend, lost, skipped, open_previous=True, gone=gone)
    cur = listing.current
    if cur is not None and not same_raw(finished, finished_fid, cur) and not any(
            same_raw(p.ident, p.file_id, cur) for p in pend):
        pend = _drop_restored_gone(pend, present_ident, gone)
        return Plan(done, pend, lost, skipped, open_current=True, gone=gone)
    return Plan(done, pend, lost, skipped, gone=gone)


def _drop_restored_gone(pend: list[Pending], present: Callable[[Pending], bool],
                        gone: list[Pending]) -> list[Pending]:
    """``pend`` without the files read in an earlier run that are gone (added to ``gone``):
    a raw file is opened next, so their archives, unseen, will never be matched."""
    if not any(p.restored for p in pend):
        return pend
    gone += [p for p in pend if p.restored and not present(p)]
    return [p for p in pend if not p.restored or present(p)]


def start_position(listing: Listing, mode: str) -> tuple[str | None, str]:
    """For a directory never seen: (done label, what to open: 'oldest'|'current'|'end').

    ``all``: oldest archive first; ``current``: start of current; ``end``: end
    of current (new lines only). Archives present are then considered done.
    """
    if mode == "all":
        return None, "oldest"
    done = max(listing.archives) if listing.archives else None
    return done, ("current" if mode == "current" else "end")
