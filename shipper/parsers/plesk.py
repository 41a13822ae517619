"""Plesk's qmail lines and Courier-IMAP's, as found in ``/usr/local/psa/var/log/maillog``.
Pure functions of one line's text (after ``program[PID]: ``).

* qmail-queue-handlers, qmail-local-handlers, qmail-remote-handlers (Plesk's filters
  around qmail-queue, qmail-local and qmail-remote): ``from=ADDR``, ``to=ADDR``,
  ``mailbox: PATH`` and their other, diagnostic lines (``Handlers Filter before-local
  for qmail started ...``, ``possibly qmail-smtpd exited by timeout, ...``).
* relaylock (Plesk's POP-before-SMTP check, run by tcp-env before qmail-smtpd):
  ``/var/qmail/bin/relaylock: mail from IP:PORT (HOST)``.
* smtp_auth (Plesk's checkpassword for SMTP AUTH), its text after a doubled
  ``smtp_auth: ``: ``SMTP connect from INFO@HOST [IP]``, ``SMTP user USER : PATH logged
  in from INFO@HOST [IP]``, ``FAILED: USER - password incorrect from INFO@HOST [IP]``.
* Courier-IMAP's pop3d/imapd (Plesk before 9.x's Dovecot, and many vpopmail boxes):
  ``LOGIN, user=U, ip=[IP], port=[P], protocol=POP3``, ``LOGIN FAILED, user=U, ip=[IP]``,
  ``LOGOUT|DISCONNECTED|TIMEOUT, user=U, ip=[IP], top=N, retr=N, rcvd=N, sent=N, time=N[, stls=1]``,
  ``Connection, ip=[IP]``, ``Disconnected, ip=[IP], ...``; modern Courier writes its level
  first (``INFO: LOGIN, ...``), which multilog keeps; courier-authlib's ``DEBUG_LOGIN``
  lines (``LOGIN: ip=[IP], password=PW``, authdaemond's ``clearpasswd=PW, ...``) are redacted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from shipper.ipaddr import ip_address, ip_field

Parsed = tuple[str, dict[str, Any]]

_TRAILING = " \r\t\n"
# a port within int()'s digit limit (4,300: beyond, ValueError, and a parser never raises)
_RELAYLOCK_RE = re.compile(
    r"(?:\S*relaylock: )?mail from (?P<ip>[^\s:]+):(?P<port>\d{1,4000})(?: \((?P<host>[^)]*)\))?$")
# "unknown@ [IP]": TCPREMOTEINFO@TCPREMOTEHOST, either may be empty or "(null)"
_FROM_RE = re.compile(r" from (?P<who>\S*) \[(?P<ip>[^\]]*)\]$")
_SMTP_USER_RE = re.compile(r"SMTP user (?P<user>.*?) : \S+ logged in$")
_SMTP_FAILED_RE = re.compile(r"FAILED: (?P<user>.*?) - (?P<reason>[^ ].*?)$")
# its stderr's level ("INFO: LOGIN, ...", "DEBUG: Connection, ..."): courierlogger takes
# ERR/WARN/ALERT/CRIT/DEBUG/INFO off for syslog (courier-libs liblog/logger.c), not NOTICE;
# multilog (courier-imap under tcpserver) keeps them all
_COURIER_LEVEL_RE = re.compile(r"(?:ERR|WARN|ALERT|CRIT|DEBUG|INFO|NOTICE): *")
# "Disconnected, ip=[IP], ..." ends a session that never logged in (imapd's bye_msg(),
# pop3login's end), "Disconnected during shutdown by signal, ..." one imapd was told to end
_COURIER_HEAD_RE = re.compile(
    r"(?P<what>[A-Z][A-Z ]*[A-Z]|Connection|Disconnected(?: during shutdown by signal)?), (?P<rest>[a-z]+=.*)$")
# a pair starts the text or follows ", ", and a "[...]" value ends before the next ","
# (Courier's are an address or a port): tried at every letter, or with a "[" run to
# the end of the line at every pair, a corrupt line of 64 KB took 10 s (quadratic)
_COURIER_PAIR_RE = re.compile(r"(?:\A|(?<=, ))([a-z]+)=(\[[^\],]*\]|[^,]*)(?:, |$)")
# Courier's per-session counters: POP3's top/retr, IMAP's headers/body, both rcvd/sent
# (bytes) and time (seconds)
_COURIER_COUNTS = {"top": "top", "retr": "retr", "headers": "headers", "body": "body",
                   "rcvd": "bytes_in", "sent": "bytes_out"}
_COURIER_END = {"LOGOUT": "logout", "DISCONNECTED": "disconnected", "TIMEOUT": "timeout",
                "Disconnected": "disconnected", "Disconnected during shutdown by signal": "shutdown"}


def _ip(text: str) -> str | None:
    """The address as IP fields hold it (Courier's ``::ffff:1.2.3.4`` as IPv4, see
    shipper.ipaddr); None for what is not an address (a paste's hand-masked
    ``43.123.841.246``)."""
    return None if ip_address(text) is None else ip_field(text)


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() takes "²", which int() refuses; and within
    int()'s digit limit (4,300), which it refuses too (a number beyond 64 bits is
    then the parser's FIELD_text, as any parser's)."""
    return text.isdigit() and text.isascii() and len(text) <= 4000


