"""Many log directories under one glob (a qmail-toaster or indimail host logs into one
multilog directory per service and per tcpserver instance: 50-500 of them)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import (
    await_until,
    end_pipeline,
    require_binary,
    stop_process,
    wait_until,
    without_root_powers,
)

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


async def _read_committing(src: MultilogSource, got: list[bytes]) -> None:
    """The source's lines into ``got``, each batch committed as the pipeline would."""
    async for item in src.batches():
        if isinstance(item, LineBatch):
            got.extend(item.lines)
            src.commit(item.position)

@pytest.mark.slow
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
        # and said where an admin looks (/metrics, status, /healthz: the test below)
        assert src.not_followed() == dict.fromkeys(
            sorted(set(follower_mod.expand(str(tmp_path / "logs" / "*"))) - set(src.followers)),
            "file_descriptors")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        await await_until("every log read", lambda: len(got) >= DIRS)
        assert sorted(got) == sorted({ln for ln in got})  # once each
        assert {ln.rsplit(b" ", 1)[1] for ln in got} == {f"smtpd{i:02d}".encode() for i in range(DIRS)}
        assert any("every log matched is followed now" in r.getMessage() for r in caplog.records)
        assert src.not_followed() == {}
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


async def test_a_log_directory_renamed_and_made_again_at_once_is_read_on_not_again(tmp_path, caplog):
    """A leftover of the scale hunt: ``mv smtpd07 smtpd07.old; mkdir smtpd07`` (then its
    multilog restarted there). The old name named a directory again, so the rename was
    not seen: the new name was read as a new log, from its oldest file, every line
    multilog kept there shipped twice (105 of 400 with s4096 n3, with the same event ids).
    The directory is told by its inode and the file being read by its inode and first
    line: the new name goes on where the old one was, the old name is a new log."""
    multilog = require_binary("multilog")
    root = tmp_path / "logs"
    _make_logs(root, multilog)
    d, old = root / "smtpd07", root / "smtpd07.old"
    caplog.set_level(logging.INFO, logger="shipper.follower")
    src = MultilogSource([str(root / "*")], str(tmp_path / "cp.json"), start="all",
                         poll_interval=0.05, rescan_interval=0.2)
    got: list[bytes] = []

    task = asyncio.create_task(_read_committing(src, got))
    ml = subprocess.Popen([multilog, "t", "s16384", "n3", str(d)], stdin=subprocess.PIPE)
    assert ml.stdin is not None
    try:
        await await_until("the first lines read", lambda: len(got) >= DIRS)
        for k in range(400):  # tcpserver's lines, numbered
            ml.stdin.write(b"tcpserver: pid %d from 192.0.2.7\n" % (1000 + k))
            ml.stdin.flush()
            if k == 150:  # the old multilog writes on in the directory it has open
                d.rename(old)
                d.mkdir()
            elif k == 300:  # the log service restarted: its multilog in the new one
                ml.stdin.close()
                ml.wait(timeout=30)
                ml = subprocess.Popen([multilog, "t", "s16384", "n3", str(d)], stdin=subprocess.PIPE)
                assert ml.stdin is not None
            await asyncio.sleep(0.002)
        ml.stdin.close()
        ml.wait(timeout=30)
        await await_until("every line read", lambda: len(
            {ln for ln in got if b"tcpserver: pid" in ln}) >= 400)
        for path in (d, old):
            await await_until(f"{path.name} followed and read", lambda p=str(path): p in src.followers
                              and src.followers[p].unread_bytes() == 0 and not src.followers[p].more)
        pids = [ln.split(b": ", 1)[1] for ln in got if b"tcpserver: pid" in ln]
        # what was read and not committed yet at the take-over may come again (same ids)
        assert len(set(pids)) == 400 and len(pids) - 400 <= 60, (len(pids), len(set(pids)))
        assert any(f"{old} resumes where {d} left it" in r.getMessage() for r in caplog.records)
    finally:
        if ml.poll() is None:
            ml.kill()
            ml.wait()
        await src.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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


