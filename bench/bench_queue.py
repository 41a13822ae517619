"""Disk queue benchmark: append, then read back and acknowledge, in batches.

    python bench/bench_queue.py [--records 1000000] [--batch 1000] [--size 250]
                                [--fsync interval|always|never] [--dir PATH] [--runs 3]

Prints records/s and MB/s for (a) append alone, (b) read + ack alone (a backlog read
back from the page cache, every CRC checked), (c) append and read+ack interleaved (the
pipeline's steady state: the sink keeps up), and the same for the memory queue. Wall
time includes waiting for the disk; "per CPU second" divides by the process's CPU time
(fsync thread included), which is what "on one core" means on a busy machine. Payloads are ~250-byte JSON-like records; one process, one
core. Target (issue 4): ≥ 500,000 records/s append+read with the default fsync policy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from shipper.diskqueue import DiskQueue  # noqa: E402
from shipper.memqueue import MemQueue  # noqa: E402


def payloads(n: int, size: int) -> list[bytes]:
    base = (b'{"time_unix_ns":1700000000000000000,"program":"qmail-send","event":"delivery",'
            b'"message":"delivery 1234: success: 1.2.3.4_accepted_message./Remote_host_said:'
            b'_250_2.0.0_Ok:_queued_as_ABCDEF/","raw":"')
    out = []
    for i in range(n):
        p = base + str(i).encode()
        out.append(p + b"x" * max(0, size - len(p) - 2) + b'"}')
    return out


def run_disk(path: str, batch: list[bytes], batches: int, fsync: str,
             mode: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process, fsync thread included)."""
    shutil.rmtree(path, ignore_errors=True)
    q = DiskQueue.open(path, fsync=fsync, max_bytes=4 << 30)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    c0 = time.process_time()
    if mode == "interleaved":
        for _ in range(batches):
            q.append(batch)
            items = q.read(len(batch), 1 << 30)
            q.ack(items[-1][0])
        q.sync()
    elif mode == "append":
        for _ in range(batches):
            q.append(batch)
        q.sync()
    else:  # read+ack of what "append" left: refill untimed
        for _ in range(batches):
            q.append(batch)
        q.sync()
        t0 = time.perf_counter()
        c0 = time.process_time()
        while True:
            items = q.read(len(batch), 1 << 30)
            if not items:
                break
            q.ack(items[-1][0])
        q.sync()
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    assert q.depth == 0 or mode == "append"
    q.close()
    return elapsed


def run_mem(batch: list[bytes], batches: int) -> tuple[float, float]:
    q = MemQueue(max_bytes=1 << 30)
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(batches):
        q.append(batch)
        items = q.read(len(batch), 1 << 30)
        q.ack(items[-1][0])
    return time.perf_counter() - t0, time.process_time() - c0


def line(label: str, n: int, nbytes: float, times: list[tuple[float, float]]) -> str:
    wall = statistics.median(t for t, _ in times)
    cpu = statistics.median(c for _, c in times)
    return (f"{label:24s} {n / wall:10,.0f} records/s {nbytes / wall / 1e6:7.1f} MB/s "
            f"{wall / n * 1e6:5.2f} µs/record | per CPU second: {n / cpu:10,.0f} records")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--size", type=int, default=250)
    ap.add_argument("--fsync", default="interval", choices=["always", "interval", "never"])
    ap.add_argument("--dir", help="directory for the queue (default: a temp dir)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    batch = payloads(args.batch, args.size)
    batches = max(1, args.records // args.batch)
    n = batches * args.batch
    nbytes = n * sum(map(len, batch)) / len(batch)
    root = args.dir or tempfile.mkdtemp(prefix="bench_queue.")
    path = os.path.join(root, "q")
    print(f"{n} records of {nbytes / n:.0f} bytes in batches of {args.batch}, fsync={args.fsync}, "
          f"dir={root}, median of {args.runs} runs")
    try:
        for mode in ("append", "read+ack", "interleaved"):
            times = [run_disk(path, batch, batches, args.fsync, mode) for _ in range(args.runs)]
            print(line(f"disk {mode}", n, nbytes, times))
        print(line("memory append+read+ack", n, nbytes, [run_mem(batch, batches) for _ in range(args.runs)]))
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
