"""What an idle spell costs on this machine, apart from any forwarder.

    python bench/bench_idle.py [--pauses 0 0.1 1 5]

After each pause, times (a) touching one byte in each 4 KiB page of a 4 MiB and a
32 MiB buffer written before the pause, and (b) parsing 300 qmail lines with a
warm parser, and counts the page faults and involuntary context switches the
process saw meanwhile. On a machine whose memory stays warm, (a) and (b) do not
depend on the pause. On the 2-core VM of our figures they do, by up to 40 times,
with no fault in the guest: the host makes pages cold while the guest sleeps.
The first lines after a quiet spell are then late whatever the forwarder does,
the more so the more memory its code and data span; bench_e2e.py --latency
--pause shows it for rsyslog and the shipper side by side.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from corpus import lines as corpus_lines  # noqa: E402

from shipper.parse import LineParser, ParseOptions  # noqa: E402
from shipper.parse_worker import parse_to_dicts  # noqa: E402

PAGE = 4096


def touch(buf: bytearray) -> float:
    t = time.perf_counter()
    for i in range(0, len(buf), PAGE):
        buf[i] = (buf[i] + 1) & 255
    return (time.perf_counter() - t) * 1e3


def usage() -> tuple[int, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt + r.ru_majflt, r.ru_nivcsw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pauses", type=float, nargs="+", default=[0, 0.1, 1, 5, 0, 5])
    args = ap.parse_args()
    small, large = bytearray(4 << 20), bytearray(32 << 20)
    lines = [line.rstrip(b"\n") for line in corpus_lines(30_000, seed=7)]
    parser = LineParser(ParseOptions(), source="bench")
    for k in range(0, 6000, 300):  # warm: the parser's code and tables in use
        parse_to_dicts(parser, lines[k:k + 300], None, None, time.time_ns())
    touch(small)
    touch(large)
    print("pause s   4 MiB touch ms   32 MiB touch ms   parse 300 lines ms   faults   invol. switches")
    for n, pause in enumerate(args.pauses):
        time.sleep(pause)
        f0, c0 = usage()
        a = touch(small)
        time.sleep(pause)
        b = touch(large)
        time.sleep(pause)
        batch = lines[6000 + 300 * n:6300 + 300 * n]
        t = time.perf_counter()
        parse_to_dicts(parser, batch, None, None, time.time_ns())
        p = (time.perf_counter() - t) * 1e3
        f1, c1 = usage()
        print(f"{pause:7g}   {a:14.2f}   {b:15.2f}   {p:18.2f}   {f1 - f0:6d}   {c1 - c0:15d}", flush=True)


if __name__ == "__main__":
    main()
