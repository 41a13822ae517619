"""``shipper track`` and ``shipper stats``: read logs, correlate, filter or aggregate.

The I/O edge of mail tracking. Inputs are files, multilog directories (archives
``@….s``/``@….u`` in name order, then ``current``), plain directories (their files
in name order), ``-`` for stdin; gzip/bzip2/xz are read transparently. Each input
is read in batches and parsed with ``LineParser``; inputs are merged by log time
(a qmail-send directory and an smtpd directory interleave as they happened) and
fed to the ``Correlator``. Memory depends on the open mails and sessions, not on
the input size: summaries are printed (track) or aggregated (stats) as they complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import orjson

from shipper.parse import LineParser, ParseOptions
from shipper.reader import InputError, input_sets, is_multilog_dir, read_joined
from shipper.record import event_id
from shipper.track.correlator import Correlator, CorrelatorOptions
from shipper.track.report import Stats, TrackQuery, matches, render_stats, render_text
from shipper.when import FORMS, parse_time, year_arg

FEED_BATCH = 2048
FLUSH_EVERY = 64  # batches between max-age flushes
FOLLOW_MAX = 100_000  # mails shown whose forwarded copies and bounces track still shows
FOLLOW_HOLD = 10_000  # copies and bounces that completed before their mail, held for it
# Raw events no tracker looks at: skipped before building a dict for them.
_IGNORED = frozenset({"status", "tcp_status", "unparsed", "io_eof", "daemon",
                      "delivery_account", "warning", "alert"})


def _records(files: list[str], joined: bool, opts: ParseOptions,
             on_error: Callable[[str], None] | None = None,
             name: str | None = None) -> Iterator[dict[str, Any]]:
    """The parsed, trackable records of one input stream (a file, or the files of a
    directory), in order. With ``on_error``, a file that cannot be read to its end (a
    damaged archive) is told to it and the input goes on with the next file. ``name``
    (the input's) goes in each record's ``input``: a qmail-send log naming no host is
    one server's (see shipper.track.qmail.send_log)."""
    parser = LineParser(opts)  # one per input: its state goes on from an archive to the next

    def said(fn: str, exc: InputError) -> None:
        if on_error is None:
            raise exc
        on_error(str(exc))

    # a multilog directory's line cut at a rotation joined again, as the live follower
    # joins it (a plain directory's files are each on their own)
    groups = [files] if joined else [[f] for f in files]
    for batch in (b for g in groups for b in read_joined(g, opts.max_line, on_error=said)):
        parser.source, parser.file_id = batch.source, batch.file_id
        for rec in parser.parse_batch(batch.lines, batch.offsets):
            if rec.event in _IGNORED:
                continue
            d = {"event_id": event_id(rec.file_id, rec.offset), "time_unix_ns": rec.time_ns,
                 "time_source": rec.time_source, "host": rec.host, "program": rec.program,
                 "pid": rec.pid, "event": rec.event}
            d.update(rec.fields)
            d["source"] = rec.source
            d["file_id"] = rec.file_id
            d["offset"] = rec.offset
            if name is not None:
                d["input"] = name
            yield d


def summaries(paths: list[str], copts: CorrelatorOptions | None = None,
              popts: ParseOptions | None = None, on_error: Callable[[str], None] | None = None,
              counts: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Every ``mail``/``smtp_session`` summary of the inputs, as they complete. With
    ``on_error``, a file that cannot be read to its end is told to it (what was read of
    it counts) instead of ending the whole with InputError. ``counts`` gets, at the end,
    ``untracked_deliveries``: delivery results in no summary (their mail not tracked)."""
    popts = popts or ParseOptions()
    sets = input_sets(paths, plain_dirs=True)
    for p in paths:  # (it read nothing and said nothing: exit 1, as "nothing matched")
        if p != "-" and os.path.isdir(p) and not is_multilog_dir(p) and not any(
                n[:1] != "." and os.path.isfile(os.path.join(p, n)) for n in os.listdir(p)):
            raise InputError(f"{p}: no log files in it, and not a multilog directory "
                             "(no current, no @ files)")
    streams = [_records(st.files, st.multilog, popts, on_error, st.name) for st in sets]
    merged = heapq.merge(*streams, key=lambda r: r["time_unix_ns"] or 0) if len(streams) != 1 \
        else streams[0]
    corr = Correlator(copts)
    batch: list[dict[str, Any]] = []
    n = 0
    for rec in merged:
        batch.append(rec)
        if len(batch) >= FEED_BATCH:
            yield from corr.feed(batch)
            batch = []
            n += 1
            if n % FLUSH_EVERY == 0:
                yield from corr.flush()
    if batch:
        yield from corr.feed(batch)
    yield from corr.finish()
    if counts is not None:
        counts["untracked_deliveries"] = corr.qmail.orphans


def _count_arg(text: str) -> int:
    """A number of at least 1 (--max-open 0 reported every mail incomplete at once;
    -1 ended in a traceback)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {n}")
    return n


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Text for a terminal: control characters other than newline and tab shown as
    escapes. What an SMTP client writes (a HELO, a sender) is in the reports, and its
    escape sequences reached the admin's terminal raw (retitled, cleared; a security
    review)."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def _time_arg(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("paths", nargs="+", metavar="PATH",
                    help="log file, multilog directory, or - for stdin (.gz/.bz2/.xz read as such)")
    when = f"T: {FORMS}"
    ap.add_argument("--since", type=_time_arg, metavar="T",
                    help=f"only mails/sessions ending at or after T; {when}")
    ap.add_argument("--until", type=_time_arg, metavar="T",
                    help="only mails/sessions starting at or before T")
    ap.add_argument("--json", action="store_true", help="JSON output")
    ap.add_argument("--max-open", type=_count_arg, default=100_000,
                    help="open messages kept before the oldest is reported incomplete")
    ap.add_argument("--utc", action="store_true",
                    help="tai64nlocal / syslog stamps are UTC, not local time; times shown in UTC")
    ap.add_argument("--tai", action="store_true",
                    help="TAI64N labels are true TAI with leap seconds (s6-log), not daemontools'")
    ap.add_argument("--year", type=year_arg, help="year of BSD syslog stamps (default: guessed)")


