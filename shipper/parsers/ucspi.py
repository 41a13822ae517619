"""tcpserver, sslserver (ucspi-tcp 0.88, ucspi-tcp6, ucspi-ssl), tcpsvd (ipsvd,
busybox) and rblsmtpd lines. Each parser gets the text after ``name: ``.

Address fields are split from the right because ucspi-tcp6 writes IPv6
addresses with their colons: in ``HOST:IP:PORT`` and ``HOST:IP:INFO:PORT`` the
host ends at the first ``:``, the port starts after the last one, the remote
info sits between the last two, and the IP is whatever remains.
"""

from __future__ import annotations

import re
from typing import Any

from shipper.parsers.seen import keep

Parsed = tuple[str, dict[str, Any]]

# indimail's tcpserver ends it with " sql: 0|1" (whether it reads MySQL access rules)
_STATUS_RE = re.compile(r"(\d+)/(\d+)(?:/(\d+)| sql: [01])?")
_PID_RE = re.compile(r"(\d+) from (\S*)")
_OKDENY_RE = re.compile(r"(\d+) (\S*) (\S*)(?: (.+))?")
# "PID LHOST:LIP:LPORT RHOST:RIP:RINFO:RPORT" in one match, the common ok/deny
# line; the IPs are greedy, so host, info and port split as _local_fields and
# _remote_fields split them (host to the first ':', port after the last).
# [0-9], not \d: the general path takes only ASCII digits for ints.
_OKDENY_FAST_RE = re.compile(r"([0-9]+) ([^:\s]*):(\S*):([0-9]+) ([^:\s]*):(\S*):([^:\s]*):([0-9]+)")
# indimail's tcpserver (ucspi-tcp-x tcpserver.c): "LHOST[LIP]LPORT RHOST[RIP]RINFO:RPORT:maxperip=N"
_OKDENY_BRACKET_RE = re.compile(
    r"([0-9]+) ([^\s\[]*)\[([^\s\]]*)\]([0-9]*) ([^\s\[]*)\[([^\s\]]*)\](\S*?):([0-9]*):maxperip=([0-9]+)")
_END_RE = re.compile(r"(\d+) status (\d+)")
_ENDED_RE = re.compile(r"by (\d+) status (\d+)")
_ACCEPT_RE = re.compile(r"(\d+) accept(?: (.+))?")
# fehQlibs logmsg: "who: class (code) msg[: errmsg]"; code may be empty or negative.
_CODE_RE = re.compile(r"\((-?\d*)\) ?")
# "... from IP", fehQlibs logmsg's "... from: IP", sslserver's "exceeded for: IP",
# "unable to speak TLS with: IP"
_ERR_FROM_RE = re.compile(r"\b(?:from:?|for:|with:) ([0-9A-Fa-f.:]*[0-9A-Fa-f])\b")
# sslserver -v at start: "ciphers PID ...", "cert PID FILE", "dhparam PID FILE BITS", ...
_SSL_SETUP_WORDS = frozenset({"ciphers", "cert", "key", "dhparam", "cafile", "ccafile", "cadir",
                              "certchainfile", "cafile_list", "param"})  # 0.7x: "param PID FILE BITS"
# ucspi-ssl's error_warn(): each queued OpenSSL error as "sslserver: error:0200100D:lib:func:reason"
_OPENSSL_ERR_RE = re.compile(r"error:[0-9A-Fa-f]{6,8}:")
_ERR_PID_RE = re.compile(r"\bpid:? (\d+)")
_ERROR_LEVELS = frozenset({"fatal", "warning", "drop", "error", "alert", "temp", "syntax", "usage"})

_SVD_START_RE = re.compile(r"(\d+) (\S*) (\S*)(?: (.+))?")
_SVD_END_RE = re.compile(r"(\d+) (exit|signal|\?exit) (\d+)")
_SVD_CONC_RE = re.compile(r"(\d+) (\S+) (\d+)/(\d+)")
_IPV4_PORT_RE = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d+)")

