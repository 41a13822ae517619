"""qmail-smtpd / qmail-popup lines: s/qmail, SPAMCONTROL, indimail, qmail-toaster.

Pure functions of one line's program text (after ``qmail-smtpd: ``). Grammars
(reference: s/qmail smtpdlog.c, SPAMCONTROL LOGGING, indimail smtpd.c):

* s/qmail: ``pid N Action::Type::Condition P:PROTO S:IP:HOST H:HELO F:FROM T:TO``
  with an optional trailing `` 'INFO'``, `` ?~ 'USER'`` (newer) or
  `` ?= 'USER'`` / `` != 'DN'`` (older). H/F/T are raw SMTP arguments: they may be
  empty or hold spaces, so fields are cut at the next key, in order.
* old SPAMCONTROL: ``Action::Type::Condition: Information`` with no prefix.
* indimail: ``pid N from IP <text>``: accepted mail (``HELO <h> MAIL from <f>
  RCPT <r> AUTH <a> Size: N TLS=…``), rejects (``Reason: MAIL from <f> …``),
  qqx failures, other text.
* qmail-toaster: ``pid N RCPT TO: <r>``; patched ``421 badiprbl: ip IP rbl: LIST``.
* netqmail's logging patch sets (qregex, validrcptto, Puzzanghera's and jms1's
  combined patches): shipper.parsers.smtpd_patches.
"""

from __future__ import annotations

import re
from typing import Any

from shipper.parsers.smtpd_patches import parse_patched

Parsed = tuple[str, dict[str, Any]]

_ACTIONS = ("Accept::", "Reject::", "Deferred::")
_TRAILING = " \r\t\n"
# s/qmail keys, in the order smtpdlog.c writes them, and the fields they fill.
_KEYS = ((" P:", "proto"), (" S:", ""), (" H:", "helo"), (" F:", "mail_from"), (" T:", "rcpt_to"))

# The everyday s/qmail line with all five keys and blank-free values, in one
# match: the common case of _decision, whose general key search costs 3x more.
# [0-9], not \d: \d takes other scripts' digits, which the general path refuses.
# S:unknown (no TCPREMOTEIP) goes the general way, which gives no remote_ip for it.
_SQMAIL_FAST_RE = re.compile(
    r"pid ([0-9]+) (Accept|Reject|Deferred)::([^:\s]+)::([^:\s]+)"
    r" P:(\S*) S:(?!unknown:)(\S*):([^:\s]*) H:(\S*) F:(\S*) T:(\S*[^\s'])")
_IM_ACCEPT_RE = re.compile(
    r"HELO <(?P<helo>[^>]*)> MAIL from:? <(?P<from>[^>]*)> RCPT <(?P<rcpt>[^>]*)>"
    r"(?: AUTH <(?P<auth>[^>]*)>)?(?: Size: (?P<size>\d+))?(?: TLS=<?(?P<tls>[^ >]*)>?)?"
    r"(?: (?P<extra>.*))?$")
_IM_MAIL_RE = re.compile(r"MAIL (?:from:? ?)?(?:<([^>]*)>|([^\s<>,]+))")
_IM_RCPT_RE = re.compile(r"RCPT <([^>]*)>")
_IM_HELO_RE = re.compile(r"HELO (?:<([^>]*)>|(\S+))")
_IM_AUTH_RE = re.compile(r"AUTH <([^>]*)>")
_IM_SIZE_RE = re.compile(r"Size: (\d+)")
_IM_REASON_RE = re.compile(r"([A-Za-z][^:<>]*?): ")
_CODE_RE = re.compile(r"([2-5]\d\d) (?:(\w[\w-]*): )?(.*)$")
_IP_RE = re.compile(r"\bip (\S+)(?: rbl: (\S+))?")


