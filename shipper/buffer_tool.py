"""``shipper buffer verify|repair|stats PATH``: a disk queue, checked offline.

* ``stats``: what is in the buffer (records, bytes, segments, the first and last
  records' times, unacknowledged depth, corrupt records, quarantine). Exit 0 (1 if unreadable).
* ``verify``: checks every frame of every segment and the state file, changes
  nothing. Exit 0 when clean, 1 when anything needs repair (a torn tail after a crash
  counts: the next start or ``repair`` cuts it). Safe while the shipper runs (a tail
  being written may then show as torn).
* ``repair``: runs the recovery the daemon runs at start, on every segment: torn
  tail cut, corrupt frames moved to the quarantine file, state rebuilt. Exit 0 when
  the buffer is usable afterwards, 1 when it is in use or could not be repaired.

Exit codes follow ``shipper.cli``: 0 ok, 1 problem, 2 usage.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from shipper.checkpoint import unsafe_dir_problem
from shipper.diskqueue import (
    ASIDE_GLOB,
    HEADER,
    HEADER_SIZE,
    QUARANTINE_NAME,
    SEQ_MASK,
    STATE_NAME,
    UNREADABLE_GIVE_UP_SECONDS,
    BadRegion,
    DiskQueue,
    QueueLocked,
    aside_name,
    decode_state,
    list_delivered,
    list_segments,
    missing_before,
    payload_time,
    read_quarantine,
    sort_out_segments,
    walk_segment,
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


@dataclass(slots=True)
class BufferReport:
    """Everything ``stats`` and ``verify`` say about a buffer directory."""

    path: Path
    segments: int = 0
    segment_names: list[str] = field(default_factory=list)
    size_bytes: int = 0  # file sizes
    allocated_bytes: int = 0  # st_blocks * 512
    records: int = 0  # data frames present (acknowledged or not)
    first_seq: int | None = None
    last_seq: int | None = None
    acked_seq: int | None = None
    unacked: int = 0
    oldest_unacked_time_ns: int | None = None
    oldest_time_ns: int | None = None
    newest_time_ns: int | None = None
    corrupt_regions: int = 0
    corrupt_bytes: int = 0
    lost_records: int = 0  # seqs lost in corrupt regions found now
    repaired_lost: int = 0  # seqs recorded lost by earlier repairs (gap frames)
    torn_tail_bytes: int = 0
    state: dict[str, Any] | None = None
    state_notes: list[str] = field(default_factory=list)
    quarantine_entries: int = 0
    quarantine_bytes: int = 0
    set_aside: list[str] = field(default_factory=list)  # segments set aside earlier (*.corrupt)
    sources: int = 0
    problems: list[str] = field(default_factory=list)


def is_buffer(root: Path) -> bool:
    """Whether ``root`` holds a buffer (a segment or a state file)."""
    return bool(list_segments(root)) or (root / STATE_NAME).exists()


def not_a_buffer(root: Path) -> str:
    """Why ``root`` is no buffer, naming the buffers below it (state_dir/buffer holds one
    directory per sink)."""
    inner = sorted(str(d) for d in root.iterdir() if (d / STATE_NAME).is_file()) \
        if root.is_dir() else []
    return f"{root}: not a buffer directory (no segments, no state)" + (
        f"; the buffers in it: {', '.join(inner)}" if inner else "")


def inspect(path: str | os.PathLike[str]) -> BufferReport:
    """Read a buffer without changing it. Raises FileNotFoundError if it is not there."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such buffer directory")
    rep = BufferReport(path=root)
    state_path = root / STATE_NAME
    if not is_buffer(root):
        raise FileNotFoundError(not_a_buffer(root))
    segments = list_segments(root)
    if state_path.exists() and not state_path.is_file():
        # "[Errno 21] Is a directory" ended verify, stats and repair
        rep.problems.append(f"state is not a file: the next start sets it aside as "
                            f"{aside_name(state_path).name} and rebuilds it from the segments")
    elif state_path.exists():
        rep.state, rep.state_notes = decode_state(state_path.read_bytes())
        if rep.state is None:
            rep.problems.append("state file unusable (" + "; ".join(rep.state_notes) +
                                "): the next start rebuilds it from the segments")
    elif segments:
        rep.problems.append("state file missing: the next start rebuilds it from the segments")
    rep.set_aside = sorted(p.name for p in root.glob(ASIDE_GLOB))
    files = [p for _, p in segments] + [state_path, root / QUARANTINE_NAME] + \
        [root / name for name in rep.set_aside]
    # as the daemon does at start: a segment whose content is not what its name says
    # is set aside, not read (its name put seqs where they are not: 1,852 records
    # reported lost before the first one)
    known = None
    if rep.state:
        known = max(int(rep.state.get("appended", 0)), int(rep.state.get("durable", 0)))
    unreadable: dict[Path, str] = {}
    kept = []
    for c in sort_out_segments(segments, known):
        if c.problem:
            rep.problems.append(f"{c.path.name}: does not hold what its name says ({c.problem}): "
                                f"the next start sets it aside as {aside_name(c.path).name}")
            continue
        if c.error:
            unreadable[c.path] = c.error
        kept.append((c.first, c.path))
    segments = kept
    ack = int(rep.state.get("ack", 0)) if rep.state else (segments[0][0] - 1 if segments else 0)
    rep.acked_seq = ack
    rep.sources = len(rep.state.get("positions") or {}) if rep.state else 0
    for p in files:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        rep.size_bytes += st.st_size
        rep.allocated_bytes += st.st_blocks * 512
    rep.segments = len(segments)
    rep.segment_names = [p.name for _, p in segments]
    if rep.state and segments:
        gone = missing_before(ack, segments[0][0], list_delivered(root))
        if gone is not None:
            rep.lost_records += gone[1] - gone[0] + 1
            rep.problems.append(f"records {gone[0]}..{gone[1]} are missing (before {segments[0][1].name}, "
                                "the oldest segment: deleted?): the next start counts them lost")
    for i, (first, seg_path) in enumerate(segments):
        why = unreadable.get(seg_path, "")
        if not why:
            try:
                data = seg_path.read_bytes()
            except OSError as exc:
                why = f"{errno.errorcode.get(exc.errno or 0, 'EIO')} {exc.strerror or exc}"
        if why:  # one line, not a raw "[Errno 13] ..." ending the whole check
            rep.problems.append(f"{seg_path.name}: cannot be read ({why}): its records are not "
                                f"checked (the shipper waits {UNREADABLE_GIVE_UP_SECONDS:g} s for "
                                "it, then sets it aside and counts them lost)")
            continue
        last_segment = i == len(segments) - 1
        next_first = None if last_segment else segments[i + 1][0]
        w = walk_segment(data, first, next_first, after=ack)
        rep.records += w.records
        if w.records and rep.first_seq is None and w.first_data is not None:
            # the seq of the first record, as written (next_seq - records is not it
            # when seqs are missing: a gap frame an earlier repair left)
            rep.first_seq = HEADER.unpack_from(data, w.first_data[0] - HEADER_SIZE)[2] & SEQ_MASK
        if w.next_seq > first:
            # a tail holding only the gap frame a start wrote for records lost from it
            # ends there too: taken as ending before it, verify said those records
            # "the next start counts lost" after every start, counted already
            rep.last_seq = w.next_seq - 1
        if w.first_data is not None and rep.oldest_time_ns is None:
            rep.oldest_time_ns = payload_time(data[w.first_data[0]:w.first_data[1]])
        if w.last_data is not None:
            t = payload_time(data[w.last_data[0]:w.last_data[1]])
            if t is not None:
                rep.newest_time_ns = t
        if w.first_after is not None and rep.oldest_unacked_time_ns is None:
            rep.oldest_unacked_time_ns = payload_time(data[w.first_after[0]:w.first_after[1]])
        if last_segment and not w.bad and w.commit_end < w.valid_end:
            rep.torn_tail_bytes += w.valid_end - w.commit_end
            rep.problems.append(f"{seg_path.name}: unfinished write of {w.valid_end - w.commit_end} "
                                f"byte(s) at offset {w.commit_end} (cut by a crash)")
        rep.repaired_lost += sum(int(g.get("last", 0)) - int(g.get("first", 0)) + 1 for g in w.gaps)
        for piece in w.pieces:
            if not isinstance(piece, BadRegion):
                continue
            if last_segment and piece.resumes_at is None:
                rep.torn_tail_bytes += piece.end - piece.start
                rep.problems.append(f"{seg_path.name}: torn tail of {piece.end - piece.start} "
                                    f"byte(s) at offset {piece.start} (a write cut by a crash)")
                continue
            rep.corrupt_regions += 1
            rep.corrupt_bytes += piece.end - piece.start
            rep.lost_records += piece.lost
            what = (f"{piece.end - piece.start} corrupt byte(s) at offset {piece.start}"
                    if piece.end > piece.start else f"seqs missing before offset {piece.start}")
            rep.problems.append(f"{seg_path.name}: {what}, {piece.lost} record(s) lost "
                                f"(seq {piece.expected}..{piece.expected + piece.lost - 1})"
                                if piece.lost else f"{seg_path.name}: {what}")
    if rep.last_seq is not None:
        rep.unacked = max(0, rep.last_seq - ack)
    # What the state says was made durable must be on disk: a segment deleted or cut
    # short by hand leaves records only the state remembers (the start counts them lost)
    try:
        durable = int(rep.state.get("durable", 0)) if rep.state else 0
    except (TypeError, ValueError):
        durable = 0
    on_disk = rep.last_seq if rep.last_seq is not None else ack
    if durable > max(on_disk, ack):
        missing = durable - max(on_disk, ack)
        rep.lost_records += missing
        rep.problems.append(f"{missing} record(s) up to seq {durable} were made durable but are "
                            "not on disk (a segment deleted or cut short?): the next start "
                            "counts them lost")
    entries = read_quarantine(root / QUARANTINE_NAME)
    rep.quarantine_entries = len(entries)
    rep.quarantine_bytes = sum(e.get("stored", 0) for e in entries)
    return rep


