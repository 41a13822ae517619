"""What the pipeline costs around the parser: follower → parse → disk queue → sink.

    python bench/bench_pipeline.py [--lines 300000] [--runs 3]

Runs the real Pipeline in-process over a multilog directory of archives (catch-up)
into a sink that discards, with the default disk buffer (fsync every 100 ms), and
prints CPU µs per record for: parsing alone (LineParser + to_dict), the whole
pipeline, and the difference (follower, serialisation, queue append/read/ack,
decoding for the sink, batching) = the pipeline's overhead per record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from corpus import write_multilog  # noqa: E402

from shipper.cli import tune_gc  # noqa: E402
from shipper.diskqueue import DiskQueue  # noqa: E402
from shipper.follower import MultilogSource  # noqa: E402
from shipper.parse import LineParser, ParseOptions  # noqa: E402
from shipper.pipeline import Pipeline, SinkRoute  # noqa: E402
from shipper.reader import expand, read_batches  # noqa: E402
from shipper.sinks.base import SinkStats  # noqa: E402


class NullSink:
    name = "null"

    def __init__(self) -> None:
        self.stats = SinkStats()

    async def send(self, records: list[dict[str, Any]]) -> None:
        self.stats.sent += len(records)
        self.stats.acked += len(records)

    async def close(self) -> None:
        return None


def parse_only(directory: str) -> tuple[float, int]:
    batches = [b for f in expand([directory]) for b in read_batches(f)]
    parser = LineParser(ParseOptions(host="bench"))
    t0 = time.process_time()
    n = 0
    for b in batches:
        parser.file_id = b.file_id
        recs = parser.parse_batch(b.lines, b.offsets)
        for r in recs:
            r.to_dict()
        n += len(recs)
    return time.process_time() - t0, n


async def pipeline(directory: str, state: str, expect: int) -> float:
    source = MultilogSource([directory], os.path.join(state, "cp.json"), start="all")
    queue = DiskQueue.open(os.path.join(state, "q"))
    sink = NullSink()
    pipe = Pipeline([(source, ParseOptions(host="bench"))], [SinkRoute("null", sink, queue)])
    t0 = time.process_time()
    task = asyncio.get_running_loop().create_task(pipe.run())
    while sink.stats.acked < expect:
        await asyncio.sleep(0.01)
    cpu = time.process_time() - t0
    print(f"  (sink took {pipe.stats.sent_from_memory:,} records as kept dicts, "
          f"{pipe.stats.sent_from_buffer:,} parsed back from the buffer)")
    await pipe.stop(5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "log")
        write_multilog(d, args.lines, size=1_000_000)
        parse_cpu, pipe_cpu = [], []
        for i in range(args.runs):
            cpu, n = parse_only(d)
            parse_cpu.append(cpu / n * 1e6)
            state = os.path.join(tmp, f"state{i}")
            os.makedirs(state)
            pipe_cpu.append(asyncio.run(pipeline(d, state, args.lines)) / args.lines * 1e6)
        p, q = statistics.median(parse_cpu), statistics.median(pipe_cpu)
        print(f"{args.lines:,} lines, medians of {args.runs} runs (CPU µs per record, one process)")
        print(f"  parse alone (LineParser + to_dict): {p:6.2f} µs")
        print(f"  whole pipeline into a null sink:    {q:6.2f} µs  ({1e6 / q:,.0f} records/s)")
        print(f"  pipeline overhead:                  {q - p:6.2f} µs")


if __name__ == "__main__":
    main()
