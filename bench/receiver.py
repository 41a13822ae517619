"""A counting syslog receiver for benchmarks: TCP (octet-counted or LF, detected per
frame), optionally TLS. Counts distinct markers, duplicates, throughput, and
latency (receipt time minus the line's TAI64N label).

A line's marker is its TAI64N label (``@4000…``, which rsyslog forwards inside
the raw line) or the shipper's ``time_unix_ns`` structured-data parameter; both
are turned into unix nanoseconds, unique per corpus line.

    python bench/receiver.py --port P [--tls CERT KEY] --expect N --out result.json
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import re
import ssl
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from shipper.framing import FrameDecoder  # noqa: E402
from shipper.tai64n import DAEMONTOOLS_OFFSET  # noqa: E402

MARK_RE = re.compile(rb'@(4[0-9a-f]{15})([0-9a-f]{8})|time_unix_ns="(\d+)"')


class Counter:
    """Throughput mode keeps a set of the markers seen. Latency mode keeps the markers
    and latencies in arrays made at their full size before the first line, and finds
    duplicates at the end: a set growing in the middle of a run rehashed itself (at
    19,661 lines: 3/5 of 32,768) into pages first touched then, 15-25 ms during which
    nothing was read, late lines charged to the forwarder."""

    def __init__(self, expect: int, latency: bool) -> None:
        self.expect = expect
        self.seen: set[int] = set()
        self.frames = 0
        self.dups = 0
        self.unmarked = 0
        self.first = 0.0
        self.last = 0.0
        self.latency = latency
        room = expect + 1024 if latency else 0  # a few frames more: duplicates
        self.marks = array.array("q", bytes(8 * room))
        self.lat = array.array("q", bytes(8 * room))
        self.n = 0
        self.done = asyncio.Event()

    def feed(self, frames: list[bytes]) -> None:
        now = time.time_ns()
        if not self.first and frames:
            self.first = time.monotonic()
        for f in frames:
            self.frames += 1
            m = MARK_RE.search(f)
            if m is None:
                self.unmarked += 1
                continue
            if m.group(3):
                ns = int(m.group(3))
            else:
                ns = (int(m.group(1), 16) - DAEMONTOOLS_OFFSET) * 1_000_000_000 + int(m.group(2), 16)
            if self.latency:
                if self.n < len(self.marks):
                    self.marks[self.n] = ns
                    self.lat[self.n] = now - ns
                    self.n += 1
            elif ns in self.seen:
                self.dups += 1
            else:
                self.seen.add(ns)
        if frames:
            self.last = time.monotonic()
        # Latency mode keys lines by multilog's label, which two lines stamped in the
        # same microsecond share: count frames there.
        if (self.frames if self.latency else len(self.seen)) >= self.expect:
            self.done.set()

    def series(self) -> list[int]:
        """Latency mode: each line's latency (ns) in order of receipt, first copies only."""
        seen: set[int] = set()
        out = []
        for ns, lat in zip(self.marks[:self.n], self.lat[:self.n], strict=True):
            if ns not in seen:
                seen.add(ns)
                out.append(lat)
        return out

    def result(self) -> dict[str, object]:
        span = (self.last - self.first) if self.last > self.first else 0.0
        distinct = len(self.seen)
        if self.latency:
            distinct = len(set(self.marks[:self.n]))
            self.dups = self.n - distinct
        out: dict[str, object] = {"distinct": distinct, "frames": self.frames, "duplicates": self.dups,
                                  "unmarked": self.unmarked, "span_s": span,
                                  "last_mono": self.last}
        if self.latency and self.n:
            lat = sorted(self.series())
            for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
                out[f"latency_{name}_ms"] = lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6
        return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--idle", type=float, default=20.0, help="give up after this long without data")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--series", help="also write each line's latency in ns, in order of receipt, one a line")
    args = ap.parse_args()
    counter = Counter(args.expect, args.latency)
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dec = FrameDecoder(max_frame=1 << 20)
        try:
            while True:
                data = await reader.read(1 << 18)
                if not data:
                    break
                counter.feed(dec.feed(data))
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, ssl=ctx)
    open(args.out + ".ready", "w").close()
    async with server:
        last_frames = -1
        idle_since = time.monotonic()
        while not counter.done.is_set():
            try:
                await asyncio.wait_for(counter.done.wait(), 0.5)
            except TimeoutError:
                pass
            if counter.frames != last_frames:
                last_frames = counter.frames
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > args.idle:
                break
        await asyncio.sleep(0.5)  # late duplicates
    with open(args.out, "w") as f:
        json.dump(counter.result(), f)
    if args.series:
        with open(args.series, "w") as f:
            f.write("".join(f"{v}\n" for v in counter.series()))


if __name__ == "__main__":
    asyncio.run(main())