def parse_qmail_smtpd(text: str) -> Parsed | None:
    """qmail-smtpd text after ``qmail-smtpd: ``."""
    if text and text[-1] in _TRAILING:
        text = text.rstrip(_TRAILING)
    m = _SQMAIL_FAST_RE.fullmatch(text)
    if m is not None:
        pid_s, action, check, cond, proto, ip, host, helo, sender, rcpt = m.groups()
        pid = int(pid_s)
        return "smtp_decision", {
            "pid": pid, "conn_pid": pid, "action": action, "check": check, "condition": cond,
            "proto": proto, "remote_ip": ip, "remote_host": host, "helo": helo,
            "mail_from": sender, "rcpt_to": rcpt}
    if text.startswith("pid "):
        sp = text.find(" ", 4)
        num = text[4:sp] if sp > 0 else text[4:]
        if not num.isdigit() or not num.isascii():
            return None
        pid = int(num)
        rest = text[sp + 1:] if sp > 0 else ""
        if rest.startswith("from "):
            return _indimail(rest, pid)
        if rest.startswith(_ACTIONS):
            return "smtp_decision", _decision(rest, {"pid": pid, "conn_pid": pid})
        fields: dict[str, Any] = {"pid": pid, "conn_pid": pid}
        if rest.startswith("RCPT TO:"):  # qmail-toaster (chkuser patch)
            addr = rest[8:].strip()
            if addr[:1] == "<" and addr[-1:] == ">":
                addr = addr[1:-1]
            fields["rcpt_to"] = addr
        if rest:
            fields["text"] = rest
        return "smtp_other", fields
    if text.startswith(_ACTIONS):
        return "smtp_decision", _decision(text, {})
    c = text[:1]
    if "2" <= c <= "5" and text[1:3].isdecimal() and text[3:4] == " ":
        return _coded(text)
    return parse_patched(text)


def parse_qmail_popup(text: str) -> Parsed | None:
    """s/qmail qmail-popup (fd 5): ``pid N Accept::AUTH::User P:POP3S S:IP:HOST ?~ 'USER'``."""
    if text and text[-1] in _TRAILING:
        text = text.rstrip(_TRAILING)
    if text.startswith("pid "):
        sp = text.find(" ", 4)
        num = text[4:sp] if sp > 0 else text[4:]
        if not num.isdigit() or not num.isascii():
            return None
        pid = int(num)
        rest = text[sp + 1:] if sp > 0 else ""
        if rest.startswith(_ACTIONS):
            fields = _decision(rest, {"pid": pid, "conn_pid": pid})
            if fields.get("check") == "STLS" and fields.get("auth_user") == "unknown":
                # die_notls() logs before any USER: "unknown" is its placeholder
                del fields["auth_user"]
            return "smtp_decision", fields
        fields = {"pid": pid, "conn_pid": pid}
        if rest:
            fields["text"] = rest
        return "smtp_other", fields
    if text.startswith(_ACTIONS):
        return "smtp_decision", _decision(text, {})
    return None


def parse_spamcontrol(text: str) -> Parsed | None:
    """Old SPAMCONTROL ``Action::Type::Condition: Information`` (no program prefix).

    Tried on every unprefixed line nobody else took: the first check is cheap.
    """
    if not text.startswith(_ACTIONS):
        return None
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    return "smtp_decision", _decision(text, {})


