"""HTTP sink (shipper.sinks.http) against a real ClickHouse server and a scripted test peer.

ClickHouse: the Debian ``clickhouse-server`` binary, started here with a config in
a temp dir on free 127.0.0.1 ports; the table is conf/clickhouse.sql. Faults
(429 + Retry-After, 500, 400, refused connections, auth) use a threaded
``http.server`` peer on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import gzip
import http.client
import http.server
import logging
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FIXTURES, ch_query, end_pipeline, free_port, require_binary

from shipper.parse import LineParser
from shipper.record import rfc3339_ns
from shipper.sinks.base import Backoff, PermanentError, SinkError, deliver
from shipper.sinks.deadletter import DeadLetterFile
from shipper.sinks.gelf import gelf_http_sink
from shipper.sinks.http import HttpSink, parse_retry_after, read_secret
from shipper.tlsconfig import TlsOptions

ROOT = Path(__file__).resolve().parent.parent


def fixture_records() -> list[dict[str, Any]]:
    lines = (FIXTURES / "sink_lines.log").read_bytes().splitlines()
    assert lines[0].startswith(b"# source:")
    parser = LineParser(source="/var/log/qmail/current", file_id="00112233aabbccdd")
    recs = [parser.parse(ln, i * 80).to_dict() for i, ln in enumerate(lines[1:])]
    # one line that is not valid UTF-8, as multilog may well hold
    bad = parser.parse(b"@400000005a49ba05197af10c sslserver: pid 30557 from 1.2.3.\xff", 9999).to_dict()
    return recs + [bad]


# ------------------------------------------------------------------ ClickHouse

def row_to_record(row: dict[str, Any]) -> dict[str, Any]:
    """What the table holds → the record form (docs/records.md)."""
    core = ("event_id", "time_source", "host", "program", "pid", "event", "message", "raw",
            "flags", "source", "file_id", "offset")
    rec: dict[str, Any] = {k: row[k] for k in core}
    rec["time_unix_ns"] = row["time_unix_ns"]
    rec["time"] = rfc3339_ns(row["time_unix_ns"])
    assert row["time_unix_ns"] == row["time_unix_ns_from_columns"]
    for k, v in row.items():
        if k not in rec and v is not None and k not in ("time_nanos", "fields", "time_unix_ns_from_columns"):
            rec[k] = v
    rec.update(orjson.loads(row["fields"]))
    return rec


@pytest.mark.slow
async def test_clickhouse_gets_every_record_field_by_field(clickhouse: int):
    sql = (ROOT / "conf" / "clickhouse.sql").read_text()
    ch_query(clickhouse, "DROP TABLE IF EXISTS qmail_log")
    ch_query(clickhouse, sql)
    recs = fixture_records()
    # small max_batch_bytes: the sink splits the batch into several inserts
    sink = HttpSink(f"http://127.0.0.1:{clickhouse}/", "clickhouse", table="qmail_log",
                    gzip=True, max_batch_bytes=8000)
    try:
        await sink.send(recs)
        await sink.send(recs[:3])  # a replay: same event ids
    finally:
        await sink.close()
    out = ch_query(clickhouse, "SELECT *, toUInt64(time) * 1000000000 + time_nanos AS "
                   "time_unix_ns_from_columns FROM qmail_log FORMAT JSONEachRow")
    rows = [orjson.loads(x) for x in out.splitlines()]
    assert len(rows) == len(recs) + 3
    got: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        got.setdefault(row["event_id"], []).append(row_to_record(row))
    assert len(got) == len(recs)
    for rec in recs:
        expected = dict(rec)
        if isinstance(expected.get("delivery"), int):
            expected["delivery"] = str(expected["delivery"])  # the column is String
        copies = got[rec["event_id"]]
        assert len(copies) == (2 if rec in recs[:3] else 1)
        for back in copies:
            for key in expected:
                assert back.get(key, "MISSING") == expected[key], (rec["event_id"], key)
            assert set(back) == set(expected)
    assert any("raw_base64" in r for r in recs)  # the invalid UTF-8 line went through too
    counts = ch_query(clickhouse, "SELECT event, count() FROM qmail_log GROUP BY event "
                      "ORDER BY event FORMAT TSV")
    assert "tcp_ok\t4" in counts.splitlines()


async def test_clickhouse_fills_the_tables_own_columns(clickhouse: int):
    """The sink reads the table's columns: a table without raw_base64 and with a column
    of its own (verdict) takes the rows; a column added mid-stream is filled once the
    insert names it, and one dropped sends its values to `fields`."""
    sql = (ROOT / "conf" / "clickhouse.sql").read_text().replace("qmail_log", "own_cols")
    sql = sql.replace("    raw_base64    Nullable(String),\n", "")
    ch_query(clickhouse, "DROP TABLE IF EXISTS own_cols")
    ch_query(clickhouse, sql)
    ch_query(clickhouse, "ALTER TABLE own_cols DROP COLUMN virus")
    recs = fixture_records()
    assert any("raw_base64" in r for r in recs)  # the column the table lacks
    extra = dict(recs[0], event="simscan", verdict="VIRUS", virus="Eicar", event_id="x-1")
    sink = HttpSink(f"http://127.0.0.1:{clickhouse}/", "clickhouse", table="own_cols")
    try:
        assert await asyncio.wait_for(deliver(sink, [*recs, extra], FAST), 20)
        ch_query(clickhouse, "ALTER TABLE own_cols ADD COLUMN remote_asn Nullable(String)")
        later = dict(recs[0], event_id="x-2", remote_asn="AS64500")
        assert await asyncio.wait_for(deliver(sink, [later], FAST), 20)
        sink._columns_at = None  # as after COLUMNS_TTL
        again = dict(recs[0], event_id="x-3", remote_asn="AS64501")
        assert await asyncio.wait_for(deliver(sink, [again], FAST), 20)
    finally:
        await sink.close()
    rows = ch_query(clickhouse, "SELECT event_id, verdict, remote_asn, fields FROM own_cols "
                    "WHERE event_id LIKE 'x-%' ORDER BY event_id FORMAT JSONEachRow")
    got = [orjson.loads(r) for r in rows.splitlines()]
    assert [(g["event_id"], g["verdict"], g["remote_asn"]) for g in got] == [
        ("x-1", "VIRUS", None), ("x-2", None, None), ("x-3", None, "AS64501")]
    assert orjson.loads(got[0]["fields"])["virus"] == "Eicar"  # its column was dropped
    assert orjson.loads(got[1]["fields"])["remote_asn"] == "AS64500"  # before it was seen
    n = ch_query(clickhouse, "SELECT count() FROM own_cols WHERE fields LIKE '%raw_base64%'")
    assert int(n) == 1  # the invalid UTF-8 line's bytes, kept in fields


async def test_clickhouse_fills_array_and_datetime_columns_a_user_adds(clickhouse: int):
    """A fault hunt: conf/clickhouse.sql says Array(String) and DateTime columns are
    filled, but only `flags` and `time` were: a session's accepted_rcpts stayed [] and
    its start NULL, the values only in `fields`."""
    sql = (ROOT / "conf" / "clickhouse.sql").read_text().replace("qmail_log", "user_cols")
    ch_query(clickhouse, "DROP TABLE IF EXISTS user_cols")
    ch_query(clickhouse, sql)
    ch_query(clickhouse, "ALTER TABLE user_cols ADD COLUMN accepted_rcpts Array(String), "
                         "ADD COLUMN start Nullable(DateTime('UTC'))")
    rec = dict(fixture_records()[0], event="smtp_session", event_id="u-1",
               accepted_rcpts=["bob@example.org", "carol@example.org"], start="2026-01-01T00:00:01.500000000Z")
    odd = dict(rec, event_id="u-2", accepted_rcpts=["x", 5], start="not a time")
    sink = HttpSink(f"http://127.0.0.1:{clickhouse}/", "clickhouse", table="user_cols")
    try:
        assert await asyncio.wait_for(deliver(sink, [rec, odd], FAST), 20)
    finally:
        await sink.close()
    rows = [orjson.loads(r) for r in ch_query(
        clickhouse, "SELECT event_id, accepted_rcpts, toUnixTimestamp(start) AS s, fields FROM user_cols "
                    "ORDER BY event_id FORMAT JSONEachRow").splitlines()]
    assert rows[0]["accepted_rcpts"] == ["bob@example.org", "carol@example.org"] and rows[0]["s"] == 1767225601
    assert "accepted_rcpts" not in orjson.loads(rows[0]["fields"])
    # what does not fit keeps its value in `fields`
    assert rows[1]["accepted_rcpts"] == [] and rows[1]["s"] is None
    assert orjson.loads(rows[1]["fields"])["accepted_rcpts"] == ["x", 5]


async def test_clickhouse_200_with_an_exception_is_not_delivered(peer: Peer):
    # ClickHouse may send a 200 and then, on an error, "Code: 27. DB::Exception: …"
    peer.script = [(404, {}, b"no DESCRIBE here"),  # the sink's look at the table's columns
                   (200, {}, b"Code: 27. DB::Exception: Cannot parse input: expected '{'")]
    sink = HttpSink(peer.url, "clickhouse", table="t", connect_timeout=2)
    with pytest.raises(SinkError) as info:
        await sink.send(fixture_records()[:2])
    assert "DB::Exception" in str(info.value) and sink.stats.acked == 0
    assert [r.get("method", "POST") for r in peer.requests] == ["GET", "POST"]
    await sink.close()


@pytest.mark.slow
async def test_clickhouse_missing_table_is_retried_until_it_exists(clickhouse: int):
    """A missing table (404; ClickHouse also answers it while it restarts) is not the
    records' fault: retried, never dead-lettered; once the table is there, they arrive."""
    sql = (ROOT / "conf" / "clickhouse.sql").read_text().replace("qmail_log", "late_table")
    ch_query(clickhouse, "DROP TABLE IF EXISTS late_table")
    recs = fixture_records()[:4]
    sink = HttpSink(f"http://127.0.0.1:{clickhouse}/", "clickhouse", table="late_table")
    stop = asyncio.Event()
    task = asyncio.create_task(deliver(sink, recs, Backoff(base=0.05, cap=0.2), stop))
    try:
        deadline = time.monotonic() + 20
        while sink.stats.failed < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sink.stats.failed >= 2 and "HTTP 404" in sink.stats.last_error
        assert "late_table" in sink.stats.last_error and not task.done()
        ch_query(clickhouse, sql)
        assert await asyncio.wait_for(task, 20) is True
    finally:
        stop.set()
        await sink.close()
    assert ch_query(clickhouse, "SELECT count() FROM late_table FORMAT TSV").strip() == "4"


