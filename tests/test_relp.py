"""The RELP client state machine (pure), fed with the frames rsyslog's imrelp sends."""

from __future__ import annotations

import pytest

from shipper.relp import (
    ACKED,
    BROKEN,
    CLOSE_ACKED,
    CLOSED,
    CLOSING,
    ERROR,
    IDLE,
    MAX_TXNR,
    OPEN,
    OPENED,
    OPENING,
    REFUSED,
    SERVER_CLOSE,
    RelpClient,
    RelpEvent,
)

# what rsyslog 8.2302 / librelp 1.11 answered to our open (see docs of the exchange)
OPEN_RSP = (b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
            b"commands=syslog\n")


def opened(window: int = 4) -> RelpClient:
    c = RelpClient(window=window)
    assert c.open() == b"1 open 52 relp_version=0\nrelp_software=shipper\ncommands=syslog\n"
    (ev,) = c.receive(OPEN_RSP)
    assert ev.kind == OPENED and ev.offers["relp_version"] == "0" and c.state == OPEN
    return c


def test_open_syslog_close_exchange():
    c = opened()
    assert c.room == 4
    data = c.syslog([b"<22>1 - - - - - - a", b"<22>1 - - - - - - bb"], tags=["r0", "r1"])
    assert data == b"2 syslog 19 <22>1 - - - - - - a\n3 syslog 20 <22>1 - - - - - - bb\n"
    assert c.room == 2 and list(c.unacked) == [2, 3]
    evs = c.receive(b"2 rsp 6 200 OK\n3 rsp 6 200 OK\n")
    assert [(e.kind, e.txnr, e.tag) for e in evs] == [(ACKED, 2, "r0"), (ACKED, 3, "r1")]
    assert c.room == 4 and not c.unacked
    assert c.close() == b"4 close 0\n"
    evs = c.receive(b"4 rsp 0\n0 serverclose 0\n")
    assert [e.kind for e in evs] == [CLOSE_ACKED, SERVER_CLOSE] and c.state == CLOSED


def test_responses_split_at_every_byte():
    c = opened(window=8)
    c.syslog([b"m%d" % i for i in range(5)], tags=list(range(5)))
    stream = b"".join(b"%d rsp 6 200 OK\n" % t for t in range(2, 7))
    got = []
    for i in range(len(stream)):
        got += c.receive(stream[i:i + 1])
    assert [e.tag for e in got] == [0, 1, 2, 3, 4] and all(e.kind == ACKED for e in got)


def test_the_quick_path_for_200_ok_agrees_with_the_frame_parser():
    # "N rsp 6 200 OK" takes a quick path; everything around it the general one. Whole
    # or cut at every byte (then only the general parser sees the pieces), the same events.
    stream = (b"2 rsp 6 200 OK\n3 rsp 6 200 OK\n4 rsp 15 500 error: full\n5 rsp 6 200 OK\n"
              b"06 rsp 6 200 OK\n99 rsp 6 200 OK\n")
    runs = []
    for step in (len(stream), 1):
        c = opened(window=8)
        c.syslog([b"m%d" % i for i in range(5)], tags=list(range(5)))
        got = []
        for i in range(0, len(stream), step):
            got += c.receive(stream[i:i + step])
        runs.append([(e.kind, e.txnr, e.code, e.tag) for e in got])
        assert c.state == BROKEN  # 99 was never sent
    assert runs[0] == runs[1]
    assert [r[:2] for r in runs[0]] == [(ACKED, 2), (ACKED, 3), (REFUSED, 4), (ACKED, 5), (ACKED, 6), (ERROR, 0)]
    # a 200 OK to open is no acknowledgement of a record: it goes the general way
    c = RelpClient()
    c.open()
    (ev,) = c.receive(b"1 rsp 6 200 OK\n")
    assert ev.kind == REFUSED and c.state == BROKEN


def test_window_is_enforced():
    c = opened(window=2)
    c.syslog([b"a", b"b"])
    assert c.room == 0
    with pytest.raises(ValueError):
        c.syslog([b"c"])


def test_non_200_is_refused_and_serverclose_is_seen():
    c = opened()
    c.syslog([b"a", b"b"], tags=[10, 11])
    evs = c.receive(b"2 rsp 6 200 OK\n3 rsp 15 500 error: full\n0 serverclose 0\n")
    assert [(e.kind, e.tag, e.code) for e in evs] == [(ACKED, 10, 200), (REFUSED, 11, 500), (SERVER_CLOSE, None, 0)]
    assert evs[1].text == "500 error: full"


