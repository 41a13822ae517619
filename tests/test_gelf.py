"""GELF 1.1 encoding, chunking and compression (shipper.encode.gelf): pure, no sockets."""

from __future__ import annotations

import gzip
import random
import re
import struct
import zlib
from typing import Any

import orjson
import pytest
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.encode import gelf
from shipper.parse import LineParser
from shipper.severity import severity

NAME_RE = re.compile(r"^[\w\.\-]*$", re.ASCII)


def fixture_records() -> list[dict[str, Any]]:
    lines = (FIXTURES / "sink_lines.log").read_bytes().splitlines()
    assert lines[0].startswith(b"# source:")
    parser = LineParser(source="/var/log/qmail/current", file_id="00112233aabbccdd")
    return [parser.parse(ln, i * 80).to_dict() for i, ln in enumerate(lines[1:])]


def reassemble(datagrams: list[bytes]) -> bytes:
    """What a GELF receiver does with the datagrams of one message (any order)."""
    if datagrams[0][:2] != gelf.MAGIC:
        assert len(datagrams) == 1
        return gelf.decompress(datagrams[0])
    parts: dict[int, bytes] = {}
    ids = set()
    for d in datagrams:
        assert d[:2] == b"\x1e\x0f"
        ids.add(d[2:10])
        seq, count = d[10], d[11]
        assert count == len(datagrams) and seq < count <= 128
        parts[seq] = d[12:]
    assert len(ids) == 1
    return gelf.decompress(b"".join(parts[i] for i in range(len(parts))))


# ------------------------------------------------------------------ mapping


def test_message_fields_from_a_qmail_send_delivery_line():
    recs = fixture_records()
    rec = next(r for r in recs if r["event"] == "delivery")
    msg = gelf.gelf_message(rec, "mx1")
    assert msg["version"] == "1.1"
    assert msg["host"] == "mx1"  # the line named no host
    assert msg["short_message"] == rec["message"]
    assert msg["short_message"].startswith("delivery 1356: success: 1.2.3.4_TLS")
    assert msg["full_message"] == rec["raw"]  # the line with its tai64nlocal stamp
    assert msg["full_message"].startswith("2018-01-01 20:51:03.714440500 delivery 1356")
    assert abs(msg["timestamp"] - 1514839863.7144405) < 1e-6
    assert msg["level"] == severity(rec) == 6
    assert msg["_time"] == "2018-01-01T20:51:03.714440500Z"  # exact nanoseconds kept
    assert msg["_event"] == "delivery"
    assert msg["_program"] == "qmail-send"
    assert msg["_delivery"] == 1356
    assert msg["_result"] == "success"
    assert msg["_smtp_code"] == 250
    assert msg["_relay_ip"] == "1.2.3.4"
    assert msg["_text"].endswith("Remote host said: 250 OK id=1eW731-0004n7-G7")
    assert msg["_event_id"] == rec["event_id"]
    assert msg["_offset"] == rec["offset"]
    assert msg["_flags"] == ""  # empty list joined
    assert "_pid" not in msg and "_host" not in msg  # null values are left out
    assert "_id" not in msg
    assert "_message" not in msg and "_raw" not in msg and "_time_unix_ns" not in msg
    # Graylog skips "_source" (its source is the host): the file read goes as _log_source
    assert msg["_log_source"] == rec["source"] == "/var/log/qmail/current" and "_source" not in msg


def test_fields_graylog_would_drop_are_renamed():
    # GelfCodec strips "_" and skips a field the message has: level (GELF's), source
    # (the host), ... were lost without a word
    rec = {"message": "m", "time_unix_ns": 1, "event": "tcp_error", "level": "warning",
           "source": "/var/log/qmail/smtpd/current", "facility": "x", "timestamp": "t", "id": 3,
           "msg": (1 << 63) + 5}
    msg = gelf.gelf_message(rec, "h")
    assert msg["level"] == 4 and msg["_log_level"] == "warning"
    assert msg["_log_source"] == "/var/log/qmail/smtpd/current" and msg["_log_facility"] == "x"
    assert msg["_log_timestamp"] == "t" and msg["_id_"] == 3
    assert msg["_msg"] == str((1 << 63) + 5)  # Graylog reads a signed long: no wrap
    assert not {"_level", "_source", "_facility", "_timestamp"} & set(msg)


def test_booleans_lists_and_host_from_the_line():
    recs = fixture_records()
    end = next(r for r in recs if r["event"] == "tcp_end" and r.get("parent"))
    msg = gelf.gelf_message(end, "mx1")
    assert msg["_parent"] == "true"
    assert msg["_conn_pid"] == 30553
    sys_rec = next(r for r in recs if r["program"] == "postfix/smtpd")
    msg = gelf.gelf_message(sys_rec, "mx1")
    assert msg["host"] == "xxx"  # from the syslog header
    assert msg["_pid"] == 14398
    msg = gelf.gelf_message(dict(sys_rec, flags=["redacted", "partial"]), "mx1")
    assert msg["_flags"] == "redacted,partial"


