"""``Correlator``: raw records in, ``mail`` / ``smtp_session`` summary records out. Pure.

Routes each record by program: qmail-send → ``QmailTracker``; tcpserver, sslserver,
tcpsvd, rblsmtpd, recordio, qmail-smtpd, qmail-popup → ``SessionTracker``;
``postfix*`` and ``pmg-smtp-filter`` → ``PostfixTracker``. The qmail and session
trackers are wired together so a session's ``qp`` reaches the message it queued.

Feed records in log order (per input: the trackers tolerate interleaving of inputs
as long as each input is in order; the ``track`` CLI merges inputs by time).
``flush(now_ns)`` emits what has been open longer than its max age (log time). Without
``now_ns`` each open entry is aged by its own clock: the time of the latest line its
tracker got from its input (a multilog directory, a file), so an input lagging another
(catching up after a stop) is not cut by the other's time, and a line stamped far
ahead of when it was read (``ingest_unix_ns``: a clock that NTP fixes later) moves
that clock no further than ``FUTURE_SLACK_S`` past the reading;
``finish()`` emits everything still open, flagged ``incomplete`` (end of input).
In the daemon (``hold_unlinked``), a mail that ends before the smtpd log is read to
``end_grace_s`` past its end (the clock of the session input furthest behind: catching
up after a stop, one log is read ahead of the other) and names no session by qp is
held until it is, so the ``250 ok … qp`` still to be read links it (``held``; saved
with the state), or until a flush finds every session input read to its end
``end_grace_s`` (wall clock) after the mail's end was read: a send log whose clock is
ahead of the smtpd log's (another host's) holds nothing for the difference.
A ``gap`` record (lines of a log lost) flags what is open in that log ``log_gap``.
``to_state()``/``from_state()`` carry open state across a restart of the shipper.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from shipper.track import NS, Clock, input_of, mark_gap
from shipper.track.postfix import PostfixOptions, PostfixTracker, is_postfix
from shipper.track.qmail import QmailOptions, QmailTracker, nearest_birth
from shipper.track.session import SessionOptions, SessionTracker

__all__ = ["Correlator", "CorrelatorOptions", "STATE_VERSION", "clock_key", "input_of"]

STATE_VERSION = 1

_SESSION_PROGRAMS = frozenset({"tcpserver", "sslserver", "tcpsvd", "sslsvd", "rblsmtpd", "jgreylist", "s6-tcpserverd",
                               "s6-tcpserver4d", "s6-tcpserver6d", "s6-tcpserver-access",
                               "recordio", "qmail-smtpd", "qmail-popup", "qmail-pop3d", "qpsmtpd"})


@dataclass(slots=True)
class CorrelatorOptions:
    qmail: QmailOptions = field(default_factory=QmailOptions)
    session: SessionOptions = field(default_factory=SessionOptions)
    postfix: PostfixOptions = field(default_factory=PostfixOptions)
    # The daemon: skip lines fed already (same file, offset not past the last fed),
    # as after a corrupt checkpoint. Off for reading files once (track, stats), where
    # two inputs may share a file id (the same first 64 bytes).
    skip_reread: bool = False
    # Hold a mail that ended unlinked while a session input is behind it (see the
    # module's doc). On with skip_reread (the daemon, whose inputs are read each at its
    # own pace); track, stats and replay merge their inputs by time and need no wait.
    hold_unlinked: bool = False


_READ_TO_CAP = 4096  # files remembered (a multilog directory keeps tens to hundreds)
_CLOCKS_CAP = 4096  # inputs whose clock is kept (a few in practice)
# A line may be stamped a little after it was read (another host's clock, syslog
# relays); beyond this its time is a clock gone wrong and ages nothing
FUTURE_SLACK_S = 300
# Mails held at most (each ~5 KB with its lines' data): a catch-up that reads the send
# log far ahead of the smtpd log would hold up to max_open (100,000: ~550 MB and a 150 MB
# state, a review); past this the oldest go unlinked, as without the hold
HELD_MAX = 2000
_NEVER = 1 << 63  # (held_floor with nothing held)
_DUE = -(1 << 63)  # a held mail's release time once its qp linked it: the next _hold

def clock_key(kind: str, source: str | None) -> str:
    """Whose clock ages an entry: its tracker's (``kind``) in its input (``input_of``)."""
    return f"{kind}\x00{input_of(source)}"


