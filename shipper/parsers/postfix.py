"""Postfix and pmg-smtp-filter lines. Pure functions of one line's program text.

``parse(service, text)``: ``service`` is the last path part of the syslog tag
(``smtpd`` for ``postfix-incoming/smtpd``), ``text`` the message after
``tag[pid]: ``. Every Postfix line gives a record: what fits no grammar below is
``postfix_other`` (with its ``qid`` when it starts with one).

Queue ids: ≥2 upper-case hex digits (``1C6B541C5D``) or long queue ids
(``44JCRG5tYPzCqt2``: 10 base-52 characters, ``z``, inode), or ``NOQUEUE``.
Grammars follow Postfix's own log calls as consumed by pmg-log-tracker; postscreen
writes its envelope comma-separated (``from=<f>, to=<t>, proto=P, helo=<h>``).
"""

from __future__ import annotations

import re
from typing import Any

from shipper.ipaddr import may_be_address

Parsed = tuple[str, dict[str, Any]]

_TRAILING = " \r\t\n"
_HEX = frozenset("0123456789ABCDEF")
_RESULT = {"sent": "success", "deferred": "deferral", "bounced": "failure", "expired": "failure"}
_LEVELS = {"warning": "warning", "fatal": "fatal", "error": "error", "panic": "panic"}

_DELIVERY_RE = re.compile(
    r"to=<([^>]*)>(?:, orig_to=<([^>]*)>)?, relay=(?:([^\s\[\],]*)\[([^\]\s]*)\](?::(\d+))?|([^,]*))"
    r"(?:, conn_use=\d+)?(?:, delay=(\d+(?:\.\d+)?))?(?:, delays=([\d./]+))?"
    r"(?:, tls=([^,\s]+))?(?:, dsn=(\d\.\d{1,3}\.\d{1,3}))?, status=(\w+)(?: \((.*)\))?$")
_HOSTIP_RE = re.compile(r"([^\s\[\]]*)\[([^\]\s]*)\](?::(\d+))?")
_FROM_CLIENT_RE = re.compile(" from " + _HOSTIP_RE.pattern)
# HOST[IP] anywhere in a text: begun only where a name may (a match found inside a name is
# found from its start, so nothing changes), the IP holding no "[": tried at every "[" of a
# "[[[[…", the IP ran to the end of them each time (quadratic)
_HOSTIP_SEARCH_RE = re.compile(r"(?<![^\s\[\]])([^\s\[\]]*)\[([^\[\]\s]*)\](?::(\d+))?")
_REJECT_RE = re.compile(
    r"(?P<stage>[A-Z][A-Z-]*) from (?P<host>[^\s\[\]]*)\[(?P<ip>[^\]\s]*)\](?::(?P<port>\d+))?: "
    r"(?:(?P<code>[245]\d\d) )?(?:(?P<dsn>[245]\.\d{1,3}\.\d{1,3}) )?(?P<rest>.*)$")
# header/body checks (cleanup): "...; from=<f> to=<t> proto=P helo=<h>: [DSN ]TEXT"
_CHECKS_ENV_RE = re.compile(
    r"; (?P<env>(?:from|to)=<[^>]*>(?: (?:from|to|proto|helo)=(?:<[^>]*>|[^\s:;]*))*)"
    r"(?:: ?(?P<reply>.*))?$")  # an action with no text of its own ("HOLD") ends there
_REPLY_RE = re.compile(r"(?:(?P<code>[245]\d\d) )?(?:(?P<dsn>[245]\.\d{1,3}\.\d{1,3}) )?(?P<rest>.*)$")
_ENV_ITEM_RE = re.compile(r"(from|to|proto|helo)=(?:<([^>]*)>|([^\s,;]*))")
_SESSION_RE = re.compile(
    r"(lost connection|timeout|too many errors|improper command pipelining) after (\S+)"
    r"(?: \(\d+ bytes\))? from ([^\s\[\]]*)\[([^\]\s]*)\](?::(\d+))?(?::? ?(.*))?$")