def _time(ns: int | None) -> str:
    if ns is None:
        return "-"
    from shipper.record import rfc3339_ns

    return f"{rfc3339_ns(ns)} ({ns})"


def _print_report(rep: BufferReport, out: TextIO) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"buffer {rep.path}")
    names = f" ({rep.segment_names[0]} .. {rep.segment_names[-1]})" if rep.segment_names else ""
    p(f"  segments:        {rep.segments}{names}")
    p(f"  bytes:           {rep.size_bytes} (allocated on disk: {rep.allocated_bytes})")
    seqs = f" (seq {rep.first_seq}..{rep.last_seq})" if rep.first_seq is not None else ""
    p(f"  records:         {rep.records}{seqs}")
    p(f"  unacknowledged:  {rep.unacked} (acknowledged up to seq {rep.acked_seq})")
    # (the times of the first and last records queued: records are queued as read, and
    # two logs read side by side interleave, so the last may be a little older; an
    # admin found "newest" earlier than "oldest")
    p(f"  first record:    {_time(rep.oldest_time_ns)}")
    p(f"  first unacked:   {_time(rep.oldest_unacked_time_ns)}")
    p(f"  last record:     {_time(rep.newest_time_ns)}")
    p(f"  corrupt:         {rep.corrupt_regions} region(s), {rep.corrupt_bytes} byte(s), "
      f"{rep.lost_records} record(s) lost")
    if rep.repaired_lost:
        p(f"  lost earlier:    {rep.repaired_lost} record(s) cut out by earlier repairs")
    p(f"  torn tail:       {rep.torn_tail_bytes} byte(s)")
    if rep.state is not None:
        p(f"  state:           generation {rep.state.get('generation')}, fsync={rep.state.get('fsync')}, "
          f"clean shutdown: {'yes' if rep.state.get('clean') else 'no'}, "
          f"durable up to seq {rep.state.get('durable')}")
    else:
        p("  state:           unusable or missing")
    for note in rep.state_notes:
        p(f"                   {note}")
    p(f"  dedup sources:   {rep.sources}")
    p(f"  quarantine:      {rep.quarantine_entries} entr{'y' if rep.quarantine_entries == 1 else 'ies'}, "
      f"{rep.quarantine_bytes} byte(s) kept")
    if rep.set_aside:
        p(f"  set aside:       {', '.join(rep.set_aside)} (not read; delete when looked at)")


