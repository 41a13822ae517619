"""qmail-smtpd lines of the common netqmail patch sets. Pure functions of one line.

netqmail's qmail-smtpd logs nothing itself; the patch sets that add logging write:

* Roberto Puzzanghera's combined patch (sagredo.eu; its qlog part after Luca
  Franceschini): one ``qlogenvelope:`` line per envelope decision and one
  ``qlogreceived:`` line per message, ``key=value`` in a fixed order, values with
  bytes outside 33..126 replaced by ``_`` (``qsmtpdlog()`` in its qmail-smtpd.c):
  ``qlogenvelope: result=rejected code=550 reason=chkuser detail=nomailbox helo=H
  mailfrom=F rcptto=R relay=no rcpthosts=yes size= authuser= authtype= encrypted=
  sslverified=no localip=IP localport=25 remoteip=IP remoteport=N remotehost=H qp= pid=N``;
  and ``qmail-smtpd: MSG[ (REASON)]: FROM from IP to RCPT helo HELO`` (``logit2()``).
* That patch and John Simpson's combined patch (jms1) put ``qmail-smtpd[PID]: `` before
  the text of their checks: qregex's ``badmailfrom: <a> at IP[ matches pattern: P]``
  (the original qregex writes ``qmail-smtpd: `` and no pid), validrcptto,
  ``AUTH failed [IP] user``, ``MFCHECK fail [IP] domain``, ``DATABYTES exceeded [IP]``,
  ``auth: auth-failed type=login user=<u>``, ``rbl: ip=… result=…``, GREETDELAY, …
* qmail-toaster's pid/qp patch: ``mail recv: pid N from <sender> qp N``, the line that
  links a session to the message it queued.

Field names follow docs/records.md (``conn_pid`` is qmail-smtpd's pid: the tcpserver
child's, exec'd).
"""

from __future__ import annotations

import re
from typing import Any

Parsed = tuple[str, dict[str, Any]]

_TRAILING = " \r\t\n"

# qsmtpdlog()'s keys → our fields (str, int or yes/no → bool); unknown keys are left
# in the message only.
_QLOG_KEYS: dict[str, tuple[str, type]] = {
    "result": ("result", str), "code": ("smtp_code", int), "reason": ("reason", str),
    "detail": ("detail", str), "helo": ("helo", str), "mailfrom": ("mail_from", str),
    "rcptto": ("rcpt_to", str), "relay": ("relay_client", bool),
    "rcpthosts": ("in_rcpthosts", bool), "size": ("size", int),
    "authuser": ("auth_user", str), "authtype": ("auth_method", str),
    "encrypted": ("tls", str), "sslverified": ("tls_verified", bool),
    "localip": ("local_ip", str), "localport": ("local_port", int),
    "remoteip": ("remote_ip", str), "remoteport": ("remote_port", int),
    "remotehost": ("remote_host", str), "qp": ("qp", int), "pid": ("conn_pid", int),
}
_QLOG_KEY_RE = re.compile(r"(?:^| )([a-z]+)=")

_LOGIT_REJECTS = ("reject", "exceeded", "message too big", "message rejected")
_LOGIT_RE = re.compile(
    r"(?P<msg>[^:()]+?)(?: \((?P<reason>[^)]*)\))?: (?P<from>\S*) from (?P<ip>\S+)"
    r" to (?P<rcpt>\S*) helo (?P<helo>.*)$")
