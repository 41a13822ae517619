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
  RFC 5612) holding every record key except the header and text keys; lists of strings
  or numbers are joined by ``,``, objects (and lists of them) are JSON text; PARAM-NAMEs are sanitised to <= 32 printable ASCII without ``= ]"`` and space;
  PARAM-VALUEs are UTF-8 with ``"``, ``\\`` and ``]`` escaped as RFC 5424 section 6.3.3 says.
- MSG is the original text (``message`` by default, or ``raw``), without a BOM unless
  ``bom=True``: rsyslog's RFC 5424 parser keeps a BOM as the first three bytes of ``%msg%``
  (it does not strip it), so a BOM only helps receivers that look for it.

Size limit (``max_size`` octets per message, 8096 by default: RFC 5425 requires receivers
to take 2048 and says they SHOULD take 8192, but rsyslog's default ``maxMessageSize`` is
8096, and over TCP it parses the rest of a longer frame as a message of its own, its
header whatever the tail's text says, which an SMTP client can write): MSG is cut first (at a UTF-8 character
boundary), then SD params are dropped (event fields first, ``event_id`` never). A cut
record carries ``truncated="1"`` in its SD and is counted in ``truncated``: never dropped.
``raw_base64`` (a line that was not valid UTF-8: its exact bytes, as GELF's ``_raw_base64``)
is an SD param of a message that fits whole; a cut message leaves it out first, since
part of the bytes would not be the line.

Speed: per sequence of record keys (one event of one parser) the encoder keeps a getter and,
per sequence of value types and header values, a %-template of everything from the
timestamp's "Z" to MSG (the header fields and a file's steady SD values written in), so
most records cost one %-format and one f-string; the per-second timestamp text, the
sanitised header fields and PRI per event are cached. ``encode_texts`` leaves messages as str so a stream sink
encodes a batch at once.
"""

from __future__ import annotations

import time
from operator import itemgetter
from types import NoneType
from typing import Any

from shipper.encode import SCALARS, json_text
from shipper.record import utc_civil, utc_text
from shipper.severity import severity, severity_fields, severity_of_event

NILVALUE = "-"
FACILITY_MAIL = 2
DEFAULT_SD_ID = "qmail@32473"
DEFAULT_MAX_SIZE = 8096  # rsyslog's default maxMessageSize (imtcp, imrelp, imudp)
MIN_MAX_SIZE = 480  # RFC 5426: every IPv4 receiver must take 480 octets

# Keys that are the header or MSG (or a duplicate of the timestamp), not structured data.
_NOT_SD = frozenset({"message", "raw", "time", "host", "program", "pid", "event"})
# Kept longest when params must go to fit the size limit; dropped last, in this order.
_CORE_SD = ("event_id", "time_unix_ns", "offset", "file_id", "source", "time_source", "flags")

_SD_NAME_BAD = frozenset('= ]"')
_CACHE_MAX = 4096
_HASHABLE_HEAD = frozenset({str, int, float, bool, type(None)})


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
        if all(type(x) in SCALARS for x in value):
            return ",".join(x if type(x) is str else str(x) for x in value)
    elif t is not dict:
        return str(value)
    return json_text(value)  # objects, and lists holding them (a summary's recipients)


def _no_texts(_: Any) -> tuple[str, ...]:
    return ()


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


class _SecondCache(dict[int, str | None]):
    """unix second → formatted text (None: out of range), filled on a miss (``d[secs]``,
    also from C: ``map(d.__getitem__, ...)``), bounded (log times are mostly increasing)."""

    __slots__ = ("fmt",)

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def __missing__(self, secs: int) -> str | None:
        if len(self) > _CACHE_MAX:
            self.clear()
        # calendar arithmetic, not time.gmtime (27 s off under a "right/" TZ): see utc_text
        if self.fmt == "5424":
            head = utc_text(secs)
            text = None if head is None else head + "."  # (the fraction follows)
        else:  # RFC 3164: "Mmm dd HH:MM:SS", day padded with a space
            civil = utc_civil(secs)
            if civil is None:
                text = None
            else:
                _, mo, d, h, mi, s = civil
                text = f"{_MONTHS[mo - 1]} {d:2d} {h:02d}:{mi:02d}:{s:02d}"
        self[secs] = text
        return text


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# "000" to "999": a timestamp's microseconds as two table look-ups (a %06d format of an
# int cost twice the instructions)
_DIGITS3 = tuple(f"{i:03d}" for i in range(1000))
# How the encoder reads records with one sequence of keys: see Rfc5424Encoder._shape;
# how it writes those of one sequence of value types: see Rfc5424Encoder._template.
# Plain tuples, not NamedTuples: the batch loop unpacks them per record, and unpacking
# a tuple subclass takes the slow path (encode+frame 25,573 → 26,170 instructions).
_Shape = tuple[Any, Any, int, dict[Any, Any], list[str], list[Any]]
_Template = tuple[str | None, str, Any, Any, dict[Any, str]]
# SD values that are mostly the same from record to record (those of a file): each
# template has them written in, as the header values, rather than formatting them again
_STEADY = frozenset({"time_source", "source", "file_id"})


class Rfc5424Encoder:
    """Flat record dicts → RFC 5424 messages (bytes, without transport framing).

    ``facility``: 0-23 (default 2, mail). ``sd_id``: the SD-ID (``name@PEN``).
    ``hostname``: HOSTNAME for records without ``host`` (None: NILVALUE).
    ``msg_field``: ``message`` or ``raw``. ``bom``: prefix MSG with a UTF-8 BOM.
    ``max_size``: octets per message (>= 480). ``truncated`` counts records cut to fit.

    ``encode_texts`` gives each message as a str whose UTF-8 encoding (errors "replace")
    is the message, so a stream transport can encode a whole batch at once
    (``shipper.framing.octet_counted_texts``); ``encode_batch`` gives bytes per message.
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
        # event → (PRI text, or None when the severity depends on fields; "MSGID [SD-ID")
        self._events: dict[Any, tuple[str | None, str]] = {}
        # record key → ' name="' (None for keys that are not SD params)
        self._params: dict[str, str | None] = {k: None for k in _NOT_SD}
        # the record's keys, in order → how to read them (see _shape)
        self._shapes: dict[tuple[str, ...], Any] = {}
        self._head_keys = ("host", "program", "event", "pid", "time_unix_ns", "flags", msg_field)

    # -- header pieces (cached: a handful of distinct values per stream)

    def _cached(self, cache: dict[Any, str], value: Any, limit: int) -> str:
        if type(value) not in _HASHABLE_HEAD:  # a list or a dict where a name belongs
            return NILVALUE if not value else _printable(str(value), limit)
        text = cache.get(value)
        if text is None:
            if len(cache) > _CACHE_MAX:
                cache.clear()
            text = NILVALUE if value is None or value == "" else _printable(str(value), limit)
            cache[value] = text
        return text

    def _host(self, host: Any) -> str:
        return self.hostname if host is None else self._cached(self._hosts, host, 255)

    @staticmethod
    def _procid(pid: Any) -> str:
        return NILVALUE if pid is None else str(pid) if type(pid) is int else _printable(str(pid), 128)

    def _event(self, event: Any) -> tuple[str | None, str]:
        if type(event) not in _HASHABLE_HEAD:
            event = str(event)
        info = self._events.get(event)
        if info is None:
            sev = severity_of_event(event)
            info = (None if sev is None else self._pri[sev], f"{self._cached(self._msgids, event, 32)} {self._sd_open}")
            if len(self._events) > _CACHE_MAX:
                self._events.clear()
            self._events[event] = info
        return info

    def _timestamp(self, ns: Any) -> str:
        if type(ns) is not int:
            return NILVALUE
        secs, frac = divmod(ns, 1_000_000_000)
        head = self._seconds[secs]
        if head is None:
            return NILVALUE
        return f"{head}{frac // 1000:06d}Z"  # microseconds, floored: never a later second

    # -- structured data

    def _param_prefix(self, key: str) -> str:
        prefix = f' {sd_name(key)}="'
        if len(self._params) < _CACHE_MAX:
            self._params[key] = prefix
        return prefix

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

    def _shape(self, keys: tuple[str, ...]) -> _Shape | None:
        """How to read records with exactly these keys in this order (one event of one
        parser): (getter of host, program, event and the steady SD values (_STEADY); getter
        of pid, the other SD values and MSG; the index of ``time_unix_ns`` in what that
        gets; the templates by value types, header and steady values; the SD keys in
        order; [the last key, its template]). None: a record without the usual keys (the
        general path)."""
        shape = None
        if all(k in keys for k in self._head_keys):  # as Record.to_dict() gives them
            chosen = [k for k in keys if k not in _NOT_SD and k != "flags"]
            steady = [k for k in chosen if k in _STEADY]
            rest = [k for k in chosen if k not in _STEADY]
            shape = (itemgetter("host", "program", "event", *steady), itemgetter("pid", *rest, self.msg_field),
                     1 + rest.index("time_unix_ns"), {}, chosen, [None, None])
        if len(self._shapes) > _CACHE_MAX:
            self._shapes.clear()
        self._shapes[keys] = shape
        return shape

    def _template(self, shape: _Shape, head: tuple[Any, ...], vals: tuple[Any, ...],
                  key: tuple[Any, ...]) -> _Template | None:
        """(PRI text or None when the severity depends on fields; the %-template of
        "Z HOSTNAME APP-NAME PROCID MSGID [SD-ID params] MSG" for these values' types,
        header and steady values; getter of the str values that a %s writes, for the escaping
        check; getter of the values the severity depends on, and their PRI texts so far);
        None when a value needs the general path (a list, a bool, an object, a str
        pid, a header or steady value that is not a str, ...)."""
        host, program, event = head[:3]
        pid = vals[0]
        types = key[0]
        _, _, at_time, entries, sd_keys, _ = shape
        template = None
        # Header and steady values are in the key by value, not by type: only str and
        # None get a template, so no other value equal to one (1, 1.0, True) can hit it
        # (a str subclass can, and is written the same, but with a __str__ of its own).
        if (all(type(v) is str or v is None for v in head)
                and types[-1] is str and types[0] in (int, NoneType) and types[at_time] is int):
            pieces = []
            texts = []  # where the str values are
            steady = dict(zip([k for k in sd_keys if k in _STEADY], head[3:], strict=True))
            at = 1
            for k in sd_keys:
                name = sd_name(k)
                if k in _STEADY:  # written into the template as the general path writes it
                    text = param_text(steady[k])
                    if text is not None:
                        pieces.append(f' {name}="{escape_param(text)}"'.replace("%", "%%"))
                    continue
                kind = types[at]
                if kind is NoneType:
                    pieces.append("%.0s")  # consumes the null, prints nothing
                elif kind is str or kind is int or kind is float:  # ``%s`` writes what param_text does
                    pieces.append(f' {name.replace("%", "%%")}="%s"')
                    if kind is str:  # (a number's text holds none of '"', "\\" and "]")
                        texts.append(at)
                else:
                    break
                at += 1
            else:
                pri, msgid_sd = self._event(event)
                header = f" {self._host(host)} {self._cached(self._apps, program, 48)} "
                header = header.replace("%", "%%") + ("%s" if pid is not None else "%.0s-")
                # "Z" ending TIMESTAMP to MSG
                text = f"Z{header} {msgid_sd.replace('%', '%%')}{''.join(pieces)}{self._msg_sep.replace('%', '%%')}%s"
                # Severity by the fields it depends on (severity_fields), remembered by
                # their values: its call for each record cost a tenth of the encoder.
                by_fields: Any = None
                if pri is None:
                    fields = severity_fields(event)  # (a str: a null event is info)
                    if not any(f in _NOT_SD or f == "flags" for f in fields):
                        rest = [k for k in sd_keys if k not in _STEADY]
                        places = [1 + rest.index(f) for f in fields if f in rest]
                        if places:
                            by_fields = itemgetter(*places)
                        else:  # none of them in these records
                            pri = self._pri[severity({"event": event})]
                # (itemgetter of one place gives the value, not a tuple: so twice)
                template = (pri, text, itemgetter(*texts, texts[0]) if texts else _no_texts, by_fields, {})
        if len(entries) > 64:
            entries.clear()
        entries[key] = template
        return template

    # -- encoding

    def encode(self, rec: dict[str, Any]) -> bytes:
        return self.encode_batch([rec])[0]

    def encode_batch(self, records: list[dict[str, Any]]) -> list[bytes]:
        return [text.encode("utf-8", "replace") for text in self.encode_texts(records)]

    def encode_texts(self, records: list[dict[str, Any]]) -> list[str]:
        """One message per record, as text (its UTF-8 encoding with errors "replace" is the
        message, within ``max_size`` octets)."""
        out: list[str] = []
        append = out.append
        shapes = self._shapes
        general = self._text
        pris = self._pri
        max_size = self.max_size
        seconds = self._seconds.__getitem__
        digits3 = _DIGITS3
        # The second of the previous record, as nanoseconds and text: log times are mostly
        # increasing, so a subtraction usually replaces a division of a 61-bit int.
        sec_ns, sec_text = 0, seconds(0)
        for rec in records:
            keys = tuple(rec)
            shape = shapes.get(keys, False)
            if shape is False:
                shape = self._shape(keys)
            if shape is None:  # a record without the usual keys: the general path
                append(general(rec))
                continue
            head_of, vals_of, at, entries, _, last = shape
            head = head_of(rec)
            vals = vals_of(rec)
            # From the timestamp's "Z" to MSG in one %-format per record, not value by value: a
            # template for these value types (strings and numbers ``%s``, ``%.0s`` drops
            # a null) and header and steady values (HOSTNAME, APP-NAME, MSGID, source, ...
            # written into it). The types pick it (cheaper than searching the text for what
            # ``%s`` made of a null or a bool); a look for '"', "\\" and "]" in its str
            # values (one join: a count of '"' in the text cost more) tells that none needs
            # escaping. Else (other types, flags, escaping) the general path.
            # Key: (the types of PROCID, the other SD values and MSG; host, program, event
            # and the steady values)
            key = (tuple(map(type, vals)), head)
            if key == last[0]:  # as the shape's last record: no hashing of the key
                entry = last[1]
            else:
                try:
                    entry = entries.get(key, False)
                except TypeError:  # an unhashable header value (a list where a name belongs)
                    entry = None
                if entry is False:
                    entry = self._template(shape, head, vals, key)
                last[:] = key, entry
            if entry is None or rec["flags"]:  # flags (an odd line's): the general path writes them
                append(general(rec))
                continue
            pri, template, strings, by_fields, severities = entry
            texts = "".join(strings(vals))
            if '"' in texts or "\\" in texts or "]" in texts:
                append(general(rec))  # a value needs escaping
                continue
            if pri is None:
                if by_fields is None:
                    pri = pris[severity(rec)]
                else:
                    fields = by_fields(vals)
                    pri = severities.get(fields)
                    if pri is None:
                        if len(severities) > 256:
                            severities.clear()
                        pri = severities[fields] = pris[severity(rec)]
            ns = vals[at]
            frac = ns - sec_ns
            if not 0 <= frac < 1_000_000_000:
                secs, frac = divmod(ns, 1_000_000_000)
                sec_ns, sec_text = ns - frac, seconds(secs)
            if sec_text is None:  # a year out of range: NILVALUE
                append(general(rec))
                continue
            # microseconds, floored: never a later second than the line's
            text = f"{pri}{sec_text}{digits3[frac // 1_000_000]}{digits3[frac // 1000 % 1000]}{template % vals}"
            # len() counts octets only for ASCII (isascii() is O(1)): otherwise encode to count
            if len(text) > max_size or not text.isascii():
                text = self._fitted(rec, text)
            append(text)
        return out

    def _text(self, rec: dict[str, Any]) -> str:
        """One message, the general way (records of any shape)."""
        get = rec.get
        event = get("event")
        pri, msgid_sd = self._event(event)
        if pri is None:
            pri = self._pri[severity(rec)]
        msg = get(self.msg_field)
        if type(msg) is not str:
            msg = "" if msg is None else str(msg)
        text = (f"{pri}{self._timestamp(get('time_unix_ns'))} {self._host(get('host'))} "
                f"{self._cached(self._apps, get('program'), 48)} {self._procid(get('pid'))} "
                f"{msgid_sd}{self._sd_params(rec)}{self._msg_sep}{msg}")
        if len(text) > self.max_size or not text.isascii():
            text = self._fitted(rec, text)
        return text

    def _fitted(self, rec: dict[str, Any], text: str) -> str:
        """``text`` if it is within ``max_size`` octets, else the record cut to fit."""
        if len(text.encode("utf-8", "replace")) <= self.max_size:
            return text
        # _fit cuts at UTF-8 character boundaries: its bytes decode, and encode back the same
        return self._fit(rec).decode("utf-8")

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
            if key in _NOT_SD or key == "raw_base64":  # a part of the bytes is no use: all or none
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
                return utf8_cut(prefix, limit)
        return prefix + b" " + bom + utf8_cut(msg_bytes, room)

    def _prefix(self, head: list[str], kept: list[tuple[str, str]]) -> bytes:
        sd = "".join(f' {n}="{v}"' for n, v in kept)
        text = (f"{head[0]}{head[1]} {head[2]} {head[3]} {head[4]} {head[5]} "
                f'[{self.sd_id} truncated="1"{sd}]')
        return text.encode("utf-8", "replace")


