"""qmail-send lines (netqmail, notqmail, s/qmail, indimail variants) and indimail
``qmail-daemon:`` / ``qscheduler:`` lines.

qmail-send writes no program name, so ``parse`` is tried on unprefixed text:
it dispatches on the first word with one dict look-up and then runs a single
anchored regex, so text that is not qmail-send costs next to nothing.

Variants handled (formats reference §4): indimail's trailing queue name
(`` queue5``), ``D.QIDENT`` delivery ids, ``local:``/``remote:`` accounting
lines, ``warn:``/``alert: argv0: queue: …`` forms, ``(held)`` and
``delayed jobs=N`` in status; patched qmail-remote ``(rcpt)_`` prefixes;
pre-1.0 ``running``/``exiting``/``number of deliveries…``/``local deliveries…`` lines (``legacy``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from shipper.parsers.seen import keep

Parsed = tuple[str, dict[str, Any]]

# Each grammar ends with an optional " QUEUE" (indimail appends the queue name to
# every line); logsafe() leaves no spaces inside the fields, so this is unambiguous.
_STATUS_RE = re.compile(
    r"local (\d+)/(\d+)( \(held\))? remote (\d+)/(\d+)( \(held\))?"
    r"(?: delayed jobs=(\d+))?( exitasap)?(?: (\S+))?( exitasap)?"
)
# The everyday status line (a sixth of a busy log), without _STATUS_RE's ten groups.
_STATUS_PLAIN_RE = re.compile(r"local ([0-9]+)/([0-9]+) remote ([0-9]+)/([0-9]+)")
_NEW_RE = re.compile(r"msg (\d+)(?: (\S+))?")
# Addresses may hold spaces: qmail-smtpd's addrparse takes the quotes off a quoted local
# part ("john doe"@a.test is logged john doe@a.test). The sender runs to the last
# "> qp N uid N" (one written in the sender itself comes before it); a recipient to an
# optional last word without "@" (indimail's queue: an address always has an "@").
_INFO_RE = re.compile(r"msg (\d+): bytes (\d+) from <(.*)> qp (\d+) uid (\d+)(?: (\S+))?")
_STARTING_RE = re.compile(r"delivery (\S+): msg (\d+) to (local|remote) (.+?)(?: ([^\s@]+))?")
# the report may be empty ("delivery 42: success: "), and the line's trailing space is cut
_DELIVERY_RE = re.compile(r"(\S+): (success|failure|deferral):(?: (\S*)(?: (\S+))?)?")
_MANGLED_RE = re.compile(r"(\S+): report mangled, will defer(?::? (\S+))?")  # indimail: ": queue1"
_BOUNCE_RE = re.compile(r"msg (\d+) qp (\d+)(?: (\S+))?")
_BOUNCE_PROC_RE = re.compile(
    r"processor sender <(\S*)> recipient <(\S*)> messfn <\S*> bouncefn <\S*> exit=(\d+)(?: (\S+))?"
)
_DISCARD_RE = re.compile(r"bounce: discarding (?:\S*/)?(\d+)(?: (\S+))?")
_END_RE = re.compile(r"msg (\d+)(?: (?:[\w.-]+: )?(\S+))?")
_ACCOUNT_RE = re.compile(r"(\S*) (\S+) (\d+)(?: (\S+))?")
# indimail since 2021 (qsutil.c log_stat, todo-proc): "FROM TO ID BYTES bytes QUEUE[ MODE mode]"
_ACCOUNT_ID_RE = re.compile(r"(\S*) (\S+) (\d+) (\d+) bytes (\S+)(?: (\S+) mode)?")
# indimail "warn: <argv0>: <queue>: text" / "alert: <argv0>: <pid>: text: <queue>".
_ARGV0_RE = re.compile(
    r"([\w.-]+-(?:send|todo|scheduler)|todo-proc(?:essor)?|qscheduler): (\S+?): ")
# indimail's qmail-send/slowq-send on its way out: "status: qmail-send: 4711 queue1 exiting"
_STATUS_EXIT_RE = re.compile(r"[\w.-]+: \d+ (\S+) exiting")
_BOUNCE_DELETED_RE = re.compile(r"[\w.-]+: delete bounce: discarding (?:\S*/)?(\d+)(?: (\S+))?")
# todo-proc on its way out (todo-proc.c): "todo-proc: pid P QUEUE exiting",
# "todo-proc: QUEUE stop todo processing asap"
_INFO_EXIT_RE = re.compile(
    r"(?:[\w.-]+-todo|todo-proc): (?:pid \d+ (\S+) exiting|(\S+) stop todo processing asap)")
# indimail's "info: NAME: ..." with no "QUEUE: " after the name: todo-proc's "pid P: DIR: conf
# split=...", qscheduler's "pid P, queue DIR, load=N started" (qscheduler.c, which also
# writes "qcheduler"), queue-fix's "queuedir=DIR"; the queue is the directory's last part
_INFO_PROG_RE = re.compile(r"(?:[\w.-]+-(?:send|todo)|todo-proc|qs?cheduler|queue-fix): ")
_DIR_LAST = r"/(?:[^\s/]+/)*([^/\s,:]+)"  # a path, its last part captured
_QUEUE_DIR_RE = re.compile(r"(?:^|[ =])" + _DIR_LAST)
# qmail-daemon's and qscheduler's alerts name the queue directory: "pid P, queue DIR died",
# "cannot start: qmail-send with queue DIR is already running"
_QUEUE_NAMED_RE = re.compile(r"queue " + _DIR_LAST)
# a path inside one queue (qscheduler.c: "cannot start: unable to open DIR/lock/sendmutex",
# "unable to switch to DIR", queue-fix's "trouble fixing queue directory DIR"): the queue
# is the part below the queue base, which is itself named "queue"
_QUEUE_IN_PATH_RE = re.compile(r"/(queue\d+|nqueue|slowq)(?=[/:,\s]|$)")
_NOTICE_QUEUE_RE = re.compile(r"^(queue\d+): |[: ](queue\d+)$")
_QUEUE_WORD_RE = re.compile(r"(?:\S*/)?([A-Za-z][\w.-]*)")

# Delivery report text (logsafe'd): see formats reference §4.1.
_SMTP_CODE_RE = re.compile(r"([2-5]\d\d)(?=[_ /-]|$)")
_DSN_RE = re.compile(r"(?<![\d.])#?([245]\.\d{1,3}\.\d{1,3})(?!\d|\.\d)")
# (s/qmail's quit("ZConnected to", " but my name was rejected") has no space after "to";
# the TLS patch's SMTPS greeting failure says "TLS Connected to")
_RELAY_RE = re.compile(
    r"(?:(?:TLS_)?Connected_to_?)?(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)_"
)
# indimail's temp_noconn: "..._SMTP_connection_for_DOMAIN_to_IP_port_25_bind_IP_[]._(#4.4.1)/"
_NOCONN_RELAY_RE = re.compile(
    r"_connection_for_[^_\s]+_to_(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{0,40})_port_\d+")
_RELAY_FIRST = frozenset("0123456789:ABCDEFabcdef")
# The TLS patch's qmail-remote ends a TLS failure with "; connected to IP." (or
# "connecting to", before the handshake): tls_quit() in its qmail-remote.c.
_TLS_RELAY_RE = re.compile(
    r";_connect(?:ed|ing)_to_(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{0,40}?)\.?(?:/|$)")
_RECIPIENT_RE = re.compile(r"\(([^()\s]*)\)_")
# qmail-remote's per-recipient prefix, which qmail-rspawn puts before the text of every
# remote delivery: indimail's "From: <S> RCPT: <R> " (qmail-remote.c smtp()), the combined
# netqmail patch's "<From:S To:R> " (sagredo-dev/qmail qmail-remote.c, "Endersys" lines);
# outsafe() wrote "?" for any blank, so each "_" in an address is an underscore
_FROM_RCPT_RE = re.compile(r"From:_<([^<>\s]*)>_RCPT:_<([^<>\s]*)>_|<From:(\S*?)_To:([^<>\s]*)>_")
# the TLS patch's qmail-remote, built with DEBUG (sagredo) or run with it (indimail), ends
# the report with "STARTTLS proto=P; cipher=C; subject=DN; issuer=DN;" (quit()/tls_quit())
_STARTTLS_RE = re.compile(r"(?:^|/)STARTTLS_proto=([^;\s/_]+);_cipher=([^;\s/]+)[;/]")
# qmail-local's count_print(): "did F+W+P\nqp N\n" when it forwarded the message, N the
# qp of the copy it queued (that copy's "info msg ... qp N")
_FORWARD_QP_RE = re.compile(r"(?:^|/)did_\d+\+\d+\+\d+/qp_(\d{1,10})/")
_SAID = "Remote_host_said:_"


def _delivery_id(s: str) -> dict[str, Any]:
    """``delivery`` (an int in every record: one type a field, as a SIEM maps it) and
    indimail's ``D.QIDENT`` in ``delivery_qident``; an id of another shape, whole, in
    ``delivery_text``."""
    if s.isdigit() and s.isascii():
        return {"delivery": int(s)}
    head, dot, tail = s.partition(".")
    if dot and tail and head.isdigit() and head.isascii():
        return {"delivery": int(head), "delivery_qident": tail}
    return {"delivery_text": s}


_STATUS_SEEN: dict[str, dict[str, Any]] = {}  # see shipper.parsers.seen


def _status(rest: str) -> Parsed | None:
    seen = _STATUS_SEEN.get(rest)
    if seen is not None:
        return "status", seen.copy()
    m = _STATUS_PLAIN_RE.fullmatch(rest)
    if m is not None:
        la, lm, ra, rm = m.groups()
        return "status", keep(_STATUS_SEEN, rest, {
            "local_active": int(la), "local_max": int(lm),
            "remote_active": int(ra), "remote_max": int(rm)})
    if rest == "exiting":
        return "status_exiting", {}
    if rest == "qmail-todo stop processing asap":  # ext-todo's qmail-todo on SIGTERM
        return "status_exiting", {"text": rest}
    m = _STATUS_RE.fullmatch(rest)
    if m is None:
        m = _STATUS_EXIT_RE.fullmatch(rest)
        if m is not None:
            return "status_exiting", {"queue": m.group(1), "text": rest}
        if _ARGV0_RE.match(rest) is not None:  # indimail's other "status: argv0: ..." lines
            return _notice("status_info")(rest)
        return None
    la, lm, lh, ra, rm, rh, delayed, ex1, queue, ex2 = m.groups()
    f: dict[str, Any] = {"local_active": int(la), "local_max": int(lm),
                         "remote_active": int(ra), "remote_max": int(rm)}
    if ex1 or ex2:
        f["exitasap"] = True
    if queue is not None:
        f["queue"] = queue
    if lh or rh:
        f["held"] = "local,remote" if lh and rh else ("local" if lh else "remote")
    if delayed is not None:
        f["delayed_jobs"] = int(delayed)
    return "status", f


def _new(rest: str) -> Parsed | None:
    m = _NEW_RE.fullmatch(rest)
    if m is None:
        return None
    f: dict[str, Any] = {"msg": int(m.group(1))}
    if m.group(2) is not None:
        f["queue"] = m.group(2)
    return "new_msg", f


def _info(rest: str) -> Parsed | None:
    m = _INFO_RE.fullmatch(rest)
    if m is None:
        return None
    msg, size, sender, qp, uid, queue = m.groups()
    f: dict[str, Any] = {"msg": int(msg), "size": int(size), "mail_from": sender,
                         "qp": int(qp), "uid": int(uid)}
    if queue is not None:
        f["queue"] = queue
    return "info_msg", f


def _starting(rest: str) -> Parsed | None:
    m = _STARTING_RE.fullmatch(rest)
    if m is None:
        return None
    did, msg, channel, rcpt, queue = m.groups()
    f = _delivery_id(did)
    f["msg"] = int(msg)
    f["channel"] = channel
    f["rcpt_to"] = rcpt
    if queue is not None:
        f["queue"] = queue
    return "starting_delivery", f


def _delivery(rest: str) -> Parsed | None:
    m = _DELIVERY_RE.fullmatch(rest)
    if m is None:
        m = _MANGLED_RE.fullmatch(rest)
        if m is None:
            return None
        f = _delivery_id(m.group(1))
        if m.group(2) is not None:
            f["queue"] = m.group(2)
        return "delivery_mangled", f
    did, result, raw, queue = m.groups()
    f = _delivery_id(did)
    f["result"] = result
    raw = raw or ""
    f.update(delivery_text_fields(raw))
    if queue is not None:
        f["queue"] = queue
    return "delivery", f


# "/" stands for a newline, but not inside a URL (a Gmail or Outlook reply's help link),
# unless what follows is one of qmail-remote's own lines or the next line of a multi-line
# reply ("550-5.7.1 …", "550 5.7.1 …"), nor in qmail-remote's fixed
# "...in my control/locals file" (#5.4.6), qmail-lspawn's "Trouble reading users/cdb",
# nor in the path qmail-local names: "Unable to open|write FN: ERR.", "Unable to switch
# to HOMEDIR: ERR.", "Unable to run /bin/sh: ERR." (qmail-local.c); a path may hold "_"
# (an underscore, or a space logsafe'd), up to the first ":_"; nor in the TLS patch's
# certificate path "control/tlshosts/FQDN.pem" (qmail-remote.c tls_init(): "TLS unable to
# verify server with FN: ...", "No TLS achieved while FN exists") nor in the X.509 names
# of its "STARTTLS proto=...; subject=/CN=...; issuer=/C=../O=..;" (X509_NAME_oneline);
# nor in an absolute path after a space, a quote or "(" (a delivery program's message:
# maildrop's "dot-lock at /var/mail/bob.lock.", dovecot-lda's "open(/var/mail/bob)"),
# its first name lower case and more than one name (a line seldom ends in a space; a
# directory's "/" before a space is its own)
# The tlshosts path is tried only where a run of names begins (after "_", a blank, "//",
# or at the start), where its leftmost match begins: tried at every character, it ran
# to the end of a reply's a/b/c/… each time (quadratic).
_LITERAL_SLASH_RE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]{0,15}://(?:[^_/\s]|/(?!Remote_host_said|Giving_up|I'm_not_going|"
    r"[2-5][0-9][0-9][-_]|$))*"
    r"|my_control/locals_file|reading_users/cdb_in"
    r"|Unable_to_(?:open|write|switch_to|run)_(?:[^_\s:]*|[/.][^\s:]*?):_"
    r"|(?:(?<![^_\s])|(?<=/)(?=/))[^_\s/]*/(?:[^_\s/]+/)*tlshosts/[^_\s/:;]+|;_(?:subject|issuer)=[^;\s]*"
    r"|(?<=[_\"'(])/[a-z][a-z0-9._-]*(?:/[^_\s:/\"'()]+)+(?:/(?=_))?")


def _keep_slashes(m: re.Match[str]) -> str:
    return m.group(0).replace("/", "\x00")


def delivery_text_fields(raw: str) -> dict[str, Any]:
    """Fields of a logsafe'd delivery report: text, text_raw, smtp_code, dsn, relay_ip, recipient."""
    if ("://" in raw or "control/locals" in raw or "users/cdb" in raw or "Unable_to_" in raw
            or "tlshosts/" in raw or "STARTTLS_proto=" in raw or "_/" in raw or "(/" in raw
            or '"/' in raw or "'/" in raw):
        text = _LITERAL_SLASH_RE.sub(_keep_slashes, raw)
        text = text.replace("_", " ").replace("/", "\n").replace("\x00", "/").rstrip("\n")
    else:
        text = raw.replace("_", " ").replace("/", "\n").rstrip("\n")
    f: dict[str, Any] = {"text": text}
    if text != raw:
        f["text_raw"] = raw
    if "/qp_" in raw:
        m = _FORWARD_QP_RE.search(raw)
        if m is not None:
            f["qp"] = int(m.group(1))
    body = raw
    c0 = raw[:1]
    if c0 == "(":
        m = _RECIPIENT_RE.match(raw)
        if m is not None:
            f["recipient"] = m.group(1)
            body = raw[m.end():]
    elif c0 == "F" or c0 == "<":
        m = _FROM_RCPT_RE.match(raw)
        if m is not None:
            sender, rcpt = (m.group(1), m.group(2)) if m.group(2) is not None else (m.group(3), m.group(4))
            f["mail_from"] = sender
            f["recipient"] = rcpt
            body = raw[m.end():]
    if "STARTTLS_proto=" in body:
        m = _STARTTLS_RE.search(body)
        if m is not None:
            f["tls"] = f"{m.group(1)} with cipher {m.group(2)}"
    c0 = body[:1]
    if c0 and (c0 in _RELAY_FIRST or c0 == "C" or c0 == "T"):
        m = _RELAY_RE.match(body)
        if m is not None:
            f["relay_ip"] = m.group(1)
    said = body.find(_SAID)
    if "relay_ip" not in f and ";_connect" in body:
        m = _TLS_RELAY_RE.search(body)
        if m is not None:
            f["relay_ip"] = m.group(1)
    if "relay_ip" not in f and "_port_" in body:
        # ours, not the remote's reply (its text is the peer's to write: never search it)
        m = _NOCONN_RELAY_RE.search(body, 0, said if said >= 0 else len(body))
        if m is not None:
            f["relay_ip"] = m.group(1)
    start = said + len(_SAID) if said >= 0 else 0
    m = _SMTP_CODE_RE.match(body, start)
    if m is not None:
        f["smtp_code"] = int(m.group(1))
        m = _DSN_RE.match(body, start + 4)  # "550_5.1.1_..."
        if m is not None:
            f["dsn"] = m.group(1)
            return f
    # Otherwise only "#x.y.z" (qmail's own "(#5.1.1)", replies quoting one):
    # a full scan for bare x.y.z would cost more than the rest of the line.
    h = body.find("#", start)
    while h >= 0:
        m = _DSN_RE.match(body, h)
        if m is not None:
            f["dsn"] = m.group(1)
            break
        h = body.find("#", h + 1)
    return f


