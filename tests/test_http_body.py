"""HTTP body formats (shipper.encode.http_body): exact shapes on records parsed from real lines."""

from __future__ import annotations

import gzip
from fractions import Fraction
from typing import Any

import orjson
from conftest import FIXTURES

from shipper import __version__
from shipper.encode import http_body
from shipper.parse import LineParser
from shipper.severity import severity


def fixture_records() -> list[dict[str, Any]]:
    lines = (FIXTURES / "sink_lines.log").read_bytes().splitlines()
    assert lines[0].startswith(b"# source:")
    parser = LineParser(source="/var/log/qmail/current", file_id="00112233aabbccdd")
    return [parser.parse(ln, i * 80).to_dict() for i, ln in enumerate(lines[1:])]


RECS = fixture_records()
DELIVERY = next(r for r in RECS if r["event"] == "delivery")
TCP_OK = next(r for r in RECS if r["event"] == "tcp_ok")
POSTFIX = next(r for r in RECS if r["program"] == "postfix/smtpd")


def test_ndjson_is_the_documented_record_form():
    out = http_body.encode(RECS, "ndjson")
    assert out.content_type == "application/x-ndjson" and out.headers == {}
    lines = out.body.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(RECS) + 1
    assert [orjson.loads(ln) for ln in lines[:-1]] == RECS


def test_gzip_sets_content_encoding():
    plain = http_body.encode(RECS, "ndjson")
    out = http_body.encode(RECS, "ndjson", gzip=True)
    assert out.headers == {"Content-Encoding": "gzip"}
    assert gzip.decompress(out.body) == plain.body
    assert len(out.body) < len(plain.body) // 3


def test_clickhouse_rows():
    out = http_body.encode([DELIVERY, TCP_OK, POSTFIX], "clickhouse", table="logs.qmail")
    head, *rows = out.body.split(b"\n")
    assert head == b"INSERT INTO logs.qmail FORMAT JSONEachRow"
    assert rows[-1] == b"" and len(rows) == 4
    d = orjson.loads(rows[0])
    assert d["time"] == 1514839863 and d["time_nanos"] == 714440500
    assert d["time_unix_ns"] == 1514839863714440500 == DELIVERY["time_unix_ns"]
    assert "time_source" in d and d["time_source"] == "local"
    assert d["event_id"] == DELIVERY["event_id"] and d["offset"] == DELIVERY["offset"]
    assert d["delivery"] == "1356"  # String column: int or "12.qident"
    assert d["result"] == "success" and d["smtp_code"] == 250 and d["relay_ip"] == "1.2.3.4"
    assert d["text_raw"] == DELIVERY["text_raw"]
    assert d["flags"] == []
    assert "host" not in d and "pid" not in d  # missing → NULL
    assert orjson.loads(d["fields"]) == {}
    t = orjson.loads(rows[1])
    assert t["local_port"] == 25 and t["remote_port"] == 44176 and t["conn_pid"] == 30556
    assert t["pid"] == 30556
    p = orjson.loads(rows[2])
    assert p["host"] == "xxx" and p["pid"] == 14398
    status = next(r for r in RECS if r["event"] == "status")
    s = http_body.clickhouse_row(status)
    assert orjson.loads(s["fields"]) == {"local_active": 1, "local_max": 10, "remote_active": 1,
                                         "remote_max": 100}


def test_clickhouse_keeps_values_that_do_not_fit_their_column():
    rec = dict(DELIVERY, pid="12a", smtp_code=70000, flags=["x", 3], time_unix_ns=-5, size=True)
    row = http_body.clickhouse_row(rec)
    rest = orjson.loads(row["fields"])
    assert rest["pid"] == "12a" and rest["smtp_code"] == 70000 and rest["size"] is True
    assert rest["flags"] == ["x", 3] and row["flags"] == []
    assert rest["time_unix_ns"] == -5 and rest["time"] == DELIVERY["time"]
    assert row["time"] == 0 and row["time_unix_ns"] == 0
    assert "pid" not in row and "smtp_code" not in row and "size" not in row


def test_elasticsearch_bulk_create_with_event_id():
    out = http_body.encode([DELIVERY, dict(TCP_OK, event_id=None)], "elasticsearch", index="mail")
    assert out.content_type == "application/x-ndjson"
    lines = [orjson.loads(x) for x in out.body.split(b"\n")[:-1]]
    assert len(lines) == 4
    assert lines[0] == {"create": {"_index": "mail", "_id": DELIVERY["event_id"]}}
    assert lines[1]["@timestamp"] == "2018-01-01T20:51:03.714440500Z"
    assert {k: v for k, v in lines[1].items() if k != "@timestamp"} == DELIVERY
    assert lines[2] == {"create": {"_index": "mail"}}  # no id: ES makes one
    assert out.body.endswith(b"\n")