def _options(args: argparse.Namespace) -> tuple[CorrelatorOptions, ParseOptions]:
    c = CorrelatorOptions()
    c.qmail.max_open = args.max_open
    c.postfix.max_open = args.max_open
    c.session.show_auth_user = getattr(args, "auth_user", False)
    return c, ParseOptions(local_tz=not args.utc, syslog_year=args.year, tai_leap=args.tai)


def _say_unreadable(errors: list[str], prog: str) -> Callable[[str], None]:
    """What a track or stats run does with a file it cannot read to its end: say it on
    stderr at once, in one line, and keep it for the exit code (what was read of the
    file counts; the other inputs go on)."""
    def said(msg: str) -> None:
        print(terminal_safe(f"{prog}: {msg} (the rest of this file is skipped)"), file=sys.stderr)
        errors.append(msg)
    return said


def track_main(argv: list[str], stdout: TextIO | None = None) -> int:
    """shipper track: where did this mail go? One summary per mail (and per SMTP session
    that queued none, that refused what you look for, or that a mail it queued does
    not name: one not in the input, or that ended before the reply was logged),
    followed by the copies its
    local deliveries forwarded and the bounces it caused. Exit 0 if something matched,
    1 if not, 2 on error."""
    out = stdout or sys.stdout
    ap = argparse.ArgumentParser(prog="shipper track", description=track_main.__doc__)
    _common(ap)
    ap.add_argument("--from", dest="mail_from", metavar="ADDR", help="sender contains ADDR")
    ap.add_argument("--to", dest="rcpt_to", metavar="ADDR", help="a recipient contains ADDR")
    ap.add_argument("--host", metavar="H",
                    help="client or relay host contains H; an IP address: that address")
    ap.add_argument("--server", metavar="H",
                    help="the log's own host (the server that logged it) contains H")
    ap.add_argument("--msgid", metavar="ID", help="qmail msg number, Postfix queue id or Message-ID")
    ap.add_argument("--qp", type=int, metavar="N",
                    help="qp N (qmail-queue's pid, as in the smtpd's '250 ok … qp N'): the "
                         "mail, the one whose bounce or forwarded copy it is, the session")
    ap.add_argument("--search", metavar="TEXT", help="TEXT anywhere in the summary")
    ap.add_argument("--sessions", action="store_true",
                    help="also list sessions that queued mail (shown inside their mails anyway)")
    ap.add_argument("--auth-user", action="store_true", help="show AUTH user names (PII)")
    args = ap.parse_args(argv)
    q = TrackQuery(mail_from=args.mail_from, rcpt_to=args.rcpt_to, since_ns=args.since,
                   until_ns=args.until, host=args.host, server=args.server, msgid=args.msgid,
                   qp=args.qp,
                   search=args.search, sessions=args.sessions)
    copts, popts = _options(args)
    found = 0
    # Where the mails shown went next: the copies their local deliveries forwarded and
    # the bounces they caused are shown after them (and theirs in turn). Bounded: the
    # oldest ids are forgotten first.
    # (OrderedDicts: a dict's next(iter(d)) walks over the slots of deleted entries)
    shown: OrderedDict[str, None] = OrderedDict()
    # A copy or bounce that completed before its mail did (the mail had another
    # recipient still deferred): held until that mail is shown, by the mail's id.
    # Bounded: the oldest held are dropped first.
    held: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    n_held = 0
    # A session that queued mail is shown inside its mails (their "session"), not by
    # itself, unless a mail of its is not shown naming it: one that ended before the reply
    # naming its qp was logged (a fast local delivery: "end msg" stamped before the
    # smtpd's "250 ok … qp"), or one not in the input (only the smtpd log given, or the
    # send log's archive rotated away). So a session that matches waits for its mails,
    # and is shown at the end if one never came naming it. Bounded: beyond
    # FOLLOW_HOLD, the longest waiting is shown; a session whose mail naming it was
    # forgotten beyond FOLLOW_MAX is shown, not lost.
    carried: OrderedDict[str, set[Any]] = OrderedDict()  # session event id → qps of mails naming it
    waiting: OrderedDict[str, tuple[dict[str, Any], set[Any]]] = OrderedDict()  # → (session, qps to come)
    q_sessions = dataclasses.replace(q, sessions=True)
    errors: list[str] = []

    def show(rec: dict[str, Any]) -> None:
        nonlocal found, n_held
        todo = [rec]
        while todo:
            r = todo.pop(0)
            found += 1
            eid = r.get("event_id")
            if r.get("event") == "mail" and eid is not None:
                shown[eid] = None
                if len(shown) > FOLLOW_MAX:
                    shown.popitem(last=False)
                kids = held.pop(eid, [])
                n_held -= len(kids)
                todo.extend(kids)
            if args.json:
                out.write(orjson.dumps(r).decode() + "\n")
            else:
                out.write(terminal_safe(render_text(r, utc=args.utc, rcpt_to=args.rcpt_to)))

    try:
        for rec in summaries(args.paths, copts, popts, _say_unreadable(errors, "shipper track")):
            ev = rec.get("event")
            hit = matches(rec, q) or _follows(rec, shown)
            # only a mail shown shows its session: one that does not match leaves a
            # session that matched (by a recipient of a transaction that queued
            # nothing, say) to be shown by itself
            sid = (rec.get("session") or {}).get("event_id") if ev == "mail" and hit else None
            if sid is not None:
                w = waiting.get(sid)
                if w is not None:
                    w[1].discard(rec.get("qp"))
                    if not w[1]:
                        del waiting[sid]
                else:
                    carried.setdefault(sid, set()).add(rec.get("qp"))
                    if len(carried) > FOLLOW_MAX:
                        carried.popitem(last=False)
            if hit:
                show(rec)
                continue
            if ev == "smtp_session" and rec.get("qps") and matches(rec, q_sessions):
                to_come = set(rec["qps"]) - carried.pop(rec.get("event_id"), set())
                if to_come:
                    waiting[rec.get("event_id")] = (rec, to_come)
                    if len(waiting) > FOLLOW_HOLD:
                        show(waiting.popitem(last=False)[1][0])
                continue
            parent = _parent(rec)
            if parent is not None:
                held.setdefault(parent, []).append(rec)
                n_held += 1
                while n_held > FOLLOW_HOLD:
                    n_held -= len(held.popitem(last=False)[1])
        for sess, _ in waiting.values():  # a mail of theirs never came naming them
            show(sess)
    except InputError as exc:
        print(terminal_safe(f"shipper track: {exc}"), file=sys.stderr)  # (a file's name)
        return 2
    out.flush()
    if not found:  # (else nothing said it: an empty output and exit 1)
        print("shipper track: no mail or session matched", file=sys.stderr)
    if errors:
        return 2
    return 0 if found else 1


