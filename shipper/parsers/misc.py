"""vpopmail vchkpw, chkuser and simscan lines. Pure functions of one line's text.

* vchkpw (syslog tag ``vpopmail``): ``vchkpw-SERVICE: [(METHOD) ]PHRASE[ (pass: 'PW')] USER:IP``;
  the ``(pass: '…')`` variant logs the cleartext password, which is redacted.
* checkpassword-pam 0.95 (stderr, no prefix): ``Password 'PW' read successfully``, redacted.
* chkuser (qmail-smtpd stderr, no prefix):
  ``CHKUSER DECISION: from <SENDER:AUTHUSER:RELAYCLIENT> remote <HELO:HOST:IP> rcpt <R> : TEXT``;
  2.0.9 labels them: ``from <SENDER|remoteinfo/auth:AUTHUSER|chkuser-identify:ID> remote
  <helo:HELO|remotehostname:HOST|remotehostip:IP>``.
* simscan (qmail-smtpd stderr; simscan.c log_message):
  ``simscan:[PPID]:VERDICT (HITS/REQ):T.TTTTs:SUBJECT:IP:FROM:RCPT[,RCPT…]`` (the
  score part only for spam scans). The subject may hold ``:``, so the last three
  fields are taken from the right. PPID is qmail-smtpd's pid: the connection key.
* spamdyke (syslog tag ``spamdyke[PID]``; spamdyke's log.c/filter.c), one line per
  recipient: ``ACTION from: SENDER to: RCPT origin_ip: IP origin_rdns: NAME auth: USER``
  then, from 4.x, `` encryption: TLS-STATE`` and `` reason: TEXT``. ``(unknown)``,
  ``(none)`` and ``(empty)`` stand for no value. ACTION is ``ALLOWED``, ``DENIED_*``,
  ``TIMEOUT``, ``TLS_ENCRYPTED``, ... Its other lines (``ERROR: ...``) keep their text;
  its verbose ``FILTER_NAME key: value ...`` lines name the filter that fired.
* dovecot (syslog tag ``dovecot``; the IMAP/POP3 server of many qmail/vpopmail
  boxes): ``SERVICE: [LEVEL: ]TEXT``, where a login process (``imap-login``,
  ``pop3-login``, ``submission-login``) ends its text with its log format
  elements (default ``user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>``,
  comma-separated): ``Login: user=<u>, method=PLAIN, rip=IP, ...`` and
  ``Disconnected (auth failed, 1 attempts in 2 secs): user=<u>, ...``. A mail
  process names its user, pid and session (2.3: ``imap(u)<4321><SESSION>: ...``).
"""

from __future__ import annotations

import re
from itertools import pairwise
from socket import AF_INET6, inet_pton
from typing import Any

from shipper.ipaddr import may_be_address

Parsed = tuple[str, dict[str, Any]]

_TRAILING = " \r\t\n"
# the phrase may end in "(VAR)": vchkpw.c's "putenv(USER) failed errno %d"
_VCHKPW_RE = re.compile(
    r"vchkpw-(?P<service>[\w.-]+): (?:\((?P<method>[^)]*)\) )?(?P<phrase>[a-z][a-z ]*[a-z](?:\([A-Z]+\))?)"
    r"(?: \(pass: '(?P<pw>.*)'\))? (?P<who>.+)$")
# vchkpw.c: "invalid user/domain characters %s:%s" with TheName, as given (spaces and all)
_VCHKPW_BAD_NAME = "invalid user/domain characters"
_VCHKPW_HEAD_RE = re.compile(
    r"vchkpw-(?P<service>[\w.-]+): (?:\((?P<method>[^)]*)\) )?(?P<phrase>[a-z][a-z ]*[a-z])")
_CHKUSER_RE = re.compile(
    r"CHKUSER (?P<decision>[^:]+): from <(?P<from>[^>]*)> remote <(?P<remote>[^>]*)>"
    r" rcpt <(?P<rcpt>[^>]*)> : ?(?P<text>.*)$")
# simscan.c log_message(): a SpamAssassin scan's "(HITS/REQUIRED/SIMSCAN_REQUIRED)" (the
# third, simscan's own reject level, since 1.4.0's successors: per-domain spam_hits, else
# SpamAssassin's), "(HITS/REQUIRED)" in 1.4.0, a DSPAM scan's "(PROBABILITY/CONFIDENCE)"
_SIMSCAN_RE = re.compile(
    r"\[(?P<pid>\d+)\]:(?P<verdict>[A-Z][A-Z _-]*?)"
    r"(?: \((?P<score>[-\d.]+)/(?P<thr>[-\d.]+)(?:/(?P<req>[-\d.]+))?\))?"
    r":(?P<secs>[\d.]+)s:(?P<rest>.*)$")
