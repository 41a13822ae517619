"""LineParser: one record per line whatever the bytes; flags; time inference; redaction plumbing."""

from __future__ import annotations

import base64
import pathlib
import re
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.parse import LineParser, ParseOptions, _decode_batch, dispatch
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


@pytest.mark.parametrize("text, program, event", [
    ("tcpserver: end 20001 status 0", "tcpserver", "tcp_end"),
    ("tcpserver:", "tcpserver", "unparsed"),  # the name alone: its parser sees ""
    (" new msg 1", None, "unparsed"),  # a leading blank: no first word
    ("new", None, "unparsed"),
    ("tcpserver:end 20001 status 0", "tcpserver", "tcp_end"),  # no blank: the NAME: pattern's
])
def test_dispatch_by_the_first_word(text, program, event):
    # the first word, up to the first space, picks the grammar: "NAME:" of a program
    # that names itself or qmail-send's words; the text after it is the parser's
    assert dispatch(text)[:2] == (program, event)


def test_a_prefixed_programs_redacted_text_keeps_its_name():
    # vpopmail 5.x's line (tests/test_parsers_misc.py): the parser sees the text after
    # "vchkpw: " and the dispatcher gives the name back to the redacted text
    text = "vchkpw: password fail hunter2 alice@example.org:192.0.2.7"
    _, _, fields, _ = dispatch(text)
    assert fields["_redact"].startswith("vchkpw: ") and "hunter2" not in fields["_redact"]


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


def test_program_hint_names_lines_that_name_no_program():
    p = LineParser(ParseOptions(program="qmail-send"))
    rec = p.parse(b"@4000000052fafd8d3298434c something nobody knows")
    assert (rec.program, rec.event) == ("qmail-send", "unparsed")
    # A line that names its program keeps it.
    rec = p.parse(b"@4000000052fafd8d3298434c tcpserver: status: 1/40")
    assert (rec.program, rec.event) == ("tcpserver", "tcp_status")
    # Without a hint the program stays unknown.
    assert LineParser().parse(b"@4000000052fafd8d3298434c something").program is None


def test_program_hint_selects_the_parser():
    # The text alone does not say it is tcpserver's; the hint does.
    line = b"@4000000052fafd8d3298434c status: 1/40"
    assert LineParser().parse(line).event == "unparsed"
    rec = LineParser(ParseOptions(program="tcpserver")).parse(line)
    assert (rec.program, rec.event, rec.fields["children"]) == ("tcpserver", "tcp_status", 1)
    batch = LineParser(ParseOptions(program="tcpserver")).parse_batch([line], [0], now_ns=1)
    assert batch[0].to_dict() == LineParser(ParseOptions(program="tcpserver")).parse(line, 0, 1).to_dict()


def _fixture_lines() -> list[bytes]:
    import pathlib
    out: list[bytes] = []
    for path in sorted((pathlib.Path(__file__).parent / "fixtures" / "samples").glob("*.txt")):
        out.extend(ln for ln in path.read_bytes().splitlines()[1:] if ln.strip())
    return out


_FIXTURE_LINES = _fixture_lines()
_LABELS = st.integers(0, 2**32 - 1).map(lambda s: b"@%016x%08x " % (2**62 + 10 + s, s % 10**9))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_LABELS, st.sampled_from(_FIXTURE_LINES) | st.binary(max_size=60)),
                min_size=1, max_size=30),
       st.booleans(), st.sampled_from([None, "tcpserver", "qmail-send"]))
def test_batch_fast_path_equals_line_by_line(items, redact, hint):
    """parse_batch takes a shortcut for all-multilog batches; it must give exactly
    what parse() gives line by line, whatever the lines."""
    lines = [label + text for label, text in items]
    opts = ParseOptions(max_line=300, redact=redact, program=hint)
    offsets = list(range(0, 100 * len(lines), 100))
    batch = LineParser(opts, "src", "ab").parse_batch(lines, offsets, now_ns=7)
    one = LineParser(opts, "src", "ab")
    expected = [one.parse(ln, off, 7) for ln, off in zip(lines, offsets, strict=True)]
    assert [r.to_dict() for r in batch] == [r.to_dict() for r in expected]
    # and the pipeline's form, built without a Record on the fast path, is the same
    dicts = LineParser(opts, "src", "ab").parse_batch_dicts(lines, offsets, now_ns=7)
    assert dicts == [r.to_dict() for r in expected]
    assert [list(d) for d in dicts] == [list(r.to_dict()) for r in expected]  # key order too



