"""``shipper track`` filtering/rendering and ``shipper stats`` aggregation. Pure.

Stats are bounded in memory whatever the input size: delays go into a fixed
log-scale histogram (percentiles are read from it, ±9 %, once there are more than
EXACT_MAX values; below, they are exact), and the "top" tables are
counted with a capped counter that prunes its long tail (approximate for rare keys,
exact for the heavy hitters it reports).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shipper.ipaddr import ip_address
from shipper.record import rfc3339_ns
from shipper.track import postfix_xdelay

# -- track ---------------------------------------------------------------------------------


@dataclass(slots=True)
class TrackQuery:
    mail_from: str | None = None  # case-insensitive substring of the envelope sender
    rcpt_to: str | None = None  # … of any recipient
    since_ns: int | None = None  # summary end time >= since
    until_ns: int | None = None  # summary start (birth) time <= until
    host: str | None = None  # client or relay host (substring); an IP: exactly
    server: str | None = None  # the log's own host (substring): the server that logged it
    msgid: str | None = None  # qmail msg number (a session's mails' too), Postfix queue id or Message-ID
    qp: int | None = None  # qmail-queue's pid: a mail's, its bounce's or forwarded copy's, a session's
    search: str | None = None  # case-insensitive substring anywhere in the summary
    sessions: bool = False  # also sessions that queued mail (by default: only those that did not)


def _low(x: Any) -> str:
    return str(x).lower() if x is not None else ""


def _recipients(rec: dict[str, Any]) -> list[str]:
    rc = [_low(r.get("rcpt_to")) for r in rec.get("recipients", [])]
    rc += [_low(x) for x in rec.get("accepted_rcpts", [])]
    rc += [_low(d.get("rcpt_to")) for d in rec.get("decisions", []) if d.get("rcpt_to")]
    return rc


def _senders(rec: dict[str, Any]) -> list[str]:
    s = [_low(rec.get("mail_from"))] if "mail_from" in rec else []
    s += [_low(r.get("mail_from")) for r in rec.get("recipients", []) if "mail_from" in r]
    s += [_low(d.get("mail_from")) for d in rec.get("decisions", []) if "mail_from" in d]
    return s


def _hosts(rec: dict[str, Any]) -> list[str]:
    # (not the log's own "host": that is every summary of a server, see --server)
    h = [_low(rec.get(k)) for k in ("remote_host", "remote_ip", "orig_client_host",
                                     "orig_client_ip") if rec.get(k)]
    sess = rec.get("session") or {}
    h += [_low(sess.get(k)) for k in ("remote_host", "remote_ip") if sess.get(k)]
    for r in rec.get("recipients", []):
        h += [_low(r.get(k)) for k in ("relay_ip", "relay_host", "relay") if r.get(k)]
    return h


def _host_matches(want: str, rec: dict[str, Any]) -> bool:
    """A host query: a name or part of one is looked for in the host fields; an IP
    address is that address (198.51.100.7 is not 198.51.100.77), also when written
    ``::ffff:198.51.100.7`` or inside a relay's ``name[IP]:port``."""
    hosts = _hosts(rec)
    ip = ip_address(want.strip("[]"))
    if ip is None:
        want = want.lower()
        return any(want in h for h in hosts)
    for h in hosts:
        if ip_address(h) == ip:
            return True
        i = h.find("[")
        if i >= 0 and ip_address(h[i + 1:h.find("]", i)]) == ip:
            return True
    return False


def _refused_match(rec: dict[str, Any], q: TrackQuery) -> bool:
    """A session that queued mail and also refused something the query names: what it
    refused is in no mail, so the session itself must be shown."""
    refused = [d for d in rec.get("decisions", []) if d.get("action") in ("Reject", "Deferred")]
    # Postfix: a session's NOQUEUE rejects are its recipients (a filter's verdicts too)
    refused += [r for r in rec.get("recipients", []) if r.get("result") in ("rejected", "greylisted")]
    if not refused or (q.rcpt_to is None and q.mail_from is None and q.search is None):
        return False
    if q.rcpt_to is not None and not any(q.rcpt_to.lower() in _low(d.get("rcpt_to"))
                                         for d in refused):
        return False
    if q.mail_from is not None and not any(q.mail_from.lower() in _low(d.get("mail_from"))
                                           for d in refused):
        return False
    return q.search is None or q.search.lower() in orjson.dumps(refused).decode().lower()


