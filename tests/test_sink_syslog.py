"""Syslog sinks (UDP, TCP octet-counted and LF, TLS, mTLS) into a real rsyslogd.

rsyslog parses what we send with its own RFC 5424 parser and writes the fields it found
(host, app-name, procid, msgid, structured-data, msg) to a file; every field of every
record must come back as we meant it, across unicode, quotes, brackets and backslashes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
import time

import pytest
from conftest import await_until
from rsyslog_util import INPUTS, Rsyslog, make_certs, parse_sd
from test_rfc5424 import fixture_records

from shipper.encode.rfc5424 import Rfc3164Encoder, Rfc5424Encoder, param_text, sd_name
from shipper.sinks.base import Backoff, SinkError, deliver, describe_error
from shipper.sinks.syslog import SyslogTcpSink, SyslogUdpSink
from shipper.tlsconfig import TlsOptions

NOT_SD = {"message", "raw", "time", "host", "program", "pid", "event"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory, certs):
    r = Rsyslog(tmp_path_factory.mktemp("rsyslog"), tuple(i for i in INPUTS if not i.startswith("relp")), certs)
    r.start()
    yield r
    r.stop()


def nasty_records(tag: str, n: int = 6) -> list[dict]:
    """Records whose fields carry everything that needs care in RFC 5424."""
    texts = ['quote " here', "bracket ] and [ here", "back\\slash \\\\ twice", 'all "]\\ at once]',
             "unicode é ü 日本語 🙂", "tab\there = equals"]
    out = []
    for i in range(n):
        t = texts[i % len(texts)]
        out.append({"event_id": f"{tag}-{i:x}", "time": None, "time_unix_ns": 1_514_836_263_121_918_500 + i * 1000,
                    "time_source": "tai64n", "host": "mx.example", "program": "qmail-smtpd", "pid": 1000 + i,
                    "event": "smtp_decision", "action": "Reject", "mail_from": f'"{t}"@example.com',
                    "rcpt_to": f"rcpt{i}@example.org", "info": t, "weird key=]": t, "message": f"msg {i}: {t}",
                    "raw": f"raw {i}", "flags": ["redacted"] if i % 2 else [], "source": "/var/log/qmail/smtpd/current",
                    "file_id": "fedcba9876543210", "offset": i * 100})
    return out


def corpus(tag: str) -> list[dict]:
    recs = fixture_records()
    for i, r in enumerate(recs):
        r["event_id"] = f"{tag}-f{i:x}"
    return recs + nasty_records(tag)


def by_event_id(msgs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = collections.defaultdict(list)
    for m in msgs:
        (sd_id, params), = parse_sd(m["sd"])
        assert sd_id == "qmail@32473"
        m["params"] = params
        out[dict(params)["event_id"]].append(m)
    return out


def assert_parsed_as_meant(rec: dict, got: dict, lf: bool = False) -> None:
    """rsyslog's view of one message equals the record, field by field."""
    assert got["host"] == (rec["host"] or "-")
    assert got["app"] == (rec["program"] or "-")
    assert got["procid"] == ("-" if rec["pid"] is None else str(rec["pid"]))
    assert got["msgid"] == rec["event"]
    ns = rec["time_unix_ns"]
    assert got["ts"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9 // 1000:06d}Z"
    expected = [(sd_name(k), param_text(v)) for k, v in rec.items() if k not in NOT_SD and param_text(v) is not None]
    msg = rec["message"]
    if lf:  # LF framing: a newline anywhere in the message travels as #012
        expected = [(k, v.replace("\n", "#012")) for k, v in expected]
        msg = msg.replace("\n", "#012")
    assert got["params"] == expected
    assert got["msg"] == msg


async def send_all(sink, records, batch=20):
    for i in range(0, len(records), batch):
        await sink.send(records[i:i + batch])
    confirm = getattr(sink, "confirm", None)
    if confirm is not None:  # a stream sink counts acked what the peer's TCP confirmed
        deadline = time.monotonic() + 10
        while sink.stats.acked < sink.stats.sent and time.monotonic() < deadline:
            confirm()
            await asyncio.sleep(0.02)
    await sink.close()


def check_all_arrived(r: Rsyslog, name: str, records: list[dict], lf: bool = False) -> None:
    got = by_event_id(r.wait_messages(name, len(records)))
    for rec in records:
        assert len(got[rec["event_id"]]) == 1, rec["event_id"]
        assert_parsed_as_meant(rec, got[rec["event_id"]][0], lf)


async def test_udp(rsyslog):
    recs = corpus("udp")
    big = dict(recs[0], event_id="udp-big", message="x" * 3000 + "é" * 10)
    sink = SyslogUdpSink("127.0.0.1", rsyslog.ports["udp"])
    await send_all(sink, recs + [big])
    check_all_arrived(rsyslog, "udp", recs)
    assert sink.stats.sent == len(recs) + 1 and sink.stats.truncated == 1
    (cut,) = by_event_id(rsyslog.messages("udp"))["udp-big"]
    assert dict(cut["params"])["truncated"] == "1"
    assert cut["msg"].startswith("xxxx") and len(cut["raw"].encode()) <= 1472
    with pytest.raises(ValueError):
        SyslogUdpSink("127.0.0.1", 1, encoder=Rfc5424Encoder(max_size=8192))


async def test_udp_to_a_name_whose_first_address_refuses_tries_the_next(rsyslog, dual_stack_name):
    """Found by fault injection: host = a name of ::1 and 127.0.0.1 (localhost) with the
    receiver on 127.0.0.1 only (rsyslog's imudp address=): every try went to ::1, was
    refused, and not one record was delivered, for good. TCP tries each address."""
    recs = corpus("udp-dual")
    sink = SyslogUdpSink(dual_stack_name, rsyslog.ports["udp"])
    stop = asyncio.Event()
    after = None  # the batch whose send was refused: sent again, to the next address
    for i in range(0, len(recs), 5):
        failed = sink.stats.failed
        assert await asyncio.wait_for(deliver(sink, recs[i:i + 5], Backoff(base=0.01), stop), 10)
        if after is None and sink.stats.failed > failed:
            after = i
        await asyncio.sleep(0.01)  # ICMP's refusal comes a moment after the datagram
    await sink.close()
    # what went to ::1 before the refusal came back is lost (UDP cannot tell), how many
    # depends on when the kernel reports it; from the refused batch on, nothing is
    assert after is not None
    check_all_arrived(rsyslog, "udp", recs[after:])


@pytest.mark.parametrize("framing", ["octet-counted", "lf"])
async def test_tcp(rsyslog, framing):
    recs = corpus(f"tcp-{framing}")
    recs[0]["message"] = "first line\nsecond line\n  third"  # multi-line message
    sink = SyslogTcpSink("127.0.0.1", rsyslog.ports["tcp"], framing=framing)
    await send_all(sink, recs)
    lf = framing == "lf"
    got = by_event_id(rsyslog.wait_messages("tcp", len(recs)))
    for rec in recs:
        (m,) = got[rec["event_id"]]
        assert_parsed_as_meant(rec, m, lf)
    assert sink.stats.sent == sink.stats.acked == len(recs)


FORGED = "<38>1 2018-01-01T20:51:04Z dc1.corp sshd 777 - - Accepted password for root from 10.0.0.5"


@pytest.mark.parametrize("fmt", ["rfc5424", "rfc3164"])
async def test_lf_framing_escapes_every_trailer(rsyslog, fmt):
    """A NUL (syslog-ng's other trailer, RFC 6587 3.4.2) or a CR inside a line must not end
    the frame: the text after it would be a record of its own, host and program forged."""
    encoder = Rfc3164Encoder() if fmt == "rfc3164" else Rfc5424Encoder()
    texts = [f"HELO x\0{FORGED}", f"HELO y\r{FORGED}", f"HELO z\r\n{FORGED}\0"]
    recs = nasty_records(f"nul-{fmt}", len(texts))
    for rec, text in zip(recs, texts, strict=True):
        rec["message"] = rec["info"] = text
    before = len(rsyslog.messages("tcp_nul"))  # the receiver is shared by both formats
    sink = SyslogTcpSink("127.0.0.1", rsyslog.ports["tcp_nul"], framing="lf", encoder=encoder)
    await send_all(sink, recs)
    got = rsyslog.wait_messages("tcp_nul", before + len(recs))[before:]
    assert not any("dc1.corp" in m["host"] or m["msg"].startswith("Accepted") for m in got), got
    escaped = [t.replace("\n", "#012").replace("\r", "#015").replace("\0", "#000") for t in texts]
    # rsyslog's RFC 3164 %msg% keeps the space after "tag:"
    assert [m["msg"].removeprefix(" ") if fmt == "rfc3164" else m["msg"] for m in got] == escaped


async def test_tls_and_mtls(rsyslog, certs):
    recs = corpus("tls")
    tls = TlsOptions(ca_file=str(certs.ca))
    await send_all(SyslogTcpSink("127.0.0.1", rsyslog.ports["tls"], tls=tls), recs)
    check_all_arrived(rsyslog, "tls", recs)

    recs = corpus("mtls")
    mtls = TlsOptions(ca_file=str(certs.ca), cert_file=str(certs.client_cert), key_file=str(certs.client_key),
                      server_name="localhost")
    await send_all(SyslogTcpSink("127.0.0.1", rsyslog.ports["mtls"], tls=mtls), recs)
    check_all_arrived(rsyslog, "mtls", recs)

    # without a client certificate the mTLS receiver takes nothing, and no batch counts
    # as delivered: under TLS 1.3 the refusal comes a round trip after our handshake
    # (the sink waits for it before writing)
    sink = SyslogTcpSink("127.0.0.1", rsyslog.ports["mtls"], tls=tls)
    try:
        for attempt in range(3):
            with pytest.raises(SinkError):
                await sink.send(nasty_records(f"nocert{attempt}", 2))
        assert sink.stats.sent == 0
    finally:
        await sink.close()
    assert not any(k.startswith("nocert") for k in by_event_id(rsyslog.messages("mtls")))


def test_tls_server_name_mismatch_is_a_clear_error(rsyslog, certs):
    async def attempt():
        sink = SyslogTcpSink("127.0.0.1", rsyslog.ports["tls"],
                             tls=TlsOptions(ca_file=str(certs.ca), server_name="not-this-host"))
        with pytest.raises(SinkError) as err:
            await sink.send(nasty_records("mismatch", 1))
        await sink.close()
        return str(err.value)
    text = asyncio.run(attempt())
    assert "certificate verification failed" in text and "not-this-host" in text
    # and what to do, found installing as an admin
    assert text.endswith("(the certificate does not hold that name: set host, or tls.server_name, "
                         "to one it holds)"), text


async def test_receiver_restarted_mid_stream_loses_nothing(tmp_path):
    r = Rsyslog(tmp_path / "rs", ("tcp",))
    r.start()
    sink = SyslogTcpSink("127.0.0.1", r.ports["tcp"], connect_timeout=2.0)
    recs = [dict(rec, event_id=f"rs-{i:x}") for i, rec in enumerate(nasty_records("x", 300))]
    batches = [recs[i:i + 50] for i in range(0, len(recs), 50)]
    try:
        for n, batch in enumerate(batches):
            assert await deliver(sink, batch, Backoff(base=0.05, cap=0.5))
            if n == 2:
                # the receiver took batches 0-2, then restarts while our connection idles
                await asyncio.to_thread(r.wait_messages, "tcp", 150)
                r.stop()
                threading.Timer(0.5, r.start).start()
        await sink.close()
        got = by_event_id(await asyncio.to_thread(r.wait_messages, "tcp", len(recs)))
    finally:
        await asyncio.sleep(0.7)
        r.stop()
    assert set(got) == {rec["event_id"] for rec in recs}  # nothing lost
    dupes = {k for k, v in got.items() if len(v) > 1}
    assert dupes <= {rec["event_id"] for rec in batches[3]}  # only from the re-sent batch
    for k in dupes:
        assert all(m["params"] == got[k][0]["params"] for m in got[k])
    # the close was seen before batch 3 was written into the dead connection
    assert sink.stats.extra["peer_closed"] == 1 and sink.stats.failed >= 1


async def test_receiver_unreachable_at_start_then_delivers(tmp_path):
    r = Rsyslog(tmp_path / "rs", ("tcp",))  # ports chosen, not started yet
    sink = SyslogTcpSink("127.0.0.1", r.ports["tcp"], connect_timeout=1.0)
    recs = nasty_records("late", 20)
    started = threading.Timer(1.0, r.start)
    started.start()
    try:
        t0 = time.monotonic()
        assert await deliver(sink, recs, Backoff(base=0.05, cap=0.3))
        assert time.monotonic() - t0 >= 0.9
        assert sink.stats.failed >= 1 and "connect failed" in sink.stats.last_error
        await sink.close()
        got = by_event_id(await asyncio.to_thread(r.wait_messages, "tcp", len(recs)))
        assert sorted(got) == sorted(rec["event_id"] for rec in recs)
    finally:
        started.join()
        r.stop()


async def test_tls_peer_that_never_answers_the_handshake_times_out():
    """rsyslog #5539: a peer accepts TCP and then says nothing; we must not hang."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # accept, keep open, never answer
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        sink = SyslogTcpSink("127.0.0.1", srv.getsockname()[1], tls=TlsOptions(verify=False, handshake_timeout=0.5))
        t0 = time.monotonic()
        with pytest.raises(SinkError) as err:
            await sink.send(nasty_records("hang", 1))
        assert time.monotonic() - t0 < 3.0
        assert "TLS handshake timed out after 0.5s" in str(err.value)
        assert held  # the TCP connection really was accepted
        await sink.close()
    finally:
        stop.set()
        th.join(2)
        for s in held:
            s.close()
        srv.close()


async def test_wrong_server_certificate_clear_error_retries_then_delivers(tmp_path, certs):
    r = Rsyslog(tmp_path / "rs", ("tls",), certs)
    r.use_server_cert(certs.other_server_cert, certs.other_server_key)  # signed by a CA we do not trust
    r.start()
    sink = SyslogTcpSink("127.0.0.1", r.ports["tls"], tls=TlsOptions(ca_file=str(certs.ca)), connect_timeout=2.0)
    recs = nasty_records("wrongcert", 10)
    try:
        task = asyncio.create_task(deliver(sink, recs, Backoff(base=0.05, cap=0.3)))
        deadline = time.monotonic() + 10
        while sink.stats.failed < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sink.stats.failed >= 2 and not task.done()
        assert "TLS certificate verification failed" in sink.stats.last_error
        assert "unable to get local issuer certificate" in sink.stats.last_error
        # and what to do, found installing as an admin
        assert "(tls.ca_file must hold the CA that signed the receiver's certificate (or tls.ca_dir, under " \
               "its hash name: openssl rehash DIR))" in sink.stats.last_error
        # the operator fixes the server's certificate: the same batch gets through
        r.stop()
        r.use_server_cert(certs.server_cert, certs.server_key)
        r.start()
        assert await asyncio.wait_for(task, 15)
        await sink.close()
        got = by_event_id(await asyncio.to_thread(r.wait_messages, "tls", len(recs)))
        assert sorted(got) == sorted(rec["event_id"] for rec in recs)
    finally:
        r.stop()


@contextlib.asynccontextmanager
async def _sending_to_a_peer_that_never_reads():
    """A TCP sink in the middle of a big send to a receiver that accepts and never reads
    (as a stopped one): (sink, the send's task)."""
    from conftest import free_port

    port = free_port()
    conns = []

    async def hold(reader, writer):  # accept, never read
        conns.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", port)
    try:
        sink = SyslogTcpSink("127.0.0.1", port, write_timeout=30, name="stuck")
        rec = {"time_unix_ns": 1, "host": "h", "program": "p", "event": "e", "pid": None,
               "flags": [], "message": "x" * 4000}
        send = asyncio.create_task(sink.send([rec] * 5000))
        await await_until("the peer's buffers are full", lambda: sink._writer is not None
                          and sink._writer.transport.get_write_buffer_size() > 0)
        yield sink, send
    finally:
        for w in conns:
            w.transport.abort()
        server.close()
        await server.wait_closed()


async def test_close_with_a_peer_that_stopped_reading_returns_quietly():
    """Found by fault injection: with a receiver that accepts and never reads, the
    timed-out wait_closed() cancelled the stream's close waiter, and the next close
    raised CancelledError (no Exception): a reload or stop killed the daemon."""
    async with _sending_to_a_peer_that_never_reads() as (sink, send):
        # a send stuck on the full socket buffers, cancelled as a stop or reload does
        assert not send.done()
        send.cancel()
        await asyncio.gather(send, return_exceptions=True)
        t0 = time.monotonic()
        await sink.close()  # must neither raise nor hang
        await sink.close()
        assert time.monotonic() - t0 < 6


async def test_a_close_cut_short_still_closes_the_connection():
    """A reload gives a sink's close a short time (wait_for); with a receiver that
    stopped reading, the graceful close outlasts it. Cancelled there, the connection
    stayed open, its socket and send queue with it, one more at every reload (a
    tester: 5 connections and 3.8 MB queued each after 5 reloads)."""
    async with _sending_to_a_peer_that_never_reads() as (sink, send):
        writer = sink._writer
        sock = writer.transport.get_extra_info("socket")
        send.cancel()
        await asyncio.gather(send, return_exceptions=True)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sink.close(), 0.2)
        assert sock.fileno() == -1, "the connection was left open"
        assert sink._writer is None and not sink.stats.connected


@pytest.mark.parametrize(("exc", "text"), [
    # getaddrinfo's codes are not errno's: os.strerror(-2) says "Unknown error -2"
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     "cannot resolve the host name: Name or service not known"),
    (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)"), "Connection refused"),
    (TimeoutError(), "timed out"),
    (ConnectionAbortedError("SSL handshake is taking longer than 1.0 seconds: aborting the connection"),
     "TLS handshake timed out"),
    (EOFError(), "EOFError"),
])
def test_every_sink_describes_an_error_in_one_clear_line(exc: BaseException, text: str) -> None:
    assert describe_error(exc) == text