def test_batch_dicts_equal_records_without_offsets_or_file_id_and_across_seconds():
    """parse_batch_dicts builds the JSON form in its loop (event id from a per-batch
    head, time text from a per-second head): without offsets or a file id the event
    id is null, and a batch whose labels cross seconds (and years) gets each line's
    own time, as Record.to_dict gives them. Labels of bench/corpus.py's kind."""
    stamps = [(0x4000000069300000, 999_999_999), (0x4000000069300001, 0),
              (0x4000000069300001, 5), (0x400000005a49ba34, 519_948_196), (0x4000000069300000, 7)]
    lines = [b"@%016x%08x %s" % (s, n, t) for (s, n), t in zip(
        stamps, [b"new msg 1", b"tcpserver: status: 1/40", b"end msg 1", b"status: local 0/10 remote 1/20",
                 b"delivery 7: success: did_0+0+1/"], strict=True)]
    for file_id, offsets in (("ab", [0, 40, 80, 120, 0x1_0000_0000]), ("ab", None),
                             (None, [0, 1, 2, 3, 4]), (None, None)):
        dicts = LineParser(None, "src", file_id).parse_batch_dicts(lines, offsets, now_ns=7)
        recs = LineParser(None, "src", file_id).parse_batch(lines, offsets, now_ns=7)
        assert dicts == [r.to_dict() for r in recs]
        assert [list(d) for d in dicts] == [list(r.to_dict()) for r in recs]
    assert [d["time"] for d in dicts] == [
        # as TZ=UTC tai64nlocal prints them
        "2025-12-03T09:16:38.999999999Z", "2025-12-03T09:16:39.000000000Z",
        "2025-12-03T09:16:39.000000005Z", "2018-01-01T04:33:46.519948196Z",
        "2025-12-03T09:16:38.000000007Z"]
    ids = LineParser(None, "src", "ab").parse_batch_dicts(lines, [0, 40, 80, 120, 0x1_0000_0000])
    assert [d["event_id"] for d in ids] == ["ab-0", "ab-28", "ab-50", "ab-78", "ab-100000000"]


def test_a_repeated_status_text_gives_each_line_its_own_fields():
    """The batch loop keeps dispatch()'s result for texts a log repeats (qmail-send's
    and tcpserver's status): every line still gets its own fields dict, equal to what
    parse() gives, and a record changed downstream changes no later one."""
    texts = [b"status: local 1/10 remote 0/120", b"tcpserver: status: 3/40", b"new msg 7",
             b"status: local 1/10 remote 0/120", b"tcpserver: status: 3/40"]
    lines = [b"@4000000069300000%08x %s" % (i, t) for i, t in enumerate(texts)]
    for as_dicts in (False, True):
        parser = LineParser(None, "src", "ab")
        first = parser._parse_batch(lines[:2], [0, 60], 7, as_dicts)
        fields = first if as_dicts else [r.fields for r in first]
        fields[0]["local_active"] = 99  # a transform's change
        fields[1]["children"] = 99
        fields[0]["extra"] = fields[1]["extra"] = "x"
        again = parser._parse_batch(lines, list(range(0, 300, 60)), 7, as_dicts)
        one = LineParser(None, "src", "ab")
        expected = [one.parse(ln, off, 7) for ln, off in zip(lines, range(0, 300, 60), strict=True)]
        got = again if as_dicts else [r.to_dict() for r in again]
        assert got == [r.to_dict() for r in expected]
        assert got[3]["local_active"] == 1 and got[4]["children"] == 3
        assert "extra" not in got[0] and "extra" not in got[4]
        assert got[0]["local_active"] == 1 and got[3]["remote_max"] == 120
        assert (got[3] if as_dicts else again[3].fields) is not (got[0] if as_dicts else again[0].fields)


