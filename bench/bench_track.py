"""Benchmark ``shipper track`` and ``shipper stats`` over the generated qmail corpus.

For each size (default 200k and 1M lines of bench/corpus.py: tcpserver/sslserver,
rblsmtpd, s/qmail qmail-smtpd, recordio and qmail-send lines, interleaved) it runs,
each in a fresh child process: stats (parse + correlate + aggregate) and track (the
same plus a filter). It prints lines/s, the child's peak RSS and the largest number
of open mails+sessions seen: peak memory should follow the open count, not the
number of lines.

    python bench/bench_track.py                  # 200k and 1M
    python bench/bench_track.py --sizes 100000   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from shipper.track import cli
from shipper.track.correlator import Correlator
from shipper.track.report import Stats, TrackQuery, matches

mode, path, n_lines = sys.argv[2], sys.argv[3], int(sys.argv[4])
peak_open = 0
orig_feed = Correlator.feed
def feed(self, records):
    global peak_open
    out = orig_feed(self, records)
    peak_open = max(peak_open, self.open_count)
    return out
Correlator.feed = feed
t0 = time.perf_counter()
n = 0
if mode == "stats":
    st = Stats()
    for rec in cli.summaries([path]):
        st.add(rec); n += 1
    st.to_dict()
else:
    q = TrackQuery(rcpt_to="alice1@example.org")
    for rec in cli.summaries([path]):
        n += 1
        matches(rec, q)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "lines_per_s": n_lines / dt, "summaries": n,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_open": peak_open}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 256],
                    help="interleaved mails/sessions in the corpus (what memory should follow)")
    args = ap.parse_args()
    from bench.corpus import write_file  # the lead's corpus generator

    root = os.path.join(HERE, "..")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'lines':>9} {'interleaved':>11} {'mode':>6} {'seconds':>8} {'lines/s':>9} {'summaries':>9} "
              f"{'peak RSS MB':>11} {'peak open':>9}")
        for conc in args.concurrency:
            for n in args.sizes:
                path = os.path.join(tmp, f"corpus-{n}.log")
                write_file(path, n, concurrency=conc)
                for mode in ("stats", "track"):
                    res = subprocess.run([sys.executable, "-c", CHILD, root, mode, path, str(n)],
                                         capture_output=True, text=True, check=True)
                    r = json.loads(res.stdout)
                    print(f"{n:>9} {conc:>11} {mode:>6} {r['seconds']:>8.2f} {r['lines_per_s']:>9.0f} "
                          f"{r['summaries']:>9} {r['peak_rss_mb']:>11.1f} {r['peak_open']:>9}")
                os.unlink(path)


if __name__ == "__main__":
    main()
