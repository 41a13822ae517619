"""The RELP client state machine (pure), fed with the frames rsyslog's imrelp sends."""

from __future__ import annotations

import pytest

from shipper.relp import (
    ACKED,
    BROKEN,
    CLOSE_ACKED,
    CLOSED,
    ERROR,
    MAX_TXNR,
    OPEN,
    OPENED,
    REFUSED,
    SERVER_CLOSE,
    RelpClient,
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
