"""A batch of records → an HTTP request body, for each receiver we speak. Pure.

``encode(records, fmt, ...)`` returns ``HttpBody(body, content_type, headers)``.
The URL is the user's: the full endpoint (``http://ch:8123/``,
``https://es:9200/_bulk``, ``http://loki:3100/loki/api/v1/push``,
``https://splunk:8088/services/collector/event``, ``http://otel:4318/v1/logs``,
``http://graylog:12201/gelf``).

Formats:

* ``ndjson`` — one record per line, exactly the documented JSON form.
* ``clickhouse`` — ``INSERT INTO <table> FORMAT JSONEachRow`` followed by one row
  per record, for the table in ``conf/clickhouse.sql`` (query in the body, so the
  URL stays the server's root). Core keys and shared fields get their own
  columns; every other key goes, as JSON, into the ``fields`` column. A value
  whose type does not fit its column (a string ``pid``, an out-of-range int)
  also goes into ``fields``: nothing is lost. ``delivery``'s column is String.
* ``elasticsearch`` — bulk API: ``create`` actions with ``_id`` = ``event_id``, so
  a replayed record is refused as a duplicate (409) instead of indexed twice
  (and data streams, which accept only ``create``, work). ``@timestamp`` is the
  record's ``time``. Records without an event id (stdin) get no ``_id``. The
  records are flat (``host``, ``event``, ``source`` are strings): an index or data
  stream whose template maps them as ECS objects (Elastic's ``logs-*-*`` in
  logsdb mode adds ``host.name``) refuses them; use an index of its own.
* ``loki`` — push API JSON: one stream per (host, log_dir, program, event) label
  set — four low-cardinality labels only; everything else is in the line (the
  record as JSON). ``log_dir`` is the directory of the file read (the multilog
  directory: ``/var/log/qmail/smtpd``): two services of one program (smtpd on 25,
  submission on 587) read hours apart after an outage would otherwise share a
  stream out of order, whose older entries Loki refuses ("entry too far behind").
  Values are ``[unix ns as string, line]``, sorted by time per stream.
* ``splunk_hec`` — HEC event envelopes, concatenated: ``time`` float seconds (as GELF's
  ``timestamp``: correctly rounded, never in a later second than the line's),
  ``host``, ``source`` (the file read), ``sourcetype`` ``qmail``, ``event`` = the record.
* ``otlp`` — OTLP/HTTP JSON logs: one ``resourceLogs`` per host (``host.name``),
  scope ``shipper``, ``logRecords`` with ``timeUnixNano`` (string),
  ``severityNumber``/``severityText`` mapped from the syslog severity, ``body`` =
  the message, ``attributes`` = every other key (ints as strings, per the
  protobuf JSON mapping).
* ``gelf`` — newline-separated GELF 1.1 messages (Graylog's GELF HTTP input; bulk
  receiving must be on for more than one message per request: the sinks send one per
  request unless ``bulk``).
"""

from __future__ import annotations

import gzip as _gzip
import re
from typing import Any, NamedTuple

import orjson

from shipper import __version__
from shipper.encode import gelf as _gelf
from shipper.severity import severity
from shipper.stamps import rfc3339_ns

FORMATS = ("ndjson", "clickhouse", "elasticsearch", "loki", "splunk_hec", "otlp", "gelf")


class HttpBody(NamedTuple):
    body: bytes
    content_type: str
    headers: dict[str, str]


def encode(records: list[dict[str, Any]], fmt: str, *, table: str | None = None,
           index: str | None = None, gzip: bool = False, default_host: str = "localhost",
           sourcetype: str = "qmail", columns: Columns | None = None) -> HttpBody:
    """A batch → the request body for ``fmt``; gzip-compressed if asked."""
    if fmt == "ndjson":
        body, ctype = ndjson(records), "application/x-ndjson"
    elif fmt == "clickhouse":
        if not table:
            raise ValueError('format "clickhouse" needs a table name')
        body, ctype = clickhouse(records, table, columns), "text/plain; charset=utf-8"
    elif fmt == "elasticsearch":
        body, ctype = elasticsearch_bulk(records, index or "qmail"), "application/x-ndjson"
    elif fmt == "loki":
        body, ctype = loki_push(records), "application/json"
    elif fmt == "splunk_hec":
        body, ctype = splunk_hec(records, sourcetype, default_host), "application/json"
    elif fmt == "otlp":
        body, ctype = otlp_logs(records, default_host), "application/json"
    elif fmt == "gelf":
        body, ctype = _gelf.encode_lines(records, default_host), "application/json"
    else:
        raise ValueError(f"HTTP body format must be one of {FORMATS}, not {fmt!r}")
    out = HttpBody(body, ctype, {})
    return gzip_body(out) if gzip else out