# s6-networking (skalibs strerr: "PROG: info: ...", "PROG: warning: ...", "PROG: fatal: ...")
_S6_ACCESS_RE = re.compile(r"(allow|deny|reject) pid ([0-9]+) ip (\S+?)(?:: (.+))?")
# s6-tcpserverd "accept IP_PORT pid N count a/b", s6-tcpserver4d "allow IP:PORT pid N count a/b"
_S6_ACCEPT_RE = re.compile(r"(?:accept|allow) (\S+)[_:]([0-9]+) pid ([0-9]+) count ([0-9]+)/([0-9]+)")
# "reject IP_PORT count a/b" (per-IP limit reached), s6-tcpserver4d "deny IP:PORT count a/b: ERR"
_S6_REJECT_RE = re.compile(r"(?:reject|deny) (\S+)[_:]([0-9]+) count ([0-9]+)/([0-9]+)(?:: (.+))?")
_S6_END_RE = re.compile(r"end pid ([0-9]+)(?: ip (\S+))? (exitcode|signal) ([0-9]+)"
                        r"(?: count ([0-9]+)/([0-9]+))?")
_S6_LEVELS = frozenset({"info", "warning", "fatal"})

_RBL_RE = re.compile(r"(\S*) pid (\d+)(?: ([^\s:]+))?: (.*)")
_RBL_CODE_RE = re.compile(r"([45]\d\d) ?(.*)")
_RBL_TJSI_RE = re.compile(r"(\S+) blocked (\S+)(?: (\S+))?(?: (\S+))?")


_STATUS_SEEN: dict[str, dict[str, Any]] = {}  # see shipper.parsers.seen


def _int(s: str) -> int | None:
    return int(s) if s.isdecimal() else None


def _local_fields(field: str, f: dict[str, Any]) -> None:
    """``LHOST:LIP:LPORT`` → local_host, local_ip, local_port."""
    a = field.find(":")
    b = field.rfind(":")
    if a < 0:
        return
    if field[:a]:
        f["local_host"] = field[:a]
    if b > a:
        if field[a + 1:b]:
            f["local_ip"] = field[a + 1:b]
        port = _int(field[b + 1:])
        if port is not None:
            f["local_port"] = port
    elif field[a + 1:]:
        f["local_ip"] = field[a + 1:]


def _remote_fields(field: str, f: dict[str, Any]) -> None:
    """``RHOST:RIP:RINFO:RPORT`` → remote_host, remote_ip, remote_info, remote_port."""
    a = field.find(":")
    c = field.rfind(":")
    b = field.rfind(":", a + 1, c) if c > a else -1
    if a < 0 or b <= a:
        return
    if field[:a]:
        f["remote_host"] = field[:a]
    if field[a + 1:b]:
        f["remote_ip"] = field[a + 1:b]
    if field[b + 1:c]:
        f["remote_info"] = field[b + 1:c]
    port = _int(field[c + 1:])
    if port is not None:
        f["remote_port"] = port


def _wait_fields(pid: str, status: str, f: dict[str, Any]) -> None:
    wstat = int(status)
    f["conn_pid"] = int(pid)
    f["wait_status"] = wstat
    sig = wstat & 0x7F
    if sig == 0:
        f["exit_code"] = (wstat >> 8) & 0xFF
    else:
        f["signal"] = sig


def _error(level: str, rest: str) -> Parsed:
    f: dict[str, Any] = {"level": level}
    m = _CODE_RE.match(rest)
    if m is not None:
        if m.group(1) not in ("", "-"):
            f["errno"] = int(m.group(1))
        rest = rest[m.end():]
    f["text"] = rest
    if "from" in rest or "for:" in rest or "with:" in rest:
        m = _ERR_FROM_RE.search(rest)
        if m is not None and ("." in m.group(1) or ":" in m.group(1)):
            f["remote_ip"] = m.group(1)
    if "pid" in rest:
        m = _ERR_PID_RE.search(rest)
        if m is not None:
            f["conn_pid"] = int(m.group(1))
    return "tcp_error", f


def _openssl_error(word: str, text: str) -> Parsed | None:
    """ucspi-ssl's queued OpenSSL error (``word`` the text's first word), or None."""
    if word[:6] == "error:" and _OPENSSL_ERR_RE.match(word) is not None:
        return "tcp_error", {"level": "error", "text": text.rstrip()}
    return None


