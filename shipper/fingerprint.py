"""File identity by content: a hash of the file's first line (pure).

A multilog file starts with a TAI64N label, so its first line is practically
unique; its hash survives the rename of ``current`` to ``@….s`` and tells a
reused inode from the file we knew. Live following, re-reading after a crash
and replaying an archive all derive the same id, and so the same event ids.
"""

from __future__ import annotations

import hashlib

FINGERPRINT_BYTES = 64  # of the first line; enough for a label plus some text


def fingerprint(head: bytes, complete: bool = False) -> str | None:
    """16 hex digits from the first bytes of a file, or None if not enough yet.

    ``head`` is the start of the file (at least FINGERPRINT_BYTES when it has
    them). Until the file holds a full first line or FINGERPRINT_BYTES bytes,
    the id is not settled and None is returned, unless ``complete`` says the
    file will not grow (then an empty file still has no id).
    """
    nl = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if nl >= 0:
        key = head[:nl]
    elif len(head) >= FINGERPRINT_BYTES:
        key = head[:FINGERPRINT_BYTES]
    elif complete and head:
        key = head
    else:
        return None
    return hashlib.blake2b(key, digest_size=8).hexdigest()
