"""Change detection: inotify via ctypes against real file operations, and polling."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from conftest import require_binary

from shipper.watcher import (
    IN_CREATE,
    IN_DELETE,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    Watcher,
    parse_events,
)


def test_parse_events_pure():
    name = b"current\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # padded to 16
    buf = struct.pack("iIII", 1, IN_MODIFY, 0, len(name)) + name
    buf += struct.pack("iIII", 2, IN_CREATE, 7, 0)
    buf += struct.pack("iIII", 3, IN_DELETE, 0, 32)[:10]  # torn tail ignored
    evs = parse_events(buf)
    assert [(e.wd, e.mask, e.cookie, e.name) for e in evs] == [
        (1, IN_MODIFY, 0, "current"), (2, IN_CREATE, 7, "")]


def test_inotify_sees_real_rotation(tmp_path):
    ino = Inotify()
    try:
        wd = ino.add_watch(str(tmp_path), IN_MODIFY | IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE)
        cur = tmp_path / "current"
        with open(cur, "ab") as f:
            f.write(b"line\n")
        os.rename(cur, tmp_path / "previous")
        os.link(tmp_path / "previous", tmp_path / "@400000006b02a2aa2bcb057c.s")
        os.unlink(tmp_path / "previous")
        events = []
        deadline = time.monotonic() + 10
        while len(events) < 6 and time.monotonic() < deadline:
            events += ino.read()
            time.sleep(0.01)
        got = [(e.wd, e.mask & 0xFFF, e.name) for e in events]
        assert got[:6] == [
            (wd, IN_CREATE, "current"), (wd, IN_MODIFY, "current"),
            (wd, IN_MOVED_FROM, "current"), (wd, IN_MOVED_TO, "previous"),
            (wd, IN_CREATE, "@400000006b02a2aa2bcb057c.s"), (wd, IN_DELETE, "previous")]
        assert events[2].cookie == events[3].cookie != 0
    finally:
        ino.close()


async def _collect(watcher: Watcher, directory: str, action, want: int, timeout: float):
    seen: list[tuple[str | None, int]] = []
    got = asyncio.Event()

    def cb(name, mask):
        seen.append((name, mask))
        if len(seen) >= want:
            got.set()

    watcher.watch(directory, cb)
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    action()
    await asyncio.wait_for(got.wait(), timeout)
    return seen, time.monotonic() - t0


async def test_watcher_inotify_wakes_fast(tmp_path):
    w = Watcher("auto", poll_interval=10.0, safety_interval=10.0)
    try:
        seen, took = await _collect(w, str(tmp_path), lambda: (tmp_path / "current").write_bytes(b"x\n"),
                                    1, 8.0)
        assert w.mode == "inotify"
        assert seen[0][0] == "current" and seen[0][1] & IN_CREATE
        # well before the 10 s polls, with room for a loaded machine (0.5 s had little)
        assert took < 5
    finally:
        w.close()


async def test_watcher_polling_calls_back_without_name(tmp_path):
    w = Watcher("poll", poll_interval=0.05)
    try:
        seen, took = await _collect(w, str(tmp_path), lambda: None, 2, 8.0)
        assert w.mode == "poll"
        assert seen[:2] == [(None, 0), (None, 0)]
        assert took < 5  # two 0.05 s polls, with room for a loaded machine
    finally:
        w.close()


async def test_watcher_safety_poll_with_inotify(tmp_path):
    w = Watcher("inotify", poll_interval=0.02, safety_interval=0.1)
    try:
        seen, _ = await _collect(w, str(tmp_path), lambda: None, 1, 10.0)
        assert w.mode == "inotify"
        assert seen[0] == (None, 0)
    finally:
        w.close()


async def test_watcher_missing_directory_is_polled(tmp_path):
    w = Watcher("inotify", poll_interval=0.05, safety_interval=5.0)
    try:
        seen, _ = await _collect(w, str(tmp_path / "not-yet"), lambda: None, 1, 10.0)
        assert seen[0] == (None, 0)  # no watch possible: looked at on the poll interval
    finally:
        w.close()


async def test_a_directory_replaced_under_its_path_is_watched_again_soon(tmp_path):
    """Found by fault injection: after `mv log log.old; mkdir log` the watch stayed on
    the old directory, and the new one was looked at only by the 5 s rescan: what
    multilog rotated away meanwhile was lost without a gap."""
    d = tmp_path / "log"
    d.mkdir()
    w = Watcher("inotify", poll_interval=0.05, safety_interval=30.0)
    seen: list = []
    w.watch(str(d), lambda name, mask: seen.append(name))
    try:
        await asyncio.sleep(0.05)
        d.rename(tmp_path / "log.old")
        d.mkdir()
        deadline = time.monotonic() + 10  # a deadline, not a pace: a loaded machine is slow
        # told of the move, then of the look (with a new watch) at the new directory
        while seen.count(None) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        (d / "current").write_bytes(b"x\n")
        while "current" not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert "current" in seen  # the new directory's own events
        (tmp_path / "log.old" / "stale").write_bytes(b"")
        await asyncio.sleep(0.2)
        assert "stale" not in seen  # the old one no longer reports here
    finally:
        w.close()


async def test_the_look_at_a_directory_watched_again_is_a_look_without_names(tmp_path):
    """A hunt (``mv smtpd smtpd.old``, multilog restarted in a new smtpd at 1,000
    lines/s, s4096 n3): the new directory had no watch until the poll tick, and the look
    made with the watch just taken said every name had been seen (``names_seen``), so the
    follower took the archives made and deleted before it for none: 175-560 lines lost
    without a gap. That look is a poll's; the next ones, with the watch, see names."""
    d = tmp_path / "log"
    d.mkdir()
    w = Watcher("inotify", poll_interval=0.05, safety_interval=30.0)
    looks: list[bool] = []
    handle = w.watch(str(d), lambda name, mask: looks.append(w.names_seen(handle))
                     if name is None and not mask else None)
    try:
        assert w.names_seen(handle)
        d.rename(tmp_path / "log.old")
        d.mkdir()
        deadline = time.monotonic() + 10  # a deadline, not a pace: a loaded machine is slow
        while not looks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert looks[:1] == [False]  # the look with the watch just taken: names not seen
        assert w.names_seen(handle)  # and since, names come by events again
        before = len(looks)
        w.rewatch()  # (the source calls it after each scan) nothing to watch again: no look
        assert len(looks) == before
    finally:
        w.close()