_BAD_RE = re.compile(r"(badhelo|badmailfrom|badrcptto): <(.*?)>(?: at (\S+?))?(?: matches pattern: (.*))?$")
_BAD_FIELD = {"badhelo": "helo", "badmailfrom": "mail_from", "badrcptto": "rcpt_to"}
_HANGUP_RE = re.compile(r"badrcptto: excessive rcptto violations hanging up on (\S+)$")
_VRT_SAGREDO_RE = re.compile(r"validrcptto: (accepted|drop) address <(.*?)> at (\S+)$")
_VRT_JMS1_RE = re.compile(r"validrcptto \[([^\]]*)\] (.*)$")
# its rcptcheck part: "checking", then the verdict of the RCPTCHECK program's exit code
# (100 drop, 0 accepted, 112 ignore, 113 overlimit; the address is the recipient's)
_RCPTCHECK_RE = re.compile(
    r"rcptcheck: (checking|drop address|accepted address|ignore address|overlimit sender)"
    r" <(.*?)> at (\S+)$")
_RCPTCHECK_EVENT = {"drop address": "smtp_reject", "overlimit sender": "smtp_reject",
                    "accepted address": "smtp_accept"}
_AUTH_SAGREDO_RE = re.compile(r"auth: auth-(success|failed) type=(\S*) user=<(.*)>$")
_AUTH_JMS1_RE = re.compile(r"AUTH (successful|failed)(?: \(([^)]*)\))? \[([^\]]*)\] ?(.*)$")
_MFCHECK_RE = re.compile(r"MFCHECK (fail|pass|invalid) \[([^\]]*)\] ?(.*)$")
_DATABYTES_RE = re.compile(r"DATABYTES exceeded \[([^\]]*)\]$")
_ENVELOPE_RE = re.compile(r"(MAIL FROM|RCPT TO):<(.*)>$")
_GREETDELAY_RE = re.compile(r"GREETDELAY(?:: ([0-9]{1,9})s| from ([^:\s]+): (.*))$")
_RBL_RE = re.compile(r"rbl: ip=(\S*) query=(\S*) result=(\S*) message='(.*)'$")
# qmail-toaster's reject logging (qmtoaster/patches 17.qmail-smtpd-spf-qq-reject-logging):
# strerr_warn("qmail-smtpd: looping-reject: MAILFROM:<", mailfrom, "> RCPTTO:<", rcpt, ">"),
# the same for oversized/bad-mime/bad-loader; "qq hard|soft reject (QQX): MAILFROM:<F>
# RCPTTO:R" (no <> there: the first recipient, rcptto.s+1), after which it replies
# 554/451 QQX; "spf-reject: HELO(H) from IP. MAILFROM:F"
_QMT_REJECT_RE = re.compile(
    r"(looping|oversized|bad-mime|bad-loader)-reject: MAILFROM:<(.*?)> RCPTTO:<(.*)>$")
_QMT_QQ_RE = re.compile(r"qq (hard|soft) reject \((.*)\): MAILFROM:<(.*?)> RCPTTO:(.*)$")
_QQX_DSN_RE = re.compile(r"\(#([245]\.[0-9]{1,3}\.[0-9]{1,3})\)$")
_QMT_SPF_RE = re.compile(r"spf-reject: HELO\((.*?)\) from (\S+)\. MAILFROM:(.*)$")
_QMT_RECV_RE = re.compile(r"mail recv: pid ([0-9]{1,19}) from <([^>]*)> qp ([0-9]{1,19})$")


def parse_qlog(text: str) -> Parsed | None:
    """``qlogenvelope: …`` / ``qlogreceived: …`` (no program prefix of their own)."""
    if not text.startswith(("qlogenvelope: ", "qlogreceived: ")):
        return None
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    envelope = text[4] == "e"
    body = text[14:]
    fields: dict[str, Any] = {"qlog": "envelope" if envelope else "received"}
    keys = list(_QLOG_KEY_RE.finditer(body))
    if not keys or keys[0].start() != 0:
        return None
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(body)
        value = body[m.end():end]
        known = _QLOG_KEYS.get(m.group(1))
        if known is None or not value:  # an empty value: not known, no field
            continue
        name, kind = known
        if kind is int:
            if value.isdigit() and value.isascii() and len(value) <= 19:
                fields[name] = int(value)
        elif kind is bool:
            if value in ("yes", "no"):
                fields[name] = value == "yes"
        elif value != "unknown" or name != "remote_ip":  # TCPREMOTEIP unset: no address
            fields[name] = value
    result = fields.get("result")
    if result == "rejected":
        return "smtp_reject", fields
    if result == "accepted":
        return ("smtp_accept" if envelope else "smtp_queued"), fields
    return "smtp_other", fields