def _bounce(rest: str) -> Parsed | None:
    m = _BOUNCE_RE.fullmatch(rest)
    if m is not None:
        f: dict[str, Any] = {"msg": int(m.group(1)), "qp": int(m.group(2))}
        if m.group(3) is not None:
            f["queue"] = m.group(3)
        return "bounce_msg", f
    m = _BOUNCE_PROC_RE.fullmatch(rest)
    if m is not None:
        f = {"mail_from": m.group(1), "rcpt_to": m.group(2), "exit_code": int(m.group(3))}
        if m.group(4) is not None:
            f["queue"] = m.group(4)
        return "bounce_processor", f
    return None


def _discard(event: str) -> Callable[[str], Parsed | None]:
    def parse_discard(rest: str) -> Parsed | None:
        m = _DISCARD_RE.fullmatch(rest)
        if m is None:
            return None
        f: dict[str, Any] = {"msg": int(m.group(1))}
        if m.group(2) is not None:
            f["queue"] = m.group(2)
        return event, f
    return parse_discard


def _end(rest: str) -> Parsed | None:
    m = _END_RE.fullmatch(rest)
    if m is None:
        return None
    f: dict[str, Any] = {"msg": int(m.group(1))}
    if m.group(2) is not None:
        f["queue"] = m.group(2)
    return "end_msg", f