# ENABLE_DROPMSG's "VIRUS DROPPED" names the virus as "VIRUS" does
_SIMSCAN_NAMED = {"VIRUS": "virus", "VIRUS DROPPED": "virus", "ATTACH": "attachment", "REGEX": "regex"}
_SIMSCAN_INFO_RE = re.compile(r"\[(\d+)\]: ?(.*)$")
_SPAMDYKE_RE = re.compile(
    r"(?P<action>[A-Z][A-Z0-9_]*) from: (?P<from>\S*) to: (?P<to>\S*) origin_ip: (?P<ip>\S*)"
    r" origin_rdns: (?P<rdns>\S*) auth: (?P<auth>\S*)(?: encryption: (?P<tls>\S*))?"
    r"(?: reason: (?P<reason>.*))?$")
# "ERROR: text", "ERROR(function()@file.c:LINE): text" (its debug builds)
_SPAMDYKE_LEVEL_RE = re.compile(r"(ERROR|WARNING|INFO|DEBUG|EXCESSIVE)(?:\(.*?\))?: ?(.+)$")
# its verbose level's "FILTER_RBL_MATCH ip: IP rbl: NAME", "FILTER_RELAYING" (spamdyke.h
# LOG_VERBOSE_FILTER_*): which filter fired, before the recipient's DENIED_* line
_SPAMDYKE_FILTER_RE = re.compile(r"(FILTER_[A-Z0-9_]+)(?: (.*))?$")
_SPAMDYKE_FILTER_KEYS = {"ip": "remote_ip", "rdns": "remote_host", "sender": "mail_from",
                         "recipient": "rcpt_to"}
_SPAMDYKE_NONE = frozenset({"(unknown)", "(none)", "(empty)", ""})
_SPAMDYKE_FIELDS = (("from", "mail_from"), ("to", "rcpt_to"), ("ip", "remote_ip"),
                    ("rdns", "remote_host"), ("auth", "auth_user"), ("tls", "tls"), ("reason", "reason"))


# vpopmail 5.x's vchkpw ("vchkpw: PHRASE [PASSWORD ]USER@DOMAIN:IP"; the password only
# with ENABLE_LOGGING 3 or 4, and only in the two "password fail" phrases): vchkpw.c
_VCHKPW_OLD_PHRASES = (
    "system password fail", "password fail", "login success", "vpopmail user not found",
    "system user shadow entry not found", "system user not found", "null user name given",
    "null password given", "pop access denied", "user has no password",
    "dir auto create failed", "invalid user/domain characters", "setgid", "setuid",
    "autocreate dir errno", "chdir failed errno", "putenv(USER)", "putenv(HOME)",
    "putenv(SHELL)", "putenv(VPOPUSER)")


_IP_CHARS_RE = re.compile(r"[0-9A-Fa-f.:]+")
# ipaddress.IPv4Address's: four decimal octets, no leading zeros
_IPV4_RE = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                      r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
# the longest address: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" (then perhaps "%ZONE")
_ADDR_MAX = 45


def _address_colons(text: str) -> list[int]:
    """The ``:`` of ``text``, left to right, after which an address may run to its end: an
    address has at most 45 characters before its ``%ZONE``, so only the colons among the
    last 46, or the 46 before the last ``%``, may (trying every colon of a HELO or subject
    full of them cost a parse of the rest each: quadratic)."""
    n = len(text)
    lo = n - _ADDR_MAX - 1
    out: list[int] = []
    pct = text.rfind("%")
    if pct >= 0 and pct - _ADDR_MAX - 1 < lo:
        if pct >= lo:
            lo = pct - _ADDR_MAX - 1
        else:
            j = text.find(":", max(0, pct - _ADDR_MAX - 1), pct)
            while j >= 0:
                out.append(j)
                j = text.find(":", j + 1, pct)
    j = text.find(":", max(0, lo))
    while j >= 0:
        out.append(j)
        j = text.find(":", j + 1)
    return out


