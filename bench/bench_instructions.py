"""Instructions per line for reading and parsing, counted by valgrind: the one figure
of this machine that does not swing with its neighbours' load (seconds here varied
by 1.8x within a day). For judging a change to the parse path, not as a target.

    python bench/bench_instructions.py [--lines 20000]

Needs valgrind (Debian package ``valgrind``). Runs the corpus's first ``--lines``
lines under ``valgrind --tool=callgrind`` once per stage and subtracts a run that
only imports, so start-up is not counted:

    read     the file into batches of lines (shipper.reader)
    records  read + parse to records in memory (bench_parse.py (a))
    ndjson   read + parse to JSON dicts + NDJSON (bench_parse.py (b), without the write)
    dicts    read + parse to JSON dicts, kept (what a sink is given)
    syslog   dicts + RFC 5424 encoding and octet-counted framing of each batch, as the
             TCP sink does (bench_sinks.py's "encode+frame only")

and prints ``encode+frame`` = syslog - dicts: the encoder's and framing's own count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from corpus import interpreter, write_file  # noqa: E402

STAGE = r"""
import sys
from shipper.cli import tune_gc
from shipper.parse import LineParser
from shipper.reader import read_batches
from shipper.record import ndjson_all
from shipper.encode.rfc5424 import Rfc5424Encoder
from shipper.framing import octet_counted_texts
tune_gc()
path, stage = sys.argv[1], sys.argv[2]
if stage != "import":
    parser = LineParser(source=path)
    kept = []
    for b in read_batches(path):
        if stage == "records":
            parser.file_id = b.file_id
            parser.parse_batch(b.lines, b.offsets)
        elif stage == "ndjson":
            parser.file_id = b.file_id
            ndjson_all(parser.parse_batch_dicts(b.lines, b.offsets))
        elif stage in ("dicts", "syslog"):
            parser.file_id = b.file_id
            kept.append(parser.parse_batch_dicts(b.lines, b.offsets))
    if stage == "syslog":
        encoder = Rfc5424Encoder()
        for batch in kept:
            # batches of 1000, as bench_sinks.py sends them
            for i in range(0, len(batch), 1000):
                octet_counted_texts(encoder.encode_texts(batch[i:i + 1000]))
"""
STAGES = ("read", "records", "ndjson", "dicts", "syslog")


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def count(script: str, path: str, stage: str) -> int:
    # the shipper next to this script, whatever is installed
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": "0"}  # hash order: the same counts each run
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, script, path, stage],
        capture_output=True, text=True, check=True, env=env)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise SystemExit(f"valgrind gave no count: {out.stderr[-500:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=20_000)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_instructions: valgrind not found (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.log")
        write_file(path, args.lines)
        script = os.path.join(tmp, "stage.py")
        with open(script, "w") as f:
            f.write(STAGE)
        print(f"{args.lines:,} corpus lines; {interpreter()}")
        base = count(script, path, "import")
        counts = {}
        for stage in STAGES:
            counts[stage] = count(script, path, stage) - base
            print(f"  {stage:8} {counts[stage] / args.lines:>9,.0f} instructions/line")
        print(f"  encode+frame {(counts['syslog'] - counts['dicts']) / args.lines:>9,.0f} instructions/record")


if __name__ == "__main__":
    main()