def _decision(rest: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``Action::Type::Condition[:] [P:… S:… H:… F:… T:…] ['INFO' | ?~ 'USER']``."""
    sp = rest.find(" ")
    head = rest if sp < 0 else rest[:sp]
    tail = "" if sp < 0 else rest[sp:]
    parts = head.split("::", 2)
    fields["action"] = parts[0]
    if len(parts) > 1 and parts[1]:
        fields["check"] = parts[1]
    if len(parts) > 2:
        cond = parts[2].rstrip(":")
        if cond:
            fields["condition"] = cond
    if not tail:
        return fields
    if tail[-1] == "'":
        q = tail.rfind(" '", 0, len(tail) - 1)
        if q >= 0:
            value = tail[q + 2:-1]
            before = tail[:q]
            marker = before[-3:]
            if marker in (" ?~", " ?="):
                fields["auth_user"] = value
                before = before[:-3]
            elif marker == " !=":  # older s/qmail: TLS client DN
                fields["info"] = value
                before = before[:-3]
            else:
                fields["info"] = value
            tail = before
    found: list[tuple[int, str]] = []
    pos = 0
    for key, name in _KEYS:
        i = tail.find(key, pos)
        if i >= 0:
            found.append((i, name))
            pos = i + 3
    if not found:
        lead = tail.strip()
        if lead and "info" not in fields:
            fields["info"] = lead
        return fields
    lead = tail[:found[0][0]].strip()
    if lead and "info" not in fields:
        fields["info"] = lead  # old SPAMCONTROL "Condition: Information"
    last = len(found) - 1
    for n, (i, name) in enumerate(found):
        value = tail[i + 3:found[n + 1][0]] if n < last else tail[i + 3:]
        if name:
            fields[name] = value
        else:
            # S:IP:HOST — the IP may be IPv6, so the host is after the LAST colon.
            c = value.rfind(":")
            ip = value if c < 0 else value[:c]
            # "unknown": TCPREMOTEIP unset (run without tcpserver). Not an address: a
            # SIEM that types remote_ip as an IP would refuse the whole record.
            if ip != "unknown":
                fields["remote_ip"] = ip
            if c >= 0:
                fields["remote_host"] = value[c + 1:]
    return fields


def _indimail(rest: str, pid: int) -> Parsed:
    """indimail ``from IP <text>`` (``rest`` starts with ``from ``)."""
    sp = rest.find(" ", 5)
    ip = rest[5:] if sp < 0 else rest[5:sp]
    fields: dict[str, Any] = {"pid": pid, "conn_pid": pid, "remote_ip": ip}
    body = "" if sp < 0 else rest[sp + 1:].lstrip(" ")
    if not body:
        return "smtp_other", fields
    if body.startswith("HELO <"):
        m = _IM_ACCEPT_RE.match(body)
        if m is not None:
            fields["helo"] = m.group("helo")
            fields["mail_from"] = m.group("from")
            fields["rcpt_to"] = m.group("rcpt")
            auth, size, tls, extra = m.group("auth", "size", "tls", "extra")
            if auth is not None:
                fields["auth"] = auth
            if size is not None:
                fields["size"] = int(size)
            if tls is not None:
                fields["tls"] = tls
            if extra:
                fields["text"] = extra
            return "smtp_accept", fields
    m = _IM_REASON_RE.match(body)
    if m is not None:
        reason = m.group(1)
        fields["reason"] = reason
        _envelope(body, m.end(), fields)
        fields["text"] = body
        return "smtp_reject", fields
    if body.endswith("failure") or body.startswith("SMTP Access denied"):
        # "qqt failure", "... permanent failure", "SMTP Access denied to <a>"
        fields["reason"] = "SMTP Access denied" if body[0] == "S" else body
        fields["text"] = body
        return "smtp_reject", fields
    fields["text"] = body
    return "smtp_other", fields


def _envelope(body: str, start: int, fields: dict[str, Any]) -> None:
    """Addresses in an indimail reject tail; absent parts stay absent."""
    m = _IM_MAIL_RE.search(body, start)
    if m is not None:
        fields["mail_from"] = m.group(1) if m.group(1) is not None else m.group(2)
    m = _IM_RCPT_RE.search(body, start)
    if m is not None:
        fields["rcpt_to"] = m.group(1)
    m = _IM_HELO_RE.search(body, start)
    if m is not None:
        fields["helo"] = m.group(1) if m.group(1) is not None else m.group(2)
    m = _IM_AUTH_RE.search(body, start)
    if m is not None:
        fields["auth"] = m.group(1)
    m = _IM_SIZE_RE.search(body, start)
    if m is not None:
        fields["size"] = int(m.group(1))


def _coded(text: str) -> Parsed | None:
    """Patched qmail-smtpd reply lines: ``421 badiprbl: ip 198.51.100.54 rbl: example.com``."""
    m = _CODE_RE.match(text)
    if m is None:
        return None
    code = int(m.group(1))
    fields: dict[str, Any] = {"smtp_code": code}
    if m.group(2):
        fields["reason"] = m.group(2)
    rest = m.group(3)
    ip = _IP_RE.search(rest)
    if ip is not None:
        fields["remote_ip"] = ip.group(1)
        if ip.group(2):
            fields["rbl_list"] = ip.group(2)
    fields["text"] = text
    return ("smtp_reject" if code >= 400 else "smtp_other"), fields