def _is_address(text: str) -> bool:
    """Whether ipaddress.ip_address() takes ``text``, for a tenth of its cost (its
    ValueError costs more than the rest of a line): IPv4 by regex, IPv6 by inet_pton
    (the same addresses as ipaddress's parser, glibc's, tried on millions of strings)
    and ipaddress's zone rule (any text without "%")."""
    if ":" not in text:
        return _IPV4_RE.fullmatch(text) is not None
    addr, pct, zone = text.partition("%")
    if pct and (not zone or "%" in zone):
        return False
    try:
        inet_pton(AF_INET6, addr)
    except (OSError, ValueError):  # ValueError: a NUL in it
        return False
    return True


def _user_ip(who: str) -> tuple[str, str | None]:
    """vchkpw's ``USER:IP`` (vchkpw.c: ``"%s:%s"``, the login name as the client gave it,
    then TCPREMOTEIP) → (USER, IP): the IP is the longest address after a ``:``, the
    user all before it (a name may hold ``:``; an IPv6 address has them). An address
    with a dotted quad is taken whole only as ``::ffff:a.b.c.d``, the one a server
    prints for a client (``x@::1.2.3.4`` is the user ``x@:`` at 1.2.3.4, not the
    deprecated IPv4-compatible ``::1.2.3.4``). No address: no IP, USER what stands
    before the last ``:`` (``(null)``, a hidden ``x.x.x.x``)."""
    c = who.find(":")
    if c >= 0 and who.find(":", c + 1) < 0 and _IPV4_RE.fullmatch(who, c + 1) is not None:
        return who[:c], who[c + 1:]  # the usual USER@DOMAIN:IPv4, at the old cost
    for c in _address_colons(who):
        ip = who[c + 1:]
        if _is_address(ip):
            if ":" in ip and "." in ip and not ip.lower().startswith("::ffff:"):
                continue
            return who[:c], ip
    c = who.rfind(":")
    return (who, None) if c < 0 else (who[:c], None)


def _vchkpw_old(rest: str, prefix: str) -> Parsed | None:
    """``rest``: the text after ``vchkpw: `` (``prefix``: what stood before it)."""
    if rest[-1:] in _TRAILING:
        rest = rest.rstrip(_TRAILING)
    phrase = next((p for p in _VCHKPW_OLD_PHRASES if rest.startswith(p + " ")), None)
    if phrase is None:
        at = rest.lower().find("password fail")
        if at < 0:
            return None
        # spelled otherwise (a tab, capitals, two spaces): whatever follows may be the
        # password, so none of it leaves
        cut = at + len("password fail")
        return "pop_auth", {"result": "failure", "reason": rest[:cut].strip(),
                            "_redact": f"{prefix}{rest[:cut]} [REDACTED]"}
    tail = rest[len(phrase) + 1:]
    sp = -1 if phrase == _VCHKPW_BAD_NAME else tail.rfind(" ")
    who = tail[sp + 1:]
    fields: dict[str, Any] = {"result": "success" if phrase == "login success" else "failure"}
    if phrase != "login success":
        fields["reason"] = phrase
    user, ip = _user_ip(who)
    secret = phrase.endswith("password fail")
    last = who[who.rfind(":") + 1:]  # no address: is what ends it at least an address's characters?
    if secret and (":" not in who or (ip is None and last and _IP_CHARS_RE.fullmatch(last) is None)):
        # no USER:IP at the end (a line cut inside the password, say): all of it may
        # be the password
        fields["_redact"] = f"{prefix}{phrase} [REDACTED]"
        return "pop_auth", fields
    if sp >= 0 and secret:  # what is before USER@DOMAIN:IP
        fields["_redact"] = f"{prefix}{phrase} [REDACTED] {who}"
    elif sp >= 0:
        fields["reason"] = f"{phrase} {tail[:sp]}"
    if user:
        fields["auth_user"] = user
    if ip:
        fields["remote_ip"] = ip
    return "pop_auth", fields


def parse_vchkpw_prefixed(text: str) -> Parsed | None:
    """The text after ``vchkpw: ``: vpopmail 5.x's form (or, under a ``vchkpw`` syslog
    tag, the newer ``vchkpw-SERVICE: ...``)."""
    if text.startswith(("vchkpw-", "vchkpw: ")):
        return parse_vchkpw(text)
    return _vchkpw_old(text, "")