_SASL_RE = re.compile(
    r"([^\s\[\]]*)\[([^\]\s]*)\](?::(\d+))?: SASL (\S+) authentication failed:? ?(.*)$")
_TLS_RE = re.compile(
    r"(\w+) TLS connection established (to|from) ([^\s\[\]]*)\[([^\]\s]*)\](?::(\d+))?: ?(.*)$")
_QUEUE_ACTIVE_RE = re.compile(r"from=<(?P<from>[^>]*)>, size=(?P<size>\d+), nrcpt=(?P<nrcpt>\d+)")
# the action's words atomic and the IP without "[": a text of "[[[[…" (or of words) after
# it was read once for every "[" (every word) otherwise (quadratic)
_PSCREEN_RE = re.compile(r"(?>([A-Z][A-Z0-9_-]*(?: [A-Z][A-Z0-9_-]*)*)\b)(.*?)\[([^\[\]\s]*)\]:(\d+)(.*)$")
_UNRESOLVED_RE = re.compile(r"hostname (\S+) does not resolve to address (\S+?):?(?: |$)")
# before Postfix 2.11 (smtpd_peer.c): "ADDR: hostname NAME verification failed: ERR",
# "ADDR: address not listed for hostname NAME"
_PEER_CHECK_RE = re.compile(r"([0-9A-Fa-f.:]+): (?:hostname (\S+) verification failed|"
                            r"address not listed for hostname (\S+)$)")
# the remote's reply quoted in a delivery text: "host H[IP] said: 550 5.1.1 ...",
# "... refused to talk to me: 421 4.7.0 ..."
_QUOTED_REPLY_RE = re.compile(r"(?:said|talk to me): ([245]\d\d)[ -]")
# smtp/lmtp client per-attempt lines (smtp_connect.c, smtp_proto.c, smtp_trouble.c):
# "connect to H[IP]:25: Connection refused", "host H[IP] said: 451 4.7.1 … (in reply
# to RCPT TO command)", "lost connection with H[IP] while …", "conversation with
# H[IP] timed out while …"
_RELAY_TROUBLE_RE = re.compile(
    r"(?P<kind>connect to|host|lost connection with|conversation with) "
    r"(?P<host>[^\s\[\]]*)\[(?P<ip>[^\]\s]*)\](?::(?P<port>\d+))?"
    r"(?:: | said: | refused to talk to me: | )(?P<rest>.*)$")
_IN_REPLY_RE = re.compile(r"\(in reply to (.+?) command\)$")
_DNSBLOG_RE = re.compile(r"addr (\S+) listed by domain (\S+)")
_FILTER_ID_RE = re.compile(r"\(([0-9A-F]{2,})\)$")
_LMTP_ID_RE = re.compile(r"2\d\d 2\.\d{1,3}\.\d{1,3} (?:OK|BLOCKED) \(([0-9A-F]{2,})\)$")
_PMG_ACCEPT_RE = re.compile(r"(accept|block) mail to <([^>]*)>(?: \(([0-9A-Za-z]+)\))?(?: \(rule: (.*)\))?$")
_PMG_QUAR_RE = re.compile(r"moved mail for <([^>]*)> to (\w+) quarantine - (\S+)(?: \(rule: (.*)\))?$")
_PMG_SA_RE = re.compile(r"SA score=([-\d.]+)/([-\d.]+)")


def parse(service: str, text: str) -> Parsed | None:
    """One Postfix/pmg-smtp-filter line → (event, fields); never None for Postfix services."""
    if text and text[-1] in _TRAILING:
        text = text.rstrip(_TRAILING)
    if service == "pmg-smtp-filter":
        return _pmg_filter(text)
    if service == "postscreen" or service == "tlsproxy":
        got = _postscreen(text)
        if got is not None:
            return got
    qid, rest = _split_qid(text)
    if qid is not None:
        fields: dict[str, Any] = {} if qid == "NOQUEUE" else {"qid": qid}
        return _after_qid(service, rest, fields)
    return _plain(service, text, {})