def matches(rec: dict[str, Any], q: TrackQuery) -> bool:
    ev = rec.get("event")
    if ev not in ("mail", "smtp_session"):
        return False
    if ev == "smtp_session" and not q.sessions and (rec.get("qps") or rec.get("qids")
                                                     or rec.get("mails")) \
            and not _refused_match(rec, q):
        return False  # its mails are reported (with the session inside)
    if q.since_ns is not None and (rec.get("time_unix_ns") or 0) < q.since_ns:
        return False
    if q.until_ns is not None and (start_of(rec) or 0) > q.until_ns:
        return False
    if q.mail_from is not None:
        want = q.mail_from.lower()
        if not any(want in s for s in _senders(rec)):
            return False
    if q.rcpt_to is not None:
        want = q.rcpt_to.lower()
        if not any(want in r for r in _recipients(rec)):
            return False
    if q.host is not None and not _host_matches(q.host, rec):
        return False
    if q.server is not None and q.server.lower() not in _low(rec.get("host")):
        return False
    if q.msgid is not None:
        want = q.msgid.strip("<>").lower()
        ids = {_low(rec.get("msg")), _low(rec.get("qid")), _low(rec.get("message_id"))}
        # a session's mails: it carries the client of a mail that ended before the
        # reply naming its qp was logged (the mail then names no session)
        ids.update(_low(m.get("msg")) for m in rec.get("mails", ()))
        if want not in ids:
            return False
    if q.qp is not None and q.qp not in _qps(rec):
        return False
    return q.search is None or q.search.lower() in orjson.dumps(rec).decode().lower()


def start_of(rec: dict[str, Any]) -> int | None:
    """When a summary began, as far as the input tells: its birth or start, else (a mail
    begun before the input, ``partial``) its first attempt seen, which it began before
    (its end made a mail retried in the period pass for one begun after it)."""
    t = rec.get("birth_unix_ns") or rec.get("start_unix_ns")
    if t:
        return t
    seen = [a.get("start_unix_ns") or a.get("time_unix_ns") for r in rec.get("recipients", ())
            for a in r.get("attempts", ())]
    return min([x for x in seen if x] or [rec.get("time_unix_ns") or 0]) or None


def _qps(rec: dict[str, Any]) -> list[Any]:
    """The qps a summary names: its own, its bounce's, its forwarded copies', a session's."""
    qps = [rec.get("qp"), rec.get("bounce_qp"), *rec.get("qps", ())]
    return qps + [r.get("forward_qp") for r in rec.get("recipients", ())]


def _time(ns: int | None, utc: bool = False) -> str:
    """A time to ms, in local time (the zone --since/--until and tai64nlocal read) or
    UTC, its offset said: ``2024-05-01 12:00:00.101+02:00``, ``… 10:00:00.101Z``."""
    if ns is None:
        return "?"
    secs, frac = divmod(ns, 1_000_000_000)
    dt = datetime.fromtimestamp(secs, UTC)
    if utc:
        zone = "Z"
    else:
        dt = dt.astimezone()
        off = dt.strftime("%z")  # +0200; +053045 for a zone of seconds (LMT)
        zone = f"{off[:3]}:{off[3:5]}" + (f":{off[5:]}" if len(off) > 5 else "")
    return f"{dt:%Y-%m-%d %H:%M:%S}.{frac // 1_000_000:03d}{zone}"


def _tls(v: Any) -> str:
    """A session's ``tls`` as shown: the cipher after "TLS", ``TLS``/``STARTTLS`` alone
    (``TLS`` is what is kept when the cipher is not logged: "TLS TLS" read as a stutter)."""
    v = str(v)
    return f" {v}" if "TLS" in v.upper() else f" TLS {v}"


def _span(s: float, digits: int) -> str:
    """A duration as an admin reads it: seconds below a minute, else 3d 4h / 2h 5m / 7m 3s."""
    if s < 60:
        return f"{s:.{digits}f}s"
    n = int(s)
    for unit, sub, name, sub_name in ((86400, 3600, "d", "h"), (3600, 60, "h", "m"), (60, 1, "m", "s")):
        if n >= unit:
            return f"{n // unit}{name} {n % unit // sub}{sub_name}"
    return f"{s:.{digits}f}s"


SHOW_ALL_RCPTS = 20  # a mail with more: only the recipients asked for (--to) are shown