def parse_vchkpw(text: str) -> Parsed | None:
    """vchkpw text after ``vpopmail[PID]: ``: ``vchkpw-SERVICE: ...``, or vpopmail 5.x's
    ``vchkpw: ...``."""
    if text[:1] in (" ", "\t"):  # "vpopmail[1]:  vchkpw: ...": the same line
        lead = len(text) - len(text.lstrip(" \t"))
        got = parse_vchkpw(text[lead:])
        if got is not None and "_redact" in got[1]:
            got[1]["_redact"] = text[:lead] + got[1]["_redact"]
        return got
    if text.startswith("vchkpw: ") or text.startswith("vchkpw:\t"):
        return _vchkpw_old(text[8:], text[:8])
    if not text.startswith("vchkpw-"):
        return None
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    cut = text.find(" (pass: '")
    if cut >= 0 and "') " not in text[cut:]:
        # Cut inside the password (a line longer than the line cap): redact to the
        # end, and take no user or address from what is left of it.
        m = _VCHKPW_HEAD_RE.fullmatch(text[:cut])
        fields: dict[str, Any] = {} if m is None else {
            "service": m.group("service"), "result": "failure", "reason": m.group("phrase")}
        if m is not None and m.group("method"):
            fields["method"] = m.group("method")
        fields["_redact"] = text[:cut + 9] + "[REDACTED]"
        return "pop_auth", fields
    m = _VCHKPW_RE.match(text)
    if m is None:
        return None
    phrase = m.group("phrase")
    fields = {"service": m.group("service")}
    if phrase.endswith("success"):
        fields["result"] = "success"
    else:
        fields["result"] = "failure"
        fields["reason"] = phrase
    method = m.group("method")
    if method:
        fields["method"] = method
    who = m.group("who")
    if ":" not in who and m.group("pw") is None:
        # every login line ends in USER:IP; not this one (its stderr's "vchkpw is
        # only for talking with qmail-popup ...", run by hand); one with a password
        # is still parsed, to be redacted
        return None
    if text.startswith(_VCHKPW_BAD_NAME, m.start("phrase")):
        phrase = _VCHKPW_BAD_NAME
        fields["reason"] = phrase
        who = text[m.start("phrase") + len(phrase) + 1:]
    elif " " in who and m.group("pw") is None:
        # words after the phrase ("chdir failed errno 2 /home/...") belong to the
        # reason when the last word alone is USER@DOMAIN:IP (an archive's
        # "[EMAIL PROTECTED]:IP" stays whole)
        extra, last = who.rsplit(" ", 1)
        if "@" in last and "@" not in extra and "reason" in fields:
            fields["reason"] += " " + extra
            who = last
    user, ip = _user_ip(who)
    fields["auth_user"] = user
    if ip is not None:
        fields["remote_ip"] = ip
    if m.group("pw") is not None:
        start, end = m.span("pw")
        fields["_redact"] = text[:start] + "[REDACTED]" + text[end:]
    return "pop_auth", fields


def parse_checkpassword_pam(text: str) -> Parsed | None:
    """checkpassword-pam 0.95's debug line ``Password 'PW' read successfully``, written to
    stderr on every login (its ``debugging()`` ignored ``--debug``): the password
    redacted. Later releases write ``Password read successfully``; tried on every
    unprefixed line, so the first check is cheap."""
    if not text.startswith("Password '"):
        return None
    end = text.rfind("' read successfully")
    # a line cut inside the password: redact to its end
    return "checkpassword_debug", {"_redact": "Password '[REDACTED]" + (text[end:] if end >= 10 else "")}


def parse_chkuser(text: str) -> Parsed | None:
    """``CHKUSER …`` lines; tried on every unprefixed line, so the first check is cheap."""
    if not text.startswith("CHKUSER "):
        return None
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    m = _CHKUSER_RE.match(text)
    if m is None:
        return "chkuser", {"text": text[8:]}
    fields: dict[str, Any] = {"decision": m.group("decision")}
    labelled = _chkuser_labelled(m.group("from"), m.group("remote"))
    if labelled is not None:
        sender, remote = labelled
    else:
        sender = m.group("from").rsplit(":", 2)
        remote = _helo_host_ip(m.group("remote"))
    fields["mail_from"] = sender[0]
    if len(sender) > 1 and sender[1]:
        fields["auth_user"] = sender[1]
    if remote[0]:
        fields["helo"] = remote[0]
    if len(remote) > 1 and remote[1]:
        fields["remote_host"] = remote[1]
    if len(remote) > 2 and remote[2]:
        fields["remote_ip"] = remote[2]
    if m.group("rcpt"):  # empty at the sender stage
        fields["rcpt_to"] = m.group("rcpt")
    if m.group("text"):
        fields["text"] = m.group("text")
    return "chkuser", fields


