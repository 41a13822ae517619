"""Follower benchmark: (a) catch-up over a multilog directory of archives, (b) tail latency.

    python bench/bench_follow.py [--lines 1000000] [--runs 3] [--rate 5000] [--seconds 5]
                                 [--archive-lines 10000]

(a) A directory of 1M synthetic labelled lines (~100 bytes each) in ``@….s``
    archives of ~1 MB plus ``current`` (``--archive-lines 100`` makes thousands of
    small archives: the cost per archive, which once grew with their number), read from the oldest archive by
    ``MultilogFollower`` (sync core) and by ``MultilogSource`` (async, bounded
    queue, a consumer that touches every batch). Lines/s, median of the runs.
(b) Real ``multilog t s99999`` fed at ``--rate`` lines/s, one write per line,
    each line carrying its write time (CLOCK_REALTIME ns); the latency is from
    that write to the moment ``MultilogSource`` yields the line. p50/p99/max.
Targets (issue 3): catch-up ≥ 500,000 lines/s; p99 ≤ 5 ms with inotify.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from shipper.follower import LineBatch, MultilogFollower, MultilogSource  # noqa: E402
from shipper.tai64n import encode_ns  # noqa: E402

LINES_PER_FILE = 10_000  # ~1 MB archives


def make_dir(path: str, lines: int, per_file: int = LINES_PER_FILE) -> int:
    """Synthetic multilog directory; returns total bytes."""
    os.makedirs(path)
    t = 1_700_000_000 * 10**9
    total = 0
    n = 0
    while n < lines:
        k = min(per_file, lines - n)
        chunk = b"".join(
            b"%s qmail: 1700000000.%06d delivery %d: success: did_0+0+1/ seq %09d pad\n"
            % (encode_ns(t + (n + i) * 1000).encode(), i % 999999, n + i, n + i)
            for i in range(k))
        n += k
        total += len(chunk)
        name = "current" if n >= lines else encode_ns(t + n * 1000) + ".s"
        with open(os.path.join(path, name), "wb") as f:
            f.write(chunk)
    return total


def catch_up_sync(path: str) -> tuple[float, int]:
    f = MultilogFollower(path, None, start="all")
    n = 0
    t0 = time.perf_counter()
    while True:
        got = f.poll(64)
        if not got:
            break
        for it in got:
            n += len(it.lines)
    dt = time.perf_counter() - t0
    if f.reader is not None:
        f.reader.close()
    return dt, n


async def catch_up_async(path: str, want: int) -> tuple[float, int]:
    src = MultilogSource([path], None, start="all", watch="inotify")
    n = 0
    nbytes = 0
    t0 = time.perf_counter()
    async for it in src.batches():
        assert isinstance(it, LineBatch)
        n += len(it.lines)
        nbytes += len(it.lines[-1])
        src.commit(it.position)
        if n >= want:
            break
    dt = time.perf_counter() - t0
    await src.close()
    return dt, n


GENERATOR = r"""
import os, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
n = int(rate * seconds)
t0 = time.monotonic()
for i in range(n):
    due = t0 + i / rate
    while True:
        d = due - time.monotonic()
        if d <= 0:
            break
        if d > 0.0005:
            time.sleep(d - 0.0003)
    os.write(1, b"lat %d %020d\n" % (i, time.time_ns()))
"""


async def tail_latency(rate: float, seconds: float) -> tuple[list[float], str, int]:
    multilog = shutil.which("multilog") or "/usr/bin/multilog"
    tmp = tempfile.mkdtemp(prefix="bench_follow_")
    d = os.path.join(tmp, "log")
    ml = subprocess.Popen([multilog, "t", d], stdin=subprocess.PIPE)
    while not os.path.exists(os.path.join(d, "current")):
        await asyncio.sleep(0.01)
    src = MultilogSource([d], None, start="end", watch="inotify")
    lat: list[float] = []
    want = int(rate * seconds)
    assert ml.stdin is not None
    gen = subprocess.Popen([sys.executable, "-c", GENERATOR, str(rate), str(seconds)],
                           stdout=ml.stdin)

    async def consume() -> None:
        async for it in src.batches():
            now = time.time_ns()
            assert isinstance(it, LineBatch)
            for ln in it.lines:
                lat.append((now - int(ln.rsplit(b" ", 1)[1])) / 1e6)
            src.commit(it.position)
            if len(lat) >= want:
                return

    try:
        await asyncio.wait_for(consume(), seconds + 30)
    except TimeoutError:
        pass
    mode = src.watcher.mode
    await src.close()
    gen.wait()
    ml.stdin.close()
    ml.wait()
    shutil.rmtree(tmp, ignore_errors=True)
    return lat, mode, want


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--archive-lines", type=int, default=LINES_PER_FILE, help="lines per archive")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_follow_")
    try:
        d = os.path.join(tmp, "log")
        nbytes = make_dir(d, args.lines, args.archive_lines)
        files = len(os.listdir(d))
        print(f"catch-up: {args.lines:,} lines, {nbytes / 1e6:.0f} MB in {files} files "
              f"(~{nbytes / args.lines:.0f} B/line)")
        sync_rates, async_rates = [], []
        for _ in range(args.runs):
            dt, n = catch_up_sync(d)
            assert n == args.lines, n
            sync_rates.append(n / dt)
            dt, n = asyncio.run(catch_up_async(d, args.lines))
            assert n == args.lines, n
            async_rates.append(n / dt)
        print(f"  MultilogFollower.poll (sync core): {statistics.median(sync_rates):>12,.0f} lines/s "
              f"({statistics.median(sync_rates) * nbytes / args.lines / 1e6:.0f} MB/s)")
        print(f"  MultilogSource.batches (async):    {statistics.median(async_rates):>12,.0f} lines/s"
              f"   [target >= 500,000]")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lat, mode, want = asyncio.run(tail_latency(args.rate, args.seconds))
    print(f"tail latency: real multilog t, {args.rate:,.0f} lines/s for {args.seconds:g} s, "
          f"watch mode {mode}: {len(lat):,}/{want:,} lines")
    if lat:
        print(f"  p50 {pct(lat, 50):.3f} ms   p99 {pct(lat, 99):.3f} ms   max {max(lat):.3f} ms"
              f"   [target p99 <= 5 ms]")


if __name__ == "__main__":
    main()