def gzip_body(b: HttpBody) -> HttpBody:
    """The same request body, gzip-compressed (``Content-Encoding: gzip``)."""
    return HttpBody(_gzip.compress(b.body, compresslevel=5, mtime=0), b.content_type,
                    {**b.headers, "Content-Encoding": "gzip"})


# ------------------------------------------------------------------ ndjson


def ndjson(records: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps
    return b"".join([dumps(r) + b"\n" for r in records])


# -------------------------------------------------------------- clickhouse

# The columns of conf/clickhouse.sql, as DESCRIBE TABLE gives them (name, type): what
# is written when the table's own cannot be read (tests/test_sink_http.py holds the
# two the same: twelve columns missing here stayed NULL for good)
_SCHEMA = """\
time DateTime('UTC')
time_nanos UInt32
time_unix_ns UInt64
event_id Nullable(String)
time_source String
host Nullable(String)
program Nullable(String)
pid Nullable(UInt32)
event String
message String
raw String
raw_base64 Nullable(String)
flags Array(String)
source Nullable(String)
file_id Nullable(String)
offset Nullable(UInt64)
msg Nullable(UInt64)
delivery Nullable(String)
qp Nullable(UInt64)
mail_from Nullable(String)
rcpt_to Nullable(String)
remote_ip Nullable(String)
remote_host Nullable(String)
remote_port Nullable(UInt16)
remote_info Nullable(String)
local_ip Nullable(String)
local_host Nullable(String)
local_port Nullable(UInt16)
conn_pid Nullable(UInt32)
relay_ip Nullable(String)
relay_host Nullable(String)
relay_port Nullable(UInt16)
result Nullable(String)
smtp_code Nullable(UInt16)
dsn Nullable(String)
text Nullable(String)
text_raw Nullable(String)
qid Nullable(String)
message_id Nullable(String)
auth_user Nullable(String)
proto Nullable(String)
helo Nullable(String)
tls Nullable(String)
queue Nullable(String)
size Nullable(UInt64)
action Nullable(String)
check Nullable(String)
condition Nullable(String)
reason Nullable(String)
level Nullable(String)
verdict Nullable(String)
virus Nullable(String)
score Nullable(Float64)
exit_code Nullable(Int32)
service Nullable(String)
rbl_list Nullable(String)
ingest_unix_ns Nullable(UInt64)
fields String
"""
# Never NULL in the table (ClickHouse would store '' / 0 for a missing key).
_NOT_NULL = frozenset({"time_source", "event", "message", "raw"})
_DATETIME_MAX = (1 << 32) - 1  # DateTime is UInt32 seconds


# A table's own columns (``clickhouse_columns``): name → (kind, low, end); kinds "s"
# String, "i" an integer in [low, end), "f" Float, "a" Array(String), "t" DateTime;
# "" a type we do not write (that column keeps its default; the value goes to `fields`).
Columns = dict[str, tuple[str, int, int]]
_CH_WRAPPERS = ("Nullable(", "LowCardinality(")
_CH_INTS = {f"{sign}Int{bits}": ((0, 1 << bits) if sign else (-(1 << bits - 1), 1 << bits - 1))
            for sign in ("U", "") for bits in (8, 16, 32, 64)}


def clickhouse_columns(describe_tsv: str) -> Columns:
    """``DESCRIBE TABLE … FORMAT TSV`` output → the columns ``clickhouse_row`` may write.
    So a table with columns added (``action``, ``verdict``, ...) gets them filled, and
    one with columns dropped takes the rows (the values go to `fields`)."""
    cols: Columns = {}
    for line in describe_tsv.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0]:
            continue
        name, ctype = parts[0], parts[1].replace("\\'", "'").strip()  # TSV escapes quotes
        if len(parts) > 2 and parts[2] in ("MATERIALIZED", "ALIAS", "EPHEMERAL"):
            continue  # not written by an INSERT
        changed = True
        while changed:
            changed = False
            for w in _CH_WRAPPERS:
                if ctype.startswith(w) and ctype.endswith(")"):
                    ctype, changed = ctype[len(w):-1], True
        if ctype == "String":
            cols[name] = ("s", 0, 0)
        elif ctype in _CH_INTS:
            lo, end = _CH_INTS[ctype]
            cols[name] = ("i", lo, end)
        elif ctype in ("Float32", "Float64"):
            cols[name] = ("f", 0, 0)
        elif ctype in ("Array(String)", "Array(LowCardinality(String))"):
            cols[name] = ("a", 0, 0)
        elif ctype == "DateTime" or ctype.startswith("DateTime('"):
            cols[name] = ("t", 0, 0)
        else:
            cols[name] = ("", 0, 0)
    return cols