def _chkuser_labelled(sender: str, remote: str) -> tuple[list[str], list[str]] | None:
    """chkuser 2.0.9's chkuser_commonlog(): ``SENDER|remoteinfo/auth:AUTH|chkuser-identify:ID``
    and ``helo:HELO|remotehostname:HOST|remotehostip:IP`` → ([SENDER, AUTH], [HELO, HOST, IP]);
    None for the older ``:``-separated form. The client writes SENDER and HELO, which come
    first, so each label is the last one in the text."""
    a = sender.rfind("|remoteinfo/auth:")
    h = remote.rfind("|remotehostname:")
    i = remote.rfind("|remotehostip:")
    if a < 0 or h < 0 or i < h or not remote.startswith("helo:"):
        return None
    auth = sender[a + 17:]
    c = auth.find("|chkuser-identify:")
    if c >= 0:
        auth = auth[:c]
    return [sender[:a], auth], [remote[5:h], remote[h + 16:i], remote[i + 14:]]


def _helo_host_ip(remote: str) -> list[str]:
    """chkuser's ``HELO:HOST:IP``. HOST has no ``:``, but an IPv6 IP has, and so may the
    HELO (``[IPv6:2001:db8::5]``, ``name:25``): the IP is the longest tail after a
    ``:`` that is an IP address, HOST the part before it, HELO the rest."""
    if remote.count(":") == 2:
        return remote.split(":")
    for k in _address_colons(remote):
        j = remote.rfind(":", 0, k)
        if j >= 0 and _is_address(remote[k + 1:]):
            return [remote[:j], remote[j + 1:k], remote[k + 1:]]
    return remote.split(":", 2)


_DOVECOT_LEVELS = {"Info": "info", "Warning": "warning", "Error": "error", "Fatal": "fatal",
                   "Panic": "panic", "Debug": "debug"}
# a key begins after no word character: tried inside a long word, findall read the rest
# of the word at each of its characters (quadratic)
_DOVECOT_KV_RE = re.compile(r"(?<!\w)(\w+)=(<[^>]*>|[^,]*)")
# what dovecot writes after the user: the client's name may hold ">" and ", " (str_sanitize
# leaves them), so the user ends at the last ">, " before one of dovecot's own elements
_DOVECOT_AFTER_USER = ("method=", "rip=", "lip=", "mpid=", "rport=", "lport=", "session=", "TLS", "secured")
_DOVECOT_FIELDS = {"user": "auth_user", "method": "method", "rip": "remote_ip", "lip": "local_ip",
                   "session": "session_id"}
_DOVECOT_INTS = {"mpid": "mail_pid", "rport": "remote_port", "lport": "local_port"}
_DOVECOT_AUTH_PROCESSES = frozenset({"auth", "auth-worker"})
_DOVECOT_ELEMENTS_RE = re.compile(r": (?=user=<|method=|rip=)")
# The auth process's lines about one request: "DB(USER,IP[,…]): …" (1.x, 2.x; 2.2 adds
# ",<SESSION>" in the parentheses, 2.3 ",sasl:MECH", ",master", then "<PID>", "<SESSION>",
# ": request [N]" after them): auth-request.c's log prefix, "?" for a user not yet known
_DOVECOT_AUTHDB_RE = re.compile(
    r"[a-z][\w-]*\(([^,()\s]*)(?:,([0-9A-Fa-f.:]*[0-9A-Fa-f]))?(?:,<([^<>(),\s]+)>)?(?:,[^()]*)?\)"
    r"(?:<\d+>)?(?:<([^<>\s]+)>)?")
_DOVECOT_SQL_DRIVERS = ("mysql(", "pgsql(", "sqlite(", "cassandra(")
# dovecot's processes, as they name themselves in its log file and on stderr
# ("imap-login: Info: …", "auth-worker(4321): Error: …", "imap(user)<pid><session>: …")
_DOVECOT_SERVICE_RE = re.compile(
    r"(?:[a-z0-9]+-login|master|auth|auth-worker|imap|pop3|lmtp|lda|submission|managesieve"
    r"|imap-urlauth(?:-worker)?|imap-hibernate|indexer(?:-worker)?|dict|anvil|config|log|stats"
    r"|doveadm|replicator|aggregator|director|quota-status|dovecot)(?:\([^()]*\))?(?:<[^<>]*>)*")