def _handlers(stage: str) -> Callable[[str], Parsed | None]:
    def parse(text: str) -> Parsed | None:
        if text[-1:] in _TRAILING:
            text = text.rstrip(_TRAILING)
        if not text:
            return None
        fields: dict[str, Any] = {"stage": stage}
        if text.startswith("from="):
            fields["mail_from"] = text[5:]
        elif text.startswith("to="):
            fields["rcpt_to"] = text[3:]
        elif text.startswith("mailbox: "):
            fields["mailbox"] = text[9:]
        else:
            fields["text"] = text
        return "plesk_handler", fields
    parse.__doc__ = f"qmail-{stage}-handlers' text: ``plesk_handler``."
    return parse


parse_queue_handlers = _handlers("queue")
parse_local_handlers = _handlers("local")
parse_remote_handlers = _handlers("remote")


def parse_relaylock(text: str) -> Parsed | None:
    """relaylock's text: ``relaylock`` with the client of a connection."""
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    m = _RELAYLOCK_RE.match(text)
    if m is None:
        return ("relaylock", {"text": text}) if text else None
    fields: dict[str, Any] = {}
    ip = _ip(m.group("ip"))
    if ip is not None:
        fields["remote_ip"] = ip
    fields["remote_port"] = int(m.group("port"))
    if m.group("host"):
        fields["remote_host"] = m.group("host")
    return "relaylock", fields


def parse_smtp_auth(text: str) -> Parsed | None:
    """Plesk smtp_auth's text: ``pop_auth`` (service ``smtp``) for a login or a failed
    one, ``smtp_auth`` (``remote_ip``, ``text``) for its other lines."""
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    if text.startswith("smtp_auth: "):  # it names itself again in its verdicts
        text = text[11:]
    m = _FROM_RE.search(text)
    head = text if m is None else text[:m.start()].rstrip(" ")
    fields: dict[str, Any] = {}
    if (u := _SMTP_USER_RE.match(head)) is not None:
        event = "pop_auth"
        fields = {"service": "smtp", "result": "success", "auth_user": u.group("user")}
    elif (u := _SMTP_FAILED_RE.match(head)) is not None:
        event = "pop_auth"
        fields = {"service": "smtp", "result": "failure", "reason": u.group("reason"),
                  "auth_user": u.group("user")}
    elif text:
        event = "smtp_auth"
        fields = {"text": text}
    else:
        return None
    if m is not None and (ip := _ip(m.group("ip"))) is not None:
        fields["remote_ip"] = ip
    return event, fields


# courier-authlib authdebug.c courier_authdebug_login(): "DEBUG: LOGIN: ip=[%s], %s" (older
# releases "LOGIN: DEBUG: ip=[%s], %s"), with DEBUG_LOGIN set in imapd's or pop3d's
# configuration: "command=USER", "username=U" and, with DEBUG_LOGIN=2, "password=PW"
_COURIER_DEBUG_RE = re.compile(r"(?:DEBUG: )?ip=\[([^\],]*)\], ")


def _courier_login_debug(text: str, at: int) -> Parsed | None:
    """Courier's login debugging (``LOGIN: ip=[IP], …`` from ``at``): ``checkpassword_debug``,
    a ``password=`` redacted to the end of the line (the password is any text)."""
    m = _COURIER_DEBUG_RE.match(text, at)
    if m is None:
        pw = text.find("password=", at)  # not its form, but a password all the same
        return None if pw < 0 else ("checkpassword_debug", {"_redact": text[:pw] + "password=[REDACTED]"})
    fields: dict[str, Any] = {}
    if (ip := _ip(m.group(1))) is not None:
        fields["remote_ip"] = ip
    what = text[m.end():]
    if what.startswith("password="):
        fields["_redact"] = text[:m.end()] + "password=[REDACTED]"
    elif what.startswith("username="):
        fields["auth_user"] = what[9:]
    return "checkpassword_debug", fields