DEFAULT_COLUMNS = clickhouse_columns(_SCHEMA.replace(" ", "\t"))  # conf/clickhouse.sql's


def clickhouse_row(rec: dict[str, Any], columns: Columns | None = None) -> dict[str, Any]:
    """One record → one JSONEachRow object for the table in conf/clickhouse.sql, or for
    a table of ``columns``: a key without a column that takes its value goes, as JSON,
    into the ``fields`` column (dropped only when the table has none)."""
    cols = DEFAULT_COLUMNS if columns is None else columns
    row: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    t = rec.get("time_unix_ns")
    if isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= _DATETIME_MAX * 1_000_000_000:
        secs, nanos = divmod(t, 1_000_000_000)
        if cols.get("time", ("",))[0] == "t":
            row["time"] = secs
        if "time_nanos" in cols:
            row["time_nanos"] = nanos
        if cols.get("time_unix_ns", ("",))[0] == "i" and t < cols["time_unix_ns"][2]:
            row["time_unix_ns"] = t
        else:
            rest["time_unix_ns"] = t
    else:  # unknown or outside DateTime: zeros in the columns, the value kept in `fields`
        for k in ("time", "time_nanos", "time_unix_ns"):
            if k in cols:
                row[k] = 0
        rest["time_unix_ns"] = t
        rest["time"] = rec.get("time")
    flags = rec.get("flags")
    if cols.get("flags", ("",))[0] == "a" and isinstance(flags, list) and all(isinstance(f, str) for f in flags):
        row["flags"] = flags
    else:
        if "flags" in cols and cols["flags"][0] == "a":
            row["flags"] = []
        if flags is not None:
            rest["flags"] = flags
    for key, v in rec.items():
        if key in ("time_unix_ns", "time", "flags"):
            continue  # `time` is time_unix_ns in text: rebuilt from it on the way out
        col = cols.get(key)
        if col is None or not col[0] or key == "fields":
            rest[key] = v
        elif v is None:
            if key in _NOT_NULL:
                rest[key] = None
        elif col[0] == "s":
            if isinstance(v, str):
                row[key] = v
            elif isinstance(v, int) and not isinstance(v, bool) and key == "delivery":
                row[key] = str(v)
            else:
                rest[key] = v
        elif col[0] == "i":
            if isinstance(v, int) and not isinstance(v, bool) and col[1] <= v < col[2]:
                row[key] = v
            else:
                rest[key] = v
        elif col[0] == "f" and isinstance(v, int | float) and not isinstance(v, bool) and v == v:
            row[key] = v
        elif col[0] == "a" and isinstance(v, list) and all(isinstance(x, str) for x in v):
            row[key] = v  # a column a user added: accepted_rcpts Array(String), say
        elif col[0] == "t" and (secs := _datetime_secs(key, v)) is not None:
            row[key] = secs  # start, birth (RFC 3339) or *_unix_ns: DateTime's seconds
        else:
            rest[key] = v
    if "fields" in cols:
        row["fields"] = orjson.dumps(rest, option=orjson.OPT_NON_STR_KEYS, default=str).decode() if rest else "{}"
    return row