# dovecot's log_timestamp ("%b %d %H:%M:%S " by default; "%Y-%m-%d %H:%M:%S " the
# docs' example) before its lines on stderr: under daemontools, after multilog's label
_DOVECOT_STAMP_RE = re.compile(
    r"(?:[A-Z][a-z][a-z] [ 0-3]\d|\d{4}-\d\d-\d\d) \d\d:\d\d:\d\d(?:[.,]\d{1,9})? ")


def parse_dovecot(text: str) -> Parsed | None:
    """dovecot's text after ``dovecot: ``: ``pop_auth`` for a login process's login or
    failed authentication, ``dovecot`` (``service``, ``level``, ``text``) otherwise."""
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    service, sep, rest = text.partition(": ")
    if not sep and text.startswith("Dovecot v"):
        # 1.x master's start line has no process name: "Dovecot v1.2.rc3 starting up ..."
        return "dovecot", {"service": "dovecot", "text": text}
    if not sep or not service or " " in service:
        return None
    first_level = _DOVECOT_LEVELS.get(service)
    if first_level is not None:
        # 1.x master writes the level first, then the process it speaks for, if any:
        # "Fatal: auth(default): Support not compiled in ...", "Fatal: Auth process died ..."
        inner, inner_sep, inner_rest = rest.partition(": ")
        # 1.x's mail processes: "IMAP(user)", "POP3(user)"
        if inner_sep and _DOVECOT_SERVICE_RE.fullmatch(inner.lower()) is not None:
            service, rest = inner, inner_rest
        else:
            service = "dovecot"
    if service == "dovecot":
        # 1.x logging to a file or stderr puts "dovecot: " before every line (master's
        # i_set_failure_file(log_path, "dovecot: ")): under syslog or the journal,
        # "dovecot[PID]: dovecot: auth(default): ..."; the process's name follows it
        inner, _, inner_rest = rest.partition(": ")
        if inner != "dovecot" and _DOVECOT_SERVICE_RE.fullmatch(inner) is not None:
            service, rest = inner, inner_rest
    f: dict[str, Any] = {"service": service}
    paren = service.find("(")
    close = service.find(")", paren) if paren > 0 else -1
    if close > paren:  # a mail process: "imap(user)<pid><session>"
        f["service"] = service[:paren]
        user = service[paren + 1:close]
        # auth-worker(1234), lmtp(4321): a pid, not a user; dovecot 1.x's auth(default),
        # auth-worker(default): the auth process's name (its "auth default {}" block)
        if user and not user.isdigit() and f["service"] not in _DOVECOT_AUTH_PROCESSES:
            f["auth_user"] = user
            # 2.3's mail_log_prefix "%s(%u)<%{pid}><%{session}>": the mail_pid and
            # session its login line gave (mpid=, session=), so a logout finds its login
            tail = service[close + 1:]
            ids = tail[1:-1].split("><") if tail[:1] == "<" and tail[-1:] == ">" else ()
            # ASCII digits: str.isdigit() takes "²", which int() refuses
            if ids and ids[0].isdigit() and ids[0].isascii() and len(ids[0]) <= 10:
                f["mail_pid"] = int(ids[0])
            if len(ids) > 1 and ids[1]:
                f["session_id"] = ids[1]
    level, sep, body = rest.partition(": ")
    if first_level is not None:
        f["level"] = first_level
    elif sep and level in _DOVECOT_LEVELS:
        f["level"] = _DOVECOT_LEVELS[level]
        rest = body
    if service.endswith("-login"):
        # the elements begin with the first that has a value: "user=<…>", or "method=…"
        # when the client never named a user, or "rip=…"
        m = _DOVECOT_ELEMENTS_RE.search(rest)
        if m is not None:
            cut = m.start()
            msg, elements = rest[:cut], rest[cut + 2:]
            if elements.startswith("user=<"):
                end = elements.rfind(">, ")
                while end >= 6 and not elements.startswith(_DOVECOT_AFTER_USER, end + 3):
                    end = elements.rfind(">, ", 6, end)
                if end >= 6:
                    if end > 6:
                        f["auth_user"] = elements[6:end]
                    elements = elements[end + 1:]  # ", method=…": as a line without a user
            for key, value in _DOVECOT_KV_RE.findall(elements):
                if value[:1] == "<" and value[-1:] == ">":
                    value = value[1:-1]
                name = _DOVECOT_FIELDS.get(key)
                if name is not None:
                    if value and (name[-3:] != "_ip" or may_be_address(value)):
                        f[name] = value
                elif key in _DOVECOT_INTS and value.isdecimal() and len(value) <= 10:
                    f[_DOVECOT_INTS[key]] = int(value)
            # %c (client-common.c): "TLS" once handshaked (": ERROR" after it when the
            # connection ends on a TLS error), "TLS handshaking[: ERROR]" before, "secured"
            # for a trusted plaintext connection (localhost): only the first was TLS
            tls = elements.find(", TLS")
            if tls >= 0 and elements[tls + 5:tls + 17] != " handshaking":
                f["tls"] = "TLS"
            f["service"] = service[:-6]
            if "auth failed" in msg or "authentication failed" in msg.lower():
                f["result"] = "failure"
                f["reason"] = msg
                return "pop_auth", f
            if msg == "Login" or msg == "Logged in":  # "Logged in": dovecot 2.4's word
                f["result"] = "success"
                return "pop_auth", f
            f["text"] = msg
            return "dovecot", f
    elif f["service"] in _DOVECOT_AUTH_PROCESSES:
        m = _DOVECOT_AUTHDB_RE.match(rest)
        # lib-sql's "mysql(HOST): Connect failed ...": a database server, not a request
        if m is not None and not rest.startswith(_DOVECOT_SQL_DRIVERS):
            user, ip, session, after = m.groups()
            if user and user != "?":
                f["auth_user"] = user
            if ip:
                f["remote_ip"] = ip
            # the login's session id: ",<SESSION>" in the parentheses (2.2, 2.3.19), or
            # "<SESSION>" after them: the auth line says why the login with it failed
            if session or after:
                f["session_id"] = session or after
    f["text"] = rest
    return "dovecot", f