def render_text(rec: dict[str, Any], utc: bool = False, rcpt_to: str | None = None) -> str:
    """One mail or session as a readable block (ends with a blank line); times in local
    time, or in UTC with ``utc``. ``rcpt_to`` (track's --to): of a mail with more than
    SHOW_ALL_RCPTS recipients, only those it matches are shown, the others counted in a
    line (an ezmlm post to 5,000 subscribers was 10,000 lines to look through for one)."""
    def _t(ns: int | None) -> str:
        return _time(ns, utc)

    lines: list[str] = []
    flags = rec.get("flags") or []
    tag = f"  [{', '.join(flags)}{': ' + rec['incomplete_reason'] if 'incomplete_reason' in rec else ''}]" \
        if flags else ""
    if rec.get("event") == "mail":
        ident = f"msg {rec['msg']}" if "msg" in rec else f"queue id {rec.get('qid')}"
        if rec.get("queue"):  # indimail's queues: the same msg number in two at once
            ident += f" in {rec['queue']}"
        lines.append(f"mail {ident} ({rec.get('program')}, host {rec.get('host') or '-'}){tag}")
        lines.append(f"  from     <{rec.get('mail_from', '?')}>  {rec.get('size', '?')} bytes"
                     + (f"  qp {rec['qp']}" if "qp" in rec else "")
                     + (f"  message-id <{rec['message_id']}>" if rec.get("message_id") else ""))
        # an incomplete mail's time is its latest line's, not an end
        done = "last seen" if "incomplete" in flags else "done"
        lines.append(f"  queued   {_t(rec.get('birth_unix_ns'))}   {done} {_t(rec.get('time_unix_ns'))}"
                     + (f"   in queue {_span(rec['queue_time_s'], 3)}" if rec.get("queue_time_s") is not None else ""))
        sess = rec.get("session")
        if sess:
            lines.append(f"  client   {sess.get('remote_host') or ''}[{sess.get('remote_ip') or '?'}]"
                         + (f" {sess.get('proto')}" if sess.get("proto") else "")
                         + (_tls(sess["tls"]) if sess.get("tls") else "")
                         + (" AUTH" if sess.get("authenticated") else "")
                         + f" (session pid {sess.get('conn_pid')}, linked by {sess.get('link', 'pid')})")
        elif rec.get("remote_ip"):
            lines.append(f"  client   {rec.get('remote_host') or ''}[{rec['remote_ip']}]")
        if rec.get("bounce_of"):
            b = rec["bounce_of"]  # (its qp unknown: the bounced mail began before the input)
            lines.append(f"  bounce of msg {b.get('msg')}"
                         + (f" (qp {b['qp']})" if b.get("qp") is not None else ""))
        if rec.get("bounce_qp") is not None:
            lines.append(f"  bounced: bounce message qp {rec['bounce_qp']}")
        for b in rec.get("bounces", ()):  # Postfix: bounce(8)'s notifications
            lines.append(f"  bounced: {b.get('bounce_to')} {b.get('notification')} notification, "
                         f"queue id {b.get('bounce_qid')}")
        if rec.get("forward_of"):
            fw = rec["forward_of"]
            lines.append(f"  forward of msg {fw.get('msg')}"
                         + (f" (qp {fw['qp']})" if fw.get("qp") is not None else "")
                         + f" to <{fw.get('rcpt_to')}>")
        if rec.get("bounce_discarded"):
            lines.append(f"  {rec['bounce_discarded']} bounce: discarded")
        rcpts = rec.get("recipients", [])
        others = ""
        if rcpt_to is not None and len(rcpts) > SHOW_ALL_RCPTS:
            want = rcpt_to.lower()
            asked = [r for r in rcpts if want in _low(r.get("rcpt_to"))]
            if asked:  # (none: a bounce or copy shown after its mail, say)
                rest = Counter(str(r.get("result") or "pending") for r in rcpts
                               if want not in _low(r.get("rcpt_to")))
                rcpts = asked
                others = (f"  and      {sum(rest.values())} other recipients ("
                          + ", ".join(f"{n} {k}" for k, n in sorted(rest.items()))
                          + "; --json lists them)")
        for r in rcpts:
            lines.append(f"  to       <{r.get('rcpt_to')}> {r.get('channel') or ''} "
                         f"{(r.get('result') or 'pending').upper()}"
                         + (f" dsn {r['dsn']}" if r.get("dsn") else "")
                         + (f" via {r.get('relay') or r.get('relay_ip')}" if r.get("relay") or r.get("relay_ip") else "")
                         + (f" after {_span(r['delay_s'], 1)}" if r.get("delay_s") is not None else "")
                         + (f" ({r['n_attempts']} attempts)" if (r.get("n_attempts") or 0) > 1 else "")
                         + (f", forwarded: copy qp {r['forward_qp']}"
                            + (f" msg {r['forward_msg']}" if "forward_msg" in r else "")
                            if "forward_qp" in r else ""))
            for att in r.get("attempts", [])[-5:]:
                text = (att.get("text") or "").replace("\n", " / ")
                # an attempt with no result: when it started (qmail-send restarted, or still on)
                when = _t(att.get("end_unix_ns") or att.get("time_unix_ns") or att.get("start_unix_ns"))
                what = att.get("result") or ("interrupted (qmail-send restarted)"
                                             if att.get("interrupted") else
                                             "result lost (lines of the log lost)"
                                             if att.get("lost") else "started, no result yet")
                lines.append(f"           {when} {what}" + (f": {text[:160]}" if text else ""))
        if others:
            lines.append(others)
    else:
        lines.append(f"session {rec.get('server') or rec.get('service') or rec.get('program')} pid "
                     f"{rec.get('conn_pid')} (host {rec.get('host') or '-'}){tag}")
        lines.append(f"  client   {rec.get('remote_host') or ''}[{rec.get('remote_ip') or '?'}]"
                     + (f":{rec['remote_port']}" if rec.get("remote_port") else "")
                     + (f" {rec['proto']}" if rec.get("proto") else "")
                     + (_tls(rec["tls"]) if rec.get("tls") else "")
                     + (f" HELO {rec['helo']}" if rec.get("helo") else ""))
        lines.append(f"  time     {_t(rec.get('start_unix_ns'))} .. {_t(rec.get('time_unix_ns'))}"
                     f"   result {rec.get('result')}")
        for d in rec.get("decisions", []):
            lines.append(f"  {d.get('action')} {d.get('check') or ''} {d.get('condition') or d.get('smtp_code') or ''}"
                         + (f" from <{d['mail_from']}>" if "mail_from" in d else "")
                         + (f" to <{d['rcpt_to']}>" if "rcpt_to" in d else "")
                         + (f": {d['text']}" if d.get("text") else ""))
        for r in rec.get("recipients", []):
            lines.append(f"  {r.get('result')} [{r.get('dsn_class')}] from <{r.get('mail_from', '')}> "
                         f"to <{r.get('rcpt_to')}>"
                         + (f": {r.get('smtp_code', '')} {r.get('dsn', '')} {r.get('reason', '')}".rstrip()
                            if r.get("smtp_code") or r.get("reason") else ""))
        if rec.get("accepted_rcpts"):
            # (mail_from is the session's last: with several messages, not every one's)
            n_msgs = len(rec.get("qps") or ()) + (rec.get("qps_dropped") or 0)
            lines.append(f"  accepted {' '.join(f'<{r}>' for r in rec['accepted_rcpts'][:10])}"
                         + ("" if "mail_from" not in rec else f" from <{rec['mail_from']}>"
                            if n_msgs <= 1 else
                            f" (of {n_msgs} messages; the last from <{rec['mail_from']}>)"))
        for m in rec.get("mails", []):
            lines.append(f"  queued   msg {m.get('msg')} qp {m.get('qp')}")
        linked = {m.get("qp") for m in rec.get("mails", [])}
        for qp in rec.get("qps", []):
            if qp not in linked:  # its info msg is not in the input (or came after the session)
                lines.append(f"  queued   qp {qp}")
        for qid in rec.get("qids", []):
            lines.append(f"  queued   {qid}")
    lines.append("")
    return "\n".join(lines) + "\n"


