"""Instructions per line of the whole daemon, counted by valgrind: bench_e2e.py's
setup (a multilog ``current`` → ``shipper run`` with full parsing, the disk buffer
and RFC 5424 octet-counted TCP), as one deterministic figure for judging changes
around the parser and encoder (seconds here swing by 1.8x within a day).

    python bench/bench_daemon_instructions.py [--lines 20000] [--base 2000] [--profile]

The daemon runs under ``valgrind --tool=callgrind`` with bench_e2e.py's
configuration and ends once all is delivered and it has been idle for a moment
(``Daemon(exit_when_idle=)``, as the demo does); a receiver thread in this process
(not counted) reads the TCP stream and checks that every line arrived. Two runs,
``--lines`` and ``--base`` lines, are subtracted, so start-up, stop and the idle
wait are not counted: the figure is the cost of one more line. Timers that fire
on the clock (the buffer's fsync, the syncer) fire ~50 times as often per line
under valgrind as natively, so they are over-counted a little.

``--profile`` runs the daemon natively once more under cProfile and prints the
functions with the most own time (``--sort``). ``--extra-conf`` adds to the
configuration (the memory buffer instead of the disk one, say), ``--gc-off``
disables the garbage collector: what each costs, by difference.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from bench_e2e import shipper_conf  # noqa: E402
from corpus import interpreter, write_file  # noqa: E402

from shipper.framing import FrameDecoder  # noqa: E402

DRIVER = r"""
import asyncio, gc, sys
from shipper.cli import tune_gc
from shipper.config import load_config
from shipper.daemon import Daemon, setup_logging
tune_gc()
if sys.argv[2] == "gc-off":
    gc.disable()
path = sys.argv[1]
lines = sys.argv[3]
config = load_config(path)
setup_logging("text", "warning")
daemon = Daemon(config, lambda: load_config(path), exit_when_idle=0.3)
code = asyncio.run(daemon.run())
st = daemon.assembly.pipeline.stats
print(f"STATS {lines} lines: from memory {st.sent_from_memory} from buffer {st.sent_from_buffer}", file=sys.stderr)
sys.exit(code)
"""


class Receiver(threading.Thread):
    """Reads one connection at a time to EOF, counting frames."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frames = 0

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            dec = FrameDecoder(max_frame=1 << 20)
            with conn:
                while data := conn.recv(1 << 18):
                    self.frames += len(dec.feed(data))


def run_daemon(tmp: Path, lines: int, wrap: list[str], extra_conf: str = "", gc_off: bool = False) -> str:
    """Run the daemon (under ``wrap``) on ``lines`` corpus lines till all is delivered;
    its stderr. ``extra_conf``: TOML added to bench_e2e.py's configuration."""
    d = tmp / f"run{lines}"
    shutil.rmtree(d, ignore_errors=True)
    (d / "log").mkdir(parents=True)
    write_file(str(d / "log" / "current"), lines)
    recv = Receiver()
    recv.start()
    conf = shipper_conf(d, d / "log", recv.port, None)
    if extra_conf:
        conf.write_text(conf.read_text() + extra_conf + "\n")
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    out = subprocess.run([*wrap, str(driver), str(conf), "gc-off" if gc_off else "gc", str(lines)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    recv.server.close()
    if out.returncode != 0:
        raise SystemExit(f"daemon failed ({out.returncode}): {out.stderr[-3000:]}")
    if recv.frames != lines:
        raise SystemExit(f"receiver got {recv.frames:,} frames of {lines:,}")
    return out.stderr


def count(tmp: Path, lines: int, out_file: str, **kw: Any) -> int:
    err = run_daemon(tmp, lines, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                                  sys.executable], **kw)
    print("   ", *re.findall(r"STATS (.*)", err))  # records the sink took as kept dicts / parsed back
    m = re.search(r"Collected : (\d+)", err)
    if m is None:
        raise SystemExit(f"valgrind gave no count: {err[-500:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--base", type=int, default=2_000)
    ap.add_argument("--keep", metavar="DIR", help="keep the callgrind output of the --lines run here")
    ap.add_argument("--profile", action="store_true", help="also a native cProfile run")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--no-count", action="store_true", help="only the cProfile run")
    ap.add_argument("--extra-conf", default="", metavar="TOML",
                    help='added to the configuration, e.g. $\'[sinks.siem.buffer]\\ntype = "memory"\'')
    ap.add_argument("--gc-off", action="store_true", help="gc.disable() in the daemon: what the collector costs")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_daemon_instructions: valgrind not found (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="shipper-ibench-") as t:
        tmp = Path(t)
        print(f"{args.lines:,} - {args.base:,} corpus lines; {interpreter()}")
        kw = {"extra_conf": args.extra_conf, "gc_off": args.gc_off}
        if not args.no_count:
            keep = os.path.join(args.keep, "callgrind.out") if args.keep else "/dev/null"
            big = count(tmp, args.lines, keep, **kw)
            base = count(tmp, args.base, "/dev/null", **kw)
            print(f"  daemon   {(big - base) / (args.lines - args.base):>9,.0f} instructions/line")
        if args.profile or args.no_count:
            prof = tmp / "prof.out"
            run_daemon(tmp, args.lines, [sys.executable, "-m", "cProfile", "-o", str(prof)], **kw)
            import pstats
            pstats.Stats(str(prof)).sort_stats(args.sort).print_stats(45)


if __name__ == "__main__":
    main()
