"""Records → GELF 1.1 messages, UDP chunks and TCP frames. Pure (no I/O).

Mapping (GELF 1.1, go2docs.graylog.org "GELF"):

* ``version`` "1.1"; ``host`` = the record's host, else (none, empty or only
  whitespace: Graylog refuses a blank mandatory field) the sink's host name;
* ``short_message`` = ``message`` (``-`` when blank); ``full_message`` = ``raw`` when it differs
  (the whole line with its stamp), omitted when equal;
* ``timestamp`` = ``time_unix_ns`` as float seconds, correctly rounded, but never in a
  later second than the line's (as RFC 5424's floored TIMESTAMP): 23:59:59.999999999
  is the last float before midnight, not midnight of the next day; the exact
  nanoseconds stay in ``_time``, the RFC 3339 text;
* ``level`` = ``shipper.severity.severity(rec)`` (syslog 0-7);
* every other key → ``_<name>``. Names are cut down to the spec's
  ``^[\\w\\.\\-]*$`` in ASCII (any other character becomes ``_``); a key that
  would become the reserved ``_id`` is sent as ``_id_``; keys Graylog would drop
  because its message already has them (it strips the ``_`` and skips a field it
  has set: ``level`` from GELF's level, ``source`` from ``host``, ...) are sent as
  ``_log_level``, ``_log_source`` (the file read), ``_log_facility``, ...; a name that collides
  after sanitising gets ``_2``, ``_3``... so no value is lost. Values: strings
  and numbers as they are, booleans as ``"true"``/``"false"`` (GELF fields are
  strings or numbers), lists of strings or numbers joined with ``,``, other objects
  (and lists holding them) as JSON text;
  ``null`` values are left out (absent = unknown in GELF).

UDP: a message larger than one datagram is split into at most 128 chunks
(``0x1e 0x0f``, 8-byte message id, sequence number, sequence count, payload).
A message that needs more is cut, never dropped: ``full_message`` goes first,
then the longest strings (``short_message`` first among equals) are halved
until it fits; it carries ``_truncated`` naming what was cut. So is one whose
JSON is over Graylog's decompress_size_limit (8 MiB: dropped unsaid), and over
TCP one over its max_message_size (2 MiB: the connection closed, for good).
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from typing import Any

import orjson

from shipper.encode import SCALARS, json_text
from shipper.severity import severity

MAGIC = b"\x1e\x0f"
CHUNK_HEADER = 12  # magic 2 + message id 8 + seq 1 + count 1
MAX_CHUNKS = 128
# Graylog's own limits (its inputs' defaults): a GELF TCP frame over max_message_size
# makes its frame decoder fail and the input close the connection (ExceptionLogging-
# ChannelHandler), the messages after it in our write lost and the batch sent again
# into the same wall, for good; a UDP message whose JSON is over decompress_size_limit
# is dropped without a word. Cut to fit them, as a message over 128 chunks is.
MAX_TCP_MESSAGE = 2 << 20  # bytes of JSON, the NUL after it not counted (Netty's frame length)
MAX_DECOMPRESSED = 8 << 20
DEFAULT_CHUNK_SIZE = 1420  # bytes per datagram, header included (fits a 1500-byte MTU)
COMPRESSIONS = ("gzip", "zlib", "none")

# Record keys GELF carries in its own fields.
_CONSUMED = frozenset({"host", "message", "raw", "time_unix_ns"})
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_NAME_CACHE: dict[str, str] = {}
_I63 = 1 << 63  # Graylog reads numbers as signed 64-bit longs
# Fields Graylog's GelfCodec sets itself (GELF's own and its Message's reserved ones):
# an additional field of the same name, "_" stripped, is skipped without a word
_GRAYLOG_SET = {name: "_log_" + name for name in (
    "level", "source", "facility", "file", "line", "timestamp", "message", "full_message",
    "streams", "version", "host", "short_message")}


def field_name(key: str) -> str:
    """A record key → its GELF additional field name (``_`` + sanitised key)."""
    name = _NAME_CACHE.get(key)
    if name is None:
        clean = _BAD_NAME_CHARS.sub("_", key) if key else "empty"
        name = "_id_" if clean == "id" else _GRAYLOG_SET.get(clean) or "_" + clean
        if len(_NAME_CACHE) < 4096:
            _NAME_CACHE[key] = name
    return name


def _value(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return v if -_I63 <= v < _I63 else str(v)  # Graylog reads a long: no wrap to negative
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else str(v)
    if isinstance(v, list | tuple) and all(type(x) in SCALARS for x in v):
        return ",".join(x if isinstance(x, str) else str(_value(x)) for x in v)
    return json_text(v)  # objects, and lists holding objects (a summary's recipients)


def _blank(text: str) -> bool:
    """Empty or whitespace only: what Graylog refuses in a mandatory field (isBlank)."""
    return not text or text.isspace()


def timestamp_seconds(ns: int) -> float:
    """Unix nanoseconds → float seconds (GELF ``timestamp``, Splunk HEC ``time``): the
    float nearest the exact time (int / int rounds once; ``ns / 1e9`` rounded ``ns`` to
    a float first, then again), but never in a later second than the line's: the last
    float before it instead (a float holds a 2026 time to 0.24 µs). 23:59:59.999999999
    rounded to midnight, the next day, on 31 December the next year."""
    f = ns / 1_000_000_000
    if f >= (secs := ns // 1_000_000_000) + 1:
        f = math.nextafter(float(secs + 1), -math.inf)
    return f


def gelf_message(rec: dict[str, Any], default_host: str = "localhost") -> dict[str, Any]:
    """One flat record → one GELF 1.1 message (a dict ready for JSON)."""
    message = rec.get("message")
    raw = rec.get("raw")
    if not isinstance(message, str):
        message = raw if isinstance(raw, str) else ""
    if _blank(message):
        message = "-"  # Graylog refuses a short_message that is empty or only whitespace
    host = rec.get("host")
    t = rec.get("time_unix_ns")
    out: dict[str, Any] = {
        "version": "1.1",
        "host": host if isinstance(host, str) and not _blank(host) else default_host,
        "short_message": message,
    }
    if isinstance(raw, str) and raw != message:
        out["full_message"] = raw
    if isinstance(t, int) and not isinstance(t, bool):
        out["timestamp"] = timestamp_seconds(t)
    out["level"] = severity(rec)
    names = _NAME_CACHE
    for key, v in rec.items():
        if v is None or key in _CONSUMED:
            continue
        name = names.get(key) or field_name(key)
        if name in out:  # two keys sanitised to one name: keep both
            n = 2
            while f"{name}_{n}" in out:
                n += 1
            name = f"{name}_{n}"
        t = type(v)
        out[name] = v if t is str or (t is int and -_I63 <= v < _I63) else _value(v)
    return out


def compress(payload: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.compress(payload, compresslevel=6, mtime=0)
    if method == "zlib":
        return zlib.compress(payload, 6)
    if method == "none":
        return payload
    raise ValueError(f"GELF compression must be one of {COMPRESSIONS}, not {method!r}")


def decompress(payload: bytes) -> bytes:
    """What a GELF receiver does: detect gzip/zlib by magic bytes, else plain JSON."""
    if payload[:2] == b"\x1f\x8b":
        return gzip.decompress(payload)
    if payload[:1] == b"\x78":
        return zlib.decompress(payload)
    return payload


def max_payload(chunk_size: int) -> int:
    """Largest (compressed) message that fits the 128 chunks of ``chunk_size``."""
    return (chunk_size - CHUNK_HEADER) * MAX_CHUNKS


def chunk(payload: bytes, message_id: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[bytes]:
    """A (compressed) message → datagrams: itself when it fits one, else GELF chunks.

    Raises ValueError when it needs more than 128 chunks (``encode_udp`` cuts
    messages so that never happens).
    """
    if len(payload) <= chunk_size:
        return [payload]
    if len(message_id) != 8:
        raise ValueError("GELF message id must be 8 bytes")
    body = chunk_size - CHUNK_HEADER
    if body <= 0:
        raise ValueError(f"chunk size {chunk_size} leaves no room after the 12-byte header")
    count = -(-len(payload) // body)
    if count > MAX_CHUNKS:
        raise ValueError(f"GELF message of {len(payload)} bytes needs {count} chunks (max {MAX_CHUNKS})")
    head = MAGIC + message_id
    return [head + struct.pack("BB", i, count) + payload[i * body:(i + 1) * body]
            for i in range(count)]


def _fit(msg: dict[str, Any], compression: str, limit: int,
         compress_min: int = 0, plain_limit: int = MAX_DECOMPRESSED) -> tuple[bytes, list[str]]:
    """Serialise and compress ``msg``, cutting it until it is at most ``limit`` bytes,
    and its JSON at most ``plain_limit``."""
    plain = orjson.dumps(msg)
    payload = plain if len(plain) < compress_min else compress(plain, compression)
    if len(payload) <= limit and len(plain) <= plain_limit:
        return payload, []
    cut: list[str] = []

    def squeeze() -> bytes:
        nonlocal plain
        plain = orjson.dumps(msg)
        return compress(plain, compression)

    if "full_message" in msg:
        del msg["full_message"]
        cut.append("full_message")
        msg["_truncated"] = ",".join(cut)
        payload = squeeze()
    for _ in range(200):  # halving converges in ~log2(size) steps per field
        if len(payload) <= limit and len(plain) <= plain_limit:
            return payload, cut
        longest = max((k for k, v in msg.items() if isinstance(v, str) and len(v) > 16),
                      key=lambda k: (len(msg[k]), k == "short_message"), default=None)
        if longest is None:
            break
        v = msg[longest]
        v = v[:len(v) // 2]
        # the first half of "      text" may be blank: not in a field Graylog requires
        msg[longest] = "-" if longest in ("short_message", "host") and _blank(v) else v
        if longest not in cut:
            cut.append(longest)
        msg["_truncated"] = ",".join(cut)
        payload = squeeze()
    if len(payload) > limit or len(plain) > plain_limit:  # many small fields: the mandatory ones only
        keep = ("version", "host", "short_message", "timestamp", "level", "_event_id")
        slim = {k: msg[k] for k in keep if k in msg}
        slim["short_message"] = slim.get("short_message", "-")[:256] or "-"
        slim["_truncated"] = "fields"
        msg.clear()
        msg.update(slim)
        cut.append("fields")
        payload = squeeze()
    return payload, cut


def encode_udp(rec: dict[str, Any], message_id: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE,
               compression: str = "gzip", default_host: str = "localhost",
               compress_min: int = 0) -> tuple[list[bytes], bool]:
    """One record → (datagrams, truncated). ``message_id``: 8 bytes, unique per message.

    Messages whose JSON is shorter than ``compress_min`` bytes go uncompressed
    (receivers tell by the first bytes): compressing a few hundred bytes costs
    more CPU (zlib sets up its state per message) than it saves on a LAN.
    """
    msg = gelf_message(rec, default_host)
    payload, cut = _fit(msg, compression, max_payload(chunk_size), compress_min)
    return chunk(payload, message_id, chunk_size), bool(cut)


def encode_tcp(records: list[dict[str, Any]], default_host: str = "localhost",
               max_message: int = MAX_TCP_MESSAGE) -> bytes:
    """A batch → NUL-delimited GELF JSON (TCP/TLS framing; uncompressed by the spec).

    orjson escapes U+0000 inside strings, so a NUL byte only ever ends a frame.
    A message over ``max_message`` bytes is cut as ``encode_udp`` cuts (``_truncated``).
    """
    return encode_tcp_counted(records, default_host, max_message)[0]


def encode_tcp_counted(records: list[dict[str, Any]], default_host: str = "localhost",
                       max_message: int = MAX_TCP_MESSAGE) -> tuple[bytes, int]:
    """``encode_tcp``, and how many of the messages were cut to fit."""
    dumps = orjson.dumps
    out: list[bytes] = []
    cut = 0
    for r in records:
        msg = gelf_message(r, default_host)
        data = dumps(msg)
        if len(data) > max_message:
            data, what = _fit(msg, "none", max_message)
            cut += bool(what)
        out.append(data + b"\0")
    return b"".join(out), cut


def encode_line_within(rec: dict[str, Any], default_host: str, limit: int) -> tuple[bytes, bool]:
    """One record → one GELF line of at most ``limit`` bytes, cut as ``encode_udp`` cuts;
    (line, whether it was cut)."""
    payload, cut = _fit(gelf_message(rec, default_host), "none", max(limit - 1, 0))
    return payload + b"\n", bool(cut)


def encode_lines(records: list[dict[str, Any]], default_host: str = "localhost") -> bytes:
    """A batch → newline-delimited GELF JSON (GELF over HTTP, bulk)."""
    dumps = orjson.dumps
    return b"".join([dumps(gelf_message(r, default_host)) + b"\n" for r in records])