@pytest.mark.parametrize(("nanos", "text"), [
    (0, "000000000"), (99_999_999, "099999999"), (100_000_000, "100000000"),
    (999_999_999, "999999999")])
def test_the_time_text_has_nine_digits_of_nanoseconds(nanos, text):
    # the batch loop writes nanoseconds of nine digits without a format spec
    line = b"@4000000069300000%08x new msg 1" % nanos
    d = LineParser().parse_batch_dicts([line], [0])[0]
    assert d["time"] == f"2025-12-03T09:16:38.{text}Z" == LineParser().parse(line).to_dict()["time"]


_DIGITS = re.compile(rb"\d+")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FIXTURE_LINES),
                          st.integers(0, 2**96 - 1),
                          st.integers(0, 10**40)), min_size=1, max_size=20))
def test_any_numbers_and_labels_give_records_every_encoder_takes(items):
    """Real lines with their numbers replaced by numbers of any size and a label of
    any value (a corrupt file, a clock gone wrong): every record still serialises in
    every wire format, and the correlator takes them. One bad line must never
    stop the pipeline (a crash loop under supervise)."""
    from shipper.encode import gelf, http_body
    from shipper.encode.rfc5424 import Rfc3164Encoder, Rfc5424Encoder
    from shipper.track.correlator import Correlator

    lines = [b"@%024x %s" % (label, _DIGITS.sub(str(number).encode(), text))
             for text, label, number in items]
    for recs in (LineParser().parse_batch(lines, None, now_ns=1),
                 [LineParser().parse(ln, None, 1) for ln in lines]):
        dicts = [r.to_dict() for r in recs]
        for d in dicts:
            orjson.dumps(d)
            assert 0 <= d["time_unix_ns"] < 2**63
            gelf.encode_tcp([d])
        Rfc5424Encoder().encode_batch(dicts)
        Rfc3164Encoder().encode_batch(dicts)
        for fmt in http_body.FORMATS:
            http_body.encode(dicts, fmt, table="t", index="i")
        corr = Correlator()
        corr.feed(dicts)
        for s in corr.flush(2**62):
            orjson.dumps(s)


def test_dumps_all_never_raises():
    from shipper.record import dumps_all

    out = dumps_all([{"a": 1}, {"big": [2**70, {"x": -(2**80)}], "odd": {1, 2}}])
    assert orjson.loads(out[0]) == {"a": 1}
    assert orjson.loads(out[1])["big"] == [str(2**70), {"x": str(-(2**80))}]


def test_dumps_all_and_ndjson_all_are_orjson_record_by_record():
    from shipper.record import dumps_all, ndjson_all

    parser = LineParser(source="s", file_id="f")
    lines = _FIXTURE_LINES[:400]
    dicts = [r.to_dict() for r in parser.parse_batch(lines, list(range(len(lines))))]
    dicts.append({"odd": {1}, "big": 2**70})  # made safe, the rest unchanged
    expect = [orjson.dumps(d) for d in dicts[:-1]]
    got = dumps_all(dicts)
    assert got[:-1] == expect and all(type(b) is bytes for b in got)
    assert orjson.loads(got[-1])["big"] == str(2**70)
    nd = ndjson_all(dicts)
    assert nd.split(b"\n")[:-2] == expect and nd.endswith(b"\n")
    assert ndjson_all([]) == b"" and dumps_all([]) == []


def test_program_with_pid_but_no_grammar_is_named():
    rec = LineParser().parse(b"@4000000052fafd8d00000000 sslio[1234]: info: bytes in: 1023")
    assert (rec.program, rec.pid, rec.event) == ("sslio", 1234, "unparsed")
    assert LineParser().parse(b"@4000000052fafd8d00000000 foo: bar").program is None


