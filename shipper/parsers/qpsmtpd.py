"""qpsmtpd (0.9x, the Perl SMTP front end many qmail sites run before qmail-queue).

With no logging plugin (or ``logging/warn``) qpsmtpd writes each message to stderr
as ``PID[ (HOOK) PLUGIN:] TEXT`` (``Qpsmtpd::varlog``): under daemontools that is
a multilog line with no program name, known here by its pid and one of the forms
below. PID is the process that logged: qpsmtpd-forkserver's parent for
``Listening on``, ``Running as user``, ``cleaning up after CHILD`` and the
``pre-connection`` hook; the child serving a connection (tcpserver's child when
run under tcpserver) for the rest of a session; the queue plugin's fork, which
becomes qmail-queue (so its pid is the ``qp`` of ``250 Queued! T qp N <ID>``), for
``(queue) queue::qmail_2dqueue: (for CHILD) Queuing to PATH``.
``logging/syslog`` writes the same text without the pid and the plugin prefix,
tag ``qpsmtpd[PID]``: the core forms parse there too.

Lines (Qpsmtpd/TcpServer.pm, SMTP.pm, qpsmtpd-forkserver, the plugins):
``Accepted connection RUNNING/MAX from IP / HOST``, ``Connection from INFO [IP]``,
``dispatching LINE`` (every client line; ``AUTH MECH RESPONSE`` carries a
credential and is redacted), ``CODE[-| ]TEXT`` (every reply line), ``(HOOK) PLUGIN:
TEXT`` (a plugin's own message, most ``pass…``/``fail…``/``skip…``),
``(HOOK) running plugin: NAME``, ``Plugin NAME, hook HOOK returned RC, TEXT``
(LOGDEBUG), ``click, disconnecting``, ``cleaning up after PID`` and a few others.
"""

from __future__ import annotations

import re
from typing import Any

from shipper.parsers.recordio import REDACTED, secret_in

Parsed = tuple[str, dict[str, Any]]

_ACCEPTED_RE = re.compile(r"Accepted connection (\d{1,9})/(\d{1,9}) from (\S+) / (\S*)$")
_CONNECTION_RE = re.compile(r"Connection from (\S*) \[([^\]]*)\]$")
_REPLY_RE = re.compile(r"([2-5]\d\d)(?:([ -])(.*))?$")  # "334  " (AUTH PLAIN's) ends bare
_DSN_RE = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")
_QUEUED_RE = re.compile(r"Queued! (\d{1,20}) qp (\d{1,10}) <([^>]*)>")
_PLUGIN_RE = re.compile(r"\(([a-z][\w-]*)\) (?:running plugin: (\S+)$|([\w:]+): ?(.*)$)")
_HOOK_RC_RE = re.compile(r"Plugin (\S+), hook ([\w-]+) returned (\w+), ?(.*)$")
_QUOTED_RE = re.compile(r"'([^']*)'")
_FOR_RE = re.compile(r"\(for (\d{1,10})\) ")
_ADDR_RE = re.compile(r"(?:FROM|TO):\s*<([^>]*)>", re.IGNORECASE)
_RESULT_RE = re.compile(r"(pass|fail|skip|error|karma)\b")
# The parent's and the core's other messages, by their first words
_INFO_HEADS = (
    "Listening on ", "Running as user ", "spooling message to disk", "deny mail from ",
    "denysoft mail from ", "Too many connections", "Connection Timed Out",
    "Lost connection to client", "Could not print", "Initializing spool_dir",
    "size_threshold set to ", "XX: ",
)
# LOGDEBUG's (loglevel 7): the config cache, plugin loading, address parsing
_DEBUG_HEADS = (
    "in config(", "config(", "trying to get config for ", "setting _config_cache for ",
    "DESTROY called by ", "unlinked ", "to email address : ", "from email address : ",
    "full from_parameter: ", "getting mail from ", "adding auth results header", "Loading ",
    "delivery denied (", "Authentication-Results moved", "max_size: ",
)
_HOOKING_RE = re.compile(r"[\w:]+(?:: initializing | hooking [\w-]+$)")


def parse(text: str) -> Parsed | None:
    """``PID TEXT`` as qpsmtpd writes it to stderr; None for any other line."""
    pid, sp, rest = text.partition(" ")
    if not sp or not pid.isdecimal() or len(pid) > 10:
        return None
    got = parse_text(rest)
    if got is None:
        return None
    got[1]["pid"] = int(pid)
    if "_redact" in got[1]:
        got[1]["_redact"] = f"{pid} {got[1]['_redact']}"
    return got


