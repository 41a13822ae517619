"""Records → syslog messages: RFC 5424 (default) and RFC 3164 (old receivers). Pure.

RFC 5424 layout, one message per record::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID name="value" ...] MSG

- PRI = facility * 8 + severity (``shipper.severity``); facility ``mail`` (2) by default.
- TIMESTAMP is the log line's own time (``time_unix_ns``), not the time of shipping, in UTC
  with microseconds: RFC 5424 allows at most 6 fraction digits (TIME-SECFRAC = 1*6DIGIT),
  so the full nanoseconds travel in the structured data as ``time_unix_ns``.
- HOSTNAME (<= 255), APP-NAME = program (<= 48), PROCID = pid (<= 128), MSGID = event
  (<= 32): printable US-ASCII only; other characters become ``_``, longer values are cut,
  unknown or empty values are the NILVALUE ``-``.
- One SD-ELEMENT (SD-ID ``qmail@32473`` by default: 32473 is the documentation PEN of
  RFC 5612) holding every record key except the header and text keys; lists are joined by
  ``,``; PARAM-NAMEs are sanitised to <= 32 printable ASCII without ``= ]"`` and space;
  PARAM-VALUEs are UTF-8 with ``"``, ``\\`` and ``]`` escaped as RFC 5424 section 6.3.3 says.
- MSG is the original text (``message`` by default, or ``raw``), without a BOM unless
  ``bom=True``: rsyslog's RFC 5424 parser keeps a BOM as the first three bytes of ``%msg%``
  (it does not strip it), so a BOM only helps receivers that look for it.

Size limit (``max_size`` octets per message, 8192 by default: RFC 5425 requires receivers
to take 2048 and says they SHOULD take 8192): MSG is cut first (at a UTF-8 character
boundary), then SD params are dropped (event fields first, ``event_id`` never). A cut
record carries ``truncated="1"`` in its SD and is counted in ``truncated``: never dropped.

Speed: the per-second timestamp text and the sanitised header fields and param names are
cached; each message is one ``str.join`` and one encode to bytes.
"""

from __future__ import annotations

import time
from operator import itemgetter
from types import NoneType
from typing import Any

from shipper.severity import severity

NILVALUE = "-"
FACILITY_MAIL = 2
DEFAULT_SD_ID = "qmail@32473"
DEFAULT_MAX_SIZE = 8192
MIN_MAX_SIZE = 480  # RFC 5426: every IPv4 receiver must take 480 octets

# Keys that are the header or MSG (or a duplicate of the timestamp), not structured data.
_NOT_SD = frozenset({"message", "raw", "raw_base64", "time", "host", "program", "pid", "event"})
# Kept longest when params must go to fit the size limit; dropped last, in this order.
_CORE_SD = ("event_id", "time_unix_ns", "offset", "file_id", "source", "time_source", "flags")

_SD_NAME_BAD = frozenset('= ]"')
_CACHE_MAX = 4096


def _printable(text: str, limit: int) -> str:
    """PRINTUSASCII (33-126) only, at most ``limit`` characters; NILVALUE when empty."""
    if not (text.isascii() and text.isprintable() and " " not in text):
        text = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)
    text = text[:limit]
    return text or NILVALUE


def sd_name(name: str) -> str:
    """A valid SD-NAME (PARAM-NAME or SD-ID): 1-32 printable ASCII without ``= ]"``."""
    out = "".join("_" if (ord(c) < 33 or ord(c) > 126 or c in _SD_NAME_BAD) else c for c in name)
    return out[:32] or "_"