def _split_qid(text: str) -> tuple[str | None, str]:
    """``QID: rest`` → (QID, rest); (None, text) when the line does not start with one."""
    c = text.find(": ", 0, 30)
    if c < 2:
        return None, text
    token = text[:c]
    if token == "NOQUEUE" or _is_qid(token):
        return token, text[c + 2:]
    return None, text


def _is_qid(token: str) -> bool:
    if _HEX.issuperset(token):
        return True
    # long queue id: 10 base-52 characters (no vowels), "z", then the inode part
    return len(token) >= 12 and token[10] == "z" and token.isalnum() and token.isascii()


def _after_qid(service: str, rest: str, fields: dict[str, Any]) -> Parsed:
    c = rest[:1]
    if c == "t" and rest.startswith("to=<"):
        return _delivery(service, rest, fields)
    if c == "c" and rest.startswith("client="):
        return _client(rest[7:], fields)
    if c == "m":
        if rest.startswith("message-id="):
            mid = rest[11:]
            if mid[:1] == "<":
                e = mid.rfind(">")
                mid = mid[1:e] if e > 0 else mid[1:]
            fields["message_id"] = mid
            return "message_id", fields
        if rest.startswith("milter-reject: "):
            return _reject(rest[15:], fields, milter=True)
    if c == "f" and rest.startswith("from=<"):
        m = _QUEUE_ACTIVE_RE.match(rest)
        if m is not None:
            fields["mail_from"] = m.group("from")
            fields["size"] = int(m.group("size"))
            fields["nrcpt"] = int(m.group("nrcpt"))
            return "queue_active", fields
        e = rest.find(">", 6)
        if e > 0:
            fields["mail_from"] = rest[6:e]
        fields["text"] = rest
        if rest.endswith(", status=expired, returned to sender"):
            # qmgr gave up on the whole message (maximal_queue_lifetime): it bounces
            fields["status"] = "expired"
            fields["result"] = "failure"
            return "expired", fields
        return "postfix_other", fields
    if rest == "removed":
        return "removed", fields
    if c == "r" and rest.startswith("reject: "):
        return _reject(rest[8:], fields, milter=False)
    if c == "u" and rest.startswith("uid="):  # pickup: "uid=0 from=<root>"
        sp = rest.find(" ")
        uid = rest[4:sp] if sp > 0 else rest[4:]
        if uid.isdecimal():
            fields["uid"] = int(uid)
        if sp > 0 and rest.startswith("from=<", sp + 1):
            fields["mail_from"] = rest[sp + 7:].rstrip(">")
        return "pickup", fields
    if c in "sp" and rest.startswith(("sender ", "postmaster ")) and " notification: " in rest:
        # bounce(8): "sender non-delivery|delay|delivery status notification: QID", and
        # the postmaster's copy (bounce_notify_service.c): "postmaster non-delivery …"
        to, _, tail = rest.partition(" ")
        kind, _, bqid = tail.partition(" notification: ")
        if bqid and " " not in bqid:
            fields["bounce_qid"] = bqid
            fields["notification"] = kind
            fields["bounce_to"] = to
            return "bounce", fields
    if c in "rdhfwmp":
        colon = rest.find(": ")
        action = rest[:colon] if colon > 0 else ""
        if action in _CHECK_ACTIONS or (action == "warning" and rest.startswith(_CLEANUP_CLASSES, 9)):
            # an access/header/body check's action other than reject (smtpd_check.c,
            # cleanup): the same shape as a reject, but the mail goes on or is held.
            # cleanup_act() logs WARN as "warning: header …" (msg_info, not msg_warn):
            # the action smtpd logs as "warn: RCPT from …"
            _, fields = _reject(rest[colon + 2:], fields, milter=action.startswith("milter-"))
            fields["action"] = "warn" if action == "warning" else action.removeprefix("milter-")
            return "check_action", fields
    if c == "p" and rest.startswith(("proxy-accept: ", "proxy-reject: ")):
        return _proxy(rest, fields)
    return _plain(service, rest, fields)


