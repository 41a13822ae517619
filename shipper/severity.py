"""Syslog severity of a record, from its event (pure).

0 emerg … 7 debug. Rejections and failures are warnings or errors a SIEM alerts
on; routine queue chatter is info or debug.
"""

from __future__ import annotations

from typing import Any

EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)

_BY_EVENT: dict[str, int] = {
    "alert": ALERT,
    "warning": WARNING,
    "triple_bounce": WARNING,
    "bounce_deleted": WARNING,  # indimail's "delete bounce: discarding bounce/N"
    "double_bounce": WARNING,
    "delivery_mangled": WARNING,
    "bounce_msg": NOTICE,
    "tcp_error": ERR,
    "tcp_deny": NOTICE,
    "rbl_block": NOTICE,
    "reject": NOTICE,
    "smtp_reject": NOTICE,
    "proxy_reject": NOTICE,
    "filter_block": NOTICE,
    "filter_quarantine": NOTICE,
    "gap": ERR,
    "status": DEBUG,
    "tcp_status": DEBUG,
    "io_client": DEBUG,
    "qpsmtpd_debug": DEBUG,  # qpsmtpd's LOGDEBUG lines (loglevel 7)
    "unparsed": NOTICE,
    "checkpassword_debug": DEBUG,  # checkpassword-pam's debugging() output, Courier authlib's DEBUG_LOGIN
    "spamdyke_error": ERR,
    # Postfix's "warning: … SASL … authentication failed": msg_warn, LOG_WARNING
    "auth_failed": WARNING,
    "relay_error": NOTICE,  # Postfix smtp: one server of several failed; like a deferral
    "expired": WARNING,  # Postfix qmgr gave up on a message: it bounces
    "virus_found": WARNING,  # clamd's "PATH: NAME FOUND": as simscan's VIRUS
}


# event → (field, values that make it a notice)
_NOTICE_WHEN: dict[str, tuple[str, frozenset[str]]] = {
    "smtp_decision": ("action", frozenset({"Reject", "Deferred"})),
    "io_server": ("reply_class", frozenset({"4xx", "5xx", "-ERR"})),
    "qpsmtpd_reply": ("reply_class", frozenset({"4xx", "5xx"})),
    # TIMEOUT is in spamdyke's table of rejections (a 421 to the client), as DENIED_*
    "spamdyke": ("verdict", frozenset({"denied", "timeout"})),
    # simscan.c writes "SPAM DROPPED" (ENABLE_DROPMSG); "SPAM DROP" kept for what was matched
    "simscan": ("verdict", frozenset({"SPAM REJECT", "ATTACH", "REGEX", "SPAM DROP", "SPAM DROPPED"})),
    "smtp_session": ("result", frozenset({"rejected", "blocked", "denied"})),
    "greylist": ("action", frozenset({"GREY", "DENY", "HANGUP"})),
    "mail": ("result", frozenset({"deferral", "mixed", "rejected"})),
}
# event → (field, values that make it a warning): one class of outcome, one severity
# whatever the program: a failed login is a warning (Postfix's own "authentication
# failed" is LOG_WARNING) from qmail-smtpd, vchkpw and dovecot too; a virus found; a
# mail that bounced
_WARNING_WHEN: dict[str, tuple[str, frozenset[str]]] = {
    "pop_auth": ("result", frozenset({"failure"})),
    "simscan": ("verdict", frozenset({"VIRUS", "VIRUS DROPPED"})),
    "mail": ("result", frozenset({"failure"})),
}

# event → (field, value → severity): the level a program itself logged with.
# Postfix's msg_fatal/msg_panic log at LOG_CRIT, msg_error at LOG_ERR (msg_syslog.c).
_LEVEL_FIELD = "level"
_BY_LEVEL: dict[str, dict[str, int]] = {
    "error": {"fatal": CRIT, "panic": CRIT, "error": ERR},
    # ucspi's classes: a refused connection ("ip connection limit … exceeded") is a
    # warning or a drop, not an error of the server's
    "tcp_error": {"warning": WARNING, "drop": NOTICE, "temp": WARNING, "fatal": CRIT},
    # spamdyke.c spamdyke_log(): DEBUG lines go to syslog as LOG_DEBUG; EXCESSIVE ones,
    # more verbose still, fall to its default LOG_INFO, taken as debug all the same
    "spamdyke_message": {"warning": WARNING, "debug": DEBUG, "excessive": DEBUG},
    "dovecot": {"debug": DEBUG, "warning": WARNING, "error": ERR, "fatal": CRIT, "panic": CRIT},
    # spamd -s stderr's dbg/warn/error (under syslog the level is the priority, not in the text)
    "spamd": {"debug": DEBUG, "warning": WARNING, "error": ERR},
    "clamd": {"warning": WARNING, "error": ERR},
}
# event → a bool field that, true, makes it a notice: spamd's verdict of spam, as
# simscan's SPAM REJECT (spamd cannot say whether the mail was refused)
_NOTICE_IF_TRUE: dict[str, str] = {"spam_result": "spam", "spam_check": "spam"}