def test_elasticsearch_outcome_sorts_items():
    resp = orjson.dumps({"took": 3, "errors": True, "items": [
        {"create": {"_id": "a", "status": 201}},
        {"create": {"_id": "b", "status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"create": {"_id": "c", "status": 429, "error": {"type": "es_rejected_execution_exception",
                                                          "reason": "queue full"}}},
        {"create": {"_id": "d", "status": 400, "error": {"type": "mapper_parsing_exception",
                                                          "reason": "failed to parse [size]"}}},
    ]})
    out = http_body.elasticsearch_outcome(resp)
    assert out.ok == 1 and out.duplicates == 1
    assert out.retryable == ["429 es_rejected_execution_exception: queue full"]
    assert out.permanent == ["400 mapper_parsing_exception: failed to parse [size]"]
    assert http_body.elasticsearch_outcome(b"<html>").permanent[0].startswith("response is not JSON")


def test_loki_streams_by_low_cardinality_labels():
    recs = RECS[:8]
    out = http_body.encode(recs, "loki")
    assert out.content_type == "application/json"
    doc = orjson.loads(out.body)
    streams = doc["streams"]
    assert all(set(s["stream"]) == {"host", "log_dir", "program", "event"} for s in streams)
    labels = {(s["stream"]["program"], s["stream"]["event"]) for s in streams}
    assert ("qmail-send", "status") in labels and ("sslserver", "tcp_ok") in labels
    assert all(s["stream"]["host"] == "unknown" for s in streams)  # multilog lines name no host
    total = 0
    for s in streams:
        times = [int(v[0]) for v in s["values"]]
        assert times == sorted(times)
        for ts, line in s["values"]:
            assert isinstance(ts, str) and ts.isdigit()
            rec = orjson.loads(line)
            assert rec["time_unix_ns"] == int(ts)
            assert rec["program"] == s["stream"]["program"] and rec["event"] == s["stream"]["event"]
            total += 1
    assert total == len(recs)
    status = next(s for s in streams if s["stream"]["event"] == "status")
    assert len(status["values"]) == 2


def test_loki_keeps_two_directories_of_one_program_in_two_streams():
    # smtpd and submission read hours apart (after an outage): one stream would go
    # back in time, and Loki refuses entries too far behind a stream's newest
    a = dict(RECS[0], source="/var/log/qmail/smtpd/current", time_unix_ns=9 * 10**18)
    b = dict(RECS[0], source="/var/log/qmail/submission/@4000000069300000000005dc.s",
             time_unix_ns=1 * 10**18)
    c = dict(RECS[0], source=None)
    streams = orjson.loads(http_body.encode([a, b, c], "loki").body)["streams"]
    assert sorted(s["stream"]["log_dir"] for s in streams) == [
        "/var/log/qmail/smtpd", "/var/log/qmail/submission", "unknown"]


def test_splunk_hec_envelopes():
    out = http_body.encode([DELIVERY, POSTFIX], "splunk_hec", default_host="mx1")
    evs = [orjson.loads(x) for x in out.body.split(b"\n")[:-1]]
    # the float nearest the exact time (/ 1e9 rounded twice: 0.2 µs off here)
    assert evs[0]["time"] == float(Fraction(DELIVERY["time_unix_ns"], 10**9))
    assert evs[0]["host"] == "mx1" and evs[1]["host"] == "xxx"
    assert evs[0]["source"] == "/var/log/qmail/current"
    assert evs[0]["sourcetype"] == "qmail"
    assert evs[0]["event"] == DELIVERY and evs[1]["event"] == POSTFIX
    assert set(evs[0]) == {"time", "host", "source", "sourcetype", "event"}


