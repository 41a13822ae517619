"""Parsing in a second process, so parse and send use both cores.

Parsing a line into a record is the heaviest step of the pipeline and pure: it
runs in one worker process, which returns each record serialised once (the
bytes that go into the buffer) with its program and event. The worker keeps
one ``LineParser`` per source, as the in-process path does; its state (the time
of the last stamped line, for lines that have none) stays right because one
worker runs the batches of a source strictly in the order they were sent.

The worker ignores the signals meant for the daemon (systemd sends SIGTERM to
the whole control group; Ctrl-C reaches the whole process group): the daemon
drains and then ends it. It dies with the daemon (``PR_SET_PDEATHSIG``, and EOF
on its stdin), so a SIGKILLed daemon leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import pickle
import signal
import struct
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from shipper.parse import LineParser, ParseOptions
from shipper.record import add_flag, dumps_all

# payloads, (program, event) of each, time of the last record, and the parser's
# state after the batch (LineParser.carried) for the daemon to take over
Parsed = tuple[list[bytes], list[tuple[Any, Any]], "int | None", Any]

_parsers: dict[str, LineParser] = {}
# the directory holding this shipper package: where its workers import it from
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PR_SET_PDEATHSIG = 1


def parse_to_dicts(parser: LineParser, lines: list[bytes], offsets: list[int] | None,
                   line_flags: dict[int, tuple[str, ...]] | None, now_ns: int) -> list[dict[str, Any]]:
    """One batch → record dicts, with the reader's per-line flags and the ingest time."""
    dicts = parser.parse_batch_dicts(lines, offsets, now_ns)
    if line_flags:  # rare: a line cut at a rotation, ...
        for i, flags in line_flags.items():
            for flag in flags:
                add_flag(dicts[i], flag)
    for d in dicts:
        d["ingest_unix_ns"] = now_ns
    return dicts


def parse_batch_in_worker(key: str, opts: ParseOptions, path: str | None, file_id: str | None,
                          lines: list[bytes], offsets: list[int] | None,
                          line_flags: dict[int, tuple[str, ...]] | None, now_ns: int,
                          carried: Any = None) -> Parsed:
    """Runs in the worker: one source's batch → (payloads, metas, last time, state).
    ``carried``: the daemon's parser state for a new parser (from the checkpoint)."""
    parser = _parsers.get(key)
    if parser is None or parser.opts != opts:
        parser = _parsers[key] = LineParser(opts)
        parser.carry_on(carried)
    parser.source = path
    parser.file_id = file_id
    dicts = parse_to_dicts(parser, lines, offsets, line_flags, now_ns)
    return (dumps_all(dicts), [(d["program"], d["event"]) for d in dicts],
            dicts[-1]["time_unix_ns"] if dicts else None, parser.carried())


_encodings: dict[str, Any] = {}


def register_encoding(key: str, encoding: Any) -> None:
    """Runs in the worker: keep a sink's ``encoding`` (its encoder's caches live here)."""
    _encodings[key] = encoding


def encode_in_worker(key: str, payloads: list[bytes]) -> tuple[Any, int]:
    """Runs in the worker: a sink's batch, as read from its buffer → its wire form."""
    loads = orjson.loads
    return _encodings[key]([loads(p) for p in payloads])


class WorkerDied(Exception):
    """The worker process is gone (killed by hand, out of memory, a bug in it)."""


class WorkerError(Exception):
    """A call raised in the worker (the worker lives on)."""


_HEADER = struct.Struct("<Q")  # the length of the pickle that follows
_CALLS: dict[str, Callable[..., Any]] = {
    "parse": parse_batch_in_worker,
    "register": register_encoding,
    "encode": encode_in_worker,
}