def test_long_numbers_in_any_script_are_kept_as_text_on_both_paths():
    # int() takes other scripts' digits too: ٠١٢... (Arabic-Indic) must not make a >64-bit int
    arabic = "".join(chr(0x0660 + i % 10) for i in range(25))
    for num in (arabic, "1234567890" * 3):
        line = f"@4000000052fafd8d00000000 info msg 7: bytes {num} from <a@b> qp 5 uid 0".encode()
        for rec in (LineParser().parse(line), LineParser().parse_batch([line], [0])[0]):
            assert rec.event == "info_msg" and rec.fields["msg"] == 7
            # size stays an int in every record (one type a field, as a SIEM maps it)
            assert "size" not in rec.fields and rec.fields["size_text"] == str(int(num))
            assert "malformed" in rec.flags
            orjson.dumps(rec.to_dict())


@pytest.mark.parametrize("num, moved", [
    (str((1 << 63) - 1), False),  # the largest Elasticsearch long
    (str(1 << 63), True),  # fits orjson's u64, not a signed long
    (str((1 << 64) - 1), True),
    ("9" * 30, True),
])
def test_numbers_beyond_signed_64_bits_leave_their_int_field(num: str, moved: bool):
    line = f"@4000000052fafd8d00000000 info msg {num}: bytes 5 from <a@b> qp {num} uid 0".encode()
    for rec in (LineParser().parse(line), LineParser().parse_batch([line, line], [0, 1])[1]):
        if moved:
            assert rec.fields["msg_text"] == num and rec.fields["qp_text"] == num
            assert "msg" not in rec.fields and "qp" not in rec.fields and rec.flags == ["malformed"]
        else:
            assert rec.fields["msg"] == int(num) and not rec.flags


def test_a_label_with_a_run_of_digits_keeps_its_batch_on_the_fast_path():
    # 2026's labels are "4000000069…": 1.5 % of them have 19 digits in a row, which
    # sent nearly every batch of a live log down the per-line path (2.6 x the time)
    lines = [b"@4000000069123456789012345 tcpserver: status: 1/40"[:25] + b" tcpserver: status: 1/40",
             b"@400000006912345612345678 tcpserver: status: 2/40"]
    assert _decode_batch(lines, 65536) is not None
    assert _decode_batch(lines + [b"@400000006912345612345678 x 1234567890123456789"],
                                   65536) is None
    # a line of non-ASCII text (another script's digits count too) keeps it there as well
    utf8 = ["@400000006912345612345678 vchkpw-pop3: login success müller@example.org:192.0.2.7".encode()]
    assert _decode_batch(lines + utf8, 65536) is not None
    arabic = "".join(chr(0x0660 + i % 10) for i in range(19))
    assert _decode_batch(lines + [f"@400000006912345612345678 x {arabic}".encode()], 65536) is None


_GOOD = [b"@400000006930000a2faf0ac4 tcpserver: status: 1/40", b"@400000006930000A2FAF0AC4 new msg 1"]


@pytest.mark.parametrize("bad", [
    b"@400000006930000a2faf0ac",  # 23 hex digits: a line shorter than a label
    b"@40000000693000@a2faf0ac4 new msg 1",  # "@" inside
    b"@4000000069300 0a2faf0ac4 new msg 1",  # a blank inside (bytes.fromhex would skip it)
    b"@400000006930000a2faf0acg new msg 1",  # not hex
    b"x400000006930000a2faf0ac4 new msg 1",  # no "@"
    b"400000006930000a2faf0ac4@ new msg 1",  # "@" after the label
    b"new msg 1 @400000006930000a2faf0ac4",
    b"@400000006930000a2faf0ac4",  # no blank after the label (multilog always writes one)
    b"@400000006930000a2faf0ac4\tnew msg 1",
    b"",
])
def test_a_batch_takes_the_fast_path_only_when_every_line_starts_with_a_label(bad):
    # the labels of a batch are checked all at once (first 25 bytes of each line, joined):
    # one line without a label, anywhere in the batch, sends it down the per-line path
    assert _decode_batch(_GOOD, 65536) is not None
    for lines in ([bad, *_GOOD], [_GOOD[0], bad, _GOOD[1]], [*_GOOD, bad]):
        assert _decode_batch(lines, 65536) is None
        batch = LineParser(None, "src", "ab").parse_batch(lines, [0, 100, 200], now_ns=7)
        one = LineParser(None, "src", "ab")
        assert [r.to_dict() for r in batch] == [one.parse(ln, off, 7).to_dict()
                                               for ln, off in zip(lines, [0, 100, 200], strict=True)]


