"""Parse benchmark: (a) lines → records in memory, (b) `shipper parse` writing NDJSON.

    python bench/bench_parse.py [--lines 1000000] [--runs 3]

Prints lines/s and µs/line for each, the median and the best of the runs (on a shared
machine other work only ever adds time, so the best is the code's own speed); one
process, one core. Targets (issue 2): (a) ≥ 250,000 lines/s, (b) ≥ 150,000 lines/s.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from corpus import interpreter, write_file  # noqa: E402

from shipper.cli import tune_gc  # noqa: E402
from shipper.parse import LineParser  # noqa: E402


def bench_in_memory(path: str) -> tuple[float, int, collections.Counter[str]]:
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")[:-1]
    # Input, as the follower hands it over: lines and their offsets (its cost is in
    # bench_follow.py and the end-to-end figures, not here).
    offsets = [0, *itertools.accumulate(len(ln) + 1 for ln in lines)][:-1]
    parser = LineParser(source=path, file_id="0123456789abcdef")
    events: collections.Counter[str] = collections.Counter()
    batch = 4096
    t0 = time.process_time()
    for i in range(0, len(lines), batch):
        recs = parser.parse_batch(lines[i:i + batch], offsets[i:i + batch])
        events.update(r.event for r in recs[:64])  # a sample, to show the mix was parsed
    cpu = time.process_time() - t0
    return cpu, len(lines), events


def bench_cli(path: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "shipper", "parse", path], stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tune_gc()  # as the shipper command does
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.log")
        size = write_file(path, args.lines)
        print(f"corpus: {args.lines:,} lines, {size / 1e6:.1f} MB; {interpreter()}; "
              f"load average {os.getloadavg()[0]:.2f}")
        mem = []
        unparsed = 0
        for _ in range(args.runs):
            cpu, n, events = bench_in_memory(path)
            mem.append(cpu)
            unparsed = events.get("unparsed", 0)
        cpu, best = statistics.median(mem), min(mem)
        print(f"(a) parse to records in memory: {n / cpu:,.0f} lines/s, {cpu / n * 1e6:.2f} µs/line "
              f"(CPU, median of {args.runs}; best {n / best:,.0f} lines/s); unparsed in sample: {unparsed}")
        walls = []
        cpus = []
        prev = 0.0
        for _ in range(args.runs):
            wall, cpu_total = bench_cli(path)
            walls.append(wall)
            cpus.append(cpu_total - prev)
            prev = cpu_total
        wall, best = statistics.median(walls), min(walls)
        cpu = statistics.median(cpus)
        print(f"(b) shipper parse → NDJSON: {args.lines / wall:,.0f} lines/s wall, "
              f"{cpu / args.lines * 1e6:.2f} µs/line CPU (median of {args.runs}, incl. start-up; "
              f"best {args.lines / best:,.0f} lines/s)")


if __name__ == "__main__":
    main()