def _plain(service: str, text: str, fields: dict[str, Any]) -> Parsed:
    """Lines without (or after) a queue id that are not about one message."""
    c = text[:1]
    if c == "c" and text.startswith("connect from "):
        _hostip(text, 13, fields)
        return "connect", fields
    if c == "d" and text.startswith("disconnect from "):
        end = _hostip(text, 16, fields)
        if end < len(text):
            fields["text"] = text[end:].lstrip()
        return "disconnect", fields
    if c == "p" and text.startswith(("proxy-accept: ", "proxy-reject: ")):
        return _proxy(text, fields)
    if c and c in "ltoi":
        m = _SESSION_RE.match(text)
        if m is not None:
            fields["error"] = m.group(1)
            fields["stage"] = m.group(2)
            _set_client(fields, m.group(3), m.group(4), m.group(5))
            if m.group(6):
                fields["text"] = m.group(6)
            return "session_error", fields
    if " TLS connection established " in text:
        m = _TLS_RE.match(text)
        if m is not None:
            fields["trust"] = m.group(1)
            if m.group(2) == "to":
                _set_relay(fields, m.group(3), m.group(4), m.group(5))
            else:
                _set_client(fields, m.group(3), m.group(4), m.group(5))
            if m.group(6):
                fields["tls"] = m.group(6)
            return "tls", fields
    colon = text.find(": ")
    if colon > 0:
        level = _LEVELS.get(text[:colon])
        if level is not None:
            return _diagnostic(level, text[colon + 2:], fields)
    if text.startswith("reject: "):
        return _reject(text[8:], fields, milter=False)
    if c in "chl" and (service in _CLIENT_SERVICES or "[" in text) and (
            got := _relay_trouble(text, fields)) is not None:
        return got
    if c == "a" and service == "dnsblog":
        m = _DNSBLOG_RE.match(text)
        if m is not None:  # "addr IP listed by domain LIST as 127.0.0.N"
            fields["remote_ip"] = m.group(1)
            fields["rbl_list"] = m.group(2)
    _named_in(text, fields)
    fields["text"] = text
    return "postfix_other", fields


_CLIENT_SERVICES = frozenset({"smtp", "lmtp", "relay"})
_CHECK_ACTIONS = frozenset({"reject_warning", "discard", "hold", "filter", "warn", "redirect",
                            "prepend", "replace", "milter-discard", "milter-hold", "milter-redirect"})
# cleanup_act_log()'s CLASS: what a header/body check matched ("header Subject: …")
_CLEANUP_CLASSES = ("header ", "body ", "content ")


def _relay_trouble(text: str, fields: dict[str, Any]) -> Parsed | None:
    """An smtp client's failed attempt at one server: ``relay_error``."""
    m = _RELAY_TROUBLE_RE.match(text)
    if m is None:
        return None
    _set_relay(fields, m.group("host"), m.group("ip"), m.group("port"))
    rest = m.group("rest")
    reply = _REPLY_RE.match(rest)
    if reply is not None and reply.group("code"):
        fields["smtp_code"] = int(reply.group("code"))
        if reply.group("dsn"):
            fields["dsn"] = reply.group("dsn")
    stage = _IN_REPLY_RE.search(rest)
    if stage is not None:
        fields["stage"] = stage.group(1)
    fields["text"] = text
    return "relay_error", fields


def _named_in(text: str, fields: dict[str, Any]) -> None:
    """The client and envelope a line names in Postfix's usual words, for lines of no
    other grammar ("SSL_accept error from unknown[192.0.2.1]: ...", a filter's
    "RCPT from unknown[...]: ...; from=<a@b> to=<c@d> ...")."""
    if "remote_ip" not in fields and " from " in text:
        m = _FROM_CLIENT_RE.search(text)
        if m is not None:
            _set_client(fields, m.group(1), m.group(2), m.group(3))
    for key, word in (("mail_from", " from=<"), ("rcpt_to", " to=<")):
        i = text.find(word)
        if key not in fields and i >= 0:
            e = text.find(">", i + len(word))
            if e >= 0:
                fields[key] = text[i + len(word):e]


