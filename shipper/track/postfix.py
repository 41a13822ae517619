"""Postfix (and Proxmox Mail Gateway) correlation, pmg-log-tracker's model. Pure, no I/O.

Three kinds of entries (pmg-log-tracker README, formats.md §12):
* smtpd session — key (host, smtpd pid): every ``postfix*/…smtpd[pid]`` line up to
  ``disconnect from``; ``QID: client=`` links it to a queue entry; ``NOQUEUE:
  reject`` (class ``N``, greylisting ``G``) and ``proxy-reject``/``proxy-accept``
  (before-queue filtering) give its per-recipient outcomes. postscreen's ``NOQUEUE:
  reject`` is a one-line session of its own.
* queue entry — key (host, QID): cleanup ``message-id``, qmgr ``from=, size=``,
  smtp/lmtp/local/error ``to=`` deliveries, qmgr ``removed``. An smtp ``… TLS
  connection established to …`` line joins the next delivery of the same smtp pid.
* filter entry — key (host, pmg-smtp-filter id): ``new mail``, ``accept mail to <t>
  (QID2)`` (class ``A``, relay = QID2), ``block mail`` (``B``), ``moved mail … spam
  quarantine - ID`` (``Q``, relay = ID); an lmtp/smtp reply ``250 … (FILTERID)`` links it
  to the queue entry that was delivered to the filter (after-queue filtering), a
  ``proxy-accept|reject … (FILTERID)`` to the smtpd session (before-queue).
A queue entry is complete when ``removed`` is seen and its smtpd session (if any)
has disconnected — in either order; it is emitted as a ``mail`` record carrying the
lines of its session and filter. A session is emitted as ``smtp_session`` at
disconnect; ``qids`` lists the mails it queued. Recipient ``dsn_class``: the first
digit of the DSN, or ``N``/``G``/``A``/``B``/``Q`` as pmg-log-tracker prints.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from shipper.track import (
    F_INCOMPLETE,
    F_PARTIAL,
    NS,
    Clock,
    add_event_id,
    fold_attempt,
    gap_fields,
    iso,
    origin,
    postfix_xdelay,
    seconds,
    summary,
)

MAX_RCPTS = 1000
MAX_ATTEMPTS = 50
# smtpd's reject stages that refuse the message itself, not one recipient
_END_STAGES = frozenset({"DATA", "BDAT", "END-OF-MESSAGE"})
LATE_NS = 60 * NS  # another process's line about a refused mail, after its end
MAX_BOUNCES = 10  # notifications named per mail (non-delivery, delay, postmaster copies)
_DELIVERY_SERVICES = frozenset({"smtp", "lmtp", "local", "error", "virtual", "pipe", "retry",
                                "discard"})


@dataclass(slots=True)
class PostfixOptions:
    max_open: int = 100_000  # open queue entries (sessions and filters: the same cap)
    max_age_s: float = 6 * 86400  # Postfix maximal_queue_lifetime (5 d) + a day


def is_postfix(program: str | None) -> bool:
    return program is not None and (program.startswith("postfix") or program == "pmg-smtp-filter")


def _service(program: str) -> str:
    return "filter" if program == "pmg-smtp-filter" else program.rsplit("/", 1)[-1]


def _relay(rec: dict[str, Any]) -> str | None:
    h, ip, port = rec.get("relay_host"), rec.get("relay_ip"), rec.get("relay_port")
    if h is None and ip is None:
        return None
    s = h or ""
    if ip is not None:
        s += f"[{ip}]"
    if port is not None:
        s += f":{port}"
    return s


class PostfixTracker:
    """Feed Postfix/PMG records in log order; get ``mail`` and ``smtp_session`` summaries."""

    __slots__ = ("opts", "sessions", "queue", "filters", "smtp_tls", "orphans", "refused")

    def __init__(self, opts: PostfixOptions | None = None) -> None:
        self.opts = opts or PostfixOptions()
        # (OrderedDicts: the oldest goes at a cap, and a dict's next(iter(d)) walks over
        # the slots its deleted entries left, O(deletions) per eviction at the cap)
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()  # "host\0pid"
        self.queue: OrderedDict[str, dict[str, Any]] = OrderedDict()  # "host\0qid"
        # "host\0qid" of mails ended by a refusal (no queue file, no "removed") → its time:
        # another process's line about it may be logged after the end (see _qentry)
        self.refused: OrderedDict[str, int | None] = OrderedDict()
        self.filters: OrderedDict[str, dict[str, Any]] = OrderedDict()  # "host\0filter id"
        # "host\0smtp pid" → event id of its TLS line
        self.smtp_tls: OrderedDict[str, str] = OrderedDict()
        self.orphans = 0  # filter entries never linked to a mail or session

    def to_state(self) -> dict[str, Any]:
        return {"sessions": list(self.sessions.items()), "queue": list(self.queue.items()),
                "filters": list(self.filters.items()), "smtp_tls": self.smtp_tls,
                "refused": list(self.refused.items()), "orphans": self.orphans}

    def load_state(self, state: dict[str, Any]) -> None:
        self.sessions = OrderedDict(state.get("sessions", []))
        self.queue = OrderedDict(state.get("queue", []))
        self.filters = OrderedDict(state.get("filters", []))
        self.smtp_tls = OrderedDict(state.get("smtp_tls", {}))
        self.refused = OrderedDict(state.get("refused", []))
        self.orphans = int(state.get("orphans", 0))

    # -- feeding -------------------------------------------------------------------------
    def feed(self, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        program = rec.get("program") or ""
        svc = _service(program)
        host = rec.get("host") or ""
        ev = rec.get("event")
        if svc == "filter":
            fid = rec.get("filter_id")
            if fid:
                self._filter(host, fid, rec, out)
        elif svc == "smtpd" or svc == "submission":
            self._smtpd(host, rec, out)
        elif svc == "postscreen":
            if ev == "reject":
                self._postscreen_reject(host, rec, out)
        elif ev == "tls" and svc == "smtp":
            eid = rec.get("event_id")
            if eid is not None:
                self.smtp_tls[f"{host}\x00{rec.get('pid')}"] = eid
                while len(self.smtp_tls) > 10_000:
                    self.smtp_tls.popitem(last=False)
        else:
            qid = rec.get("qid")
            if qid:
                self._queued(host, svc, qid, rec, out)

    def flush(self, clock: Clock, out: list[dict[str, Any]]) -> None:
        """Emit what is idle past ``max_age_s`` at ``clock(entry)``."""
        age = int(self.opts.max_age_s * NS)

        def idle(e: dict[str, Any]) -> bool:
            now = clock(e)
            return now is not None and (e["last_ns"] or 0) < now - age
        for key in list(self.queue):
            q = self.queue[key]
            if idle(q):
                self._emit_mail(key, q, out, "max_age")
        for key in list(self.sessions):
            s = self.sessions[key]
            if idle(s):
                self._emit_session(key, s, out, "max_age")
        for key in list(self.filters):
            if idle(self.filters[key]):
                del self.filters[key]
                self.orphans += 1
        # refused mails whose late lines are all in (oldest first): the state keeps no more
        now = clock({"origin": {}})
        if now is not None:
            for key, t in list(self.refused.items()):
                if t is not None and t >= now - LATE_NS:
                    break
                del self.refused[key]

    def finish(self, out: list[dict[str, Any]]) -> None:
        for key in list(self.sessions):
            if key in self.sessions:
                self._emit_session(key, self.sessions[key], out, "open_at_end")
        for key in list(self.queue):
            if key in self.queue:
                self._emit_mail(key, self.queue[key], out, "open_at_end")
        self.orphans += len(self.filters)
        self.filters.clear()

    # -- entries -------------------------------------------------------------------------
    def _new(self, table: OrderedDict[str, dict[str, Any]], key: str, rec: dict[str, Any],
             out: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        t = rec.get("time_unix_ns")
        e = {"key": key, "origin": origin(rec), "first_ns": t, "last_ns": t, **extra}
        table[key] = e
        if len(table) > self.opts.max_open:
            old = next(iter(table))
            if table is self.queue:
                self._emit_mail(old, table[old], out, "evicted")
            elif table is self.sessions:
                self._emit_session(old, table[old], out, "evicted")
            else:
                del table[old]
                self.orphans += 1
        return e

    def _touch(self, e: dict[str, Any], rec: dict[str, Any]) -> None:
        t = rec.get("time_unix_ns")
        if t is not None:
            e["last_ns"] = t
        add_event_id(e, rec)

    def _qentry(self, host: str, qid: str, rec: dict[str, Any],
                out: list[dict[str, Any]]) -> dict[str, Any]:
        key = f"{host}\x00{qid}"
        q = self.queue.get(key)
        if q is None:
            if key in self.refused:
                # Postfix's processes log through one socket in the order they write:
                # cleanup's "message-id=" of a mail smtpd refused at END-OF-MESSAGE can
                # come after the session's end that emitted the mail (seen in CI). Such
                # a line opened a second mail of the same queue id, left open to the end;
                # it goes nowhere now (a queue id comes round far later than this).
                t0, t = self.refused[key], rec.get("time_unix_ns")
                if t0 is None or t is None or abs(t - t0) <= LATE_NS:
                    return {"key": key, "origin": origin(rec), "first_ns": t, "last_ns": t,
                            "qid": qid, "rcpts": [], "rindex": {}, "late": True}
                del self.refused[key]
            q = self._new(self.queue, key, rec, out, qid=qid, rcpts=[], rindex={})
        return q

    def _filter_entry(self, host: str, fid: str, rec: dict[str, Any],
                      out: list[dict[str, Any]]) -> dict[str, Any]:
        key = f"{host}\x00{fid}"
        f = self.filters.get(key)
        if f is None:
            f = self._new(self.filters, key, rec, out, filter_id=fid, results=[])
        return f

    # -- smtpd ---------------------------------------------------------------------------
    def _smtpd(self, host: str, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        ev = rec.get("event")
        key = f"{host}\x00{rec.get('pid')}"
        s = self.sessions.get(key)
        if s is not None and ev == "connect" and s.get("connected"):
            self._emit_session(key, s, out, "pid_reused")
            s = None
        if s is None:
            s = self._new(self.sessions, key, rec, out, conn_pid=rec.get("pid"),
                          program=rec.get("program"), qids=[], recipients=[])
        self._touch(s, rec)
        # smtpd's NOQUEUE "discard:" at RCPT: its queue file is opened right after (the
        # session's next line names it) and the message is dropped, no qmgr line follows
        noqueue_discard = s.pop("discard", None)
        if ev == "connect":
            s["connected"] = True
            self._client(s, rec)
        elif ev == "client":
            if "remote_ip" in rec and "remote_ip" not in s:
                self._client(s, rec)
            qid = rec.get("qid")
            if qid:
                q = self._qentry(host, qid, rec, out)
                self._touch(q, rec)
                q["session"] = key
                self._client(q, rec)
                for f in ("orig_client_host", "orig_client_ip"):
                    if f in rec:
                        q[f] = rec[f]
                if qid not in s["qids"]:
                    s["qids"].append(qid)
                if noqueue_discard is not None:
                    self._discarded(q, noqueue_discard, out)
        elif ev == "check_action" and rec.get("action") == "discard":
            # DISCARD (access maps): "claim successful delivery and silently discard
            # the entire message" at any stage; no qmgr line and no "removed" follow
            qid = rec.get("qid")
            if qid:
                q = self._qentry(host, qid, rec, out)
                self._touch(q, rec)
                self._discarded(q, rec, out)
            else:  # (what _discarded reads of it: the session's state is saved)
                s["discard"] = {k: rec[k] for k in ("event", "time_unix_ns", "rcpt_to", "mail_from",
                                                    "dsn", "reason", "stage") if k in rec}
        elif ev == "reject":
            qid = rec.get("qid")
            r = {"rcpt_to": rec.get("rcpt_to"), "mail_from": rec.get("mail_from"),
                 "dsn_class": "G" if rec.get("greylist") else "N",
                 "result": "greylisted" if rec.get("greylist") else "rejected"}
            for f in ("smtp_code", "dsn", "reason", "stage"):
                if f in rec:
                    r[f] = rec[f]
            if qid:  # a reject after the queue file existed (milter, DATA): the mail's own
                q = self._qentry(host, qid, rec, out)
                self._touch(q, rec)
                _rcpt(q, rec.get("rcpt_to"))["attempts"].append(
                    {**r, "time_unix_ns": rec.get("time_unix_ns"), "text": rec.get("reason")})
                if rec.get("stage") in _END_STAGES:
                    # the message itself refused: smtpd drops the queue file, and no
                    # qmgr "removed" comes; the mail ends with this session
                    self._ended(q, rec, out, refused=True)
            elif len(s["recipients"]) < MAX_RCPTS:
                s["recipients"].append(r)
            if "remote_ip" in rec and "remote_ip" not in s:
                self._client(s, rec)
        elif ev in ("proxy_accept", "proxy_reject"):
            fid = rec.get("filter_id")
            if rec.get("mail_from") is not None:
                s["mail_from"] = rec["mail_from"]
            if fid:
                s["filter_id"] = fid
                f = self.filters.get(f"{host}\x00{fid}")
                if f is not None:
                    f["linked"] = True
            elif ev == "proxy_reject":
                r = {"rcpt_to": rec.get("rcpt_to"), "mail_from": rec.get("mail_from"),
                     "dsn_class": "N", "result": "rejected"}
                for k in ("smtp_code", "dsn"):
                    if k in rec:
                        r[k] = rec[k]
                s["recipients"].append(r)
        elif ev == "disconnect":
            self._emit_session(key, s, out, None, rec)

    def _client(self, e: dict[str, Any], rec: dict[str, Any]) -> None:
        for f in ("remote_host", "remote_ip", "remote_port"):
            if f in rec:
                e[f] = rec[f]

    def _postscreen_reject(self, host: str, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        key = f"{host}\x00postscreen\x00{rec.get('event_id')}"
        s = self._new(self.sessions, key, rec, out, conn_pid=rec.get("pid"),
                      program=rec.get("program"), qids=[], recipients=[])
        self._touch(s, rec)
        self._client(s, rec)
        r = {"rcpt_to": rec.get("rcpt_to"), "mail_from": rec.get("mail_from"), "dsn_class": "N",
             "result": "rejected"}
        for f in ("smtp_code", "dsn", "reason", "stage"):
            if f in rec:
                r[f] = rec[f]
        s["recipients"].append(r)
        self._emit_session(key, s, out, None, rec)

    # -- queue ---------------------------------------------------------------------------
    def _queued(self, host: str, svc: str, qid: str, rec: dict[str, Any],
                out: list[dict[str, Any]]) -> None:
        ev = rec.get("event")
        q = self._qentry(host, qid, rec, out)
        if ev == "delivery" or svc in _DELIVERY_SERVICES:
            tls = self.smtp_tls.pop(f"{host}\x00{rec.get('pid')}", None)
            if tls is not None and tls not in q.get("event_ids", ()):
                q.setdefault("event_ids", []).append(tls)
        self._touch(q, rec)
        if ev == "message_id":
            q["message_id"] = rec.get("message_id")
        elif ev == "queue_active":
            for f in ("mail_from", "size", "nrcpt"):
                if f in rec:
                    q[f] = rec[f]
        elif ev == "delivery":
            r = _rcpt(q, rec.get("rcpt_to"))
            att = {"time_unix_ns": rec.get("time_unix_ns"), "relay": _relay(rec)}
            for f in ("orig_to", "relay_host", "relay_ip", "relay_port", "delay", "delays",
                      "dsn", "status", "result", "text"):
                if f in rec:
                    att[f] = rec[f]
            dsn = rec.get("dsn")
            att["dsn_class"] = dsn[0] if dsn else None
            r["attempts"].append(att)
            if len(r["attempts"]) > MAX_ATTEMPTS:
                old = r["attempts"].pop(0)
                fold_attempt(r, old, postfix_xdelay(old))
            fid = rec.get("filter_id")
            if fid:
                q["filter_id"] = fid
                f = self.filters.get(f"{host}\x00{fid}")
                if f is not None:
                    f["linked"] = True
        elif ev == "expired":  # qmgr gave up: what was still deferred bounces
            q["expired"] = True
        elif ev == "bounce":  # bounce(8) queued a notification about this mail
            b = q.setdefault("bounces", [])
            if len(b) < MAX_BOUNCES:
                b.append({k: rec[k] for k in ("bounce_qid", "notification", "bounce_to") if k in rec})
        elif svc == "cleanup" and (ev == "reject" or rec.get("action") == "discard"):
            # A header/body check refused (REJECT) or dropped (DISCARD) the message:
            # cleanup deletes the queue file, and no qmgr "removed" line ever comes.
            self._discarded(q, rec, out)
        elif ev == "removed":
            self._ended(q, rec, out)

    def _discarded(self, q: dict[str, Any], rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """A check refused (REJECT) or dropped (DISCARD) the whole message. The line
        names one recipient (the last); the verdict was the mail's."""
        dsn = rec.get("dsn")
        att = {"time_unix_ns": rec.get("time_unix_ns"),
               "result": "rejected" if rec.get("event") == "reject" else "discarded",
               "dsn_class": dsn[0] if dsn else None}
        for f in ("dsn", "reason", "stage"):
            if f in rec:
                att[f] = rec[f]
        att["text"] = rec.get("reason")
        _rcpt(q, rec.get("rcpt_to"))["attempts"].append(att)
        self._ended(q, rec, out, refused=True)

    def _ended(self, q: dict[str, Any], rec: dict[str, Any], out: list[dict[str, Any]],
               refused: bool = False) -> None:
        """The queue file is gone: qmgr's "removed", or a refusal that leaves none (then
        the refusal's envelope is the only sender we get). Emitted now, or when its
        session disconnects."""
        if q.get("late"):
            return  # a line about a mail already ended (see _qentry)
        if refused:
            self.refused[q["key"]] = rec.get("time_unix_ns")
            while len(self.refused) > self.opts.max_open:
                self.refused.popitem(last=False)
        if "mail_from" in rec and "mail_from" not in q:
            q["mail_from"] = rec["mail_from"]
        q["removed"] = True
        if self.sessions.get(q.get("session", "")) is None:  # none, or disconnected already
            self._emit_mail(q["key"], q, out, None, rec)

    # -- filter --------------------------------------------------------------------------
    def _filter(self, host: str, fid: str, rec: dict[str, Any], out: list[dict[str, Any]]) -> None:
        f = self._filter_entry(host, fid, rec, out)
        self._touch(f, rec)
        ev = rec.get("event")
        if ev == "filter_new":
            f["message_id"] = rec.get("message_id")
        elif ev in ("filter_accept", "filter_block", "filter_quarantine"):
            r = {"rcpt_to": rec.get("rcpt_to"), "rule": rec.get("rule")}
            if ev == "filter_accept":
                r.update(dsn_class="A", result="success", next_qid=rec.get("qid"),
                         relay=rec.get("qid"))
            elif ev == "filter_block":
                r.update(dsn_class="B", result="blocked", relay=None)
            else:
                qid = rec.get("quarantine_id", rec.get("qid"))
                r.update(dsn_class="Q", result="quarantined", quarantine_id=qid, relay=qid)
            if len(f["results"]) < MAX_RCPTS:
                f["results"].append(r)

    # -- emitting ------------------------------------------------------------------------
    def _take_filter(self, host: str, fid: str | None) -> dict[str, Any] | None:
        if not fid:
            return None
        return self.filters.pop(f"{host}\x00{fid}", None)

    def _emit_session(self, key: str, s: dict[str, Any], out: list[dict[str, Any]],
                      incomplete: str | None, rec: dict[str, Any] | None = None) -> None:
        self.sessions.pop(key, None)
        host = key.split("\x00", 1)[0]
        end_ns = rec.get("time_unix_ns") if rec else s["last_ns"]
        ts = rec.get("time_source") if rec else None
        f = self._take_filter(host, s.get("filter_id"))
        recipients = list(s["recipients"])
        ids = list(s.get("event_ids", []))
        if f is not None:
            recipients.extend({"mail_from": s.get("mail_from"), **r} for r in f["results"])
            ids.extend(f.get("event_ids", []))
        fields: dict[str, Any] = {"conn_pid": s.get("conn_pid"), "service": s.get("program")}
        for k in ("remote_host", "remote_ip", "remote_port", "filter_id"):
            if k in s:
                fields[k] = s[k]
        fields["start"] = iso(s["first_ns"])
        fields["start_unix_ns"] = s["first_ns"]
        fields["duration_s"] = seconds(s["first_ns"], end_ns)
        fields["qids"] = s["qids"]
        fields["recipients"] = recipients
        if s["qids"]:
            result = "accepted"
        elif any(r.get("result") == "greylisted" for r in recipients):
            result = "greylisted"
        elif recipients:
            result = "rejected"
        else:
            result = "no_mail"
        fields["result"] = result
        if incomplete:
            fields["incomplete_reason"] = incomplete
        fields["event_ids"] = sorted(set(ids), key=ids.index)
        flags = [F_INCOMPLETE] if incomplete else []
        if not s.get("connected") and "postscreen" not in key:
            flags.append(F_PARTIAL)
        text = (f"session smtpd pid {s.get('conn_pid')} from {s.get('remote_host') or ''}"
                f"[{s.get('remote_ip') or '?'}]: {result}")
        gap_fields(s, fields, flags)
        summ = summary("smtp_session", "postfix", "s", s["origin"], end_ns, ts, fields, text, flags)
        out.append(summ)
        # Queue entries waiting for this session's disconnect.
        sref = {"event_id": summ["event_id"], "conn_pid": s.get("conn_pid"),
                "remote_host": s.get("remote_host"), "remote_ip": s.get("remote_ip"),
                "event_ids": s.get("event_ids", [])}
        for qid in s["qids"]:
            q = self.queue.get(f"{host}\x00{qid}")
            if q is None:
                continue
            q["session_ref"] = sref
            del q["session"]
            if q.get("removed"):
                self._emit_mail(q["key"], q, out, None)

    def _emit_mail(self, key: str, q: dict[str, Any], out: list[dict[str, Any]],
                   incomplete: str | None, rec: dict[str, Any] | None = None) -> None:
        self.queue.pop(key, None)
        host = key.split("\x00", 1)[0]
        end_ns = rec.get("time_unix_ns") if rec else q["last_ns"]
        if not incomplete and rec is None:
            end_ns = q["last_ns"]
        ts = rec.get("time_source") if rec else None
        sref = q.get("session_ref")
        if sref is None and q.get("session") in self.sessions:  # session still open
            s = self.sessions[q["session"]]
            eid = s["origin"].get("event_id")
            sref = {"event_id": f"{eid}s" if eid else None, "conn_pid": s.get("conn_pid"),
                    "remote_host": s.get("remote_host"), "remote_ip": s.get("remote_ip"),
                    "event_ids": s.get("event_ids", [])}
        f = self._take_filter(host, q.get("filter_id"))
        ids: list[str] = []
        if sref is not None:
            ids.extend(sref.get("event_ids", []))
        ids.extend(q.get("event_ids", []))
        rcpts = [dict(r) for r in q["rcpts"]]
        for r in rcpts:
            if r["attempts"]:
                last = r["attempts"][-1]
                for k in ("result", "status", "dsn", "dsn_class", "relay", "relay_host",
                          "relay_ip", "relay_port", "text", "delay", "orig_to", "smtp_code",
                          "reason", "stage"):
                    if k in last:
                        r[k] = last[k]
            r["n_attempts"] = len(r["attempts"]) + r.get("attempts_dropped", 0)
            if q.get("expired") and r.get("result") in ("deferral", None):
                r["result"], r["status"] = "failure", "expired"
        fields: dict[str, Any] = {"qid": q["qid"]}
        for k in ("mail_from", "size", "nrcpt", "message_id", "remote_host", "remote_ip",
                  "orig_client_host", "orig_client_ip", "filter_id", "bounces"):
            if k in q and q[k] is not None:
                fields[k] = q[k]
        if f is not None:
            ids.extend(f.get("event_ids", []))
            fields["filter"] = {"filter_id": f["filter_id"], "results": f["results"]}
            byrcpt: dict[str, list[dict[str, Any]]] = {}
            for res in f["results"]:
                byrcpt.setdefault(str(res.get("rcpt_to")), []).append(res)
            # The filter decided each recipient's fate: its verdict is the recipient's outcome.
            seen = set()
            for r in rcpts:
                res_list = byrcpt.get(str(r["rcpt_to"]))
                if res_list:
                    seen.add(str(r["rcpt_to"]))
                    r.update({k: v for k, v in res_list[0].items() if k != "rcpt_to"})
                    r["filter_verdicts"] = len(res_list)
            for res in f["results"]:
                if str(res.get("rcpt_to")) not in seen:
                    seen.add(str(res.get("rcpt_to")))
                    rcpts.append({**res, "attempts": [], "n_attempts": 0})
        for r in rcpts:
            r.pop("attempts_index", None)
        fields["birth"] = iso(q["first_ns"])
        fields["birth_unix_ns"] = q["first_ns"]
        fields["queue_time_s"] = None if incomplete else seconds(q["first_ns"], end_ns)
        fields["recipients"] = rcpts
        fields["n_recipients"] = len(rcpts)
        res = [r.get("result") for r in rcpts]
        fields["n_success"] = res.count("success")
        fields["n_failure"] = sum(1 for x in res if x in ("failure", "blocked"))
        fields["n_deferral"] = res.count("deferral")
        kinds = set(res)
        fields["result"] = (next(iter(kinds)) if len(kinds) == 1 else
                            None if not kinds else "mixed")
        if sref is not None:
            fields["session"] = {k: v for k, v in sref.items() if k != "event_ids"}
        if incomplete:
            fields["incomplete_reason"] = incomplete
        fields["event_ids"] = sorted(set(ids), key=ids.index)
        flags = [F_INCOMPLETE] if incomplete else []
        if "mail_from" not in q and "size" not in q:
            flags.append(F_PARTIAL)
        text = (f"mail {q['qid']} from <{q.get('mail_from', '?')}> "
                + ", ".join(f"{r.get('rcpt_to')} {r.get('result')}" for r in rcpts[:5]))
        gap_fields(q, fields, flags)
        out.append(summary("mail", "postfix", "m", q["origin"], end_ns, ts, fields, text, flags))


def _rcpt(q: dict[str, Any], rcpt: str | None) -> dict[str, Any]:
    idx = q["rindex"].get(str(rcpt))
    if idx is None:
        idx = q["rindex"][str(rcpt)] = len(q["rcpts"])
        q["rcpts"].append({"rcpt_to": rcpt, "attempts": []})
    return q["rcpts"][idx]
