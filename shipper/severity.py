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
    "unparsed": NOTICE,
    "spamdyke_error": ERR,
}


# event → (field, values that make it a notice)
_NOTICE_WHEN: dict[str, tuple[str, frozenset[str]]] = {
    "smtp_decision": ("action", frozenset({"Reject", "Deferred"})),
    "io_server": ("reply_class", frozenset({"4xx", "5xx", "-ERR"})),
    "pop_auth": ("result", frozenset({"failure"})),
    "spamdyke": ("verdict", frozenset({"denied"})),
}


# events whose severity also depends on their fields
_BY_FIELDS = frozenset({"delivery", "tcp_end", *_NOTICE_WHEN})


def severity_of_event(event: Any) -> int | None:
    """The severity of every record of ``event``; None when it depends on the fields too.

    Lets an encoder compute it once per event rather than once per record.
    """
    if event in _BY_FIELDS:
        return None
    return _BY_EVENT.get(event, INFO) if isinstance(event, str) else INFO


def severity(rec: dict[str, Any]) -> int:
    event = rec.get("event")
    sev = _BY_EVENT.get(event, INFO) if isinstance(event, str) else INFO
    if event == "delivery":
        result = rec.get("result")
        if result == "failure":
            return WARNING
        if result == "deferral":
            return NOTICE
    elif event in _NOTICE_WHEN:
        key, bad = _NOTICE_WHEN[event]
        value = rec.get(key)
        if type(value) is str and value in bad:  # a list value would raise in a set lookup
            return NOTICE
    elif event == "tcp_end" and (rec.get("signal") or rec.get("exit_code")):
        return NOTICE
    return sev