def _diagnostic(level: str, body: str, fields: dict[str, Any]) -> Parsed:
    """``warning: …`` / ``fatal: …``: SASL failures get their own event."""
    if level == "warning" and "SASL" in body:
        m = _SASL_RE.match(body)
        if m is not None:
            _set_client(fields, m.group(1), m.group(2), m.group(3))
            fields["method"] = m.group(4)
            reason = m.group(5)
            u = reason.find(", sasl_username=")
            if u >= 0:
                fields["auth_user"] = reason[u + 16:]
                reason = reason[:u]
            if reason:
                fields["reason"] = reason
            return "auth_failed", fields
    if "qid" not in fields:
        qid, rest = _split_qid(body)
        if qid is not None and qid != "NOQUEUE":
            fields["qid"] = qid
    fields["level"] = level
    if "[" in body:
        m = _HOSTIP_SEARCH_RE.search(body)
        if m is not None and m.group(1):
            _set_client(fields, m.group(1), m.group(2), m.group(3))
    elif body.startswith("hostname "):
        m = _UNRESOLVED_RE.match(body)
        if m is not None:  # forward-confirmed rDNS failed: the name is the client's claim
            fields["remote_host"] = m.group(1)
            fields["remote_ip"] = m.group(2)
    elif (m := _PEER_CHECK_RE.match(body)) is not None:
        fields["remote_host"] = m.group(2) or m.group(3)
        fields["remote_ip"] = m.group(1)
    fields["text"] = body
    return ("warning" if level == "warning" else "error"), fields


def _delivery(service: str, rest: str, fields: dict[str, Any]) -> Parsed:
    m = _DELIVERY_RE.match(rest)
    if m is None:
        e = rest.find(">", 4)
        if e > 0:
            fields["rcpt_to"] = rest[4:e]
        fields["text"] = rest
        return "postfix_other", fields
    to, orig, rhost, rip, rport, relay, delay, delays, tls, dsn, status, text = m.groups()
    fields["rcpt_to"] = to
    if orig is not None:
        fields["orig_to"] = orig
    if rip is not None:
        fields["relay_host"] = rhost
        _set_relay(fields, "", rip, rport)
    elif relay and relay != "none":
        fields["relay_host"] = relay
    if delay is not None:
        fields["delay"] = float(delay)
    if delays is not None:
        fields["delays"] = delays
    if tls is not None:  # Postfix 3.11 log_adhoc.c: per-feature TLS policy status
        fields["tls_policy"] = tls
    if dsn is not None:
        fields["dsn"] = dsn
    fields["status"] = status
    result = _RESULT.get(status)
    if result is not None:
        fields["result"] = result
    if text is not None:
        fields["text"] = text
        code = text[:3]
        if code.isdecimal() and text[3:4] == " ":
            fields["smtp_code"] = int(code)
            if service == "lmtp" and text[-1:] == ")":
                fid = _LMTP_ID_RE.match(text)
                if fid is not None:
                    fields["filter_id"] = fid.group(1)
        elif (q := _QUOTED_REPLY_RE.search(text)) is not None:
            fields["smtp_code"] = int(q.group(1))
    return "delivery", fields


def _client(value: str, fields: dict[str, Any]) -> Parsed:
    """``client=HOST[IP][:PORT](, orig_client=HOST[IP])(, sasl_method=M, sasl_username=U)``."""
    end = _hostip(value, 0, fields)
    for item in value[end:].split(", "):
        if item.startswith("orig_client="):
            m = _HOSTIP_RE.match(item, 12)
            if m is not None:
                fields["orig_client_host"] = m.group(1)
                if may_be_address(m.group(2)):
                    fields["orig_client_ip"] = m.group(2)
        elif item.startswith("sasl_method="):
            fields["method"] = item[12:]
        elif item.startswith("sasl_username="):
            fields["auth_user"] = item[14:]
    return "client", fields