# ------------------------------------------------------------------- test peer


class Peer:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering from a script."""

    def __init__(self, port: int = 0) -> None:
        self.script: list[tuple[int, dict[str, str], bytes]] = []  # popped per request
        self.requests: list[dict[str, Any]] = []
        self.too_large = 0  # a body over this many bytes gets a 413 (0: none does)
        # a body holding this gets `refusal` (a receiver refusing one record's value)
        self.poison = b""
        self.refusal: tuple[int, dict[str, str], bytes] = (400, {}, b"bad value")
        self.answer: Any = None  # body → (status, headers, reply): a receiver of its own
        self.lock = threading.Lock()
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with peer.lock:
                    peer.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body, "client": self.client_address,
                                          "at": time.monotonic()})
                    status, headers, reply = peer.script.pop(0) if peer.script else (200, {}, b"ok")
                    if peer.too_large and len(body) > peer.too_large:
                        status, headers, reply = 413, {}, b"too large"
                    elif peer.poison and peer.poison in body and 200 <= status < 300:
                        status, headers, reply = peer.refusal
                    if peer.answer is not None:
                        status, headers, reply = peer.answer(body)
                    peer.requests[-1]["status"] = status
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:  # noqa: N802 -- shipper check's probe
                with peer.lock:
                    peer.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": b"", "method": "GET", "at": time.monotonic()})
                    status, headers, reply = peer.script.pop(0) if peer.script else (200, {}, b"ok")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/ingest"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


FAST = Backoff(base=0.01, cap=0.05)


async def test_ndjson_post_gzip_keepalive_and_headers(peer: Peer):
    recs = fixture_records()
    sink = HttpSink(peer.url, "ndjson", headers={"X-Scope-OrgID": "mail"})
    try:
        for i in range(0, len(recs), 10):
            await sink.send(recs[i:i + 10])
    finally:
        await sink.close()
    assert len(peer.requests) == -(-len(recs) // 10)
    got = [orjson.loads(x) for r in peer.requests for x in r["body"].splitlines()]
    assert got == recs
    h = peer.requests[0]["headers"]
    assert h["Content-Type"] == "application/x-ndjson" and h["Content-Encoding"] == "gzip"
    assert h["X-Scope-OrgID"] == "mail" and peer.requests[0]["path"] == "/ingest"
    assert len({r["client"] for r in peer.requests}) == 1  # one kept-alive connection
    assert sink.stats.sent == len(recs)


def test_keepalive_false_makes_a_connection_a_request(peer: Peer, tmp_path: Path):
    """A fault hunt: keepalive = false on an http sink ("reuse the connection between
    requests") was not passed to the sink: every request went on one connection."""
    from shipper.assemble import build_sink
    from shipper.config import load_config_text

    recs = fixture_records()[:30]
    for keepalive, conns in (("true", 1), ("false", 3)):
        peer.requests.clear()
        cfg = load_config_text(f'[sources.q]\ntype = "stdin"\n[sinks.h]\ntype = "http"\nurl = "{peer.url}"\n'
                               f'keepalive = {keepalive}\nbatch_max_records = 10\n', env={})
        sink = build_sink(cfg.sinks["h"])

        async def send_all(sink=sink) -> None:
            try:
                for i in range(0, len(recs), 10):
                    await sink.send(recs[i:i + 10])
            finally:
                await sink.close()
        asyncio.run(send_all())
        assert len({r["client"] for r in peer.requests}) == conns
        assert {r["headers"]["Connection"] for r in peer.requests} == {"keep-alive" if conns == 1 else "close"}


async def test_429_retry_after_seconds_is_honoured(peer: Peer):
    peer.script = [(429, {"Retry-After": "1"}, b"slow down")]
    recs = fixture_records()[:5]
    sink = HttpSink(peer.url, "ndjson", gzip=False)
    t0 = time.monotonic()
    assert await asyncio.wait_for(deliver(sink, recs, Backoff(base=0.01, cap=0.05)), 10)
    await sink.close()
    assert len(peer.requests) == 2
    waited = peer.requests[1]["at"] - peer.requests[0]["at"]
    assert 1.0 <= waited < 2.0, waited
    assert time.monotonic() - t0 >= 1.0
    assert peer.requests[0]["body"] == peer.requests[1]["body"]
    assert sink.stats.failed == 1 and sink.stats.retried == 5


async def test_503_retry_after_http_date_is_honoured(peer: Peer):
    until = int(time.time() + 2.5)  # whole seconds, as a date has them: 1.5-2.5 s ahead
    peer.script = [(503, {"Retry-After": email.utils.formatdate(until, usegmt=True)}, b"maintenance")]
    sink = HttpSink(peer.url, "ndjson")
    assert await asyncio.wait_for(deliver(sink, fixture_records()[:2], Backoff(base=0.01, cap=0.05)), 10)
    await sink.close()
    # the retry comes once the date has passed, not long after: on the clock, not counted
    # from the first try (a first try late on a loaded machine leaves less to wait: 1.4 s
    # from it was too much to ask)
    retried = peer.requests[1]["at"] + time.time() - time.monotonic()
    assert until - 0.05 <= retried < until + 1.0, retried - until


def test_parse_retry_after():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0


async def test_500s_are_retried_then_delivered(peer: Peer):
    peer.script = [(500, {}, b"boom"), (502, {}, b"bad gateway"), (408, {}, b"")]
    recs = fixture_records()[:7]
    sink = HttpSink(peer.url, "ndjson")
    assert await asyncio.wait_for(deliver(sink, recs, FAST), 10)
    await sink.close()
    assert len(peer.requests) == 4
    assert all(r["body"] == peer.requests[0]["body"] for r in peer.requests)
    assert sink.stats.failed == 3
    assert "HTTP 408" in sink.stats.last_error


async def test_400_is_permanent_and_dead_lettered(peer: Peer, tmp_path: Path):
    # every part refused: the batch, its halves, then each record alone (1 + 2 + 2)
    peer.script = [(400, {}, b'{"error":"field size: not a number"}' + b"x" * 5000)] * 5
    recs = fixture_records()[:3]
    sink = HttpSink(peer.url, "ndjson", name="siem")
    dead = DeadLetterFile(str(tmp_path / "dl" / "siem.ndjson"), sink="siem")
    try:
        await deliver(sink, recs, FAST)
    except PermanentError as exc:
        assert str(exc).startswith("HTTP 400 Bad Request from http://127.0.0.1:")  # the log adds "sink siem: "
        assert exc.response.startswith('{"error":"field size: not a number"}')
        assert len(exc.response) == 1000  # truncated
        dead.write(recs, exc)
    else:
        raise AssertionError("400 was not permanent")
    await sink.close()
    assert len(peer.requests) == 5  # not retried: halved down to each record
    entry = orjson.loads((tmp_path / "dl" / "siem.ndjson").read_bytes())
    assert entry["sink"] == "siem" and entry["count"] == 3 and entry["records"] == recs
    assert entry["response"].startswith('{"error":"field size')
    assert "HTTP 400" in entry["error"] and entry["dead_lettered_at"].endswith("Z")
    assert dead.batches == 1 and dead.records == 3


async def test_413_sends_the_batch_again_in_parts_and_keeps_them_small(peer: Peer):
    """Found by fault injection: a 413 dead-lettered every batch for good."""
    recs = fixture_records()[:8]
    peer.script = [(413, {}, b"too large")]
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        await deliver(sink, recs, FAST)
        first = len(peer.requests[0]["body"])
        assert all(len(r["body"]) <= first // 2 for r in peer.requests[1:])
        got = [orjson.loads(ln)["event_id"] for r in peer.requests[1:] for ln in r["body"].splitlines()]
        assert got == [r["event_id"] for r in recs]  # every record once, in order
        assert sink.stats.acked == len(recs) and sink.stats.sent == len(recs)
        n = len(peer.requests)
        await deliver(sink, recs, FAST)  # the next batch is split at once
        assert len(peer.requests) - n >= 2
    finally:
        await sink.close()


async def test_413s_below_the_learned_floor_still_split_and_never_recurse_forever(peer: Peer):
    """Found by fault injection (a proxy's limit dropped below one record): once the learned
    limit sat at its 1 KiB floor, a 413 for a two-record body under it sent that same body
    again and again until RecursionError took the whole daemon down."""
    recs = fixture_records()[:6]
    peer.too_large = 100  # every record alone is too large
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        with pytest.raises(PermanentError) as info:
            await deliver(sink, recs, FAST)
        assert info.value.refused is None and "413" in str(info.value)  # all refused
        # each record tried alone once; halves tried once each: 1 + 2 + 4 + 6 at most
        assert len(peer.requests) <= 13
        singles = [orjson.loads(r["body"])["event_id"] for r in peer.requests
                   if r["body"].count(b"\n") == 1]
        assert sorted(singles) == sorted(r["event_id"] for r in recs)
    finally:
        await sink.close()


async def test_a_413_for_one_record_refuses_that_record_only(peer: Peer):
    """Found by fault injection: one record too large for the peer dead-lettered its whole
    batch, records never sent included."""
    recs = [dict(r) for r in fixture_records()[:10]]
    recs[4]["message"] = "x" * 60_000
    peer.too_large = 20_000
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        with pytest.raises(PermanentError) as info:
            await deliver(sink, recs, FAST)
        assert info.value.refused == [4] and "413" in str(info.value)
        ok = [orjson.loads(ln)["event_id"] for r in peer.requests if len(r["body"]) <= 20_000
              for ln in r["body"].splitlines()]
        assert sorted(ok) == sorted(r["event_id"] for i, r in enumerate(recs) if i != 4)
    finally:
        await sink.close()


async def test_wrong_credentials_are_retried_not_dead_lettered(peer: Peer):
    # 405: Elasticsearch's answer to a POST to "/" (a URL without /_bulk)
    peer.script = [(401, {}, b"bad password"), (403, {}, b"no"), (404, {}, b"no such table"),
                   (405, {}, b"Incorrect HTTP method for uri [/] and method [POST]")]
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        await deliver(sink, fixture_records()[:2], FAST)
    finally:
        await sink.close()
    assert len(peer.requests) == 5 and sink.stats.failed == 4 and sink.stats.acked == 2


async def test_a_redirect_is_retried_and_names_where_not_dead_lettered(peer: Peer):
    # found by fault injection: a 301 (http → https) dead-lettered every batch
    peer.script = [(301, {"Location": "https://siem.example.net/ingest"}, b""),
                   (307, {}, b"moved")]
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        assert await deliver(sink, fixture_records()[:2], FAST)
    finally:
        await sink.close()
    assert sink.stats.failed == 2 and sink.stats.acked == 2 and len(peer.requests) == 3
    peer.script = [(301, {"Location": "https://siem.example.net/ingest"}, b"")]
    again = HttpSink(peer.url, "ndjson", name="siem")
    with pytest.raises(SinkError) as info:
        await again.send(fixture_records()[:1])
    await again.close()
    assert "the endpoint moved to https://siem.example.net/ingest" in str(info.value)


@pytest.mark.parametrize(("fmt", "answer", "problem"), [
    ("elasticsearch", (405, {}, b"Incorrect HTTP method for uri [/_bulk] and method [GET]"), ""),
    ("elasticsearch", (401, {}, b"missing authentication credentials"),
     "HTTP 401 Unauthorized from GET /ingest: the credentials were refused"),
    ("loki", (404, {}, b"404 page not found"), "HTTP 404 from GET /ingest: no loki endpoint at this URL"),
    ("ndjson", (404, {}, b"not here"), ""),  # a generic endpoint may take POST only there
    ("splunk_hec", (503, {}, b"Server is busy\nmore"), "HTTP 503 Service Unavailable from GET /ingest: Server is busy"),
])
def test_probe_says_what_check_should(peer: Peer, fmt: str, answer: tuple, problem: str):
    peer.script = [answer]
    sink = HttpSink(peer.url, fmt, token="s3cret", connect_timeout=2)
    assert sink.probe() == problem
    (req,) = peer.requests
    assert req["method"] == "GET" and req["headers"]["Authorization"].endswith("s3cret")


def test_probe_of_clickhouse_asks_for_the_table(clickhouse: int):
    ch_query(clickhouse, "CREATE TABLE IF NOT EXISTS probe_here (x UInt8) ENGINE = Memory")
    here = HttpSink(f"http://127.0.0.1:{clickhouse}/", "clickhouse", table="probe_here")
    gone = HttpSink(f"http://127.0.0.1:{clickhouse}/", "clickhouse", table="probe_gone")
    assert here.probe() == ""
    assert gone.probe() == "table probe_gone does not exist (conf/clickhouse.sql makes it)"
    closed = HttpSink(f"http://127.0.0.1:{free_port()}/", "clickhouse", table="t", connect_timeout=2)
    assert "refused" in closed.probe().lower()


async def test_connection_refused_until_the_peer_comes_up():
    port = free_port()
    sink = HttpSink(f"http://127.0.0.1:{port}/", "ndjson", connect_timeout=1)
    recs = fixture_records()[:4]
    try:
        await sink.send(recs)
    except SinkError as exc:
        assert "Connection refused" in str(exc)
    else:
        raise AssertionError("send to a closed port succeeded")
    task = asyncio.ensure_future(deliver(sink, recs, Backoff(base=0.05, cap=0.2)))
    await asyncio.sleep(0.5)
    assert not task.done()
    peer = Peer(port)
    try:
        assert await asyncio.wait_for(task, 10)
        assert [orjson.loads(x) for x in peer.requests[0]["body"].splitlines()] == recs
        assert sink.stats.failed >= 1
    finally:
        await sink.close()
        peer.close()


async def test_peer_closing_an_idle_keepalive_connection_is_survived(peer: Peer):
    peer.script = [(200, {"Connection": "close"}, b"ok")]
    sink = HttpSink(peer.url, "ndjson")
    recs = fixture_records()
    await sink.send(recs[:2])
    await sink.send(recs[2:4])
    await sink.send(recs[4:6])
    await sink.close()
    assert len(peer.requests) == 3
    assert len({r["client"] for r in peer.requests}) == 2  # reconnected once after the close


def _request_head(conn: socket.socket) -> tuple[int, bytes]:
    """An HTTP request's Content-Length and the part of its body read with its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(1024)
    head, body = data.split(b"\r\n\r\n", 1)
    return int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))), body


def _tls_answering_then_closing(srv: socket.socket, ctx: ssl.SSLContext, conns: int,
                                 bodies: list[bytes], closed: threading.Semaphore) -> None:
    """Answers one request per TLS connection, keeps it open a moment, then closes it
    without a close_notify (as servers ending an idle keep-alive connection may),
    releasing ``closed``."""
    srv.settimeout(10)
    for _ in range(conns):
        raw, _ = srv.accept()
        conn = ctx.wrap_socket(raw, server_side=True)
        conn.settimeout(10)
        n, body = _request_head(conn)
        while len(body) < n:
            body += conn.recv(65536)
        bodies.append(body)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.2)
        socket.socket.close(conn)  # the plain socket's close: no TLS goodbye
        raw.close()
        closed.release()


async def test_peer_closing_an_idle_tls_keepalive_connection_is_survived(tmp_path: Path):
    """Found by review: a TLS receiver that closed an idle kept-alive connection without
    a close_notify made the next batch fail ("EOF occurred in violation of protocol"),
    a warning and a backoff, where the same over plain HTTP reconnects at once."""
    ctx, tls_opts = server_tls(tmp_path)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)
    bodies: list[bytes] = []
    closed = threading.Semaphore(0)
    server = threading.Thread(target=_tls_answering_then_closing, args=(srv, ctx, 2, bodies, closed),
                              daemon=True)
    server.start()
    sink = HttpSink(f"https://127.0.0.1:{srv.getsockname()[1]}/", "ndjson", gzip=False, timeout=3, tls=tls_opts)
    recs = fixture_records()
    try:
        await sink.send(recs[:2])
        # the receiver closes the connection meanwhile (waited for: a fixed 0.6 s
        # assumed its thread had woken from its 0.2 s sleep by then)
        assert await asyncio.to_thread(closed.acquire, timeout=10)
        await sink.send(recs[2:4])  # old code: SinkError
        assert [[orjson.loads(x)["event_id"] for x in b.splitlines()] for b in bodies] == [
            [r["event_id"] for r in recs[:2]], [r["event_id"] for r in recs[2:4]]]
    finally:
        await sink.close()
        server.join(5)
        srv.close()


async def test_basic_auth_from_file_and_secrets_never_shown(peer: Peer, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture):
    secret = "s3cr3t-Passw0rd"
    pw = tmp_path / "pw"
    pw.write_text(secret + "\n")
    caplog.set_level(logging.DEBUG)
    sink = HttpSink(peer.url, "ndjson", user="shipper", password_file=str(pw))
    peer.script = [(500, {}, b"x"), (400, {}, b"bad")]
    errors: list[str] = []
    for _ in range(2):
        try:
            await sink.send(fixture_records()[:1])
        except (SinkError, PermanentError) as exc:
            errors.append(str(exc) + repr(exc) + getattr(exc, "response", ""))
    await sink.send(fixture_records()[:1])
    await sink.close()
    expected = "Basic " + base64.b64encode(f"shipper:{secret}".encode()).decode()
    assert all(r["headers"]["Authorization"] == expected for r in peer.requests)
    assert len(errors) == 2
    shown = " ".join(errors) + repr(sink) + caplog.text + str(sink.stats)
    assert secret not in shown and expected.split()[1] not in shown


async def test_bearer_token_from_env_and_splunk_scheme(peer: Peer, monkeypatch: pytest.MonkeyPatch):
    token = "tok-0123456789abcdef"
    monkeypatch.setenv("SHIPPER_TEST_TOKEN", token)
    sink = HttpSink(peer.url, "ndjson", token_env="SHIPPER_TEST_TOKEN")
    hec = HttpSink(peer.url, "splunk_hec", token_env="SHIPPER_TEST_TOKEN")
    await sink.send(fixture_records()[:1])
    await hec.send(fixture_records()[:1])
    await sink.close()
    await hec.close()
    assert peer.requests[0]["headers"]["Authorization"] == f"Bearer {token}"
    assert peer.requests[1]["headers"]["Authorization"] == f"Splunk {token}"
    assert orjson.loads(peer.requests[1]["body"].splitlines()[0])["sourcetype"] == "qmail"
    assert token not in repr(sink)


def test_secret_errors_do_not_show_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BAD_TOKEN", "abc\r\nInjected: yes")
    for kwargs, words in (({"env": "BAD_TOKEN"}, "line break"), ({"env": "UNSET_TOKEN_XYZ"}, "not set"),
                          ({"file": str(tmp_path / "missing")}, "cannot read")):
        try:
            read_secret(what="bearer token", **kwargs)
        except ValueError as exc:
            assert words in str(exc) and "abc" not in str(exc) and "Injected" not in str(exc)
        else:
            raise AssertionError(f"{kwargs} accepted")
    monkeypatch.setenv("GOOD_TOKEN", "  tok  \n")
    assert read_secret(env="GOOD_TOKEN", what="t") == "tok"


async def test_max_batch_bytes_splits_and_every_record_arrives_once(peer: Peer):
    recs = fixture_records()
    sink = HttpSink(peer.url, "ndjson", max_batch_bytes=3000)
    await sink.send(recs)
    await sink.close()
    assert len(peer.requests) > 5
    assert all(len(r["body"]) <= 3000 for r in peer.requests)
    got = [orjson.loads(x) for r in peer.requests for x in r["body"].splitlines()]
    assert got == recs


async def test_elasticsearch_bulk_item_errors(peer: Peer):
    recs = fixture_records()[:3]
    ids = [r["event_id"] for r in recs]

    def reply(*statuses: int) -> tuple[int, dict[str, str], bytes]:
        items = [{"create": {"_id": i, "status": s, **({"error": {"type": "t", "reason": "r"}}
                                                         if s >= 300 else {})}}
                 for i, s in zip(ids, statuses, strict=True)]
        return 200, {"Content-Type": "application/json"}, orjson.dumps(
            {"took": 1, "errors": any(s >= 300 for s in statuses), "items": items})

    # 404 (index_not_found) and 403 (a read-only block) items: retried as a whole
    # response's 404 and 403 are, not the stream dead-lettered (a fault hunt)
    peer.script = [reply(201, 429, 201), reply(404, 403, 404), reply(409, 201, 409), reply(201, 400, 201)]
    sink = HttpSink(peer.url, "elasticsearch", index="mail")
    assert await asyncio.wait_for(deliver(sink, recs, FAST), 10)  # 429 item → sent again
    assert sink.stats.failed == 2 and sink.stats.extra["duplicates"] == 2
    assert sink.stats.dead_lettered == 0
    actions = [orjson.loads(x) for x in peer.requests[2]["body"].splitlines()[::2]]
    assert [a["create"]["_id"] for a in actions] == ids
    try:
        await sink.send(recs)
    except PermanentError as exc:
        assert "1 of 3 bulk items refused: 400 t: r" in str(exc)
        assert exc.refused == [1]  # only it goes to the dead letter: the others are indexed
        assert sink.stats.acked == 3 + 2
    else:
        raise AssertionError("mapping error not permanent")
    # in parts (max_batch_records): the refused index counts in the whole batch
    peer.script = [reply(201, 201, 201)[:2] + (orjson.dumps({"errors": False, "items": []}),),
                   (200, {}, orjson.dumps({"errors": True, "items": [
                       {"create": {"_id": ids[2], "status": 400, "error": {"type": "mapper_parsing_exception",
                                                                         "reason": "r"}}}]}))]
    parted = HttpSink(peer.url, "elasticsearch", index="mail", max_batch_records=2)
    with pytest.raises(PermanentError) as info:
        await parted.send(recs)
    assert info.value.refused == [2]
    await parted.close()
    await sink.close()


async def test_otlp_partial_success_is_refused(peer: Peer):
    peer.script = [(200, {}, b'{"partialSuccess":{"rejectedLogRecords":"1","errorMessage":"too old"}}'),
                   (200, {}, b"{}")]
    sink = HttpSink(peer.url, "otlp")
    try:
        await sink.send(fixture_records()[:2])
    except PermanentError as exc:
        assert "rejected 1 of 2" in str(exc) and "too old" in str(exc)
        assert "it does not say which: the whole batch is kept, the others were taken" in str(exc)
    else:
        raise AssertionError("partial success taken as delivered")
    await sink.send(fixture_records()[:2])
    await sink.close()
    doc = orjson.loads(peer.requests[1]["body"])
    assert len(doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]) == 2


async def test_gelf_over_http(peer: Peer):
    recs = fixture_records()[:3]
    bulk = gelf_http_sink(peer.url, bulk=True, gzip=False, default_host="mx1")
    single = gelf_http_sink(peer.url, default_host="mx1")
    await bulk.send(recs)
    await single.send(recs)
    await bulk.close()
    await single.close()
    assert len(peer.requests) == 4
    msgs = [orjson.loads(x) for x in peer.requests[0]["body"].splitlines()]
    assert [m["short_message"] for m in msgs] == [r["message"] for r in recs]
    assert all(m["version"] == "1.1" and "_id" not in m for m in msgs)
    assert [orjson.loads(r["body"])["_event_id"] for r in peer.requests[1:]] == [r["event_id"] for r in recs]



@pytest.mark.parametrize("sink, bulk", [('type = "gelf"\ntransport = "http"\n', ""),
                                        ('type = "gelf"\ntransport = "http"\n', "bulk = true\n"),
                                        ('type = "http"\nformat = "gelf"\n', ""),
                                        ('type = "http"\nformat = "gelf"\n', "bulk = true\n")])
async def test_gelf_over_http_one_message_per_request_unless_bulk(peer: Peer, sink: str, bulk: str):
    # Graylog's GELF HTTP input keeps one message of a batch (or none) and answers 202
    # unless "Enable Bulk Receiving" is on: one per request by default, on one connection
    from shipper.assemble import build_sink
    from shipper.config import load_config_text

    cfg = load_config_text(f'[sources.q]\ntype = "multilog"\npaths = ["/l/*"]\n[sinks.g]\n{sink}url = "{peer.url}"\n'
                           f'{bulk}', check_files=False)
    assert cfg.sinks["g"].bulk is bool(bulk)
    s = build_sink(cfg.sinks["g"])
    recs = fixture_records()[:4]
    await s.send(recs)
    await s.close()
    bodies = [r["body"] for r in peer.requests]
    assert [orjson.loads(m)["_event_id"] for b in bodies for m in b.splitlines()] == [r["event_id"] for r in recs]
    assert len(bodies) == (1 if bulk else len(recs))
    assert len({r["client"] for r in peer.requests}) == 1  # keep-alive: one connection



async def test_gelf_over_http_takes_its_keys_from_the_config(peer: Peer):
    # headers, timeout and compression were accepted and then ignored: gzip always
    from shipper.assemble import build_sink
    from shipper.config import load_config_text

    base = f'[sources.q]\ntype = "multilog"\npaths = ["/l/*"]\n[sinks.g]\ntype = "gelf"\ntransport = "http"\n' \
           f'url = "{peer.url}"\n'
    plain = build_sink(load_config_text(base + 'compression = "none"\ntimeout = "7s"\n[sinks.g.headers]\n'
                                        'X-Tenant = "mail"\n', check_files=False).sinks["g"])
    assert (plain.gzip, plain.timeout) == (False, 7.0)
    await plain.send(fixture_records()[:1])
    await plain.close()
    (req,) = peer.requests
    assert req["headers"]["X-Tenant"] == "mail" and "Content-Encoding" not in req["headers"]
    assert build_sink(load_config_text(base, check_files=False).sinks["g"]).gzip is True


async def test_gelf_over_http_cuts_a_message_too_large_for_the_input_as_udp_does(peer: Peer):
    """A poison-record hunt: Graylog's GELF HTTP input takes 64 KiB (max_chunk_size) and
    answers 413 to more; one long line's record (message and raw, 60 kB each) went to
    the dead letter, while the UDP and TCP sinks deliver it cut (_truncated)."""
    recs = fixture_records()[:3]
    recs[1] = dict(recs[1], message="m" * 60_000, raw="r" * 60_000)
    peer.too_large = 65536
    sink = gelf_http_sink(peer.url, name="g")
    try:
        assert await asyncio.wait_for(deliver(sink, recs, FAST), 10)
    finally:
        await sink.close()
    got = [orjson.loads(r["body"]) for r in peer.requests if r["status"] == 202 or r["status"] == 200]
    assert [m["_event_id"] for m in got] == [r["event_id"] for r in recs]
    assert got[1]["_truncated"] == "full_message" and got[1]["short_message"] == recs[1]["message"]
    assert sink.stats.truncated == 1 and sink.stats.acked == 3


def test_url_credentials_are_used_and_hidden():
    sink = HttpSink("https://user:pa55word@example.invalid:8443/x?y=1", "ndjson")
    assert sink.url == "https://example.invalid:8443/x"
    assert "pa55word" not in repr(sink)


def make_cert(tmp_path: Path) -> tuple[str, str]:
    openssl = require_binary("openssl")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=siem.test",
                    "-addext", "subjectAltName=DNS:siem.test,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, TlsOptions]:
    """A receiver's TLS context, and the sink's options that trust it."""
    cert, key = make_cert(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx, TlsOptions(ca_file=cert, server_name="siem.test")


async def test_https_verifies_the_server_and_uses_server_name(tmp_path: Path):
    cert, key = make_cert(tmp_path)
    peer = Peer()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    peer.server.socket = ctx.wrap_socket(peer.server.socket, server_side=True)
    url = f"https://127.0.0.1:{peer.port}/ingest"
    recs = fixture_records()[:3]
    try:
        good = HttpSink(url, "ndjson", tls=TlsOptions(ca_file=cert, server_name="siem.test"))
        await good.send(recs)
        await good.close()
        assert [orjson.loads(x) for x in peer.requests[0]["body"].splitlines()] == recs
        wrong = HttpSink(url, "ndjson", tls=TlsOptions(ca_file=cert, server_name="other.test"))
        untrusted = HttpSink(url, "ndjson")  # system CAs
        for sink in (wrong, untrusted):
            try:
                await sink.send(recs)
            except SinkError as exc:
                assert "certificate verification failed" in str(exc)
            else:
                raise AssertionError("bad certificate accepted")
            await sink.close()
    finally:
        peer.close()


async def test_https_handshake_that_never_comes_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    try:
        sink = HttpSink(f"https://127.0.0.1:{silent.getsockname()[1]}/", "ndjson", connect_timeout=1,
                        tls=TlsOptions(verify=False, handshake_timeout=0.5))
        t0 = time.monotonic()
        try:
            await sink.send(fixture_records()[:1])
        except SinkError as exc:  # the other sinks' words (a black-box review: "timed out")
            assert str(exc).endswith(": TLS handshake timed out after 0.5s (peer accepted TCP but did "
                                     "not complete the handshake)"), str(exc)
        else:
            raise AssertionError("handshake with a silent peer succeeded")
        assert time.monotonic() - t0 < 3
        await sink.close()
    finally:
        silent.close()


@pytest.mark.parametrize("tls", [False, True])
async def test_closing_ends_a_request_a_slow_peer_holds(tmp_path, tls: bool):
    """Found by fault injection: a peer that answers after 60 s held the shipper's stop for
    the whole request timeout, past the drain (asyncio waits for its worker thread). Over
    TLS (found by review) with a body the peer has not taken: the wait for it to take
    the rest must end too."""
    import socket as socketlib
    srv = socketlib.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    held: list[socketlib.socket] = []
    ctx, tls_opts = server_tls(tmp_path) if tls else (None, None)

    def accept() -> None:  # (over TLS: the handshake, then nothing read)
        conn = srv.accept()[0]
        held.append(conn if ctx is None else ctx.wrap_socket(conn, server_side=True))

    loop = asyncio.get_running_loop()
    accepting = loop.run_in_executor(None, accept)
    sink = HttpSink(f"{'https' if tls else 'http'}://127.0.0.1:{srv.getsockname()[1]}/", "ndjson", name="slow",
                    timeout=60, gzip=False, tls=tls_opts)
    records = [dict(r, message="x" * 8000) for r in fixture_records()] if tls else fixture_records()[:2]
    send = asyncio.ensure_future(sink.send(records))
    try:
        await asyncio.wait_for(accepting, 5)
        await asyncio.sleep(0.3)  # the request is sent and waits for an answer
        t0 = time.monotonic()
        await asyncio.wait_for(sink.close(), 5)
        with pytest.raises(SinkError):
            await asyncio.wait_for(send, 5)  # the request ended too: its thread is free
        assert time.monotonic() - t0 < 3
    finally:
        for c in held:
            c.close()
        srv.close()


async def test_an_answer_trickling_in_is_given_up_after_the_timeout():
    """Found by a black-box review: a peer answering 200 with Content-Length 100000 and
    then a byte every 0.3 s held the sink on that batch for as long (a day), up, with
    nothing said: http.client's timeout is per receive. Now the answer must come at
    64 KiB per timeout."""
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):  # at most 30 s
            if stop.wait(0.3):
                return
            conn.sendall(b"x")

    await _given_up_in_time(trickle, "the answer came slower than 64 KiB in 1.5s")


async def _given_up_in_time(answer, said: str) -> None:
    """A sink (timeout 1.5 s) sending to a receiver that answers with ``answer``: its
    send fails saying ``said``, within 5 s."""
    srv, stop, thread = _hostile_answer(answer)
    sink = HttpSink(f"http://127.0.0.1:{srv.getsockname()[1]}/", "ndjson", timeout=1.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(SinkError, match=said):
            await sink.send(fixture_records()[:2])
        assert time.monotonic() - t0 < 5
    finally:
        stop.set()
        await sink.close()
        srv.close()
        thread.join(5)


def _hostile_answer(answer) -> tuple[socket.socket, threading.Event, threading.Thread]:
    """A receiver that reads one request and calls ``answer(conn, stop)``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    stop = threading.Event()

    def serve() -> None:
        conn = srv.accept()[0]
        try:
            conn.settimeout(5)
            got = b""
            while b"\r\n\r\n" not in got:
                got += conn.recv(65536)
            answer(conn, stop)
        except OSError:
            return
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return srv, stop, thread


async def test_headers_trickling_in_are_given_up_after_the_timeout():
    """A security review: a receiver sending its status line, then a byte of its headers
    every 0.3 s, held the sink for good, shown up with no error (the 64 KiB rule was the
    body's only)."""
    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):  # at most 30 s
            if stop.wait(0.3):
                return
            conn.sendall(b"X")

    await _given_up_in_time(trickle, "the answer's headers took longer than 1.5s")


async def test_a_huge_answer_is_read_no_further_than_a_cap(monkeypatch):
    """A security review: a receiver answering 200 with a 1.5 GB body took the daemon
    to 3 GB (the body was read whole); a chunked one without end, until killed."""
    import shipper.sinks.http as http_mod

    monkeypatch.setattr(http_mod, "MAX_ANSWER", 1 << 20)
    sent = []

    def flood(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        for _ in range(200):  # 12.5 MiB at most, never ended
            if stop.is_set():
                return
            conn.sendall(chunk)
            sent.append(len(chunk))

    srv, stop, thread = _hostile_answer(flood)
    sink = HttpSink(f"http://127.0.0.1:{srv.getsockname()[1]}/", "ndjson", timeout=5)
    try:
        got = []
        real = http_mod.read_answer
        monkeypatch.setattr(http_mod, "read_answer", lambda *a: got.append(real(*a)) or got[-1])
        await sink.send(fixture_records()[:2])  # a 200: delivered
        assert [len(d) for d in got] == [1 << 20]
        assert sink._conn is None, "the rest unread: the connection cannot serve another request"
    finally:
        stop.set()
        await sink.close()
        srv.close()
        thread.join(5)


async def test_a_part_refused_inside_a_413_split_does_not_take_the_others_with_it(peer: Peer):
    """The review found it: a 400 for the first half of a 413-split batch dead-lettered the
    whole batch, the second half never sent. (Now the 400's record only.)"""
    recs = [dict(r) for r in fixture_records()[:8]]
    recs[1]["message"] = "POISON"
    peer.script = [(413, {}, b"too large")]
    peer.poison = b"POISON"
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        with pytest.raises(PermanentError) as info:
            await deliver(sink, recs, FAST)
        assert info.value.refused == [1] and "400" in str(info.value)
        ok = [orjson.loads(ln)["event_id"] for r in peer.requests if r["status"] == 200
              for ln in r["body"].splitlines()]
        assert ok == [r["event_id"] for i, r in enumerate(recs) if i != 1]  # each once, in order
    finally:
        await sink.close()


async def test_a_refusal_cannot_forge_lines_of_our_log(peer: Peer, tmp_path: Path, caplog):
    """Found by fault injection: the peer's reply went raw into the dead-letter log line,
    so a receiver could write "INFO shipper: all records delivered" into our log."""
    from shipper.diskqueue import DiskQueue
    from shipper.follower import MultilogSource
    from shipper.parse import ParseOptions
    from shipper.pipeline import Pipeline, SinkRoute

    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "current").write_bytes(b"@400000005a49ba341eefa7a4 new msg 1\n")
    peer.script = [(400, {}, b'{"error":"bad row"}\nINFO shipper: sink h: all records delivered\n')]
    source = MultilogSource([str(logdir)], str(tmp_path / "ckpt.json"), start="all", poll_interval=0.1)
    sink = HttpSink(peer.url, "ndjson", name="h")
    route = SinkRoute("h", sink, DiskQueue.open(str(tmp_path / "buf")), batch_records=10)
    pipeline = Pipeline([(source, ParseOptions(host="mx1"))], [route])
    task = asyncio.create_task(pipeline.run())
    try:
        deadline = time.monotonic() + 20
        while sink.stats.dead_lettered < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await end_pipeline(pipeline, task)
        await sink.close()
    said = [r.getMessage() for r in caplog.records if "refused a batch" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "bad row" in said[0]


def _tsv(*cols: tuple[str, str]) -> bytes:
    return "".join(f"{n}\t{t}\t\t\t\t\t\n" for n, t in cols).encode()


async def test_clickhouse_describe_uses_the_sinks_headers_and_is_not_retried_every_batch(peer: Peer):
    # a user or database chosen by X-ClickHouse-* headers; a user who may only INSERT
    peer.script = [(403, {}, b"Code: 497. DB::Exception: not enough privileges"),
                   (200, {}, b""), (200, {}, b"")]
    sink = HttpSink(peer.url, "clickhouse", table="t", headers={"X-ClickHouse-Database": "mail"})
    try:
        await sink.send(fixture_records()[:2])
        await sink.send(fixture_records()[2:4])
    finally:
        await sink.close()
    assert [r.get("method", "POST") for r in peer.requests] == ["GET", "POST", "POST"]
    assert all(r["headers"].get("X-ClickHouse-Database") == "mail" for r in peer.requests)
    assert "input_format_skip_unknown_fields=0" in peer.requests[1]["path"]
    assert sink.stats.acked == 4


async def test_clickhouse_refusal_of_a_changed_table_is_sent_again_not_dead_lettered(peer: Peer):
    # modern servers answer an unknown field with 400: once the columns are read again
    # (verdict was dropped), the batch goes with verdict in `fields`
    cols = [("time", "DateTime"), ("event", "String"), ("message", "String"), ("fields", "String")]
    peer.script = [(200, {}, _tsv(*cols, ("pid", "Nullable(UInt32)"))),
                   (400, {}, b"Code: 117. DB::Exception: Unknown field found while parsing "
                             b"JSONEachRow format: pid"),
                   (200, {}, _tsv(*cols)),
                   (200, {}, b"")]
    sink = HttpSink(peer.url, "clickhouse", table="t")
    try:
        assert await asyncio.wait_for(deliver(sink, fixture_records()[:2], FAST), 10)
    finally:
        await sink.close()
    assert [r.get("method", "POST") for r in peer.requests] == ["GET", "POST", "GET", "POST"]
    last = [orjson.loads(x) for x in peer.requests[3]["body"].split(b"\n", 1)[1].splitlines()]
    assert all("pid" not in row and "pid" in orjson.loads(row["fields"]) for row in last)
    assert sink.stats.acked == 2 and sink.stats.failed == 1


def many_records(n: int, poison: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """``n`` records, each its own event id; those at ``poison`` hold POISON in their message."""
    base = fixture_records()
    out = []
    for i in range(n):
        rec = dict(base[i % len(base)])
        rec["event_id"], rec["offset"] = f"00112233aabbccdd-{i:x}", i * 100
        if i in poison:
            rec["message"] = f"POISON {i}"
        out.append(rec)
    return out


def _ids(body: bytes) -> list[str]:
    return [orjson.loads(ln)["event_id"] for ln in body.splitlines()]


async def test_clickhouse_a_value_the_table_refuses_goes_alone_to_the_dead_letter(clickhouse: int):
    """A poison-record hunt: ClickHouse 18.16 answers 500 for a value its table refuses
    (here a throwIf guarding a column: Code 395; a parse error is Code 27, also 500), and
    the sink retried the batch for ever: nothing more delivered, the buffer filling
    (500 records, 2 refused: 68 failed tries in 30 s, 0 rows)."""
    sql = (ROOT / "conf" / "clickhouse.sql").read_text().replace("qmail_log", "guarded")
    ch_query(clickhouse, "DROP TABLE IF EXISTS guarded")
    ch_query(clickhouse, sql)
    ch_query(clickhouse, "ALTER TABLE guarded ADD COLUMN guard UInt8 MATERIALIZED "
                         "throwIf(message LIKE '%POISON%')")
    recs = many_records(64, poison=(5, 40))
    sink = HttpSink(f"http://127.0.0.1:{clickhouse}/", "clickhouse", table="guarded", name="ch")
    try:
        with pytest.raises(PermanentError) as info:
            await asyncio.wait_for(deliver(sink, recs, FAST), 60)
    finally:
        await sink.close()
    assert info.value.refused == [5, 40] and "Code: 395" in str(info.value)
    assert sink.stats.failed == 0 and sink.stats.acked == 62
    rows = ch_query(clickhouse, "SELECT count(), uniqExact(event_id) FROM guarded FORMAT TSV").split()
    assert rows == ["62", "62"]  # every good record once


async def test_clickhouse_server_trouble_is_retried_and_a_query_it_cannot_run_refused_at_once(peer: Peer):
    """The records' fault is told by ClickHouse's code: a memory limit (241) or too many
    parts (252) in a 500 are the server's, retried; a syntax error (62) in a 400 refuses
    every record alike, so the batch is not halved down to each one."""
    peer.script = [(500, {}, b"Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded"),
                   (500, {}, b"Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are "
                             b"processing significantly slower than inserts."),
                   (200, {}, b""),
                   (400, {}, b"Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 1")]
    sink = HttpSink(peer.url, "clickhouse", table="t")
    sink._columns_at = time.monotonic()  # (no DESCRIBE: the script is the inserts')
    try:
        assert await asyncio.wait_for(deliver(sink, many_records(8), FAST), 10)
        assert len(peer.requests) == 3 and sink.stats.failed == 2
        with pytest.raises(PermanentError) as info:
            await deliver(sink, many_records(8), FAST)
    finally:
        await sink.close()
    assert info.value.refused is None and len(peer.requests) == 4


@pytest.mark.parametrize("quoted", ["Unknown field found while parsing JSONEachRow format",
                                    "Too many partitions for single INSERT block (more than 100)"])
async def test_clickhouse_a_refusal_quoting_a_record_is_told_by_its_code_not_the_quote(peer: Peer, quoted: str):
    """A review: a value refused by a CHECK constraint (Code 469, 500 as newer servers
    answer it) whose record held the words "Unknown field" (a HELO, a subject: text
    anyone can send) was taken for the table's unknown column, or with "Too many
    partitions ..." for a batch to send again in parts: a server fault either way,
    retried for good, the sink held, nothing more delivered. The message's own words say it."""
    recs = many_records(16)
    recs[9]["message"] = f"POISON: {quoted}"
    peer.poison = b"POISON"
    peer.refusal = (500, {}, b"Code: 469. DB::Exception: Constraint `short` for table default.t is violated "
                             b"at row 1. Expression: (message NOT LIKE '%POISON%'). Column values: message = "
                             b"'POISON: " + quoted.encode() + b"'. (VIOLATED_CONSTRAINT) (version 23.8.2.7)")
    sink = HttpSink(peer.url, "clickhouse", table="t")
    sink._columns_at = time.monotonic()  # (no DESCRIBE: the peer is the inserts')
    try:
        with pytest.raises(PermanentError) as info:
            await asyncio.wait_for(deliver(sink, recs, FAST), 10)
    finally:
        await sink.close()
    assert info.value.refused == [9] and sink.stats.failed == 0
    ok = [i for r in peer.requests if r.get("status") == 200 for i in _ids(r["body"].split(b"\n", 1)[1])]
    assert ok == [r["event_id"] for i, r in enumerate(recs) if i != 9]


async def test_clickhouse_a_batch_over_too_many_partitions_goes_in_smaller_parts(peer: Peer):
    """Newer servers refuse an insert whose rows span more than max_partitions_per_insert_block
    partitions (100: a replay into a table partitioned by day) with a 500, Code 252, and
    it was retried for ever, whole. Smaller parts go; no record is refused."""
    spread = (500, {}, b"Code: 252. DB::Exception: Too many partitions for single INSERT block "
                       b"(more than 100). (TOO_MANY_PARTS)")
    peer.answer = lambda body: spread if body.count(b"\n") > 1 + 6 else (200, {}, b"")
    recs = many_records(40)
    sink = HttpSink(peer.url, "clickhouse", table="t")
    sink._columns_at = time.monotonic()  # (no DESCRIBE)
    try:
        assert await asyncio.wait_for(deliver(sink, recs, FAST), 10)
    finally:
        await sink.close()
    ok = [orjson.loads(ln)["event_id"] for r in peer.requests if r["status"] == 200
          for ln in r["body"].splitlines()[1:]]
    assert ok == [r["event_id"] for r in recs] and sink.stats.failed == 0


async def test_a_400_for_one_record_dead_letters_that_record_only(peer: Peer):
    """A poison-record hunt: one record a receiver refuses (a generic ndjson endpoint's
    400) sent its whole batch to the dead letter: 500 of 500 for 1 bad."""
    recs = many_records(200, poison=(123,))
    peer.poison = b"POISON"
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        with pytest.raises(PermanentError) as info:
            await deliver(sink, recs, FAST)
    finally:
        await sink.close()
    assert info.value.refused == [123] and "400" in str(info.value)
    ok = [i for r in peer.requests if r["status"] == 200 for i in _ids(r["body"])]
    assert ok == [r["event_id"] for i, r in enumerate(recs) if i != 123]  # each once, in order
    assert len(peer.requests) <= 1 + 2 * 8  # two halves a step, log2(200) steps
    assert sink.stats.acked == 199 and sink.stats.sent == 200


async def test_halving_refusals_is_bounded_when_every_record_is_refused(peer: Peer):
    """Loki refuses every entry of a replay older than it keeps: halving down to each
    record would be 2n - 1 requests a batch; it stops at SPLIT_REQUESTS, and what is
    left refused goes to the dead letter as it is."""
    from shipper.sinks.http import SPLIT_REQUESTS

    recs = many_records(300)
    peer.script = [(400, {}, b"entry too old")] * 1000
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        with pytest.raises(PermanentError) as info:
            await deliver(sink, recs, FAST)
    finally:
        await sink.close()
    assert info.value.refused is None and "entry too old" in str(info.value)
    assert len(peer.requests) == 1 + SPLIT_REQUESTS
    assert sink.stats.acked == 0


async def test_a_part_delivered_is_not_sent_again_when_a_later_part_fails(peer: Peer):
    """Beware duplicates: ClickHouse keeps an insert that went. A 503 for the second half
    of a refused batch made the whole batch go again, the first half twice; and a stop
    meanwhile acknowledged nothing of it."""
    recs = many_records(8, poison=(5,))
    peer.poison = b"POISON"
    # the batch: 400; its first half: 200; its second half: 503, then as the poison says
    peer.script = [(400, {}, b"bad value"), (200, {}, b"ok"), (503, {}, b"busy")]
    sink = HttpSink(peer.url, "ndjson", name="siem")
    try:
        with pytest.raises(SinkError):
            await sink.send(recs)
        assert sink.answered(recs) == 4 and sink.answered(list(recs)) == 0
        with pytest.raises(PermanentError) as info:
            await sink.send(recs)
    finally:
        await sink.close()
    assert info.value.refused == [5]
    ok = [i for r in peer.requests if r["status"] == 200 for i in _ids(r["body"])]
    assert sorted(ok) == sorted(r["event_id"] for i, r in enumerate(recs) if i != 5)
    assert len(ok) == 7  # none twice
    assert sink.answered(recs) == 0  # settled: the pipeline took the outcome


@pytest.mark.parametrize("keeps_prefix", [True, False])
async def test_splunk_hec_refusing_an_event_dead_letters_it_alone_and_loses_none(
        peer: Peer, keeps_prefix: bool):
    """HEC names the first event it refuses (invalid-event-number): the whole batch went
    to the dead letter (460 of 500 never indexed). Now that event alone is refused and
    the others go again in one request. Whether HEC indexed the events before it is not
    known here (no Splunk): either way none is lost, and any kept twice has its id."""
    indexed: list[str] = []

    def hec(body: bytes) -> tuple[int, dict[str, str], bytes]:
        took = []
        for i, ln in enumerate(body.splitlines()):
            if b"POISON" in ln:
                if keeps_prefix:
                    indexed.extend(took)
                return 400, {}, orjson.dumps({"text": "Invalid data format", "code": 6,
                                              "invalid-event-number": i})
            took.append(orjson.loads(ln)["event"]["event_id"])
        indexed.extend(took)
        return 200, {}, b'{"text":"Success","code":0}'

    peer.answer = hec
    poison = (0, 37, 38, 99)
    recs = many_records(100, poison=poison)
    sink = HttpSink(peer.url, "splunk_hec", name="hec")
    try:
        with pytest.raises(PermanentError) as info:
            await deliver(sink, recs, FAST)
    finally:
        await sink.close()
    assert info.value.refused == list(poison) and "invalid-event-number" in info.value.response
    good = [r["event_id"] for i, r in enumerate(recs) if i not in poison]
    assert set(indexed) == set(good)
    if not keeps_prefix:
        assert indexed == good  # each once, in order
    assert len(peer.requests) == 5 and sink.stats.acked == 96


def _slow_reader(srv: socket.socket, rate: int, got: list[bytes], stop: threading.Event,
                 ctx: ssl.SSLContext | None = None) -> None:
    """One HTTP request read at ``rate`` bytes/s, then answered 200 (a receiver on a slow
    link, or one busy elsewhere); over TLS with ``ctx``."""
    srv.settimeout(10)
    conn, _ = srv.accept()
    if ctx is not None:
        conn = ctx.wrap_socket(conn, server_side=True)
    with conn:
        conn.settimeout(10)
        n, body = _request_head(conn)
        step = rate // 20
        while len(body) < n and not stop.is_set():
            body += conn.recv(min(step, n - len(body)))
            time.sleep(0.05)
        got.append(body)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.mark.parametrize("tls", [False, True])
async def test_a_receiver_reading_slower_than_the_timeout_still_gets_the_batch(tls: bool, tmp_path: Path):
    """Found by fault injection: a receiver taking 30 kB/s never got a 500 kB batch. One
    sendall had to be done within `timeout`, then the answer too, so every try timed
    out, the whole batch went again, and nothing was ever delivered (while a receiver
    that kept what it had read stored each try: duplicates). `timeout` is how long the
    peer may take nothing and say nothing. Over TLS (found by review): TLS 1.3's session
    tickets, unread in the socket after the handshake, were taken for the answer, and
    the slow receiver was not waited for."""
    ctx, tls_opts = server_tls(tmp_path) if tls else (None, None)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # (the kernel doubles it)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got: list[bytes] = []
    stop = threading.Event()
    reader = threading.Thread(target=_slow_reader, args=(srv, 400_000, got, stop, ctx), daemon=True)
    reader.start()
    recs = [dict(r, message="x" * 8000) for r in fixture_records()] * 4
    sink = HttpSink(f"{'https' if tls else 'http'}://127.0.0.1:{srv.getsockname()[1]}/", "ndjson", gzip=False,
                    timeout=0.5, tls=tls_opts)
    try:
        t0 = time.monotonic()
        await asyncio.wait_for(sink.send(recs), 20)  # old code: SinkError "timed out"
        took = time.monotonic() - t0
        assert len(got) == 1 and len(got[0].splitlines()) == len(recs) and len(got[0]) > 1_000_000
        assert took > 2.0  # it really was slower than the timeout, four times over
    finally:
        stop.set()
        await sink.close()
        reader.join(5)
        srv.close()


async def test_a_receiver_that_read_the_body_and_says_nothing_still_times_out():
    """Waiting while the peer reads is no waiting forever: once it has all and answers
    nothing, `timeout` ends the try."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    held: list[socket.socket] = []
    loop = asyncio.get_running_loop()
    accepting = loop.run_in_executor(None, lambda: held.append(srv.accept()[0]))
    sink = HttpSink(f"http://127.0.0.1:{srv.getsockname()[1]}/", "ndjson", timeout=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(SinkError, match="timed out"):
            await asyncio.wait_for(sink.send(fixture_records()[:2]), 10)
        assert 0.4 < time.monotonic() - t0 < 3
        await asyncio.wait_for(accepting, 5)
    finally:
        for c in held:
            c.close()
        await sink.close()
        srv.close()


@pytest.mark.parametrize(("answer", "said"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart",
     "the connection closed in the middle of the answer (4 bytes of its body came)"),
    (b"HTTTP/1.1 2OO OK\r\n\r\n", "not an HTTP answer: HTTTP/1.1 2OO OK\\r\\n"),
    (b"", "the receiver closed the connection without answering"),
])
async def test_a_broken_answer_is_said_as_what_the_receiver_did(answer: bytes, said: str):
    """Found by fault injection: a receiver closing mid-answer was logged as
    "IncompleteRead: IncompleteRead(0 bytes read)", http.client's class names."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = srv.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                # the whole body read before the answer: closing on unread bytes sends a
                # reset, and the client said "reset by peer" (a CI run, once)
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length: *(\d+)", head)
                for _ in range(1000):
                    if m is None or len(body) >= int(m.group(1)):
                        break
                    more = conn.recv(65536)
                    if not more:
                        break
                    body += more
                conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    sink = HttpSink(f"http://127.0.0.1:{srv.getsockname()[1]}/", "ndjson", timeout=5)
    try:
        with pytest.raises(SinkError) as info:
            await asyncio.wait_for(sink.send(fixture_records()[:1]), 10)
        assert str(info.value) == f"{sink.url}: {said}"
    finally:
        await sink.close()
        t.join(5)
        srv.close()


def _daemon_config(tmp_path: Path, logdir: Path, peer: Peer, more: str = "") -> Path:
    """The ops tests' daemon config (``logdir`` into a file sink) with an ndjson http
    sink ``h`` posting to ``peer`` (and ``more`` of its keys)."""
    from test_ops import _file_sink_config

    return _file_sink_config(tmp_path, logdir, tmp_path / "out.ndjson",
                             f'[sinks.h]\ntype = "http"\nurl = "{peer.url}"\nformat = "ndjson"\n{more}')


def test_records_trickling_in_go_in_batches_of_batch_max_age(peer: Peer, tmp_path: Path):
    """A fault hunt: batch_max_age was read and never used, so a trickle of lines went as
    one request each (838 ClickHouse inserts for 1,000 rows, 2,132 parts). Now a short
    batch waits up to batch_max_age (1 s by default for HTTP) to fill; a stop sends
    what waits at once."""

    from test_daemon import _stop
    from test_ops import _run_logged

    multilog = require_binary("multilog")
    logdir = tmp_path / "log"
    cfg = _daemon_config(tmp_path, logdir, peer)
    subprocess.run([multilog, "t", str(logdir)], input=b"", check=True, timeout=10)
    proc = _run_logged(cfg, tmp_path / "shipper.log")
    try:
        writer = subprocess.Popen([multilog, "t", str(logdir)], stdin=subprocess.PIPE)
        assert writer.stdin is not None
        t0 = time.monotonic()
        for i in range(60):  # 60 lines over 3 s
            writer.stdin.write(f"delivery {i}: success: did_0+0+1/ seq {i}\n".encode())
            writer.stdin.flush()
            time.sleep(max(0.0, t0 + (i + 1) * 0.05 - time.monotonic()))
        writer.stdin.close()
        writer.wait(10)
        time.sleep(0.3)
        _stop(proc)  # what still waits to fill is sent by the drain
    finally:
        if proc.poll() is None:
            proc.kill()
    seqs = [int(r["message"].rsplit(" ", 1)[1]) for q in peer.requests
            for r in map(orjson.loads, q["body"].splitlines())]
    assert sorted(set(seqs)) == list(range(60)), (tmp_path / "shipper.log").read_text()
    # about one request a second (3-4), not one a line; room for a loaded machine
    assert 2 <= len(peer.requests) <= 8, [len(q["body"].splitlines()) for q in peer.requests]
    gaps = [b["at"] - a["at"] for a, b in zip(peer.requests, peer.requests[1:], strict=False)]
    assert all(g > 0.5 for g in gaps[:-1]), gaps  # (the last: the stop's drain)


def test_a_dead_letter_that_cannot_be_written_keeps_the_batch_and_the_daemon(peer: Peer, tmp_path: Path):
    """A fault hunt: a refused batch (400) whose dead-letter file could not be written
    (a full disk; here a path under a regular file) ended the daemon, every sink and
    source with it, and at every restart again. Now the batch stays in the buffer, the
    sink is failing with the reason, and once the file can be written it goes there."""

    from conftest import wait_until
    from test_daemon import _stop
    from test_ops import _log_lines, _run_logged

    multilog = require_binary("multilog")
    logdir = tmp_path / "log"
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\n")
    dead = blocker / "dl.ndjson"
    cfg = _daemon_config(tmp_path, logdir, peer, f'batch_max_age = "0s"\ndead_letter = "{dead}"\n')
    peer.script = [(400, {}, b"no such column")] * 1000
    _log_lines(multilog, logdir, 0, 20)
    log = tmp_path / "shipper.log"
    proc = _run_logged(cfg, log)
    try:
        wait_until("the error", lambda: "cannot write the dead-letter file" in log.read_text())
        wait_until("a few tries", lambda: len(peer.requests) >= 3)
        assert proc.poll() is None, log.read_text()  # still running: the file sink too
        wait_until("the file sink", lambda: (tmp_path / "out.ndjson").exists()
                   and len((tmp_path / "out.ndjson").read_bytes().splitlines()) == 20)
        blocker.unlink()  # room again
        wait_until("the dead letter", lambda: dead.exists() and dead.stat().st_size > 0)
        _log_lines(multilog, logdir, 20, 5)
        wait_until("the next batch", lambda: len(dead.read_bytes().splitlines()) >= 2)
    finally:
        _stop(proc)
    said = log.read_text()
    assert said.count("cannot write the dead-letter file") == 1, said
    assert "the dead-letter file is written again" in said
    assert said.count("refused a batch of 20 records for good") == 1, said
    lines = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    seqs = sorted(int(r["message"].rsplit(" ", 1)[1]) for b in lines for r in b["records"])
    assert seqs == list(range(25))  # every refused record once


def test_the_columns_written_without_describe_are_conf_clickhouse_sqls(clickhouse: int):
    """A fault hunt: started while ClickHouse was down, the sink wrote its own list of
    columns, twelve short of conf/clickhouse.sql's (action, check, verdict, ...: NULL for
    every row of the next 5 minutes, found only in `fields`), and asked again only after
    COLUMNS_TTL. The default is the shipped table's, as ClickHouse describes it."""
    from shipper.encode import http_body
    from shipper.sinks import http as http_sink

    sql = (ROOT / "conf" / "clickhouse.sql").read_text().replace("qmail_log", "shipped_cols")
    ch_query(clickhouse, "DROP TABLE IF EXISTS shipped_cols")
    ch_query(clickhouse, sql)
    described = http_body.clickhouse_columns(ch_query(clickhouse, "DESCRIBE TABLE shipped_cols FORMAT TSV"))
    assert described == http_body.DEFAULT_COLUMNS
    # a server that does not answer: asked again after DESCRIBE_RETRY, not COLUMNS_TTL
    sink = HttpSink(f"http://127.0.0.1:{free_port()}/", "clickhouse", table="shipped_cols")
    sink._describe()
    assert sink._columns_at is not None
    waited = time.monotonic() - sink._columns_at
    assert waited >= http_sink.COLUMNS_TTL - http_sink.DESCRIBE_RETRY - 1


async def test_a_refusal_for_good_is_the_sinks_last_error(peer: Peer, tmp_path: Path):
    """A metrics audit: after 100 records refused with HTTP 400 (and dead-lettered), the
    sink's last error was still an older 503, and status showed nothing of it."""
    from conftest import await_until

    from shipper.memqueue import MemQueue
    from shipper.pipeline import Pipeline, SinkRoute

    # every record refused: the batch of 5, then its parts down to each record (2n - 1)
    peer.script = [(503, {"Retry-After": "0"}, b"busy")] + [(400, {}, b"no such column: x")] * 9
    sink = HttpSink(peer.url, "ndjson", name="h")
    route = SinkRoute("h", sink, MemQueue(max_bytes=1 << 20), batch_age=0.0,
                      dead_letter=DeadLetterFile(str(tmp_path / "dl.ndjson"), sink="h"), backoff=FAST)
    pipe = Pipeline([], [route])
    task = asyncio.get_running_loop().create_task(pipe.run())
    try:
        await pipe._append_to_queues(object(), None, [orjson.dumps(r) for r in fixture_records()[:5]],
                                     fixture_records()[:5], False)
        await await_until("the refusal", lambda: sink.stats.dead_lettered == 5)
        assert sink.stats.last_error.startswith("refused for good: ") and "400" in sink.stats.last_error
    finally:
        await end_pipeline(pipe, task)


async def test_a_batch_refused_in_part_is_not_delivered_again_while_its_dead_letter_fails(
        peer: Peer, tmp_path: Path):
    """A review of the halving: while the dead letter cannot be written (a full disk),
    the pipeline keeps the refused batch and sends it again, and every try delivered
    its good records again (199 good records went 26 times in 3 s, ClickHouse keeping
    each). The outcome of each record is kept: the good ones go once, the refused one
    goes to the dead letter once it can be written."""
    from conftest import await_until

    from shipper.memqueue import MemQueue
    from shipper.pipeline import Pipeline, SinkRoute

    recs = many_records(40, poison=(13,))
    peer.poison = b"POISON"
    (tmp_path / "full").write_text("")  # the dead letter's directory is a file: it fails
    sink = HttpSink(peer.url, "ndjson", name="h")
    route = SinkRoute("h", sink, MemQueue(max_bytes=1 << 20), batch_age=0.0,
                      dead_letter=DeadLetterFile(str(tmp_path / "full" / "dl.ndjson"), sink="h"),
                      backoff=FAST)
    pipe = Pipeline([], [route])
    task = asyncio.get_running_loop().create_task(pipe.run())
    try:
        await pipe._append_to_queues(object(), None, [orjson.dumps(r) for r in recs], recs, True)
        await await_until("three tries to keep the refused record", lambda: sink.stats.failed >= 3)
        (tmp_path / "full").unlink()
        (tmp_path / "full").mkdir()
        await await_until("the refused record in the dead letter", lambda: sink.stats.dead_lettered == 1)
    finally:
        await end_pipeline(pipe, task)
    ok = [i for r in peer.requests if r["status"] == 200 for i in _ids(r["body"])]
    assert sorted(ok) == sorted(r["event_id"] for i, r in enumerate(recs) if i != 13)  # each once
    assert sink.stats.acked == 39 and route.queue.depth == 0
    dead = orjson.loads((tmp_path / "full" / "dl.ndjson").read_bytes())
    assert [r["event_id"] for r in dead["records"]] == [recs[13]["event_id"]]


def test_an_elasticsearch_answer_cut_at_the_cap_is_sent_again_not_refused(monkeypatch):
    """A review: a bulk answer with item errors cut at MAX_ANSWER was "not JSON", so the
    whole batch went to the dead letter, retryable items too. Sent again now."""
    import shipper.sinks.http as http_mod

    monkeypatch.setattr(http_mod, "MAX_ANSWER", 1000)
    sink = HttpSink("http://127.0.0.1:9/", "elasticsearch")
    cut = (b'{"took":3,"errors":true,"items":[' + b'{"create":{"status":429}},' * 100)[:1000]
    with pytest.raises(SinkError, match="sending the batch again") as info:
        sink._check_2xx(fixture_records()[:2], cut)
    assert not isinstance(info.value, PermanentError)
