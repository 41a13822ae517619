"""`shipper replay`: send archived logs (multilog dirs, files, .gz/.bz2/.xz) to a sink.

Records get the same event ids as when the lines were shipped live (file
fingerprint + offset), so the SIEM can drop what it already has. Several
directories are merged in event-time order. A replay is resumable: after each
delivered batch its progress (per file: lines delivered up to which offset) is
saved in the state directory, and the same command run again continues there.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import math
import os
import re
import signal
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from shipper.checkpoint import atomic_write, open_not_through_foreign_link, unsafe_dir_problem
from shipper.multilog import is_stamped
from shipper.parse import LineParser, ParseOptions
from shipper.reader import (
    BinaryInput,
    InputError,
    held_open,
    input_sets,
    is_output,
    read_joined,
    release,
    written_to,
)
from shipper.record import F_CONTINUATION, F_PARTIAL, F_TRUNCATED
from shipper.sinks.base import Backoff, PermanentError, SinkError, deliver
from shipper.tai64n import LabelError, decode_ns
from shipper.track.correlator import Correlator
from shipper.transforms import build_transformer, sink_filter
from shipper.when import FORMS, parse_time, year_arg

BATCH = 2000
FLUSH_BYTES = 16 << 20  # and lines of at most about this much: 2000 of 60 KB held 290 MB
_ARCHIVE_NAME_RE = re.compile(r"@[0-9a-f]{24}\.[su]")
CONFIRM_STALL = 30.0  # s the end of a replay waits for a peer acknowledging nothing
# --rate: what was read goes out at least this often (s), not at each pause of the pacing
# (every few records: an INSERT, a ClickHouse part and a progress fsync each)
RATE_FLUSH = 0.5
# replay has no buffer: it waits, and its progress lets it be stopped and run again
REPLAY_WAITS = "the replay waits for it; Ctrl-C stops it, and the same command run again resumes"


# An archive is named by the time multilog closed it: its lines are older, the next
# one's newer. Lines stamped by another clock or in a zone (tai64nlocal, syslog) are
# near it, within this margin.
WINDOW_MARGIN_NS = 86_400 * 1_000_000_000


def in_window(files: list[str], since: int | None, until: int | None) -> list[str]:
    """A multilog directory's files that may hold lines in [since, until), by their
    names: a replay of a day out of years of archives read (and decompressed) them all.
    The archive before the first kept one is kept too (a line multilog cut at its end is
    joined with its tail), and the one after the last."""
    times: list[int | None] = []
    for f in files:
        name = os.path.basename(f)
        try:
            times.append(decode_ns(name[:25]) if _ARCHIVE_NAME_RE.match(name) else None)
        except (LabelError, ValueError):
            times.append(None)
    lo, hi = 0, len(files)
    if since is not None:
        first = next((i for i, t in enumerate(times) if t is None or t >= since - WINDOW_MARGIN_NS),
                     len(files))
        lo = max(0, first - 1)
    if until is not None:
        last = next((i for i, t in enumerate(times) if t is not None and t >= until + WINDOW_MARGIN_NS),
                    len(files))
        hi = min(len(files), last + 2)
    return files[lo:max(lo, hi)]


def progress_key(file_id: str | None, path: str, labelled: bool = True) -> str:
    """What the resume progress of a file is kept under: the fingerprint of its first
    line (as its event ids), with its name unless that line begins with a multilog
    label. A name can come to hold other lines between two runs (logrotate makes a new
    mail.log): the offsets sent of the old file are not the new one's. A labelled first
    line is unique to its file, which multilog renames (current to an archive): the
    offsets sent are its own under any name. Files beginning with no label (a syslog
    file; the tail of a line multilog cut at a rotation) may begin alike: their name
    keeps them apart."""
    if file_id is None:
        return "path:" + path
    return file_id if labelled else f"{file_id}:{path}"


def _readable_batches(files: list[str], max_line: int, counters: dict[str, int],
                      multilog: bool = True) -> Iterator[Any]:
    """The batches of the files of one group (a multilog directory's, lines cut by a
    rotation joined again) up to where each can be read (a damaged archive): what was
    read is sent, the damage is said once and counted, and the replay goes on."""
    def said(path: str, exc: InputError) -> None:
        counters["damaged"] = counters.get("damaged", 0) + 1
        rest = "" if isinstance(exc, BinaryInput) else " (the rest of this file is skipped)"
        print(f"shipper: {exc}{rest}", file=sys.stderr)

    if multilog:
        return read_joined(files, max_line, on_error=said)
    return _logrotate_set_batches(files, max_line, said)


def _logrotate_set_batches(files: list[str], max_line: int,
                           said: Callable[[str, InputError], None]) -> Iterator[Any]:
    opened = held_open(files)  # (logrotate may rename them while the first are read)
    try:
        for f in files:
            yield from read_joined([f], max_line, on_error=said, opened=opened)
    finally:
        release(opened)


def source_options(config: Any, path: str) -> Any:
    """The configured source that follows ``path`` (a multilog directory, or a file of
    one; a file source's file or one of its rotated copies), if any."""
    import glob

    from shipper.config import glob_matches, named_now

    # the path as given and as resolved: the live run follows what its globs list,
    # symlinks unresolved (Life with qmail's supervise/*/log/main links to the logs)
    given = {os.path.abspath(path), os.path.realpath(path)}
    cands = given | {os.path.dirname(c) for c in given}
    for s in config.sources.values():
        for pat in s.paths:
            if glob.has_magic(pat):
                pats = [pat]
                # what the glob lists now, resolved: a path given through another link
                if cands & {os.path.realpath(m) for m in named_now(pat, s.type)}:
                    return s
            else:
                pats = [pat, os.path.realpath(pat)]
            if any(glob_matches(c, x) for c in cands for x in pats):
                return s
            if s.type == "file" and any(glob_matches(c, x + ".*") or glob_matches(c, x + "-*")
                                        for c in given for x in pats):
                return s
    return None


def parse_options(args: argparse.Namespace, config: Any, path: str) -> ParseOptions:
    """How the lines of ``path`` are parsed: as a live run of ``config`` parses them (its
    [parse] table, and the source that follows the path), so a replayed record is the
    one the live run sent (the same host, time, program); the options given win."""
    opts = ParseOptions(redact=not args.no_redact, tai_leap=bool(args.tai), local_tz=not args.utc,
                        syslog_year=args.year, host=args.host)
    if config is None:
        return opts
    parse = config.parse
    opts.max_line = parse.max_line_bytes
    opts.redact = parse.redact and not args.no_redact
    if opts.syslog_year is None:
        opts.syslog_year = parse.syslog_year
    if opts.host is None:
        opts.host = parse.host
    src = source_options(config, path)
    if src is not None:
        opts.tai_leap = args.tai or src.tai_leap
        opts.local_tz = src.local_tz and not args.utc
        opts.program = src.program
    return opts


def _group_records(files: list[str], opts: ParseOptions, done: dict[str, int],
                   since: int | None, until: int | None, counters: dict[str, int],
                   multilog: bool = True, keys: dict[str, bool] | None = None, every: bool = False
                   ) -> Iterator[tuple[int, int, dict[str, Any], bool]]:
    """The records of a group, and whether each is to be sent (``every``: also those
    not to be, see merged_all). ``keys``: per file read, whether its first line is
    labelled (how its progress is kept: progress_key), filled in here."""
    parser = LineParser(opts)
    keys = {} if keys is None else keys
    stored_at: dict[str, int] = {}  # per file, how far its stored bytes were counted
    for batch in _readable_batches(files, opts.max_line, counters, multilog):
        path = batch.source
        parser.source, parser.file_id = path, batch.file_id
        labelled = keys.get(path)
        if labelled is None:  # the file's first batch (a joined tail's is not at 0)
            labelled = keys[path] = bool(batch.lines) and batch.offsets[0] == 0 and is_stamped(
                batch.lines[0][:26])
        skip_to = done.get(progress_key(batch.file_id, path, labelled), -1)
        size = sum(map(len, batch.lines)) + len(batch.lines)
        counters["line_bytes"] += size
        # the progress in the files' sizes: a .gz's lines are 5-10 times its size (the
        # bar stood at 100 %, ETA 0 s, with three quarters of the work to come)
        if batch.read_to is None:
            counters["bytes"] += size
        else:
            counters["bytes"] += max(0, batch.read_to - stored_at.get(path, 0))
            stored_at[path] = max(batch.read_to, stored_at.get(path, 0))
        records = parser.parse_batch(batch.lines, batch.offsets)
        for i in batch.truncated or ():
            records[i].add_flag(F_TRUNCATED)
        if batch.partial is not None:
            records[batch.partial].add_flag(F_PARTIAL)
        if batch.continued is not None:
            records[batch.continued].add_flag(F_CONTINUATION)
        for rec in records:
            t = rec.time_ns or 0
            if rec.offset is not None and rec.offset <= skip_to:
                counters["resumed"] += 1
                if every:
                    yield t, rec.offset, rec.to_dict(), False
                continue
            if (since is not None and t < since) or (until is not None and t >= until):
                counters["filtered"] += 1
                if every:
                    yield t, rec.offset or 0, rec.to_dict(), False
                continue
            yield t, rec.offset or 0, rec.to_dict(), True


def merged(groups: list[list[str]], opts: ParseOptions | list[ParseOptions], done: dict[str, int],
           since: int | None, until: int | None, counters: dict[str, int],
           multilog: list[bool] | None = None, keys: dict[str, bool] | None = None
           ) -> Iterator[dict[str, Any]]:
    """Records of every group, merged by event time (ties: input order, then offset).
    ``opts``: for all groups, or one per group; ``multilog``: per group, whether its files
    are a multilog directory's (a line cut at a rotation joined; default: yes)."""
    for rec, _ in merged_all(groups, opts, done, since, until, counters, multilog, keys, every=False):
        yield rec


def merged_all(groups: list[list[str]], opts: ParseOptions | list[ParseOptions], done: dict[str, int],
               since: int | None, until: int | None, counters: dict[str, int],
               multilog: list[bool] | None = None, keys: dict[str, bool] | None = None,
               every: bool = True) -> Iterator[tuple[dict[str, Any], bool]]:
    """``merged``'s records with whether each is to be sent; ``every``: also those sent
    before (resumed) and outside --since/--until, not to be sent (the correlator sees
    them: a mail's summary has all its lines)."""
    each = opts if isinstance(opts, list) else [opts] * len(groups)
    joined = multilog if multilog is not None else [True] * len(groups)
    streams = [((t, gi, off, rec, send) for t, off, rec, send in _group_records(
                    g, o, done, since, until, counters, j, keys, every))
               for gi, (g, o, j) in enumerate(zip(groups, each, joined, strict=True))]
    for _, _, _, rec, send in heapq.merge(*streams, key=lambda x: (x[0], x[1], x[2])):
        yield rec, send


class Progress:
    """A bar with ETA on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, total_bytes: int, stream: Any = sys.stderr) -> None:
        self.total = max(1, total_bytes)
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done_bytes: int, records: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        frac = min(1.0, done_bytes / self.total)
        elapsed = now - self.start
        eta = (elapsed / frac - elapsed) if frac > 0 else 0.0
        rate = records / elapsed if elapsed > 0 else 0.0
        if self.tty:
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {frac * 100:5.1f}% {records:,} records "
                              f"{rate:,.0f}/s ETA {eta:,.0f}s ")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(f"replay: {frac * 100:.1f}% {records:,} records {rate:,.0f}/s "
                              f"ETA {eta:,.0f}s\n")
        self.stream.flush()


def _state_path(state_dir: str, key: str) -> str:
    return os.path.join(state_dir, "replay", hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")


async def _run(args: argparse.Namespace, sink: Any, out: Any, config: Any = None) -> int:
    try:
        return await _replay(args, sink, out, config)
    finally:
        if sink is not None:
            await sink.close()


async def _replay(args: argparse.Namespace, sink: Any, out: Any, config: Any = None) -> int:
    # Absolute paths: the resume state is keyed by them (however the path was typed), and
    # records name their file as a live run does.
    sets = input_sets([p if p == "-" else os.path.abspath(p) for p in args.paths])
    output = written_to(out) if out is not None else None
    for st in sets:
        for f in [f for f in st.files if is_output(f, output)]:
            print(f"replay: {f}: the output file itself: not read", file=sys.stderr)
            st.files.remove(f)
    sets = [st for st in sets if st.files]
    groups = [st.files for st in sets]
    opts = [parse_options(args, config, st.name) for st in sets]
    multilog = [st.multilog for st in sets]
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    listed = sum(map(len, groups))
    # --summaries: the correlator as the live run's (its [tracking] options), and the
    # archives a mail open at --since began in read too (for it, not sent): up to the
    # longest a mail stays in the queue before it
    copts = None
    if args.summaries:
        from shipper.assemble import correlator_options
        from shipper.track.correlator import CorrelatorOptions

        copts = correlator_options(config) if config is not None else CorrelatorOptions()
    read_since = since
    if since is not None and copts is not None:
        read_since = since - int(copts.qmail.max_age_s * 1_000_000_000)
    groups = [in_window(g, read_since, until) if m else g for g, m in zip(groups, multilog, strict=True)]
    outside = listed - sum(map(len, groups))
    # The progress is the replay's of these arguments; what each file holds is told by its
    # identity (progress_key), so files that came or went since (multilog rotated,
    # logrotate ran) do not make it start over, nor skip lines of a new file
    # (not the output, named again by the glob of a run resumed: the same replay)
    named = [p for p in args.paths if not is_output(p, output)]
    key = orjson.dumps(["v2", sorted({p if p == "-" else os.path.realpath(p) for p in named}),
                        args.since, args.until, args.sink or args.output]).decode()
    state_path = _state_path(args.state_dir, key) if args.state_dir else None
    if state_path:
        os.makedirs(os.path.dirname(state_path), exist_ok=True)
    done: dict[str, int] = {}
    if state_path and not args.restart and os.path.exists(state_path):
        try:
            with open(state_path, "rb") as f:
                done = orjson.loads(f.read())["done"]
            print(f"replay: resuming ({len(done)} files with progress)", file=sys.stderr)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"replay: progress file {state_path} unreadable ({exc}); starting over", file=sys.stderr)
            done = {}
    total = sum(os.path.getsize(f) for g in groups for f in g)
    counters = {"bytes": 0, "line_bytes": 0, "filtered": 0, "resumed": 0, "transformed_away": 0,
                "summaries": 0}
    keys: dict[str, bool] = {}
    progress = Progress(total)
    sent = 0
    batch: list[dict[str, Any]] = []
    marks: list[tuple[str, int] | None] = []  # batch's lines' places (mark)
    interval = 1.0 / args.rate if args.rate else 0.0
    t_next = flushed_at = time.monotonic()
    read_at_flush = 0  # counters["line_bytes"] at the last flush
    backoff = Backoff()

    # A stream sink's batches count done once the peer's TCP has them (sinks.confirm),
    # as in the daemon: counted when written, a resumed replay skipped what a reset
    # connection lost, and a peer refusing every connection after taking its bytes (a
    # TLS port given plain syslog) had the whole replay "sent", none of it received.
    confirm = getattr(sink, "confirm", None) if out is None and not args.dry_run else None
    unconfirmed: deque[tuple[list[dict[str, Any]], list[tuple[str, int] | None]]] = deque()

    def mark(r: dict[str, Any]) -> tuple[str, int] | None:
        """Where a record's line is in its file, as the progress keeps it; taken before
        the transforms (a keyed file id is not the file's)."""
        src, off = r.get("source"), r.get("offset")
        # a line with no newline yet (a current still written) is sent as it is,
        # but not counted done: a resumed run sends it again once it is whole (same
        # event id) rather than skip the finished line
        if src is None or off is None or F_PARTIAL in r["flags"]:
            return None
        return progress_key(r.get("file_id"), src, keys.get(src, True)), off

    def count_done(marks: list[tuple[str, int] | None]) -> None:
        for m in marks:
            if m is not None and m[1] > done.get(m[0], -1):
                done[m[0]] = m[1]

    async def settle(final: bool) -> None:
        """Count done what the peer has; send again what a dropped connection lost.
        ``final``: wait until the peer has it all (given up after CONFIRM_STALL s in
        which it acknowledged nothing)."""
        assert confirm is not None
        stalled_at = time.monotonic() + CONFIRM_STALL
        while unconfirmed:
            n, lost = confirm()
            for _ in range(min(n, len(unconfirmed))):
                count_done(unconfirmed.popleft()[1])
                stalled_at = time.monotonic() + CONFIRM_STALL
            if lost:
                again = list(unconfirmed)
                unconfirmed.clear()
                for b in again:
                    await deliver(sink, b[0], backoff, waiting=REPLAY_WAITS)
                    unconfirmed.append(b)
                continue
            if not final or not unconfirmed:
                return
            if time.monotonic() > stalled_at:
                raise SinkError(f"the peer acknowledged nothing for {CONFIRM_STALL:g}s: "
                                f"{sum(len(b) for b, _ in unconfirmed):,} records not known delivered")
            await asyncio.sleep(0.02)

    async def flush(final: bool = False) -> None:
        nonlocal sent, batch, marks, flushed_at, read_at_flush
        flushed_at, read_at_flush = time.monotonic(), counters["line_bytes"]
        if batch:
            if args.dry_run:
                pass
            elif out is not None:
                try:
                    out.write(b"".join(orjson.dumps(r) + b"\n" for r in batch))
                    out.flush()
                except OSError as exc:
                    if exc.filename is not None or isinstance(exc, BrokenPipeError):
                        raise
                    # "[Errno 28] No space left on device" named no file
                    raise OSError(exc.errno, exc.strerror, args.output) from None
            else:
                try:
                    await deliver(sink, batch, backoff, waiting=REPLAY_WAITS)
                except PermanentError as exc:
                    print(f"replay: the sink refused a batch for good: {exc}", file=sys.stderr)
                    raise
            if confirm is not None:
                unconfirmed.append((batch, marks))
            else:
                count_done(marks)
            sent += len(batch)
            batch, marks = [], []
        if confirm is not None:
            await settle(final)
        if marks and not unconfirmed:  # lines not shipped on purpose, none waiting before them
            count_done(marks)
            marks = []
        if state_path and not args.dry_run:
            atomic_write(state_path, orjson.dumps({"done": done, "sent": sent}))

    # As the live run ships them: the config's transforms (pseudonyms above all; a replay
    # without them sent the addresses in clear), and what the sink takes of them
    # not its rate limit: it guards a live run against a flood; a replay has --rate,
    # and would drop most of a year's archive
    transform = build_transformer(config.transforms, rate_limit=False) if config is not None else None
    if transform is not None and transform.is_noop:
        transform = None
    wants = None
    if args.sink:
        from shipper.assemble import is_summary

        wants = sink_filter(config.sinks[args.sink], is_summary)
    # over every line read (also those sent before a resume, or outside the window: a
    # mail's summary has all its lines)
    corr = Correlator(copts) if copts is not None else None
    fed: list[dict[str, Any]] = []
    feeds = 0

    def summaries(final: bool = False) -> None:
        """The correlator's summaries of what it was fed, into the batch (no progress
        mark: a resumed run makes them again, with the same event ids)."""
        nonlocal fed, feeds
        assert corr is not None
        out = corr.feed(fed)
        fed = []
        feeds += 1
        if not final and feeds % 64 == 0:  # mails open past max_age, by the log's time (as track)
            out += corr.flush()
        if transform is not None:
            out = transform.tidy_summaries(out)
        for s in out:
            t = s.get("time_unix_ns") or 0
            if (since is not None and t < since) or (until is not None and t >= until):
                continue  # ended outside the window: its lines were not sent either
            if wants is None or wants(s):
                batch.append(s)
                marks.append(None)
                counters["summaries"] += 1

    for rec, send in merged_all(groups, opts, done, since, until, counters, multilog, keys,
                                every=corr is not None):
        where = mark(rec) if send else None  # (before the transforms: the file's own id)
        if corr is not None:
            if transform is not None:
                rec = transform.pseudonymise([rec])[0]  # before the correlator, as live
            fed.append(rec)
            if len(fed) >= 2048:
                summaries()
            if not send:
                if len(batch) >= BATCH:  # (the summaries of a long stretch not sent)
                    await flush()
                continue
            # (a copy: the dropped fields go from what is sent, not from what the
            # correlator has still to read)
            rec = dict(rec) if transform is not None else rec
        if transform is not None or wants is not None:
            if transform is None:
                kept = [rec]
            else:
                kept = transform.select([rec]) if corr is not None else transform([rec])
            if not kept or wants is not None and not wants(kept[0]):
                # not shipped, on purpose: done (a resumed run does not read it again)
                marks.append(where)
                counters["transformed_away"] += 1
                if len(marks) >= BATCH:  # (a sink taking summaries only: its progress too)
                    await flush()
                continue
            rec = kept[0]
        batch.append(rec)
        marks.append(where)
        if interval:
            t_next += interval
            delay = t_next - time.monotonic()
            if delay > 0:
                if time.monotonic() - flushed_at >= RATE_FLUSH:
                    await flush()
                await asyncio.sleep(delay)
        if len(batch) >= BATCH or counters["line_bytes"] - read_at_flush >= FLUSH_BYTES:
            await flush()
            progress.update(counters["bytes"], sent)
    if corr is not None:
        summaries(final=True)
        if corr.open_count:
            # not sent: under the id the live run gives the whole mail, an incomplete one
            # could overwrite the live run's in the SIEM (the live run ends them)
            print(f"replay: {corr.open_count:,} mails and sessions open at the end of the input "
                  "not summarised (the live run sends them once they end)", file=sys.stderr)
    await flush(final=True)
    progress.update(total, sent, final=True)
    verb = "would send" if args.dry_run else "sent"
    left = counters["transformed_away"]
    print(f"replay: {verb} {sent:,} records; {counters['filtered']:,} outside --since/--until; "
          f"{counters['resumed']:,} already sent before"
          + (f"; {outside:,} archives wholly outside --since/--until not read" if outside else "")
          + (f"; {counters['summaries']:,} of them mail and session summaries" if args.summaries else "")
          + (f"; {left:,} not taken by the transforms or the sink's filters" if left else ""),
          file=sys.stderr)
    if state_path and not args.dry_run and not counters.get("damaged"):
        try:
            os.unlink(state_path)  # finished: a new replay of the same set starts over
        except FileNotFoundError:
            pass
    if counters.get("damaged"):
        # the progress is kept: run again (the files mended, a higher ulimit), it reads
        # what it could not and sends nothing twice (it was removed: all went again)
        print(f"replay: {counters['damaged']} file(s) could not be read, or not to their end (above)"
              + ("; run the same command again to read them once mended: what was sent is not "
                 "sent again" if state_path and not args.dry_run else ""), file=sys.stderr)
        return 1
    return 0


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise argparse.ArgumentTypeError(f"not a rate of records per second: {text!r}")
    return rate


def _cut_torn_record(out: Any, path: str) -> None:
    """A record cut short at the end of the output (a full disk, a kill -9 in a write)
    is removed: the run that resumes sends it again, and appended to it, the next
    record made one line of neither (found filling a small disk, then resuming)."""
    st = os.fstat(out.fileno())
    if not stat.S_ISREG(st.st_mode) or not st.st_size:
        return  # (a FIFO, /dev/stdout: nothing to read back)
    # (the file opened, not its name again: what the name leads to may have changed)
    tail = os.pread(out.fileno(), 1 << 20, max(0, st.st_size - (1 << 20)))
    if not tail or tail.endswith(b"\n"):
        return
    start = tail.rfind(b"\n") + 1
    if not tail.startswith(b'{"', start) or (start == 0 and st.st_size > len(tail)):
        return  # not a record of ours, or one longer than looked at: left as it is
    os.ftruncate(out.fileno(), st.st_size - len(tail) + start)
    print(f"replay: {path}: a record cut short at its end removed (sent again)", file=sys.stderr)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    from shipper.daemon import raise_open_files_limit

    raise_open_files_limit()  # (logrotate sets are held open while read: see held_open)
    ap = argparse.ArgumentParser(
        prog="shipper replay",
        description="Send archived logs to a sink with the same event ids as a live run. "
                    "Resumable: run the same command again after an interruption.")
    ap.add_argument("paths", nargs="+", metavar="PATH",
                    help="multilog directories (merged in time order), files, .gz/.bz2/.xz archives")
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--sink", metavar="NAME", help="a sink of the configuration (-c)")
    target.add_argument("--output", metavar="FILE", help="write NDJSON to FILE (- for stdout)")
    ap.add_argument("-c", "--config", metavar="FILE", help="configuration naming the sink")
    ap.add_argument("--since", metavar="T", help=f"only records at or after T (archives closed "
                    f"more than a day before T are not read); T: {FORMS}")
    ap.add_argument("--until", metavar="T", help="only records before T")
    ap.add_argument("--rate", type=_rate, metavar="N", help="at most N records per second")
    ap.add_argument("--dry-run", action="store_true", help="read and count, send nothing")
    ap.add_argument("--summaries", action="store_true",
                    help="also send the mail and SMTP-session summaries the live run makes "
                         "(its [tracking] options with -c), with the live run's event ids; "
                         "a resumed run sends again those it had sent (same ids)")
    ap.add_argument("--restart", action="store_true", help="ignore saved progress")
    ap.add_argument("--state-dir", metavar="DIR",
                    help="where progress is kept (default: the config's state_dir, else none)")
    ap.add_argument("--no-redact", action="store_true", help="keep passwords and AUTH data")
    ap.add_argument("--tai", action="store_true",
                    help="TAI64N labels are true TAI with leap seconds (s6-log), not daemontools'")
    ap.add_argument("--utc", action="store_true", help="tai64nlocal/syslog stamps are UTC")
    ap.add_argument("--year", type=year_arg, help="year of the first BSD syslog stamps (they have none; "
                    "default: the config's syslog_year, else guessed); it turns with the dates")
    ap.add_argument("--host", help="host name for records whose line names none (default: the "
                    "config's, as a live run names them)")
    ap.epilog = ("With -c, lines are parsed as the live run of that configuration parses them: "
                 "its [parse] host, syslog_year, redact and max_line_bytes, and the tai_leap, "
                 "local_tz and program of the source that follows the path; and shipped as it "
                 "ships them: its [transforms] (pseudonyms, filters, dropped fields; not the rate "
                 "limit: see --rate) and, with --sink, that sink's filters.")
    args = ap.parse_args(argv)
    # SIGTERM (kill, a supervisor) stops it like Ctrl-C: progress kept, exit 130.
    signal.signal(signal.SIGTERM, _interrupt)
    sink = None
    out = None
    config = None
    try:
        for opt, t in (("--since", args.since), ("--until", args.until)):
            if t:
                try:
                    parse_time(t)
                except ValueError as exc:
                    ap.error(f"{opt}: {exc}")  # a usage error (exit 2), as in track
        if args.sink and not args.config:
            ap.error("--sink needs -c CONFIG")
        if "-" in args.paths:
            ap.error("replay reads files, to resume by them; for stdin use 'shipper parse -'")
        if args.config:
            # With --output too: records are parsed as its live run parses them
            from shipper.config import ConfigError, load_config

            try:
                config = load_config(args.config)
            except ConfigError as exc:
                for line in exc.errors:
                    print(f"shipper: {line}", file=sys.stderr)
                return 2
            for w in config.warnings:
                print(f"shipper: warning: {w}", file=sys.stderr)
        if args.sink:
            from shipper.assemble import build_sink

            if args.sink not in config.sinks:
                print(f"shipper: no sink {args.sink!r} in {args.config} (sinks: "
                      f"{', '.join(config.sinks) or 'none'})", file=sys.stderr)
                return 2
            sink = build_sink(config.sinks[args.sink])
        if config is not None and args.state_dir is None:
            args.state_dir = config.state_dir
        if args.state_dir and (why := unsafe_dir_problem(os.path.join(args.state_dir, "replay"))):
            # as run: progress kept where another user could swap it (a forged one skips
            # lines; a link takes root's writes elsewhere; a security re-test)
            print(f"replay: {why}", file=sys.stderr)
            return 2
        if args.sink:
            pass
        elif args.output == "-":
            out = sys.stdout.buffer
        else:
            # 0640 as the file sink's: it holds mail addresses (it was 0644 by the umask);
            # never through another user's link, nor waiting on a FIFO put there; read
            # and write, to look at its end (_cut_torn_record) through this one open
            # ("ab" over an O_RDWR descriptor: "a+b" wanted a seekable file, a FIFO or a
            # pipe's /dev/stdout refused)
            out = open(args.output, "ab",  # noqa: SIM115 - closed below
                       opener=lambda p, f: open_not_through_foreign_link(
                           p, (f & ~os.O_WRONLY) | os.O_RDWR, 0o640, regular_only=False))
            _cut_torn_record(out, args.output)
        try:
            return asyncio.run(_run(args, sink, out, config))
        finally:
            if out is not None and out is not sys.stdout.buffer:
                out.close()
    except BrokenPipeError:
        raise  # "--output - | head": the reader went away, not an error (shipper.cli)
    except OSError as exc:
        from shipper.daemon import describe_os_error

        why = describe_os_error(exc)
        if (isinstance(exc, PermissionError) and args.state_dir and exc.filename
                and str(exc.filename).startswith(os.path.join(args.state_dir, "replay"))):
            why += (" (the replay progress there belongs to another user, e.g. root: "
                    "replay as the daemon's user, or give --state-dir)")
        print(f"shipper: {why}", file=sys.stderr)
        return 1
    except (ValueError, InputError) as exc:
        print(f"shipper: {exc}", file=sys.stderr)
        return 1
    except PermanentError:
        return 1
    except SinkError as exc:  # the end's wait for the peer's acknowledgements gave up
        print(f"replay: {exc}" + ("; run the same command again to send them" if args.state_dir else ""),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.state_dir:
            print("replay: interrupted; run the same command again to resume", file=sys.stderr)
        else:
            print("replay: interrupted; no progress was kept (give --state-dir to resume)",
                  file=sys.stderr)
        return 130
