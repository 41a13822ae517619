"""Dead-letter file: batches a peer refused for good, kept for a human to look at.

One NDJSON line per refused batch:
``{"dead_lettered_at": RFC 3339, "sink": NAME, "error": TEXT, "response": TEXT,
"count": N, "records": [...]}`` — the records exactly as they were to be sent,
so the batch can be fixed and replayed (``jq -c '.records[]'``).

The file is capped: past ``max_bytes`` it is renamed ``PATH.1`` (older ones
shift to ``.2`` ... ``.keep``) and a fresh file begins. A batch is never split
across files. Files beyond ``keep`` are deleted; that loss is counted in
``files_dropped`` and logged, never silent. Each write is flushed and fsynced:
refusals are rare and the data exists nowhere else once the queue acks it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson

from shipper.checkpoint import open_not_through_foreign_link
from shipper.record import rfc3339_ns
from shipper.sinks.base import PermanentError
from shipper.sinks.local import rotate_files

log = logging.getLogger(__name__)


class DeadLetterFile:
    """Append refused batches to an NDJSON file, size-capped with rotation."""

    def __init__(self, path: str, *, sink: str = "", max_bytes: int = 100 << 20, keep: int = 5) -> None:
        self.path = path
        self.sink = sink
        self.max_bytes = max_bytes
        self.keep = keep
        self.batches = 0  # batches written
        self.records = 0  # records written
        self.files_dropped = 0  # rotated files deleted beyond `keep`
        self.write_errors = 0

    def write(self, records: list[dict[str, Any]], error: BaseException) -> None:
        """Record one refused batch. Raises OSError if the file cannot be written."""
        response = getattr(error, "response", "") if isinstance(error, PermanentError) else ""
        line = orjson.dumps({
            "dead_lettered_at": rfc3339_ns(time.time_ns()),
            "sink": self.sink,
            "error": str(error),
            "response": response,
            "count": len(records),
            "records": records,
        }, default=str) + b"\n"
        try:
            self._append(line)
        except OSError:
            self.write_errors += 1
            raise
        self.batches += 1
        self.records += len(records)

    __call__ = write  # the pipeline's dead_letter(records, exc) callback

    def _append(self, line: bytes) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_bytes:
            self._rotate()
        fd = open_not_through_foreign_link(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        if rotate_files(self.path, self.keep):
            self.files_dropped += 1
            log.warning("dead-letter %s: deleted its oldest file to stay within keep=%d",
                        self.path, self.keep)
