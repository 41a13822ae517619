"""A source reading lines from standard input (``[sources.X] type = "stdin"``).

Same item shape as the followers (shipper.follower.LineBatch), without file
identity: stdin records have no event id, and nothing can be resumed, so
``commit`` has nothing to record. End of input ends the source.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

from shipper.follower import F_PARTIAL, F_TRUNCATED, LineBatch

CHUNK = 1 << 16


class StdinSource:
    def __init__(self, stream: BinaryIO | None = None, batch_lines: int = 4096,
                 max_line: int = 1 << 20) -> None:
        self.stream = stream or sys.stdin.buffer
        self.batch_lines = batch_lines
        self.max_line = max_line
        self.offset = 0

    async def batches(self) -> AsyncIterator[LineBatch]:
        carry = b""  # an incomplete line, at most max_line bytes, from self.offset on
        skipping = False  # inside a line already cut at max_line
        read = self.stream.read1 if hasattr(self.stream, "read1") else self.stream.read
        while True:
            # A blocking read belongs in a thread; one chunk at a time keeps memory bounded.
            chunk = await asyncio.to_thread(read, CHUNK)
            if not chunk:
                break
            data = carry + chunk
            base = self.offset  # of data[0]
            start = 0
            if skipping:  # the rest of a cut line is dropped, up to its newline
                start = data.find(b"\n") + 1
                if start == 0:
                    self.offset, carry = base + len(data), b""
                    continue
                skipping = False
            end = data.rfind(b"\n")
            lines = data[start:end].split(b"\n") if end >= start else []
            offsets = []
            off = base + start
            for ln in lines:
                offsets.append(off)
                off += len(ln) + 1
            # Lines longer than max_line go as they are: the parser cuts and flags them.
            for i in range(0, len(lines), self.batch_lines):
                yield LineBatch("-", "-", None, lines[i:i + self.batch_lines],
                                offsets[i:i + self.batch_lines], None, ("-", {}))
            rest_at = max(end + 1, start)
            carry = data[rest_at:]
            self.offset = base + rest_at
            if len(carry) > self.max_line:
                # A line longer than max_line with no end yet: its head goes now, flagged,
                # (the parser would see max_line bytes and could not tell) and the rest
                # is skipped, so memory stays bounded by max_line and the chunk.
                yield LineBatch("-", "-", None, [carry[:self.max_line]], [self.offset],
                                {0: (F_TRUNCATED,)}, ("-", {}))
                self.offset, carry, skipping = base + len(data), b"", True
        if carry:
            yield LineBatch("-", "-", None, [carry], [self.offset], {0: (F_PARTIAL,)}, ("-", {}))
            self.offset += len(carry)

    def commit(self, position: Any) -> None:
        """Nothing to remember: standard input cannot be read again."""

    async def close(self, save: bool = True) -> None:
        return None  # no checkpoint to write