# events whose severity also depends on their fields
_BY_FIELDS = frozenset({"delivery", "tcp_end", "chkuser", "alert", "info", *_NOTICE_WHEN, *_WARNING_WHEN,
                        *_BY_LEVEL, *_NOTICE_IF_TRUE})


def severity_of_event(event: Any) -> int | None:
    """The severity of every record of ``event``; None when it depends on the fields too.

    Lets an encoder compute it once per event rather than once per record.
    """
    if event in _BY_FIELDS:
        return None
    return _BY_EVENT.get(event, INFO) if isinstance(event, str) else INFO


# event → the fields besides ``event`` that ``severity`` reads for it (tests/test_rfc5424.py
# checks that no other field changes the result)
_FIELDS_READ: dict[str, tuple[str, ...]] = {
    "delivery": ("result",),
    "tcp_end": ("signal", "exit_code", "text"),
    "alert": ("text",),
    "info": ("text",),
    "chkuser": ("decision",),
    **{event: (_LEVEL_FIELD,) for event in _BY_LEVEL},
    **{event: (field,) for event, field in _NOTICE_IF_TRUE.items()},
    # (simscan and mail are in both, with one field)
    **{event: (field,) for event, (field, _) in [*_NOTICE_WHEN.items(), *_WARNING_WHEN.items()]},
    "smtp_decision": (_NOTICE_WHEN["smtp_decision"][0], "check", "condition"),
}


def severity_fields(event: str) -> tuple[str, ...]:
    """The fields besides ``event`` that the severity of a record of ``event`` depends on
    (none: ``severity_of_event`` gives it). Lets an encoder remember it by their values."""
    return _FIELDS_READ.get(event, ())


def severity(rec: dict[str, Any]) -> int:
    event = rec.get("event")
    if type(event) is not str:  # not a record of ours: a list would not even hash
        return INFO
    sev = _BY_EVENT.get(event, INFO)
    if event == "delivery":
        result = rec.get("result")
        if result == "failure":
            return WARNING
        if result == "deferral":
            return NOTICE
    elif event in _NOTICE_WHEN or event in _WARNING_WHEN:
        if event in _WARNING_WHEN:
            key, bad = _WARNING_WHEN[event]
            value = rec.get(key)
            if type(value) is str and value in bad:  # a list value would raise in a set lookup
                return WARNING
        if event in _NOTICE_WHEN:
            key, bad = _NOTICE_WHEN[event]
            value = rec.get(key)
            if type(value) is str and value in bad:
                if event == "smtp_decision" and value == "Reject":
                    check = rec.get("check")
                    # a failed SMTP AUTH, but not s/qmail's "Reject::AUTH::missing" (the
                    # server wants AUTH and the client sent none: no login failed)
                    if check == "AUTH" and rec.get("condition") != "missing":
                        return WARNING
                    # a virus found, as simscan's VIRUS (s/qmail qmail-smtpd.c err_data)
                    if check == "DATA" and rec.get("condition") == "Virus_Infected":
                        return WARNING
                return NOTICE
    elif event == "tcp_end" and (rec.get("signal") or rec.get("exit_code") or rec.get("text") == "crashed"):
        return NOTICE  # (indimail's tcpserver: "end PID status crashed", its signal unnamed)
    elif event == "alert":
        # indimail says "alert:" for signals it was sent ("alert: qmail-send: 4711 got TERM:
        # queue1", "got 'A' command"), for todo-proc told to stop by qmail-send and for each
        # qmail-send that qscheduler saw stop ("pid P has shutdown"): a restart or a
        # reload, not a page at night
        text = rec.get("text")
        if type(text) is str:
            if " got " in text or " ordered to quit by " in text or text.endswith(" has shutdown"):
                return NOTICE
            # qscheduler's dynamic mode: "average load N exceeds threshold (> M)", upon
            # which it starts one more queue by itself: a busy server, not an outage
            if " exceeds threshold " in text and "average load " in text:
                return WARNING
    elif event == "info":
        # qscheduler's "info: qscheduler: pid P, queue DIR, load=N died": a qmail-send
        # that stopped when not told to (qmail-daemon says the same with "alert:")
        text = rec.get("text")
        if type(text) is str and text.endswith(" died"):
            return WARNING
    elif event == "chkuser":
        # chkuser.c: "rejected rcpt|sender|relaying|intrusion", "intrusion threshold",
        # "mbx overquota", "no auth resource" refuse; "accepted …", "relaying rcpt" do not
        decision = rec.get("decision")
        if type(decision) is str and decision.startswith(("rejected", "intrusion", "mbx", "no ")):
            return NOTICE
    elif event in _BY_LEVEL:
        level = rec.get(_LEVEL_FIELD)
        if type(level) is str:
            return _BY_LEVEL[event].get(level, sev)
    elif event in _NOTICE_IF_TRUE and rec.get(_NOTICE_IF_TRUE[event]) is True:
        return NOTICE
    return sev
