"""RFC 5424 / 3164 encoding (pure): header fields, escaping, limits, round trips."""

from __future__ import annotations

import base64
import string

import pytest
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st
from rsyslog_util import parse_sd, split_message

from shipper import severity as severity_module
from shipper.encode.rfc5424 import (
    DEFAULT_MAX_SIZE,
    NILVALUE,
    Rfc3164Encoder,
    Rfc5424Encoder,
    escape_param,
    param_text,
    sd_name,
    utf8_cut,
)
from shipper.parse import LineParser, ParseOptions
from shipper.severity import severity, severity_fields

NS = 1_514_836_263_121_918_500  # 2018-01-01T19:51:03.121918500Z


def record(**over):
    rec = {"event_id": "0123456789abcdef-1f", "time": "2018-01-01T19:51:03.121918500Z",
           "time_unix_ns": NS, "time_source": "tai64n", "host": "mx1.example", "program": "qmail-send",
           "pid": None, "event": "delivery", "delivery": 1356, "result": "success",
           "text": "accepted message", "message": "delivery 1356: success: accepted",
           "raw": "@4000 delivery 1356: success: accepted", "flags": [], "source": "/var/log/qmail/current",
           "file_id": "0123456789abcdef", "offset": 31}
    rec.update(over)
    return rec


def sd_of(data: bytes) -> dict[str, str]:
    _, sd, _ = split_message(data)
    elements = parse_sd(sd)
    assert len(elements) == 1
    return dict(elements[0][1])


def fixture_records() -> list[dict]:
    lines = [ln for ln in (FIXTURES / "sink_lines.log").read_bytes().split(b"\n")
             if ln and not ln.startswith(b"# ")]
    parser = LineParser(ParseOptions(host="mx.example", local_tz=False), source="/var/log/qmail/current",
                        file_id="0123456789abcdef")
    offsets, pos = [], 0
    for ln in lines:
        offsets.append(pos)
        pos += len(ln) + 1
    return [r.to_dict() for r in parser.parse_batch(lines, offsets)]


def test_header_fields_of_a_delivery():
    data = Rfc5424Encoder().encode(record(result="failure", pid=4242))
    head, sd, msg = split_message(data)
    assert head == {"pri": 2 * 8 + 4, "ts": "2018-01-01T19:51:03.121918Z", "host": "mx1.example",
                    "app": "qmail-send", "procid": "4242", "msgid": "delivery"}
    assert msg == b"delivery 1356: success: accepted"
    assert data.startswith(b"<20>1 2018-01-01T19:51:03.121918Z mx1.example qmail-send 4242 delivery [qmail@32473 ")


def test_pri_follows_facility_and_severity():
    assert Rfc5424Encoder(facility=16).encode(record(event="status")).startswith(b"<135>1 ")  # local0.debug
    assert Rfc5424Encoder().encode(record(event="alert")).startswith(b"<17>1 ")  # mail.alert
    assert Rfc5424Encoder().encode(record(event="delivery", result="success")).startswith(b"<22>1 ")
    with pytest.raises(ValueError):
        Rfc5424Encoder(facility=24)


def test_timestamp_is_the_line_time_in_microseconds_with_full_ns_in_sd():
    data = Rfc5424Encoder().encode(record(time_unix_ns=NS + 999))  # 121919499 ns: floored to µs
    head, _, _ = split_message(data)
    assert head["ts"] == "2018-01-01T19:51:03.121919Z"
    assert sd_of(data)["time_unix_ns"] == str(NS + 999)
    data = Rfc5424Encoder().encode(record(time_unix_ns=None))
    assert split_message(data)[0]["ts"] == NILVALUE


def test_nilvalues_and_header_sanitising():
    data = Rfc5424Encoder().encode(record(host=None, program=None, pid=None, event=None))
    head, _, _ = split_message(data)
    assert (head["host"], head["app"], head["procid"], head["msgid"]) == ("-", "-", "-", "-")
    assert split_message(Rfc5424Encoder(hostname="fallback").encode(record(host=None)))[0]["host"] == "fallback"
    data = Rfc5424Encoder().encode(record(host="mx é 1", program="p" * 60, pid="x" * 200, event="e" * 40))
    head, _, _ = split_message(data)
    assert head["host"] == "mx___1"
    assert head["app"] == "p" * 48
    assert head["procid"] == "x" * 128
    assert head["msgid"] == "e" * 32
    assert split_message(Rfc5424Encoder().encode(record(host="h" * 300)))[0]["host"] == "h" * 255
    assert split_message(Rfc5424Encoder().encode(record(host="")))[0]["host"] == NILVALUE