def _status(cfg) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.slow
def test_logs_not_followed_for_want_of_descriptors_show_in_metrics_status_and_health(tmp_path):
    """A leftover of the scale hunt: the logs left unfollowed for want of file descriptors
    were said once in the daemon's log, and nowhere else: /metrics, ``shipper status``
    (exit 0) and /healthz all green while 18 of 40 logs were not shipped, and multilog's
    n limit deleting their lines meanwhile. A real ``shipper run`` under ``prlimit``."""
    prlimit = require_binary("prlimit")
    _make_logs(tmp_path / "logs", require_binary("multilog"))
    out = tmp_path / "o.ndjson"
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[metrics]\nlisten = "127.0.0.1:0"\n'
                   f'[sources.q]\ntype = "multilog"\npaths = ["{tmp_path}/logs/*"]\n'
                   f'start_position = "all"\n[sinks.o]\ntype = "file"\npath = "{out}"\n')
    log = (tmp_path / "shipper.log").open("w")
    # room for the daemon's own files, the reserve, and a few logs of the 40
    proc = subprocess.Popen([prlimit, f"--nofile={FD_RESERVE + 40}", sys.executable, "-m",
                             "shipper", "run", "-c", str(cfg)], stdout=log, stderr=log)

    def shipped() -> int:
        return len(out.read_text().splitlines()) if out.exists() else 0
    try:
        wait_until("the logs that fit shipped and the rest said", lambda: shipped() > 0 and
                   "are not followed" in (tmp_path / "shipper.log").read_text())
        addr = (tmp_path / "state" / "metrics.addr").read_text().strip()
        wait_until("every log taken up or waiting", lambda: _not_followed(addr) + shipped() == DIRS)
        waiting = _not_followed(addr)
        assert 0 < waiting < DIRS
        r = _status(cfg)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert any(ln.startswith(f"not followed: {waiting} logs, for want of file descriptors "
                                 "(ulimit -n): ") for ln in lines), r.stdout
        assert lines[-1].startswith(f"unhealthy: {waiting} logs not followed, for want of file "
                                    f"descriptors (ulimit -n {FD_RESERVE + 40}: raise "
                                    "LimitNOFILE="), r.stdout
        # (room made, they are said no more: the test above; a running process's hard
        # limit cannot be raised here, CAP_SYS_RESOURCE)
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.slow
def test_logs_this_user_cannot_read_show_in_metrics_status_and_health(tmp_path):
    """A hunt: a followed log directory made unreadable (chmod 000; and another so from
    the start) was said in the daemon's log only: it read 28 of the 200 lines written,
    and /metrics, ``shipper status`` (0 B unread, exit 0) and /healthz were all green.
    A real ``shipper run``, held to the mode bits (as root: no CAP_DAC_OVERRIDE)."""
    multilog = require_binary("multilog")
    top = tmp_path / "top"
    top.mkdir()
    top.chmod(0o755)
    tmp_path.chmod(0o755)  # (the daemon's user may be another one's)
    root = top / "logs"
    root.mkdir()
    for name in ("pop3d", "smtpd"):
        subprocess.run([multilog, "t", str(root / name)], check=True, timeout=30,
                       input=f"tcpserver: status: 0/40 {name}\n".encode())
    pop3d, smtpd = root / "pop3d", root / "smtpd"
    out = top / "o.ndjson"
    cfg = top / "shipper.toml"
    cfg.write_text(f'state_dir = "{top}/state"\n[metrics]\nlisten = "127.0.0.1:0"\n'
                   f'[sources.q]\ntype = "multilog"\npaths = ["{root}/*"]\n'
                   f'start_position = "all"\n[sinks.o]\ntype = "file"\npath = "{out}"\n')
    pop3d.chmod(0o000)
    log = (top / "shipper.log").open("w")
    proc = subprocess.Popen([*without_root_powers(), sys.executable, "-m", "shipper", "run", "-c",
                             str(cfg)], stdout=log, stderr=log, cwd="/")
    ml = subprocess.Popen([multilog, "t", str(smtpd)], stdin=subprocess.PIPE)
    assert ml.stdin is not None

    def shipped() -> str:
        return out.read_text() if out.exists() else ""
    try:
        wait_until("smtpd's first line shipped", lambda: "0/40 smtpd" in shipped())
        addr = (top / "state" / "metrics.addr").read_text().strip()
        smtpd.chmod(0o000)
        ml.stdin.write(b"tcpserver: pid 1 from 192.0.2.7\n")  # (its directory listed then)
        ml.stdin.flush()
        wait_until("both said unreadable", lambda: _not_followed(addr) == 2)
        r = _status(cfg)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert f"not followed: 2 logs, unreadable by this user: {pop3d}, {smtpd}" in lines, r.stdout
        assert lines[-1].startswith("unhealthy: 2 logs not followed, unreadable by this user "
                                    f"(owner and mode in the log, and in `shipper check` run as "
                                    f"this user: chgrp to a group of its and chmod 750): {pop3d} "
                                    "and 1 more"), r.stdout
        pop3d.chmod(0o755)
        smtpd.chmod(0o755)
        ml.stdin.write(b"tcpserver: pid 2 from 192.0.2.7\n")
        ml.stdin.flush()
        wait_until("every line shipped once readable", lambda: all(
            t in shipped() for t in ("0/40 pop3d", "pid 1 ", "pid 2 ")))
        wait_until("none said unreadable", lambda: _not_followed(addr) == 0)
        r = _status(cfg)
        assert r.returncode == 0 and "not followed" not in r.stdout, r.stdout
    finally:
        for d in (pop3d, smtpd):
            d.chmod(0o755)
        if ml.poll() is None:
            ml.stdin.close()
            ml.wait(timeout=30)
        stop_process(proc)
        log.close()


def _not_followed(addr: str) -> int:
    """How many logs the daemon's /metrics says are not followed."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(1 for ln in text.splitlines() if ln.startswith("shipper_source_not_followed{"))