def test_full_message_absent_when_raw_equals_message():
    rec = {"message": "status: local 0/10", "raw": "status: local 0/10", "event": "status",
           "time_unix_ns": 1_500_000_000_123_456_789, "host": None}
    msg = gelf.gelf_message(rec, "h")
    assert "full_message" not in msg
    assert msg["level"] == 7  # status is debug
    assert msg["timestamp"] == 1_500_000_000.123456789


def test_field_names_sanitised_and_id_renamed():
    assert gelf.field_name("id") == "_id_"
    assert gelf.field_name("remote_ip") == "_remote_ip"
    assert gelf.field_name("a b/c") == "_a_b_c"
    assert gelf.field_name("é") == "__"
    assert gelf.field_name("") == "_empty"
    assert gelf.field_name("x.y-z") == "_x.y-z"
    msg = gelf.gelf_message({"message": "m", "id": 1, "a b": 2, "a_b": 3, "_id": 4}, "h")
    assert msg["_id_"] == 1
    assert msg["__id"] == 4
    assert {msg["_a_b"], msg["_a_b_2"]} == {2, 3}  # collision: both kept
    assert "_id" not in msg


def test_empty_message_is_never_empty_short_message():
    msg = gelf.gelf_message({"message": "", "raw": ""}, "h")
    assert msg["short_message"] == "-"


@pytest.mark.parametrize("blank", ["", " ", "\t \r\n", "\u3000\u2028"])
def test_blank_mandatory_fields_are_replaced(blank):
    # Graylog refuses a short_message or host that is empty or only whitespace
    msg = gelf.gelf_message({"message": blank, "raw": "@400000005a4a9b7c2b1e6b2c " + blank, "host": blank},
                            "mx1")
    assert msg["short_message"] == "-" and msg["host"] == "mx1"
    assert msg["full_message"] == "@400000005a4a9b7c2b1e6b2c " + blank  # the line as it was
    # a message cut to fit the chunks never ends blank either
    for rec in ({"message": " " * 4000 + "x" * 4000}, {"message": "m", "host": " " * 4000 + "h" * 4000}):
        payload, cut = gelf._fit(gelf.gelf_message(rec, "mx1"), "none", 1000)
        fitted = orjson.loads(payload)
        assert cut and fitted["short_message"].strip() and fitted["host"].strip(), fitted


# ------------------------------------------------------------ compression


def test_compression_round_trips():
    payload = orjson.dumps(gelf.gelf_message(fixture_records()[3], "h"))
    gz = gelf.compress(payload, "gzip")
    zl = gelf.compress(payload, "zlib")
    assert gz[:2] == b"\x1f\x8b" and gzip.decompress(gz) == payload
    assert zl[:1] == b"\x78" and zlib.decompress(zl) == payload
    assert gelf.compress(payload, "none") == payload
    for data in (gz, zl, payload):
        assert gelf.decompress(data) == payload
    try:
        gelf.compress(payload, "lz4")
    except ValueError as exc:
        assert "lz4" in str(exc)
    else:
        raise AssertionError("unknown compression accepted")


# --------------------------------------------------------------- chunking


def test_small_message_is_one_plain_datagram():
    grams, cut = gelf.encode_udp(fixture_records()[0], b"\x00" * 8, 1420, "gzip", "h")
    assert len(grams) == 1 and not cut
    assert grams[0][:2] == b"\x1f\x8b"
    assert orjson.loads(gzip.decompress(grams[0]))["short_message"].startswith("info msg 28857444")


def test_chunks_have_the_spec_header_and_reassemble_in_any_order():
    rec = dict(fixture_records()[0], message="x" * 5000, raw="y" * 5000)
    mid = bytes(range(1, 9))
    grams, cut = gelf.encode_udp(rec, mid, 600, "none", "h")
    assert not cut
    assert len(grams) == -(-len(orjson.dumps(gelf.gelf_message(rec, "h"))) // 588)
    for i, g in enumerate(grams):
        assert g[:2] == b"\x1e\x0f"
        assert g[2:10] == mid
        assert g[10] == i and g[11] == len(grams)
        assert len(g) <= 600
    shuffled = grams[:]
    random.Random(5).shuffle(shuffled)
    msg = orjson.loads(reassemble(shuffled))
    assert msg["short_message"] == "x" * 5000 and msg["full_message"] == "y" * 5000


def test_chunk_refuses_more_than_128_chunks():
    assert len(gelf.chunk(b"a" * (88 * 128), b"12345678", 100)) == 128
    try:
        gelf.chunk(b"a" * (88 * 128 + 1), b"12345678", 100)
    except ValueError as exc:
        assert "129 chunks" in str(exc)
    else:
        raise AssertionError("129 chunks accepted")


def test_oversized_message_is_cut_and_flagged_never_dropped():
    rng = random.Random(7)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(200_000))
    rec = dict(fixture_records()[0], message="M" + noise, raw="R" + noise[::-1])
    for compression in ("none", "gzip", "zlib"):
        grams, cut = gelf.encode_udp(rec, b"ABCDEFGH", 512, compression, "h")
        assert cut
        assert 1 < len(grams) <= 128
        msg = orjson.loads(reassemble(grams))
        assert "full_message" not in msg  # dropped first
        assert msg["_truncated"].split(",")[:2] == ["full_message", "short_message"]
        assert ("M" + noise).startswith(msg["short_message"])
        assert len(msg["short_message"]) > 1000
        assert msg["_event_id"] == rec["event_id"]  # the rest is intact
        assert msg["_msg"] == 28857444