def escape_param(value: str) -> str:
    """PARAM-VALUE escaping (RFC 5424 6.3.3): ``\\``, ``"`` and ``]`` get a backslash."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if '"' in value:
        value = value.replace('"', '\\"')
    if "]" in value:
        value = value.replace("]", "\\]")
    return value


def param_text(value: Any) -> str | None:
    """The text of a record value in SD; None when it has none (null, empty list)."""
    t = type(value)
    if t is str:
        return value
    if t is int:
        return str(value)
    if value is None:
        return None
    if t is bool:
        return "true" if value else "false"
    if t is list or t is tuple:
        if not value:
            return None
        return ",".join(x if type(x) is str else str(x) for x in value)
    return str(value)


def utf8_cut(data: bytes, limit: int) -> bytes:
    """``data`` cut to at most ``limit`` bytes, never inside a UTF-8 character."""
    if len(data) <= limit:
        return data
    if limit <= 0:
        return b""
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:  # data[end] starts the dropped part
        end -= 1
    return data[:end]


class _SecondCache:
    """unix second → formatted text, bounded (log times are mostly increasing)."""

    __slots__ = ("fmt", "texts")

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.texts: dict[int, str | None] = {}

    def get(self, secs: int) -> str | None:
        text = self.texts.get(secs, "")
        if text != "":
            return text
        if len(self.texts) > _CACHE_MAX:
            self.texts.clear()
        try:
            tm = time.gmtime(secs)
        except (OverflowError, OSError, ValueError):
            tm = None
        if tm is None or not 0 <= tm.tm_year <= 9999:
            text = None
        elif self.fmt == "5424":
            text = (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"
                    f"T{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")
        else:  # RFC 3164: "Mmm dd HH:MM:SS", day padded with a space
            text = (f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} "
                    f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")
        self.texts[secs] = text
        return text


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Rfc5424Encoder:
    """Flat record dicts → RFC 5424 messages (bytes, without transport framing).

    ``facility``: 0-23 (default 2, mail). ``sd_id``: the SD-ID (``name@PEN``).
    ``hostname``: HOSTNAME for records without ``host`` (None: NILVALUE).
    ``msg_field``: ``message`` or ``raw``. ``bom``: prefix MSG with a UTF-8 BOM.
    ``max_size``: octets per message (>= 480). ``truncated`` counts records cut to fit.
    """

    def __init__(self, *, facility: int = FACILITY_MAIL, sd_id: str = DEFAULT_SD_ID,
                 hostname: str | None = None, msg_field: str = "message", bom: bool = False,
                 max_size: int = DEFAULT_MAX_SIZE) -> None:
        if not 0 <= facility <= 23:
            raise ValueError(f"syslog facility must be 0-23, got {facility}")
        if sd_name(sd_id) != sd_id:
            raise ValueError(f'SD-ID must be 1-32 printable ASCII without "= ]\\"" or space, got {sd_id!r}')
        if msg_field not in ("message", "raw"):
            raise ValueError(f'msg_field must be "message" or "raw", got {msg_field!r}')
        if max_size < MIN_MAX_SIZE:
            raise ValueError(f"max_size must be at least {MIN_MAX_SIZE} octets, got {max_size}")
        self.facility = facility
        self.sd_id = sd_id
        self.hostname = _printable(hostname, 255) if hostname else NILVALUE
        self.msg_field = msg_field
        self.bom = bom
        self.max_size = max_size
        self.truncated = 0
        self._pri = [f"<{facility * 8 + s}>1 " for s in range(8)]
        self._sd_open = "[" + sd_id
        self._msg_sep = "] \ufeff" if bom else "] "
        self._seconds = _SecondCache("5424")
        self._hosts: dict[Any, str] = {}
        self._apps: dict[Any, str] = {}
        self._msgids: dict[Any, str] = {}
        # record key → ' name="' (None for keys that are not SD params)
        self._params: dict[str, str | None] = {k: None for k in _NOT_SD}
        # (event, number of keys) → (keys, getter, {value types: (%-template, '"' count)}, names)
        self._plans: dict[tuple[Any, int], tuple[Any, ...]] = {}

    # -- header pieces (cached: a handful of distinct values per stream)

    def _cached(self, cache: dict[Any, str], value: Any, limit: int) -> str:
        text = cache.get(value)
        if text is None:
            if len(cache) > _CACHE_MAX:
                cache.clear()
            text = NILVALUE if value is None or value == "" else _printable(str(value), limit)
            cache[value] = text
        return text

    def _timestamp(self, ns: Any) -> str:
        if type(ns) is not int:
            return NILVALUE
        secs, frac = divmod(ns, 1_000_000_000)
        head = self._seconds.get(secs)
        if head is None:
            return NILVALUE
        return f"{head}.{frac // 1000:06d}Z"  # microseconds, floored: never a later second

    def _param_prefix(self, key: str) -> str:
        prefix = f' {sd_name(key)}="'
        if len(self._params) < _CACHE_MAX:
            self._params[key] = prefix
        return prefix

    def _plan(self, event: Any, rec: dict[str, Any]) -> tuple[Any, ...]:
        """(keys, getter of the SD values, {value types: sub-plan}) for records like ``rec``."""
        keys = tuple(rec)
        chosen = [k for k in keys if k not in _NOT_SD and k != "flags"]
        if not chosen:
            getter: Any = None
        elif len(chosen) == 1:
            only = chosen[0]
            getter = lambda r: (r[only],)  # noqa: E731
        else:
            getter = itemgetter(*chosen)
        plan = (keys, getter, {}, [sd_name(k).replace("%", "%%") for k in chosen])
        if len(self._plans) > _CACHE_MAX:
            self._plans.clear()
        self._plans[(event, len(rec))] = plan
        return plan

    @staticmethod
    def _sub_plan(plan: tuple[Any, ...], vals: tuple[Any, ...]) -> tuple[str, int] | bool:
        """The %-template for these value types; False when a type needs the slow path."""
        pieces = []
        for name, value in zip(plan[3], vals, strict=True):
            kind = type(value)
            if kind is NoneType:
                pieces.append("%.0s")  # consumes the null, prints nothing
            elif kind is str or kind is int:
                pieces.append(f' {name}="%s"')
            else:
                pieces = None
                break
        sub: tuple[str, int] | bool = False
        if pieces is not None:
            template = "".join(pieces)
            sub = (template, template.count('"'))
        subs = plan[2]
        if len(subs) > 64:
            subs.clear()
        subs[tuple(map(type, vals))] = sub
        return sub

    def _sd_params(self, rec: dict[str, Any]) -> str:
        """The SD-PARAMs of a record, value by value (escaping, lists, bools, ...)."""
        params = self._params
        parts = []
        for key, value in rec.items():
            prefix = params.get(key, "")
            if prefix is None or value is None:
                continue
            if prefix == "":
                prefix = self._param_prefix(key)
            text = param_text(value)
            if text is None:
                continue
            parts.append(f'{prefix}{escape_param(text)}"')
        return "".join(parts)

    # -- encoding

    def encode(self, rec: dict[str, Any]) -> bytes:
        return self.encode_batch([rec])[0]

    def encode_batch(self, records: list[dict[str, Any]]) -> list[bytes]:
        out: list[bytes] = []
        append = out.append
        pri = self._pri
        plans = self._plans
        hosts, apps, msgids = self._hosts, self._apps, self._msgids
        default_host = self.hostname
        sd_open = self._sd_open
        msg_sep = self._msg_sep
        msg_field = self.msg_field
        max_size = self.max_size
        seconds = self._seconds.get
        last_secs, last_head = None, None
        for rec in records:
            get = rec.get
            host = get("host")
            h = hosts.get(host) if host is not None else default_host
            if h is None:
                h = self._cached(hosts, host, 255)
            program = get("program")
            a = apps.get(program)
            if a is None:
                a = self._cached(apps, program, 48)
            event = get("event")
            m = msgids.get(event)
            if m is None:
                m = self._cached(msgids, event, 32)
            pid = get("pid")
            p = NILVALUE if pid is None else str(pid) if type(pid) is int else _printable(str(pid), 128)
            ns = get("time_unix_ns")
            if type(ns) is int:
                secs, frac = divmod(ns, 1_000_000_000)
                if secs != last_secs:
                    last_secs, last_head = secs, seconds(secs)
                # microseconds, floored: never a later second than the line's
                ts = NILVALUE if last_head is None else f"{last_head}.{frac // 1000:06d}Z"
            else:
                ts = NILVALUE
            # Fast path: records with the same keys in the same order (one event of one
            # parser) share a compiled %-template: ``%s`` per value, ``%.0s`` for a null.
            sd = None
            plan = plans.get((event, len(rec)))
            if plan is None or plan[0] != tuple(rec):
                plan = self._plan(event, rec)
            if plan[1] is not None and not get("flags"):
                vals = plan[1](rec)
                sub = plan[2].get(tuple(map(type, vals)))
                if sub is None:
                    sub = self._sub_plan(plan, vals)
                if sub is not False:
                    sd = sub[0] % vals
                    if sd.count('"') != sub[1] or "\\" in sd or "]" in sd:
                        sd = None  # something to escape: do it value by value
            if sd is None:
                sd = self._sd_params(rec)
            msg = get(msg_field)
            if type(msg) is not str:
                msg = "" if msg is None else str(msg)
            data = f"{pri[severity(rec)]}{ts} {h} {a} {p} {m} {sd_open}{sd}{msg_sep}{msg}".encode("utf-8", "replace")
            if len(data) > max_size:
                data = self._fit(rec)
            append(data)
        return out

    def _fit(self, rec: dict[str, Any]) -> bytes:
        """Slow path for a message over ``max_size``: cut MSG, then drop SD params."""
        self.truncated += 1
        limit = self.max_size
        pid = rec.get("pid")
        host = rec.get("host")
        head = [self._pri[severity(rec)], self._timestamp(rec.get("time_unix_ns")),
                self._cached(self._hosts, host, 255) if host is not None else self.hostname,
                self._cached(self._apps, rec.get("program"), 48),
                NILVALUE if pid is None else _printable(str(pid), 128),
                self._cached(self._msgids, rec.get("event"), 32)]
        fields: list[tuple[str, str]] = []
        core: dict[str, tuple[str, str]] = {}
        for key, value in rec.items():
            if key in _NOT_SD:
                continue
            text = param_text(value)
            if text is None:
                continue
            item = (sd_name(key), escape_param(text))
            if key in _CORE_SD and key not in core:
                core[key] = item
            else:
                fields.append(item)
        # drop order: event fields from the last one, then the core keys from least useful
        kept = [core[k] for k in _CORE_SD if k in core] + fields
        msg = rec.get(self.msg_field)
        msg_bytes = ("" if msg is None else str(msg)).encode("utf-8", "replace")
        bom = "\ufeff".encode() if self.bom else b""
        while True:
            prefix = self._prefix(head, kept)
            room = limit - len(prefix) - 1 - len(bom)  # 1: SP before MSG
            if room >= 0 or len(kept) <= 1:
                break
            kept.pop()
        if room < 0:  # only event_id left and still too big: shorten header fields, then its value
            head[2], head[3], head[4] = head[2][:64], head[3][:32], head[4][:16]
            prefix = self._prefix(head, kept)
            room = limit - len(prefix) - 1 - len(bom)
            if room < 0 and kept:
                name, value = kept[0]
                cut = utf8_cut(value.encode("utf-8", "replace"), max(0, len(value.encode("utf-8", "replace")) + room))
                text = cut.decode("utf-8", "ignore")
                while text.endswith("\\") and (len(text) - len(text.rstrip("\\"))) % 2:
                    text = text[:-1]  # never leave half an escape
                kept[0] = (name, text)
                prefix = self._prefix(head, kept)
                room = limit - len(prefix) - 1 - len(bom)
            if room < 0:
                return prefix[:limit]
        return prefix + b" " + bom + utf8_cut(msg_bytes, room)

    def _prefix(self, head: list[str], kept: list[tuple[str, str]]) -> bytes:
        sd = "".join(f' {n}="{v}"' for n, v in kept)
        text = (f"{head[0]}{head[1]} {head[2]} {head[3]} {head[4]} {head[5]} "
                f'[{self.sd_id} truncated="1"{sd}]')
        return text.encode("utf-8", "replace")


class Rfc3164Encoder:
    """Flat record dicts → BSD syslog lines ``<PRI>Mmm dd HH:MM:SS host tag[pid]: msg``.

    For receivers that predate RFC 5424. The timestamp is the line's own time in UTC
    unless ``local_time`` (RFC 3164 has no zone; receivers read it in their own zone)
    and has no year and no fraction. There is no structured data, so the event fields and
    event id do not travel, and a record cut to ``max_size`` (1024 by default, RFC 3164
    section 4.1) is only counted in ``truncated``, not flagged in band.
    """

    def __init__(self, *, facility: int = FACILITY_MAIL, hostname: str | None = None,
                 msg_field: str = "message", max_size: int = 1024, local_time: bool = False) -> None:
        if not 0 <= facility <= 23:
            raise ValueError(f"syslog facility must be 0-23, got {facility}")
        if msg_field not in ("message", "raw"):
            raise ValueError(f'msg_field must be "message" or "raw", got {msg_field!r}')
        if max_size < MIN_MAX_SIZE:
            raise ValueError(f"max_size must be at least {MIN_MAX_SIZE} octets, got {max_size}")
        self.facility = facility
        self.hostname = _printable(hostname, 255) if hostname else "-"
        self.msg_field = msg_field
        self.max_size = max_size
        self.local_time = local_time
        self.truncated = 0
        self._pri = [f"<{facility * 8 + s}>" for s in range(8)]
        self._seconds = _SecondCache("3164")
        self._hosts: dict[Any, str] = {}
        self._tags: dict[Any, str] = {}

    def _timestamp(self, ns: Any) -> str:
        secs = ns // 1_000_000_000 if type(ns) is int else int(time.time())
        if self.local_time:
            secs += time.localtime(secs).tm_gmtoff  # cached texts are UTC: shift by the zone
        return self._seconds.get(secs) or self._seconds.get(int(time.time())) or "Jan  1 00:00:00"

    def _tag(self, program: Any) -> str:
        tag = self._tags.get(program)
        if tag is None:
            if len(self._tags) > _CACHE_MAX:
                self._tags.clear()
            text = "" if program is None else str(program)
            # printable ASCII without space, ':' or '[' (they end the tag), at most 32
            tag = "".join(c if 33 <= ord(c) <= 126 and c not in ":[" else "_" for c in text)[:32] or "-"
            self._tags[program] = tag
        return tag

    def encode(self, rec: dict[str, Any]) -> bytes:
        return self.encode_batch([rec])[0]

    def encode_batch(self, records: list[dict[str, Any]]) -> list[bytes]:
        out: list[bytes] = []
        for rec in records:
            host = rec.get("host")
            h = self.hostname if host is None else self._hosts.get(host)
            if h is None:
                if len(self._hosts) > _CACHE_MAX:
                    self._hosts.clear()
                h = self._hosts[host] = _printable(str(host), 255)
            pid = rec.get("pid")
            tag = self._tag(rec.get("program"))
            if pid is not None:
                tag = f"{tag}[{_printable(str(pid), 128)}]"
            msg = rec.get(self.msg_field)
            text = (f"{self._pri[severity(rec)]}{self._timestamp(rec.get('time_unix_ns'))} {h} {tag}: "
                    f"{'' if msg is None else msg}")
            data = text.encode("utf-8", "replace")
            if len(data) > self.max_size:
                self.truncated += 1
                data = utf8_cut(data, self.max_size)
            out.append(data)
        return out
