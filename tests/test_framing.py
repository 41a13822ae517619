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


# ------------------------------------------------ mutation audit (session 22): edges


def test_decoder_takes_0_to_9_as_a_count_and_nothing_else():
    assert FrameDecoder().max_frame == 1 << 20  # 1 MiB
    dec = FrameDecoder()
    assert dec.feed(b"9 abcdefghi") == [b"abcdefghi"] and dec.errors == []  # no LF needed
    for lead in (b"/", b":"):  # the bytes either side of the digits: LF framing
        dec = FrameDecoder()
        assert dec.feed(lead + b"x\n") == [lead + b"x"] and dec.errors == []
    dec = FrameDecoder()  # a count of 0 is no count: the frame is read as LF-terminated
    assert dec.feed(b"0 \n0 x\n") == [b"0 ", b"0 x"]
    assert dec.errors == ["bad octet count b'0'"] * 2


def test_decoder_count_bounds():
    dec = FrameDecoder(max_frame=5)
    assert dec.feed(b"5 hello") == [b"hello"] and dec.errors == []  # exactly max_frame
    assert dec.feed(b"6 hello!\n") == [b"6 hello!"] and dec.errors == ["bad octet count b'6'"]
    # a count of 10 digits is read (and refused as too large); 11 digits are no count
    dec = FrameDecoder()
    assert dec.feed(b"1000000000 x\n") == [b"1000000000 x"]
    assert dec.errors == ["bad octet count b'1000000000'"]
    dec = FrameDecoder()
    assert dec.feed(b"1234567890") == [] and dec.errors == []  # its space may be next
    assert dec.pending() == 10
    for data in (b"12345678901", b"12345678901 x\n"):
        dec = FrameDecoder()
        dec.feed(data)
        assert dec.errors == ["octet count prefix at 0 has no space within 10 digits"], data


def test_decoder_lf_frame_bounds():
    dec = FrameDecoder()
    assert dec.feed(b"\n") == [] and dec.pending() == 0  # an empty line is no message
    assert dec.feed(b"\nx\n") == [b"x"] and dec.pending() == 0
    dec = FrameDecoder(max_frame=5)
    assert dec.feed(b"abcde") == [] and dec.pending() == 5  # max_frame bytes: still one frame
    assert dec.feed(b"\n") == [b"abcde"] and dec.errors == []
    assert dec.feed(b"abcdef") == [b"abcde"] and dec.pending() == 1
    assert dec.errors == ["LF frame longer than 5 bytes: cut"]


def test_length_prefix_cache_is_bounded():
    from shipper import framing

    for n in range(70_000):
        assert framing._PREFIXES[n] == f"{n} "
    assert len(framing._PREFIXES) <= 65_537
    framing._PREFIXES.clear()