def parse_text(text: str) -> Parsed | None:
    """qpsmtpd's message after its pid (syslog's text); None if not one of its forms."""
    text = text.rstrip()
    head = text[:1]
    if head == "(":
        return _plugin(text)
    if head.isdecimal():
        return _reply(text)
    if text.startswith("dispatching "):
        return _command(text[12:])
    if text == "click, disconnecting":
        return "qpsmtpd_disconnect", {}
    if text.startswith("cleaning up after "):
        child = text[18:]
        return ("qpsmtpd_child_end", {"conn_pid": int(child)}) if child.isdecimal() and len(child) <= 10 else None
    if text.startswith("Accepted connection "):
        m = _ACCEPTED_RE.match(text)
        if m is None:
            return None
        return "qpsmtpd_accept", {"children": int(m.group(1)), "limit": int(m.group(2)),
                                  "remote_ip": m.group(3), "remote_host": m.group(4)}
    if text.startswith("Connection from "):
        m = _CONNECTION_RE.match(text)
        if m is None:
            return None
        info, _, host = m.group(1).rpartition("@")  # TCPREMOTEINFO@HOST when ident gave one
        fields: dict[str, Any] = {"remote_host": host, "remote_ip": m.group(2)}
        if info:
            fields["remote_info"] = info
        return "qpsmtpd_connect", fields
    if text.startswith("Plugin "):
        m = _HOOK_RC_RE.match(text)
        if m is None:
            return None
        fields = {"plugin": m.group(1), "hook": m.group(2), "action": m.group(3)}
        if m.group(4):
            fields["text"] = m.group(4)
        return "qpsmtpd_hook_result", fields
    if text.startswith(_INFO_HEADS):
        return "qpsmtpd_info", {"text": text}
    if text.startswith(_DEBUG_HEADS) or _HOOKING_RE.match(text) is not None:
        return "qpsmtpd_debug", {"text": text}
    return None


def _command(line: str, redacted: bool = False) -> Parsed:
    if not redacted and line.partition(" ")[0].upper() != "AUTH" and (span := secret_in(line)) is not None:
        # recordio's rules: above all a lone base64 word, the credentials a client sends
        # after an AUTH that was refused (no AUTH plugin, HELO, no TLS): read as commands
        line = line[:span[0]] + REDACTED + line[span[1]:]
        got = _command(line, redacted=True)
        got[1]["_redact"] = f"dispatching {line}"
        return got
    verb, _, arg = line.partition(" ")
    verb = verb.upper()
    fields: dict[str, Any] = {"verb": verb}
    if arg:
        fields["text"] = arg
    if verb in ("HELO", "EHLO"):
        fields["helo"] = arg.strip()
    elif verb in ("MAIL", "RCPT"):
        m = _ADDR_RE.match(arg)
        if m is not None:
            fields["mail_from" if verb == "MAIL" else "rcpt_to"] = m.group(1)
    elif verb == "AUTH":
        mech, _, response = arg.partition(" ")
        fields["text"] = mech
        if response:
            # the initial response is the credential (AUTH PLAIN's base64 password)
            fields["text"] = f"{mech} {REDACTED}"
            fields["_redact"] = f"dispatching {line[:len(line) - len(arg)]}{mech} {REDACTED}"
    return "qpsmtpd_command", fields


def _reply(text: str) -> Parsed | None:
    m = _REPLY_RE.match(text)
    if m is None:
        return None
    code = m.group(1)
    body = m.group(3) or ""
    fields: dict[str, Any] = {"smtp_code": int(code), "reply_class": code[0] + "xx", "text": body}
    if m.group(2) == "-":
        fields["continued"] = True
    if (d := _DSN_RE.search(body)) is not None:
        fields["dsn"] = d.group(1)
    if body.startswith("Queued! ") and (q := _QUEUED_RE.match(body)) is not None:
        fields["qp"] = int(q.group(2))
        if q.group(3):
            fields["message_id"] = q.group(3)
    return "qpsmtpd_reply", fields


def _plugin(text: str) -> Parsed | None:
    m = _PLUGIN_RE.match(text)
    if m is None:
        return None
    hook, running, plugin, msg = m.groups()
    if running is not None:
        # varlog's form for a hook with no plugin named: "(HOOK) running plugin: NAME"
        return "qpsmtpd_plugin", {"hook": hook, "plugin": running}
    if hook == "unrecognized_command" and (q := _QUOTED_RE.search(msg)) is not None \
            and secret_in(q.group(1)) is not None:
        # count_unrecognized_commands names the command: a credential sent as one
        msg = msg[:q.start(1)] + REDACTED + msg[q.end(1):]
        got = _plugin(text[:len(text) - len(m.group(4))] + msg)
        assert got is not None
        got[1]["_redact"] = text[:len(text) - len(m.group(4))] + msg
        return got
    if hook.startswith("auth") and msg.startswith("user: ") and (at := msg.find(", pass: ")) > 0 \
            and msg[at + 8:] != REDACTED:
        # auth_ldap_bind at LOGDEBUG: "user: USER, pass: PASSWORD" in clear (0.94's
        # plugins/auth/auth_ldap_bind); all after "pass: " goes, a password may hold ", "
        head = text[:len(text) - len(msg)]
        got = _plugin(f"{head}{msg[:at + 8]}{REDACTED}")
        assert got is not None
        got[1]["_redact"] = f"{head}{msg[:at + 8]}{REDACTED}"
        return got
    fields: dict[str, Any] = {"hook": hook, "plugin": plugin, "text": msg}
    if (r := _RESULT_RE.match(msg)) is not None:
        fields["plugin_result"] = r.group(1)
    if (f := _FOR_RE.match(msg)) is not None:
        fields["conn_pid"] = int(f.group(1))  # the queue plugin's fork names its session
    return "qpsmtpd_plugin", fields