def _notice(event: str) -> Callable[[str], Parsed | None]:
    def parse_notice(rest: str) -> Parsed | None:
        f: dict[str, Any] = {"text": rest}
        m = _ARGV0_RE.match(rest)
        if m is not None and not m.group(2).isdigit():
            f["queue"] = m.group(2)  # indimail: "argv0: queue: text"
        elif (m := _NOTICE_QUEUE_RE.search(rest)) is not None:
            # older indimail: "warning: queue1: unable to stat ..."; or its queue name
            # at the end ("alert: argv0: PID: got TERM: queue3")
            f["queue"] = m.group(1) or m.group(2)
        elif (("queue /" in rest and (m := _QUEUE_NAMED_RE.search(rest)) is not None)
              or ("queue" in rest and (m := _QUEUE_IN_PATH_RE.search(rest)) is not None)):
            f["queue"] = m.group(1)
        return event, f
    return parse_notice


_info_argv0 = _notice("info")  # "info: argv0: ...": made once, not per line


def _account(channel: str) -> Callable[[str], Parsed | None]:
    def parse_account(rest: str) -> Parsed | None:
        m = _ACCOUNT_ID_RE.fullmatch(rest)
        if m is not None:
            f: dict[str, Any] = {"channel": channel, "mail_from": _addr(m.group(1)),
                                 "rcpt_to": _addr(m.group(2)), "msg": int(m.group(3)),
                                 "size": int(m.group(4)), "queue": m.group(5)}
            if m.group(6) is not None:
                f["mode"] = m.group(6)
            return "delivery_account", f
        m = _ACCOUNT_RE.fullmatch(rest)
        if m is None:
            return None
        f = {"channel": channel, "mail_from": _addr(m.group(1)),
             "rcpt_to": _addr(m.group(2)), "size": int(m.group(3))}
        if m.group(4) is not None:
            f["queue"] = m.group(4)
        return "delivery_account", f
    return parse_account