def _datetime_secs(key: str, v: Any) -> int | None:
    """A record's time value as a DateTime column's seconds: an ``*_unix_ns`` int, or
    an RFC 3339 text of ours (``start``, ``birth``); None: not one, or outside DateTime."""
    if key.endswith("_unix_ns") and type(v) is int:
        ns: int | None = v
    elif isinstance(v, str):
        ns = rfc3339_ns(v)
    else:
        return None
    secs = ns // 1_000_000_000 if ns is not None else -1
    return secs if 0 <= secs <= _DATETIME_MAX else None


_TABLE_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?")


def clickhouse(records: list[dict[str, Any]], table: str, columns: Columns | None = None) -> bytes:
    if not _TABLE_RE.fullmatch(table):
        raise ValueError(f"not a ClickHouse table name (db.table): {table!r}")
    dumps = orjson.dumps
    head = f"INSERT INTO {table} FORMAT JSONEachRow\n".encode()
    return head + b"".join([dumps(clickhouse_row(r, columns)) + b"\n" for r in records])


# ----------------------------------------------------------- elasticsearch


def elasticsearch_bulk(records: list[dict[str, Any]], index: str) -> bytes:
    dumps = orjson.dumps
    out: list[bytes] = []
    for rec in records:
        action: dict[str, Any] = {"_index": index}
        eid = rec.get("event_id")
        if isinstance(eid, str) and eid:
            action["_id"] = eid
        doc = {"@timestamp": rec.get("time")}
        doc.update(rec)
        out.append(dumps({"create": action}))
        out.append(b"\n")
        out.append(dumps(doc))
        out.append(b"\n")
    return b"".join(out)


class BulkOutcome(NamedTuple):
    ok: int  # created
    duplicates: int  # 409: already there (a replay)
    retryable: list[str]  # 429/5xx item errors: send the batch again
    permanent: list[str]  # mapping and other 4xx errors: these items will never fit
    refused: list[int]  # the indexes of those items (= of the records sent)


_ITEM_RETRY = frozenset({401, 403, 404, 408, 429})


def elasticsearch_outcome(response: bytes) -> BulkOutcome:
    """Sort the items of a bulk response. A 200 may still carry item errors."""
    try:
        doc = orjson.loads(response)
    except orjson.JSONDecodeError:
        return BulkOutcome(0, 0, [], ["response is not JSON: " + response[:200].decode("utf-8", "replace")],
                           [])
    ok = dup = 0
    retry: list[str] = []
    perm: list[str] = []
    refused: list[int] = []
    if not isinstance(doc, dict):
        return BulkOutcome(0, 0, [], ["response is not a bulk reply"], [])
    for i, item in enumerate(doc.get("items") or []):
        res = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
        status = res.get("status", 0) if isinstance(res, dict) else 0
        if 200 <= status < 300:
            ok += 1
        elif status == 409:
            dup += 1
        else:
            err = res.get("error") if isinstance(res, dict) else None
            text = f"{status} {err.get('type', '')}: {err.get('reason', '')}" if isinstance(err, dict) \
                else f"{status} {err}"
            # 404 (index_not_found: auto-create off, no template yet) and 403 (a
            # read-only block, a missing privilege) say nothing about the record, as a
            # whole response's do: retried, not dead-lettered (the whole stream went)
            if status in _ITEM_RETRY or status >= 500:
                retry.append(text)
            else:
                perm.append(text)
                refused.append(i)
    return BulkOutcome(ok, dup, retry, perm, refused)


# -------------------------------------------------------------------- loki


def loki_push(records: list[dict[str, Any]]) -> bytes:
    streams: dict[tuple[str, str, str, str], list[tuple[int, bytes]]] = {}
    dumps = orjson.dumps
    for rec in records:
        source = rec.get("source")
        log_dir = source.rpartition("/")[0] if isinstance(source, str) else None
        key = (_label(rec.get("host")), _label(log_dir), _label(rec.get("program")),
               _label(rec.get("event")))
        t = rec.get("time_unix_ns")
        streams.setdefault(key, []).append((t if isinstance(t, int) else 0, dumps(rec)))
    out = []
    for (host, log_dir, program, event), values in streams.items():
        values.sort(key=lambda v: v[0])  # older Loki refuses out-of-order entries in a stream
        out.append({"stream": {"host": host, "log_dir": log_dir, "program": program, "event": event},
                    "values": [[str(t), line.decode()] for t, line in values]})
    return dumps({"streams": out})


