"""The stdin source: lines, offsets and flags as the followers give them."""

from __future__ import annotations

import asyncio
import io

from shipper.parse import LineParser, ParseOptions
from shipper.parse_worker import parse_to_dicts
from shipper.stdin_source import StdinSource

# source: tests/fixtures (qmail-send lines as multilog stamps them)
LINE = b"@400000005a4a8d2b0a8c2f6c status: local 1/10 remote 0/20"


class Chunked(io.RawIOBase):
    """A pipe that hands over at most ``size`` bytes a read."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.pos = data, size, 0

    def read1(self, n: int = -1) -> bytes:
        got = self.data[self.pos:self.pos + min(n, self.size)]
        self.pos += len(got)
        return got


def collect(stream, max_line: int) -> list[tuple[bytes, int, tuple[str, ...] | None]]:
    async def run():
        src = StdinSource(stream, batch_lines=3, max_line=max_line)
        return [(ln, off, (b.line_flags or {}).get(i))
                async for b in src.batches() for i, (ln, off) in enumerate(zip(b.lines, b.offsets, strict=True))]
    return asyncio.run(asyncio.wait_for(run(), 10))


def test_lines_offsets_and_a_partial_last_line():
    data = LINE + b"\n" + LINE + b"\n\n" + LINE[:30]
    for size in (1, 7, 1 << 16):
        got = collect(Chunked(data, size), 1000)
        n = len(LINE) + 1
        assert got == [(LINE, 0, None), (LINE, n, None), (b"", 2 * n, None), (LINE[:30], 2 * n + 1, ("partial",))]


def test_a_long_line_without_its_end_yet_keeps_its_head_flagged_truncated():
    """A line longer than max_line still unfinished at the end of what was read was
    dropped whole (its head gone, its tail made a line of its own at a wrong offset,
    and every offset after it wrong)."""
    long = b"@400000005a4a8d2b0a8c2f6c " + b"x" * 300_000
    data = LINE + b"\n" + long + b"\n" + LINE + b"\n"
    for size in (1 << 16, 999):
        got = collect(Chunked(data, size), 1000)
        n = len(LINE) + 1
        assert got == [(LINE, 0, None), (long[:1000], n, ("truncated",)), (LINE, n + len(long) + 1, None)]


def test_a_long_line_read_whole_goes_to_the_parser_which_cuts_and_flags_it():
    long = b"@400000005a4a8d2b0a8c2f6c " + b"x" * 3000
    data = long + b"\n" + LINE + b"\n"
    got = collect(Chunked(data, 1 << 16), 1000)
    assert got == [(long, 0, None), (LINE, len(long) + 1, None)]
    dicts = parse_to_dicts(LineParser(ParseOptions(max_line=1000)), [ln for ln, _, _ in got], None, None, 0)
    assert [d["flags"] for d in dicts] == [["truncated"], []]
    assert len(dicts[0]["raw"]) == 1000


def test_flags_of_the_source_reach_the_record():
    got = collect(Chunked(LINE + b"\n" + b"@400000005a4a8d2b0a8c2f6c " + b"y" * 5000, 1 << 16), 1000)
    lines = [ln for ln, _, _ in got]
    flags = {i: f for i, (_, _, f) in enumerate(got) if f}
    assert flags == {1: ("truncated",)}
    dicts = parse_to_dicts(LineParser(ParseOptions(max_line=1000)), lines, None, flags, 0)
    assert [d["flags"] for d in dicts] == [[], ["truncated"]]