# -- stats ---------------------------------------------------------------------------------

_BUCKETS_PER_OCTAVE = 8
_MIN_S = 0.001


def _bucket(seconds: float) -> int:
    if seconds <= _MIN_S:
        return 0
    return 1 + int(math.log2(seconds / _MIN_S) * _BUCKETS_PER_OCTAVE)


def _bucket_upper(b: int) -> float:
    return _MIN_S * 2 ** (b / _BUCKETS_PER_OCTAVE)


EXACT_MAX = 10_000  # values kept for exact percentiles; beyond, the histogram's (±9 %)


class Histogram:
    """Log-scale histogram of durations in seconds (bounded: ~300 buckets up to years).

    The first EXACT_MAX values are also kept as they are: percentiles of a small input
    are exact (nearest rank, what ``sort -n | awk`` gives an admin checking them)."""

    __slots__ = ("counts", "n", "total", "max", "values")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0.0
        self.max = 0.0
        self.values: list[float] | None = []

    def add(self, s: float) -> None:
        b = _bucket(s)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.n += 1
        self.total += s
        if s > self.max:
            self.max = s
        if self.values is not None:
            if len(self.values) < EXACT_MAX:
                self.values.append(s)
            else:
                self.values = None

    def add_many(self, s: float, n: int) -> None:
        """``n`` values known only by their mean ``s`` (attempts folded): counted, in
        the total and the histogram; the percentiles are no longer exact."""
        if n == 1:
            self.add(s)
            return
        b = _bucket(s)
        self.counts[b] = self.counts.get(b, 0) + n
        self.n += n
        self.total += s * n
        if s > self.max:
            self.max = s
        self.values = None

    def percentile(self, p: float) -> float | None:
        if not self.n:
            return None
        if self.values is not None:  # nearest rank: the smallest value with p % at or below it
            v = sorted(self.values)
            return v[max(0, math.ceil(p / 100 * self.n) - 1)]
        want = p / 100 * self.n
        acc = 0
        for b in sorted(self.counts):
            acc += self.counts[b]
            if acc >= want:
                return min(_bucket_upper(b), self.max)
        return self.max

    def summary(self) -> dict[str, Any]:
        return {"count": self.n, "mean": round(self.total / self.n, 3) if self.n else None,
                **{f"p{p}": _r(self.percentile(p)) for p in (50, 90, 95, 99)},
                "max": round(self.max, 3) if self.n else None,
                "exact": self.values is not None}


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