def test_otlp_logs_shape():
    fail = dict(DELIVERY, result="failure")  # → syslog warning → OTLP WARN
    out = http_body.encode([DELIVERY, fail, POSTFIX], "otlp", default_host="mx1")
    doc = orjson.loads(out.body)
    rl = doc["resourceLogs"]
    assert len(rl) == 2  # one per host
    hosts = {a["value"]["stringValue"] for r in rl for a in r["resource"]["attributes"]
             if a["key"] == "host.name"}
    assert hosts == {"mx1", "xxx"}
    mx1 = next(r for r in rl if {"key": "host.name", "value": {"stringValue": "mx1"}}
               in r["resource"]["attributes"])
    scope = mx1["scopeLogs"][0]
    assert scope["scope"] == {"name": "shipper", "version": __version__}
    ok, bad = scope["logRecords"]
    assert ok["timeUnixNano"] == str(DELIVERY["time_unix_ns"])
    assert ok["severityNumber"] == 9 and ok["severityText"] == "INFO"
    assert bad["severityNumber"] == 13 and bad["severityText"] == "WARN" and severity(fail) == 4
    assert ok["body"] == {"stringValue": DELIVERY["message"]}
    attrs = {a["key"]: a["value"] for a in ok["attributes"]}
    assert attrs["delivery"] == {"intValue": "1356"}
    assert attrs["smtp_code"] == {"intValue": "250"}
    assert attrs["result"] == {"stringValue": "success"}
    assert attrs["event_id"] == {"stringValue": DELIVERY["event_id"]}
    assert attrs["flags"] == {"arrayValue": {"values": []}}
    assert "pid" not in attrs and "host" not in attrs and "message" not in attrs
    end = next(r for r in RECS if r.get("parent"))
    e_attrs = {a["key"]: a["value"] for a in http_body.otlp_log_record(end)["attributes"]}
    assert e_attrs["parent"] == {"boolValue": True}


def test_otlp_partial_success_is_read():
    assert http_body.otlp_rejected(b'{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"bad"}}') \
        == (2, "bad")
    assert http_body.otlp_rejected(b"{}") == (0, "")
    assert http_body.otlp_rejected(b"") == (0, "")


def test_gelf_over_http_is_newline_separated_gelf():
    out = http_body.encode([DELIVERY, TCP_OK], "gelf", default_host="mx1")
    msgs = [orjson.loads(x) for x in out.body.split(b"\n")[:-1]]
    assert [m["short_message"] for m in msgs] == [DELIVERY["message"], TCP_OK["message"]]
    assert all(m["version"] == "1.1" and m["host"] == "mx1" for m in msgs)
    assert msgs[1]["_remote_port"] == 44176


def test_unknown_format_and_bad_table_are_refused():
    for fmt, kw, words in (("xml", {}, "xml"), ("clickhouse", {}, "table"),
                           ("clickhouse", {"table": "t; DROP TABLE x"}, "table name")):
        try:
            http_body.encode(RECS[:1], fmt, **kw)
        except ValueError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"{fmt} {kw} accepted")


def test_clickhouse_columns_from_describe():
    tsv = ("time\tDateTime(\\'UTC\\')\t\t\t\t\t\n"
           "pid\tNullable(UInt32)\t\t\t\t\t\n"
           "verdict\tLowCardinality(Nullable(String))\t\t\t\t\t\n"
           "score\tNullable(Float64)\t\t\t\t\t\n"
           "exit_code\tInt32\t\t\t\t\t\n"
           "flags\tArray(String)\t\t\t\t\t\n"
           "day\tDate\tMATERIALIZED\ttoDate(time)\t\t\t\n"
           "when64\tDateTime64(9)\t\t\t\t\t\n")
    cols = http_body.clickhouse_columns(tsv)
    assert cols == {"time": ("t", 0, 0), "pid": ("i", 0, 1 << 32), "verdict": ("s", 0, 0),
                    "score": ("f", 0, 0), "exit_code": ("i", -(1 << 31), 1 << 31),
                    "flags": ("a", 0, 0), "when64": ("", 0, 0)}
    rec = {"time_unix_ns": 1_700_000_000_123_456_789, "pid": 5, "verdict": "VIRUS", "score": 7.5,
           "exit_code": -1, "flags": [], "when64": "x", "virus": "Eicar", "message": "m"}
    row = http_body.clickhouse_row(rec, cols)
    # no `fields` column: what has no column of its own is not written
    assert row == {"time": 1_700_000_000, "pid": 5, "verdict": "VIRUS", "score": 7.5,
                   "exit_code": -1, "flags": []}
    row = http_body.clickhouse_row({**rec, "exit_code": 1 << 40}, {**cols, "fields": ("s", 0, 0)})
    assert orjson.loads(row["fields"]) == {"time_unix_ns": 1_700_000_000_123_456_789,
                                           "when64": "x", "virus": "Eicar", "message": "m",
                                           "exit_code": 1 << 40}
