"""Parsing in a second process, so parse and send use both cores.

Parsing a line into a record is the heaviest step of the pipeline and pure: it
runs in one worker process, which returns each record serialised once (the
bytes that go into the buffer) with its program and event. The worker keeps
one ``LineParser`` per source, as the in-process path does; its state (the time
of the last stamped line, for lines that have none) stays right because one
worker runs the batches of a source strictly in the order they were sent.

The worker ignores the signals meant for the daemon (systemd sends SIGTERM to
the whole control group; Ctrl-C reaches the whole process group): the daemon
drains and then ends it. It dies with the daemon (``PR_SET_PDEATHSIG``), so a
SIGKILLed daemon leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson

from shipper.parse import LineParser, ParseOptions
from shipper.record import add_flag, dumps_all

# payloads, (program, event) of each, time of the last record
Parsed = tuple[list[bytes], list[tuple[Any, Any]], "int | None"]

_parsers: dict[str, LineParser] = {}
_PR_SET_PDEATHSIG = 1


def parse_to_dicts(parser: LineParser, lines: list[bytes], offsets: list[int] | None,
                   line_flags: dict[int, str] | None, now_ns: int) -> list[dict[str, Any]]:
    """One batch → record dicts, with the reader's per-line flags and the ingest time."""
    dicts = parser.parse_batch_dicts(lines, offsets, now_ns)
    if line_flags:  # rare: a line cut at a rotation, ...
        for i, flag in line_flags.items():
            add_flag(dicts[i], flag)
    for d in dicts:
        d["ingest_unix_ns"] = now_ns
    return dicts


def parse_batch_in_worker(key: str, opts: ParseOptions, path: str | None, file_id: str | None,
                          lines: list[bytes], offsets: list[int] | None,
                          line_flags: dict[int, str] | None, now_ns: int) -> Parsed:
    """Runs in the worker: one source's batch → (payloads, metas, last time)."""
    parser = _parsers.get(key)
    if parser is None or parser.opts != opts:
        parser = _parsers[key] = LineParser(opts)
    parser.source = path
    parser.file_id = file_id
    dicts = parse_to_dicts(parser, lines, offsets, line_flags, now_ns)
    return (dumps_all(dicts), [(d["program"], d["event"]) for d in dicts],
            dicts[-1]["time_unix_ns"] if dicts else None)


_encodings: dict[str, Any] = {}


def register_encoding(key: str, encoding: Any) -> None:
    """Runs in the worker: keep a sink's ``encoding`` (its encoder's caches live here)."""
    _encodings[key] = encoding


def encode_in_worker(key: str, payloads: list[bytes]) -> tuple[Any, int]:
    """Runs in the worker: a sink's batch, as read from its buffer → its wire form."""
    loads = orjson.loads
    return _encodings[key]([loads(p) for p in payloads])


def _init_worker() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pool's own pipe EOF ends it
        pass
    if os.getppid() == 1:  # the daemon died before prctl took effect
        os._exit(0)
    # As in the daemon (cli.tune_gc): records hold no cycles, rare collections lose nothing.
    gc.set_threshold(50_000, 20, 100)


def start_pool() -> ProcessPoolExecutor:
    """One worker process. ``spawn``: a fork of a running event loop with threads
    is not safe, and a fresh interpreter holds only what parsing needs."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)


def resolve_workers(setting: int | str, n_sources: int) -> int:
    """``"auto"``: workers only where there are cores to spare. On two cores the
    worker measured slower than none (bench/bench_e2e.py --workers): the daemon,
    the worker, qmail and the receiver share the two, and passing batches between
    processes costs more than it frees. From four cores: one per core beyond two,
    at most one per source, at most 4."""
    if setting == "auto":
        return max(0, min((os.cpu_count() or 1) - 2, n_sources, 4))
    return int(setting)