def test_s6_logs_second_stamp_is_found_in_a_batch_of_plain_lines():
    # s6-log with both t and T (stamps.py): "@<tai64n> YYYY-MM-DD HH:MM:SS.nnnnnnnnn  text".
    # A batch is searched for such lines only when it holds two blanks in a row
    # (as s6-log writes it: both stamps of one instant, the same nanoseconds)
    s6 = b"@400000006930000a2faf0ac4 2025-12-03 10:00:00.800000708  new msg 1"
    lines = [*_GOOD, s6, b"@400000006930000a2faf0ac4 end msg 1"]
    decoded = _decode_batch(lines, 65536)
    assert decoded is not None and decoded[2] is False
    assert _decode_batch(_GOOD, 65536)[2] is True
    offsets = [0, 100, 200, 300]
    batch = LineParser(None, "src", "ab").parse_batch(lines, offsets, now_ns=7)
    one = LineParser(None, "src", "ab")
    assert [r.to_dict() for r in batch] == [one.parse(ln, off, 7).to_dict()
                                           for ln, off in zip(lines, offsets, strict=True)]
    assert batch[2].message == "new msg 1" and batch[2].event == "new_msg"
    # s6-log's label is true TAI (27 leap seconds then): the two stamps agree
    assert batch[2].time_source == "tai64n_tai" and batch[3].time_source == "tai64n"
    assert batch[2].time_ns == batch[3].time_ns - 27 * 10**9


@pytest.mark.parametrize("line, program, event", [
    # A unit running "tcpserver ... recordio qmail-smtpd" under journald/syslog tags its
    # children's lines with the parent: the text says whose they are (found in review:
    # these secrets were shipped in clear).
    (b"Jan  1 00:00:00 mx tcpserver[1234]: 4357 < PASS hunter2", "recordio", "io_client"),
    (b"Jan  1 00:00:00 mx tcpserver[1234]: 4357 < AUTH PLAIN AHVzZXIAc2VjcmV0cGFzcw==",
     "recordio", "io_client"),
    (b"2023-06-23T14:26:29.324152+02:00 mx tcpserver[1234]: 4357 < PASS hunter2", "recordio",
     "io_client"),
    (b"Jan  1 00:00:00 mx qmail-smtpd[1234]: 4357 < PASS hunter2", "recordio", "io_client"),
    (b"Jan  1 00:00:00 mx tcpserver[1234]: rblsmtpd: 1.2.3.4 pid 4357: 451 listed", "rblsmtpd",
     "rbl_block"),
    (b"Jan  1 00:00:00 mx tcpserver[1234]: qmail-smtpd: pid 4357 Reject::RCPT::Failed_Rcptto "
     b"P:ESMTP S:1.2.3.4:h H:h F:a@b T:c@d", "qmail-smtpd", "smtp_decision"),
    (b"Jan  1 00:00:00 mx qmail-smtpd: tcpserver: pid 4357 from 1.2.3.4", "tcpserver", "tcp_pid"),
    (b"Jan  1 00:00:00 mx tcpserver[1234]: ok 4357 mx:1.2.3.4:25 :5.6.7.8::1234", "tcpserver", "tcp_ok"),
    (b"Jan  1 00:00:00 mx tcpserver[1234]: something else", "tcpserver", "unparsed"),
])
def test_a_syslog_tag_naming_the_parent_does_not_hide_the_line(line, program, event):
    for rec in (LineParser().parse(line), LineParser().parse_batch([line], [0])[0]):
        assert (rec.program, rec.event) == (program, event)
        assert b"hunter2" not in line or "hunter2" not in rec.raw + rec.message + str(rec.fields)
        assert b"c2VjcmV0" not in line or "c2VjcmV0" not in rec.raw + rec.message + str(rec.fields)