def _addr(a: str) -> str:
    """indimail writes the null address as ``<>``: the schema's null sender is ``""``."""
    return "" if a == "<>" else a


def _info_notice(rest: str) -> Parsed | None:
    """indimail ``info: argv0: ...`` lines; ``delete bounce: discarding bounce/N`` is a
    discarded bounce, as a double bounce is."""
    m = _BOUNCE_DELETED_RE.fullmatch(rest)
    if m is not None:
        f: dict[str, Any] = {"msg": int(m.group(1))}
        if m.group(2) is not None:
            f["queue"] = m.group(2)
        return "bounce_deleted", f
    if _ARGV0_RE.match(rest) is not None:
        return _info_argv0(rest)
    m = _INFO_EXIT_RE.fullmatch(rest)
    if m is not None:
        return "status_exiting", {"queue": m.group(1) or m.group(2), "text": rest}
    if _INFO_PROG_RE.match(rest) is None:  # indimail's programs only: others say "info:" too
        return None
    f = {"text": rest}
    m = _QUEUE_DIR_RE.search(rest)
    if m is not None:
        f["queue"] = m.group(1)
    return "info", f


# indimail's qmail-send.c regetcontrols() logs log3("local deliveries temporarily held\n",
# " ", queuedesc): the queue name, with no newline of its own, starts the next line
# (" queue1status: local 0/10 (held) remote 0/20 queue1"). Its first word is "".
_GLUED_RE = re.compile(r"[A-Za-z][\w.-]{0,39}?(?=(?:status|warning|alert|warn|info|local|remote):? "
                       r"|(?:new|starting|delivery|bounce|end|triple|double|delete) )")


