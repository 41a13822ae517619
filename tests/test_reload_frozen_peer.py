"""Reloads while the receiver is frozen: a real rsyslog's RELP input stopped with
SIGSTOP (its connection up, no answers), real multilog writing all the while, the
daemon run in this process so that its objects can be counted.

Found by a fault round: each such reload left the old pipeline in reference cycles
(~4.5 MB of records and queue writes each, RSS 116 MB after ten reloads until Python's
full collection ran), and stopped the reading for the whole drain_timeout."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import await_until, free_port, require_binary
from rsyslog_util import Rsyslog
from test_daemon import SEQ_RE, WRITER, _config

from shipper.config import load_config
from shipper.daemon import Daemon


def _relp_config(tmp: Path, logdir: Path, port: int, tracking: bool) -> Path:
    cfg = tmp / "shipper.toml"
    text = (_config(tmp, logdir, port, free_port())
            .replace('type = "syslog"\nprotocol = "tcp"', 'type = "relp"'))
    cfg.write_text(text.replace("enabled = false", "enabled = true") if tracking else text)
    return cfg


async def _reloads_with_a_frozen_peer(tmp: Path, tracking: bool, reloads: int,
                                      after_each: Any, lines: int) -> list[int]:
    """Run the daemon on a real multilog (``lines`` lines, 1000 a second), freeze the
    RELP receiver, reload ``reloads`` times (``after_each(daemon, old pipeline's
    weakref, time of the SIGHUP)`` each time), thaw it: the seqs it has once the
    writer is done and they stop coming (``lines`` of them, or the writer was cut)."""
    rs = Rsyslog(tmp / "rsyslog", ("relp",))
    rs.start()
    logdir = tmp / "log" / "send"
    logdir.parent.mkdir()
    cfg = _relp_config(tmp, logdir, rs.ports["relp"], tracking)
    writer = subprocess.Popen(
        f"{sys.executable} -c '{WRITER}' 1000 {lines} 0 | {require_binary('multilog')} t s999999 n20 {logdir}",
        shell=True, start_new_session=True)
    frozen = False
    d = Daemon(load_config(str(cfg)), lambda: load_config(str(cfg)))
    run = asyncio.get_running_loop().create_task(d.run())
    try:
        deadline = time.monotonic() + 20
        while (d.assembly is None or not d.assembly.pipeline.stats.lines) and not run.done():
            assert time.monotonic() < deadline, "nothing read"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        assert rs.proc is not None
        os.kill(rs.proc.pid, signal.SIGSTOP)  # the rsyslogd we started
        frozen = True
        await asyncio.sleep(1.0)
        for _ in range(reloads):
            assert d.assembly is not None
            old = weakref.ref(d.assembly.pipeline)  # not a reference: it must go
            t0 = time.monotonic()
            d._on_signal(signal.SIGHUP)  # what the SIGHUP handler does
            await after_each(d, old, t0)
        os.kill(rs.proc.pid, signal.SIGCONT)
        frozen = False
        got: list[int] = []
        deadline = time.monotonic() + 60
        while writer.poll() is None or len(set(got)) < lines:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
            got = [int(g.group(1)) for m in rs.messages("relp") if (g := SEQ_RE.search(m["msg"]))]
        return got
    finally:
        if frozen:
            os.kill(rs.proc.pid, signal.SIGCONT)
        d._on_signal(signal.SIGTERM)
        await asyncio.wait_for(run, 30)
        with contextlib.suppress(ProcessLookupError):  # done already
            os.killpg(writer.pid, signal.SIGKILL)  # the writer and multilog we started
        writer.wait(10)
        rs.stop()


def _reloaded(d: Daemon, old: weakref.ref[Any]) -> bool:
    return d.assembly is not None and d.assembly.pipeline is not old()


async def _until_reloaded(d: Daemon, old: weakref.ref[Any], timeout: float = 15) -> None:
    await await_until("a reload", lambda: _reloaded(d, old), timeout)


def _live(*names: str) -> Counter[str]:
    """Objects of these types the cycle collector tracks (every container): the live
    ones and those in uncollected cycles."""
    return Counter(n for o in gc.get_objects() if (n := type(o).__name__) in names)


LEAKED = ("Pipeline", "Assembly", "DiskQueue", "RelpSink", "QmailTracker", "SessionTracker",
          "CDLL")


@pytest.mark.slow
def test_reloads_with_a_frozen_peer_leave_nothing_to_the_cycle_collector(tmp_path):
    """With the cycle collector off, each old pipeline is freed at its reload: before,
    every one stayed (its cancelled tasks' tracebacks held its frames; the registry held
    the assembly's collect; the correlator's two trackers each other), 3 reloads left
    3 more of each part, and a CDLL per inotify watcher."""
    counts: list[Counter[str]] = []

    async def after_each(d: Daemon, old: weakref.ref[Any], t0: float) -> None:
        await _until_reloaded(d, old)
        assert old() is None  # freed at once, without the cycle collector
        await asyncio.sleep(0.3)  # the new pipeline under way: its tasks and watcher
        counts.append(_live(*LEAKED))

    gc.collect()
    gc.disable()
    try:
        got = asyncio.run(_reloads_with_a_frozen_peer(tmp_path, True, 3, after_each, lines=10000))
    finally:
        gc.enable()
    # the running pipeline's parts, as many after the third reload as after the first
    assert counts[0]["Pipeline"] == counts[0]["Assembly"] == 1, counts[0]
    assert counts[0]["QmailTracker"] == counts[0]["SessionTracker"] == 1, counts[0]
    assert counts[-1] == counts[0], counts
    assert set(got) == set(range(10000)), (len(set(got)), len(got))


@pytest.mark.slow
def test_a_reload_with_a_frozen_peer_pauses_the_reading_briefly(tmp_path):
    """The old pipeline's drain gives up a sink acknowledging nothing for DRAIN_STALL
    (2 s): its records wait in the buffer for the new one. Before, the drain waited the
    whole drain_timeout (10 s) and nothing was read for 9.5 s at each reload."""
    read_in_4s: list[int] = []

    async def after_each(d: Daemon, old: weakref.ref[Any], t0: float) -> None:
        # lines read in the 4 s after the SIGHUP (the old pipeline reads none after it)
        while time.monotonic() < t0 + 4:
            await asyncio.sleep(0.02)
        assert d.assembly is not None
        read_in_4s.append(d.assembly.pipeline.stats.lines if _reloaded(d, old) else 0)
        await _until_reloaded(d, old)

    got = asyncio.run(_reloads_with_a_frozen_peer(tmp_path, False, 2, after_each, lines=15000))
    # 1000 lines a second: ~1,400 in the first reload's 1.4 s of reading, ~3,900 in the
    # second's (no connection then: nothing to wait for); before, none in either
    assert read_in_4s[0] >= 500, read_in_4s
    assert read_in_4s[1] >= 2000, read_in_4s
    # and nothing lost: what the given-up drain left went out from the buffer
    assert set(got) == set(range(15000)), (len(set(got)), len(got))