@pytest.mark.parametrize("line", [
    b"Jun 23 14:26:29 host qmail/smtpd[123]: 4357 < PASS hunter2 ",
    b"Jun 23 14:26:29 host qmail/smtpd[123]: 4357 < AUTH PLAIN AGFsaWNlAGh1bnRlcjI= ",
    b"Jun 23 14:26:29 host mail/vpopmail[123]: vchkpw-pop3: password fail (pass: 'hunter2') u@d:1.2.3.4",
    b"<22>1 2023-06-23T14:26:29Z host smtp/qmail 123 - - 4357 < PASS hunter2 ",
    b'{"SYSLOG_IDENTIFIER": "qmail-smtpd/main", "MESSAGE": "4357 < PASS hunter2 "}',
])
def test_secrets_behind_a_tag_taken_for_postfixs_are_redacted(line):
    # a tag with "/" goes to the Postfix grammar, which knows no secrets: recordio's
    # and vchkpw's text is theirs whatever the tag (found in a review)
    rec = LineParser().parse(line)
    assert rec.program in ("recordio", "vpopmail") and rec.event in ("io_client", "pop_auth")
    assert "hunter2" not in rec.raw + rec.message and "AGFsaWNlAGh1bnRlcjI=" not in rec.raw
    assert "redacted" in rec.flags
    # Postfix's own lines behind such tags are still Postfix's
    rec = LineParser().parse(b"Jun 23 14:26:29 host postfix-out/smtp[9]: 42EA826EA2: to=<a@b.example>, "
                             b"relay=none, delay=0.1, delays=0/0/0/0, dsn=4.4.1, status=deferred (x)")
    assert (rec.program, rec.event) == ("postfix-out/smtp", "delivery")


