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

from shipper.follower import LineBatch

CHUNK = 1 << 16


class StdinSource:
    def __init__(self, stream: BinaryIO | None = None, batch_lines: int = 4096,
                 max_line: int = 1 << 20) -> None:
        self.stream = stream or sys.stdin.buffer
        self.batch_lines = batch_lines
        self.max_line = max_line
        self.offset = 0

    async def batches(self) -> AsyncIterator[LineBatch]:
        carry = b""
        read = self.stream.read1 if hasattr(self.stream, "read1") else self.stream.read
        while True:
            # A blocking read belongs in a thread; one chunk at a time keeps memory bounded.
            chunk = await asyncio.to_thread(read, CHUNK)
            if not chunk:
                break
            data = carry + chunk
            end = data.rfind(b"\n")
            if end < 0:
                carry = data if len(data) <= self.max_line else b""
                continue
            lines = data[:end].split(b"\n")
            carry = data[end + 1:]
            offsets = []
            off = self.offset
            for ln in lines:
                offsets.append(off)
                off += len(ln) + 1
            self.offset = off
            for i in range(0, len(lines), self.batch_lines):
                yield LineBatch("-", "-", None, [ln[:self.max_line] for ln in lines[i:i + self.batch_lines]],
                                offsets[i:i + self.batch_lines], None, ("-", {}))
        if carry:
            yield LineBatch("-", "-", None, [carry[:self.max_line]], [self.offset], {0: "partial"}, ("-", {}))

    def commit(self, position: Any) -> None:
        """Nothing to remember: standard input cannot be read again."""

    async def close(self, save: bool = True) -> None:
        return None  # no checkpoint to write