class WorkerProcess:
    """One worker process, spoken to over its stdin and stdout: length-prefixed
    pickles, requests in and results out, strictly in order.

    Not ``concurrent.futures.ProcessPoolExecutor``: a worker killed while it wrote
    a result left the pool's manager thread blocked for ever on the partial
    message, so the batch never completed and the interpreter hung at exit,
    joining that thread (seen in CI). Here the result pipe is read by the event
    loop: a worker's death is EOF, every call waiting on it fails with
    ``WorkerDied``, and there is no thread to join.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._dead = False
        self._reader = asyncio.get_running_loop().create_task(self._read_results())

    @classmethod
    async def start(cls) -> WorkerProcess:
        """A fresh interpreter (never a fork of a running loop with threads) that
        holds only what parsing needs; its stderr is the daemon's."""
        # The shipper the daemon runs, by its path: "-m" put the working directory
        # first on the import path, and a shipper/ another user had left there (a
        # daemon started as root from /tmp or a home) ran as root (a security review).
        # -P: no such entry; "/" as its directory: none relative to it either.
        code = (f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
                "from shipper.parse_worker import main; main()")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-c", code, cwd="/",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self._dead

    def submit(self, call: str, *args: Any) -> asyncio.Future[Any]:
        """Send one call; the future gets its result, or ``WorkerDied``."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._dead or self.proc.stdin is None:
            fut.set_exception(WorkerDied(f"parse worker {self.pid} is gone"))
            return fut
        data = pickle.dumps((call, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            # The transport buffers the write; callers bound what is in flight.
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)
        except (ConnectionError, RuntimeError) as exc:  # pipe closed: it died
            self._died()
            fut.set_exception(WorkerDied(f"parse worker {self.pid}: {exc}"))
            return fut
        self._waiting.append(fut)
        return fut

    async def _read_results(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            while True:
                size, = _HEADER.unpack(await out.readexactly(_HEADER.size))
                ok, value = pickle.loads(await out.readexactly(size))
                fut = self._waiting.popleft()
                if fut.done():  # cancelled by its caller
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(WorkerError(value))
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError, IndexError):
            pass  # EOF or a cut message: the worker is gone
        finally:
            self._died()

    def _died(self) -> None:
        self._dead = True
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(WorkerDied(f"parse worker {self.pid} is gone"))
                fut.exception()  # retrieved: nobody may be waiting on this one

    async def close(self, timeout: float = 2.0) -> None:
        """EOF on its stdin ends it; a worker that does not end in ``timeout`` is killed."""
        self._dead = True
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            if self.proc.returncode is None:
                self.proc.kill()  # the process we started, by its handle
            await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self._died()


def _init_worker() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: EOF on stdin ends it
        pass
    if os.getppid() == 1:  # the daemon died before prctl took effect
        os._exit(0)
    # As in the daemon (cli.tune_gc): records hold no cycles, rare collections lose nothing.
    gc.set_threshold(50_000, 20, 100)


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    """The worker: calls in on stdin, results out on stdout, until EOF."""
    _init_worker()
    # Results go to a private copy of stdout; a stray print lands on stderr.
    fd_in, fd_out = 0, os.dup(1)
    os.dup2(2, 1)
    while (head := _read_exactly(fd_in, _HEADER.size)) is not None:
        body = _read_exactly(fd_in, _HEADER.unpack(head)[0])
        if body is None:
            break
        try:  # one bad call (a batch, an encoding that does not unpickle) must not end it
            call, args = pickle.loads(body)
            data = pickle.dumps((True, _CALLS[call](*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            data = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
        try:
            _write_all(fd_out, _HEADER.pack(len(data)) + data)
        except BrokenPipeError:
            # the daemon is gone (killed: its PDEATHSIG may come a moment after), no
            # one wants the result; a traceback here landed in the daemon's log
            return


def resolve_workers(setting: int | str, n_sources: int) -> int:
    """``"auto"``: workers only where there are cores to spare. On two cores the
    worker measured slower than none (bench/bench_e2e.py --workers): the daemon,
    the worker, qmail and the receiver share the two, and passing batches between
    processes costs more than it frees. From three cores: one per core beyond two,
    at most one per source, at most 4."""
    if setting == "auto":
        return max(0, min((os.cpu_count() or 1) - 2, n_sources, 4))
    return int(setting)


if __name__ == "__main__":
    main()