def _server(text: str) -> Parsed | None:
    """tcpserver and sslserver text (after ``tcpserver: `` / ``sslserver: ``)."""
    word, sp, rest = text.rstrip().partition(" ")
    if not sp or not word:
        return _openssl_error(word, text)
    # the everyday words first: their lines are a third of a mail log
    if word == "status:":
        seen = _STATUS_SEEN.get(rest)
        if seen is not None:
            return "tcp_status", seen.copy()
        m = _STATUS_RE.fullmatch(rest)
        if m is None:
            return None
        f: dict[str, Any] = {"children": int(m.group(1)), "limit": int(m.group(2))}
        if m.group(3) is not None:
            f["ip_limit"] = int(m.group(3))
        return "tcp_status", keep(_STATUS_SEEN, rest, f)
    if word == "pid":
        m = _PID_RE.fullmatch(rest)
        if m is None:
            return None
        pid = int(m.group(1))
        f = {"pid": pid, "conn_pid": pid}
        if m.group(2):
            f["remote_ip"] = m.group(2)
        return "tcp_pid", f
    if word == "ok" or word == "deny":
        m = _OKDENY_FAST_RE.fullmatch(rest)
        if m is not None:
            pid_s, lhost, lip, lport, rhost, rip, rinfo, rport = m.groups()
            pid = int(pid_s)
            f = {"pid": pid, "conn_pid": pid}
            if lhost:
                f["local_host"] = lhost
            if lip:
                f["local_ip"] = lip
            f["local_port"] = int(lport)
            if rhost:
                f["remote_host"] = rhost
            if rip:
                f["remote_ip"] = rip
            if rinfo:
                f["remote_info"] = rinfo
            f["remote_port"] = int(rport)
            return ("tcp_ok" if word == "ok" else "tcp_deny"), f
        if "[" in rest:
            return _okdeny_bracket(word, rest)
        m = _OKDENY_RE.fullmatch(rest)
        if m is None:
            return None
        pid = int(m.group(1))
        f = {"pid": pid, "conn_pid": pid}
        _local_fields(m.group(2), f)
        _remote_fields(m.group(3), f)
        if m.group(4):
            f["reason"] = m.group(4)
        return ("tcp_ok" if word == "ok" else "tcp_deny"), f
    if word == "end":
        m = _END_RE.fullmatch(rest)
        if m is None:
            pid_s, _, what = rest.partition(" ")
            if what == "status crashed" and pid_s.isdigit() and pid_s.isascii():
                return "tcp_end", {"conn_pid": int(pid_s), "text": "crashed"}  # indimail
            return None
        f = {}
        _wait_fields(m.group(1), m.group(2), f)
        return "tcp_end", f
    if word == "ended":
        m = _ENDED_RE.fullmatch(rest)
        if m is None:
            return None
        f = {}
        _wait_fields(m.group(1), m.group(2), f)
        f["parent"] = True
        return "tcp_end", f
    if word == "ssl" or word == "tls":
        m = _ACCEPT_RE.fullmatch(rest)
        if m is None:
            return None
        pid = int(m.group(1))
        f = {"pid": pid, "conn_pid": pid}
        if m.group(2):
            f["tls"] = m.group(2)
        return "tls_accept", f
    if (got := _openssl_error(word, text)) is not None:
        return got
    if word[-1] == ":" and word[:-1] in _ERROR_LEVELS:
        return _error(word[:-1], rest)
    if word == "info:":  # fehQlibs logmsg's info class ("valid client cert received from: IP")
        event, f = _error("info", rest)
        return "tcp_info", f
    if word in _SSL_SETUP_WORDS:
        pid, _, what = rest.partition(" ")
        if pid.isdigit() and pid.isascii() and len(pid) <= 19:
            return "tcp_info", {"setting": word, "text": what}
    return None


def _okdeny_bracket(word: str, rest: str) -> Parsed | None:
    """indimail's ``ok``/``deny`` line: IPs in brackets, the per-IP limit at the end."""
    m = _OKDENY_BRACKET_RE.fullmatch(rest)
    if m is None:
        return None
    pid_s, lhost, lip, lport, rhost, rip, rinfo, rport, maxperip = m.groups()
    pid = int(pid_s)
    f: dict[str, Any] = {"pid": pid, "conn_pid": pid}
    for key, value in (("local_host", lhost), ("local_ip", lip), ("remote_host", rhost),
                       ("remote_ip", rip), ("remote_info", rinfo)):
        if value:
            f[key] = value
    if lport:
        f["local_port"] = int(lport)
    if rport:
        f["remote_port"] = int(rport)
    f["ip_limit"] = int(maxperip)
    return ("tcp_ok" if word == "ok" else "tcp_deny"), f


