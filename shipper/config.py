"""The configuration file (TOML) → typed settings, with every error at once.

``load_config(path)`` reads the file with the standard library's ``tomllib``,
substitutes ``${VAR}`` / ``${VAR:-default}`` in string values (``$$`` is a
literal ``$``), checks every key against what it may be, and either returns a
``Config`` or raises ``ConfigError`` whose ``errors`` list holds one line per
problem, ``KEY.PATH: reason``, e.g.::

    sinks.siem.port: must be an integer 1-65535, got "abc"
    sinks.siem.prot: unknown key (did you mean "port"?)

All problems are collected before raising, so an admin fixes a file in one go.
Unknown keys are errors, not silently ignored: a misspelt ``when_ful`` would
otherwise quietly keep the default.

Secrets (HTTP passwords and tokens, the pseudonymisation key) come from a file
or an environment variable, never from the TOML itself; they are held in
``Secret`` objects whose repr never shows the value. A secret file readable by
group or others is accepted with a warning (``Config.warnings``). With
``check_files=False`` secret files, environment secrets and TLS files are not
read or checked (used to validate example files on a machine without them).

This module only reads files; it opens no socket and starts nothing.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import json
import logging
import os
import re
import socket
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipper.parse import DEFAULT_MAX_LINE, ParseOptions
from shipper.tlsconfig import TlsOptions
from shipper.when import YEAR_MAX, YEAR_MIN

log = logging.getLogger("shipper.config")

DEFAULT_STATE_DIR = "/var/lib/shipper"
# 9810: unassigned by IANA and not in Prometheus' default-port list; loopback only
# by default, because the endpoint is unauthenticated.
DEFAULT_METRICS_LISTEN = "127.0.0.1:9810"
DEMO_DIR = Path(__file__).parent / "demo"

SINK_TYPES = ("syslog", "relp", "gelf", "http", "file", "stdout")
HTTP_FORMATS = ("ndjson", "clickhouse", "elasticsearch", "loki", "splunk_hec", "otlp", "gelf")
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14,
    "clock": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}
# Fields holding mail addresses / IP addresses / client host names in docs/records.md.
# With the addresses, what names a person: user names (auth: indimail's AUTH <user>;
# user: spamd's; remote_info: an ident answer), a mailbox's path, a summary's list
DEFAULT_MAIL_FIELDS = ("mail_from", "rcpt_to", "auth_user", "recipient", "orig_to", "auth",
                       "sender", "bounce_to", "remote_info", "user", "mailbox", "accepted_rcpts")
DEFAULT_IP_FIELDS = ("remote_ip", "relay_ip", "orig_client_ip")
# helo: the name a client gave itself, its host name as a rule; rbl_query: the
# client's address reversed before a DNSBL's zone
DEFAULT_HOST_FIELDS = ("remote_host", "orig_client_host", "helo", "rbl_query")
DEFAULT_TEXT_FIELDS = ("message", "raw", "text", "text_raw", "info", "reason")
# Never droppable: without them the SIEM cannot deduplicate or order records, nor
# sinks and the correlator choose them (a sink's include_programs took none at all).
CORE_UNDROPPABLE = ("event_id", "time", "time_unix_ns", "event", "program")

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+\Z")
_ENV_RE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B|[kKMGT])?\s*\Z")
_SIZE_UNITS = {None: 1, "B": 1, "k": 1024, "K": 1024, "KB": 1000, "kB": 1000, "KiB": 1024,
               "M": 1 << 20, "MB": 1000**2, "MiB": 1 << 20, "G": 1 << 30, "GB": 1000**3,
               "GiB": 1 << 30, "T": 1 << 40, "TB": 1000**4, "TiB": 1 << 40}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` has one ``KEY.PATH: reason`` line each."""

    def __init__(self, errors: list[str], partial: Config | None = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        # what was read, defaults where a key was wrong: for a command that needs a few
        # keys only (status: state_dir and [metrics]) and can tell if its keys erred
        self.partial = partial


class Secret:
    """A secret value that never shows up in a repr, a log line or a traceback."""

    __slots__ = ("value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        self.value = value
        self.origin = origin  # "file /etc/shipper/token" or "env HEC_TOKEN": safe to print

    def __repr__(self) -> str:
        return f"Secret(<{self.origin}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value and other.origin == self.origin

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------- the settings


@dataclass(slots=True)
class LogConfig:
    format: str = "text"  # text | json
    level: str = "info"  # debug | info | warning | error


@dataclass(slots=True)
class MetricsConfig:
    enabled: bool = True
    listen: str = DEFAULT_METRICS_LISTEN

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to bind; IPv6 literals are written ``[::1]:9810``."""
        return split_host_port(self.listen)


@dataclass(slots=True)
class ParseConfig:
    max_line_bytes: int = DEFAULT_MAX_LINE
    redact: bool = True
    host: str | None = None  # host of records whose line names none (default: this host's name)
    syslog_year: int | None = None
    workers: int | str = "auto"  # parse worker processes: "auto" (one per spare core) | 0..16


@dataclass(slots=True)
class SourceConfig:
    name: str
    type: str  # multilog | file | stdin
    paths: list[str] = field(default_factory=list)  # globs; multilog: directories, file: files
    start_position: str = "end"  # end | current | all: where to start without a checkpoint
    tai_leap: bool = False  # labels are true TAI (s6-log), not daemontools'
    local_tz: bool = True  # tai64nlocal / BSD syslog stamps are local time (else UTC)
    program: str | None = None  # hint for lines that name no program
    watch: str = "auto"  # auto | inotify | poll: how changes are noticed
    poll_interval: float = 1.0  # seconds between checks when polling

    def parse_options(self, parse: ParseConfig) -> ParseOptions:
        return ParseOptions(max_line=parse.max_line_bytes, redact=parse.redact,
                            tai_leap=self.tai_leap, local_tz=self.local_tz,
                            syslog_year=parse.syslog_year, host=parse.host,
                            program=self.program)


@dataclass(slots=True)
class PseudonymiseConfig:
    enabled: bool = False
    key: Secret | None = None
    key_file: str | None = None
    key_env: str | None = None
    mail_fields: list[str] = field(default_factory=lambda: list(DEFAULT_MAIL_FIELDS))
    ip_fields: list[str] = field(default_factory=lambda: list(DEFAULT_IP_FIELDS))
    host_fields: list[str] = field(default_factory=lambda: list(DEFAULT_HOST_FIELDS))
    text_fields: list[str] = field(default_factory=lambda: list(DEFAULT_TEXT_FIELDS))
    in_text: bool = True  # also replace addresses found inside text fields
    keep_domain: bool = False  # anon:…@example.com instead of anon:…


@dataclass(slots=True)
class RateLimitConfig:
    enabled: bool = False
    rate: float = 1000.0  # records per second, per program
    burst: int = 10000


@dataclass(slots=True)
class TransformConfig:
    include_programs: list[str] = field(default_factory=list)
    exclude_programs: list[str] = field(default_factory=list)
    include_events: list[str] = field(default_factory=list)
    exclude_events: list[str] = field(default_factory=list)
    drop_fields: list[str] = field(default_factory=list)
    pseudonymise: PseudonymiseConfig = field(default_factory=PseudonymiseConfig)
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)


@dataclass(slots=True)
class TrackingConfig:
    enabled: bool = True
    emit: str = "both"  # raw | summaries | both
    max_open: int = 100_000  # open mails/sessions kept; the oldest is closed beyond it
    max_age: float = 8 * 86400.0  # seconds an open mail waits for its end (qmail retries for 7 days)
    save_interval: float = 2.0  # seconds between saves of the open mails (with the checkpoints)


@dataclass(slots=True)
class BufferConfig:
    type: str = "disk"  # disk | memory
    path: str = ""  # directory; each sink's queue lives in PATH/<sink name>
    max_bytes: int = 1 << 30
    segment_bytes: int = 16 << 20
    when_full: str = "block"  # block | drop_newest | drop_oldest
    fsync: str = "interval"  # always | interval | never
    fsync_interval_ms: int = 100


@dataclass(slots=True)
class AuthConfig:
    type: str  # basic | bearer
    user: str | None = None
    password: Secret | None = None
    password_file: str | None = None
    password_env: str | None = None
    token: Secret | None = None
    token_file: str | None = None
    token_env: str | None = None


@dataclass(slots=True)
class SinkConfig:
    name: str
    type: str  # syslog | relp | gelf | http | file | stdout
    records: str = "both"  # raw | summaries | both
    include_programs: list[str] = field(default_factory=list)
    exclude_programs: list[str] = field(default_factory=list)
    include_events: list[str] = field(default_factory=list)
    exclude_events: list[str] = field(default_factory=list)
    batch_max_records: int = 1000
    batch_max_bytes: int = 1 << 20
    # seconds a batch waits to fill; None: 1 s for requests (http, gelf over http),
    # 0 for streams, whose records cost no request each (and latency counts)
    batch_max_age: float | None = None
    dead_letter: str = ""  # NDJSON file for batches the peer refuses for good
    buffer: BufferConfig = field(default_factory=BufferConfig)
    # network sinks (syslog, relp, gelf)
    host: str | None = None
    port: int | None = None
    connect_timeout: float = 10.0
    keepalive: bool = True
    tls: TlsOptions | None = None  # set when TLS is used (protocol/transport tls, https)
    # syslog, relp
    protocol: str | None = None  # syslog: udp | tcp | tls; relp: tcp | tls
    framing: str = "octet-counted"  # octet-counted | lf (syslog over tcp/tls)
    format: str | None = None  # syslog/relp: rfc5424 | rfc3164; http: see HTTP_FORMATS
    sd_id: str = "qmail@32473"
    facility: int = SYSLOG_FACILITIES["mail"]
    max_message_bytes: int | None = None  # None: the transport's default
    msg_field: str = "message"  # MSG part: message (program text) | raw (the whole line)
    bom: bool = False  # rfc5424: UTF-8 BOM before MSG
    local_time: bool = True  # rfc3164: timestamps in local time (RFC 3164 4.1.2), else UTC
    window: int = 128  # relp: transactions in flight
    # gelf
    transport: str | None = None  # udp | tcp | tls | http
    chunk_size: int = 1420
    compression: str = "gzip"  # gzip | zlib | none
    compress_min: int = 0  # gelf udp: messages shorter than this (bytes of JSON) go uncompressed
    bulk: bool = False  # GELF over HTTP: many messages per request (Graylog's "bulk receiving")
    # http (and gelf over http)
    url: str | None = None
    table: str | None = None  # clickhouse
    index: str | None = None  # elasticsearch
    gzip: bool = True
    timeout: float = 30.0  # seconds for one request
    auth: AuthConfig | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # file
    path: str | None = None
    max_bytes: int = 100 << 20
    keep: int = 5


@dataclass(slots=True)
class Config:
    path: str
    state_dir: str = DEFAULT_STATE_DIR
    drain_timeout: float = 10.0  # seconds SIGTERM waits for queues to drain
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    parse: ParseConfig = field(default_factory=ParseConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    transforms: TransformConfig = field(default_factory=TransformConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    sinks: dict[str, SinkConfig] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- helpers


def split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` → (host, port); ValueError with a reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("must be HOST:PORT (write IPv6 addresses as [::1]:PORT)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("port must be an integer 0-65535")
    return host, int(port)


def _show(value: Any) -> str:
    """A value as the admin wrote it, for 'got …' in error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _suggest(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class _Ctx:
    """What one load collects: errors, warnings, and how to treat files and env."""

    __slots__ = ("errors", "warnings", "env", "check_files", "base_dir")

    def __init__(self, env: Mapping[str, str], check_files: bool, base_dir: Path) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.env = env
        self.check_files = check_files
        self.base_dir = base_dir

    def error(self, path: str, reason: str) -> None:
        self.errors.append(f"{path}: {reason}")


class _Table:
    """One TOML table being read: typed getters that record errors, then unknown keys."""

    __slots__ = ("ctx", "data", "path", "seen")

    def __init__(self, ctx: _Ctx, data: dict[str, Any], path: str) -> None:
        self.ctx = ctx
        self.data = data
        self.path = path
        self.seen: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def _raw(self, key: str) -> tuple[bool, Any, bool]:
        """(present, value after ${ENV} substitution, came from substitution)."""
        self.seen.add(key)
        if key not in self.data:
            return False, None, False
        value = self.data[key]
        if isinstance(value, str):
            new, substituted = _substitute(self.ctx, self.key_path(key), value)
            return True, new, substituted
        return True, value, False

    def string(self, key: str, default: str | None = None, *, required: str = "",
               choices: tuple[str, ...] | None = None, empty_ok: bool = False) -> Any:
        present, value, _ = self._raw(key)
        path = self.key_path(key)
        if not present:
            if required:
                self.ctx.error(path, required)
            return default
        if value is None:  # substitution failed; already reported
            return default
        if not isinstance(value, str):
            self.ctx.error(path, f"must be a string, got {_show(value)}")
            return default
        if choices is not None and value not in choices:
            self.ctx.error(path, f"must be one of {', '.join(choices)}, got {_show(value)}"
                                 f"{_suggest(value, choices)}")
            return default
        if not value and not empty_ok:
            self.ctx.error(path, "must not be empty")
            return default
        return value

    def integer(self, key: str, default: int | None, lo: int = 0, hi: int | None = None,
                *, required: str = "") -> Any:
        present, value, substituted = self._raw(key)
        path = self.key_path(key)
        if not present:
            if required:
                self.ctx.error(path, required)
            return default
        if value is None:
            return default
        if substituted and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (
            hi is None or value <= hi)
        if not ok:
            want = f"an integer {lo}-{hi}" if hi is not None else f"an integer >= {lo}"
            self.ctx.error(path, f"must be {want}, got {_show(value)}")
            return default
        return value

    def number(self, key: str, default: float, lo: float = 0.0) -> float:
        present, value, substituted = self._raw(key)
        path = self.key_path(key)
        if not present or value is None:
            return default
        if substituted and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or value < lo:
            self.ctx.error(path, f"must be a number >= {lo:g}, got {_show(value)}")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        present, value, substituted = self._raw(key)
        if not present or value is None:
            return default
        if substituted and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            self.ctx.error(self.key_path(key), f"must be true or false, got {_show(value)}")
            return default
        return value

    def size(self, key: str, default: int, lo: int = 0) -> int:
        """Bytes: an integer, or a string with a unit (``"64MiB"``, ``"1GB"``, ``"512k"``)."""
        present, value, _ = self._raw(key)
        path = self.key_path(key)
        if not present or value is None:
            return default
        result: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, str) and (m := _SIZE_RE.match(value)) and m.group(2) in _SIZE_UNITS:
            result = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
        if result is None:
            self.ctx.error(path, f'must be a size in bytes (an integer, or a string like "64MiB"), '
                                 f"got {_show(value)}")
            return default
        if result < lo:
            self.ctx.error(path, f"must be at least {lo} bytes, got {_show(value)}")
            return default
        return result

    def duration(self, key: str, default: float, lo: float = 0.0) -> float:
        """Seconds: a number, or a string with a unit (``"500ms"``, ``"30s"``, ``"5m"``, ``"1d"``)."""
        present, value, _ = self._raw(key)
        path = self.key_path(key)
        if not present or value is None:
            return default
        result: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
            result = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        if result is None:
            self.ctx.error(path, f'must be a duration (seconds, or a string like "500ms", "30s", '
                                 f'"5m"), got {_show(value)}')
            return default
        if result < lo:
            self.ctx.error(path, f"must be at least {lo:g} seconds, got {_show(value)}")
            return default
        return result

    def strings(self, key: str, default: list[str] | tuple[str, ...] = ()) -> list[str]:
        """A list of strings; a single string is taken as a list of one."""
        present, value, _ = self._raw(key)
        path = self.key_path(key)
        if not present:
            return list(default)
        if isinstance(value, str):
            return [value]
        if value is None:
            return list(default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.ctx.error(path, f"must be a list of strings, got {_show(value)}")
            return list(default)
        out = []
        for i, item in enumerate(value):
            new, _ = _substitute(self.ctx, f"{path}[{i}]", item)
            if new is not None:
                out.append(new)
        return out

    def table(self, key: str) -> _Table | None:
        self.seen.add(key)
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            self.ctx.error(self.key_path(key), f"must be a table, got {_show(value)}")
            return None
        return _Table(self.ctx, value, self.key_path(key))

    def finish(self, allowed_elsewhere: Mapping[str, str] | None = None) -> None:
        """Report keys nobody asked for; ``allowed_elsewhere`` maps key → where it belongs."""
        for key in self.data:
            if key in self.seen:
                continue
            if allowed_elsewhere and key in allowed_elsewhere:
                self.ctx.error(self.key_path(key), allowed_elsewhere[key])
            else:
                known = self.seen | set(allowed_elsewhere or ())
                self.ctx.error(self.key_path(key), f"unknown key{_suggest(key, known)}")


def _substitute(ctx: _Ctx, path: str, text: str) -> tuple[str | None, bool]:
    """``${VAR}``, ``${VAR:-default}``, ``$$`` → value; None after an error."""
    if "$" not in text:
        return text, False
    if "${" in _ENV_RE.sub("", text):
        ctx.error(path, f"malformed ${{...}} reference in {_show(text)} (write ${{NAME}} or "
                        f"${{NAME:-default}}; $$ for a literal $)")
        return None, True
    missing: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = ctx.env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                missing.append(name)
                return ""
            return default
        return value

    new = _ENV_RE.sub(repl, text)
    for name in missing:
        ctx.error(path, f"environment variable {name} is not set (write ${{{name}:-default}} "
                        f"for a default)")
    return (None if missing else new), True


def _read_secret(ctx: _Ctx, t: _Table, file_key: str, env_key: str, what: str,
                 required: bool) -> tuple[Secret | None, str | None, str | None]:
    """One secret from ``FILE_KEY`` (a path) or ``ENV_KEY`` (a variable name)."""
    file_path = t.string(file_key)
    env_name = t.string(env_key)
    if file_path and env_name:
        ctx.error(t.key_path(file_key), f"give {file_key} or {env_key}, not both")
        return None, file_path, env_name
    if not file_path and not env_name:
        if required:
            ctx.error(t.path, f"{what} needs {file_key} or {env_key}")
        return None, None, None
    if not ctx.check_files:
        return None, file_path, env_name
    if env_name:
        value = ctx.env.get(env_name)
        if not value:
            ctx.error(t.key_path(env_key), f"environment variable {env_name} is not set or empty")
            return None, None, env_name
        return Secret(value, f"env {env_name}"), None, env_name
    assert file_path is not None
    p = _resolve(ctx, file_path)
    st: os.stat_result | None = None
    try:
        st = os.stat(p)
        with open(p, encoding="utf-8") as f:
            value = f.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, PermissionError) and st is not None:
            reason += f" ({_unreadable_hint(p, st)})"
        ctx.error(t.key_path(file_key), f"cannot read {p}: {reason}")
        return None, file_path, None
    if not value:
        ctx.error(t.key_path(file_key), f"{p} is empty")
        return None, file_path, None
    _warn_if_exposed(ctx, t.key_path(file_key), p, st)
    return Secret(value, f"file {p}"), file_path, None


def user_name(uid: int) -> str:
    """The name of user ``uid`` (its number when it has none), for "whose is it" hints."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _unreadable_hint(path: str, st: os.stat_result) -> str:
    """Whose a file is that this user cannot read: shipper reads its files as the user it
    runs as (setpriv, systemd's User=), not as root."""
    me = user_name(os.geteuid())
    return (f"owner {user_name(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}; shipper runs as {me}: "
            f"chown {me} {path}")


def _warn_if_exposed(ctx: _Ctx, path: str, file: str, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o044:
        ctx.warnings.append(f"{path}: {file} holds a secret but is readable by group/others "
                            f"(mode {mode:04o}); chmod 600 it, owned by the user shipper runs as")


def _inside(path: str, pattern: str) -> bool:
    """``path`` is a directory ``pattern`` names (a glob: one it matches) or below one."""
    if not os.path.isabs(pattern):
        return False
    want = os.path.normpath(pattern).split(os.sep)
    have = os.path.normpath(path).split(os.sep)
    return len(have) >= len(want) and all(
        fnmatch.fnmatchcase(h, w) if glob.has_magic(w) else h == w
        for h, w in zip(have, want, strict=False))


def _url_problem(url: str) -> str | None:
    """Why ``url`` is no usable http(s) URL (None: it is): what http.client would
    only find out when the sink starts."""
    if not re.match(r"https?://[^/\s]+", url):
        return "must be an http:// or https:// URL"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on "99999", "x"
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "port 0 is not a port"
    return None


# format → (its endpoint's path, the path ends a URL of it may have): a URL
# without a path gets the endpoint (Elasticsearch answers a POST to "/" with 405)
_ENDPOINTS = {
    "elasticsearch": ("/_bulk", ("/_bulk",)),
    "loki": ("/loki/api/v1/push", ("/loki/api/v1/push", "/api/prom/push")),
    "splunk_hec": ("/services/collector/event", ("/services/collector", "/services/collector/event",
                                                 "/services/collector/event/1.0")),
    "otlp": ("/v1/logs", ("/v1/logs",)),
}


def _endpoint(ctx: _Ctx, where: str, url: str, fmt: str) -> str:
    """``url`` with ``fmt``'s endpoint path when it has none; a warning when its path
    is not one of that endpoint's (a proxy may map it: not an error)."""
    parts = urllib.parse.urlsplit(url)
    default, ends = _ENDPOINTS[fmt]
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path=default))
    if not parts.path.rstrip("/").endswith(ends):
        ctx.warnings.append(f"{where}: {_show(shown_url(url))} is no {fmt} endpoint (its path usually "
                            f"ends in {' or '.join(ends)}); a POST elsewhere is refused")
    return url


def _resolve(ctx: _Ctx, path: str) -> str:
    """Relative paths are relative to the config file's directory."""
    return str(ctx.base_dir / path) if not os.path.isabs(path) else path


def _check_file(ctx: _Ctx, t: _Table, key: str, value: str | None, *, directory: bool = False,
                secret: bool = False) -> str | None:
    if value is None:
        return None
    p = _resolve(ctx, value)
    if not ctx.check_files:
        return p
    try:
        st = os.stat(p)
    except OSError as exc:
        ctx.error(t.key_path(key), f"cannot use {p}: {exc.strerror}")
        return p
    if directory != stat.S_ISDIR(st.st_mode):
        ctx.error(t.key_path(key), f"{p} is {'not ' if directory else ''}a directory")
    elif not os.access(p, os.R_OK):
        ctx.error(t.key_path(key), f"cannot read {p}: Permission denied ({_unreadable_hint(p, st)})")
    elif secret:
        _warn_if_exposed(ctx, t.key_path(key), p, st)
    return p


# ---------------------------------------------------------------- sections


def _log(t: _Table | None) -> LogConfig:
    c = LogConfig()
    if t is None:
        return c
    c.format = t.string("format", c.format, choices=("text", "json"))
    c.level = t.string("level", c.level, choices=("debug", "info", "warning", "error"))
    t.finish()
    return c


def _metrics(t: _Table | None) -> MetricsConfig:
    c = MetricsConfig()
    if t is None:
        return c
    c.enabled = t.boolean("enabled", c.enabled)
    listen = t.string("listen", c.listen)
    try:
        split_host_port(listen)
        c.listen = listen
    except ValueError as exc:
        t.ctx.error(t.key_path("listen"), f"{exc}, got {_show(listen)}")
    t.finish()
    return c


def _parse(t: _Table | None) -> ParseConfig:
    c = ParseConfig()
    if t is not None:
        c.max_line_bytes = t.integer("max_line_bytes", c.max_line_bytes, 64, 16 << 20)
        c.redact = t.boolean("redact", c.redact)
        c.host = t.string("host", None)
        c.syslog_year = t.integer("syslog_year", None, YEAR_MIN, YEAR_MAX)
        present, value, substituted = t._raw("workers")
        if substituted and isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # "${W:-2}", as the other numbers may be
        if present and value != "auto":
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 16:
                c.workers = value
            else:
                t.ctx.error(t.key_path("workers"),
                            f'must be "auto" or an integer 0-16, got {_show(value)}')
        t.finish()
    if c.host is None:
        c.host = socket.gethostname()
    return c


_SOURCE_KEYS = {"multilog": {"paths", "start_position", "tai_leap", "local_tz", "program",
                             "watch", "poll_interval"},
                "file": {"paths", "start_position", "tai_leap", "local_tz", "program",
                         "watch", "poll_interval"},
                "stdin": {"tai_leap", "local_tz", "program"}}


def _source(t: _Table, name: str) -> SourceConfig | None:
    kind = t.string("type", None, required="required: multilog, file or stdin",
                    choices=tuple(_SOURCE_KEYS))
    if kind is None:
        t.seen.update(t.data)  # no type: the other keys cannot be judged
        return None
    c = SourceConfig(name=name, type=kind)
    keys = _SOURCE_KEYS[kind]
    if "paths" in keys:
        c.paths = t.strings("paths")
        if not c.paths:
            t.ctx.error(t.key_path("paths"), f'required for type "{kind}": a list of globs, e.g. '
                        + ('["/var/log/qmail/*"]' if kind == "multilog" else '["/var/log/mail.log"]'))
        for i, p in enumerate(c.paths):
            if not os.path.isabs(p):
                t.ctx.error(f"{t.key_path('paths')}[{i}]", f"must be an absolute path, got {_show(p)}")
        c.start_position = t.string("start_position", c.start_position,
                                    choices=("end", "current", "all"))
        c.watch = t.string("watch", c.watch, choices=("auto", "inotify", "poll"))
        c.poll_interval = t.duration("poll_interval", c.poll_interval, lo=0.01)
    c.tai_leap = t.boolean("tai_leap", c.tai_leap)
    c.local_tz = t.boolean("local_tz", c.local_tz)
    c.program = t.string("program", None)
    others = {k: f'not an option of type "{kind}"' for ks in _SOURCE_KEYS.values() for k in ks
              if k not in keys}
    t.finish(others)
    return c


def _check_names(t: _Table, c: TransformConfig | SinkConfig) -> None:
    """A warning for an event no parser makes, and for a program name close to one the
    parsers name (a typo: an include list of it drops every record, and nothing said so)."""
    from shipper.events import EVENTS, PROGRAMS, unknown_name

    for key, names, known in (("include_events", c.include_events, EVENTS),
                              ("exclude_events", c.exclude_events, EVENTS),
                              ("include_programs", c.include_programs, PROGRAMS),
                              ("exclude_programs", c.exclude_programs, PROGRAMS)):
        said = []
        for i, name in enumerate(names):
            if known is PROGRAMS and (name == "-" or name.startswith("postfix")):
                continue  # "-": no program; Postfix's are postfix/smtpd, postfix-x/smtpd, ...
            like = unknown_name(name, known)
            if like is None or (like == "" and known is PROGRAMS):
                continue
            what = "event" if known is EVENTS else "program"
            said.append(f"{t.key_path(key)}[{i}]: no parser makes the {what} {name!r}"
                        + (f"; did you mean {like!r}?" if like else ""))
        if said and len(said) == len(names) and key.startswith("include"):
            said[-1] += " (none of the list is known: it may keep no record)"
        t.ctx.warnings.extend(said)


def _transforms(t: _Table | None) -> TransformConfig:
    c = TransformConfig()
    if t is None:
        return c
    c.include_programs = t.strings("include_programs")
    c.exclude_programs = t.strings("exclude_programs")
    c.include_events = t.strings("include_events")
    c.exclude_events = t.strings("exclude_events")
    _check_names(t, c)
    c.drop_fields = t.strings("drop_fields")
    for i, f in enumerate(c.drop_fields):
        if f in CORE_UNDROPPABLE:
            t.ctx.error(f"{t.key_path('drop_fields')}[{i}]",
                        f"{f} cannot be dropped: " + ("sinks and the tracking choose records by it"
                                                        if f == "program" else
                                                        "the SIEM needs it to order and deduplicate records"))
    if (p := t.table("pseudonymise")) is not None:
        pc = c.pseudonymise
        pc.enabled = p.boolean("enabled", True)
        if pc.enabled:
            pc.key, pc.key_file, pc.key_env = _read_secret(
                p.ctx, p, "key_file", "key_env", "pseudonymisation", required=True)
            if pc.key is not None and len(pc.key.value) < 16:
                p.ctx.error(p.key_path("key_file" if pc.key_file else "key_env"),
                            "the key must be at least 16 characters (a random one: "
                            "head -c 32 /dev/urandom | base64)")
        else:
            p.seen.update(("key_file", "key_env"))
        pc.mail_fields = p.strings("mail_fields", DEFAULT_MAIL_FIELDS)
        pc.ip_fields = p.strings("ip_fields", DEFAULT_IP_FIELDS)
        pc.host_fields = p.strings("host_fields", DEFAULT_HOST_FIELDS)
        pc.text_fields = p.strings("text_fields", DEFAULT_TEXT_FIELDS)
        pc.in_text = p.boolean("in_text", pc.in_text)
        pc.keep_domain = p.boolean("keep_domain", pc.keep_domain)
        p.finish()
    if (r := t.table("rate_limit")) is not None:
        rc = c.rate_limit
        rc.enabled = r.boolean("enabled", True)
        rc.rate = r.number("rate", rc.rate, lo=0.001)
        rc.burst = r.integer("burst", rc.burst, 1) or rc.burst
        r.finish()
    t.finish()
    return c


def _udp_ignores(t: _Table, transport: str) -> None:
    """A warning for the stream keys a UDP sink has no use for (accepted, then unused)."""
    if transport == "udp":
        for key in ("keepalive", "connect_timeout"):
            if t.has(key):
                t.ctx.warnings.append(f"{t.key_path(key)}: applies to a connection (tcp, tls); "
                                      "UDP has none: ignored")


def _tracking(t: _Table | None) -> TrackingConfig:
    c = TrackingConfig()
    if t is None:
        return c
    c.enabled = t.boolean("enabled", c.enabled)
    c.emit = t.string("emit", c.emit, choices=("raw", "summaries", "both"))
    if t.has("emit") and c.emit != "both" and not c.enabled:
        t.ctx.warnings.append(f"{t.key_path('emit')}: tracking is off (enabled = false): ignored")
    c.max_open = t.integer("max_open", c.max_open, 1)
    c.max_age = t.duration("max_age", c.max_age, lo=1.0)
    c.save_interval = t.duration("save_interval", c.save_interval, lo=0.1)
    t.finish()
    return c


_BUFFER_KEYS = ("type", "path", "max_bytes", "segment_bytes", "when_full", "fsync",
                "fsync_interval_ms")


def _buffer(t: _Table | None, base: BufferConfig) -> BufferConfig:
    c = BufferConfig(base.type, base.path, base.max_bytes, base.segment_bytes, base.when_full,
                     base.fsync, base.fsync_interval_ms)
    if t is None:
        return c
    c.type = t.string("type", c.type, choices=("disk", "memory"))
    if t.has("path"):
        path = t.string("path", c.path)
        if path and not os.path.isabs(path):  # as [buffer] path: not the working directory's
            t.ctx.error(t.key_path("path"), f"must be an absolute path, got {_show(path)}")
        else:
            c.path = path
    if c.type == "memory":
        for key in ("fsync", "fsync_interval_ms", "segment_bytes"):
            if t.has(key):
                t.ctx.warnings.append(f"{t.key_path(key)}: a memory buffer has no files: ignored")
    c.max_bytes = t.size("max_bytes", c.max_bytes, lo=1 << 20)
    c.segment_bytes = t.size("segment_bytes", c.segment_bytes, lo=64 << 10)
    c.when_full = t.string("when_full", c.when_full, choices=("block", "drop_newest", "drop_oldest"))
    c.fsync = t.string("fsync", c.fsync, choices=("always", "interval", "never"))
    c.fsync_interval_ms = t.integer("fsync_interval_ms", c.fsync_interval_ms, 1, 60_000)
    if c.segment_bytes > c.max_bytes:
        if t.has("segment_bytes") and c.type == "disk":
            t.ctx.error(t.key_path("segment_bytes"),
                        f"must not exceed max_bytes ({c.max_bytes}), got {c.segment_bytes}")
        else:  # the default's (or a memory buffer's, which has none): a max_bytes under
            c.segment_bytes = c.max_bytes  # 16MiB was refused for a key not given
    t.finish()
    return c


_COMMON_SINK_KEYS = {"type", "records", "include_programs", "exclude_programs", "include_events",
                     "exclude_events", "batch_max_records", "batch_max_bytes", "batch_max_age",
                     "dead_letter", "buffer"}
_NET_KEYS = {"host", "port", "connect_timeout", "keepalive", "tls"}
_SYSLOG_KEYS = {"protocol", "format", "sd_id", "facility", "max_message_bytes", "msg_field", "bom",
                "local_time"}
_SINK_KEYS: dict[str, set[str]] = {
    "syslog": _NET_KEYS | _SYSLOG_KEYS | {"framing"},
    "relp": _NET_KEYS | _SYSLOG_KEYS | {"window"},
    "gelf": _NET_KEYS | {"transport", "chunk_size", "compression", "compress_min", "url", "timeout", "auth",
                         "headers", "bulk"},
    "http": {"url", "format", "table", "index", "gzip", "timeout", "auth", "headers", "tls",
             "connect_timeout", "keepalive", "bulk"},
    "file": {"path", "max_bytes", "keep"},
    "stdout": set(),
}
_DEFAULT_PORTS = {("syslog", "udp"): 514, ("syslog", "tcp"): 514, ("syslog", "tls"): 6514,
                  ("relp", "tcp"): 2514, ("relp", "tls"): 2514, ("gelf", "udp"): 12201,
                  ("gelf", "tcp"): 12201, ("gelf", "tls"): 12201}


def _tls(t: _Table) -> TlsOptions:
    errors_before = len(t.ctx.errors)
    c = TlsOptions()
    c.verify = t.boolean("verify", c.verify)
    c.ca_file = _check_file(t.ctx, t, "ca_file", t.string("ca_file"))
    c.ca_dir = _check_file(t.ctx, t, "ca_dir", t.string("ca_dir"), directory=True)
    c.cert_file = _check_file(t.ctx, t, "cert_file", t.string("cert_file"))
    c.key_file = _check_file(t.ctx, t, "key_file", t.string("key_file"), secret=True)
    password, _, _ = _read_secret(t.ctx, t, "key_password_file", "key_password_env",
                                  "the client key's passphrase", required=False)
    c.key_password = password.value if password is not None else None
    c.server_name = t.string("server_name")
    c.min_version = t.string("min_version", c.min_version, choices=("TLSv1.2", "TLSv1.3"))
    c.handshake_timeout = t.duration("handshake_timeout", c.handshake_timeout, lo=0.1)
    if c.key_file and not c.cert_file:
        t.ctx.error(t.key_path("key_file"), "needs cert_file too (client certificate for mTLS)")
    if not c.verify:
        t.ctx.warnings.append(f"{t.key_path('verify')}: certificate verification is off: "
                              "anyone on the path can read and change the logs")
    if t.ctx.check_files and len(t.ctx.errors) == errors_before and (c.ca_file or c.ca_dir or c.cert_file):
        # their contents too, not only that they are there: a PEM with no certificate or a
        # key not matching its certificate is a configuration error (check, run, reload)
        from shipper.tlsconfig import client_context

        try:
            client_context(c)
        except (ValueError, OSError) as exc:
            key = getattr(exc, "key", None) or ("ca_file" if c.ca_file else "ca_dir")
            t.ctx.error(t.key_path(key), str(exc))
    t.finish()
    return c


def _auth(t: _Table) -> AuthConfig | None:
    kind = t.string("type", None, required="required: basic or bearer", choices=("basic", "bearer"))
    if kind is None:
        t.seen.update(t.data)
        return None
    c = AuthConfig(type=kind)
    if kind == "basic":
        c.user = t.string("user", None, required='required for type "basic"')
        c.password, c.password_file, c.password_env = _read_secret(
            t.ctx, t, "password_file", "password_env", "basic auth", required=True)
        t.finish({k: 'not an option of type "basic"' for k in ("token_file", "token_env")})
    else:
        c.token, c.token_file, c.token_env = _read_secret(
            t.ctx, t, "token_file", "token_env", "bearer auth", required=True)
        t.finish({k: 'not an option of type "bearer"'
                  for k in ("user", "password_file", "password_env")})
    return c


def _headers(t: _Table) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in t.data:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
            t.seen.add(key)
            t.ctx.error(t.key_path(key), "not a valid HTTP header name")
            continue
        value = t.string(key, None, empty_ok=True)
        if value is not None:
            if "\n" in value or "\r" in value:
                t.ctx.error(t.key_path(key), "must not contain a line break")
            else:
                out[key] = value
    if any(k.lower() == "authorization" for k in out):
        t.ctx.warnings.append(f"{t.path}: an Authorization header in the config file is a secret "
                              "in plain text; prefer [auth] with token_file or password_file")
    t.finish()
    return out


def _sink(t: _Table, name: str, cfg: Config) -> SinkConfig | None:
    ctx = t.ctx
    kind = t.string("type", None, required=f"required: one of {', '.join(SINK_TYPES)}",
                    choices=SINK_TYPES)
    if kind is None:
        t.seen.update(t.data)
        return None
    c = SinkConfig(name=name, type=kind)
    keys = _SINK_KEYS[kind]
    c.records = t.string("records", c.records, choices=("raw", "summaries", "both"))
    if c.records == "summaries" and t.has("records") and not cfg.tracking.enabled:
        ctx.error(t.key_path("records"), '"summaries" needs tracking enabled ([tracking] enabled = true)')
    c.include_programs = t.strings("include_programs")
    c.exclude_programs = t.strings("exclude_programs")
    c.include_events = t.strings("include_events")
    c.exclude_events = t.strings("exclude_events")
    _check_names(t, c)
    c.batch_max_records = t.integer("batch_max_records", c.batch_max_records, 1, 1_000_000)
    c.batch_max_bytes = t.size("batch_max_bytes", c.batch_max_bytes, lo=1024)
    age = t.duration("batch_max_age", -1.0, lo=0.0)
    c.batch_max_age = age if age >= 0 else None
    c.dead_letter = t.string("dead_letter", os.path.join(cfg.state_dir, "dead-letter", f"{name}.ndjson"))
    if c.dead_letter:  # relative to the config file, as the file sink's path (not to / under systemd)
        c.dead_letter = _resolve(ctx, c.dead_letter)
    c.buffer = _buffer(t.table("buffer"), cfg.buffer)
    c.buffer.path = os.path.join(c.buffer.path or os.path.join(cfg.state_dir, "buffer"), name)

    if kind in ("syslog", "relp"):
        protocols = ("udp", "tcp", "tls") if kind == "syslog" else ("tcp", "tls")
        c.protocol = t.string("protocol", "tcp", choices=protocols)
        c.format = t.string("format", "rfc5424", choices=("rfc5424", "rfc3164"))
        c.sd_id = t.string("sd_id", c.sd_id)
        if not re.fullmatch(r"[!-~]{1,32}", c.sd_id) or any(ch in c.sd_id for ch in '= ]"'):
            ctx.error(t.key_path("sd_id"), f'must be 1-32 printable ASCII characters without '
                      f'"=", "]", space or quote, like "qmail@32473", got {_show(c.sd_id)}')
        elif "@" not in c.sd_id:
            ctx.error(t.key_path("sd_id"), f'must be NAME@PEN (private enterprise number), like '
                      f'"qmail@32473", got {_show(c.sd_id)}')
        c.facility = _facility(t, c.facility)
        # RELP frames carry at most 128 KiB of data (librelp's limit, ours too)
        # a UDP datagram holds at most 65,507 bytes of data (IPv4)
        most = 128 << 10 if kind == "relp" else 65507 if c.protocol == "udp" else 16 << 20
        c.max_message_bytes = t.size("max_message_bytes", 0, 480) or None  # "8k" too: a size
        if c.max_message_bytes is not None and c.max_message_bytes > most:
            ctx.error(t.key_path("max_message_bytes"), f"must be at most {most} bytes here, got "
                      f"{_show(t._raw('max_message_bytes')[1])}")
            c.max_message_bytes = None
        c.msg_field = t.string("msg_field", c.msg_field, choices=("message", "raw"))
        c.bom = t.boolean("bom", c.bom)
        if t.has("bom") and c.format != "rfc5424":
            ctx.error(t.key_path("bom"), f'applies to format "rfc5424", not {_show(c.format)}')
        c.local_time = t.boolean("local_time", c.local_time)
        if t.has("local_time") and c.format != "rfc3164":
            # an RFC 5424 timestamp carries its offset: always sent in UTC
            ctx.error(t.key_path("local_time"), f'applies to format "rfc3164", not {_show(c.format)}')
        if kind == "syslog":
            c.framing = t.string("framing", c.framing, choices=("octet-counted", "lf"))
            if t.has("framing") and c.protocol == "udp":
                ctx.error(t.key_path("framing"), 'applies to protocol "tcp" or "tls", not "udp"')
            elif c.framing == "lf" and c.protocol == "tls":
                # syslog-ng's syslog(transport(tls)) drops such a connection ("Invalid frame
                # header") after we counted the records sent
                ctx.error(t.key_path("framing"), 'must be "octet-counted" with protocol "tls" '
                          '(RFC 5425 4.3: TLS receivers read octet counts), got "lf"')
        else:
            c.window = t.integer("window", c.window, 1, 65535)
        tls_wanted = c.protocol == "tls"
        mode = c.protocol
        _udp_ignores(t, c.protocol)
    elif kind == "gelf":
        c.transport = t.string("transport", "udp", choices=("udp", "tcp", "tls", "http"))
        _udp_ignores(t, c.transport)
        c.chunk_size = t.integer("chunk_size", c.chunk_size, 512, 65467)
        c.compression = t.string("compression", "gzip" if c.transport in ("udp", "http") else "none",
                                 choices=("gzip", "zlib", "none"))
        c.compress_min = t.integer("compress_min", c.compress_min, 0, 1 << 24)
        if t.has("compress_min") and c.transport != "udp":
            ctx.error(t.key_path("compress_min"), f'applies to transport "udp", not {_show(c.transport)}')
        if c.transport in ("tcp", "tls") and t.has("compression") and c.compression != "none":
            ctx.error(t.key_path("compression"), f'GELF over {c.transport} is not compressed '
                      f'(NUL-delimited JSON); use "none", got {_show(c.compression)}')
        if c.transport == "http" and c.compression == "zlib":  # the body is gzip (Content-Encoding) or plain
            ctx.error(t.key_path("compression"), 'GELF over http is "gzip" or "none", got "zlib"')
        tls_wanted = c.transport == "tls"
        mode = c.transport
    else:
        tls_wanted = False
        mode = None

    if kind in ("syslog", "relp", "gelf") and mode != "http":
        c.host = t.string("host", None, required=f'required for type "{kind}"')
        if c.host and c.host.startswith("[") and c.host.endswith("]"):
            c.host = c.host[1:-1]  # "[::1]", as in a URL: the address inside
        if c.host is not None and (not c.host or any(ch.isspace() or ch in "/[]" for ch in c.host)):
            ctx.error(t.key_path("host"), f"must be a host name or an IP address, got {_show(c.host)}")
        c.port = t.integer("port", _DEFAULT_PORTS.get((kind, mode or "")), 1, 65535)
        c.keepalive = t.boolean("keepalive", c.keepalive)
    if kind in ("syslog", "relp", "gelf", "http"):
        c.connect_timeout = t.duration("connect_timeout", c.connect_timeout, lo=0.1)

    if kind == "http" or (kind == "gelf" and mode == "http"):
        c.url = t.string("url", None, required=f'required for type "{kind}"'
                         + (' with transport "http"' if kind == "gelf" else ""))
        if c.url is not None:
            problem = _url_problem(c.url)
            if problem:
                ctx.error(t.key_path("url"), f"{problem}, got {_show(shown_url(c.url))}")
        tls_wanted = bool(c.url and c.url.startswith("https://"))
        c.timeout = t.duration("timeout", c.timeout, lo=0.1)
        if (a := t.table("auth")) is not None:
            c.auth = _auth(a)
        if (h := t.table("headers")) is not None:
            c.headers = _headers(h)
        in_url = bool(c.url and _secret_in_url(c.url))
        if (c.auth is not None or in_url) and c.url and c.url.startswith("http://") \
                and not _is_loopback_url(c.url):
            ctx.warnings.append(f"{t.key_path('url')}: credentials sent over plain http:// to "
                                "another host; use https://")
        # Graylog's GELF HTTP input takes one message per request unless "Enable Bulk
        # Receiving" is on (off by default, absent in older versions): else it keeps one of a
        # batch, or none, and still answers 202
        c.bulk = t.boolean("bulk", c.bulk)
    if kind == "http":
        c.format = t.string("format", "ndjson", choices=HTTP_FORMATS)
        c.gzip = t.boolean("gzip", c.gzip)
        c.keepalive = t.boolean("keepalive", c.keepalive)
        c.table = t.string("table", None, required='required for format "clickhouse"'
                           if c.format == "clickhouse" else "")
        if c.table is not None and not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)?", c.table):
            ctx.error(t.key_path("table"), f"must be a ClickHouse table name (db.table), got {_show(c.table)}")
        if t.has("table") and c.format != "clickhouse":
            ctx.error(t.key_path("table"), f'applies to format "clickhouse", not {_show(c.format)}')
        c.index = t.string("index", "qmail" if c.format == "elasticsearch" else None)
        if t.has("index") and c.format != "elasticsearch":
            ctx.error(t.key_path("index"), f'applies to format "elasticsearch", not {_show(c.format)}')
        if t.has("bulk") and c.format != "gelf":
            ctx.error(t.key_path("bulk"), f'applies to format "gelf", not {_show(c.format)}')
        if c.url and not _url_problem(c.url) and c.format in _ENDPOINTS:
            c.url = _endpoint(ctx, t.key_path("url"), c.url, c.format)
    if kind == "gelf" and mode != "http":
        for key in ("url", "timeout", "auth", "headers", "bulk"):
            if t.has(key):
                t.seen.add(key)
                ctx.error(t.key_path(key), 'applies to transport "http" only')
    if kind == "gelf" and mode == "http":
        for key in ("host", "port", "keepalive"):
            if t.has(key):
                t.seen.add(key)
                ctx.error(t.key_path(key), 'not used with transport "http" (give url)')

    if "tls" in keys:
        tt = t.table("tls")
        if tt is not None and not tls_wanted:
            ctx.error(t.key_path("tls"), "TLS options given but TLS is not used "
                      + ("(url is not https://)" if kind in ("http",) or mode == "http"
                         else f'(set {"transport" if kind == "gelf" else "protocol"} = "tls")'))
            tt.seen.update(tt.data)
        elif tt is not None:
            c.tls = _tls(tt)
        elif tls_wanted:
            c.tls = TlsOptions()

    if kind == "file":
        path = t.string("path", None, required='required for type "file"')
        c.path = _resolve(ctx, path) if path else None
        c.max_bytes = t.size("max_bytes", c.max_bytes, lo=4096)
        c.keep = t.integer("keep", c.keep, 0, 1000)

    others = {k: f'not an option of type "{kind}"' for ks in _SINK_KEYS.values() for k in ks
              if k not in keys and k not in t.seen}
    t.finish(others)
    return c


def _facility(t: _Table, default: int) -> int:
    present, value, substituted = t._raw("facility")
    if not present or value is None:
        return default
    if isinstance(value, str) and value in SYSLOG_FACILITIES:
        return SYSLOG_FACILITIES[value]
    if substituted and isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 23:
        return value
    t.ctx.error(t.key_path("facility"), f"must be a facility name (mail, local0-local7, ...) or "
                f"0-23, got {_show(value)}"
                + (_suggest(value, SYSLOG_FACILITIES) if isinstance(value, str) else ""))
    return default


_SECRET_PARAM_RE = re.compile(r"pass|token|secret|key|auth|sig", re.I)


def shown_url(url: str) -> str:
    """``url`` as it may be shown (check, warnings, the log): no ``user:password@``, and
    the values of query parameters that hold secrets (ClickHouse's ``password=``, a
    ``token=``) as ``***``. What is not a URL is shown as it is."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url
    if parts.hostname is None:
        return url
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    query = "&".join(
        f"{k}=***" if _SECRET_PARAM_RE.search(k) else f"{k}={v}" if sep else k
        for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p))
    return f"{parts.scheme}://{host}{port}{parts.path}" + (f"?{query}" if query else "")


def _secret_in_url(url: str) -> bool:
    """A ``user:password@`` or a ``?password=`` (any query key ``shown_url`` hides)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return "@" in parts.netloc or any(
        _SECRET_PARAM_RE.search(p.partition("=")[0]) for p in parts.query.split("&") if p)


def _is_loopback_url(url: str) -> bool:
    host = re.sub(r"^https?://(?:[^@/]*@)?", "", url).split("/", 1)[0]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host.strip("[]") in ("localhost", "127.0.0.1", "::1")


_TOP_KEYS = ("state_dir", "drain_timeout", "log", "metrics", "parse", "sources", "transforms",
             "tracking", "buffer", "sinks")


def glob_matches(path: str, pattern: str) -> bool:
    """Whether ``glob`` would list ``path`` for ``pattern`` (``*`` does not cross ``/``)."""
    path, pattern = os.path.normpath(path), os.path.normpath(pattern)
    if path == pattern:
        return True
    if not glob.has_magic(pattern):
        return False
    p, q = path.split(os.sep), pattern.split(os.sep)
    # as glob: a hidden name only for a pattern that begins with "." too
    return len(p) == len(q) and all(fnmatch.fnmatchcase(a, b) and (a[:1] != "." or b[:1] == ".")
                                    for a, b in zip(p, q, strict=True))


def of_kind(path: str, kind: str) -> bool:
    """Whether a source of ``kind`` follows ``path`` that its glob matched: a multilog
    glob follows directories, not the files beside them ("lock", "state", a syslog
    file among the log directories); a file glob files, not directories."""
    return not (os.path.isfile(path) if kind == "multilog" else kind == "file" and os.path.isdir(path))


def named_now(pattern: str, kind: str) -> list[str]:
    """The paths a source of ``kind`` follows for ``pattern`` now: its glob's matches of
    its kind (``of_kind``), or the pattern itself."""
    if not glob.has_magic(pattern):
        return [pattern]
    return sorted(p for p in glob.glob(pattern) if of_kind(p, kind))


def _overlap(a: str, b: str, a_kind: str = "", b_kind: str = "") -> tuple[str, bool] | None:
    """(a path both patterns name, whether only what is on disk now says so), or None.
    ``a_kind``/``b_kind``: the source types (``of_kind``)."""
    if glob.has_magic(a) and glob.has_magic(b):
        if os.path.normpath(a) == os.path.normpath(b) and a_kind == b_kind:
            return a, False
        both = set(named_now(a, a_kind)) & set(named_now(b, b_kind))
        if both:
            return min(both), True
    elif glob_matches(b, a) and (not glob.has_magic(a) or of_kind(b, a_kind)):
        return os.path.normpath(b), False
    elif glob_matches(a, b) and (not glob.has_magic(b) or of_kind(a, b_kind)):
        return os.path.normpath(a), False
    # one directory reached two ways now: a symlink (Life with qmail's log/main) and its target
    both = set(_resolved(a, a_kind)) & set(_resolved(b, b_kind))
    return (min(both), True) if both else None


def _resolved(pat: str, kind: str) -> list[str]:
    """The paths ``pat`` names now (``named_now``), symlinks resolved."""
    return [os.path.realpath(p) for p in named_now(pat, kind) if os.path.exists(p)]


def _check_overlap(ctx: _Ctx, cfg: Config) -> None:
    """Two sources following one log: every line sent twice, each source with its own
    checkpoint (a probe found it shipped silently). An error when the patterns say so;
    a warning when only the disk does now (two globs matching one directory, a symlink):
    a directory made later must not turn the next restart into a start refused again
    and again, shipping nothing, for lines that would go twice with the same event ids."""
    srcs = [(n, s) for n, s in cfg.sources.items() if s.type != "stdin"]
    for j, (name, src) in enumerate(srcs):
        for i, pat in enumerate(src.paths):
            for other, osrc in srcs[:j]:
                found = next((p for p in (_overlap(o, pat, osrc.type, src.type)
                                          for o in osrc.paths) if p), None)
                if found is None:
                    continue
                both, now = found
                if now:
                    ctx.warnings.append(
                        f"sources.{name}.paths[{i}]: {pat} names {both} now, which source "
                        f'"{other}" follows too: its lines are sent twice (with the same event '
                        "ids); follow a log in one source only")
                else:
                    ctx.error(f"sources.{name}.paths[{i}]", f"{pat} names {both}, which source "
                              f'"{other}" follows too: every line would be sent twice; follow a '
                              "log in one source only")
                break


def _build(data: dict[str, Any], ctx: _Ctx, path: str) -> Config:
    top = _Table(ctx, data, "")
    cfg = Config(path=path)
    state_dir = top.string("state_dir", DEFAULT_STATE_DIR)
    if not os.path.isabs(state_dir):
        ctx.error("state_dir", f"must be an absolute path, got {_show(state_dir)}")
    cfg.state_dir = state_dir
    cfg.drain_timeout = top.duration("drain_timeout", cfg.drain_timeout)
    cfg.log = _log(top.table("log"))
    cfg.metrics = _metrics(top.table("metrics"))
    cfg.parse = _parse(top.table("parse"))
    cfg.transforms = _transforms(top.table("transforms"))
    cfg.tracking = _tracking(top.table("tracking"))
    cfg.buffer = _buffer(top.table("buffer"), BufferConfig())
    if cfg.buffer.path and not os.path.isabs(cfg.buffer.path):
        ctx.error("buffer.path", f"must be an absolute path, got {_show(cfg.buffer.path)}")

    sources = top.table("sources")
    if sources is None or not sources.data:
        ctx.error("sources", 'at least one source is required, e.g. [sources.qmail] type = '
                  '"multilog" paths = ["/var/log/qmail/*"]')
    else:
        for name, value in sources.data.items():
            sources.seen.add(name)
            if not _NAME_RE.match(name):
                ctx.error(sources.key_path(name), 'a source name may hold only letters, digits, "_" and "-"')
            elif not isinstance(value, dict):
                ctx.error(sources.key_path(name), f"must be a table ([sources.{name}]), got {_show(value)}")
            elif (src := _source(_Table(ctx, value, sources.key_path(name)), name)) is not None:
                cfg.sources[name] = src
        stdin = [n for n, s in cfg.sources.items() if s.type == "stdin"]
        if len(stdin) > 1:
            ctx.error(f"sources.{stdin[1]}.type", f'only one stdin source is possible ("{stdin[0]}" is one)')
        for name, src in cfg.sources.items():
            if src.type == "multilog" and os.path.isabs(state_dir):
                for i, pat in enumerate(src.paths):
                    if _inside(state_dir, pat):
                        ctx.error(f"sources.{name}.paths[{i}]", f"{pat} holds state_dir "
                                  f"{state_dir}: a log directory is multilog's, and the shipper "
                                  "would watch its own writes; put state_dir elsewhere")
        _check_overlap(ctx, cfg)

    sinks = top.table("sinks")
    if sinks is None or not sinks.data:
        ctx.error("sinks", 'at least one sink is required, e.g. [sinks.siem] type = "syslog" host = "..."')
    else:
        for name, value in sinks.data.items():
            sinks.seen.add(name)
            if not _NAME_RE.match(name):
                ctx.error(sinks.key_path(name), 'a sink name may hold only letters, digits, "_" and "-"')
            elif not isinstance(value, dict):
                ctx.error(sinks.key_path(name), f"must be a table ([sinks.{name}]), got {_show(value)}")
            elif (sink := _sink(_Table(ctx, value, sinks.key_path(name)), name, cfg)) is not None:
                cfg.sinks[name] = sink
        outputs = [(n, s.path) for n, s in cfg.sinks.items() if s.type == "file"]
        seen_paths: dict[str | None, str] = {}
        for n, p in outputs:
            if p in seen_paths:
                ctx.error(f"sinks.{n}.path", f'already written by sink "{seen_paths[p]}"')
            seen_paths[p] = n
    top.finish()
    cfg.warnings = ctx.warnings
    return cfg


# ---------------------------------------------------------------- entry points


def load_config_text(text: str, name: str = "<config>", *, env: Mapping[str, str] | None = None,
                     check_files: bool = True, base_dir: str | None = None) -> Config:
    """Validate a TOML document; raise ``ConfigError`` with every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{name}: invalid TOML: {exc}"]) from None
    ctx = _Ctx(os.environ if env is None else env, check_files,
               Path(base_dir) if base_dir else Path.cwd())
    cfg = _build(data, ctx, name)
    if ctx.errors:
        raise ConfigError(ctx.errors, cfg)
    return cfg  # its warnings are the caller's to say (run logs them, check prints them)


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
                check_files: bool = True) -> Config:
    """Read and validate a configuration file; raise ``ConfigError`` listing every problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: not UTF-8 text (byte {exc.start})"]) from None
    return load_config_text(text, name=str(p), env=env, check_files=check_files,
                            base_dir=str(p.resolve().parent))


DEMO_CONFIG = """\
# The demo: replays the sample multilog directory shipped in shipper/demo/
# (real qmail lines with their TAI64N labels) and prints one JSON record per
# line on stdout, plus a copy in demo.ndjson in the state directory.
# No server needed. demo_config_text() fills in the two placeholders (the
# sample directory, and a fresh state directory); run it with: shipper run --demo

state_dir = "${SHIPPER_DEMO_STATE}"
drain_timeout = "2s"

[log]
format = "text"
level = "info"

[metrics]
enabled = false  # the demo opens no port

[parse]
host = "demo-mx"

[sources.demo]
type = "multilog"
paths = ["${SHIPPER_DEMO_DIR}"]
start_position = "all"  # archived @….s files first, then current
local_tz = false

[tracking]
enabled = true
emit = "both"

[buffer]
type = "memory"  # nothing to keep across runs

[sinks.screen]
type = "stdout"
records = "both"

[sinks.copy]
type = "file"
path = "${SHIPPER_DEMO_STATE}/demo.ndjson"
max_bytes = "16MiB"
keep = 1
"""


def demo_config_text(state_dir: str | None = None) -> str:
    """DEMO_CONFIG with its placeholders filled: the bundled sample dir, and a state dir.

    Without ``state_dir`` a fresh temporary directory is made, so every demo run
    replays the sample from the start (no checkpoint from an earlier run).
    """
    if state_dir is None:
        import tempfile

        state_dir = tempfile.mkdtemp(prefix="shipper-demo-")
    text = DEMO_CONFIG
    for name, value in (("SHIPPER_DEMO_DIR", str(DEMO_DIR)), ("SHIPPER_DEMO_STATE", state_dir)):
        # JSON string escaping is valid TOML basic-string escaping; "$" doubled for ${} substitution
        quoted = json.dumps(value.replace("$", "$$"))[1:-1]
        text = text.replace("${" + name + "}", quoted)
    return text


def demo_config(state_dir: str | None = None) -> Config:
    """The demo configuration, its source pointed at the bundled sample multilog dir."""
    return load_config_text(demo_config_text(state_dir), "<demo>")