def parse_dovecot_log(text: str) -> Parsed | None:
    """dovecot's lines in its own log file or on stderr (under daemontools or runit,
    multilog stamps them): ``SERVICE: LEVEL: text``, the level always written
    (``imap-login: Info: Login: user=<…>, …``), as ``parse_dovecot``; None for other text."""
    service, sep, rest = text.partition(": ")
    if not sep or _DOVECOT_SERVICE_RE.fullmatch(service) is None:
        # dovecot's own stamp after multilog's (log_path = /dev/stderr keeps its
        # log_timestamp): "@4000… Nov 30 06:20:28 imap-login: Info: Login: …"
        m = _DOVECOT_STAMP_RE.match(text)
        if m is None:
            return None
        text = text[m.end():]
        service, sep, rest = text.partition(": ")
        if not sep or _DOVECOT_SERVICE_RE.fullmatch(service) is None:
            return None
    level, sep, _ = rest.partition(": ")
    if not sep or level not in _DOVECOT_LEVELS:
        return None
    return parse_dovecot(text)


def _subject_ip(text: str) -> tuple[str, str] | None:
    """``SUBJECT:IP`` → (subject, ip). Sender and recipients hold no ":", but the subject
    may, and so does an IPv6 address: the IP is the longest tail after a ":" that is an
    address (or ``(null)``, or empty)."""
    for pos in _address_colons(text):
        tail = text[pos + 1:]
        if tail in ("", "(null)") or _is_address(tail):
            return text[:pos], tail  # the first, so the longest
    if text in ("", "(null)") or _is_address(text):
        return "", text
    return None