def test_open_refused_or_without_syslog():
    c = RelpClient()
    c.open()
    (ev,) = c.receive(b"1 rsp 13 500 no, sorry\n")
    assert ev.kind == REFUSED and c.state == BROKEN
    c = RelpClient()
    c.open()
    (ev,) = c.receive(b"1 rsp 31 200 OK\nrelp_version=0\ncommands=\n")
    assert ev.kind == REFUSED and "does not offer" in ev.text


@pytest.mark.parametrize("junk", [b"x rsp 6 200 OK\n", b"2 rsp 6 200 OKX", b"99 rsp 6 200 OK\n",
                                  b"2 r-p 6 200 OK\n", b"2 rsp 999999999999 x", b"2 syslog 1 x\n",
                                  b"1234567890123 rsp"])
def test_protocol_errors_break_the_session_without_raising(junk):
    c = opened()
    c.syslog([b"a"])
    evs = c.receive(junk)
    assert [e.kind for e in evs] == [ERROR] and c.state == BROKEN
    assert c.receive(b"2 rsp 6 200 OK\n") == []


def test_txnr_wraps_to_one():
    c = opened(window=3)
    c._next = MAX_TXNR
    assert c.syslog([b"a", b"b"]) == b"999999999 syslog 1 a\n1 syslog 1 b\n"
    evs = c.receive(b"999999999 rsp 6 200 OK\n1 rsp 6 200 OK\n")
    assert [e.txnr for e in evs] == [MAX_TXNR, 1]


# ------------------------------------------------ mutation audit (session 22): edges


def test_client_states_refuse_what_they_cannot_do():
    with pytest.raises(ValueError):
        RelpClient(window=0)
    c = RelpClient(window=1)
    assert c.state == IDLE and c.room == 0 and c.offers == {} and c.partial == 0
    with pytest.raises(RuntimeError):
        c.syslog([b"a"])  # not open yet
    c.open()
    assert c.state == OPENING and c.room == 0
    with pytest.raises(RuntimeError):
        c.open()  # twice
    c.receive(OPEN_RSP)
    assert c.room == 1 and c.window == 1
    assert c.offers == {"relp_version": "0", "relp_software": "librelp,1.11.0,http://librelp.adiscon.com",
                        "commands": "syslog"}
    assert RelpClient().window == 128
    assert c.close() == b"2 close 0\n"
    assert c.state == CLOSING and c.room == 0
    with pytest.raises(RuntimeError):
        c.syslog([b"a"])


def test_max_data_is_librelps_128_kib():
    c = opened()
    assert c.max_data == 128 * 1024
    assert c.syslog([b"x" * c.max_data]).startswith(b"2 syslog 131072 x")
    with pytest.raises(ValueError):
        c.syslog([b"y" * (c.max_data + 1)])
    assert list(c.unacked) == [2]  # the refused batch took no txnr


def test_open_and_close_txnr_wrap_too():
    c = RelpClient()
    c._next = MAX_TXNR
    assert c.open().startswith(b"999999999 open 52 ")
    (ev,) = c.receive(b"999999999" + OPEN_RSP[1:])
    assert ev.kind == OPENED and c.state == OPEN
    assert c.syslog([b"a"]) == b"1 syslog 1 a\n"
    assert c.close() == b"2 close 0\n"


def test_partial_header_waits_and_the_rest_completes_it():
    c = opened(window=4)
    c._next = MAX_TXNR - 1
    c.syslog([b"a", b"b", b"c"], tags=["a", "b", "c"])
    # after a frame the quick path took, a txnr of 9 digits arriving in pieces
    assert [e.tag for e in c.receive(b"999999998 rsp 6 200 OK\n999999999")] == ["a"]
    assert c.partial == 9 and c.state == OPEN
    assert [e.tag for e in c.receive(b" rsp 6 200 OK\n1 rsp 6 200 OK\n")] == ["b", "c"]
    assert c.partial == 0
    # a 32-letter command may still be arriving; the general path takes 9-digit
    # txnrs and DATALENs (leading zeros too: DATALEN is 1*9DIGIT)
    c.syslog([b"d", b"e"], tags=["d", "e"])
    assert c.receive(b"2 rsp 000000006 200 OK\n3 rsp 000000015 500 error: full\n4 ") == [
        RelpEvent(ACKED, 2, 200, "OK", "d"), RelpEvent(REFUSED, 3, 500, "500 error: full", "e")]
    assert c.receive(b"a" * 32) == [] and c.state == OPEN
    (ev,) = c.receive(b" 0\n")
    assert ev.kind == ERROR and ev.text == "unexpected RELP command from server: 4 " + "a" * 32