def test_structured_data_escaping_and_contents():
    nasty = 'say "hi" ] \\ back\\slash ]]'
    data = Rfc5424Encoder().encode(record(text=nasty, flags=["redacted", "partial"], exitasap=True,
                                          score=5.5, nothing=None))
    assert b'text="say \\"hi\\" \\] \\\\ back\\\\slash \\]\\]"' in data
    sd = sd_of(data)
    assert sd["text"] == nasty
    assert sd["flags"] == "redacted,partial"
    assert sd["exitasap"] == "true"
    assert sd["score"] == "5.5"
    assert sd["event_id"] == "0123456789abcdef-1f"
    assert sd["offset"] == "31" and sd["source"] == "/var/log/qmail/current"
    for gone in ("message", "raw", "time", "host", "program", "pid", "event", "nothing"):
        assert gone not in sd


def test_param_names_are_sanitised():
    assert sd_name('a b=c]d"e') == "a_b_c_d_e"
    assert sd_name("é" * 40) == "_" * 32
    assert sd_name("") == "_"
    sd = sd_of(Rfc5424Encoder().encode(record(**{"we ird=name]": "v"})))
    assert sd["we_ird_name_"] == "v"
    with pytest.raises(ValueError):
        Rfc5424Encoder(sd_id="bad id")


def test_helpers():
    assert escape_param('\\"]') == '\\\\\\"\\]'
    assert param_text([]) is None and param_text(None) is None and param_text(False) == "false"
    assert utf8_cut("aé".encode(), 2) == b"a"
    assert utf8_cut("aé".encode(), 3) == "aé".encode()
    assert utf8_cut(b"abc", 0) == b""


def test_msg_field_raw_and_bom():
    data = Rfc5424Encoder(msg_field="raw", bom=True).encode(record())
    assert split_message(data)[2] == "\ufeff@4000 delivery 1356: success: accepted".encode()
    assert data.endswith(b"] \xef\xbb\xbf@4000 delivery 1356: success: accepted")


