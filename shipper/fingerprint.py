"""File identity by content: a hash of the file's first line (pure).

A multilog file starts with a TAI64N label, so its first line is practically
unique; its hash survives the rename of ``current`` to ``@….s`` and tells a
reused inode from the file we knew. Live following, re-reading after a crash
and replaying an archive all derive the same id, and so the same event ids.

A file that begins with the unstamped tail of a line cut at a rotation (a line
longer than the logger's size limit) has no label there: tails alike (a run of
``x``, the same long header) gave two files one id, and two lines one event id.
When the first line has no time stamp and the second has one, the id covers the
second line too. Files whose first line is stamped (the normal case) and logs
with no stamps at all keep the id they had (``legacy_fingerprint``). Files that
hold only a piece of a line (no stamped line of their own, e.g. all ``x``) may
still share an id, but no line of theirs is their own: it is joined to the line
begun in an earlier file. (The id of a growing file is taken once it is
settled; one taken before, with what there was, may differ from replay's: a
file that begins with a tail is read on only once its next line is there.)
"""

from __future__ import annotations

import hashlib
import re

FINGERPRINT_BYTES = 64  # of the first line; enough for a label plus some text
# The id depends on the first FINGERPRINT_SCAN bytes at most: callers pass that much
# of the file (or all of it, if shorter). A tail longer than this keeps the legacy id.
FINGERPRINT_SCAN = 4096
# A line's time stamp: TAI64N (multilog/svlogd -t/s6-log t) or a date and time (svlogd
# -tt/-ttt, s6-log T). STAMP_NEED bytes (or a newline) tell whether a line has one.
_STAMP_RE = re.compile(rb"@[0-9a-fA-F]{24}[ \t]|\d{4}-\d\d-\d\d[_T ]\d\d:\d\d:\d\d[.,]\d")
STAMP_NEED = 26


def _first_line_key(head: bytes, complete: bool) -> bytes | None:
    nl = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if nl >= 0:
        return head[:nl]
    if len(head) >= FINGERPRINT_BYTES:
        return head[:FINGERPRINT_BYTES]
    if complete and head:
        return head
    return None


def _stamped(line: bytes, complete: bool) -> bool | None:
    """Whether ``line`` (a line's start) begins with a time stamp; None: not known yet."""
    if len(line) < STAMP_NEED and b"\n" not in line and not complete:
        return None
    return _STAMP_RE.match(line) is not None


def legacy_fingerprint(head: bytes, complete: bool = False) -> str | None:
    """The id of versions up to 0.1.0: the first line alone (capped). Still accepted
    where a saved position names a file by it."""
    key = _first_line_key(head, complete)
    return None if key is None else hashlib.blake2b(key, digest_size=8).hexdigest()


def fingerprint(head: bytes, complete: bool = False) -> str | None:
    """16 hex digits from the first bytes of a file, or None if not enough yet.

    ``head`` is the start of the file (FINGERPRINT_SCAN bytes when it has them).
    Until the bytes the id depends on are there (a full first line or
    FINGERPRINT_BYTES of it; with an unstamped first line, the start of the
    next), the id is not settled and None is returned, unless ``complete`` says
    the file will not grow (then an empty file still has no id). A settled id
    does not change as the file grows.
    """
    head = head[:FINGERPRINT_SCAN]  # what lies past it never counts: the same id from any caller
    key = _first_line_key(head, complete)
    if key is None:
        return None
    full = complete or len(head) >= FINGERPRINT_SCAN
    first = _stamped(head[:STAMP_NEED], full)
    if first is None:
        return None
    if not first:
        nl = head.find(b"\n", 0, FINGERPRINT_SCAN)
        if nl < 0:
            if not full:
                return None  # the first line may yet end inside the window
        else:
            nxt = head[nl + 1:]
            second = _stamped(nxt[:STAMP_NEED], full)
            if second is None:
                return None
            if second:
                # the tail of a cut line, then the stamped lines of the file: the
                # second line makes the id unique as labels make other files'
                more = _first_line_key(nxt, full)
                if more is None:
                    return None
                key += b"\n" + more
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def fingerprints(head: bytes, complete: bool = False) -> tuple[str | None, str | None]:
    """(fingerprint, legacy_fingerprint when it differs else None)."""
    new = fingerprint(head, complete)
    old = legacy_fingerprint(head, complete)
    return new, (old if old != new and new is not None else None)