class Rfc3164Encoder:
    """Flat record dicts → BSD syslog lines ``<PRI>Mmm dd HH:MM:SS host tag[pid]: msg``.

    For receivers that predate RFC 5424. The timestamp is the line's own time with no
    year, no fraction and no zone: in this host's local time (``local_time``, the
    default: RFC 3164 4.1.2 says local time, and receivers read it in their own zone),
    or in UTC for receivers kept in UTC. There is no structured data, so the event fields and
    event id do not travel, and a record cut to ``max_size`` (1024 by default, RFC 3164
    section 4.1) is only counted in ``truncated``, not flagged in band.
    """

    def __init__(self, *, facility: int = FACILITY_MAIL, hostname: str | None = None,
                 msg_field: str = "message", max_size: int = 1024, local_time: bool = True) -> None:
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
        return (self._seconds[self._local(secs)] or self._seconds[self._local(int(time.time()))]
                or "Jan  1 00:00:00")

    def _local(self, secs: int) -> int:
        """``secs`` shifted by the zone's offset then (the cached texts are UTC's)."""
        if self.local_time:
            try:
                secs += time.localtime(secs).tm_gmtoff
            except (OverflowError, OSError, ValueError):
                pass  # out of range: _SecondCache has no text for it either
        return secs

    def _tag(self, program: Any) -> str:
        if type(program) not in _HASHABLE_HEAD:
            program = str(program)
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
        return [text.encode("utf-8", "replace") for text in self.encode_texts(records)]

    def encode_texts(self, records: list[dict[str, Any]]) -> list[str]:
        """One message per record, as text (its UTF-8 encoding with errors "replace" is the
        message, within ``max_size`` octets)."""
        out: list[str] = []
        for rec in records:
            host = rec.get("host")
            h = self.hostname if host is None else (
                self._hosts.get(host) if type(host) is str else _printable(str(host), 255))
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
            if len(text) > self.max_size or not text.isascii():
                data = text.encode("utf-8", "replace")
                if len(data) > self.max_size:
                    self.truncated += 1
                    text = utf8_cut(data, self.max_size).decode("utf-8")  # cut at a character boundary
            out.append(text)
        return out