def _reject(body: str, fields: dict[str, Any], milter: bool) -> Parsed:
    """``STAGE from HOST[IP]: CODE DSN REASON; from=<f> to=<t> proto=P helo=<h>``."""
    if milter:
        fields["milter"] = True
    m = _REJECT_RE.match(body)
    if m is None:
        # header/body checks: "header Subject: … from host[ip]; from=<…> …: 5.7.1 text"
        sp = body.find(" ")
        if sp > 0:
            fields["stage"] = body[:sp]
        e = _CHECKS_ENV_RE.search(body)
        # cleanup_act_log(): "CLASS CONTENT from ORIGIN;": the origin is the last " from "
        # before the envelope; a Received: header's own "[IP]" comes before it
        cut = body.rfind(" from ", 0, e.start()) if e is not None else -1
        h = _HOSTIP_RE.match(body, cut + 6) if cut > 0 else _HOSTIP_SEARCH_RE.search(body)
        if h is not None and h.group(1):
            _set_client(fields, h.group(1), h.group(2), h.group(3))
        fields["reason"] = body
        if e is not None:  # cleanup: the envelope, then ": [DSN ]TEXT" (the action's text)
            _split_envelope("; " + e.group("env"), fields)
            reply = e.group("reply")
            r = _REPLY_RE.match(reply) if reply is not None else None
            if r is not None and r.group("dsn"):
                fields["dsn"] = r.group("dsn")
            if r is not None and r.group("rest"):
                fields["reason"] = r.group("rest")
            elif reply is None:  # no text: what matched is the reason ("header Subject: x")
                what = body[:e.start()]
                cut = what.rfind(" from ")
                fields["reason"] = what[:cut] if cut > 0 else what
        if "reylist" in body:
            fields["greylist"] = True
        return "reject", fields
    fields["stage"] = m.group("stage")
    _set_client(fields, m.group("host"), m.group("ip"), m.group("port"))
    code, dsn = m.group("code", "dsn")
    if code:
        fields["smtp_code"] = int(code)
    if dsn:
        fields["dsn"] = dsn
    reason = _split_envelope(m.group("rest"), fields)
    fields["reason"] = reason
    if "reylist" in reason or "Service is unavailable (try later)" in reason:
        fields["greylist"] = True
    return "reject", fields


def _proxy(text: str, fields: dict[str, Any]) -> Parsed:
    """``proxy-accept: END-OF-MESSAGE: 250 2.5.0 OK (FILTERID); from=<f> to=<t> …``."""
    event = "proxy_accept" if text[6] == "a" else "proxy_reject"
    body = text[14:]
    c = body.find(": ")
    if c > 0 and body[:c].replace("-", "").isalpha():
        fields["stage"] = body[:c]
        body = body[c + 2:]
    m = _REPLY_RE.match(body)
    rest = body
    if m is not None:
        code, dsn = m.group("code", "dsn")
        if code:
            fields["smtp_code"] = int(code)
        if dsn:
            fields["dsn"] = dsn
        rest = m.group("rest")
    reply = _split_envelope(rest, fields)
    fid = _FILTER_ID_RE.search(reply)
    if fid is not None:
        fields["filter_id"] = fid.group(1)
    if reply:
        fields["text"] = reply
    return event, fields


def _split_envelope(rest: str, fields: dict[str, Any]) -> str:
    """Take the trailing ``; from=<…> to=<…> proto=… helo=<…>`` off a reply; return the reply."""
    i = rest.rfind("; from=<")
    if i < 0:
        i = rest.rfind("; to=<")
        if i < 0:
            i = rest.rfind("; proto=")
            if i < 0:
                return rest
    for m in _ENV_ITEM_RE.finditer(rest, i + 2):
        key = m.group(1)
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if key == "from":
            fields["mail_from"] = value
        elif key == "to":
            fields["rcpt_to"] = value
        elif key == "proto":
            fields["proto"] = value
        else:
            fields["helo"] = value
    return rest[:i]


