"""SpamAssassin's spamd and ClamAV's clamd lines. Pure functions of one line's text.

A qmail-toaster (and many netqmail boxes with simscan or qmail-scanner) runs both
beside qmail, into multilog directories or syslog.

* spamd (SpamAssassin 3.x/4.x, ``spamd/spamd.raw``; prefork lines from
  ``Mail::SpamAssassin::SpamdForkScaling``). Under syslog the tag is ``spamd[PID]``
  and the text ``spamd: …``, ``prefork: …`` (a component and its message). With
  ``--syslog=stderr`` (``-s stderr``, a toaster's ``run`` piping into multilog)
  Logger::Stderr writes ``[PID] LEVEL: spamd: …``, since 3.3 after a stamp
  ``Mmm dd HH:MM:SS.mmm `` (``--log-timestamp-fmt``; empty: none). Its lines:

  - ``spamd: result: Y|. SCORE - TESTS KEY=VALUE,…`` (``"result: %s %2d - %s %s"``:
    the score truncated to an integer; TESTS comma-separated, empty when none hit;
    ``scantime``, ``size``, ``user``, ``uid``, ``required_score``, ``rhost``,
    ``raddr``, ``rport``, ``mid`` (blanks and commas made ``_``), ``rmid``, ``bayes``
    (``%06f``), ``autolearn`` (whose value carries `` autolearn_force=no``), then
    plugins' items)
  - ``spamd: identified spam (S/T) for USER:UID in T seconds, N bytes.`` and
    ``spamd: clean message (…)``: the summary, the score to one decimal
  - ``spamd: connection from HOST [IP]:PORT to port N, fd N``, ``spamd: checking
    message MID[ aka RMID] for USER:UID`` (``processing`` for PROCESS), ``prefork:
    child states: II``, ``spamd: server started on …``, warnings, …

* clamd (ClamAV, ``clamd/scanner.c`` and ``common/output.c``'s logg()). Its
  LogFile and its stdout under ``Foreground yes`` (what multilog gets) carry no
  program name; with ``LogTime yes`` each line starts ``Www Mmm dd HH:MM:SS YYYY ->``;
  LogSyslog gives ``clamd[PID]: TEXT``. Errors and warnings start ``ERROR: `` and
  ``WARNING: ``. Its verdicts: ``PATH: NAME FOUND``, with ExtendedDetectionInfo
  ``PATH: NAME(MD5:SIZE) FOUND``; ``PATH: OK`` (LogClean), ``PATH: TEXT ERROR``. PATH
  is a file name, ``instream(IP@PORT)`` / ``instream(local)`` for INSTREAM, ``fd[N]``
  for FILDES.
"""

from __future__ import annotations

import re
from typing import Any

Parsed = tuple[str, dict[str, Any]]

_TRAILING = " \r\t\n"

# Logger::Stderr's "[PID] LEVEL: " (Logger.pm's levels: dbg, info, warn, error), after
# its default stamp since 3.3.0 ("%b %d %H:%M" then ":%06.3f" seconds, the day's 0
# made a blank)
_SPAMD_STDERR_RE = re.compile(
    r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d\.\d{3} )?\[(\d{1,10})\] (dbg|info|warn|error): ")
_SPAMD_LEVELS = {"dbg": "debug", "info": "info", "warn": "warning", "error": "error"}
_SPAM_RESULT_RE = re.compile(r"result: ([Y.]) +(-?\d{1,20}) - (\S*) (.*)$")
_SPAM_CHECK_RE = re.compile(
    r"(identified spam|clean message) \((-?[\d.]+)/(-?[\d.]+)\) for (.*):(\d{1,20})"
    r" in ([\d.]+) seconds, (\d{1,20}) bytes\.?$")
_SPAMD_CONN_RE = re.compile(r"connection from (\S*) \[([^\]]*)\]:(\d{1,10}) to port (\d{1,10}), fd (\d+)")
_SPAMD_MSG_RE = re.compile(r"(?:checking|processing) message (\S+)(?: aka (\S+))? for (.*):(\d{1,20})$")
_COMPONENT_RE = re.compile(r"[a-z][\w-]*")
# result: KEY=VALUE items → (field, type); the names simscan's records use for the same
# values (score, threshold, scan_time: SpamAssassin's numbers there too)
_RESULT_KEYS: dict[str, tuple[str, type]] = {
    "scantime": ("scan_time", float), "size": ("size", int), "user": ("user", str),
    "uid": ("uid", int), "required_score": ("threshold", float),
    "rhost": ("remote_host", str), "raddr": ("remote_ip", str), "rport": ("remote_port", int),
    "mid": ("message_id", str), "rmid": ("resent_message_id", str), "bayes": ("bayes", float),
    "autolearn": ("autolearn", str), "autolearn_force": ("autolearn_force", str),
}