def parse_qmt_recv(text: str) -> Parsed | None:
    """qmail-toaster's ``mail recv: pid N from <sender> qp N``."""
    if not text.startswith("mail recv: pid "):
        return None
    m = _QMT_RECV_RE.match(text.rstrip(_TRAILING))
    if m is None:
        return None
    return "smtp_queued", {"conn_pid": int(m.group(1)), "mail_from": m.group(2),
                           "qp": int(m.group(3))}


def parse_patched(text: str) -> Parsed | None:
    """The text after ``qmail-smtpd: `` or ``qmail-smtpd[PID]: `` of the patches above;
    None when it is none of theirs."""
    c = text[:1]
    if c and c in "lobqs" and (got := _qmt_reject(text, c)) is not None:
        return got
    if c == "b":
        m = _BAD_RE.match(text)
        if m is not None:
            kind, addr, ip, pattern = m.groups()
            fields: dict[str, Any] = {"reason": kind, _BAD_FIELD[kind]: addr}
            if ip:
                fields["remote_ip"] = ip
            if pattern is not None:
                fields["pattern"] = pattern
            return "smtp_reject", fields
        m = _HANGUP_RE.match(text)
        if m is not None:
            return "smtp_reject", {"reason": "brtlimit", "remote_ip": m.group(1), "text": text}
        return None
    if c == "v":
        m = _VRT_SAGREDO_RE.match(text)
        if m is not None:
            fields = {"reason": "validrcptto", "rcpt_to": m.group(2), "remote_ip": m.group(3)}
            return ("smtp_accept" if m.group(1) == "accepted" else "smtp_reject"), fields
        m = _VRT_JMS1_RE.match(text)
        if m is not None:
            ip, rest = m.groups()
            fields = {"reason": "validrcptto", "remote_ip": ip, "text": rest}
            if rest.startswith("not found: "):
                fields["rcpt_to"] = rest[11:]
                return "smtp_reject", fields
            if rest.startswith("excessive violations"):
                return "smtp_reject", fields
            colon = rest.find(": ")  # "RCPT TO: a", "trying: a", "found: a", "reject: a"
            if colon > 0:
                fields["rcpt_to"] = rest[colon + 2:]
            return "smtp_other", fields
        return None
    if c == "a" or c == "A":
        m = _AUTH_SAGREDO_RE.match(text)
        if m is not None:
            ok, method, user = m.groups()
            fields = {"action": "Accept" if ok == "success" else "Reject", "check": "AUTH",
                      "condition": method}
            if user:
                fields["auth_user"] = user
            return "smtp_decision", fields
        m = _AUTH_JMS1_RE.match(text)
        if m is not None:
            ok, why, ip, user = m.groups()
            fields = {"action": "Accept" if ok == "successful" else "Reject", "check": "AUTH",
                      "remote_ip": ip}
            if why:
                fields["reason"] = why
            if user:
                fields["auth_user"] = user
            return "smtp_decision", fields
        return None
    if c == "M":
        m = _MFCHECK_RE.match(text)
        if m is not None:
            verdict, ip, what = m.groups()
            fields = {"action": "Accept" if verdict == "pass" else "Reject", "check": "MFCHECK",
                      "condition": verdict, "remote_ip": ip}
            if what:
                fields["text"] = what
            return "smtp_decision", fields
    if c == "M" or c == "R":
        m = _ENVELOPE_RE.match(text)
        if m is not None:
            return "smtp_other", {("mail_from" if m.group(1) == "MAIL FROM" else "rcpt_to"):
                                  m.group(2), "text": text}
        if text.startswith("RCPTCHECK error: "):
            return "smtp_other", {"reason": "rcptcheck", "text": text[17:]}
        if text.startswith("Received-SPF: "):
            spf = text[14:]
            fields = {"text": spf}
            word = spf.split(" ", 1)[0].lower()
            if word.isalpha():
                fields["spf_result"] = word
            return "smtp_other", fields
        return None
    if c == "D":
        m = _DATABYTES_RE.match(text)
        if m is not None:
            return "smtp_reject", {"reason": "databytes", "remote_ip": m.group(1)}
        return None
    if c == "G":
        m = _GREETDELAY_RE.match(text)
        if m is None:
            return None
        if m.group(1) is not None:
            return "smtp_other", {"delay": float(m.group(1)), "text": text}
        fields = {"remote_ip": m.group(2), "text": m.group(3)}
        if m.group(3) == "client sent data before greeting":  # then: 554, disconnect
            fields["reason"] = "pregreet"
            return "smtp_reject", fields
        return "smtp_other", fields
    if c == "r":
        m = _RBL_RE.match(text)
        if m is not None:
            ip, query, result, message = m.groups()
            fields = {"remote_ip": ip, "rbl_query": query, "rbl_result": result}
            if message:
                fields["text"] = message
            if result in ("reject", "delay"):
                fields["reason"] = "rbl"
                return "smtp_reject", fields
            return "smtp_other", fields
        m = _RCPTCHECK_RE.match(text)
        if m is not None:
            what, rcpt, ip = m.groups()
            event = _RCPTCHECK_EVENT.get(what, "smtp_other")
            fields = {"rcpt_to": rcpt, "remote_ip": ip, "text": text}
            if event != "smtp_other":
                fields["reason"] = "rcptcheck"
            return event, fields
    m = _LOGIT_RE.match(text)
    if m is not None:
        msg = m.group("msg")
        fields = {"text": msg}
        for group, name in (("reason", "reason"), ("from", "mail_from"), ("ip", "remote_ip"),
                            ("rcpt", "rcpt_to"), ("helo", "helo")):
            value = m.group(group)
            if value and value != "(null)":  # logit2 writes "(null)" for an empty field
                fields[name] = value
        # "message too big" follows the 552 of err_size() at DATA; "message rejected
        # (qmail-dnsbl)" the 421 of its older die_dnsbl()
        return ("smtp_reject" if msg.startswith(_LOGIT_REJECTS) else "smtp_other"), fields
    return None