def _tcpsvd(text: str) -> Parsed | None:
    """ipsvd / busybox tcpsvd (and sslsvd, udpsvd) text after ``tcpsvd: ``."""
    text = text.rstrip()
    if not text.startswith("info: "):
        sp = text.find(": ")
        if sp > 0 and text[:sp] in _ERROR_LEVELS:
            return _error(text[:sp], text[sp + 2:])
        # busybox writes its info lines with printf("%s: info: …") and its errors with
        # bb_error_msg/bb_perror_msg, no class: "tcpsvd: accept: Too many open files",
        # "tcpsvd: exec 'qmail-smtpd': No such file or directory", "tcpsvd: cannot look up
        # hostname for IP" (ipsvd/tcpudp.c)
        if sp > 0 or text.startswith("cannot "):
            return _error("error", text)
        return None
    body = text[6:]
    sp = body.find(" ")
    word = body[:sp] if sp > 0 else body
    rest = body[sp + 1:] if sp > 0 else ""
    if word == "status":
        m = _STATUS_RE.fullmatch(rest)
        if m is not None:
            return "tcp_status", {"children": int(m.group(1)), "limit": int(m.group(2))}
    elif word == "pid":
        m = _PID_RE.fullmatch(rest)
        if m is not None:
            pid = int(m.group(1))
            f: dict[str, Any] = {"pid": pid, "conn_pid": pid}
            if m.group(2):
                f["remote_ip"] = m.group(2)
            return "tcp_pid", f
    elif word in ("start", "exec", "deny"):
        # "start PID LHOST:LIP[:LPORT] :RHOST:RIP:RPORT[ instructions]"
        m = _SVD_START_RE.fullmatch(rest)
        if m is not None:
            pid = int(m.group(1))
            f = {"pid": pid, "conn_pid": pid}
            _svd_local(m.group(2), f)
            _svd_remote(m.group(3), f)
            if m.group(4):
                f["text"] = m.group(4)
            return ("tcp_deny" if word == "deny" else "tcp_ok"), f
    elif word == "end":
        m = _SVD_END_RE.fullmatch(rest)
        if m is not None:
            f = {"conn_pid": int(m.group(1))}
            if m.group(2) == "signal":
                f["signal"] = int(m.group(3))
            else:
                f["exit_code"] = int(m.group(3))
            return "tcp_end", f
    elif word == "concurrency":
        m = _SVD_CONC_RE.fullmatch(rest)
        if m is not None:
            pid = int(m.group(1))
            # -C n: that IP's connections with this one, and its limit (n/m with n > m:
            # the deny line that follows is the per-IP limit's, though it does not say so)
            return "tcp_info", {"pid": pid, "conn_pid": pid, "remote_ip": m.group(2),
                                "ip_children": int(m.group(3)), "ip_limit": int(m.group(4)),
                                "text": body}
    return "tcp_info", {"text": body}


def _svd_local(field: str, f: dict[str, Any]) -> None:
    a = field.find(":")
    if a < 0:
        return
    if field[:a]:
        f["local_host"] = field[:a]
    ip = field[a + 1:]
    m = _IPV4_PORT_RE.fullmatch(ip)  # old busybox writes ip:port
    if m is not None:
        ip = m.group(1)
        f["local_port"] = int(m.group(2))
    if ip:
        f["local_ip"] = ip


def _svd_remote(field: str, f: dict[str, Any]) -> None:
    # ":RHOST:RIP:RPORT" — the leading ':' stands where tcpserver puts RINFO.
    if field[:1] == ":":
        field = field[1:]
    a = field.find(":")
    c = field.rfind(":")
    if a < 0:
        return
    if field[:a]:
        f["remote_host"] = field[:a]
    if c > a:
        if field[a + 1:c]:
            f["remote_ip"] = field[a + 1:c]
        port = _int(field[c + 1:])
        if port is not None:
            f["remote_port"] = port
    elif field[a + 1:]:
        f["remote_ip"] = field[a + 1:]


