"""sd_notify: real AF_UNIX datagram sockets (path and abstract) receive what systemd would."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from shipper.sdnotify import Notifier, run_watchdog


def receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_path_socket_receives_ready_status_watchdog_stopping(tmp_path: Path):
    path = str(tmp_path / "notify")
    sock = receiver(path)
    try:
        n = Notifier({"NOTIFY_SOCKET": path})
        assert n.enabled
        assert n.ready("shipping 2 sources to 1 sink")
        assert sock.recv(4096) == b"READY=1\nSTATUS=shipping 2 sources to 1 sink"
        assert n.stopping("buffering:\n 12 MB queued")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=buffering: 12 MB queued"  # one line
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.reloading()
        assert sock.recv(4096) == b"RELOADING=1"
        assert n.stopping("draining")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining"
        n.close()
    finally:
        sock.close()


def test_abstract_socket(tmp_path: Path):
    name = f"shipper-test-{os.getpid()}-{tmp_path.name}"
    sock = receiver(b"\0" + name.encode())
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.address == b"\0" + name.encode()
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_noop_without_socket_and_never_raises(tmp_path: Path):
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval() is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert Notifier({"NOTIFY_SOCKET": "relative/name"}).enabled is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.enabled and gone.ready() is False and gone.ready() is False  # logged once, no raise
    gone.close()


def test_watchdog_interval_from_env():
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    mine = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval() == 1.0
    other = dict(mine, WATCHDOG_PID="1")
    assert Notifier(other).watchdog_interval() is None  # meant for another process
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    path = str(tmp_path / "n")
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    assert n.address == path and n.watchdog_interval() == 2.0


async def test_run_watchdog_pings_until_cancelled(tmp_path: Path):
    path = str(tmp_path / "notify")
    sock = receiver(path)
    sock.setblocking(False)
    try:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # ping every 50 ms
        task = asyncio.create_task(run_watchdog(n))
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        for _ in range(3):
            got.append(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert got == [b"WATCHDOG=1"] * 3
        # off without WATCHDOG_USEC: returns at once
        await asyncio.wait_for(run_watchdog(Notifier({"NOTIFY_SOCKET": path})), 1)
        n.close()
    finally:
        sock.close()


def test_the_daemon_says_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path):
    """The daemon as systemd's Type=notify unit with WatchdogSec runs it (the demo, which
    ends by itself): READY=1 with a status, WATCHDOG=1 every half period, STOPPING=1."""
    import subprocess
    import sys
    import time

    path = str(tmp_path / "notify")
    sock = receiver(path)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000", HOME=str(tmp_path))
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "shipper", "run", "--demo"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (got and got[-1].startswith(b"STOPPING=1")):
            try:
                got.append(sock.recv(4096))
            except TimeoutError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        sock.close()
    assert got[0].startswith(b"READY=1\nSTATUS=shipping ")
    assert got.count(b"WATCHDOG=1") >= 2, got
    assert got[-1].startswith(b"STOPPING=1")
