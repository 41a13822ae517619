"""RFC 6587 framing and the streaming decoder (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.framing import (
    FrameDecoder,
    frame,
    frame_texts,
    lf_framed,
    octet_counted,
    octet_counted_texts,
)

MSGS = [b"<22>1 - mx qmail-send - delivery - one", "<22>1 - - - - - - d\u00e9j\u00e0".encode(),
        b"<22>1 - - - - - - multi\nline\nmessage"]


def test_octet_counting_counts_octets_not_characters():
    assert octet_counted([b"abc", "\u00e9".encode()]) == b"3 abc2 \xc3\xa9"
    assert frame(MSGS) == b"".join(b"%d %s" % (len(m), m) for m in MSGS)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(st.characters(blacklist_categories=()), max_size=40), max_size=8))
def test_text_framing_with_remembered_lengths_is_the_bytes_framing(texts):
    """MSG-LEN SP texts are remembered by octet count (framing._PREFIXES); ASCII and other
    messages of one length and lone surrogates (one "?" octet each) share them."""
    encoded = [t.encode("utf-8", "replace") for t in texts]
    assert octet_counted_texts(texts) == octet_counted(encoded)
    assert octet_counted_texts(texts[::-1]) == octet_counted(encoded[::-1])


def test_text_framing_counts_octets_and_encodes_like_the_bytes_path():
    texts = ["abc", "\u00e9\u20ac\U0001F600", "lone \ud800 surrogate", "", "multi\nline"]
    encoded = [t.encode("utf-8", "replace") for t in texts]
    assert octet_counted_texts(texts) == octet_counted(encoded)
    assert octet_counted_texts(["\u00e9", "\ud800"]) == b"2 \xc3\xa91 ?"
    assert octet_counted_texts([]) == b""
    assert frame_texts(texts) == frame(encoded)
    assert frame_texts(texts, "lf", b" ") == frame(encoded, "lf", b" ") == lf_framed(encoded, b" ")
    decoder = FrameDecoder()
    assert decoder.feed(frame_texts([t for t in texts if t])) == [m for m in encoded if m]
    assert decoder.errors == []


def test_lf_framing_escapes_embedded_newlines():
    assert lf_framed([b"a\nb", b"c"]) == b"a#012b\nc\n"
    assert lf_framed([b"a\nb"], newline_escape=b" ") == b"a b\n"
    assert frame([b"x"], "lf") == b"x\n"
    with pytest.raises(ValueError):
        frame([b"x"], "stx")


def test_lf_framing_escapes_every_trailer_octet_counting_keeps_bytes():
    # NUL is a trailer too (RFC 6587 3.4.2; syslog-ng), CR breaks lines elsewhere: either
    # left in would end the frame, and the rest would read as a record of its own
    forged = b"HELO x\0<38>1 2018-01-01T20:51:04Z dc1.corp sshd 777 - - Accepted"
    msgs = [forged, b"a\rb\r\nc\0", b"plain"]
    assert lf_framed(msgs) == (b"HELO x#000<38>1 2018-01-01T20:51:04Z dc1.corp sshd 777 - - Accepted\n"
                               b"a#015b#015#012c#000\nplain\n")
    assert lf_framed([b"a\r\n\0"], newline_escape=b" ") == b"a#015 #000\n"
    assert frame_texts(["x\0y"], "lf") == b"x#000y\n"
    assert lf_framed([]) == b"" and lf_framed([b""]) == b"\n"
    for framed in (lf_framed(msgs), lf_framed(msgs, b" "), frame_texts([m.decode() for m in msgs], "lf")):
        assert framed.count(b"\n") == len(msgs) and b"\0" not in framed and b"\r" not in framed
    dec = FrameDecoder()
    assert dec.feed(octet_counted(msgs)) == msgs  # octet counting carries every byte as it is
    assert frame_texts(["x\0\r\ny"]) == b"5 x\0\r\ny"


@given(st.lists(st.binary(max_size=40), max_size=8))
@settings(max_examples=300, deadline=None)
def test_lf_framing_one_frame_per_message(msgs):
    framed = lf_framed(msgs)
    assert framed.count(b"\n") == len(msgs) and b"\0" not in framed and b"\r" not in framed
    assert framed == b"".join(m.replace(b"\n", b"#012").replace(b"\r", b"#015").replace(b"\0", b"#000") + b"\n"
                              for m in msgs)


def test_decoder_reads_both_framings_split_anywhere():
    stream = octet_counted(MSGS) + lf_framed([b"<13>plain line", b"<13>second"]) + octet_counted(MSGS[:1])
    for step in (1, 2, 3, 7, 64, len(stream)):
        dec = FrameDecoder()
        out = []
        for i in range(0, len(stream), step):
            out += dec.feed(stream[i:i + step])
        assert out == [*MSGS, b"<13>plain line", b"<13>second", MSGS[0]], step
        assert dec.pending() == 0 and dec.errors == []


def test_decoder_bad_input_is_reported_not_raised():
    dec = FrameDecoder(max_frame=100)
    out = dec.feed(b"99999 too big\n12x34 junk\n<13>ok\n")
    assert out == [b"99999 too big", b"12x34 junk", b"<13>ok"]
    assert len(dec.errors) == 2 and "bad octet count" in dec.errors[0]
    out = dec.feed(b"<13>" + b"y" * 250)
    assert [len(x) for x in out] == [100, 100] and dec.pending() == 54
    assert "longer than 100" in dec.errors[-1]
    dec = FrameDecoder()
    assert dec.feed(b"12345678901234567890") == []
    assert "no space within 10 digits" in dec.errors[-1]
    assert dec.feed(b"\n") == [b"12345678901234567890"]


@settings(max_examples=200, deadline=None)
@given(msgs=st.lists(st.binary(min_size=1, max_size=200), max_size=20), cuts=st.lists(st.integers(0, 4000)))
def test_octet_counted_round_trip(msgs, cuts):
    stream = octet_counted(msgs)
    dec = FrameDecoder()
    out, pos = [], 0
    for c in sorted(set(cuts)):
        out += dec.feed(stream[pos:c])
        pos = max(pos, c)
    out += dec.feed(stream[pos:])
    assert out == msgs and dec.errors == []