def _s6_tcpserver(text: str) -> Parsed | None:
    """s6-networking's s6-tcpserverd, s6-tcpserver4d/6d and s6-tcpserver-access text
    after ``name: ``. The pid in their lines is the connection's child (it becomes
    qmail-smtpd), so it links the session like tcpserver's."""
    text = text.rstrip()
    level, sep, body = text.partition(": ")
    if not sep or level not in _S6_LEVELS:
        return None
    if level == "warning":
        return _error(level, body)
    m = _S6_ACCESS_RE.fullmatch(body)
    if m is not None:  # s6-tcpserver-access
        word, pid_s, ip, reason = m.groups()
        pid = int(pid_s)
        f: dict[str, Any] = {"pid": pid, "conn_pid": pid, "remote_ip": ip}
        if word == "allow" and reason is None:
            return "tcp_ok", f
        if word != "allow":
            if reason:  # EACCES: a deny rule matched; ENOENT: no rule matched
                f["reason"] = reason
            elif word == "reject":
                f["reason"] = "check failed"  # ident or DNS lookup failed with -w
            return "tcp_deny", f
    if level == "fatal":
        return _error(level, body)
    m = _S6_ACCEPT_RE.fullmatch(body)
    if m is not None:
        ip, port, pid_s, count, limit = m.groups()
        pid = int(pid_s)
        return "tcp_ok", {"pid": pid, "conn_pid": pid, "remote_ip": ip, "remote_port": int(port),
                          "ip_children": int(count), "ip_limit": int(limit)}
    m = _S6_REJECT_RE.fullmatch(body)
    if m is not None:
        ip, port, count, limit, reason = m.groups()
        return "tcp_deny", {"remote_ip": ip, "remote_port": int(port), "ip_children": int(count),
                            "ip_limit": int(limit), "reason": reason or "per-IP connection limit"}
    m = _S6_END_RE.fullmatch(body)
    if m is not None:
        pid_s, ip, how, num, count, limit = m.groups()
        f = {"conn_pid": int(pid_s)}
        if ip and ip != "?":
            f["remote_ip"] = ip
        f["exit_code" if how == "exitcode" else "signal"] = int(num)
        if count is not None:
            f["ip_children"] = int(count)
            f["ip_limit"] = int(limit)
        return "tcp_end", f
    if body.startswith("status: "):
        m = _STATUS_RE.fullmatch(body[8:])
        if m is not None:
            return "tcp_status", {"children": int(m.group(1)), "limit": int(m.group(2))}
    return "tcp_info", {"text": body}


def _rblsmtpd(text: str) -> Parsed | None:
    """rblsmtpd text after ``rblsmtpd: `` (0.88, ucspi-tcp6, fehcom and list-name patches)."""
    text = text.rstrip()
    if text.startswith(("fatal: ", "usage: ")):
        # rblsmtpd.c: strerr_die FATAL "out of memory" / "unable to run PROG: ERR", usage()
        return _error(text[:5], text[7:])
    m = _RBL_RE.fullmatch(text)
    if m is None:
        m = _RBL_TJSI_RE.fullmatch(text)
        if m is None:
            return None
        # tjsi.com patch: "LIST blocked IP HOST -"
        f: dict[str, Any] = {"rbl_list": m.group(1), "remote_ip": m.group(2)}
        host, info = m.group(3), m.group(4)
        if host and host != "-":
            f["remote_host"] = host
        if info and info != "-":
            f["remote_info"] = info
        return "rbl_block", f
    ip, pid_s, rbl_list, rest = m.groups()
    pid = int(pid_s)
    f = {"pid": pid, "conn_pid": pid}
    if ip:
        f["remote_ip"] = ip
    if rbl_list:
        f["rbl_list"] = rbl_list
    if rest.startswith("greetdelay: "):
        if _int(rest[12:]) is None:
            return None
        # float() of the digits, not of the int: too many of them are inf (the record's
        # delay_text then), where float(int) raised OverflowError
        f["delay"] = float(rest[12:])
        return "rbl_greetdelay", f
    if rest.startswith("[RBL info]"):
        f["text"] = rest[10:].lstrip()
        return "rbl_info", f
    if rest.startswith('RBLID="'):
        # the rblid addon (-p rblid:base) tags a listed client instead of blocking it:
        # 'rblsmtpd: 195.30.1.54 pid 5591: RBLID="SPC"'
        f["text"] = rest
        return "rbl_info", f
    m = _RBL_CODE_RE.fullmatch(rest)
    if m is None:
        return None
    f["smtp_code"] = int(m.group(1))
    f["text"] = m.group(2)
    return "rbl_block", f


# Public entry points. int() refuses text of > 4300 digits with ValueError: such
# text is not in any grammar, and a parser must never raise.

def parse_tcpserver(text: str) -> Parsed | None:
    try:
        return _server(text)
    except ValueError:
        return None


def parse_sslserver(text: str) -> Parsed | None:
    try:
        return _server(text)
    except ValueError:
        return None


def parse_tcpsvd(text: str) -> Parsed | None:
    try:
        return _tcpsvd(text)
    except ValueError:
        return None


def parse_s6_tcpserver(text: str) -> Parsed | None:
    try:
        return _s6_tcpserver(text)
    except ValueError:
        return None


def parse_rblsmtpd(text: str) -> Parsed | None:
    try:
        return _rblsmtpd(text)
    except ValueError:
        return None