def test_oversize_message_cut_at_utf8_boundary_flagged_and_counted():
    enc = Rfc5424Encoder(max_size=600)
    data = enc.encode(record(message="é" * 1000))
    assert len(data) <= 600
    assert enc.truncated == 1
    sd = sd_of(data)
    assert sd["truncated"] == "1" and sd["event_id"] == "0123456789abcdef-1f" and sd["text"] == "accepted message"
    msg = split_message(data)[2]
    assert msg.decode("utf-8") == "é" * (len(msg) // 2)  # decodes: cut between characters
    assert len(data) >= 599  # filled up to the limit (one byte may be lost to the boundary)


def test_oversize_structured_data_drops_event_fields_then_core_keeps_event_id():
    enc = Rfc5424Encoder(max_size=480)
    data = enc.encode(record(text="x" * 2000, source="/s" * 300, message="m" * 50))
    assert len(data) <= 480
    sd = sd_of(data)
    assert sd["truncated"] == "1" and sd["event_id"] == "0123456789abcdef-1f"
    assert "text" not in sd
    assert split_message(data)[0]["msgid"] == "delivery"
    # even a silly header still yields a valid, bounded message
    data = enc.encode(record(host="h" * 255, program="p" * 48, pid="9" * 128, event_id="e" * 400))
    assert len(data) <= 480
    assert sd_of(data)["event_id"].startswith("eeee")
    assert enc.truncated == 2


def test_fast_path_equals_slow_path_for_real_records():
    recs = fixture_records()
    assert len(recs) > 40
    enc = Rfc5424Encoder()
    first = enc.encode_batch(recs)
    again = enc.encode_batch(recs)  # now with compiled templates
    assert first == again
    for rec, data in zip(recs, first, strict=True):
        sd = sd_of(data)
        for key, value in rec.items():
            if key in ("message", "raw", "time", "host", "program", "pid", "event") or param_text(value) is None:
                assert key not in sd or key in ("time_unix_ns",)
            else:
                assert sd[key] == param_text(value), key
        assert split_message(data)[2] == rec["message"].encode()
    # a record of a known shape but with a value that needs escaping
    rec = dict(recs[0])
    key = next(k for k, v in rec.items() if isinstance(v, str) and k not in ("message", "raw", "host", "program",
                                                                              "event", "time"))
    rec[key] = 'a"b]c\\'
    assert sd_of(enc.encode(rec))[key] == 'a"b]c\\'


def test_rfc3164():
    enc = Rfc3164Encoder(local_time=False)
    assert enc.encode(record(pid=77, time_unix_ns=NS)) == \
        b"<22>Jan  1 19:51:03 mx1.example qmail-send[77]: delivery 1356: success: accepted"
    assert enc.encode(record(program="postfix/smtpd", host=None)).startswith(b"<22>Jan  1 19:51:03 - postfix/smtpd: ")
    small = Rfc3164Encoder(max_size=500)
    data = small.encode(record(message="é" * 400))
    assert len(data) <= 500 and small.truncated == 1
    data.decode("utf-8")


def test_rfc3164_time_is_local_by_default(berlin):
    # RFC 3164 4.1.2: local time, no zone; a receiver in Berlin read 19:51:03Z sent as
    # "19:51:03" as 19:51:03+01:00, an hour off
    assert Rfc3164Encoder().encode(record()).startswith(b"<22>Jan  1 20:51:03 mx1.example ")
    summer = 1_530_474_663 * 10**9  # 2018-07-01T19:51:03Z: CEST, +2
    assert Rfc3164Encoder().encode(record(time_unix_ns=summer)).startswith(b"<22>Jul  1 21:51:03 ")
    assert Rfc3164Encoder(local_time=False).encode(record()).startswith(b"<22>Jan  1 19:51:03 ")
    # a time out of every range never raises: the time of sending stands in
    assert Rfc3164Encoder().encode(record(time_unix_ns=10**30))[19:32] == b" mx1.example "



def test_raw_base64_travels_when_the_message_fits_whole():
    # GELF carried a non-UTF-8 line's exact bytes (_raw_base64), RFC 5424 dropped them
    line = b"@400000005a4a9b7c2b1e6b2c tcpserver: pid 4242 from 203.0.113.9 \xff\xfe caf\xe9"
    parser = LineParser(ParseOptions(host="mx.example"), source="/var/log/qmail/current", file_id="0123456789abcdef")
    rec = parser.parse_batch([line], [0])[0].to_dict()
    assert rec["raw_base64"] and "invalid_utf8" in rec["flags"]
    for enc in (Rfc5424Encoder(), Rfc5424Encoder(msg_field="raw")):
        data = enc.encode(rec)
        sd = sd_of(data)
        assert base64.b64decode(sd["raw_base64"], validate=True) == line and "truncated" not in sd
        assert enc.encode_texts([rec])[0].encode() == data and enc.truncated == 0
    # a message over the limit leaves the bytes out whole (a part of them is not the line)
    big = dict(rec, raw_base64=base64.b64encode(line * 20).decode(), message="m" * 400)
    small = Rfc5424Encoder(max_size=1000)
    data = small.encode(big)
    sd = sd_of(data)
    assert len(data) <= 1000 and sd["truncated"] == "1" and "raw_base64" not in sd and small.truncated == 1
    assert split_message(data)[2] == b"m" * 400  # the text is not cut for them


# -- property: anything in, a message our own RFC 5424 reader decodes back

keys = st.text(min_size=1, max_size=40)
values = st.one_of(st.none(), st.text(max_size=60), st.integers(-10**12, 10**12), st.booleans(),
                   st.lists(st.text(alphabet=string.ascii_letters, max_size=5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(keys, values, max_size=12), message=st.text(max_size=300),
       host=st.one_of(st.none(), st.text(max_size=20)), program=st.one_of(st.none(), st.text(max_size=20)))
def test_any_record_round_trips(fields, message, host, program):
    rec = {"event_id": "0123456789abcdef-2a", "time_unix_ns": NS, "host": host, "program": program,
           "pid": 7, "event": "x"}
    rec.update(fields)
    rec["message"] = message
    enc = Rfc5424Encoder()
    data = enc.encode(rec)
    head, sd_text, msg = split_message(data)
    (sd_id, params), = parse_sd(sd_text)
    assert sd_id == "qmail@32473"
    expected = [(sd_name(k), param_text(v)) for k, v in rec.items()
                if k not in ("message", "raw", "time", "host", "program", "pid", "event")
                and param_text(v) is not None]
    assert params == expected
    assert msg == message.encode("utf-8", "replace")
    assert all(33 <= b <= 126 for part in (head["host"], head["app"]) for b in part.encode())
    # the same record under a tight limit: bounded, still decodable, flagged if cut
    small = Rfc5424Encoder(max_size=480)
    cut = small.encode(rec)
    assert len(cut) <= 480
    (_, cut_params), = parse_sd(split_message(cut)[1])
    if small.truncated:
        assert ("truncated", "1") in cut_params and cut_params[1][0] == "event_id"
    else:
        assert cut == data


# -- the per-shape fast path (records with every header key, as Record.to_dict gives) must
# write exactly what the general path writes (a record missing ``flags`` takes it)

shape_values = st.one_of(st.none(), st.text(alphabet='ab "\\]=[()NoTrueFalse\u00e9\u20ac\U0001F600', max_size=12),
                         st.sampled_from(["None", "True", "False", "(x", "[y]"]), st.integers(-10**20, 10**20),
                         st.booleans(), st.floats(allow_nan=False), st.tuples(st.text(max_size=3)),
                         st.lists(st.text(alphabet="ab,", max_size=4), max_size=3))


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(st.fixed_dictionaries({
    "event_id": st.one_of(st.none(), st.just("0123456789abcdef-1f")),
    "time_unix_ns": st.one_of(st.none(), st.integers(-10**19, 10**20), st.integers(NS - 2 * 10**9, NS + 2 * 10**9)),
    "event": st.sampled_from([None, "delivery", "smtp_decision", "io_server", "tcp_end", "status", "new msg"]),
    "result": shape_values, "action": shape_values, "reply_class": shape_values, "text": shape_values,
    "message": st.one_of(st.none(), st.text(max_size=40), st.text(min_size=600, max_size=700))}),
    min_size=1, max_size=6))
def test_fast_path_writes_what_the_general_path_writes(batch):
    full = [{"host": "mx", "program": "qmail-smtpd", "pid": 7, "flags": [], **rec} for rec in batch]
    general = [{k: v for k, v in rec.items() if k != "flags"} for rec in full]
    for options in ({}, {"max_size": 480, "bom": True}):
        fast_enc, general_enc = Rfc5424Encoder(**options), Rfc5424Encoder(**options)
        fast = fast_enc.encode_batch(full)
        assert fast == general_enc.encode_batch(general)
        assert fast_enc.encode_batch(full) == fast  # again, with the shape's templates cached
        assert fast_enc.truncated == 2 * general_enc.truncated
        assert [t.encode("utf-8", "replace") for t in Rfc5424Encoder(**options).encode_texts(full)] == fast


class _Text(str):
    """A str subclass (a transform's or an API user's value)."""


# The header values (HOSTNAME, APP-NAME, MSGID) and a file's steady SD values (source,
# file_id, time_source) are written into the fast path's templates by value: a record
# whose values are equal but not alike (1 and True, a str and a str subclass, a value that
# needs escaping) must still get what the general path writes.
header_values = st.one_of(st.none(), st.sampled_from(["mx", "qmail-send", "a b", 'q"x', "x]y", "b\\s", "%s", "\u00e9",
                                                     "\ud800", _Text("mx"), "None", "1"]),
                          st.integers(0, 2), st.booleans(), st.just(1.0), st.lists(st.just("a"), max_size=1))


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(st.fixed_dictionaries({
    "event_id": st.just("0123456789abcdef-1f"),
    "time_unix_ns": st.one_of(st.just(NS), st.integers(NS - 2 * 10**9, NS + 2 * 10**9), st.none(), st.just("1")),
    "time_source": header_values, "host": header_values, "program": header_values, "pid": header_values,
    "event": st.one_of(header_values, st.sampled_from(["delivery", "smtp_decision", "status"])),
    "message": st.one_of(st.text(max_size=10), st.none(), st.just(7)), "flags": st.sampled_from([[], ["cut"]]),
    "source": header_values, "file_id": header_values, "offset": shape_values, "text": shape_values}),
    min_size=1, max_size=8))
def test_fast_path_with_odd_header_and_steady_values_writes_what_the_general_path_writes(batch):
    for options in ({}, {"max_size": 480, "bom": True}):
        fast_enc, general_enc = Rfc5424Encoder(**options), Rfc5424Encoder(**options)
        fast = fast_enc.encode_batch(batch + batch)  # the second time with the templates made
        general = [general_enc._text(rec).encode("utf-8", "replace") for rec in batch + batch]
        assert fast == general


class _Reads(dict):
    """A record that notes which of its fields are read."""

    def __init__(self, fields: dict) -> None:
        super().__init__(fields)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


# every value severity.py compares a field with, and some others
_SEVERITY_VALUES = [None, 0, 1, "", True, "AUTH", "DATA", "missing", "Virus_Infected", "crashed", "a got TERM",
                    "a ordered to quit by b", "pid 1 has shutdown", "queue1 died", "rejected rcpt", "intrusion x",
                    "mbx overquota", "no auth resource", "accepted rcpt", "failure", "deferral", "success",
                    _Text("Reject"),
                    *sorted({v for table in (severity_module._NOTICE_WHEN, severity_module._WARNING_WHEN)
                             for _, values in table.values() for v in values}),
                    *sorted({level for levels in severity_module._BY_LEVEL.values() for level in levels})]


@pytest.mark.parametrize("event", sorted(severity_module._BY_FIELDS))
def test_severity_reads_only_its_fields(event):
    """The encoder remembers PRI by the values of ``severity_fields(event)``: severity may
    read no other field. Every branch is walked: each field it reads is set to each value
    it is compared with, and the record read again."""
    allowed = {"event", *severity_fields(event)}
    todo, walked = [{"event": event}], 0
    while todo and walked < 500_000:
        rec = todo.pop()
        reads = _Reads(rec)
        severity(reads)
        walked += 1
        assert reads.read <= allowed, (rec, reads.read - allowed)
        todo += [{**rec, key: value} for key in sorted(reads.read - rec.keys()) for value in _SEVERITY_VALUES]
    assert not todo


def test_time_zero_and_seconds_in_any_order():
    enc = Rfc5424Encoder()
    times = [0, NS, 999_999_999, NS - 1, -1, NS + 1_000_000_000, 10**21]  # 10**21: year 33658
    heads = [split_message(d)[0]["ts"] for d in enc.encode_batch([record(time_unix_ns=t) for t in times])]
    assert heads == ["1970-01-01T00:00:00.000000Z", "2018-01-01T19:51:03.121918Z", "1970-01-01T00:00:00.999999Z",
                     "2018-01-01T19:51:03.121918Z", "1969-12-31T23:59:59.999999Z", "2018-01-01T19:51:04.121918Z",
                     NILVALUE]


def test_severity_from_a_list_value_does_not_raise():
    data = Rfc5424Encoder().encode(record(event="io_server", reply_class=["5xx"]))
    assert data.startswith(b"<22>1 ")  # info: a list is not one of the notice values
    assert sd_of(data)["reply_class"] == "5xx"


def test_texts_encode_to_the_bytes_with_non_ascii_and_lone_surrogates():
    recs = [record(message="d\u00e9j\u00e0 \ud800 vu", text="\u20ac \udfff"), record(message="x" * 9000)]
    enc = Rfc5424Encoder()
    texts = enc.encode_texts(recs)
    assert [t.encode("utf-8", "replace") for t in texts] == Rfc5424Encoder().encode_batch(recs)
    assert split_message(texts[0].encode("utf-8", "replace"))[2] == "d\u00e9j\u00e0 ? vu".encode()
    assert len(texts[1].encode()) == DEFAULT_MAX_SIZE == 8096 and enc.truncated == 1
    assert Rfc3164Encoder().encode_texts(recs)[0].endswith("d\u00e9j\u00e0 \ud800 vu")


def test_objects_in_a_summary_travel_as_json_not_python_repr():
    """A mail summary's recipients (a list of objects) and session (an object) are JSON
    text in their SD-PARAM; a list of plain values stays comma-joined (found in a review:
    recipients arrived as Python's repr)."""
    import orjson
    recipients = [{"rcpt_to": "a@example.org", "text": "it's \"x\" ] \\ done", "n_attempts": 2},
                  {"rcpt_to": "b@example.org", "result": "success"}]
    session = {"conn_pid": 5, "link": "qp", "tls": "TLSv1.3"}
    rec = {"time_unix_ns": 1_700_000_000_000_000_000, "event": "mail", "program": "qmail-send",
           "host": "mx", "pid": None, "message": "mail 1", "recipients": recipients,
           "session": session, "qps": [11, 12], "flags": []}
    enc = Rfc5424Encoder(hostname="mx")
    for msg in (enc.encode(rec), enc.encode_batch([rec, rec])[1]):
        _, sd, _ = split_message(msg)
        (sd_id, params), = parse_sd(sd)
        got = dict(params)
        assert orjson.loads(got["recipients"]) == recipients
        assert orjson.loads(got["session"]) == session
        assert got["qps"] == "11,12"


def test_gelf_objects_are_json_too():
    import orjson

    from shipper.encode.gelf import gelf_message
    rec = {"time_unix_ns": 1, "event": "mail", "program": "qmail-send", "host": "mx",
           "message": "m", "recipients": [{"rcpt_to": "a@example.org"}], "qps": [1, 2]}
    msg = gelf_message(rec)
    assert orjson.loads(msg["_recipients"]) == [{"rcpt_to": "a@example.org"}]
    assert msg["_qps"] == "1,2"


def test_a_list_or_a_dict_where_a_name_belongs_is_no_crash():
    """hypothesis found it: a record whose host is a list (a journal entry can carry
    such) made the header cache raise."""
    from shipper.encode.rfc5424 import Rfc3164Encoder
    rec = {"time_unix_ns": 1, "event": "x", "host": ["a", "b"], "program": {"p": 1}, "pid": None,
           "message": "m", "flags": []}
    for enc in (Rfc5424Encoder(hostname="h"), Rfc3164Encoder(hostname="h")):
        (one,) = enc.encode_texts([rec])
        assert one.endswith(" m") and "a" in one  # the list's text in the header, cleaned
        (two,) = enc.encode_texts([{**rec, "event": ["e", 1]}])  # nor an event
        assert two.endswith(" m")


@pytest.mark.parametrize(("rec", "sev"), [
    # one class of outcome, one severity, whatever the program
    ({"event": "auth_failed", "program": "postfix/smtpd"}, 4),
    ({"event": "smtp_decision", "action": "Reject", "check": "AUTH"}, 4),
    ({"event": "smtp_decision", "action": "Reject", "check": "RCPT"}, 5),
    ({"event": "pop_auth", "result": "failure"}, 4),
    ({"event": "pop_auth", "result": "success"}, 6),
    ({"event": "simscan", "verdict": "VIRUS"}, 4),
    ({"event": "simscan", "verdict": "SPAM REJECT"}, 5),
    # a server's child that did not end well: an exit code, a signal, indimail's "crashed"
    ({"event": "tcp_end", "conn_pid": 1, "wait_status": 0, "exit_code": 0}, 6),
    ({"event": "tcp_end", "conn_pid": 1, "wait_status": 256, "exit_code": 1}, 5),
    ({"event": "tcp_end", "conn_pid": 1, "text": "crashed"}, 5),
    # summaries by their result: a bounced mail is a warning, a refused session a notice
    ({"event": "mail", "result": "failure"}, 4),
    ({"event": "mail", "result": "mixed"}, 5),
    ({"event": "mail", "result": "success"}, 6),
    ({"event": "smtp_session", "result": "rejected"}, 5),
    ({"event": "smtp_session", "result": "accepted"}, 6),
])
def test_severity_by_outcome(rec: dict, sev: int) -> None:
    from shipper.severity import severity, severity_of_event

    assert severity(rec) == sev
    assert severity_of_event(rec["event"]) in (None, sev)


# ------------------------------------------------ mutation audit (session 22): edges


def test_header_and_param_names_keep_every_printusascii_character():
    """PRINTUSASCII is 33 ("!") to 126 ("~"): both kept, SP (32) and DEL (127) are not,
    in the header fields and in SD-NAMEs (which also refuse '=', ']' and '"')."""
    rec = record(host="mx!~ 1\x7f", program="qmail-send!~\x7f", pid="4\x7f~", event="st!~ \x7f")
    rec["we!rd~ \x7f=]\""] = "v"
    data = Rfc5424Encoder().encode(rec)
    head, _, _ = split_message(data)
    assert (head["host"], head["app"], head["procid"], head["msgid"]) == ("mx!~_1_", "qmail-send!~_", "4_~",
                                                                          "st!~__")
    assert b' we!rd~_____="v"' in data
    assert sd_name("!~") == "!~" and sd_name(" \x7f") == "__" and sd_name("") == "_"


def test_utf8_cut_at_its_edges():
    e_acute = "é".encode()  # 2 bytes
    assert utf8_cut(b"abc", 1) == b"a" and utf8_cut(b"abc", 3) == b"abc"
    assert utf8_cut(b"abc", 0) == utf8_cut(b"abc", -1) == utf8_cut(b"abc", -5) == b""  # no room left
    assert utf8_cut(e_acute + b"x", 1) == b""  # never half a character, even the first
    assert utf8_cut(b"a" + e_acute + b"x", 2) == b"a"
    assert utf8_cut(b"\x80\x80\x80", 2) == b""  # (not UTF-8: never a negative index)


def test_severity_of_event_is_the_records_when_fields_do_not_matter():
    from shipper.severity import INFO, severity_of_event

    by_event = severity_module._BY_EVENT
    by_fields = severity_module._BY_FIELDS
    for event in [*by_event, "new_msg", "end_msg", "no_such_event"]:
        want = None if event in by_fields else severity({"event": event})
        assert severity_of_event(event) == want, event
    assert severity_of_event("status") == 7 and severity_of_event("gap") == 3
    for odd in (None, 5, 1.5, True):  # not a record of ours: info (the encoder makes the unhashable text)
        assert severity_of_event(odd) == INFO and severity({"event": odd}) == INFO, odd
    for odd in (["delivery"], {"a": 1}):  # never a raise
        assert severity({"event": odd}) == INFO, odd
    assert severity({}) == INFO


@pytest.mark.parametrize("rec, sev", [
    # only a Reject is a failed login or a virus found; a deferral stays a notice
    ({"event": "smtp_decision", "action": "Deferred", "check": "AUTH", "condition": "temp"}, 5),
    ({"event": "smtp_decision", "action": "Reject", "check": "AUTH", "condition": "failed"}, 4),
    ({"event": "smtp_decision", "action": "Reject", "check": "DATA", "condition": "Virus_Infected"}, 4),
    ({"event": "smtp_decision", "action": "Reject", "check": "DATA", "condition": "Spam_Detected"}, 5),
    ({"event": "smtp_decision", "action": "Reject", "check": "RCPT", "condition": "Virus_Infected"}, 5),
    # qscheduler's load warning needs both halves; other alerts stay alerts
    ({"event": "alert", "text": "qscheduler: average load 12 exceeds threshold (> 10)"}, 4),
    ({"event": "alert", "text": "qmail-send: queue1: todo exceeds threshold of the disk"}, 1),
    ({"event": "alert", "text": "qmail-send: average load unknown"}, 1),
])
def test_severity_conditions_need_all_their_parts(rec: dict, sev: int) -> None:
    assert severity(rec) == sev


def test_general_path_message_none_a_number_and_octets_not_characters():
    """(A record without ``flags`` takes the general path.)"""
    def general(**over):
        rec = record(**over)
        rec.pop("flags", None)
        return rec

    enc = Rfc5424Encoder()
    assert enc.encode(general(message=None)).endswith(b'offset="31"] ')  # no "None"
    assert enc.encode(general(message=5)).endswith(b'offset="31"] 5')
    # 300 characters are 600 octets: the limit counts octets, whatever len() says
    rec = general(message="é" * 300)
    whole = enc.encode(rec)
    assert len(whole) > 480 + 100
    small = Rfc5424Encoder(max_size=480)
    out = small.encode(rec)
    assert len(out) <= 480 and small.truncated == 1 and out.decode("utf-8")
    exact = Rfc5424Encoder(max_size=len(whole))  # exactly the limit: kept whole
    assert exact.encode(rec) == whole and exact.truncated == 0