def _typed(kind: type, value: str) -> Any:
    """``value`` as ``kind``; None when it is not one (a corrupt line)."""
    if kind is str:
        return value
    try:
        got = kind(value)
    except ValueError:
        return None
    # float("nan"), float("inf") are no scores
    return got if got == got and got not in (float("inf"), float("-inf")) else None


def _unbracket(mid: str) -> str:
    """A Message-ID without its ``<>``, as every record has it."""
    return mid[1:-1] if mid[:1] == "<" and mid[-1:] == ">" and len(mid) > 2 else mid


def _spam_result(m: re.Match[str]) -> Parsed:
    # the score as "%2d" cut it, still a number with a fraction as every score field is
    fields: dict[str, Any] = {"spam": m.group(1) == "Y", "score": float(int(m.group(2))),
                              "tests": [t for t in m.group(3).split(",") if t]}
    for item in m.group(4).split(","):
        # "autolearn=no autolearn_force=no": get_autolearn_status() is one item with a blank
        for kv in item.split(" "):
            key, sep, value = kv.partition("=")
            known = _RESULT_KEYS.get(key)
            if not sep or known is None or key == "mid" and value == "(unknown)":
                continue
            if key == "mid" or key == "rmid":
                value = _unbracket(value)
            got = _typed(known[1], value)
            if got is not None and got != "" and known[0] not in fields:
                fields[known[0]] = got
    return "spam_result", fields


def parse_spamd(text: str) -> Parsed | None:
    """spamd's text after ``spamd[PID]: `` (syslog) or ``spamd: ``: ``spam_result``,
    ``spam_check`` or ``spamd``."""
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    own = text.startswith("spamd: ")  # spamd's own part ("spamd: timeout: …" too)
    if own:
        text = text[7:]
    if not text:
        return None
    if text.startswith("result: "):
        m = _SPAM_RESULT_RE.match(text)
        if m is not None:
            return _spam_result(m)
    elif text.startswith(("identified spam (", "clean message (")):
        m = _SPAM_CHECK_RE.match(text)
        if m is not None:
            fields: dict[str, Any] = {"spam": m.group(1) == "identified spam"}
            for name, kind, value in (("score", float, m.group(2)), ("threshold", float, m.group(3)),
                                      ("user", str, m.group(4)), ("uid", int, m.group(5)),
                                      ("scan_time", float, m.group(6)), ("size", int, m.group(7))):
                got = _typed(kind, value)
                if got is not None and got != "":
                    fields[name] = got
            return "spam_check", fields
    component, sep, body = text.partition(": ")
    if not own and sep and _COMPONENT_RE.fullmatch(component) is not None and component != "result":
        # another part of SpamAssassin: "prefork: child states: II", "plugin: eval failed: …"
        return "spamd", {"component": component, "text": body}
    f: dict[str, Any] = {"component": "spamd", "text": text}
    if text.startswith(("connection from ", "unauthorized connection from ")):
        m = _SPAMD_CONN_RE.search(text)
        if m is not None:
            f["remote_host"], f["remote_ip"] = m.group(1), m.group(2)
            f["remote_port"], f["local_port"] = int(m.group(3)), int(m.group(4))
    elif text.startswith(("checking message ", "processing message ")):
        m = _SPAMD_MSG_RE.match(text)
        if m is not None:
            if m.group(1) != "(unknown)":
                f["message_id"] = _unbracket(m.group(1))
            if m.group(2):
                f["resent_message_id"] = _unbracket(m.group(2))
            f["user"], f["uid"] = m.group(3), int(m.group(4))
    return "spamd", f


def parse_spamd_stderr(text: str) -> Parsed | None:
    """spamd's ``-s stderr`` lines (no program name): ``[PID] LEVEL: …``, perhaps after
    Logger::Stderr's stamp; None for other text. Tried on every unprefixed line: the
    first checks are cheap."""
    c = text[:1]
    if c != "[" and not ("A" <= c <= "Z" and text[19:21] == " ["):
        return None
    m = _SPAMD_STDERR_RE.match(text)
    if m is None:
        return None
    got = parse_spamd(text[m.end():])
    if got is None:
        return None
    event, fields = got
    fields["pid"] = int(m.group(1))
    fields["level"] = _SPAMD_LEVELS[m.group(2)]
    return event, fields