def parse_courier_authdaemond(text: str) -> Parsed | None:
    """courier-authlib authdaemond's text: with DEBUG_LOGIN=2, courier_authdebug_authinfo()
    writes ``PREFIX: clearpasswd=PW, passwd=HASH`` (``Authenticated: clearpasswd=…``):
    ``checkpassword_debug``, redacted from ``clearpasswd=`` to the end of the line (the
    password may hold ", passwd="). Its other lines: None."""
    at = text.find("clearpasswd=")
    if at < 0:
        return None
    return "checkpassword_debug", {"_redact": text[:at] + "clearpasswd=[REDACTED]"}


def _courier(service: str) -> Callable[[str], Parsed | None]:
    def parse(text: str) -> Parsed | None:
        if text[-1:] in _TRAILING:
            text = text.rstrip(_TRAILING)
        lvl = _COURIER_LEVEL_RE.match(text)
        at = lvl.end() if lvl is not None else 0
        if text.startswith("LOGIN: ", at):
            return _courier_login_debug(text, at + 7)
        m = _COURIER_HEAD_RE.match(text, at)
        if m is None:
            return None
        what, rest = m.group("what"), m.group("rest")
        # user= is the name the client gave, ", " and "ip=[" and all: it runs to the
        # last ", ip=[" (Courier writes the address after it), not to the next ", "
        user = None
        at = 0 if rest.startswith("user=") else rest.find(", user=")
        if at > 0:
            at += 2
        if at >= 0 and (end := rest.rfind(", ip=[", at)) > at:
            user, rest = rest[at + 5:end], rest[:at] + rest[end + 2:]
        pairs = {k: v[1:-1] if v[:1] == "[" else v for k, v in _COURIER_PAIR_RE.findall(rest)}
        if user is not None:
            pairs["user"] = user
        fields: dict[str, Any] = {"service": service}
        if what == "LOGIN":
            event = "pop_auth"
            fields["result"] = "success"
        elif what == "LOGIN FAILED":
            event = "pop_auth"
            fields["result"] = "failure"
        elif what in _COURIER_END:
            event = "pop_logout"
            fields["reason"] = _COURIER_END[what]
        elif what == "Connection":
            event = "pop_connect"
        else:
            return None
        if pairs.get("user"):
            fields["auth_user"] = pairs["user"]
        if pairs.get("method"):
            fields["method"] = pairs["method"]
        if (ip := _ip(pairs.get("ip", ""))) is not None:
            fields["remote_ip"] = ip
        if _digits(pairs.get("port", "")):
            fields["remote_port"] = int(pairs["port"])
        if pairs.get("protocol"):
            fields["proto"] = pairs["protocol"]
        if "1" in (pairs.get("stls"), pairs.get("starttls")):  # TLS by STLS (pop3d), STARTTLS (imapd)
            fields["tls"] = "STARTTLS"
        for key, name in _COURIER_COUNTS.items():
            if _digits(pairs.get(key, "")):
                fields[name] = int(pairs[key])
        if _digits(pairs.get("time", "")) and len(pairs["time"]) <= 20:  # more: float() is inf
            fields["duration_s"] = float(pairs["time"])
        return event, fields
    parse.__doc__ = f"Courier {service} server's text: ``pop_auth``, ``pop_logout``, ``pop_connect``."
    return parse


parse_courier_pop3 = _courier("pop3")
parse_courier_imap = _courier("imap")


def parse_courier_untagged(text: str) -> Parsed | None:
    """Courier-IMAP's stderr with no name (tcpserver ... imaplogin ... into multilog), each
    line with its level: ``INFO: LOGIN, user=U, ip=[IP], port=[P], protocol=IMAP``. The
    service from ``protocol=`` or the session's counters (POP3's top/retr, IMAP's
    headers/body), else none."""
    if _COURIER_LEVEL_RE.match(text) is None:
        return None
    if "clearpasswd=" in text:  # authdaemond's DEBUG_LOGIN=2 on the same stderr
        return parse_courier_authdaemond(text)
    got = parse_courier_imap(text)
    if got is None:
        return None
    event, fields = got
    if event == "checkpassword_debug":  # its login debugging: no service
        return got
    proto = fields.get("proto", "").lower()
    if proto.startswith(("pop3", "imap")):
        fields["service"] = proto[:4]
    elif "top" in fields or "retr" in fields or ", stls=1" in text:
        fields["service"] = "pop3"
    elif not ("headers" in fields or "body" in fields or ", starttls=1" in text):
        del fields["service"]
    return event, fields
