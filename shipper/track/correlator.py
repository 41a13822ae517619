"""``Correlator``: raw records in, ``mail`` / ``smtp_session`` summary records out. Pure.

Routes each record by program: qmail-send → ``QmailTracker``; tcpserver, sslserver,
tcpsvd, rblsmtpd, recordio, qmail-smtpd, qmail-popup → ``SessionTracker``;
``postfix*`` and ``pmg-smtp-filter`` → ``PostfixTracker``. The qmail and session
trackers are wired together so a session's ``qp`` reaches the message it queued.

Feed records in log order (per input: the trackers tolerate interleaving of inputs
as long as each input is in order; the ``track`` CLI merges inputs by time).
``flush(now_ns)`` emits what has been open longer than its max age (log time);
``finish()`` emits everything still open, flagged ``incomplete`` (end of input).
``to_state()``/``from_state()`` carry open state across a restart of the shipper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shipper.track.postfix import PostfixOptions, PostfixTracker, is_postfix
from shipper.track.qmail import QmailOptions, QmailTracker
from shipper.track.session import SessionOptions, SessionTracker

STATE_VERSION = 1

_SESSION_PROGRAMS = frozenset({"tcpserver", "sslserver", "tcpsvd", "sslsvd", "rblsmtpd", "s6-tcpserverd",
                               "s6-tcpserver4d", "s6-tcpserver6d", "s6-tcpserver-access",
                               "recordio", "qmail-smtpd", "qmail-popup", "qmail-pop3d"})


@dataclass(slots=True)
class CorrelatorOptions:
    qmail: QmailOptions = field(default_factory=QmailOptions)
    session: SessionOptions = field(default_factory=SessionOptions)
    postfix: PostfixOptions = field(default_factory=PostfixOptions)
    # The daemon: skip lines fed already (same file, offset not past the last fed),
    # as after a corrupt checkpoint. Off for reading files once (track, stats), where
    # two inputs may share a file id (the same first 64 bytes).
    skip_reread: bool = False


_READ_TO_CAP = 4096  # files remembered (a multilog directory keeps tens to hundreds)


class Correlator:
    __slots__ = ("opts", "qmail", "sessions", "postfix", "last_ns", "read_to")

    def __init__(self, opts: CorrelatorOptions | None = None) -> None:
        self.opts = opts or CorrelatorOptions()
        self.sessions = SessionTracker(self.opts.session)
        self.qmail = QmailTracker(self.opts.qmail, session_lookup=self.sessions.link_mail)
        self.sessions.attach = self.qmail.attach_session
        self.postfix = PostfixTracker(self.opts.postfix)
        self.last_ns: int | None = None  # latest log time seen
        # file_id → offset of the last line fed: a line read again (a corrupt checkpoint,
        # a restart from an older one) is not fed twice, which would split its mail
        self.read_to: dict[str, int] = {}

    def feed(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A batch of raw records → the summaries completed by it (often none)."""
        out: list[dict[str, Any]] = []
        qmail, sessions, postfix = self.qmail.feed, self.sessions.feed, self.postfix.feed
        last = self.last_ns
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
            elif prog in _SESSION_PROGRAMS:
                sessions(rec, out)
            elif is_postfix(prog):
                postfix(rec, out)
            else:
                continue
            t = rec.get("time_unix_ns")
            if t is not None and (last is None or t > last):
                last = t
        self.last_ns = last
        return out

    def flush(self, now_ns: int | None = None) -> list[dict[str, Any]]:
        """Summaries open longer than their max age at ``now_ns`` (default: latest log time)."""
        now = now_ns if now_ns is not None else self.last_ns
        out: list[dict[str, Any]] = []
        if now is None:
            return out
        self.qmail.flush(now, out)
        self.sessions.flush(now, out)
        self.postfix.flush(now, out)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """End of input: every open mail and session, flagged ``incomplete``."""
        out: list[dict[str, Any]] = []
        self.sessions.finish(out)
        self.qmail.finish(out)
        self.postfix.finish(out)
        return out

    @property
    def open_count(self) -> int:
        return len(self.qmail.mails) + len(self.sessions.sessions) + len(self.postfix.queue) \
            + len(self.postfix.sessions)

    def to_state(self) -> dict[str, Any]:
        """JSON-able open state (orjson/json can dump it), for the checkpoint."""
        return {"version": STATE_VERSION, "last_ns": self.last_ns, "read_to": self.read_to,
                "qmail": self.qmail.to_state(),
                "sessions": self.sessions.to_state(), "postfix": self.postfix.to_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None,
                   opts: CorrelatorOptions | None = None) -> Correlator:
        c = cls(opts)
        if not state or state.get("version") != STATE_VERSION:
            return c
        c.last_ns = state.get("last_ns")
        read_to = state.get("read_to")
        if isinstance(read_to, dict):
            c.read_to = {k: v for k, v in read_to.items() if isinstance(k, str) and type(v) is int}
        c.qmail.load_state(state.get("qmail", {}))
        c.sessions.load_state(state.get("sessions", {}))
        c.postfix.load_state(state.get("postfix", {}))
        return c