class Correlator:
    __slots__ = ("opts", "qmail", "sessions", "postfix", "clocks", "clock_read", "read_to", "held",
                 "held_qp", "holding", "held_floor")

    def __init__(self, opts: CorrelatorOptions | None = None) -> None:
        self.opts = opts or CorrelatorOptions()
        self.sessions = SessionTracker(self.opts.session)
        self.qmail = QmailTracker(self.opts.qmail, session_lookup=self.sessions.link_mail)
        self.sessions.attach = self._attach
        self.qmail.session_unlink = self.sessions.unlink_mail
        self.postfix = PostfixTracker(self.opts.postfix)
        self.clocks: dict[str, int] = {}  # clock_key → time of its latest line (log time)
        # clock_key → when that line was read (ingest_unix_ns): a quiet input's clock
        # goes on with the wall clock from there (see flush's read_ns)
        self.clock_read: dict[str, int] = {}
        # file_id → offset of the last line fed: a line read again (a corrupt checkpoint,
        # a restart from an older one) is not fed twice, which would split its mail
        self.read_to: dict[str, int] = {}
        # [release at (session inputs' log time), mail record, when its end was read
        # (wall clock, None: not known)]: mails ended with no qp link while a session
        # input was behind them (see the module's doc)
        self.held: list[list[Any]] = []
        self.held_qp: dict[int, list[list[Any]]] = {}  # qp → its entries in held
        self.holding = self.opts.hold_unlinked or self.opts.skip_reread
        # the earliest release time in held: a batch before it looks at none of them
        # (each batch walked them all: O(held) a batch while a log is read behind)
        self.held_floor = _NEVER

    def unlink(self) -> None:
        """Undo the trackers' links to each other (a reference cycle: a correlator let go
        held its open mails and sessions until Python's full collection); it cannot be
        fed after this."""
        self.qmail.session_lookup = None
        self.qmail.session_unlink = None
        self.sessions.attach = None

    def feed(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A batch of raw records → the summaries completed by it (often none)."""
        out: list[dict[str, Any]] = []
        qmail, sessions, postfix = self.qmail.feed, self.sessions.feed, self.postfix.feed
        clocks, clock_read = self.clocks, self.clock_read
        slack = FUTURE_SLACK_S * NS
        last_in: tuple[str, Any] = ("", None)  # (kind, source) of the last clock_key made
        ckey = ""
        read_to = self.read_to if self.opts.skip_reread else None
        for rec in records:
            fid, off = rec.get("file_id"), rec.get("offset")
            if read_to is not None and type(off) is int and fid is not None:
                seen = read_to.get(fid)
                if seen is not None and off <= seen:
                    continue  # fed already
                if seen is None and len(read_to) >= _READ_TO_CAP:
                    del read_to[next(iter(read_to))]  # the oldest file: long gone
                read_to[fid] = off
            prog = rec.get("program")
            if prog == "qmail-send":
                qmail(rec, out)
                kind = "q"
            elif prog in _SESSION_PROGRAMS:
                sessions(rec, out)
                kind = "s"
            elif is_postfix(prog):
                postfix(rec, out)
                kind = "p"
            else:
                if prog == "shipper" and rec.get("event") == "gap":
                    self._gap(rec)
                continue
            t = rec.get("time_unix_ns")
            if t is None:
                continue
            ingest = rec.get("ingest_unix_ns")
            if ingest is not None and t > ingest + slack:
                t = ingest + slack
            src = rec.get("source")
            if kind != last_in[0] or src != last_in[1]:
                last_in = (kind, src)
                ckey = clock_key(kind, src)
                if ckey not in clocks and len(clocks) >= _CLOCKS_CAP:
                    oldest = next(iter(clocks))
                    del clocks[oldest]
                    clock_read.pop(oldest, None)
            clocks[ckey] = t  # the latest line, not the largest time: one wild stamp passes
            if ingest is not None:
                clock_read[ckey] = ingest
        return self._hold(out, clocks)

    def _hold(self, out: list[dict[str, Any]], clocks: dict[str, int],
              release_all: bool = False, read_ns: int | None = None) -> list[dict[str, Any]]:
        """``out`` less the mails to hold for a qp link still to be read, plus the held
        mails whose wait is over (the session inputs read past their end + grace; or,
        ``read_ns`` given, every session input read to its end and the wall clock
        ``read_ns`` grace past the reading of its end). None held while no session input
        has been read (a send log alone; also a first start on a backlog, whose send log
        may be read first: those go unlinked)."""
        smtpd = [t for k, t in clocks.items() if k[0] == "s"]
        behind = min(smtpd) if smtpd and self.holding and not release_all else None
        grace = int(self.opts.session.end_grace_s * NS)
        if behind is not None:
            kept = []
            for r in out:
                t = r.get("time_unix_ns")
                s = r.get("session")
                if (r.get("event") == "mail" and r.get("program") == "qmail-send"
                        and type(r.get("qp")) is int and t is not None and behind < t + grace
                        and (s is None or s.get("link") == "sender")
                        and "bounce_of" not in r and "forward_of" not in r
                        and not r.get("flags")):
                    h = [t + grace, r, self.clock_read.get(clock_key("q", r.get("source")))]
                    self.held.append(h)
                    self.held_qp.setdefault(r["qp"], []).append(h)
                    self.held_floor = min(self.held_floor, h[0])
                else:
                    kept.append(r)
            out = kept
        held = self.held
        cap = min(self.opts.qmail.max_open, HELD_MAX)
        if held and (behind is None or read_ns is not None or self.held_floor <= behind
                     or len(held) > cap):
            def due(h: list[Any]) -> bool:
                return (behind is None or h[0] <= behind
                        or (read_ns is not None and h[2] is not None and h[2] + grace <= read_ns))
            ready = [h for h in held if due(h)]
            rest = [h for h in held if not due(h)]
            if len(rest) > cap:  # a log far behind: the oldest go as they are
                ready += rest[:len(rest) - cap]
                rest = rest[len(rest) - cap:]
            if ready:
                self.held = rest
                self.held_floor = min((h[0] for h in rest), default=_NEVER)
                for h in ready:
                    same = self.held_qp.get(h[1]["qp"], [])
                    same[:] = [e for e in same if e is not h]
                    if not same:
                        self.held_qp.pop(h[1]["qp"], None)
                out += [h[1] for h in ready]
        return out

    def _attach(self, host: str, qp: int, session_ref: dict[str, Any], time_ns: int | None,
                window_ns: int) -> dict[str, Any] | None:
        """A session's qp: the open mail's (QmailTracker), else a held one's, which goes
        out with the batch: it waited for this link alone (on a quiet host the smtpd log
        reached its end + grace only at the next flush, seconds later)."""
        got = self.qmail.attach_session(host, qp, session_ref, time_ns, window_ns)
        if got is not None or qp not in self.held_qp:
            return got
        best = nearest_birth([h for h in self.held_qp[qp]
                              if not (host and h[1].get("host") and h[1]["host"] != host)],
                             lambda h: h[1].get("birth_unix_ns"), time_ns, window_ns)
        if best is None:
            return None
        r = best[1]
        old = r.get("session")
        r["session"] = session_ref
        best[0] = self.held_floor = _DUE
        return old if old is not None and old.get("event_id") != session_ref.get("event_id") else {}

    def _gap(self, rec: dict[str, Any]) -> None:
        """A gap record: every entry open in that log (and begun before the lines lost,
        when their time is known) may have lost some of its lines: its summary says so
        (``log_gap``) rather than passing for whole."""
        where = rec.get("gap_source") or rec.get("source")
        if not where:
            return
        where = input_of(where)
        last = rec.get("gap_last_unix_ns")
        eid = rec.get("event_id")
        for entries in (self.qmail.mails, self.sessions.sessions, self.postfix.queue,
                        self.postfix.sessions):
            for e in entries.values():
                if input_of(e["origin"].get("source")) != where:
                    continue
                first = e.get("first_ns")
                if last is not None and first is not None and first > last:
                    continue  # begun after the lines lost
                mark_gap(e, eid)
                if entries is self.qmail.mails:
                    # the latest time lost (unknown: any before its latest line): a
                    # delivery begun by then may have lost its result (QmailTracker)
                    t = last if last is not None else e.get("last_ns")
                    if t is not None and t > (e.get("gap_ns") or 0):
                        e["gap_ns"] = t

    def flush(self, now_ns: int | None = None, read_ns: int | None = None,
              behind: Collection[str] = ()) -> list[dict[str, Any]]:
        """Summaries open longer than their max age at ``now_ns`` (default: each by its
        input's clock, see above). ``read_ns``, the wall clock now (the daemon's), moves
        the clock of a quiet input on by the time since its latest line was read: an
        input that stopped logging still ages what it left open. Inputs in ``behind``
        (as ``input_of`` names them: not read to their end) are not quiet: their news
        is waiting to be read."""
        out: list[dict[str, Any]] = []
        if now_ns is not None:
            def at_now(entry: dict[str, Any]) -> int:
                return now_ns
            self.qmail.flush(at_now, out)
            self.sessions.flush(at_now, out)
            self.sessions.prune_links(now_ns, now_ns)
            self.postfix.flush(at_now, out)
            return self._hold(out, {"s": now_ns})
        clocks = self.clocks
        if read_ns is not None:
            read = self.clock_read
            clocks = {k: t + max(0, read_ns - read[k])
                      if k in read and k.partition("\x00")[2] not in behind
                      else t for k, t in clocks.items()}
        send = [t for k, t in clocks.items() if k[0] == "q"]
        smtpd = [t for k, t in clocks.items() if k[0] == "s"]
        # a session's qp waits for qmail-send's info msg, a mail's for the reply in
        # every session input, the one furthest behind too
        self.sessions.prune_links(max(send) if send else None, min(smtpd) if smtpd else None)
        self.qmail.flush(_clock(clocks, "q"), out)
        self.sessions.flush(_clock(clocks, "s"), out)
        self.postfix.flush(_clock(clocks, "p"), out)
        # every session input read to its end: a reply logged by now has been read, by
        # the wall clock (a mail's log time may be another clock's, ahead of theirs)
        read_all = read_ns is not None and not any(
            k[0] == "s" and k.partition("\x00")[2] in behind for k in clocks)
        return self._hold(out, clocks, read_ns=read_ns if read_all else None)

    def finish(self) -> list[dict[str, Any]]:
        """End of input: every open mail and session, flagged ``incomplete``."""
        out: list[dict[str, Any]] = []
        self.sessions.finish(out)
        self.qmail.finish(out)
        self.postfix.finish(out)
        return self._hold(out, self.clocks, release_all=True)

    @property
    def open_count(self) -> int:
        return len(self.qmail.mails) + len(self.sessions.sessions) + len(self.postfix.queue) \
            + len(self.postfix.sessions)

    def to_state(self) -> dict[str, Any]:
        """JSON-able open state (orjson/json can dump it), for the checkpoint."""
        return {"version": STATE_VERSION, "clocks": self.clocks, "clock_read": self.clock_read,
                "read_to": self.read_to,
                "qmail": self.qmail.to_state(),
                "sessions": self.sessions.to_state(), "postfix": self.postfix.to_state(),
                "held": self.held}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None,
                   opts: CorrelatorOptions | None = None) -> Correlator:
        c = cls(opts)
        if not state or state.get("version") != STATE_VERSION:
            return c
        # (an older state's "last_ns", the largest time of any input, is not taken:
        # one wild stamp made it hours ahead for good)
        c.clocks = {str(k): int(v) for k, v in dict(state.get("clocks", {})).items()}
        c.clock_read = {str(k): int(v) for k, v in dict(state.get("clock_read", {})).items()
                        if str(k) in c.clocks}
        read_to = state.get("read_to")
        if isinstance(read_to, dict):
            c.read_to = {k: v for k, v in read_to.items() if isinstance(k, str) and type(v) is int}
        c.qmail.load_state(state.get("qmail", {}))
        c.sessions.load_state(state.get("sessions", {}))
        c.postfix.load_state(state.get("postfix", {}))
        held = state.get("held")
        if isinstance(held, list):
            c.held = [[h[0], h[1], h[2] if len(h) > 2 and type(h[2]) is int else None]
                      for h in held if isinstance(h, list) and len(h) in (2, 3)
                      and type(h[0]) is int and isinstance(h[1], dict) and type(h[1].get("qp")) is int]
            for h in c.held:
                c.held_qp.setdefault(h[1]["qp"], []).append(h)
            c.held_floor = min((h[0] for h in c.held), default=_NEVER)
        return c


def _clock(clocks: dict[str, int], kind: str) -> Clock:
    """An open entry's current time: its input's clock for this tracker, or (its input
    gone quiet since a restart, say) the tracker's latest clock."""
    own = [t for k, t in clocks.items() if k[0] == kind]
    latest = max(own) if own else None

    def now_of(entry: dict[str, Any]) -> int | None:
        return clocks.get(clock_key(kind, entry["origin"].get("source")), latest)
    return now_of
