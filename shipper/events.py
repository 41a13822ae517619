"""The event names records carry (docs/records.md) and the programs shipper knows by
name: so a typo in an include or exclude list is said (``include_events = ["delivry"]``
dropped every record, and ``check`` said ok). tests/test_events.py holds them
complete against every fixture line and the parsers' source."""

from __future__ import annotations

import difflib

EVENTS = frozenset({
    "alert", "auth_failed", "bounce", "bounce_deleted", "bounce_msg", "bounce_processor",
    "check_action", "checkpassword_debug", "chkuser", "clamd", "client", "connect", "daemon",
    "delivery", "delivery_account", "delivery_mangled", "disconnect", "double_bounce", "dovecot",
    "end_msg", "error", "expired", "filter_accept", "filter_block", "filter_info", "filter_new",
    "filter_quarantine", "gap", "greylist", "greylist_info", "info", "info_msg", "io_client",
    "io_eof", "io_server", "legacy", "mail", "message_id", "new_msg", "pickup", "plesk_handler",
    "pop_auth", "pop_connect", "pop_logout", "postfix_other", "postscreen", "proxy_accept",
    "proxy_reject", "qpsmtpd_accept", "qpsmtpd_child_end", "qpsmtpd_command", "qpsmtpd_connect",
    "qpsmtpd_debug", "qpsmtpd_disconnect", "qpsmtpd_hook_result", "qpsmtpd_info",
    "qpsmtpd_plugin", "qpsmtpd_reply", "queue_active", "rbl_block", "rbl_greetdelay",
    "rbl_info", "reject", "relay_error", "relaylock", "removed", "repeated", "session_error",
    "simscan", "simscan_info", "smtp_accept", "smtp_auth", "smtp_decision", "smtp_other",
    "smtp_queued", "smtp_reject", "smtp_session", "spam_check", "spam_result", "spamd",
    "spamdyke", "spamdyke_error", "spamdyke_filter", "spamdyke_message", "starting_delivery",
    "status", "status_exiting", "status_info", "tcp_deny", "tcp_end", "tcp_error", "tcp_info",
    "tcp_ok", "tcp_pid", "tcp_status", "tls", "tls_accept", "triple_bounce", "unparsed",
    "virus_found", "warning",
})

# Programs named by the parsers (syslog tags are free text: a name not here is no error,
# only one close to one of these is likely a typo)
PROGRAMS = frozenset({
    "authdaemond", "checkpassword-pam", "chkuser", "clamd", "courier-imap", "courierpop3login",
    "dovecot", "imapd", "imaplogin", "jgreylist", "pmg-smtp-filter", "pop3d", "postfix",
    "qmail-local-handlers", "qmail-pop3d", "qmail-popup", "qmail-queue-handlers",
    "qmail-remote-handlers", "qmail-send", "qmail-smtpd", "qpsmtpd", "rblsmtpd", "recordio",
    "relaylock", "s6-tcpserver-access", "s6-tcpserverd", "shipper", "simscan", "smtp_auth",
    "spamd", "spamdyke", "sslserver", "tcpserver", "tcpsvd", "vchkpw", "vpopmail",
})


def unknown_name(name: str, known: frozenset[str]) -> str | None:
    """For a name that is not in ``known``, the one it was likely meant to be."""
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, 1, 0.75)
    return close[0] if close else ""