def _glued(rest: str) -> Parsed | None:
    m = _GLUED_RE.match(rest)
    if m is None:
        return None
    text = rest[m.end():]
    return parse_at(text, text.find(" "))


# First word → parser of the text after it (which may raise ValueError on absurd
# numbers: see parse_at). The dispatcher calls these directly.
BY_WORD: dict[str, Callable[[str], Parsed | None]] = {
    "status:": _status,
    "new": _new,
    "info": _info,
    "starting": _starting,
    "delivery": _delivery,
    "bounce": _bounce,
    "triple": _discard("triple_bounce"),
    "double": _discard("double_bounce"),
    "end": _end,
    "warning:": _notice("warning"),
    "warn:": _notice("warning"),
    "alert:": _notice("alert"),
    "info:": _info_notice,
    # slowq-send.c's discarded bounce: "delete bounce: discarding bounce/N QUEUE"
    "delete": _discard("bounce_deleted"),
    "": _glued,  # a line that starts with a space
    "local:": _account("local"),
    "remote:": _account("remote"),
}


def parse(text: str) -> Parsed | None:
    """One qmail-send line's text → (event, fields), or None when it is not qmail-send."""
    return parse_at(text, text.find(" "))


def parse_at(text: str, sp: int) -> Parsed | None:
    """``parse`` for a caller that already has ``sp = text.find(" ")`` (the dispatcher)."""
    word = text[:sp] if sp > 0 else text.rstrip()
    fn = BY_WORD.get(word)
    if fn is None:
        return _legacy(word, text)
    rest = text[sp + 1:].rstrip() if sp > 0 else ""
    try:
        return fn(rest)
    except ValueError:  # absurd numbers (int() digit limit): not this grammar
        return None


def _legacy(word: str, text: str) -> Parsed | None:
    # Pre-1.0 qmail (qmail-log.5 of 0.9x): recognised but rare, kept as text.
    if word in ("running", "exiting"):
        t = text.rstrip()
        if t == word:
            return "legacy", {"text": t}
    elif word == "number" and text.startswith("number of deliveries"):
        return "legacy", {"text": text.rstrip()}
    elif word in ("local", "remote") and text.startswith(word + " deliveries "):
        return "legacy", {"text": text.rstrip()}  # "local deliveries will be put on hold"
    return None


def parse_qmail_daemon(text: str) -> Parsed | None:
    """indimail ``qmail-daemon:`` / ``qscheduler:`` text (after the prefix) → ``daemon``."""
    t = text.rstrip()
    if not t:
        return None
    f: dict[str, Any] = {"text": t}
    i = t.find("queue ")
    if i >= 0:
        m = _QUEUE_WORD_RE.match(t, i + 6)
        if m is not None:
            f["queue"] = m.group(1).rstrip(",.")
    return "daemon", f
