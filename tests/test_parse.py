"""LineParser: one record per line whatever the bytes; flags; time inference; redaction plumbing."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.parse import LineParser, ParseOptions, dispatch
from shipper.record import Record


def test_every_line_gives_a_record_with_core_keys():
    p = LineParser(source="x", file_id="00112233aabbccdd")
    rec = p.parse(b"@4000000052fafd8d3298434c something nobody knows\n", 57)
    d = rec.to_dict()
    assert d["event"] == "unparsed"
    assert d["raw"] == "@4000000052fafd8d3298434c something nobody knows"
    assert d["message"] == "something nobody knows"
    assert d["time"] == "2014-02-12T04:50:11.848839500Z"
    assert d["time_unix_ns"] == 1392180611848839500
    assert d["event_id"] == "00112233aabbccdd-39"
    assert (d["source"], d["file_id"], d["offset"]) == ("x", "00112233aabbccdd", 57)
    assert d["flags"] == []


def test_invalid_utf8_keeps_exact_bytes():
    line = b"@4000000052fafd8d3298434c caf\xe9 \xff\xfe"
    rec = LineParser().parse(line)
    assert "invalid_utf8" in rec.flags
    assert base64.b64decode(rec.raw_base64) == line
    assert "\ufffd" in rec.raw


def test_nul_cr_and_8bit():
    rec = LineParser().parse(b"@4000000052fafd8d3298434c a\x00b\rc \xc3\xa9")
    assert rec.flags == ["nul_bytes"]
    assert rec.message == "a\x00b\rc é"
    assert b"\\u0000" in rec.to_json()


def test_long_line_is_cut_and_flagged():
    p = LineParser(ParseOptions(max_line=100))
    rec = p.parse(b"@4000000052fafd8d3298434c " + b"x" * 1000)
    assert "truncated" in rec.flags and len(rec.raw) == 100


def test_unstamped_lines_take_previous_time_or_ingest_time():
    p = LineParser()
    first = p.parse(b"no stamp here", now_ns=123)
    assert (first.time_ns, first.time_source, first.flags) == (123, "ingest", ["time_ingest"])
    p.parse(b"@4000000052fafd8d3298434c stamped")
    tail = p.parse(b"tail of a split line")
    assert (tail.time_ns, tail.time_source, tail.flags) == (1392180611848839500, "inferred", ["time_inferred"])


def test_bad_stamp_is_flagged_not_lost():
    rec = LineParser().parse(b"@4000000052fafd8dXXXXXXXX broken label", now_ns=1)
    assert "bad_stamp" in rec.flags and rec.raw == "@4000000052fafd8dXXXXXXXX broken label"


def test_parser_bug_still_yields_a_record(monkeypatch):
    import shipper.parse as parse_mod

    def boom(text, tag=None):
        raise RuntimeError("bug")

    monkeypatch.setattr(parse_mod, "dispatch", boom)
    rec = LineParser().parse(b"@4000000052fafd8d3298434c x", 3, now_ns=9)
    assert rec.event == "unparsed" and rec.fields["parse_error"] == "RuntimeError: bug"
    assert rec.raw == "@4000000052fafd8d3298434c x" and rec.offset == 3


def test_redaction_replaces_message_and_raw(monkeypatch):
    import shipper.parse as parse_mod

    monkeypatch.setitem(parse_mod.PREFIXED, "secretd", lambda t: ("login", {"_redact": "pass [REDACTED]"}))
    rec = LineParser().parse(b"@4000000052fafd8d3298434c secretd: pass hunter2")
    assert rec.message == "secretd: pass [REDACTED]" and "redacted" in rec.flags
    assert rec.raw == "@4000000052fafd8d3298434c secretd: pass [REDACTED]"
    assert "_redact" not in rec.fields
    kept = LineParser(ParseOptions(redact=False)).parse(b"@4000000052fafd8d3298434c secretd: pass hunter2")
    assert "hunter2" in kept.raw and "_redact" not in kept.fields


def test_dispatch_unknown_program_keeps_syslog_tag():
    program, event, fields, pid = dispatch("whatever text", "somed")
    assert (program, event, fields) == ("somed", "unparsed", {})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_one_record_per_line(lines):
    p = LineParser(ParseOptions(max_line=200))
    recs = p.parse_batch(lines, list(range(len(lines))), now_ns=1)
    assert len(recs) == len(lines)
    for rec, line in zip(recs, lines, strict=True):
        assert isinstance(rec, Record)
        assert isinstance(rec.event, str) and rec.time_ns is not None
        rec.to_json()  # always serialisable
        if rec.raw_base64 is not None:
            assert base64.b64decode(rec.raw_base64) == line.removesuffix(b"\n")[:200]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_one_record(text):
    rec = LineParser().parse(text.encode("utf-8", "surrogatepass"), now_ns=1)
    rec.to_json()