def _label(v: Any) -> str:
    return v if isinstance(v, str) and v else "unknown"


# -------------------------------------------------------------- splunk hec


def splunk_hec(records: list[dict[str, Any]], sourcetype: str = "qmail",
               default_host: str = "localhost") -> bytes:
    dumps = orjson.dumps
    out = []
    for rec in records:
        t = rec.get("time_unix_ns")
        env: dict[str, Any] = {}
        if isinstance(t, int) and not isinstance(t, bool):
            env["time"] = _gelf.timestamp_seconds(t)  # never a later second than the line's
        host = rec.get("host")
        env["host"] = host if isinstance(host, str) and host else default_host
        src = rec.get("source")
        if isinstance(src, str) and src:
            env["source"] = src
        env["sourcetype"] = sourcetype
        env["event"] = rec
        out.append(dumps(env))
    return b"\n".join(out) + b"\n" if out else b""


# -------------------------------------------------------------------- otlp

# syslog severity 0-7 → (OTLP SeverityNumber, SeverityText)
OTLP_SEVERITY: dict[int, tuple[int, str]] = {
    0: (22, "FATAL2"), 1: (21, "FATAL"), 2: (18, "ERROR2"), 3: (17, "ERROR"),
    4: (13, "WARN"), 5: (10, "INFO2"), 6: (9, "INFO"), 7: (5, "DEBUG"),
}
_OTLP_CONSUMED = frozenset({"host", "message", "time", "time_unix_ns"})


def _any_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        # int64 travels as a JSON string; larger ints do not fit it
        return {"intValue": str(v)} if -(1 << 63) <= v < (1 << 63) else {"stringValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v} if v == v and abs(v) != float("inf") else {"stringValue": str(v)}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [_any_value(x) for x in v if x is not None]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": str(k), "value": _any_value(x)}
                                           for k, x in v.items() if x is not None]}}
    return {"stringValue": str(v)}


def otlp_log_record(rec: dict[str, Any]) -> dict[str, Any]:
    t = rec.get("time_unix_ns")
    number, text = OTLP_SEVERITY.get(severity(rec), (9, "INFO"))
    msg = rec.get("message")
    out: dict[str, Any] = {}
    if isinstance(t, int) and not isinstance(t, bool) and t >= 0:
        out["timeUnixNano"] = str(t)
    out["severityNumber"] = number
    out["severityText"] = text
    out["body"] = {"stringValue": msg if isinstance(msg, str) else ""}
    out["attributes"] = [{"key": k, "value": _any_value(v)} for k, v in rec.items()
                         if v is not None and k not in _OTLP_CONSUMED]
    return out


def otlp_logs(records: list[dict[str, Any]], default_host: str = "localhost") -> bytes:
    by_host: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        host = rec.get("host")
        by_host.setdefault(host if isinstance(host, str) and host else default_host, []).append(
            otlp_log_record(rec))
    return orjson.dumps({"resourceLogs": [
        {"resource": {"attributes": [{"key": "host.name", "value": {"stringValue": host}},
                                     {"key": "service.name", "value": {"stringValue": "qmail"}}]},
         "scopeLogs": [{"scope": {"name": "shipper", "version": __version__}, "logRecords": logs}]}
        for host, logs in by_host.items()]})


def otlp_rejected(response: bytes) -> tuple[int, str]:
    """(rejected records, error message) of an OTLP 200 reply with ``partialSuccess``."""
    try:
        doc = orjson.loads(response) if response.strip() else {}
    except orjson.JSONDecodeError:
        return 0, ""
    part = doc.get("partialSuccess") if isinstance(doc, dict) else None
    if not isinstance(part, dict):
        return 0, ""
    try:
        n = int(part.get("rejectedLogRecords") or 0)
    except (TypeError, ValueError):
        n = 0
    return n, str(part.get("errorMessage") or "")


def hec_invalid_event(response: bytes) -> int | None:
    """The index Splunk HEC's refusal gives of the first event it refused
    (``{"text":"Invalid data format","code":6,"invalid-event-number":3}``), or None."""
    try:
        doc = orjson.loads(response)
    except orjson.JSONDecodeError:
        return None
    n = doc.get("invalid-event-number") if isinstance(doc, dict) else None
    return n if type(n) is int else None