def _qmt_reject(text: str, c: str) -> Parsed | None:
    """qmail-toaster's reject lines (``_QMT_*_RE``), ``c`` the text's first character
    (one pattern tried, not three); None for other text."""
    m = _QMT_REJECT_RE.match(text) if c in "lob" else None
    if m is not None:
        kind, sender, rcpt = m.groups()
        fields: dict[str, Any] = {"reason": kind, "mail_from": sender}
        if rcpt:
            fields["rcpt_to"] = rcpt
        return "smtp_reject", fields
    m = _QMT_QQ_RE.match(text) if c == "q" else None
    if m is not None:
        how, qqx, sender, rcpt = m.groups()
        fields = {"reason": "qq", "smtp_code": 554 if how == "hard" else 451, "text": qqx,
                  "mail_from": sender}
        d = _QQX_DSN_RE.search(qqx)
        if d is not None:
            fields["dsn"] = d.group(1)
        if rcpt:
            fields["rcpt_to"] = rcpt
        return "smtp_reject", fields
    m = _QMT_SPF_RE.match(text) if c == "s" else None
    if m is not None:
        helo, ip, sender = m.groups()
        fields = {"reason": "spf", "remote_ip": ip, "mail_from": sender}
        if helo:
            fields["helo"] = helo
        return "smtp_reject", fields
    return None
