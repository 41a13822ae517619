"""Many log directories under one glob (a qmail-toaster or indimail host logs into one
multilog directory per service and per tcpserver instance: 50-500 of them)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import subprocess
import time

import pytest
from conftest import await_until, end_pipeline, require_binary

from shipper import follower as follower_mod
from shipper.checkpoint import CheckpointStore
from shipper.config import load_config_text
from shipper.follower import FD_RESERVE, LineBatch, MultilogSource

DIRS = 40


def _make_logs(root, multilog: str) -> None:
    """One line each, written by the real multilog (tcpserver's status line)."""
    root.mkdir()
    for i in range(DIRS):
        subprocess.run([multilog, "t", str(root / f"smtpd{i:02d}")], check=True, timeout=30,
                       input=f"tcpserver: status: 1/40 smtpd{i:02d}\n".encode())


@pytest.mark.slow

async def _read_committing(src: MultilogSource, got: list[bytes]) -> None:
    """The source's lines into ``got``, each batch committed as the pipeline would."""
    async for item in src.batches():
        if isinstance(item, LineBatch):
            got.extend(item.lines)
            src.commit(item.position)

async def test_more_logs_than_file_descriptors_follows_what_fits_and_says_so(tmp_path, caplog):
    """A scale hunt: 1,000 directories and ``ulimit -n 256``. Each followed directory
    holds its current open, so they took every descriptor: the sink could not open its
    file, no checkpoint was written, nothing at all was shipped, and the log had 770
    warnings and a traceback a second. Now the logs that fit are followed, the room for
    the rest of the daemon is kept, the others wait (said once) and are followed, every
    line once, when there is room."""
    _make_logs(tmp_path / "logs", require_binary("multilog"))
    caplog.set_level(logging.INFO, logger="shipper.follower")
    src = MultilogSource([str(tmp_path / "logs" / "*")], str(tmp_path / "cp.json"), start="all",
                         rescan_interval=0.05)
    got: list[bytes] = []

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fits = 10
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (len(os.listdir("/proc/self/fd")) + FD_RESERVE + fits, hard))
    task = asyncio.create_task(_read_committing(src, got))
    try:
        await await_until("the logs that fit read", lambda: len(got) >= len(src.followers) > 0)
        assert 0 < len(src.followers) <= fits
        # the reserve is there: the checkpoint is written, files open
        src.save()
        assert src.save_errors == 0
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(FD_RESERVE // 2)]
        for fd in fds:
            os.close(fd)
        said = [r for r in caplog.records if "are not followed" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.ERROR
        assert "ulimit -n" in said[0].getMessage()
        deadline = time.monotonic() + 0.3  # rescans meanwhile say it no more
        await await_until("a few rescans", lambda: time.monotonic() > deadline)
        assert sum("are not followed" in r.getMessage() for r in caplog.records) == 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        await await_until("every log read", lambda: len(got) >= DIRS)
        assert sorted(got) == sorted({ln for ln in got})  # once each
        assert {ln.rsplit(b" ", 1)[1] for ln in got} == {f"smtpd{i:02d}".encode() for i in range(DIRS)}
        assert any("every log matched is followed now" in r.getMessage() for r in caplog.records)
    finally:
        await src.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_log_directory_removed_while_it_is_checked_is_not_said_at_all(tmp_path, monkeypatch,
                                                                              caplog):
    """A scale hunt, directories made and removed under the glob 50 a second: one removed
    between the look at its names and at its mode was an ERROR "cannot read it:
    Permission denied (the shipper's user needs to read the log directory)", as root,
    and one removed between the glob and that look a warning "no such directory yet"."""
    multilog = require_binary("multilog")
    root = tmp_path / "logs"
    _make_logs(root, multilog)
    doomed = str(root / "smtpd07")
    listdir = os.listdir

    def listed_then_removed(path=".", listdir=listdir):  # the admin's rm -r lands just then
        names = listdir(path)
        if os.fspath(path) == doomed:
            subprocess.run(["rm", "-r", doomed], check=True)
        return names

    monkeypatch.setattr(os, "listdir", listed_then_removed)
    src = MultilogSource([str(root / "*")], None, start="all")
    try:
        found = src._scan()
        monkeypatch.undo()
        assert len(found) == DIRS - 1 and doomed not in found
        assert src.warnings == []
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        monkeypatch.undo()
        await src.close()


@pytest.mark.slow
async def test_a_log_directory_renamed_under_the_glob_is_read_on_not_again(tmp_path, caplog):
    """A scale hunt: ``mv smtpd07 smtpd07.old`` while multilog writes on (it keeps its
    directory open). The new name was a new directory, read from its oldest file: 87 of
    400 lines shipped twice, and the old name's follower read on through its open file."""
    multilog = require_binary("multilog")
    root = tmp_path / "logs"
    _make_logs(root, multilog)
    d = root / "smtpd07"
    caplog.set_level(logging.INFO, logger="shipper.follower")
    src = MultilogSource([str(root / "*")], str(tmp_path / "cp.json"), start="all",
                         poll_interval=0.05, rescan_interval=0.2)
    got: list[bytes] = []

    task = asyncio.create_task(_read_committing(src, got))
    ml = subprocess.Popen([multilog, "t", "s4096", "n3", str(d)], stdin=subprocess.PIPE)
    assert ml.stdin is not None
    try:
        await await_until("the first lines read", lambda: len(got) >= DIRS)
        for k in range(400):  # tcpserver's lines, numbered; s4096: rotated every ~60
            ml.stdin.write(b"tcpserver: pid %d from 192.0.2.7\n" % (1000 + k))
            ml.stdin.flush()
            if k == 150:
                d.rename(root / "smtpd07.old")
            await asyncio.sleep(0.002)
        ml.stdin.close()
        ml.wait(timeout=30)
        await await_until("every line read", lambda: len(
            {ln for ln in got if b"tcpserver: pid" in ln}) >= 400)
        # the old name let go of, the new one read to the end: no second reading to come
        await await_until("the old name retired", lambda: str(d) not in src.followers)
        moved = src.followers[str(root / "smtpd07.old")]
        await await_until("the new name read", lambda: moved.unread_bytes() == 0 and not moved.more)
        pids = [ln.split(b": ", 1)[1] for ln in got if b"tcpserver: pid" in ln]
        # the new name goes on from what was committed (a review: from what was read,
        # the lines in flight were lost at a stop): what was queued and not committed
        # yet comes again, with the same event ids; not the old name's whole history
        assert len(set(pids)) == 400 and len(pids) - 400 <= 60, (len(pids), len(set(pids)))
        assert any("resumes where" in r.getMessage() and "renamed" in r.getMessage()
                   for r in caplog.records)
    finally:
        if ml.poll() is None:
            ml.kill()
            ml.wait()
        await src.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    saved = CheckpointStore(str(tmp_path / "cp.json")).load()
    assert str(d) not in saved and str(root / "smtpd07.old") in saved  # no stale entry


async def test_a_log_directory_let_go_of_has_no_lag_series_growing_again(tmp_path, monkeypatch):
    """A scale hunt: a service removed (its log directory under the glob too) had its lag
    series dropped while it was followed, and back, growing for good, once it was let go
    of a minute later: a lag alert for each service removed, and in ``shipper status``
    forever."""
    from shipper.assemble import assemble

    monkeypatch.setattr(follower_mod, "GONE_FORGET", 0.1)
    _make_logs(tmp_path / "logs", require_binary("multilog"))
    asm = assemble(load_config_text(
        f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
        f'paths = ["{tmp_path}/logs/*"]\nstart_position = "all"\n'
        f'[sinks.o]\ntype = "file"\npath = "{tmp_path}/o.ndjson"\n'))
    source = asm.pipeline.sources[0]
    source.rescan_interval = 0.05
    task = asyncio.get_running_loop().create_task(asm.pipeline.run())
    gone, live = str(tmp_path / "logs" / "smtpd07"), str(tmp_path / "logs" / "smtpd08")
    try:
        await await_until("the lines read", lambda: asm.pipeline.stats.lines >= DIRS)
        subprocess.run(["rm", "-r", gone], check=True)
        await await_until("the removed directory let go of", lambda: gone not in source.followers)
        asm.collect()
        assert (gone,) not in asm.metrics.source_lag.values
        assert asm.metrics.source_lag.get(source=live) > 0
        assert asm.metrics.source_lines.get(source=gone) == 1  # its counts stay
    finally:
        await end_pipeline(asm.pipeline, task)
        for r in asm.pipeline.routes:
            r.queue.close()