# logg()'s LogTime stamp: ctime_r()'s "Www Mmm dd HH:MM:SS YYYY" (the day blank-padded)
_CLAMD_TIME_RE = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} -> ")
_CLAMD_FOUND_RE = re.compile(r"(.*): (\S+?)(?:\(([0-9a-f]{32,64}):(\d{1,20})\))? FOUND$")
_INSTREAM_RE = re.compile(r"instream\(([\d.]+)@(\d{1,10})\)$")
# simscan unpacks each mail into SIMSCAN_WORKDIR/<unique dir>/ and has clamd scan it
_SIMSCAN_DIR_RE = re.compile(r"(.*/simscan/[^/]+)/")
_CLAMD_LEVELS = (("ERROR: ", "error"), ("WARNING: ", "warning"),
                 ("LibClamAV Error: ", "error"), ("LibClamAV Warning: ", "warning"))


def parse_clamd(text: str) -> Parsed | None:
    """clamd's text (after ``clamd[PID]: ``, ``clamd: ``, or a LogTime stamp):
    ``virus_found`` for ``PATH: NAME FOUND``, ``clamd`` otherwise."""
    if text[-1:] in _TRAILING:
        text = text.rstrip(_TRAILING)
    if text[24:28] == " -> " and _CLAMD_TIME_RE.match(text) is not None:
        text = text[28:]
    if not text:
        return None
    if text.endswith(" FOUND"):
        m = _CLAMD_FOUND_RE.match(text)
        if m is not None:
            return "virus_found", _clamd_path(m.group(1), {"virus": m.group(2)}, m)
    fields: dict[str, Any] = {}
    for prefix, level in _CLAMD_LEVELS:
        if text.startswith(prefix):
            fields["level"] = level
            text = text[len(prefix):]
            break
    else:
        # scanner.c: "PATH: OK" (LogClean), "PATH: TEXT ERROR" (a file it could not scan)
        if text.endswith(": OK"):
            _clamd_path(text[:-4], fields, None)
            fields["scan"] = "clean"
        elif text.endswith(" ERROR") and ": " in text:
            _clamd_path(text[:text.rfind(": ", 0, len(text) - 6)], fields, None)
            fields["scan"] = "error"
            fields["level"] = "error"
    fields["text"] = text
    return "clamd", fields


def _clamd_path(path: str, fields: dict[str, Any], m: re.Match[str] | None) -> dict[str, Any]:
    fields["path"] = path
    if m is not None and m.group(3):
        # the matched object's (the whole file, or a part of it), not the mail's size
        fields["file_md5"] = m.group(3)
        fields["file_size"] = int(m.group(4))
    if path.startswith("instream("):
        s = _INSTREAM_RE.match(path)
        if s is not None:
            fields["remote_ip"], fields["remote_port"] = s.group(1), int(s.group(2))
    elif "/simscan/" in path:
        s = _SIMSCAN_DIR_RE.match(path)
        if s is not None:
            fields["simscan_dir"] = s.group(1)
    return fields


def parse_clamd_log(text: str) -> Parsed | None:
    """clamd's LogFile or stdout lines, with no program name: any line with its
    LogTime stamp, and a bare ``PATH: NAME FOUND``; None for other text. Tried on
    every unprefixed line: the first checks are cheap."""
    if text[24:28] == " -> " and _CLAMD_TIME_RE.match(text) is not None:
        return parse_clamd(text)
    t = text.rstrip(_TRAILING) if text[-1:] in _TRAILING else text
    if t.endswith(" FOUND") and ": " in t:
        got = parse_clamd(t)
        if got is None or got[0] != "virus_found":
            return None
        # Nothing says this bare line is clamd's (any program's "lookup: NOT FOUND" ends
        # so, under syslog its tag another's): only a verdict's shape, a signature name
        # with a "." or "-" (Worm.Klez.H, Eicar-Test-Signature, Win.Test.EICAR_HDB-1) and
        # a path with no ": " (not "NAME[PID]: text" of another program)
        virus, path = got[1]["virus"], got[1]["path"]
        if ("." in virus or "-" in virus) and ": " not in path:
            return got
    return None
