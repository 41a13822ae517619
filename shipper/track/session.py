"""SMTP/POP sessions: tcpserver/sslserver → rblsmtpd → qmail-smtpd or recordio → end;
qpsmtpd's (forkserver's "Accepted connection" → commands, replies → "cleaning up after").
One ``smtp_session`` summary per connection. Pure, no I/O.

Key: (host, pid). tcpserver's child pid is the pid recordio, rblsmtpd and s/qmail's
qmail-smtpd log (formats.md §5, §13.6), so one key serves a tcpserver session.
sslserver differs (formats.md §6, fehcom's caveat): the ``pid``/``ok`` lines carry
one pid, ``ssl|tls N accept`` and qmail-smtpd another (N), and ``ended by P`` names
the *parent* (the sample shows P = N − 1). Best-effort rules, in this order:
1. ``ssl N accept`` with no open session N: alias N to the open sslserver session of
   the same host that has no TLS yet and whose pid is nearest N (|Δ| ≤ 64; of two
   as near, the higher).
2. any line whose pid is an alias resolves to its session.
3. ``ended by P`` closes the session known as P + 1, else P, else the open
   sslserver session nearest above P (≤ 8).
A line that matches nothing opens a session of its own (flagged ``partial``).

Linking to the queue: the ``250 ok <time> qp N`` reply (recordio) names the
qmail-queue pid that qmail-send logs in ``info msg … qp N``, within ``qp_link_s`` of it
(qp is a pid: the same number names another message once pids wrap). s/qmail logs no qp;
its ``Accept::RCPT`` decision (F: sender) is linked to the next ``info msg`` with the
same sender on the same host within ``sender_link_s`` (link ``"sender"``, a heuristic);
sessions with the same sender at once (a bulk sender's parallel connections) wait in
line, the first to accept a recipient taking the first such message.
A mail record then carries ``session`` (a small sub-dict, see ``session_ref``) and the
session record lists its ``mails``. A session that ends with its DATA unanswered is
kept open (``ended``) for ``end_grace_s``: recordio logs the verdict, its qp, after
the end, and the mail may be out already; it goes out complete, at its end.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipper.track import (
    F_INCOMPLETE,
    F_PARTIAL,
    NS,
    add_event_id,
    gap_fields,
    input_of,
    iso,
    origin,
    seconds,
    summary,
)

_ADDR_RE = re.compile(r"<([^>]*)>")
_S6_SERVERS = frozenset({"s6-tcpserverd", "s6-tcpserver4d", "s6-tcpserver6d", "s6-tcpserver-access"})
_SERVERS = frozenset({"tcpserver", "sslserver", "tcpsvd", "sslsvd"}) | _S6_SERVERS
MAX_DECISIONS = 100
MAX_QPS = 100  # qps listed per session, as decisions: more are counted (qps_dropped)
MAX_PENDING = 100  # recordio client lines awaiting their reply (a PIPELINING group)
# Links kept per qp: a pid, so a number names another message once pids wrap (32768 by
# default on older systems: every few thousand mails), and while one log is read far
# behind the other several of them wait at once
PER_QP = 4
MAX_JUST_ENDED = 1000  # sessions ended within end_grace_s, kept for their late lines
# an sslserver's pids of one connection: "ssl N accept" near the "pid P" line's P (rule 1),
# "ended by P" just below it (rule 3)
TLS_PID_SPAN = 64
END_PID_SPAN = 8


@dataclass(slots=True)
class SessionOptions:
    max_open: int = 20_000  # open sessions kept; beyond, the oldest is emitted incomplete
    max_age_s: float = 3600.0  # a session with no line for this long is emitted incomplete
    show_auth_user: bool = False  # AUTH user names are PII: only a flag unless configured
    sender_link_s: float = 300.0  # s/qmail sender → info msg link window
    # qmail-send logs ``info msg`` within seconds of qmail-queue's hand-off (the reply
    # ``250 ok … qp N`` comes right after); minutes allow for a busy todo queue
    qp_link_s: float = 300.0
    # A denied child exits at once and the server logs its ``end``: a denied session
    # waits that long for it, then is emitted complete (s6-tcpserverd below -v2 logs none)
    deny_end_s: float = 60.0
    # recordio's copier outlives the program it runs: with ucspi-tcp a session's last
    # replies (its ``250 ok … qp N`` too) were logged ms after ``tcpserver: end``. Its
    # recordio lines that come this long (log time) after its end are still its own.
    end_grace_s: float = 2.0
    # qp links (a session's reply, a mail's info msg) waiting for the other log, and
    # s/qmail senders waiting for their mail: an input read far behind the other (one
    # caught up from a backlog) leaves one waiting per mail in between
    link_cap: int = 100_000


class SessionTracker:
    """Feed session records in log order; get ``smtp_session`` summaries back."""

    __slots__ = ("opts", "sessions", "aliases", "qp_sessions", "qp_mails", "senders", "attach",
                 "just_ended", "ending", "_ending_floor")

    def __init__(self, opts: SessionOptions | None = None, attach: Any = None) -> None:
        self.opts = opts or SessionOptions()
        # (OrderedDicts where the oldest goes at a cap: a dict's next(iter(d)) walks over
        # the slots its deleted entries left, O(deletions) per eviction at the cap)
        # "host\0pid" → open session (the pid its key names is its conn_pid)
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.aliases: dict[str, str] = {}  # "host\0pid" (sslserver's other pids) → session key
        # "host\0qp" → [[time_ns, session ref], …]; → [[time_ns, mail ref], …]
        self.qp_sessions: OrderedDict[str, list[Any]] = OrderedDict()
        self.qp_mails: OrderedDict[str, list[Any]] = OrderedDict()
        # "host\0sender" → [[time_ns, session ref], …]
        self.senders: OrderedDict[str, list[Any]] = OrderedDict()
        # callable(host, qp, session_ref, time_ns, window_ns) -> the session ref whose
        # sender guess the qp link replaced ({}: none; None: no mail): link an open mail
        self.attach = attach
        # "host\0pid" → [end time, the session emitted at it] (see end_grace_s; not saved)
        self.just_ended: OrderedDict[str, list[Any]] = OrderedDict()
        # "host\0pid" → [end time, input] of a session ended awaiting its DATA verdict:
        # kept open (its "ended") for end_grace_s (see _end); rebuilt from the sessions
        self.ending: dict[str, list[Any]] = {}
        # no held session ended before this (log time): lines earlier than its grace
        # need not look at them (one walk of them a line, with bots dropping mid-DATA)
        self._ending_floor = -(1 << 62)

    # -- state ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"sessions": list(self.sessions.items()), "aliases": self.aliases,
                "qp_sessions": list(self.qp_sessions.items()),
                "qp_mails": list(self.qp_mails.items()), "senders": list(self.senders.items())}

    def load_state(self, state: dict[str, Any]) -> None:
        self.sessions = OrderedDict(state.get("sessions", []))
        self.aliases = dict(state.get("aliases", {}))
        # a link saved without its time (older state) cannot be judged: dropped; one
        # [time_ns, ref] per qp (older state): a list of one
        self.qp_sessions = OrderedDict((k, v if isinstance(v[0], list) else [v])
                                       for k, v in state.get("qp_sessions", [])
                                       if isinstance(v, list) and v)
        self.qp_mails = OrderedDict((k, v if isinstance(v[0], list) else [v])
                                    for k, v in state.get("qp_mails", []) if isinstance(v, list) and v)
        # an older state kept one [time_ns, ref] per sender: a line of one
        self.senders = OrderedDict((k, [v] if len(v) == 2 and isinstance(v[1], dict) else v)
                                   for k, v in state.get("senders", []))
        self.ending = {k: [s["ended"][0], input_of(s["origin"].get("source"))]
                       for k, s in self.sessions.items() if s.get("ended")}
        self._ending_floor = -(1 << 62)  # looked at again by the first line's _end_held

    # -- linking with qmail-send ---------------------------------------------------------
    def link_mail(self, host: str, qp: int, mail_from: str | None, time_ns: int | None,
                  mail_ref: dict[str, Any]) -> dict[str, Any] | None:
        """qmail-send saw ``info msg … qp`` : the session that queued it, if known."""
        key = f"{host}\x00{qp}"
        # a reply names one message: the link it made is taken, so a later message
        # with the same qp (pids wrap within minutes on a busy host) is not linked to it
        entry = self._qp_take(self.qp_sessions, key, time_ns)
        ref = entry[1] if entry is not None else None
        if ref is None:  # its reply is still to come
            _put(self.qp_mails, key, [time_ns, mail_ref], self.opts.link_cap)
        if ref is None and mail_from is not None:
            ref = self._sender_session(f"{host}\x00{mail_from.lower()}", time_ns)
        if ref is None:
            return None
        s = self.sessions.get(ref.get("key", ""))
        if s is not None:
            mails = s.setdefault("mails", [])
            if len(mails) < MAX_DECISIONS and mail_ref not in mails:
                mails.append(mail_ref)
        return {k: v for k, v in ref.items() if k != "key"}

    def _sender_session(self, skey: str, time_ns: int | None) -> dict[str, Any] | None:
        """The first session waiting with this sender that accepted a recipient within
        ``sender_link_s`` before ``time_ns``; taken out of the line."""
        cands = self.senders.get(skey)
        if not cands:
            return None
        window = self.opts.sender_link_s * NS
        while cands and time_ns is not None and cands[0][0] is not None \
                and time_ns - cands[0][0] > window:
            del cands[0]  # too old for this message, so for any later one
        ref = None
        for i, (t, _) in enumerate(cands):
            if time_ns is None or t is None or 0 <= time_ns - t <= window:
                ref = dict(cands.pop(i)[1], link="sender")
                break
        if not cands:
            del self.senders[skey]
        return ref

    # -- feeding -------------------------------------------------------------------------
    def feed(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        event = rec.get("event")
        fn = _HANDLERS.get(event)  # type: ignore[arg-type]
        if fn is not None:
            if self.ending:
                self._end_held(rec, out)
            if (self.just_ended and (event == "io_server" or event == "io_client")
                    and self._after_its_end(rec)):
                return
            fn(self, rec, out)
            if self.ending and (event == "io_server" or event == "qpsmtpd_reply"):
                key, s = self._find(rec.get("host") or "", rec.get("conn_pid", rec.get("pid")))
                if s is not None and s.get("ended") and not _awaits_verdict(s):
                    self._release(key, out)  # the verdict it was held for came

    def _end_held(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """Emit the sessions held for their verdict (see _end) whose grace a line of
        their input is past: it will not come."""
        t = rec.get("time_unix_ns")
        grace = int(self.opts.end_grace_s * NS)
        if t is None or t - grace <= self._ending_floor:
            return  # no held session's grace is past at this time: a compare a line
        where = input_of(rec.get("source"))
        floor = None
        for key, (end, inp) in list(self.ending.items()):
            if inp == where and (end is None or t - end > grace):
                self._release(key, out)
            elif end is not None and (floor is None or end < floor):
                floor = end  # (one of another input, or within its grace: kept)
        self._ending_floor = -(1 << 62) if any(e is None for e, _ in self.ending.values()) \
            else (floor if floor is not None else 1 << 62)

    def _release(self, key: str, out: list[dict[str, Any]]) -> None:
        """A held session out, complete, at its end; its later lines still its own."""
        s = self.sessions.get(key)
        if s is None:
            self.ending.pop(key, None)
            return
        end = s["ended"][0]
        self._emit(key, s, None, None, out, None)
        if end is not None:
            self.just_ended[key] = [end, s]
            while len(self.just_ended) > MAX_JUST_ENDED:
                self.just_ended.popitem(last=False)

    def _after_its_end(self, rec: dict[str, Any]) -> bool:
        """Whether ``rec`` is a recordio line its session's end came before (see
        end_grace_s): a reply's qp still links that session to its mail. Such lines
        opened a second, partial session for the same connection, and the mail was
        linked to it, without the client (a black-box review, with real ucspi-tcp)."""
        host = rec.get("host") or ""
        key = f"{host}\x00{rec.get('conn_pid', rec.get('pid'))}"
        ended = self.just_ended.get(key)
        if ended is None:
            return False
        t = rec.get("time_unix_ns")
        if t is None or ended[0] is None or not 0 <= t - ended[0] <= self.opts.end_grace_s * NS:
            del self.just_ended[key]
            return False
        qp = rec.get("qp")
        if qp is not None and rec.get("event") == "io_server":
            # on a copy: the session's record is out (its lists are the record's), and
            # whether it shows the qp must not hang on where a batch ended
            s = ended[1]
            self._link_qp({**s, "qps": list(s["qps"]), "mails": list(s.get("mails", ()))}, host, qp, t)
        return True

    def flush(self, clock: Callable[[dict[str, Any]], int | None], out: list[dict[str, Any]]) -> None:
        """Emit sessions idle past their max age at ``clock(session)``."""
        for key in list(self.sessions):
            s = self.sessions[key]
            now = clock(s)
            if now is None:
                continue
            if s.get("ended") and (s["ended"][0] is None
                                   or now - s["ended"][0] > int(self.opts.end_grace_s * NS)):
                self._release(key, out)
                continue
            age = self.opts.deny_end_s if s.get("denied") else self.opts.max_age_s
            if (s["last_ns"] or 0) < now - int(age * NS):
                self._emit(key, s, s["last_ns"], None, out, "max_age")

    def prune_links(self, send_ns: int | None, sessions_ns: int | None) -> None:
        """Drop qp links too old to be made: a session's once qmail-send's log is past
        ``qp_link_s`` after it (``send_ns``), a mail's once the sessions' is."""
        for links, now in ((self.qp_sessions, send_ns), (self.qp_mails, sessions_ns)):
            if now is None:
                continue
            limit = now - int(self.opts.qp_link_s * NS)
            while links:  # oldest first (by their latest link)
                k = next(iter(links))
                t = links[k][-1][0]
                if t is not None and t >= limit:
                    break
                del links[k]
        if send_ns is not None:
            # a sender's line of sessions is taken from only by a mail whose info msg is
            # within sender_link_s: one that queued its mail by qp (recordio's 250 ok …
            # qp) stayed in it to link_cap, ~1 KB a sender (200 MB on 3M corpus lines)
            limit = send_ns - int(self.opts.sender_link_s * NS)
            while self.senders:  # oldest first (by their latest session)
                k = next(iter(self.senders))
                cands = self.senders[k]
                t = cands[-1][0] if cands else None
                if t is not None and t >= limit:
                    break
                del self.senders[k]

    def finish(self, out: list[dict[str, Any]]) -> None:
        for key in list(self.sessions):
            s = self.sessions[key]
            self._emit(key, s, s["last_ns"], None, out, "open_at_end")

    # -- lookup --------------------------------------------------------------------------
    def _find(self, host: str, pid: int | None) -> tuple[str, dict[str, Any] | None]:
        key = f"{host}\x00{pid}"
        s = self.sessions.get(key)
        if s is None:
            alias = self.aliases.get(key)
            if alias is not None:
                s = self.sessions.get(alias)
                if s is not None:
                    return alias, s
        return key, s

    def _open(self, rec: dict[str, Any], pid: int | None, out: list[dict[str, Any]],
              partial: bool) -> tuple[str, dict[str, Any]]:
        host = rec.get("host") or ""
        key = f"{host}\x00{pid}"
        t = rec.get("time_unix_ns")
        s: dict[str, Any] = {"key": key, "origin": origin(rec), "first_ns": t, "last_ns": t,
                             "server": None, "conn_pid": pid, "pids": [pid],
                             "partial": partial, "decisions": [], "qps": []}
        self.just_ended.pop(key, None)  # its pid serves another connection now
        self.aliases.pop(key, None)
        self.sessions[key] = s
        if len(self.sessions) > self.opts.max_open:
            old = next(iter(self.sessions))
            self._emit(old, self.sessions[old], self.sessions[old]["last_ns"], None, out, "evicted")
        return key, s

    def _get(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        pid = rec.get("conn_pid", rec.get("pid"))
        key, s = self._find(rec.get("host") or "", pid)
        if s is None:
            key, s = self._open(rec, pid, out, partial=True)
        self._touch(s, rec)
        return key, s

    def _touch(self, s: dict[str, Any], rec: dict[str, Any]) -> None:
        t = rec.get("time_unix_ns")
        if t is not None:
            s["last_ns"] = t
        add_event_id(s, rec)
        prog = rec.get("program")
        if s["server"] is None and prog in _SERVERS:
            s["server"] = prog

    # -- handlers ------------------------------------------------------------------------
    def _tcp_pid(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        pid = rec.get("conn_pid")
        host = rec.get("host") or ""
        key = f"{host}\x00{pid}"
        old = self.sessions.get(key)
        if old is not None:
            self._emit(key, old, old["last_ns"], None, out, "pid_reused")
        key, s = self._open(rec, pid, out, partial=False)
        self._touch(s, rec)
        if "remote_ip" in rec:
            s["remote_ip"] = rec["remote_ip"]

    def _tcp_ok(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        prog = rec.get("program")
        if prog in _S6_SERVERS:
            # s6-tcpserverd's "accept" (verbosity 2) starts the connection, as tcpserver's
            # "pid N from IP"; s6-tcpserver-access's allow or deny, its first line otherwise
            host, pid = rec.get("host") or "", rec.get("conn_pid")
            if prog != "s6-tcpserver-access" and rec.get("event") == "tcp_ok":
                # the child's "allow" may be logged before its parent's "accept": the
                # same connection (same IP, moments apart), not a pid used again
                old = self._find(host, pid)[1]
                if not (old is not None and old["server"] == "s6-tcpserver-access"
                        and old.get("remote_ip") in (None, rec.get("remote_ip"))
                        and _within(old.get("last_ns"), rec.get("time_unix_ns"), 5 * NS)):
                    self._tcp_pid(rec, out)
                else:
                    old["server"] = prog
                    self._touch(old, rec)
            elif self._find(host, pid)[1] is None:
                self._open(rec, pid, out, partial=False)
                self._touch(self.sessions[f"{host}\x00{pid}"], rec)
            else:
                self._get(rec, out)
            key, s = self._find(host, pid)
            assert s is not None
        else:
            key, s = self._get(rec, out)
        for f in ("local_host", "local_ip", "local_port", "remote_host", "remote_ip",
                  "remote_info", "remote_port"):
            if f in rec:
                s[f] = rec[f]
        if rec.get("event") == "tcp_deny":
            s["denied"] = True
            if "reason" in rec:
                s["deny_reason"] = rec["reason"]
            if rec.get("conn_pid") is None:  # refused before a fork (s6 per-IP limit): no end
                self._emit(key, s, rec.get("time_unix_ns"), rec.get("time_source"), out, None)
            # else the denied child's exit is logged (tcpserver: "end N status 25600"):
            # the session stays open for it, or that end would open a second one

    def _tls(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        host = rec.get("host") or ""
        pid = rec.get("conn_pid")
        key, s = self._find(host, pid)
        if s is None and type(pid) is int:
            # the nearest pid, looked up by key: a look at every open session cost
            # O(open sessions) a line, and fehcom's TLS pids match no session by
            # themselves. Of two as near, the one above (the sample: ssl 30554 for pid 30556).
            for p in (q for d in range(1, TLS_PID_SPAN + 1) for q in (pid + d, pid - d)):
                c = self.sessions.get(f"{host}\x00{p}")
                if c is not None and c["server"] == "sslserver" and "tls_pid" not in c:
                    key, s = f"{host}\x00{p}", c
                    self.aliases[f"{host}\x00{pid}"] = key
                    s["pids"].append(pid)
                    break
        if s is None:
            key, s = self._open(rec, pid, out, partial=True)
        self._touch(s, rec)
        s["tls_pid"] = pid
        s["tls"] = rec.get("tls") or "TLS"

    def _end(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        host = rec.get("host") or ""
        pid = rec.get("conn_pid")
        s = None
        key = ""
        if rec.get("parent") and pid is not None:
            for p in (pid + 1, pid):
                key, s = self._find(host, p)
                if s is not None:
                    break
            if s is None and type(pid) is int:
                for p in range(pid + 1, pid + END_PID_SPAN + 1):  # the nearest above (by key)
                    c = self.sessions.get(f"{host}\x00{p}")
                    if c is not None and c["server"] == "sslserver":
                        key, s = f"{host}\x00{p}", c
                        break
        else:
            key, s = self._find(host, pid)
        if s is None:
            key, s = self._open(rec, pid, out, partial=True)
        self._touch(s, rec)
        for f in ("wait_status", "exit_code", "signal"):
            if f in rec:
                s[f] = rec[f]
        t = rec.get("time_unix_ns")
        if t is not None and _awaits_verdict(s):
            # its DATA verdict not logged yet: recordio's copier outlives qmail-smtpd, and
            # the "250 ok … qp N" logged after the end (end_grace_s) is the one line naming
            # its mail, which may be out already (a fast local delivery): kept open for
            # it, so the session names that mail, as when the reply comes before the end
            s["ended"] = [t, rec.get("time_source")]
            self.ending[key] = [t, input_of(rec.get("source"))]
            self._ending_floor = min(self._ending_floor, t)
            return
        self._emit(key, s, rec.get("time_unix_ns"), rec.get("time_source"), out, None)
        if rec.get("time_unix_ns") is not None:
            self.just_ended[key] = [rec["time_unix_ns"], s]
            while len(self.just_ended) > MAX_JUST_ENDED:
                self.just_ended.popitem(last=False)

    def _rbl(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        key, s = self._get(rec, out)
        ev = rec.get("event")
        if "remote_ip" in rec and "remote_ip" not in s:
            s["remote_ip"] = rec["remote_ip"]
        if ev == "rbl_greetdelay":
            s["greetdelay"] = rec.get("delay")
            return
        d = {"source": "rblsmtpd", "text": rec.get("text")}
        if ev == "rbl_block":
            code = rec.get("smtp_code")
            s["rbl_blocked"] = True
            d.update(action="Deferred" if code == 451 else "Reject", check="RBL",
                     smtp_code=code)
            if "rbl_list" in rec:
                d["rbl_list"] = rec["rbl_list"]
        else:
            d.update(action="Info", check="RBL")
        self._decide(s, rec, d)

    def _greylist(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """jgreylist runs in tcpserver's child before qmail-smtpd (its [PID] is the
        connection's): its verdict is the session's. What it answers, from jgreylist.c:
        GREY a 450 to every command, DENY a 553, HANGUP a 421 after too many RCPTs; OK
        hands the client to qmail-smtpd."""
        if rec.get("conn_pid") is None:  # "jgreylist: ..." (JGREYLIST_LOG_PID=0): no session to name
            return
        key, s = self._get(rec, out)
        if "remote_ip" in rec and "remote_ip" not in s:
            s["remote_ip"] = rec["remote_ip"]
        action = rec.get("action")
        d = {"source": "jgreylist", "check": "greylist", "reason": rec.get("reason")}
        if action == "GREY":
            s["greylisted"] = True
            d.update(action="Deferred", smtp_code=450)
        elif action == "DENY":
            d.update(action="Reject", smtp_code=553)
        elif action == "HANGUP":
            d.update(action="Deferred", smtp_code=421)
        else:
            d.update(action="Info")
        self._decide(s, rec, d)

    def _decision(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        key, s = self._get(rec, out)
        ev = rec.get("event")
        if s["server"] is None:
            s["server"] = rec.get("program")
        for f in ("proto", "remote_ip", "remote_host", "helo"):
            if rec.get(f) and f not in s:
                s[f] = rec[f]
        d: dict[str, Any] = {"source": rec.get("program")}
        if ev == "smtp_decision":
            action = rec.get("action")
            check = rec.get("check")
            d.update(action=action, check=check, condition=rec.get("condition"))
        elif ev == "smtp_accept":
            action, check = "Accept", "RCPT"
            d.update(action=action, check=check)
            if rec.get("tls") and rec.get("tls") != "No":
                s["tls"] = rec["tls"]
        elif ev == "smtp_reject":
            action, check = "Reject", rec.get("reason")
            d.update(action=action, check=check)
        else:
            action, check = "Info", None
            d.update(action=action)
        for f in ("mail_from", "rcpt_to", "info", "text", "reason"):
            if f in rec and rec[f] not in (None, ""):
                d[f] = rec[f]
        if check == "AUTH":
            if action == "Accept":
                s["authenticated"] = True
                s["auth_method"] = rec.get("condition")
                if self.opts.show_auth_user and rec.get("auth_user"):
                    s["auth_user"] = rec["auth_user"]
            d.pop("info", None)  # the quoted user name: PII
        if rec.get("mail_from") is not None:
            s["mail_from"] = rec["mail_from"]
        if action == "Accept" and check in ("RCPT", "SPF") and rec.get("rcpt_to"):
            _add(s, "accepted_rcpts", rec["rcpt_to"])
            mf = rec.get("mail_from")
            if mf is not None:
                self._wait_for_mail(f"{rec.get('host') or ''}\x00{mf.lower()}", s,
                                    rec.get("time_unix_ns"))
        elif action in ("Reject", "Deferred") and check == "DATA" and rec.get("mail_from") is not None:
            # its message refused (a virus, spam, size): it queued nothing, so the next
            # message of that sender, from another connection, is not this session's
            self._leave_line(f"{rec.get('host') or ''}\x00{rec['mail_from'].lower()}", s)
        self._decide(s, rec, d)

    def _leave_line(self, skey: str, s: dict[str, Any]) -> None:
        cands = self.senders.get(skey)
        if cands is None:
            return
        cands[:] = [c for c in cands if c[1]["key"] != s["key"]]
        if not cands:
            del self.senders[skey]

    def _wait_for_mail(self, skey: str, s: dict[str, Any], t: int | None) -> None:
        """Put the session in its sender's line (once: later recipients update its place)."""
        s["sender_line"] = skey
        cands = self.senders.get(skey)
        if cands is None:
            cands = self.senders[skey] = []
        self.senders.move_to_end(skey)  # the most recent sender last: the oldest go first
        ref = self._ref(s, "sender")
        for c in cands:
            if c[1]["key"] == s["key"]:
                c[0], c[1] = t, ref
                break
        else:
            cands.append([t, ref])
            if len(cands) > MAX_DECISIONS:
                del cands[0]
        while len(self.senders) > self.opts.link_cap:
            self.senders.popitem(last=False)

    def _queued(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """A patched qmail-smtpd's "message queued" line (qlogreceived, qmail-toaster's
        ``mail recv``): its qp links the session to the mail, as recordio's ``250 ok … qp``."""
        key, s = self._get(rec, out)
        if s["server"] is None:
            s["server"] = rec.get("program")
        for f in ("remote_ip", "remote_host", "helo"):
            if rec.get(f) and f not in s:
                s[f] = rec[f]
        if rec.get("mail_from") is not None:
            s["mail_from"] = rec["mail_from"]
        if rec.get("tls") and "tls" not in s:
            s["tls"] = rec["tls"]
        qp = rec.get("qp")
        if type(qp) is int:
            self._link_qp(s, rec.get("host") or "", qp, rec.get("time_unix_ns"))

    def _qp_take(self, links: dict[str, list[Any]], key: str, t: int | None) -> list[Any] | None:
        """Of a qp's links [time_ns, ref], the one nearest ``t`` if close enough to be
        the same message (a qp's reply and its ``info msg``), taken out; else None."""
        entries = links.get(key)
        if not entries:
            return None
        w = self.opts.qp_link_s * NS
        best, best_d = -1, w + 1
        for i, e in enumerate(entries):
            d = 0 if e[0] is None or t is None else abs(t - e[0])
            if d < best_d:
                best, best_d = i, d
        if best < 0:
            return None
        e = entries.pop(best)
        if not entries:
            del links[key]
        return e

    def _link_qp(self, s: dict[str, Any], host: str, qp: int, t: int | None) -> None:
        if qp in s["qps"]:
            # the message named again (the qlog patch's qlogreceived and recordio's reply
            # both give its qp): listed and linked once, or the second link would wait
            # for, and take, a later message with that qp
            return
        if len(s["qps"]) < MAX_QPS:
            s["qps"].append(qp)
        else:  # (one connection may queue any number of messages)
            s["qps_dropped"] = s.get("qps_dropped", 0) + 1
        ref = self._ref(s, "qp")
        line = s.pop("sender_line", None)
        if line is not None:
            # its message links by qp, not by sender: out of the sender's line (where
            # it waited sender_link_s, ~450 bytes a session: 9 MB of state rewritten
            # every save at 60 sessions/s; and another server's message of that sender
            # could have taken it). The line it joined: a pipelining client's next
            # MAIL FROM may be in before this reply
            self._leave_line(line, s)
        qkey = f"{host}\x00{qp}"
        m = self._qp_take(self.qp_mails, qkey, t)
        if m is not None:
            _add(s, "mails", m[1])
        else:  # its mail's info msg is still to come
            _put(self.qp_sessions, qkey, [t, ref], self.opts.link_cap)
        if self.attach is not None:
            guessed = self.attach(host, qp, {k: v for k, v in ref.items() if k != "key"}, t,
                                  int(self.opts.qp_link_s * NS))
            if guessed and m is not None:
                # (its session, taken from its sender's line by the guess, waits there
                # again for its own message, as for a forwarded copy)
                self.unlink_mail(guessed, m[1], m[0])

    def _unname(self, event_id: str | None, mail_ref: dict[str, Any]) -> dict[str, Any] | None:
        """The open session a sender guess gave ``mail_ref`` to lists it no more (its qp
        named another session, or it is a forwarded copy; rare, so a walk of the open
        sessions); that session, if still open."""
        for s in self.sessions.values():
            eid = s["origin"].get("event_id")
            if eid and f"{eid}s" == event_id:
                mails = s.get("mails")
                if mails and mail_ref in mails:
                    mails.remove(mail_ref)
                return s
        return None

    def unlink_mail(self, ref: dict[str, Any], mail_ref: dict[str, Any], time_ns: int | None) -> None:
        """A mail guessed to a session at its ``info msg`` is not its (a copy a local
        delivery forwarded: the ``did_0+1+0/qp_N/`` came after; or another session's
        reply named its qp): the session lists it no more and, taken from its sender's
        line by it, waits there again, first."""
        s = self._unname(ref.get("event_id"), mail_ref)
        skey = s.get("sender_line") if s is not None else None
        if s is None or skey is None or ref.get("link") != "sender":
            return
        cands = self.senders.get(skey)
        if cands is None:
            cands = self.senders[skey] = []
        if not any(c[1]["key"] == s["key"] for c in cands):
            cands.insert(0, [time_ns, self._ref(s, "sender")])

    def _io_client(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        key, s = self._get(rec, out)
        starts = not s.pop("client_cont", False)  # a line's first piece (recordio "+")
        if rec.get("continued"):
            s["client_cont"] = True
        if not starts:
            return
        verb = rec.get("verb")
        text = rec.get("text") or ""
        if s.get("in_data"):
            if text == "." and not rec.get("continued"):
                # end of the message: the next reply is the DATA verdict, and what a
                # pipelining client sends after the dot (QUIT) is commands again
                s["in_data"] = False
                self._pend(s, "DATA", None)
            return  # message body: not commands
        arg = None
        if verb is None:
            if s.get("in_auth"):  # the base64 answer to a 334 challenge
                self._pend(s, "AUTH", None)
            else:
                self._pend(s, None, None)  # still answered by one reply
            return
        s["commands"] = s.get("commands", 0) + 1
        if verb in ("HELO", "EHLO"):
            s["helo"] = text[5:].strip()
            s["proto"] = "ESMTP" if verb == "EHLO" else "SMTP"
        elif verb == "MAIL":
            m = _ADDR_RE.search(text)
            s["mail_from"] = m.group(1) if m else text[10:].strip()
        elif verb == "RCPT":
            m = _ADDR_RE.search(text)
            arg = m.group(1) if m else text[8:].strip()
        elif verb in ("STARTTLS", "STLS"):
            s.setdefault("tls", "STARTTLS")
        elif verb == "AUTH":
            parts = text.split()
            if len(parts) > 1:
                s["auth_method"] = parts[1].lower()
        self._pend(s, verb, arg)

    def _pend(self, s: dict[str, Any], verb: str | None, arg: str | None) -> None:
        """A client line that one reply will answer: in order (PIPELINING sends many)."""
        pending = s.setdefault("pending", [])
        pending.append([verb, arg])
        if len(pending) > MAX_PENDING:  # replies not logged: keep the latest
            del pending[0]

    def _answered(self, s: dict[str, Any], code: int | None, cls: str | None) -> list[Any]:
        """The pending client line a final reply answers: [verb, arg] or [None, None]."""
        pending = s.get("pending") or []
        if cls in ("2xx", "3xx", "+OK"):
            s["positive_seen"] = True
        if not pending:
            return [None, None]
        if (code == 220 or cls == "+OK") and not s.get("greeted"):
            s["greeted"] = True
            if pending[0][0] not in ("STARTTLS", "STLS"):
                return [None, None]  # the greeting, after an early talker's lines
        if not s.get("positive_seen"):
            # only 4xx/5xx replies are logged (a multilog recipe keeping those): they
            # answer the latest command, the earlier ones' replies were not kept
            last = pending[-1]
            pending.clear()
            return last
        return pending.pop(0)

    def _io_server(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        key, s = self._get(rec, out)
        code = rec.get("smtp_code")
        cls = rec.get("reply_class")
        if cls is None or (code is not None and (rec.get("text") or "")[3:4] == "-"):
            return  # not a reply's last line (a "250-" line, POP3 listing data)
        verb, arg = self._answered(s, code, cls)
        if s.get("in_data"):  # the verdict on a message whose end dot was not seen
            s["in_data"] = False
            verb = "DATA"
        s["greeted"] = True
        s["in_auth"] = verb == "AUTH" and code == 334
        if code == 354:
            s["in_data"] = True
            return
        if s["in_auth"]:
            # a challenge (AUTH LOGIN's username/password prompts, CRAM-MD5's, PLAIN's
            # empty one): the client's next line, a bare base64 blob, is still AUTH
            return
        qp = rec.get("qp")
        if qp is not None:
            self._link_qp(s, rec.get("host") or "", qp, rec.get("time_unix_ns"))
            return
        if verb == "RCPT" and code is not None and 200 <= code < 300:
            if arg:
                _add(s, "accepted_rcpts", arg)
            return
        if verb == "AUTH" and code == 235:
            s["authenticated"] = True
            return
        if cls in ("4xx", "5xx", "-ERR"):
            d = {"source": rec.get("program") or "recordio", "action": "Deferred" if cls == "4xx" else "Reject",
                 "check": verb or "REPLY", "smtp_code": code, "text": rec.get("text")}
            if "dsn" in rec:
                d["dsn"] = rec["dsn"]
            if verb == "RCPT" and arg:
                d["rcpt_to"] = arg
            if s.get("mail_from") is not None:
                d["mail_from"] = s["mail_from"]
            self._decide(s, rec, d)

    # qpsmtpd: its session lines carry the pid of the process serving the connection
    # (forkserver's child, or tcpserver's child, whose "pid N from IP" opened it), so
    # its commands and replies are read as recordio's: the same SMTP seen from inside
    def _qp_accept(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """qpsmtpd-forkserver's "Accepted connection …": its child's first line, as
        tcpserver's "pid N from IP" (forkserver logs no tcpserver lines)."""
        self._tcp_pid({**rec, "conn_pid": rec.get("pid")}, out)
        s = self._find(rec.get("host") or "", rec.get("pid"))[1]
        assert s is not None
        s["server"] = "qpsmtpd"
        if rec.get("remote_host") not in (None, "", "Unknown"):
            s["remote_host"] = rec["remote_host"]

    def _qp_command(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        verb, text = rec.get("verb"), rec.get("text")
        self._io_client({**rec, "text": f"{verb} {text}" if text else verb}, out)

    def _qp_reply(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        if rec.get("continued"):  # "250-…": not a reply's last line
            self._get(rec, out)
            return
        self._io_server({**rec, "text": f"{rec.get('smtp_code')} {rec.get('text') or ''}"}, out)

    # -- internals -----------------------------------------------------------------------
    def _decide(self, s: dict[str, Any], rec: dict[str, Any], d: dict[str, Any]) -> None:
        d["time_unix_ns"] = rec.get("time_unix_ns")
        if len(s["decisions"]) < MAX_DECISIONS:
            s["decisions"].append(d)
        else:
            s["decisions_dropped"] = s.get("decisions_dropped", 0) + 1

    def _ref(self, s: dict[str, Any], link: str) -> dict[str, Any]:
        """What a mail record carries of the session that queued it."""
        eid = s["origin"].get("event_id")
        ref: dict[str, Any] = {"key": s["key"], "event_id": f"{eid}s" if eid else None,
                               "link": link, "conn_pid": s["conn_pid"], "server": s["server"]}
        for f in ("remote_ip", "remote_host", "remote_port", "tls", "proto", "helo",
                  "authenticated", "auth_user"):
            if f in s:
                ref[f] = s[f]
        return ref

    def _emit(self, key: str, s: dict[str, Any], end_ns: int | None, time_source: str | None,
              out: list[dict[str, Any]], incomplete: str | None) -> None:
        if s.get("denied"):
            incomplete = None  # the deny decided the session; its end only adds the exit status
        ended = s.pop("ended", None)
        if ended is not None:  # its end was seen: it was held only for a late verdict
            end_ns, time_source, incomplete = ended[0], ended[1], None
            self.ending.pop(key, None)
        self.sessions.pop(key, None)
        for p in s["pids"][1:]:
            self.aliases.pop(f"{key.split(chr(0), 1)[0]}\x00{p}", None)
        # (a mail whose info msg comes after its reply was linked to it then, in
        # link_mail; one still waiting in qp_mails awaits another reply with its qp)
        out.append(session_record(s, end_ns, time_source, incomplete))


def _awaits_verdict(s: dict[str, Any]) -> bool:
    """Whether the session's DATA (its message sent) has had no reply yet."""
    return bool(s.get("in_data")) or any(p[0] == "DATA" for p in s.get("pending") or ())


def _add(s: dict[str, Any], field: str, value: Any) -> None:
    lst = s.setdefault(field, [])
    if len(lst) < MAX_DECISIONS and value not in lst:
        lst.append(value)


def _put(d: OrderedDict[str, list[Any]], key: str, link: list[Any], cap: int) -> None:
    """Add a qp's link [time_ns, ref]: its key becomes the newest, its oldest link and
    the oldest keys go beyond their bounds."""
    links = d.get(key)
    if links is None:
        links = d[key] = []
    d.move_to_end(key)
    links.append(link)
    if len(links) > PER_QP:
        del links[0]
    while len(d) > cap:
        d.popitem(last=False)


_COPY = ("conn_pid", "server", "remote_ip", "remote_host", "remote_port", "remote_info",
         "local_ip", "local_host", "local_port", "tls", "proto", "helo", "mail_from",
         "authenticated", "auth_method", "auth_user", "greetdelay", "rbl_blocked", "denied",
         "deny_reason", "wait_status", "exit_code", "signal")


def session_record(s: dict[str, Any], end_ns: int | None, time_source: str | None,
                   incomplete: str | None) -> dict[str, Any]:
    """The ``smtp_session`` summary record (schema: docs/records.md)."""
    flags = []
    if incomplete:
        flags.append(F_INCOMPLETE)
    if s.get("partial"):
        flags.append(F_PARTIAL)
    f: dict[str, Any] = {}
    for k in _COPY:
        if k in s and s[k] is not None:
            f[k] = s[k]
    if len(s["pids"]) > 1:
        f["pids"] = s["pids"]
    f["start"] = iso(s["first_ns"])
    f["start_unix_ns"] = s["first_ns"]
    f["duration_s"] = seconds(s["first_ns"], end_ns)
    f["accepted_rcpts"] = s.get("accepted_rcpts", [])
    f["decisions"] = s["decisions"]
    if s.get("decisions_dropped"):
        f["decisions_dropped"] = s["decisions_dropped"]
    f["qps"] = s["qps"]
    if s.get("qps_dropped"):
        f["qps_dropped"] = s["qps_dropped"]
    f["mails"] = s.get("mails", [])
    f["protocol"] = _protocol(f)
    f["result"] = _result(s, f)
    if incomplete:
        f["incomplete_reason"] = incomplete
    f["event_ids"] = s.get("event_ids", [])
    text = (f"session {f.get('server') or 'smtp'} pid {s['conn_pid']} from "
            f"{f.get('remote_host') or ''}[{f.get('remote_ip') or '?'}]: {f['result']}"
            + (f", {len(f['qps']) + f.get('qps_dropped', 0)} queued" if f["qps"] else "")
            + (f" (incomplete: {incomplete})" if incomplete else ""))
    program = f.get("server") or "tcpserver"
    gap_fields(s, f, flags)
    return summary("smtp_session", program, "s", s["origin"], end_ns, time_source, f, text, flags)


def _within(a: int | None, b: int | None, span: int) -> bool:
    return a is not None and b is not None and abs(b - a) <= span


_POP3_PORTS, _IMAP_PORTS = frozenset((110, 995)), frozenset((143, 993))


def _protocol(f: dict[str, Any]) -> str:
    """What the connection served: tcpserver runs qmail-popup (POP3) as it runs
    qmail-smtpd, so a POP3 login is a "session" too; they were counted as SMTP (a
    black-box review). By the protocol logged (s/qmail's ``P:POP3S``), else the port."""
    proto = str(f.get("proto") or "").upper()
    if proto.startswith("POP") or f.get("local_port") in _POP3_PORTS:
        return "pop3"
    if proto.startswith("IMAP") or f.get("local_port") in _IMAP_PORTS:
        return "imap"
    return "smtp"


def _result(s: dict[str, Any], f: dict[str, Any]) -> str:
    if s.get("denied"):
        return "denied"
    if s.get("rbl_blocked"):
        return "blocked"
    if s["qps"] or s.get("mails"):
        return "accepted"
    if f["accepted_rcpts"]:
        # recipients accepted, and the message refused at DATA (too big, a virus, a
        # spam filter's 554) with none queued: a refused session, not an accepted one.
        # Not a 503 ("RCPT first"): no recipient of that transaction, so no message
        refused = any(d.get("check") == "DATA" and d.get("action") in ("Reject", "Deferred")
                      and d.get("smtp_code") != 503 for d in s["decisions"])
        return "rejected" if refused else "accepted"
    if s.get("greylisted"):
        return "greylisted"
    if any(d.get("action") in ("Reject", "Deferred") for d in s["decisions"]):
        return "rejected"
    return "no_mail"


_HANDLERS = {
    "tcp_pid": SessionTracker._tcp_pid,
    "tcp_ok": SessionTracker._tcp_ok,
    "tcp_deny": SessionTracker._tcp_ok,
    "tls_accept": SessionTracker._tls,
    "tcp_end": SessionTracker._end,
    "rbl_block": SessionTracker._rbl,
    "rbl_greetdelay": SessionTracker._rbl,
    "rbl_info": SessionTracker._rbl,
    "greylist": SessionTracker._greylist,
    "smtp_decision": SessionTracker._decision,
    "smtp_accept": SessionTracker._decision,
    "smtp_reject": SessionTracker._decision,
    "smtp_other": SessionTracker._decision,
    "smtp_queued": SessionTracker._queued,
    "io_client": SessionTracker._io_client,
    "io_server": SessionTracker._io_server,
    "qpsmtpd_accept": SessionTracker._qp_accept,
    "qpsmtpd_command": SessionTracker._qp_command,
    "qpsmtpd_reply": SessionTracker._qp_reply,
    "qpsmtpd_child_end": SessionTracker._end,
}