def test_general_path_takes_a_nine_digit_txnr():
    c = opened()
    c._next = MAX_TXNR
    c.syslog([b"a"], tags=["a"])
    assert c.receive(b"999999999 rsp 15 500 error: full\n") == [
        RelpEvent(REFUSED, MAX_TXNR, 500, "500 error: full", "a")]


MALFORMED = "malformed RELP frame header"


@pytest.mark.parametrize("junk, error", [
    (b"hello", MALFORMED),  # no space yet, but no txnr either: no need to wait
    (b"1234567890", MALFORMED),  # a txnr has at most 9 digits
    (b"1234567890 rsp 6 200 OK\n", MALFORMED),
    (b"2 r-", MALFORMED),  # a command is letters
    (b"2 -r", MALFORMED),
    (b"2 rs- 6 200 OK\n", MALFORMED),
    (b"2 -sp 6 200 OK\n", MALFORMED),
    (b"2 r-p 6 200 OK\n", MALFORMED),
    (b"2 " + b"a" * 33, MALFORMED),  # at most 32 letters
    (b"2 " + b"a" * 33 + b" 0\n", MALFORMED),
    (b"2 " + b"a" * 32 + b" 0\n", "unexpected RELP command from server: 2 " + "a" * 32),
    (b"123456789 " + b"a" * 32 + b" 000000000\n", "unexpected RELP command from server: 123456789 " + "a" * 32),
    (b"2 rsp 999999999999 x", MALFORMED),  # DATALEN has at most 9 digits
    (b"2 rsp 0000000006 200 OK\n", MALFORMED),
    (b"2 rsp /6 200 OK\n", MALFORMED),  # the bytes either side of the digits
    (b"2 rsp 6: 200 OK\n", MALFORMED),
    (b"2 rsp x200 OK\n", MALFORMED),  # no DATALEN
    (b"2 rsp  6 200 OK\n", MALFORMED),
    (b"2 rsp 6x200 OK\n", MALFORMED),
    (b"2 rsp 6\n200 OK\n", "RELP frame 2 rsp: no space before data"),
    (b"2 rsp 6 200 OKX", "RELP frame 2 rsp lacks its LF trailer"),
    (b"2 serverclose 0\n", "unexpected RELP command from server: 2 serverclose"),  # only txnr 0 is the hint
    (b"0 rsp 6 200 OK\n", "RELP rsp for unknown txnr 0"),
    (b"2 rsp 132097 ", "RELP frame DATALEN 132097 too large"),  # max data + 1 KiB of header room
])
def test_each_protocol_error_is_said_as_it_is(junk, error):
    c = opened()
    c.syslog([b"a"])
    evs = c.receive(junk)
    assert [e.kind for e in evs] == [ERROR] and c.state == BROKEN
    assert evs[0].text.startswith(error), evs[0].text


def test_datalen_up_to_max_data_and_a_header_waits_for_its_body():
    c = opened()
    c.syslog([b"a"], tags=["a"])
    assert c.receive(b"2 rsp 132096 200 OK\n") == [] and c.state == OPEN  # may still come
    assert c.partial == len(b"2 rsp 132096 200 OK\n")


def test_nothing_after_a_protocol_error_is_taken():
    c = opened()
    c.syslog([b"a", b"b"], tags=["a", "b"])
    evs = c.receive(b"99 rsp 6 200 OK\n2 rsp 6 200 OK\n3 rsp 6 200 OK\n")
    assert [e.kind for e in evs] == [ERROR] and set(c.unacked) == {2, 3}


def test_response_codes_are_three_digits():
    c = opened()
    c.syslog([b"a", b"b", b"c"], tags=["a", "b", "c"])
    evs = c.receive(b"2 rsp 7 0200 OK\n3 rsp 6 abc OK\n4 rsp 6 200 OK\n")
    assert [(e.kind, e.code, e.text) for e in evs] == [(REFUSED, 0, "0200 OK"), (REFUSED, 0, "abc OK"),
                                                      (ACKED, 200, "OK")]


def test_refused_open_says_the_servers_words():
    c = RelpClient()
    c.open()
    (ev,) = c.receive(b"1 rsp 13 500 no, sorry\n")
    assert (ev.kind, ev.code, ev.text) == (REFUSED, 500, "500 no, sorry") and c.offers == {}
    c = RelpClient()
    c.open()
    (ev,) = c.receive(b"1 rsp 0\n")
    assert (ev.kind, ev.code, ev.text, c.state) == (REFUSED, 0, "empty response to open", BROKEN)


def test_serverclose_with_data_keeps_its_text():
    c = opened()
    (ev,) = c.receive(b"0 serverclose 3 bye\n")
    assert (ev.kind, ev.text) == (SERVER_CLOSE, "bye")