async def test_defaults_fit_a_stock_rsyslog_so_a_long_line_cannot_forge_a_record(tmp_path):
    """A fault hunt against rsyslog as installed (maxMessageSize 8096): our default of
    8192 let messages of 8,097-8,192 bytes through, which imtcp cut without a flag and
    whose tail it parsed as a message of its own: an SMTP client's HELO made a record of
    host dc1.corp, app sshd, "Accepted password for root". imrelp cut a 20 KB message
    (RELP's default was 128 KiB) and answered 200 OK. With the defaults every message
    arrives whole or flagged truncated, one message per record."""
    from shipper.assemble import build_sink
    from shipper.config import load_config_text

    r = Rsyslog(tmp_path / "rs", ("tcp", "relp"), max_message_size=None)
    r.start()
    forged = "X<38>1 2024-01-01T00:00:00Z dc1.corp sshd 999 - - Accepted password for root"
    try:
        for name, kind in (("tcp", 'type = "syslog"\nprotocol = "tcp"'), ("relp", 'type = "relp"')):
            cfg = load_config_text(f'[sources.q]\ntype = "stdin"\n[sinks.s]\n{kind}\nhost = "127.0.0.1"\n'
                                   f'port = {r.ports[name]}\n', env={})
            sink = build_sink(cfg.sinks["s"])
            recs = nasty_records(name, 4)
            for i, rec in enumerate(recs):  # around rsyslog's limit, and far over it
                pad = (7700, 7790, 7900, 20000)[i]
                rec["message"] = "helo " + "z" * (pad - len(forged)) + forged
            await send_all(sink, recs, batch=4)
            msgs = r.wait_messages(name, len(recs))
            assert len(msgs) == len(recs), [m["host"] for m in msgs]
            assert all(m["host"] != "dc1.corp" and m["app"] != "sshd" for m in msgs)
            got = by_event_id(msgs)
            for rec in recs:
                (m,) = got[rec["event_id"]]
                cut = dict(parse_sd(m["sd"])[0][1]).get("truncated") == "1"
                assert cut or m["msg"] == rec["message"], (name, len(rec["message"]))
            assert "oversize" not in r.stderr() and "frame too long" not in r.stderr(), r.stderr()[-2000:]
    finally:
        r.stop()


async def test_a_handshake_answered_by_a_reset_names_the_likely_causes():
    """A fault hunt: min_version TLSv1.3 against a TLS 1.2 rsyslog said only "TLS handshake
    failed: ConnectionResetError"; gnutls answers a hello it will not take with a reset."""
    from shipper.sinks.syslog import open_stream

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def reset_the_hello() -> None:
        peer, _ = lsock.accept()
        peer.recv(4096)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        peer.close()

    t = threading.Thread(target=reset_the_hello, daemon=True)
    t.start()
    try:
        tls = TlsOptions(verify=False, min_version="TLSv1.3", handshake_timeout=5)
        from shipper.tlsconfig import client_context
        with pytest.raises(SinkError) as err:
            await open_stream("127.0.0.1", lsock.getsockname()[1], tls=tls, ssl_context=client_context(tls),
                              connect_timeout=5, keepalive=None)
        assert "TLS handshake failed" in str(err.value) and "TLS 1.3 or later (tls.min_version)" in str(err.value)
    finally:
        t.join(5)
        lsock.close()