def test_full_message_dropped_only_when_needed():
    rng = random.Random(3)
    noise = "".join(rng.choice("0123456789abcdef") for _ in range(70_000))
    rec = {"message": "short", "raw": "@4000 " + noise, "event": "unparsed"}
    grams, cut = gelf.encode_udp(rec, b"ABCDEFGH", 512, "none", "h")
    assert cut
    msg = orjson.loads(reassemble(grams))
    assert msg["short_message"] == "short" and msg["_truncated"] == "full_message"


def test_tcp_frames_are_nul_delimited_json():
    recs = fixture_records()[:5]
    data = gelf.encode_tcp(recs + [dict(recs[0], message="a\x00b")], "h")
    frames = data.split(b"\0")
    assert frames[-1] == b"" and len(frames) == 7
    decoded = [orjson.loads(f) for f in frames[:-1]]
    assert [m["short_message"] for m in decoded[:5]] == [r["message"] for r in recs]
    assert decoded[5]["short_message"] == "a\x00b"  # the NUL escaped inside JSON


# ---------------------------------------------------------------- hypothesis

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
values = st.one_of(json_scalars, st.lists(json_scalars, max_size=4),
                   st.dictionaries(st.text(max_size=5), json_scalars, max_size=3))


@settings(max_examples=300, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=12), values, max_size=12),
       message=st.text(max_size=300), chunk_size=st.integers(min_value=100, max_value=2000),
       compression=st.sampled_from(gelf.COMPRESSIONS))
def test_any_fields_make_a_valid_message(extra: dict[str, Any], message: str, chunk_size: int,
                                         compression: str) -> None:
    rec = {"message": message, "raw": "raw " + message, "time_unix_ns": 1_700_000_000_000_000_001}
    rec.update({k: v for k, v in extra.items() if k not in ("message", "raw", "time_unix_ns", "host")})
    msg = gelf.gelf_message(rec, "h")
    assert msg["version"] == "1.1" and msg["host"] == "h" and msg["short_message"]
    assert "_id" not in msg
    standard = {"version", "host", "short_message", "full_message", "timestamp", "level"}
    additional = [k for k in msg if k not in standard]
    for k in additional:
        assert k.startswith("_") and NAME_RE.match(k), k
        assert isinstance(msg[k], str | int | float) and not isinstance(msg[k], bool), (k, msg[k])
    kept = [k for k, v in rec.items() if v is not None and k not in ("message", "raw", "time_unix_ns")]
    assert len(additional) == len(kept)  # every non-null field made it, none merged away
    grams, cut = gelf.encode_udp(rec, struct.pack(">Q", 99), chunk_size, compression, "h")
    assert len(grams) <= 128 and all(len(g) <= chunk_size for g in grams)
    back = orjson.loads(reassemble(grams))
    if not cut:
        assert back == orjson.loads(orjson.dumps(msg))
    else:
        assert back["_truncated"]


def test_compress_min_sends_small_messages_plain_and_big_ones_compressed():
    recs = fixture_records()
    small, _ = gelf.encode_udp(recs[0], b"\x00" * 8, 1420, "gzip", "h", compress_min=1420)
    assert small[0][:1] == b"{" and orjson.loads(small[0])["short_message"] == recs[0]["message"]
    big_rec = dict(recs[0], message="z" * 3000)
    big, _ = gelf.encode_udp(big_rec, b"\x00" * 8, 1420, "gzip", "h", compress_min=1420)
    assert len(big) == 1 and big[0][:2] == b"\x1f\x8b"
    assert orjson.loads(gzip.decompress(big[0]))["short_message"] == "z" * 3000


def test_a_message_graylog_would_not_decompress_is_cut_to_fit():
    """A poison-record hunt: 20 MiB of one repeated byte gzip to 20 KB, 15 chunks, but
    Graylog drops a message whose JSON is over its decompress_size_limit (8 MiB) without
    a word: it went so. Cut now, as one over 128 chunks is."""
    rec = dict(fixture_records()[0], message="a" * (10 << 20), raw="b" * (10 << 20))
    grams, cut = gelf.encode_udp(rec, b"ABCDEFGH", 1420, "gzip", "h")
    assert cut and len(grams) <= gelf.MAX_CHUNKS
    plain = gelf.decompress(b"".join(g[12:] for g in grams) if len(grams) > 1 else grams[0])
    assert len(plain) <= gelf.MAX_DECOMPRESSED
    msg = orjson.loads(plain)
    assert msg["_truncated"] == "full_message,short_message" and len(msg["short_message"]) > 4 << 20