def _parent(rec: dict[str, Any]) -> str | None:
    """The event id of the mail ``rec`` is a forwarded copy or a bounce of, if any."""
    for link in ("forward_of", "bounce_of"):
        of = rec.get(link)
        if isinstance(of, dict) and isinstance(of.get("event_id"), str):
            return of["event_id"]
    return None


def _follows(rec: dict[str, Any], shown: dict[str, None]) -> bool:
    """Whether ``rec`` is a forwarded copy or a bounce of a mail already shown."""
    for link in ("forward_of", "bounce_of"):
        of = rec.get(link)
        if isinstance(of, dict) and of.get("event_id") in shown:
            return True
    return False


def stats_main(argv: list[str], stdout: TextIO | None = None) -> int:
    """shipper stats: qmailanalog-style totals, top lists and delay percentiles."""
    out = stdout or sys.stdout
    ap = argparse.ArgumentParser(prog="shipper stats", description=stats_main.__doc__)
    _common(ap)
    ap.add_argument("--top", type=_count_arg, default=10, help="rows in each top list")
    args = ap.parse_args(argv)
    q = TrackQuery(since_ns=args.since, until_ns=args.until, sessions=True)
    copts, popts = _options(args)
    # the untracked deliveries counted in the period the summaries are
    copts.qmail.orphans_since_ns, copts.qmail.orphans_until_ns = args.since, args.until
    st = Stats(top=args.top)
    errors: list[str] = []
    counts: dict[str, int] = {}
    try:
        for rec in summaries(args.paths, copts, popts, _say_unreadable(errors, "shipper stats"),
                             counts):
            if matches(rec, q):
                st.add(rec)
    except InputError as exc:
        print(terminal_safe(f"shipper stats: {exc}"), file=sys.stderr)
        return 2
    st.untracked_deliveries = counts.get("untracked_deliveries", 0)
    d = st.to_dict()
    if args.json:
        out.write(orjson.dumps(d, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(terminal_safe(render_stats(d)))
    out.flush()
    return 2 if errors else 0