def test_given_year_turns_with_the_dates():
    # pmg-log-tracker's timechange input: December 31 goes on into January 1
    path = pathlib.Path(__file__).parent / "fixtures" / "pmg-log-tracker" / "test_input_timechange"
    lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
    parser = LineParser(ParseOptions(syslog_year=2020, local_tz=False))
    recs = [parser.parse(ln) for ln in lines]
    years = [time.gmtime(r.time_ns // 1_000_000_000).tm_year for r in recs]
    times = [r.time_ns for r in recs]
    start = next(i for i, ln in enumerate(lines) if ln.startswith(b"Dec 31 23:59:59"))
    # ... with lines of several processes going back and forth around midnight
    assert set(years[:start]) == {2020}
    assert all(t in (1609459199 * 10**9, 1609459200 * 10**9) for t in times[start:])
    assert {y for y, ln in zip(years, lines, strict=True) if ln.startswith(b"Jan")} == {2021}
    assert {y for y, ln in zip(years, lines, strict=True) if ln.startswith(b"Dec")} == {2020}
    # a step back of minutes or hours is not a new year
    parser = LineParser(ParseOptions(syslog_year=2020, local_tz=False))
    a = parser.parse(b"Mar 28 03:00:00 mx qmail: 1585364400.0 x")  # not a BSD-stamped time
    b = parser.parse(b"Mar 28 02:00:00 mx postfix/qmgr[1]: 42EA826EA2: removed")
    assert a.time_ns is not None and time.gmtime(b.time_ns // 1_000_000_000).tm_year == 2020


def test_no_parser_field_takes_a_core_key():
    """A record's event fields go after its core keys (record_dict): a field named
    like one would replace the core value. Every fixture line, every parser."""
    from shipper.record import record_dict

    core = set(record_dict(0, "tai64n", None, "e", "", "", {}, raw_base64="x"))
    p = LineParser()
    for line in _FIXTURE_LINES:
        rec = p.parse(line)
        assert not core & set(rec.fields), (line, core & set(rec.fields))


def test_a_crlf_line_keeps_its_cr_in_raw_only():
    """A log with CRLF endings (copied from Windows; recordio's SMTP text): the message and
    the fields go without the \\r, raw keeps the line as it was, a redaction keeps the label."""
    lines = [b"@400000005a49ba341eefa7a4 new msg 1\r\n",
             b"@400000005a49ba341eefa7a5 4242 > 250 ok 1506341999 qp 31835\r\n",
             b"@400000005a49ba341eefa7a6 4242 < PASS secret\r\n"]
    recs = LineParser().parse_batch(lines, [0, 40, 100])
    assert [r.message for r in recs] == ["new msg 1", "4242 > 250 ok 1506341999 qp 31835",
                                      "4242 < PASS [REDACTED]"]
    assert [r.raw for r in recs] == [ln.decode().rstrip("\n") for ln in lines[:2]] + [
        "@400000005a49ba341eefa7a6 4242 < PASS [REDACTED]\r"]
    assert recs[0].event == "new_msg" and recs[1].fields["qp"] == 31835


def test_a_pid_beyond_ints_digit_limit_keeps_the_lines_time():
    """Found by the review: `NAME[<5,000 digits>]: ...` made int() raise in dispatch,
    and the whole line took the error path: no time of its own (ingest time)."""
    line = b"@400000005a4a8d2b0a8c2f6c jgreylist[" + b"9" * 5000 + b"]: 192.0.2.7: GREY first time"
    for rec in (LineParser().parse(line), LineParser().parse_batch([line])[0]):
        assert rec.time_source == "tai64n" and rec.time_ns == 1514835233176959340
        assert rec.event == "unparsed"


def test_a_date_in_a_multilog_line_is_no_s6_log_stamp_unless_its_nanoseconds_are_the_labels() -> None:
    # stamps.split_envelope had the rule (a review of this session); LineParser's own
    # multilog path had a copy without it: a tai64nlocal'd line logged again by multilog
    # lost its date and was put 27 s early as true TAI
    p = LineParser()
    again = p.parse(b"@400000006b0d2db30b262eb7 2026-11-30 08:02:20.123456789  new msg 5")
    assert again.time_source == "tai64n" and again.message.startswith("2026-11-30 08:02:20.123456789")
    s6 = p.parse(b"@400000006b0d2db30b262eb7 2026-11-30 08:02:22.187051703  new msg 6")
    assert (s6.time_source, s6.message, s6.event) == ("tai64n_tai", "new msg 6", "new_msg")


@pytest.mark.parametrize(("line", "secret", "program", "event", "fields"), [
    # rsyslog's RepeatedMsgReduction (on in Ubuntu's rsyslog.conf): a password guesser's
    # line repeated; the wrapper hid the secret from the redaction (found by a review)
    (b"Mar  3 10:00:06 mx1 vpopmail[777]: message repeated 2 times: [ vchkpw-pop3: password fail "
     b"(pass: 'Hunter2!') bob@example.com:203.0.113.50]", "Hunter2!", "vpopmail", "pop_auth",
     {"result": "failure", "auth_user": "bob@example.com", "remote_ip": "203.0.113.50", "repeated": 2}),
    (b"Mar  3 10:00:07 mx1 checkpassword-pam[55]: message repeated 2 times: [ Password 'Hunter3' read "
     b"successfully]", "Hunter3", "checkpassword-pam", "checkpassword_debug", {"repeated": 2}),
    (b"Mar  3 10:00:08 mx1 qmail/smtpd[9]: message repeated 3 times: [ 4357 < PASS hunter4 ]", "hunter4",
     "recordio", "io_client", {"repeated": 3}),
    (b"<22>1 2024-03-03T10:00:00Z mx1 dovecot - - - message repeated 5 times: [ imap-login: Disconnected "
     b"(auth failed, 1 attempts in 2 secs): user=<admin>, method=PLAIN, rip=203.0.113.50, lip=192.0.2.1, "
     b"session=<abc>]", None, "dovecot", "pop_auth",
     {"result": "failure", "auth_user": "admin", "remote_ip": "203.0.113.50", "repeated": 5}),
    # a public Ubuntu syslog (code-index id 57071881654): rsyslog's own form, any program
    (b"Sep 10 22:41:37 TheMothership whoopsie[1036]: message repeated 3 times: [ offline]", None,
     "whoopsie", "unparsed", {"repeated": 3}),
    # sysklogd's (and busybox's, BSD's) line for the line before it, and macOS's form
    (b"Mar  3 10:00:09 mx1 last message repeated 5 times", None, None, "repeated", {"repeated": 5}),
    (b"Mar  3 10:00:09 mx1 --- last message repeated 1 time ---", None, None, "repeated", {"repeated": 1}),
    # not rsyslog's wrapper: left as it is; nested: one wrapping taken, never recursion
    (b"Mar  3 10:00:09 mx1 app[1]: message repeated twice", None, "app", "unparsed", {}),
    (b"Mar  3 10:00:09 mx1 app[1]: " + b"message repeated 2 times: [ " * 1000 + b"x" + b"]" * 1000, None,
     "app", "unparsed", {}),
])
def test_syslogs_repeated_lines_are_the_lines_they_stand_for(line, secret, program, event, fields):
    for rec in (LineParser(ParseOptions(syslog_year=2024)).parse(line),
                LineParser(ParseOptions(syslog_year=2024)).parse_batch([line], [0])[0]):
        assert (rec.program, rec.event) == (program, event)
        assert {k: rec.fields.get(k) for k in fields} == fields
        if "repeated" not in fields:
            assert "repeated" not in rec.fields
        if secret is not None:
            assert secret not in rec.raw + rec.message and "redacted" in rec.flags
            assert rec.message.startswith("message repeated ") and rec.message.endswith("]")
            assert rec.raw.endswith(rec.message)


def test_a_float_its_digits_overflow_leaves_its_field_flagged():
    """A fault hunt: Postfix's delay= of 400 digits became float('inf'), which every
    JSON encoder writes as null: a null delay, unflagged."""
    line = ("Jan 24 06:32:47 mx postfix/smtp[8377]: 4F1B23A0C9: to=<bob@example.com>, "
            f"relay=mx.example.com[192.0.2.7]:25, delay={'9' * 400}, delays=0/0/0/0, dsn=2.0.0, "
            "status=sent (250 ok)").encode()
    for rec in (LineParser().parse(line), LineParser().parse_batch([line], [0])[0]):
        assert rec.event == "delivery" and "delay" not in rec.fields
        assert rec.fields["delay_text"] == "inf" and "malformed" in rec.flags
        assert "delay" not in orjson.loads(orjson.dumps(rec.to_dict()))


def test_a_line_whose_parser_fails_ships_no_secret(monkeypatch) -> None:
    """Found by a review: when a parser raised, the line went out whole as ``unparsed``,
    with the password its parser would have taken out (POP3's PASS through recordio,
    courier's DEBUG_LOGIN, vchkpw); cut after the word that may introduce one."""
    import shipper.parse as parse_mod

    def broken(*args, **kwargs):
        raise ValueError("a parser bug")

    monkeypatch.setattr(parse_mod, "dispatch", broken)
    monkeypatch.setattr(parse_mod, "_with_secrets", broken)
    for line, kept in ((b"@400000006b02a2aa2bcb057c 4711 < PASS hunter2\r ", "4711 < PASS [REDACTED]"),
                       (b"@400000006b02a2aa2bcb057c imapd: LOGIN: ip=[::1], password=hunter2",
                        "password= [REDACTED]"),
                       (b"@400000006b02a2aa2bcb057c new msg 1", "new msg 1")):
        rec = LineParser(ParseOptions()).parse(line)
        assert rec.event == "unparsed" and "parse_error" in rec.fields, rec
        assert "hunter2" not in rec.message and "hunter2" not in rec.raw
        assert kept in rec.message
        assert ("redacted" in rec.flags) == ("hunter2" in line.decode())
    rec = LineParser(ParseOptions(redact=False)).parse(b"4711 < PASS hunter2")
    assert "hunter2" in rec.raw  # redact = false: as it came
