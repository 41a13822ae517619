"""Program parsers: pure functions from one line's program text to (event, fields).

A parser takes the text a program wrote (after the stamp, the syslog header and,
for prefixed programs, after ``program: ``) and returns ``(event, fields)``, or
None when the text is not in its grammar. Parsers never raise on any input and
tolerate trailing white space and ``\\r``. Two keys in ``fields`` are special and
taken out by the dispatcher: ``"pid"`` (int, the logging process's pid, moved to
the record's core ``pid``) and ``"_redact"`` (the text with secrets replaced by
``[REDACTED]``, used for ``message``/``raw`` when redaction is on).
Field names are the ones in docs/records.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipper.parsers import (
    misc,
    plesk,
    postfix,
    qmail_send,
    qpsmtpd,
    scanners,
    smtpd,
    smtpd_patches,
    ucspi,
)

Parsed = tuple[str, dict[str, Any]]
ParserFn = Callable[[str], Parsed | None]

# Programs that write "name: text" (or "name[pid]: text"), by name.
PREFIXED: dict[str, ParserFn] = {
    "tcpserver": ucspi.parse_tcpserver,
    "sslserver": ucspi.parse_sslserver,
    "tcpsvd": ucspi.parse_tcpsvd,
    "sslsvd": ucspi.parse_tcpsvd,
    "rblsmtpd": ucspi.parse_rblsmtpd,
    "s6-tcpserverd": ucspi.parse_s6_tcpserver,
    "s6-tcpserver4d": ucspi.parse_s6_tcpserver,
    "s6-tcpserver6d": ucspi.parse_s6_tcpserver,
    "s6-tcpserver-access": ucspi.parse_s6_tcpserver,
    "qmail-smtpd": smtpd.parse_qmail_smtpd,
    "qmail-popup": smtpd.parse_qmail_popup,
    "qmail-pop3d": smtpd.parse_qmail_popup,
    "qmail-daemon": qmail_send.parse_qmail_daemon,
    "qscheduler": qmail_send.parse_qmail_daemon,
    "vchkpw": misc.parse_vchkpw_prefixed,
    "vpopmail": misc.parse_vchkpw,
    "simscan": misc.parse_simscan_prefixed,
    "jgreylist": misc.parse_jgreylist,
    "spamdyke": misc.parse_spamdyke,
    "dovecot": misc.parse_dovecot,
    # SpamAssassin's spamd and ClamAV's clamd (syslog tags; "spamd: result: …" in a log)
    "spamd": scanners.parse_spamd,
    "clamd": scanners.parse_clamd,
    # Plesk's qmail (/usr/local/psa/var/log/maillog) and its Courier-IMAP
    "qmail-queue-handlers": plesk.parse_queue_handlers,
    "qmail-local-handlers": plesk.parse_local_handlers,
    "qmail-remote-handlers": plesk.parse_remote_handlers,
    "relaylock": plesk.parse_relaylock,
    "smtp_auth": plesk.parse_smtp_auth,
    "pop3d": plesk.parse_courier_pop3,
    "pop3d-ssl": plesk.parse_courier_pop3,
    "courierpop3login": plesk.parse_courier_pop3,
    "imapd": plesk.parse_courier_imap,
    "imapd-ssl": plesk.parse_courier_imap,
    "imaplogin": plesk.parse_courier_imap,  # courier-imap before 4.0's login process
    "authdaemond": plesk.parse_courier_authdaemond,  # its DEBUG_LOGIN=2 password lines
    # qpsmtpd's logging/syslog: its text without the pid (stderr's form: parse.dispatch)
    "qpsmtpd": qpsmtpd.parse_text,
}

# The same by a line's first word ("tcpserver:"): the dispatcher's one look-up.
PREFIXED_WORDS: dict[str, tuple[str, ParserFn]] = {f"{name}:": (name, fn) for name, fn in PREFIXED.items()}

# qmail-send writes no program name: its lines are known by their first word.
QMAIL_SEND_WORDS = frozenset({
    "status:", "new", "info", "starting", "delivery", "bounce", "triple", "double", "end",
    "warning:", "alert:", "warn:", "info:", "local:", "remote:", "running", "exiting", "number",
    "local", "remote", "delete",
})

# Other text with no known "name: " prefix, tried in order: (program, parser).
UNPREFIXED: tuple[tuple[str, ParserFn], ...] = (
    ("qmail-smtpd", smtpd.parse_spamcontrol),
    ("qmail-smtpd", smtpd_patches.parse_qlog),
    ("qmail-smtpd", smtpd_patches.parse_qmt_recv),
    ("chkuser", misc.parse_chkuser),
    ("simscan", misc.parse_simscan),
    # vchkpw's text without its syslog tag (journalctl -o cat, a %msg% template):
    # still the password-logging variant, so still redacted
    ("vpopmail", misc.parse_vchkpw),
    # checkpassword-pam 0.95's stderr, with the password in it
    ("checkpassword-pam", misc.parse_checkpassword_pam),
    ("spamdyke", misc.parse_spamdyke_untagged),
    # Courier-IMAP's stderr into multilog: "INFO: LOGIN, user=...", its level always written
    ("courier-imap", plesk.parse_courier_untagged),
    # dovecot's own log file or stderr: "imap-login: Info: ..." (its level always written)
    ("dovecot", misc.parse_dovecot_log),
    # spamd -s stderr into multilog: "[PID] info: spamd: …"
    ("spamd", scanners.parse_spamd_stderr),
    # clamd's LogFile or its stdout into multilog: "Www Mmm dd HH:MM:SS YYYY -> …",
    # a bare "PATH: NAME FOUND"
    ("clamd", scanners.parse_clamd_log),
)


def parse_postfix(service: str, text: str) -> Parsed | None:
    """Postfix and pmg-smtp-filter, by syslog service name (last path part of the tag)."""
    return postfix.parse(service, text)