def _postscreen(text: str) -> Parsed | None:
    """postscreen/tlsproxy: ``CONNECT from [IP]:PORT to [IP]:PORT``, ``PASS OLD [IP]:PORT``, …"""
    c = text[:1]
    if not ("A" <= c <= "Z") or text.startswith("NOQUEUE: "):
        return None  # NOQUEUE reject and lower-case notes: the general path
    m = _PSCREEN_RE.match(text)
    if m is None:
        return None
    action = m.group(1)
    fields: dict[str, Any] = {"remote_ip": m.group(3), "remote_port": int(m.group(4))}
    tail = m.group(5)
    if action == "CONNECT":
        to = _HOSTIP_SEARCH_RE.search(tail)
        if to is not None:
            fields["local_ip"] = to.group(2)
            if to.group(3):
                fields["local_port"] = int(to.group(3))
        return "connect", fields
    if action == "DISCONNECT":
        return "disconnect", fields
    fields["action"] = action
    if m.group(2).strip() or tail:
        fields["text"] = text
    return "postscreen", fields


def _pmg_filter(text: str) -> Parsed:
    """pmg-smtp-filter: ``FILTERID: new mail …``, ``accept mail to <t> (QID) (rule: R)``, …"""
    fields: dict[str, Any] = {}
    c = text.find(": ", 0, 30)
    if c >= 2 and _HEX.issuperset(text[:c]):
        fields["filter_id"] = text[:c]
        body = text[c + 2:]
        b = body[:1]
        if b == "n" and body.startswith("new mail message-id="):
            mid = body[20:]
            if mid[:1] == "<":
                e = mid.rfind(">")
                mid = mid[1:e] if e > 0 else mid[1:]
            fields["message_id"] = mid
            return "filter_new", fields
        if b in ("a", "b"):
            m = _PMG_ACCEPT_RE.match(body)
            if m is not None:
                fields["rcpt_to"] = m.group(2)
                if m.group(3):
                    fields["qid"] = m.group(3)
                if m.group(4) is not None:
                    fields["rule"] = m.group(4)
                return ("filter_accept" if m.group(1) == "accept" else "filter_block"), fields
        if b == "m":
            m = _PMG_QUAR_RE.match(body)
            if m is not None:
                fields["rcpt_to"] = m.group(1)
                fields["quarantine"] = m.group(2)
                fields["quarantine_id"] = m.group(3)
                if m.group(4) is not None:
                    fields["rule"] = m.group(4)
                return "filter_quarantine", fields
        if b == "S":
            m = _PMG_SA_RE.match(body)
            if m is not None:
                try:
                    fields["score"] = float(m.group(1))
                    fields["threshold"] = float(m.group(2))
                except ValueError:
                    pass
        fields["text"] = body
        return "filter_info", fields
    fields["text"] = text
    return "filter_info", fields


def _hostip(text: str, start: int, fields: dict[str, Any]) -> int:
    """``HOST[IP][:PORT]`` at ``start`` into remote_*; returns the index after it."""
    m = _HOSTIP_RE.match(text, start)
    if m is None:
        fields["text"] = text[start:]
        return len(text)
    _set_client(fields, m.group(1), m.group(2), m.group(3))
    return m.end()


def _set_client(fields: dict[str, Any], host: str, ip: str, port: str | None) -> None:
    if host:
        fields["remote_host"] = host
    if ip and may_be_address(ip):  # not the "unknown" of unknown[unknown]
        fields["remote_ip"] = ip
    if port:
        fields["remote_port"] = int(port)


def _set_relay(fields: dict[str, Any], host: str, ip: str, port: str | None) -> None:
    if host:
        fields["relay_host"] = host
    if "/" in ip:  # lmtp/smtp over a unix socket: relay=host[private/dovecot-lmtp]
        fields["relay_socket"] = ip
    elif ip and may_be_address(ip):
        fields["relay_ip"] = ip
    if port:
        fields["relay_port"] = int(port)
