"""The parse worker process: calls in order, errors, and death without a hang."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from shipper.parse import ParseOptions
from shipper.parse_worker import WorkerDied, WorkerError, WorkerProcess, parse_batch_in_worker

LINES = [
    b"@400000005a49ba341eefa7a4 new msg 3229154",
    b"@400000005a49ba341eefa7a5 info msg 3229154: bytes 1045 from <a@example.org> qp 4242 uid 89",
    b"@400000005a49ba341eefa7a6 not a known line at all",
]


async def test_parses_in_order_like_the_daemon_process() -> None:
    worker = await WorkerProcess.start()
    try:
        futs = [worker.submit("parse", "s", ParseOptions(host="mx1"), "/log/current", "f1",
                              [line], [i * 100], None, 1_000 + i)
                for i, line in enumerate(LINES)]
        results = await asyncio.wait_for(asyncio.gather(*futs), 30)
    finally:
        await worker.close()
    # The very bytes the daemon's own process makes (parse_batch_in_worker called here)
    assert results == [parse_batch_in_worker("s", ParseOptions(host="mx1"), "/log/current", "f1",
                                             [line], [i * 100], None, 1_000 + i)
                       for i, line in enumerate(LINES)]
    assert [r[1] for r in results] == [
        [("qmail-send", "new_msg")], [("qmail-send", "info_msg")], [(None, "unparsed")]]
    assert b'"offset":100' in results[1][0][0] and b'"ingest_unix_ns":1001' in results[1][0][0]
    assert results[0][2] == 1514781226519022500  # the label's time: 2018-01-01T04:33:46.5190225Z
    assert results[2][3] == {"last": 1514781226519022502}  # the parser's state, for the daemon
    assert not worker.alive and worker.proc.returncode == 0  # EOF on stdin ended it


async def test_an_error_in_a_call_leaves_the_worker_alive() -> None:
    worker = await WorkerProcess.start()
    try:
        with pytest.raises(WorkerError, match="KeyError"):
            await asyncio.wait_for(worker.submit("encode", "no such sink", [b"{}"]), 30)
        assert worker.alive
        parsed = await asyncio.wait_for(worker.submit(
            "parse", "s", ParseOptions(), None, None, [LINES[0]], None, None, 1), 30)
        assert parsed[1][0][1] == "new_msg"
    finally:
        await worker.close()


async def test_a_killed_worker_fails_every_waiting_call() -> None:
    worker = await WorkerProcess.start()
    try:
        # Warm up, then kill it with calls queued behind a big one.
        await asyncio.wait_for(worker.submit(
            "parse", "s", ParseOptions(), None, None, LINES, None, None, 1), 30)
        futs = [worker.submit("parse", "s", ParseOptions(), None, None, LINES * 20000,
                              None, None, 1) for _ in range(3)]
        os.kill(worker.pid, signal.SIGKILL)  # the process we started
        for fut in futs:
            with pytest.raises(WorkerDied):
                await asyncio.wait_for(fut, 30)
        assert not worker.alive
        with pytest.raises(WorkerDied):
            await worker.submit("parse", "s", ParseOptions(), None, None, LINES, None, None, 1)
    finally:
        await worker.close()


async def test_a_result_cut_by_the_workers_death_is_no_hang() -> None:
    """What hung CI with ProcessPoolExecutor: the worker dies while writing a result.
    A process that writes the first bytes of a result frame and exits stands in for it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import os, struct; os.write(1, struct.pack('<Q', 1000) + b'\\x80\\x05partial')",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    worker = WorkerProcess(proc)
    t0 = time.monotonic()
    try:
        fut = worker.submit("parse", "s", ParseOptions(), None, None, LINES, None, None, 1)
        with pytest.raises(WorkerDied):
            await asyncio.wait_for(fut, 10)
    finally:
        await worker.close()
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 0


async def test_a_call_that_does_not_unpickle_in_the_worker_leaves_it_alive() -> None:
    """An encoding whose class the worker cannot import (defined in a test's module
    only) fails that call alone."""
    worker = await WorkerProcess.start()
    try:
        with pytest.raises(WorkerError, match="ModuleNotFoundError|AttributeError"):
            await asyncio.wait_for(worker.submit("register", "sink", Unimportable()), 30)
        assert worker.alive
        parsed = await asyncio.wait_for(worker.submit(
            "parse", "s", ParseOptions(), None, None, [LINES[0]], None, None, 1), 30)
        assert parsed[1] == [("qmail-send", "new_msg")]
    finally:
        await worker.close()


class Unimportable:
    """Pickled by reference to this test module, which the worker cannot import."""


def test_a_worker_whose_daemon_is_gone_ends_quietly(tmp_path) -> None:
    """The daemon killed while its worker writes a result: the write fails with EPIPE
    before the PDEATHSIG comes. It printed a traceback into the daemon's log (seen in
    the chaos test's log after a kill -9)."""
    import pickle
    import subprocess

    from shipper.parse_worker import _HEADER

    body = pickle.dumps(("parse", ("s", ParseOptions(), None, None, LINES, None, None, 1)))
    r_out, w_out = os.pipe()
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "shipper.parse_worker"],
                                stdin=subprocess.PIPE, stdout=w_out, stderr=err)
    os.close(w_out)
    os.close(r_out)  # nobody reads its results, as when the daemon is gone
    assert proc.stdin is not None
    proc.stdin.write(_HEADER.pack(len(body)) + body)
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert (tmp_path / "stderr").read_text() == ""


async def test_a_worker_never_imports_from_the_working_directory(tmp_path, monkeypatch) -> None:
    """A security review: "-m" put the working directory first on the worker's import
    path; a shipper/ another user left in /tmp ran as the daemon's user (root)."""
    planted = tmp_path / "shipper"
    planted.mkdir()
    marker = tmp_path / "pwned"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (planted / "parse_worker.py").write_text("")
    monkeypatch.chdir(tmp_path)
    worker = await WorkerProcess.start()
    try:
        parsed = await asyncio.wait_for(worker.submit(
            "parse", "s", ParseOptions(), None, None, [LINES[0]], None, None, 1), 30)
    finally:
        await worker.close()
    assert parsed[1][0][1] == "new_msg"
    assert not marker.exists()