def stats(path: str | os.PathLike[str], out: TextIO | None = None) -> int:
    """Print what is in the buffer. Exit code."""
    out = out or sys.stdout
    try:
        rep = inspect(path)
    except OSError as exc:
        print(f"shipper buffer stats: {exc}", file=out)
        return EXIT_PROBLEM
    _print_report(rep, out)
    return EXIT_OK


def verify(path: str | os.PathLike[str], out: TextIO | None = None) -> int:
    """Check every frame; print the problems. 0 clean, 1 needs repair."""
    out = out or sys.stdout
    try:
        rep = inspect(path)
    except OSError as exc:
        print(f"shipper buffer verify: {exc}", file=out)
        return EXIT_PROBLEM
    if not rep.problems:
        print(f"buffer {rep.path}: OK: {rep.segments} segment(s), {rep.records} record(s), "
              f"{rep.unacked} unacknowledged, every frame checked", file=out)
        return EXIT_OK
    print(f"buffer {rep.path}: {len(rep.problems)} problem(s):", file=out)
    for problem in rep.problems:
        print(f"  {problem}", file=out)
    # (a start repairs the newest segment; older ones as it reaches them: the same records
    # kept, counted and set aside either way)
    print(f"run `shipper buffer repair {rep.path}` with the shipper stopped (or start the "
          "shipper: it repairs each damaged segment as it reads it)", file=out)
    return EXIT_PROBLEM


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def repair(path: str | os.PathLike[str], out: TextIO | None = None) -> int:
    """Run the recovery on every segment; print what was done. 0 usable, 1 not."""
    out = out or sys.stdout
    if not Path(path).is_dir():
        print(f"shipper buffer repair: {path}: no such buffer directory", file=out)
        return EXIT_PROBLEM
    if not is_buffer(Path(path)):
        print(f"shipper buffer repair: {not_a_buffer(Path(path))}", file=out)  # make none
        return EXIT_PROBLEM
    handler = _Collect()
    logger = logging.getLogger("shipper.buffer")
    logger.addHandler(handler)
    try:
        q = DiskQueue.open(path, fsync="always", full_check=True, max_bytes=1 << 62)
        counters = q.stats.as_dict()
        q.close()
    except QueueLocked as exc:
        print(f"shipper buffer repair: {exc}: stop the shipper first (it repairs at start)", file=out)
        return EXIT_PROBLEM
    except OSError as exc:
        print(f"shipper buffer repair: {path}: {exc}", file=out)
        return EXIT_PROBLEM
    finally:
        logger.removeHandler(handler)
    if not handler.lines:
        print(f"buffer {path}: nothing to repair", file=out)
    else:
        print(f"buffer {path}: repaired:", file=out)
        for line in handler.lines:
            print(f"  {line}", file=out)
        print(f"  repairs {counters['repairs']}, records lost {counters['corrupt_records']}, "
              f"bytes quarantined {counters['quarantined_bytes']}, torn tail cut "
              f"{counters['truncated_bytes']} byte(s), state rebuilt {counters['state_fallbacks']}",
              file=out)
    rep = inspect(path)
    if rep.problems:
        print("still wrong after repair:", file=out)
        for problem in rep.problems:
            print(f"  {problem}", file=out)
        return EXIT_PROBLEM
    return EXIT_OK


COMMANDS = {"verify": verify, "repair": repair, "stats": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="shipper buffer",
        description="Check, repair or describe a disk buffer offline. stats: what is in it "
                    "(records, bytes, unacknowledged, the first record's time); verify: check every "
                    "record, change nothing (safe while shipper runs); repair: what a start "
                    "does (cut a torn tail, set corrupt records aside in a quarantine file, "
                    "rebuild the state); it refuses while the shipper runs. Exit 0 ok, 1 a problem.")
    ap.add_argument("command", choices=sorted(COMMANDS), help="what to do (above)")
    ap.add_argument("path", metavar="PATH",
                    help="the buffer directory of one sink: STATE_DIR/buffer/SINK "
                         "(e.g. /var/lib/shipper/buffer/siem)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    # as run: a buffer another user could change is not worked on (a security re-test:
    # root's repair of a buffer of the service user's appended through a planted link)
    why = unsafe_dir_problem(args.path)
    if why is not None:
        print(f"shipper buffer {args.command}: {why}")
        return EXIT_PROBLEM
    return COMMANDS[args.command](args.path)


if __name__ == "__main__":
    sys.exit(main())
