"""SIGKILL the disk queue's writer at random points: what was reported durable is there
exactly once and in order, nothing is half there, and a source re-reading from a
lagging checkpoint does not put anything in twice."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from shipper.buffer_tool import verify
from shipper.diskqueue import DiskQueue

ROOT = Path(__file__).resolve().parent.parent

# The writer: a "source" offering numbered records from its checkpoint, which it saves
# (atomically) only now and then, after the records are durable, like the pipeline.
WRITER = textwrap.dedent("""
    import os, random, sys
    from shipper.diskqueue import DiskQueue
    path, checkpoint, policy, seed, ack_every = sys.argv[1:6]
    rng = random.Random(int(seed))
    q = DiskQueue.open(path, segment_bytes=64 << 10, max_bytes=1 << 30, fsync=policy,
                       fsync_interval_ms=20)
    try:
        i = int(open(checkpoint).read())
    except FileNotFoundError:
        i = 0
    out = sys.stdout
    batches = 0
    while True:
        n = rng.randint(1, 40)
        payloads = [b'{"n":%d,"pad":"%s"}' % (j, b"x" * rng.randint(0, 300)) for j in range(i, i + n)]
        r = q.append(payloads, source_key="src", positions=list(range(i, i + n)))
        i += n
        batches += 1
        durable = q.durable_seq if policy != "interval" or batches % 4 else q.sync()
        # what the queue says is durable, and the record number it is known to hold
        out.write("D %d %d\\n" % (durable, i - 1 if durable >= r.last_seq else -1))
        out.flush()
        if int(ack_every) and batches % int(ack_every) == 0:
            items = q.read(rng.randint(1, 60), 1 << 20)
            if items:
                q.ack(items[-1][0])
                if policy != "always":
                    q.sync()
                out.write("A %d\\n" % items[-1][0])
                out.flush()
        if durable >= r.last_seq and rng.random() < 0.3:
            tmp = checkpoint + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(i))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, checkpoint)
""")


def run_writer(qdir: Path, checkpoint: Path, policy: str, seed: int, ack_every: int,
               kill_after: float) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(qdir), str(checkpoint), policy,
                             str(seed), str(ack_every)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        # wait until it writes, then a random moment more
        deadline = time.monotonic() + 20
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first or time.monotonic() > deadline, proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    lines = (first + rest).decode().split("\n")
    return [ln for ln in lines[:-1] if ln]  # the last piece may be cut mid-line


def check_queue(qdir: Path, durable_n: int, acked_seq: int) -> tuple[int, int]:
    """Open after the kill: records are n = 0,1,2,... exactly once and in order, up to
    at least the last one reported durable. Returns (first n present, last n)."""
    q = DiskQueue.open(qdir, segment_bytes=64 << 10, max_bytes=1 << 30, fsync="never")
    try:
        assert q.stats.corrupt_records == 0
        assert q.acked_seq >= acked_seq
        items = []
        for _ in range(100_000):
            batch = q.read(1000, 1 << 22)
            if not batch:
                break
            items += batch
        seqs = [s for s, _ in items]
        assert seqs == list(range(q.acked_seq + 1, q.last_seq + 1))
        nums = [orjson.loads(p)["n"] for _, p in items]
        if not nums:
            return -1, durable_n
        assert nums == list(range(nums[0], nums[0] + len(nums)))  # no dup, no hole
        assert nums[-1] >= durable_n
        return nums[0], nums[-1]
    finally:
        q._stop_flusher.set()
        q._close_fds()  # no close(): leave the files exactly as the kill left them


@pytest.mark.slow
@pytest.mark.parametrize("policy,ack_every", [("always", 0), ("interval", 0), ("never", 0),
                                              ("always", 3), ("interval", 2)])
def test_sigkill_writer_loses_nothing_durable_and_duplicates_nothing(
        tmp_path: Path, policy: str, ack_every: int) -> None:
    qdir = tmp_path / "q"
    checkpoint = tmp_path / "checkpoint"
    rng = random.Random(f"{policy}{ack_every}")
    durable_n = -1
    acked = 0
    first_n = 0
    iterations = 0
    deadline = time.monotonic() + 25
    while iterations < 12 and time.monotonic() < deadline:
        iterations += 1
        lines = run_writer(qdir, checkpoint, policy, rng.randrange(1 << 30), ack_every,
                           rng.uniform(0.0, 0.25))
        for ln in lines:
            kind, *vals = ln.split()
            if kind == "D" and int(vals[1]) >= 0:
                durable_n = max(durable_n, int(vals[1]))
            elif kind == "A":
                acked = max(acked, int(vals[0]))
        first, last = check_queue(qdir, durable_n, acked)
        if first >= 0:
            assert first >= first_n  # acknowledged records never come back
            first_n = first
        report = io.StringIO()
        assert verify(qdir, out=report) == 0, report.getvalue()  # recovery left it clean
    assert iterations >= 3 and durable_n > 0
