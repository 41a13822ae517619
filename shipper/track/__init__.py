"""Mail tracking: correlate raw records into one summary record per mail and per SMTP session.

Pure state machines (no I/O) fed with record dicts (``Record.to_dict()`` form, or
any dict with the core keys and the event fields of docs/records.md):

* ``shipper.track.qmail``    — qmail-send message lifecycle (``mail`` records)
* ``shipper.track.session``  — tcpserver/sslserver → rblsmtpd → qmail-smtpd/recordio
  sessions (``smtp_session`` records), and the qp links to messages
* ``shipper.track.postfix``  — Postfix / PMG, pmg-log-tracker's model
* ``shipper.track.correlator`` — ``Correlator``: routes records to the three
* ``shipper.track.report``   — ``shipper stats`` / ``shipper track`` logic
* ``shipper.track.cli``      — argparse front ends (file reading only there)

This module holds the small helpers the trackers share: the summary record's
core keys (schema in docs/records.md, "Summary records").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from shipper.record import record_dict, rfc3339_ns

F_INCOMPLETE = "incomplete"  # the summary was emitted before its end was seen
F_PARTIAL = "partial"  # its beginning was not seen (started before our input)
F_LOG_GAP = "log_gap"  # lines of its log were lost while it was open (a gap record)

NS = 1_000_000_000
# An open entry → its current log time (None: not known yet): what flush ages it by
Clock = Callable[[dict[str, Any]], "int | None"]
MAX_EVENT_IDS = 200  # per summary: ids of the lines it was built from (more are counted, not kept)


_LOGDIR_FILES = frozenset({"current", "previous", "processed"})


def input_of(source: str | None) -> str:
    """The input a record's ``source`` belongs to: a logdir's ``current`` and the
    ``@….s`` archives it becomes are one input, the directory; a file is itself."""
    if source:
        head, _, base = source.rpartition("/")
        if head and (base in _LOGDIR_FILES or base[:1] == "@"):
            return head
    return source or ""


def origin(rec: dict[str, Any]) -> dict[str, Any]:
    """What a summary keeps of its first line: enough for its deterministic id and provenance."""
    return {
        "event_id": rec.get("event_id"),
        "host": rec.get("host"),
        "source": rec.get("source"),
        "file_id": rec.get("file_id"),
        "offset": rec.get("offset"),
        "time_source": rec.get("time_source"),
    }


def add_event_id(state: dict[str, Any], rec: dict[str, Any]) -> None:
    """Remember which line fed this summary (bounded)."""
    eid = rec.get("event_id")
    if eid is None:
        return
    ids = state.setdefault("event_ids", [])
    if len(ids) < MAX_EVENT_IDS:
        ids.append(eid)
    else:
        state["event_ids_dropped"] = state.get("event_ids_dropped", 0) + 1


def postfix_xdelay(att: dict[str, Any]) -> float | None:
    """A Postfix delivery's own time: ``delays=a/b/c/d``'s c (connection setup) + d
    (transmission), as qmailanalog's xdelay is qmail-remote's whole run."""
    parts = str(att.get("delays") or "").split("/")
    if len(parts) != 4:
        return None
    try:
        x = float(parts[2]) + float(parts[3])
    except ValueError:
        return None
    # a corrupt line's digit run is no time ("9" * 400 is inf: no histogram bucket)
    return round(x, 6) if math.isfinite(x) else None


MAX_FOLDED = 10  # groups of attempts kept per recipient once its list is full
_FOLD_KEYS = ("result", "text", "relay_ip", "relay_host", "relay")


def fold_attempt(r: dict[str, Any], att: dict[str, Any], time_s: float | None) -> None:
    """An attempt pushed out of recipient ``r``'s bounded list (its oldest): counted in
    ``attempts_dropped`` and, if it had a result, in ``attempts_folded``: such attempts
    grouped by result, text and relay, with their ``count``, and ``time_s``, the total
    time of the ``timed`` ones among them. Stats count them in deferral reasons, hosts
    and delivery times (a host down for days is retried far more often than the list
    holds: qmail ~170 times in a week, Postfix ~110 in five days; those tables
    under-counted it threefold). Beyond MAX_FOLDED groups they go in one of no text."""
    r["attempts_dropped"] = r.get("attempts_dropped", 0) + 1
    if att.get("result") is None:  # (interrupted, or no result: no attempt stats count)
        return
    key = tuple(att.get(k) for k in _FOLD_KEYS)
    groups = r.setdefault("attempts_folded", [])
    g = next((g for g in groups if tuple(g.get(k) for k in _FOLD_KEYS) == key), None)
    if g is None and len(groups) >= MAX_FOLDED:
        key = (key[0], None, None, None, None)
        g = next((g for g in groups if tuple(g.get(k) for k in _FOLD_KEYS) == key), None)
    if g is None:
        g = {k: v for k, v in zip(_FOLD_KEYS, key, strict=True) if v is not None or k == "text"}
        g.update(count=0, timed=0, time_s=0.0)
        groups.append(g)
    g["count"] += 1
    if time_s is not None:
        g["timed"] += 1
        g["time_s"] = round(g["time_s"] + time_s, 6)


MAX_GAP_IDS = 20  # per summary: gap records that may have taken some of its lines


def mark_gap(entry: dict[str, Any], gap_event_id: str | None) -> None:
    """A gap in the entry's log while it was open: its summary may lack lines."""
    ids = entry.setdefault("log_gap_ids", [])
    if len(ids) < MAX_GAP_IDS and gap_event_id not in ids:
        ids.append(gap_event_id)


def gap_fields(entry: dict[str, Any], fields: dict[str, Any], flags: list[str]) -> None:
    """Flag a summary whose log lost lines while it was open, naming the gap records."""
    ids = entry.get("log_gap_ids")
    if ids:
        flags.append(F_LOG_GAP)
        fields["log_gap_ids"] = list(ids)


def summary(event: str, program: str, suffix: str, first: dict[str, Any], end_ns: int | None,
            time_source: str | None, fields: dict[str, Any], text: str,
            flags: list[str] | None) -> dict[str, Any]:
    """A summary record: the core keys of a normal record, then ``fields``.

    ``event_id`` is the first line's event id plus ``suffix`` ("m" mail, "s" session),
    so replaying the same input yields the same summary id.
    """
    if time_source is None:  # ended by age, eviction or pid reuse: its lines' clock
        time_source = first.get("time_source") or "inferred"
    d = record_dict(end_ns, time_source, program, event, text, text, fields, first.get("host"),
                    None, flags, first.get("source"), first.get("file_id"), first.get("offset"))
    eid = first.get("event_id")
    d["event_id"] = f"{eid}{suffix}" if eid is not None else None
    return d


def iso(ns: int | None) -> str | None:
    return rfc3339_ns(ns) if ns is not None else None


def seconds(a_ns: int | None, b_ns: int | None) -> float | None:
    """b - a in seconds (µs precision), None when either is unknown."""
    if a_ns is None or b_ns is None:
        return None
    return round((b_ns - a_ns) / NS, 6)