async def test_an_inotify_overflow_is_said_and_every_directory_looked_at(tmp_path, caplog):
    # events dropped by the kernel: files made and deleted meanwhile were not seen by
    # name, so each directory is listed again and its follower told why (the mask)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    w = Watcher("inotify", poll_interval=10.0, safety_interval=30.0)
    seen: list = []
    try:
        w.watch(str(tmp_path), lambda name, mask: seen.append((name, mask)))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        loop.remove_reader(w._inotify.fd)  # a busy loop: nobody reads the events
        for i in range(limit + 100):
            (tmp_path / f"f{i}").touch()
        loop.add_reader(w._inotify.fd, w._on_readable)
        deadline = time.monotonic() + 10
        while (None, IN_Q_OVERFLOW) not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert (None, IN_Q_OVERFLOW) in seen and w.overflows >= 1
        assert sum("inotify queue overflowed" in r.message for r in caplog.records) == 1
    finally:
        w.close()


async def test_catch_up_delivers_queued_events_at_once_and_in_order(tmp_path):
    # a follower calls catch_up before it lists: events the kernel holds are delivered
    # then, not when the event loop next runs; one asked for inside a callback waits
    # its turn (no later event before an earlier one)
    w = Watcher("inotify", poll_interval=10.0, safety_interval=30.0)
    seen: list[str | None] = []

    def cb(name: str | None, mask: int) -> None:
        seen.append(name)
        if name == "a" and "a done" not in seen:
            w.catch_up()  # nested: must not deliver "b" before "a" is done
            seen.append("a done")

    try:
        w.watch(str(tmp_path), cb)
        (tmp_path / "a").touch()
        (tmp_path / "b").touch()
        assert seen == []  # the loop has not run: still queued in the kernel
        w.catch_up()  # no await between: delivered by catch_up itself
        assert seen[:2] == ["a", "a done"] and "b" in seen
        seen.clear()
        w.catch_up()  # nothing queued: nothing delivered
        assert seen == []
    finally:
        w.close()


# Run in a user namespace of its own, whose inotify watch limit is 3 (the kernel's
# per-namespace limit; fs.inotify.max_user_watches is the host's): the limit of the
# host, shared by every program there, is left alone.
OUT_OF_WATCHES = r"""
import asyncio, json, logging, sys, time
from pathlib import Path
from shipper.watcher import Watcher
Path("/proc/sys/user/max_inotify_watches").write_text("3")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
root = Path(sys.argv[1])

async def main():
    w = Watcher("auto", poll_interval=0.05, safety_interval=60.0)
    seen = {i: [] for i in range(6)}
    for i in range(6):
        (root / f"d{i}").mkdir()
        w.watch(str(root / f"d{i}"), lambda name, mask, i=i: seen[i].append(name))
    await asyncio.sleep(0.05)
    (root / "d0" / "current").write_bytes(b"x\n")
    deadline = time.monotonic() + 10
    while not (seen[0] and None in seen[5]) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    out = {"mode": w.mode, "named0": "current" in seen[0], "polled5": None in seen[5],
           "polled0": None in seen[0], "watched": [w.names_seen(h) for h in range(1, 7)]}
    w.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_out_of_inotify_watches_polls_only_the_rest_and_says_so(tmp_path):
    """A scale hunt: 1,000 log directories under one glob and a watch limit of 500. The
    501st watch refused, every directory was polled (4 % of a core idle, a second of
    latency each) and in auto mode nothing was said."""
    unshare = require_binary("unshare")
    p = subprocess.run([unshare, "-Ur", sys.executable, "-c", OUT_OF_WATCHES, str(tmp_path)],
                       capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["mode"] == "inotify"
    assert out["watched"] == [True, True, True, False, False, False]
    assert out["named0"] and out["polled5"]  # events where watched, polls for the rest
    assert not out["polled0"]  # a watched directory is not polled (the safety poll is 60 s)
    said = [line for line in p.stderr.splitlines() if "out of watches" in line]
    assert len(said) == 1 and said[0].startswith("WARNING") and "max_user_watches" in said[0]


def test_out_of_inotify_instances_is_said_in_auto_mode(tmp_path):
    """As above, with no inotify instance left (fs.inotify.max_user_instances, 128 for
    all of root's programs by default): every directory polled, and nothing said."""
    script = OUT_OF_WATCHES.replace('max_inotify_watches").write_text("3")',
                                    'max_inotify_instances").write_text("0")')
    unshare = require_binary("unshare")
    p = subprocess.run([unshare, "-Ur", sys.executable, "-c", script, str(tmp_path)],
                       capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["mode"] == "poll" and out["polled0"] and out["polled5"]
    said = [line for line in p.stderr.splitlines() if "inotify" in line]
    assert len(said) == 1 and said[0].startswith("WARNING") and "max_user_instances" in said[0]