class TopCounter:
    """Counter that keeps at most ~2×cap keys (prunes the tail to cap)."""

    __slots__ = ("c", "cap")

    def __init__(self, cap: int = 5000) -> None:
        self.c: Counter[str] = Counter()
        self.cap = cap

    def add(self, key: str, n: int = 1) -> None:
        self.c[key] += n
        if len(self.c) > 2 * self.cap:
            self.c = Counter(dict(self.c.most_common(self.cap)))

    def top(self, n: int) -> list[tuple[str, int]]:
        return self.c.most_common(n)


def _reason(text: str | None) -> str:
    """A failure text made groupable: first line, addresses and numbers kept short."""
    if not text:
        return "?"
    first = text.replace("\n", " / ")
    return first[:120]


class Stats:
    """qmailanalog-style totals over ``mail`` and ``smtp_session`` summaries.

    How they compare with qmailanalog's ``zoverall`` (matchup's ``m``/``d`` lines):
    ``completed`` is its "Completed messages" (``info msg`` and ``end msg`` both in
    the input); ``completed_recipients`` its "Recipients for completed messages"
    (their successes + failures) and ``completed_attempts`` its "Total delivery
    attempts for completed messages"; ``deliveries`` its "Total delivery attempts"
    (every attempt with a result, of any message); ``delay_s`` its ddelay (per
    successful delivery: its end minus the message's ``info msg``; ``delay_unknown``
    counts those of messages whose ``info msg`` is not in the input), ``delivery_time_s``
    its xdelay, ``queue_time_s`` its qtime (completed messages). ``messages``,
    ``bytes`` and ``recipients`` also count messages still in the queue at the end of
    the input (``incomplete``) and those begun before it (``partial``). ``bounces``
    ``queued``: qmail's ``bounce msg`` and Postfix's bounce(8) ``sender non-delivery
    notification`` (not its delay notices or the postmaster's copies).
    ``untracked_deliveries`` (set by the caller, from the qmail tracker): delivery
    results counted in no ``mail``, their message not tracked (begun before the input,
    or, past ``--max-open`` open messages, evicted or not taken in).
    """

    def __init__(self, top: int = 10) -> None:
        self.top_n = top
        self.messages = 0
        self.incomplete = 0
        self.partial = 0  # (and not incomplete: the three add up to messages)
        self.completed = 0
        self.completed_bytes = 0
        self.completed_recipients = 0
        self.completed_attempts = 0
        self.bounces = Counter[str]()  # queued ("bounce msg"), discarded (triple/double)
        self.bytes = 0
        self.recipients = 0
        self.attempts = Counter[str]()  # success / failure / deferral per delivery attempt
        self.final = Counter[str]()  # per recipient, last outcome
        self.delay = Histogram()  # per recipient: queue entry → final delivery
        self.delay_unknown = 0  # successes whose mail's birth is not in the input (partial)
        self.xdelay = Histogram()  # per delivery attempt duration
        self.qtime = Histogram()  # per message: time in queue
        self.senders = TopCounter()
        self.sender_bytes = TopCounter()
        self.rcpts = TopCounter()
        self.failures = TopCounter()
        self.deferrals = TopCounter()
        self.rejections = TopCounter()
        self.host_deferrals = TopCounter()
        self.sessions = 0
        self.sessions_incomplete = 0
        self.session_results = Counter[str]()
        self.tls_sessions = 0
        self.other_sessions: Counter[str] = Counter()  # POP3, IMAP: not in the SMTP figures
        self.untracked_deliveries = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def add(self, rec: dict[str, Any]) -> None:
        t = rec.get("time_unix_ns")  # a summary's time is its end
        # the period runs from the earliest start, as zoverall's time span (from the
        # first birth), not from the first summary's end
        t0 = start_of(rec)
        if t0 is not None and (self.first_ns is None or t0 < self.first_ns):
            self.first_ns = t0
        if t is not None and (self.last_ns is None or t > self.last_ns):
            self.last_ns = t
        if rec.get("event") == "mail":
            self._mail(rec)
        elif rec.get("event") == "smtp_session":
            self._session(rec)

    def _mail(self, rec: dict[str, Any]) -> None:
        flags = rec.get("flags") or []
        done = "incomplete" not in flags and "partial" not in flags
        if "incomplete" in flags:
            self.incomplete += 1
        elif "partial" in flags:
            self.partial += 1
        else:
            self.completed += 1
            self.completed_bytes += rec.get("size") or 0
        if rec.get("bounce_qp") is not None:
            self.bounces["queued"] += 1
        for b in rec.get("bounces", ()):  # Postfix bounce(8): a bounce to the sender each
            if b.get("notification") == "non-delivery" and b.get("bounce_to") == "sender":
                self.bounces["queued"] += 1
        if rec.get("bounce_discarded"):
            self.bounces[f"{rec['bounce_discarded']}_discarded"] += 1
        self.messages += 1
        self.bytes += rec.get("size") or 0
        sender = rec.get("mail_from")
        if sender is not None:
            self.senders.add(sender or "<>")
            self.sender_bytes.add(sender or "<>", rec.get("size") or 0)
        if rec.get("queue_time_s") is not None:
            self.qtime.add(rec["queue_time_s"])
        exact = "n_deferral" in rec and rec.get("program") == "qmail-send"
        postfix = rec.get("program") == "postfix"
        if exact:  # matchup's counts: every attempt, also those beyond the kept ones
            self.attempts["success"] += rec["n_success"]
            self.attempts["failure"] += rec["n_failure"]
            self.attempts["deferral"] += rec["n_deferral"]
            if done:  # matchup's m line: nk + nd recipients, nk + nd + nz tries
                self.completed_recipients += rec["n_success"] + rec["n_failure"]
                self.completed_attempts += rec["n_success"] + rec["n_failure"] + rec["n_deferral"]
        for r in rec.get("recipients", []):
            self.recipients += 1
            self.rcpts.add(str(r.get("rcpt_to")))
            self.final[r.get("result") or "pending"] += 1
            if done and not exact and r.get("result") not in (None, "deferral"):
                self.completed_recipients += 1
            # ddelay: successful deliveries only (a failure is no delivery)
            if r.get("result") == "success":
                # (Postfix: its delay=, the time since the message arrived)
                d = r.get("delay_s") if not postfix else r.get("delay")
                if d is not None:
                    self.delay.add(d)
                else:  # (a made-up delay from its first line seen skewed the percentiles)
                    self.delay_unknown += 1
            for att in r.get("attempts", []):
                if att.get("result") is not None:
                    self._attempt(r, att, 1, att.get("duration_s") if not postfix
                                  else postfix_xdelay(att), None, exact, done)
            # attempts past the list's cap, folded: a host retried for days is not
            # under-counted in the reasons, hosts and delivery times
            for g in r.get("attempts_folded", ()):
                if g.get("result") is not None and g.get("count"):
                    self._attempt(r, g, g["count"], g.get("time_s"), g.get("timed", 0),
                                  exact, done)
            if r.get("result") in ("failure", "blocked"):
                self.failures.add(_reason(r.get("text") or r.get("reason") or r.get("result")))

    def _attempt(self, r: dict[str, Any], att: dict[str, Any], n: int, x: float | None,
                 timed: int | None, exact: bool, done: bool) -> None:
        """``n`` delivery attempts alike (one listed, or a folded group of them, whose
        ``timed`` ones took ``x`` seconds in all) of recipient ``r``."""
        res = att["result"]
        if not exact:
            self.attempts[res] += n
            if done:
                self.completed_attempts += n
        if timed is None:
            if x is not None:
                self.xdelay.add(x)
        elif timed and x is not None:
            self.xdelay.add_many(x / timed, timed)
        if res == "deferral":
            self.deferrals.add(_reason(att.get("text")), n)
            where = att.get("relay_ip") or att.get("relay_host") or att.get("relay")
            if where is None and r.get("rcpt_to"):
                where = "@" + str(r["rcpt_to"]).rsplit("@", 1)[-1]
            self.host_deferrals.add(str(where), n)

    def _session(self, rec: dict[str, Any]) -> None:
        if rec.get("protocol", "smtp") != "smtp":  # a POP3 or IMAP login under tcpserver
            self.other_sessions[rec["protocol"]] += 1
            return
        self.sessions += 1
        if "incomplete" in (rec.get("flags") or []):
            self.sessions_incomplete += 1
        self.session_results[rec.get("result") or "?"] += 1
        if rec.get("tls"):
            self.tls_sessions += 1
        for d in rec.get("decisions", []):
            if d.get("action") in ("Reject", "Deferred"):
                why = "::".join(str(x) for x in (d.get("action"), d.get("check"),
                                                 d.get("condition") or d.get("smtp_code")) if x)
                if d.get("source") in ("rblsmtpd", "recordio") and d.get("text"):
                    why += " " + str(d["text"])[:60]
                self.rejections.add(why)
        for r in rec.get("recipients", []):
            if r.get("result") in ("rejected", "greylisted"):
                self.rejections.add(f"{r.get('result')} {r.get('smtp_code', '')} {r.get('dsn', '')} "
                                    f"{(r.get('reason') or '')[:60]}".strip())

    def to_dict(self) -> dict[str, Any]:
        n_att = sum(self.attempts.values())
        top = self.top_n

        def rate(k: str) -> float | None:
            return round(self.attempts[k] / n_att, 4) if n_att else None

        return {
            "period": {"first": rfc3339_ns(self.first_ns) if self.first_ns else None,
                       "last": rfc3339_ns(self.last_ns) if self.last_ns else None},
            "messages": self.messages, "completed": self.completed, "incomplete": self.incomplete,
            "partial": self.partial, "bytes": self.bytes, "recipients": self.recipients,
            "completed_bytes": self.completed_bytes,
            "completed_recipients": self.completed_recipients,
            "completed_attempts": self.completed_attempts,
            "bounces": {"queued": self.bounces["queued"],
                        "double_discarded": self.bounces["double_discarded"],
                        "triple_discarded": self.bounces["triple_discarded"]},
            "deliveries": {"attempts": n_att, "success": self.attempts["success"],
                           "failure": self.attempts["failure"], "deferral": self.attempts["deferral"],
                           "success_rate": rate("success"), "failure_rate": rate("failure"),
                           "deferral_rate": rate("deferral")},
            "untracked_deliveries": self.untracked_deliveries,
            "recipient_outcomes": dict(self.final),
            "delay_s": self.delay.summary(), "delay_unknown": self.delay_unknown,
            "delivery_time_s": self.xdelay.summary(),
            "queue_time_s": self.qtime.summary(),
            "top_senders": [{"sender": k, "messages": v, "bytes": self.sender_bytes.c.get(k, 0)}
                            for k, v in self.senders.top(top)],
            "top_recipients": [{"recipient": k, "messages": v} for k, v in self.rcpts.top(top)],
            "failure_reasons": [{"reason": k, "count": v} for k, v in self.failures.top(top)],
            "deferral_reasons": [{"reason": k, "count": v} for k, v in self.deferrals.top(top)],
            "deferrals_by_host": [{"host": k, "count": v} for k, v in self.host_deferrals.top(top)],
            "sessions": {"count": self.sessions, "incomplete": self.sessions_incomplete,
                         "tls": self.tls_sessions,
                         "by_result": dict(self.session_results)},
            "other_sessions": dict(self.other_sessions),
            "rejection_reasons": [{"reason": k, "count": v} for k, v in self.rejections.top(top)],
        }


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    """An aligned text table; numbers right-aligned."""
    if not rows:
        return f"{title}\n  (none)\n\n"
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max(len(header[i]), *(len(r[i]) for r in cells)) for i in range(len(header))]
    num = [all(_isnum(r[i]) for r in cells) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  " + "  ".join(c.rjust(w) if n else c.ljust(w)
                                for c, w, n in zip(row, widths, num, strict=True)).rstrip()

    out = [title, fmt(header), "  " + "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in cells]
    return "\n".join(out) + "\n\n"


def _isnum(s: str) -> bool:
    try:
        float(s.rstrip("%"))
        return True
    except ValueError:
        return s == "-"


def _pct(x: float | None) -> str:
    return f"{x * 100:.1f}%" if x is not None else "-"


def render_stats(d: dict[str, Any]) -> str:
    """The stats dict as text tables."""
    dl = d["deliveries"]
    out = [table("Overall", ["what", "count"], [
        ["period", f"{d['period']['first'] or '-'} .. {d['period']['last'] or '-'}"],
        ["messages (all)", d["messages"]],
        ["  completed: new..end in the input (zoverall)", d["completed"]],
        ["  incomplete: no end msg (still queued)", d["incomplete"]],
        ["  partial: begun before the input", d["partial"]],
        ["bytes (all messages)", d["bytes"]],
        ["  of completed messages", d["completed_bytes"]],
        ["recipients (all messages)", d["recipients"]],
        ["  of completed: success + failure", d["completed_recipients"]],
        ["attempts for completed messages", d["completed_attempts"]],
        ["bounces queued (bounce msg, non-delivery notification)", d["bounces"]["queued"]],
        ["  discarded (double, triple)",
         f"{d['bounces']['double_discarded']}, {d['bounces']['triple_discarded']}"],
        ["delivery attempts (all messages)", dl["attempts"]],
        ["  success", f"{dl['success']} ({_pct(dl['success_rate'])})"],
        ["  failure", f"{dl['failure']} ({_pct(dl['failure_rate'])})"],
        ["  deferral", f"{dl['deferral']} ({_pct(dl['deferral_rate'])})"],
        # (else they vanished from the figures unsaid: a mail past --max-open, say)
        *([["deliveries of untracked mails (before input/--max-open)", d["untracked_deliveries"]]]
          if d.get("untracked_deliveries") else []),
        ["smtp sessions", d["sessions"]["count"]],
        ["  still open at the end", d["sessions"]["incomplete"]],
        ["  with TLS", d["sessions"]["tls"]],
        *([[f"{p} sessions (not counted above)", n] for p, n in sorted(d["other_sessions"].items())]),
    ])]
    out.append(table("Recipient outcomes", ["result", "recipients"],
                     [[k, v] for k, v in sorted(d["recipient_outcomes"].items())]))
    out.append(table("Sessions by result", ["result", "sessions"],
                     [[k, v] for k, v in sorted(d["sessions"]["by_result"].items())]))
    rows = []
    for name, key in (("ddelay: queued → delivered (successes)", "delay_s"),
                      ("xdelay: delivery attempt time", "delivery_time_s"),
                      ("qtime: time in queue (completed)", "queue_time_s")):
        h = d[key]
        rows.append([name, h["count"], h["mean"], h["p50"], h["p90"], h["p95"], h["p99"], h["max"]])
    approx = " (percentiles ±9 %: from a log-scale histogram)" if any(
        not d[k].get("exact", True) for k in ("delay_s", "delivery_time_s", "queue_time_s")) else ""
    if d.get("delay_unknown"):
        rows.append(["  successes of mails begun before the input: delay unknown",
                     d["delay_unknown"], None, None, None, None, None, None])
    out.append(table(f"Delays (seconds){approx}",
                     ["what", "n", "mean", "p50", "p90", "p95", "p99", "max"], rows))
    out.append(table("Top senders", ["sender", "messages", "bytes"],
                     [[x["sender"], x["messages"], x["bytes"]] for x in d["top_senders"]]))
    out.append(table("Top recipients", ["recipient", "messages"],
                     [[x["recipient"], x["messages"]] for x in d["top_recipients"]]))
    out.append(table("Failure reasons", ["count", "reason"],
                     [[x["count"], x["reason"]] for x in d["failure_reasons"]]))
    out.append(table("Deferral reasons", ["count", "reason"],
                     [[x["count"], x["reason"]] for x in d["deferral_reasons"]]))
    out.append(table("Deferrals by remote host", ["host", "deferrals"],
                     [[x["host"], x["count"]] for x in d["deferrals_by_host"]]))
    out.append(table("Rejection reasons (SMTP)", ["count", "reason"],
                     [[x["count"], x["reason"]] for x in d["rejection_reasons"]]))
    return "".join(out)