def parse_simscan(text: str) -> Parsed | None:
    """``simscan:[PPID]:…`` whole, or the part after ``simscan:`` (prefix dispatch)."""
    if text.startswith("simscan:"):
        text = text[8:]
    elif text[:1] != "[":
        return None
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    m = _SIMSCAN_RE.match(text)
    if m is None:
        info = _SIMSCAN_INFO_RE.match(text)
        if info is None:
            return None
        return "simscan_info", {"conn_pid": int(info.group(1)), "text": info.group(2)}
    fields: dict[str, Any] = {"conn_pid": int(m.group("pid")), "verdict": m.group("verdict")}
    # a number that is none ("1.2.3", "-": a corrupt line) gives no key, not a null one
    for name, group in (("score", "score"), ("threshold", "thr"), ("reject_threshold", "req"),
                        ("scan_time", "secs")):
        if m.group(group) is not None and (num := _num(m.group(group))) is not None:
            fields[name] = num
    parts = m.group("rest").rsplit(":", 2)
    split = _subject_ip(parts[0]) if len(parts) == 3 else None
    if split is not None:
        subject, ip = split
        if subject and not (subject == "-" and fields["verdict"] == "RELAYCLIENT"):
            # (RELAYCLIENT: no scan, so no subject read; simscan writes "-")
            # simscan.c's log_message(verdict, what, ...): the second field is the
            # subject, except for a found virus, attachment or regex: its name
            fields[_SIMSCAN_NAMED.get(fields["verdict"], "subject")] = subject
        if ip and ip != "(null)":  # TCPREMOTEIP unset: local injection
            fields["remote_ip"] = ip
        fields["mail_from"] = parts[1]
        fields["rcpt_to"] = parts[2]
    else:
        fields["text"] = m.group("rest")
    return "simscan", fields


def parse_simscan_prefixed(text: str) -> Parsed | None:
    """``simscan: text`` (prefix dispatch): ``parse_simscan``'s lines, and the debug
    lines of simscan 1.4.0 and older (SIMSCAN_DEBUG), written without the ``[PPID]``
    newer releases put there (``simscan: calling clamdscan``): ``simscan_info``."""
    got = parse_simscan(text)
    if got is not None:
        return got
    t = text.removeprefix("simscan:").strip(_TRAILING)
    return ("simscan_info", {"text": t}) if t else None


# jgreylist.c (John Simpson, v8): "IP: OK known", "IP: GREY first time", "IP: DENY no
# reverse DNS", "IP: HANGUP too many RCPT commands", ...; without the colon in a form
# quoted elsewhere ("1.2.3.4 DENY no reverse DNS")
_JGREYLIST_RE = re.compile(r"(\S+?):? (OK|DENY|GREY|HANGUP) (.+)")


def parse_jgreylist(text: str) -> Parsed | None:
    """jgreylist's text after ``jgreylist[PID]: ``: ``greylist`` for its verdict on a
    client, ``greylist_info`` for its other lines (``<<<``/``>>>`` with
    JGREYLIST_LOG_SMTP, errors)."""
    t = text.strip(_TRAILING)
    if not t:
        return None
    m = _JGREYLIST_RE.fullmatch(t)
    if m is None:
        return "greylist_info", {"text": t}
    return "greylist", {"remote_ip": m.group(1), "action": m.group(2), "reason": m.group(3)}


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def parse_spamdyke(text: str) -> Parsed | None:
    """spamdyke text after ``spamdyke[PID]: ``."""
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    m = _SPAMDYKE_RE.match(text)
    if m is None:
        m = _SPAMDYKE_LEVEL_RE.match(text)
        if m is None:
            return _spamdyke_filter(text)
        level = m.group(1)
        return ("spamdyke_error" if level == "ERROR" else "spamdyke_message",
                {"level": level.lower(), "text": m.group(2)})
    action = m.group("action")
    fields: dict[str, Any] = {"action": action, "verdict": (
        "allowed" if action.startswith("ALLOWED") else "denied" if action.startswith("DENIED")
        else action.lower())}
    for group, name in _SPAMDYKE_FIELDS:
        value = m.group(group)
        if value is not None and value not in _SPAMDYKE_NONE:
            fields[name] = value
    return "spamdyke", fields


def _spamdyke_filter(text: str) -> Parsed | None:
    m = _SPAMDYKE_FILTER_RE.match(text)
    if m is None:
        return None
    fields: dict[str, Any] = {"action": m.group(1)}
    rest = m.group(2)
    if rest:
        # "key: value" pairs, each value one word (a path's "file: F(LINE)" too)
        words = rest.split(" ")
        for key, value in pairwise(words):
            name = _SPAMDYKE_FILTER_KEYS.get(key[:-1]) if key[-1:] == ":" else None
            if name is not None and value not in _SPAMDYKE_NONE and name not in fields:
                fields[name] = value
        fields["text"] = rest
    return "spamdyke_filter", fields


def parse_spamdyke_untagged(text: str) -> Parsed | None:
    """A spamdyke line with no ``spamdyke[PID]: `` (``--log-target stderr`` into multilog)."""
    if " origin_ip: " not in text:  # most lines: one substring test
        return None
    got = parse_spamdyke(text)
    return got if got is not None and got[0] == "spamdyke" else None
