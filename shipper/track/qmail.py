"""qmail-send message lifecycle → one ``mail`` summary per message. Pure, no I/O.

Line order for one message (formats.md §4): ``new msg M`` → ``info msg M`` →
n × (``starting delivery D: msg M to CHAN RCPT`` … ``delivery D: RESULT: TEXT``) →
optional ``bounce msg M qp Q`` → ``end msg M``. Deliveries of many messages interleave.

Keys and the two id pitfalls:
* A message id is the inode of its queue file: unique while the message is in the
  queue, reused after ``end msg``. Open messages are keyed by (send log, queue, M); a
  ``new msg M`` while M is still open with deliveries means its end was lost: the
  old one is emitted ``incomplete`` (reason ``id_reused``) and a new one starts.
  Before any delivery it is the same message (qmail-send logs ``new msg``/``info
  msg`` again when it takes up a todo/ file it could not finish), unless its
  ``info msg`` names another sender, size or qp.
* Delivery ids count from 1 again when qmail-send restarts. A restart is seen as
  ``status: exiting`` or as a ``starting delivery D`` with D not above the last
  started id; either starts a new *epoch* of that (send log, queue): deliveries still
  open from the old epoch are closed as ``interrupted`` and never matched to a
  result of the new one. Messages survive the restart (they stay in the queue and
  qmail-send resumes delivering them under new delivery ids).
* A recipient is not started again while a delivery to it is on: a start that finds
  its address busy is to a second copy of it (listed twice), or the busy delivery's
  result line was lost (a ``gap``; syslog's rate limit); the latter when the busy one
  began before the lines lost or a retry's time before (``lost``, undone should its
  result come after all).

The *send log* (``send_log``) is the record's host, or for a line naming none
(multilog's: a track run over two servers' send logs, whose msg numbers and delivery
ids overlap) the input it was read from: one qmail-send each. A session (keyed by host)
is linked to a hostless send log's mail with its qp nearest in time, whichever that is.

Counting follows qmailanalog ``matchup``: each finished delivery attempt counts one
success (k), failure (d) or deferral (z); ``report mangled`` counts as a deferral;
the birth time is the ``info msg`` line's time.
State is plain JSON-able data (``to_state``/``from_state``), memory is bounded by
the number of open messages (``max_open``; the oldest is emitted ``incomplete``
when exceeded, and at the cap a message seen only from its middle is not taken in)
and by ``max_attempts`` per recipient; a bounce or forwarded copy whose message has
not come is waited for an hour of log time (``flush``), as the qp link holds no longer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shipper.track import (
    F_INCOMPLETE,
    F_PARTIAL,
    NS,
    Clock,
    add_event_id,
    fold_attempt,
    gap_fields,
    input_of,
    iso,
    origin,
    seconds,
    summary,
)


@dataclass(slots=True)
class QmailOptions:
    max_open: int = 100_000  # open messages kept; beyond, the oldest is emitted incomplete
    max_age_s: float = 8 * 86400  # queuelifetime (7 days) + a day: then emitted incomplete
    max_attempts: int = 50  # delivery attempts kept per recipient (all are counted)
    # ``orphans`` counts only the untracked results logged in this window (stats
    # --since/--until: as its summaries; a result of unknown time counts)
    orphans_since_ns: int | None = None
    orphans_until_ns: int | None = None


# The session tracker's link function: (host, qp, mail_from, time_ns, mail_ref) -> session ref
# or None. It also remembers the mail so a session that ends later can name it.
SessionLookup = Callable[[str, int, "str | None", "int | None", dict[str, Any]], "dict[str, Any] | None"]


def send_log(rec: dict[str, Any]) -> str:
    """Which qmail-send a record is of: its host, else (a line naming none) its input:
    ``input`` when the reader named it (``shipper track``: a directory, a logrotate
    set), else the directory or file of its ``source``. (\x01: no host name has it)"""
    host = rec.get("host")
    if host:
        return host
    return "\x01" + (rec.get("input") or input_of(rec.get("source")))


def _lead_int(d: Any) -> int | None:
    """Numeric part of a delivery id (indimail writes ``12.qident``)."""
    if isinstance(d, int):
        return d
    s = str(d)
    n = 0
    i = 0
    while i < len(s) and s[i].isdigit():
        n = n * 10 + ord(s[i]) - 48
        i += 1
    return n if i else None


_T = TypeVar("_T")


def nearest_birth(candidates: list[_T], birth: Callable[[_T], int | None], time_ns: int | None,
                  window_ns: int) -> _T | None:
    """Of a qp's ``candidates``, the one born nearest ``time_ns`` and within ``window_ns``
    of it (one whose birth or ``time_ns`` is unknown: at no distance)."""
    best, best_d = None, window_ns + 1
    for c in candidates:
        b = birth(c)
        d = abs(time_ns - b) if b is not None and time_ns is not None else 0
        if d < best_d:
            best, best_d = c, d
    return best


class QmailTracker:
    """Feed qmail-send records in log order; get ``mail`` summaries back."""

    __slots__ = ("opts", "mails", "queues", "bounces", "forwards", "by_qp", "session_lookup",
                 "session_unlink", "orphans")

    def __init__(self, opts: QmailOptions | None = None,
                 session_lookup: SessionLookup | None = None) -> None:
        self.opts = opts or QmailOptions()
        # (OrderedDicts where the oldest goes at a cap: a dict's next(iter(d)) walks over
        # the slots its deleted entries left, O(deletions) per eviction at the cap)
        self.mails: OrderedDict[str, dict[str, Any]] = OrderedDict()  # open messages, oldest first
        self.queues: dict[str, dict[str, Any]] = {}  # per (send log, queue): epoch, last id, open deliveries
        # "send log\0qp" of a bounce → the bounced message
        self.bounces: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # "send log\0qp" of a copy a local delivery forwarded (qmail-local's "did 0+1+0/qp N/")
        # whose ``info msg`` is still to come → the forwarding message and recipient
        self.forwards: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.by_qp: dict[str, str] = {}  # "send log\0qp" → key of the open message with that qp
        self.session_lookup = session_lookup
        # callable(session ref, mail ref, time_ns): a mail linked at its info msg is no
        # session's after all (a forwarded copy); None when no sessions are tracked
        self.session_unlink: Callable[[dict[str, Any], dict[str, Any], int | None], None] | None = None
        self.orphans = 0  # delivery results whose start we never saw

    # -- state ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"mails": list(self.mails.items()), "queues": self.queues,
                "bounces": list(self.bounces.items()), "forwards": list(self.forwards.items()),
                "by_qp": self.by_qp, "orphans": self.orphans}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mails = OrderedDict(state.get("mails", []))
        for m in self.mails.values():
            if "copies" not in m:  # (saved before it was kept, or none listed twice)
                _index_copies(m)
        self.queues = dict(state.get("queues", {}))
        self.bounces = OrderedDict(state.get("bounces", []))
        self.forwards = OrderedDict(state.get("forwards", []))
        self.by_qp = dict(state.get("by_qp", {}))
        self.orphans = int(state.get("orphans", 0))
        if any(k[:1] == "\x00" for k in self.queues):
            self._rekey_hostless()

    def _rekey_hostless(self) -> None:
        """A state saved when a line naming no host was keyed by the empty host (every
        input one qmail-send): its entries keyed by their send log now (see send_log),
        so their next lines find them."""
        def log_of(source: Any) -> str:
            return "\x01" + input_of(source)

        moved: dict[str, str] = {}
        for key in list(self.mails):
            if key[:1] == "\x00":
                m = self.mails[key]
                moved[key] = log_of(m["origin"].get("source")) + key
        self.mails = OrderedDict((moved.get(k, k), m) for k, m in self.mails.items())
        for qkey in [k for k in self.queues if k[:1] == "\x00"]:
            q = self.queues.pop(qkey)
            logs = {moved[k][:-len(k)] for k in moved if k.startswith(qkey + "\x00")} or {"\x01"}
            for log in logs:  # each send log goes on from the queue's epoch
                dels = {d: [moved.get(r[0], r[0]), r[1]] for d, r in q["dels"].items()
                        if moved.get(r[0], "").startswith(log + "\x00")}
                self.queues[log + qkey] = {**q, "dels": dels}
        for k in [k for k in self.by_qp if k[:1] == "\x00"]:
            mkey = moved.get(self.by_qp.pop(k))
            if mkey is not None:
                self.by_qp[mkey[:mkey.index("\x00")] + k] = mkey
                self.mails[mkey]["qp_key"] = mkey[:mkey.index("\x00")] + k
        for links in (self.bounces, self.forwards):
            items = [(log_of(v.get("source")) + k if k[:1] == "\x00" else k, v)
                     for k, v in links.items()]
            links.clear()
            links.update(items)
        for fw in self.forwards.values():
            fw["key"] = moved.get(fw.get("key", ""), fw.get("key"))

    def attach_session(self, host: str, qp: int, session_ref: dict[str, Any], time_ns: int | None,
                       window_ns: int) -> dict[str, Any] | None:
        """A session's ``250 ok … qp N`` at ``time_ns`` seen after the message's ``info msg``
        (within ``window_ns`` of it: an older open message with that qp is another one).
        A session naming no host: the mail of a hostless send log with the nearest birth.
        The qp link replaces a sender guess made before the reply was logged (qmail-send
        logs ``info msg`` as soon as qmail-queue is done, often before the smtpd's reply):
        returns the session it replaced (its ``mails`` should not name the mail), ``{}``
        when it replaced none, None when no open mail has that qp."""
        if host:
            logs = [host]
        else:  # (the send logs: a few queues each)
            logs = list(dict.fromkeys(k[:k.index("\x00")] for k in self.queues if k[:1] == "\x01"))
        keys = (self.by_qp.get(f"{log}\x00{qp}") for log in logs)
        opened = (self.mails.get(key) for key in keys if key is not None)
        best = nearest_birth([m for m in opened if m is not None], lambda m: m.get("birth_ns"),
                             time_ns, window_ns)
        if best is None:
            return None
        old = best.get("session")
        if old is None or (old.get("link") == "sender" and session_ref.get("link") == "qp"):
            best["session"] = session_ref
            if old is not None and old.get("event_id") != session_ref.get("event_id"):
                return old
        return {}

    # -- feeding -------------------------------------------------------------------------
    def feed(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        ev = rec.get("event")
        fn = _HANDLERS.get(ev)  # type: ignore[arg-type]
        if fn is not None:
            fn(self, rec, out)

    def flush(self, clock: Clock, out: list[dict[str, Any]]) -> None:
        """Emit messages older than ``max_age_s`` (by log time: ``clock(message)``) as incomplete."""
        age = int(self.opts.max_age_s * NS)
        for key in list(self.mails):
            m = self.mails[key]
            now = clock(m)
            if now is None or (m.get("birth_ns") or m["first_ns"]) >= now - age:
                continue
            self._emit(key, m, m["last_ns"], None, out, "max_age")
        # a bounce or forwarded copy is linked within an hour of its line (see
        # _within_hour): one not come by then never will (oldest first)
        for links in (self.bounces, self.forwards):
            for lkey, link in list(links.items()):
                t = link.get("time_unix_ns")
                now = clock({"origin": {"source": link.get("source")}})
                if t is not None and (now is None or t >= now - LINK_NS):
                    break
                if t is not None:
                    del links[lkey]

    def finish(self, out: list[dict[str, Any]]) -> None:
        """End of input: every open message is emitted incomplete."""
        for key in list(self.mails):
            m = self.mails[key]
            self._emit(key, m, m["last_ns"], None, out, "open_at_end")

    # -- handlers ------------------------------------------------------------------------
    def _qkey(self, rec: dict[str, Any]) -> str:
        return f"{send_log(rec)}\x00{rec.get('queue') or ''}"

    def _queue(self, qkey: str) -> dict[str, Any]:
        q = self.queues.get(qkey)
        if q is None:
            q = self.queues[qkey] = {"epoch": 0, "last": None, "dels": {}}
        return q

    def _mail(self, rec: dict[str, Any], msg: int, out: list[dict[str, Any]],
              create: bool = True) -> tuple[str, dict[str, Any] | None]:
        key = f"{self._qkey(rec)}\x00{msg}"
        m = self.mails.get(key)
        if m is None and create:
            ev = rec.get("event")
            full = len(self.mails) >= self.opts.max_open
            if full and ev not in ("new_msg", "info_msg", "end_msg"):
                # at the cap a message seen from its middle (begun before our input, or
                # pushed out by the cap) is not taken in: it would push out another, whose
                # next retry would push out the next (a summary per retry of a big queue)
                return key, None
            t = rec.get("time_unix_ns")
            q = self._queue(self._qkey(rec))
            m = {"msg": msg, "queue": rec.get("queue"), "origin": origin(rec), "first_ns": t,
                 "last_ns": t, "birth_ns": None, "info": False, "new": False, "epoch": q["epoch"],
                 "rcpts": [], "rindex": {}, "k": 0, "d": 0, "z": 0, "open": []}
            self.mails[key] = m
            if full and ev != "end_msg":  # (an end's bare record goes out at once)
                old = next(iter(self.mails))
                om = self.mails[old]
                self._emit(old, om, om["last_ns"], None, out, "evicted")
        return key, m

    def _new_msg(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        msg = rec.get("msg")
        if msg is None:
            return
        key, m = self._mail(rec, msg, out, create=False)
        if m is not None and (m["rcpts"] or "bounce_qp" in m):
            self._emit(key, m, m["last_ns"], None, out, "id_reused")
            m = None
        # else the same message again: qmail-send logs "new msg" each time it takes up
        # a todo/ file, and one it could not finish (a write error, killed before its
        # todo/ file was gone) is taken up again; none of its deliveries can start before
        if m is None:
            key, m = self._mail(rec, msg, out)
            assert m is not None
        m["new"] = True
        self._touch(m, rec)

    def _info_msg(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        msg = rec.get("msg")
        if msg is None:
            return
        key, m = self._mail(rec, msg, out)
        assert m is not None
        if m["info"]:
            if all(m.get(f) == rec.get(f) for f in ("mail_from", "size", "qp")):
                self._touch(m, rec)  # its todo/ file taken up again (see _new_msg)
                return
            # another message: the one before with this inode ended unseen
            self._emit(key, m, m["last_ns"], None, out, "id_reused")
            key, m = self._mail(rec, msg, out)
            assert m is not None
        m["info"] = True
        m["birth_ns"] = rec.get("time_unix_ns")
        for f in ("mail_from", "size", "qp", "uid"):
            if f in rec:
                m[f] = rec[f]
        self._touch(m, rec)
        qp = rec.get("qp")
        host = rec.get("host") or ""
        log = send_log(rec)
        if qp is not None:
            # A bounce is injected by qmail-send itself right after ``bounce msg``, with
            # sender <> (or #@[] for a double bounce): only such a message can be it.
            b = None
            if rec.get("mail_from") in ("", "#@[]"):
                b = self.bounces.pop(f"{log}\x00{qp}", None)
                if b is not None and not _within_hour(b.get("time_unix_ns"), rec.get("time_unix_ns")):
                    b = None
            if b is not None:
                b.pop("time_unix_ns", None)
                b.pop("source", None)
                m["bounce_of"] = b
            elif (fw := self.forwards.pop(f"{log}\x00{qp}", None)) is not None \
                    and _within_hour(fw["time_unix_ns"], rec.get("time_unix_ns")):
                m["forward_of"] = fw["of"]
                parent = self.mails.get(fw["key"])
                if parent is not None and fw["idx"] < len(parent["rcpts"]) and \
                        parent["rcpts"][fw["idx"]].get("rcpt_to") == fw["of"]["rcpt_to"]:
                    parent["rcpts"][fw["idx"]]["forward_msg"] = msg
            self.by_qp[f"{log}\x00{qp}"] = key
            m["qp_key"] = f"{log}\x00{qp}"
            if self.session_lookup is not None and b is None and "forward_of" not in m:
                ref = {"msg": msg, "qp": qp, "event_id": _mail_event_id(m)}
                s = self.session_lookup(host, qp, rec.get("mail_from"), rec.get("time_unix_ns"), ref)
                if s is not None:
                    m["session"] = s

    def _starting(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        sd, msg = _delivery_key(rec), rec.get("msg")
        if sd is None or msg is None:
            return
        qkey = self._qkey(rec)
        q = self._queue(qkey)
        n = _lead_int(sd)
        if n is not None:
            if q["last"] is not None and n <= q["last"]:
                self._new_epoch(q, rec.get("time_unix_ns"))
            q["last"] = n
        key, m = self._mail(rec, msg, out)
        if m is None:
            return
        old = q["dels"].get(sd)
        if old is not None:  # same id started twice in one epoch: the first never ended
            self._close_open(sd, old, "interrupted")
        rkey = f"{rec.get('channel')} {rec.get('rcpt_to')}"
        idx = m["rindex"].get(rkey)
        if idx is not None and _listed_again(m["rcpts"][idx]):
            # busy: another copy of the address, one free again if a retry (looked for
            # only for a duplicated address: a copy per retry was taken at each retry),
            # else one whose result the log lost
            idx = _free_copy(m, rkey)
            if idx is None:
                idx = self._result_lost(m, rkey, rec.get("time_unix_ns"))
        if idx is None:
            idx = len(m["rcpts"])
            if rkey in m["rindex"]:  # the address listed again
                _copies(m).setdefault(rkey, [m["rindex"][rkey]]).append(idx)
            m["rindex"][rkey] = idx
            m["rcpts"].append({"rcpt_to": rec.get("rcpt_to"), "channel": rec.get("channel"),
                               "result": None, "n_attempts": 0, "attempts": []})
        r = m["rcpts"][idx]
        r["n_attempts"] += 1
        att: dict[str, Any] = {"epoch": q["epoch"], "start_unix_ns": rec.get("time_unix_ns"),
                               "result": None}
        for f in ("delivery", "delivery_qident", "delivery_text"):
            if f in rec:
                att[f] = rec[f]
        r["attempts"].append(att)
        if len(r["attempts"]) > self.opts.max_attempts:
            old = r["attempts"].pop(0)
            fold_attempt(r, old, old.get("duration_s"))
        q["dels"][sd] = [key, idx]
        m["open"].append(sd)
        self._touch(m, rec)

    def _result_lost(self, m: dict[str, Any], rkey: str, t: int | None) -> int | None:
        """The copy of a busy address a start at ``t`` is the next try of, its result
        lost: qmail-send starts no copy twice at once, so either the address is listed
        twice or the result line is gone (the log lost lines: a ``gap`` after the try
        began, ``gap_ns`` the latest time lost; or syslog dropped it), and a retry comes
        no sooner than RETRY_MIN_NS after the try. Its attempt is marked ``lost``;
        should its result come after all, it was another copy's (see _delivery). (Taken
        for another copy every time, each lost result made up a recipient, pending for
        good, and the mail's result with it: 160 mails of 600 at 1 % of lines lost.)"""
        gap = m.get("gap_ns")
        best, best_lost, since = None, [], None
        for i in m.get("copies", {}).get(rkey) or [m["rindex"][rkey]]:
            r = m["rcpts"][i]
            if r["result"] in ("success", "failure"):
                continue
            lost = [a for a in r["attempts"] if "end_unix_ns" not in a and not _closed(a)
                    and _result_missed(a, gap, t)]
            start = min((a.get("start_unix_ns") or 0 for a in lost), default=None)
            if start is not None and (since is None or start < since):
                best, best_lost, since = i, lost, start  # (the copy on longest: its result lost)
        for a in best_lost:  # (still in dels and open: its result may come yet)
            a["lost"] = True
        return best

    def _another_copy(self, m: dict[str, Any], idx: int, att: dict[str, Any]) -> int:
        """A result came for an attempt taken for ``lost``: it was to another copy of
        the address (listed twice, the copies begun apart): that copy, its own now."""
        r = m["rcpts"][idx]
        r["attempts"].remove(att)
        r["n_attempts"] -= 1
        del att["lost"]
        rkey = f"{r['channel']} {r['rcpt_to']}"
        new = len(m["rcpts"])
        _copies(m).setdefault(rkey, [m["rindex"][rkey]]).append(new)
        m["rindex"][rkey] = new
        m["rcpts"].append({"rcpt_to": r["rcpt_to"], "channel": r["channel"], "result": None,
                           "n_attempts": 1, "attempts": [att]})
        return new

    def _delivery(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        d = _delivery_key(rec)
        if d is None:
            return
        q = self._queue(self._qkey(rec))
        ref = q["dels"].pop(d, None)
        if ref is None:
            self._orphan(rec)
            return
        key, idx = ref
        m = self.mails.get(key)
        if m is None:
            self._orphan(rec)
            return
        if d in m["open"]:
            m["open"].remove(d)
        r = m["rcpts"][idx]
        att = _open_attempt(r, d)
        if att is None:
            att = next((a for a in r["attempts"] if a.get("lost") and _attempt_key(a) == d
                        and "end_unix_ns" not in a and "interrupted" not in a), None)
            if att is None:
                return
            idx = self._another_copy(m, idx, att)
            r = m["rcpts"][idx]
        t = rec.get("time_unix_ns")
        if rec.get("event") == "delivery_mangled":
            result, text_raw = "deferral", "report_mangled"
            att["text"] = "report mangled, will defer"
        else:
            result = rec.get("result") or "deferral"
            text_raw = rec.get("text_raw", rec.get("text"))
            for f in ("text", "smtp_code", "dsn", "relay_ip", "recipient"):
                if f in rec:
                    att[f] = rec[f]
        att["result"] = result
        att["reason"] = text_raw  # as logged (logsafe'd): what matchup prints
        att["end_unix_ns"] = t
        att["duration_s"] = seconds(att.get("start_unix_ns"), t)
        m["k" if result == "success" else "d" if result == "failure" else "z"] += 1
        r["result"] = result
        for f in ("text", "smtp_code", "dsn", "relay_ip"):
            if f in att:
                r[f] = att[f]
            else:
                r.pop(f, None)
        if result in ("success", "failure"):
            # birth → final; unknown (null) when the mail began before the input: its
            # first line seen is no birth
            r["delay_s"] = seconds(m.get("birth_ns"), t)
        fqp = rec.get("qp")
        if type(fqp) is int and result == "success" and r.get("channel") == "local":
            self._forwarded(key, idx, send_log(rec), fqp, t)
        self._touch(m, rec)

    def _orphan(self, rec: dict[str, Any]) -> None:
        """A delivery result whose mail is not tracked: counted (in the window)."""
        t = rec.get("time_unix_ns")
        since, until = self.opts.orphans_since_ns, self.opts.orphans_until_ns
        if t is not None and ((since is not None and t < since) or (until is not None and t > until)):
            return
        self.orphans += 1

    def _forwarded(self, key: str, idx: int, log: str, qp: int, t: int | None) -> None:
        """A local delivery forwarded the message (``.qmail``'s ``&address``): qmail-local
        queued a copy whose ``info msg`` says ``qp`` ``qp``. That line may have come
        already (qmail-send reads its queue and the delivery's report in either order)
        or may come next: link the copy and the recipient either way."""
        m = self.mails[key]
        r = m["rcpts"][idx]
        r["forward_qp"] = qp
        ref = {"msg": m["msg"], "qp": m.get("qp"), "rcpt_to": r.get("rcpt_to"),
               "event_id": _mail_event_id(m)}
        ck = self.by_qp.get(f"{log}\x00{qp}")
        copy = self.mails.get(ck) if ck is not None else None
        if copy is not None and copy is not m and "forward_of" not in copy \
                and "bounce_of" not in copy and _within_hour(copy.get("birth_ns"), t):
            copy["forward_of"] = ref
            r["forward_msg"] = copy["msg"]
            sref = copy.pop("session", None)
            if sref is not None and self.session_unlink is not None:
                # a copy qmail-local queued is no SMTP session's message: the session
                # its info msg was guessed to (by sender) gets it back
                self.session_unlink(sref, {"msg": copy["msg"], "qp": copy.get("qp"),
                                           "event_id": _mail_event_id(copy)}, copy.get("birth_ns"))
            return
        self.forwards[f"{log}\x00{qp}"] = {"of": ref, "key": key, "idx": idx, "time_unix_ns": t,
                                            "source": m["origin"].get("source")}
        while len(self.forwards) > self.opts.max_open:
            self.forwards.popitem(last=False)

    def _bounce(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        msg, qp = rec.get("msg"), rec.get("qp")
        if msg is None:
            return
        key, m = self._mail(rec, msg, out)
        if m is not None:
            m["bounce_qp"] = qp
            self._touch(m, rec)
        if qp is not None:  # (its bounce still names it when it is not tracked)
            self.bounces[f"{send_log(rec)}\x00{qp}"] = {
                "msg": msg, "qp": m.get("qp") if m else None,
                "event_id": _mail_event_id(m) if m else None,
                "time_unix_ns": rec.get("time_unix_ns"), "source": rec.get("source")}
            while len(self.bounces) > self.opts.max_open:
                self.bounces.popitem(last=False)

    def _discard(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        msg = rec.get("msg")
        if msg is None:
            return
        key, m = self._mail(rec, msg, out)
        if m is None:
            return
        m["bounce_discarded"] = "triple" if rec.get("event") == "triple_bounce" else "double"
        self._touch(m, rec)

    def _end_msg(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        msg = rec.get("msg")
        if msg is None:
            return
        key, m = self._mail(rec, msg, out, create=False)
        if m is None:  # its start is before our input: a bare record, flagged partial
            key, m = self._mail(rec, msg, out)
            assert m is not None
        add_event_id(m, rec)
        self._emit(key, m, rec.get("time_unix_ns"), rec.get("time_source"), out, None)

    def _exiting(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        q = self._queue(self._qkey(rec))
        self._new_epoch(q, rec.get("time_unix_ns"))
        q["last"] = None

    # -- internals -----------------------------------------------------------------------
    def _touch(self, m: dict[str, Any], rec: dict[str, Any]) -> None:
        t = rec.get("time_unix_ns")
        if t is not None:
            m["last_ns"] = t
        add_event_id(m, rec)

    def _new_epoch(self, q: dict[str, Any], t: int | None) -> None:
        q["epoch"] += 1
        for sd, ref in q["dels"].items():
            self._close_open(sd, ref, "interrupted")
        q["dels"] = {}

    def _close_open(self, sd: str, ref: list[Any], why: str) -> None:
        """An attempt that will never get its result (qmail-send restarted meanwhile)."""
        key, idx = ref
        m = self.mails.get(key)
        if m is None:
            return
        for att in m["rcpts"][idx]["attempts"]:
            if _attempt_key(att) == sd and "end_unix_ns" not in att:
                att[why] = True
        if sd in m["open"]:
            m["open"].remove(sd)

    def _emit(self, key: str, m: dict[str, Any], end_ns: int | None, time_source: str | None,
              out: list[dict[str, Any]], incomplete: str | None) -> None:
        self.mails.pop(key, None)
        qk = m.get("qp_key")
        if qk is not None and self.by_qp.get(qk) == key:
            del self.by_qp[qk]
        q = self.queues.get(key.rsplit("\x00", 1)[0])
        if q is not None:
            for d in m["open"]:
                ref = q["dels"].get(d)
                if ref is not None and ref[0] == key:
                    del q["dels"][d]
        out.append(mail_record(m, end_ns, time_source, incomplete))


def _listed_again(r: dict[str, Any]) -> bool:
    """Whether a new delivery to ``r``'s address is to a second copy of it in the
    recipient list (qmail keeps duplicates and delivers each): qmail-send delivers a
    recipient no more once it succeeded or failed, and not twice at once."""
    if r["result"] in ("success", "failure"):
        return True
    # (an open attempt is the latest: a copy being delivered gets no other)
    return any("end_unix_ns" not in a and not _closed(a) for a in reversed(r["attempts"]))


def _closed(att: dict[str, Any]) -> bool:
    """An attempt that will get no result: qmail-send restarted, or its line was lost."""
    return "interrupted" in att or "lost" in att


def _copies(m: dict[str, Any]) -> dict[str, list[int]]:
    """The mail's index of its duplicated addresses: ``channel address`` → indexes of
    its copies not finished (success or failure), ascending; an address listed once is
    not in it, nor is the index in a mail listing none twice. (Looking through every
    recipient for a free copy took O(recipients) a delivery: a mail listing one
    address 32,000 times, 46 s.)"""
    copies = m.get("copies")
    if copies is None:
        copies = m["copies"] = {}
    return copies


def _index_copies(m: dict[str, Any]) -> None:
    """Build ``_copies`` of a mail from its recipients (a state saved before it was kept)."""
    seen: dict[str, list[int]] = {}
    for i, r in enumerate(m["rcpts"]):
        seen.setdefault(f"{r['channel']} {r['rcpt_to']}", []).append(i)
    copies = {k: v for k, v in seen.items() if len(v) > 1}
    if copies:
        m["copies"] = copies


def _free_copy(m: dict[str, Any], rkey: str) -> int | None:
    """The first copy of a duplicated address a new delivery can be to (see
    ``_listed_again``), if any. Finished copies met on the way leave the index for good
    (qmail-send delivers them no more): what is passed over is the copies being
    delivered, at most as many as run at once."""
    free = _copies(m).get(rkey)
    if not free:
        return None
    rcpts = m["rcpts"]
    found, j = None, len(free)
    for n, i in enumerate(free):
        if not _listed_again(rcpts[i]):
            found, j = i, n
            break
    free[:j] = [i for i in free[:j] if rcpts[i]["result"] not in ("success", "failure")]
    return found


# qmail-send retries a recipient no sooner after a try: its next try is at birth +
# (floor(sqrt(age)) + chanskip)^2 (chanskip 10 local, 20 remote), at least
# chanskip^2 - 1 = 99 s (local) after a try made at that age; 60 s leaves room for a
# clock's step, and less would take a copy listed twice begun when a slot freed for a
# retry (a forced retry, svc -a, is told by neither)
RETRY_MIN_NS = 60 * NS


def _result_missed(att: dict[str, Any], gap: int | None, t: int | None) -> bool:
    """Whether an attempt still on when its address is started again lost its result:
    begun before lines of the log were lost, or a retry's time before."""
    start = att.get("start_unix_ns")
    if gap is not None and (start or 0) <= gap:
        return True
    return start is not None and t is not None and t - start >= RETRY_MIN_NS


def _open_attempt(r: dict[str, Any], d: str) -> dict[str, Any] | None:
    for att in reversed(r["attempts"]):
        if _attempt_key(att) == d and "end_unix_ns" not in att and not _closed(att):
            return att
    return None


def _delivery_key(rec: dict[str, Any]) -> str | None:
    """A delivery id as qmail-send wrote it (indimail: ``12.qident``): the key of
    its attempt, from the record's ``delivery`` and ``delivery_qident``."""
    d = rec.get("delivery")
    if d is None:
        return rec.get("delivery_text")
    qident = rec.get("delivery_qident")
    return f"{d}.{qident}" if qident else str(d)


def _attempt_key(att: dict[str, Any]) -> str:
    # an attempt saved before delivery_qident existed holds the whole id in delivery
    d = att.get("delivery")
    if d is None:
        return att.get("delivery_text") or ""
    qident = att.get("delivery_qident")
    return f"{d}.{qident}" if qident else str(d)


LINK_NS = 3600 * NS


def _within_hour(before: int | None, after: int | None) -> bool:
    """Whether ``after`` is within an hour after ``before`` (unknown times: yes): qp is a
    pid, reused in time, so a link holds only between lines this close."""
    return before is None or after is None or 0 <= after - before <= LINK_NS


def _mail_event_id(m: dict[str, Any]) -> str | None:
    eid = m["origin"].get("event_id")
    return f"{eid}m" if eid is not None else None


def mail_record(m: dict[str, Any], end_ns: int | None, time_source: str | None,
                incomplete: str | None) -> dict[str, Any]:
    """The ``mail`` summary record of one message (schema: docs/records.md)."""
    flags: list[str] = []
    if incomplete:
        flags.append(F_INCOMPLETE)
    if not m["info"]:
        flags.append(F_PARTIAL)
    birth = m.get("birth_ns")
    rcpts = []
    for r in m["rcpts"]:
        r = {k: v for k, v in r.items()}
        rcpts.append(r)
    f: dict[str, Any] = {"msg": m["msg"]}
    if m.get("queue") is not None:
        f["queue"] = m["queue"]
    for k in ("mail_from", "size", "qp", "uid"):
        if k in m:
            f[k] = m[k]
    f["birth"] = iso(birth)
    f["birth_unix_ns"] = birth
    f["queue_time_s"] = seconds(birth, end_ns) if not incomplete else None
    f["recipients"] = rcpts
    f["n_recipients"] = len(rcpts)
    f["n_success"], f["n_failure"], f["n_deferral"] = m["k"], m["d"], m["z"]
    f["result"] = _overall(rcpts)
    for k in ("bounce_qp", "bounce_of", "bounce_discarded", "forward_of", "session"):
        if k in m:
            f[k] = m[k]
    mf = m.get("mail_from")
    if mf == "":
        f["bounce_kind"] = "bounce"
    elif mf == "#@[]":
        f["bounce_kind"] = "double_bounce"
    f["epoch"] = m["epoch"]
    if incomplete:
        f["incomplete_reason"] = incomplete
    f["event_ids"] = m.get("event_ids", [])
    if m.get("event_ids_dropped"):
        f["event_ids_dropped"] = m["event_ids_dropped"]
    text = _text(f, incomplete)
    gap_fields(m, f, flags)
    return summary("mail", "qmail-send", "m", m["origin"], end_ns, time_source, f, text, flags)


def _overall(rcpts: list[dict[str, Any]]) -> str | None:
    """``deferral`` while any recipient is pending (also when all are: it was null, for
    a mail whose deliveries had not ended, which the docs promise never), None for a
    mail with no recipient seen."""
    results = {r.get("result") for r in rcpts}
    if not results:
        return None
    if None in results or "deferral" in results:
        return "deferral"
    if len(results) == 1:
        return next(iter(results))
    return "mixed"


def _text(f: dict[str, Any], incomplete: str | None) -> str:
    parts = [f"mail msg {f['msg']}"]
    if "mail_from" in f:
        parts.append(f"from <{f['mail_from']}>")
    if "size" in f:
        parts.append(f"{f['size']} bytes")
    rc = ", ".join(f"{r.get('rcpt_to')} {r.get('result') or 'pending'}" for r in f["recipients"][:5])
    if len(f["recipients"]) > 5:
        rc += f", +{len(f['recipients']) - 5} more"
    parts.append(f"to {rc}" if rc else "no deliveries")
    if incomplete:
        parts.append(f"(incomplete: {incomplete})")
    return " ".join(parts)


_HANDLERS = {
    "new_msg": QmailTracker._new_msg,
    "info_msg": QmailTracker._info_msg,
    "starting_delivery": QmailTracker._starting,
    "delivery": QmailTracker._delivery,
    "delivery_mangled": QmailTracker._delivery,
    "bounce_msg": QmailTracker._bounce,
    "triple_bounce": QmailTracker._discard,
    "double_bounce": QmailTracker._discard,
    "end_msg": QmailTracker._end_msg,
    "status_exiting": QmailTracker._exiting,
}


def matchup_lines(mails: list[dict[str, Any]]) -> list[str]:
    """Render ``mail`` records in qmailanalog ``matchup`` output form (AQ matchup.c).

    ``m birth done bytes nk nd nz <sender> qp uid`` per message (only messages whose
    ``info msg`` was seen, like matchup), ``d k|d|z birth dstart dend bytes <sender>
    chan.rcpt qp uid reason`` per finished delivery attempt; times as ``secs.usec``,
    sender and recipient lower-cased. Lines are ordered by their time (a ``d`` line at
    its delivery end, an ``m`` line at ``end msg``), as matchup writes them.
    """
    rows: list[tuple[int, int, str]] = []
    seq = 0
    for mail in mails:
        if mail.get("event") != "mail" or mail.get("program") != "qmail-send":
            continue
        known = "partial" not in mail.get("flags", [])
        birth = _ts(mail.get("birth_unix_ns"))
        sender = f"<{mail.get('mail_from', '')}>".lower()
        for r in mail.get("recipients", []):
            for att in r.get("attempts", []):
                if "end_unix_ns" not in att:
                    continue
                kind = {"success": "k", "failure": "d"}.get(att.get("result"), "z")
                start, end = _ts(att.get("start_unix_ns")), _ts(att["end_unix_ns"])
                dest = f"{r.get('channel')}.{str(r.get('rcpt_to')).lower()}"
                if known:
                    line = (f"d {kind} {birth} {start} {end} {mail.get('size', 0)} {sender} {dest} "
                            f"{mail.get('qp')} {mail.get('uid')} {att.get('reason', '')}")
                else:
                    line = f"d {kind} {start} {start} {end} 0 ? {dest} ? ? {att.get('reason', '')}"
                seq += 1
                rows.append((att["end_unix_ns"] or 0, seq, line))
        if known and "incomplete" not in mail.get("flags", []):
            line = (f"m {birth} {_ts(mail.get('time_unix_ns'))} {mail.get('size', 0)} "
                    f"{mail['n_success']} {mail['n_failure']} {mail['n_deferral']} {sender} "
                    f"{mail.get('qp')} {mail.get('uid')}")
            seq += 1
            rows.append((mail.get("time_unix_ns") or 0, seq, line))
    rows.sort(key=lambda x: (x[0], x[1]))
    return [r[2] for r in rows]


def _ts(ns: int | None) -> str:
    if ns is None:
        return "?"
    s, rest = divmod(ns, NS)
    return f"{s}.{rest // 1000:06d}"
