"""Syslog sink benchmark: records/s for RFC 5424 over TCP (octet-counted), TLS and UDP,
and RELP, into a local counting receiver running in another process.

    python bench/bench_sinks.py [--records 200000] [--batch 1000] [--runs 3] [--only tcp,tls,udp,relp]

Records are parsed from the benchmark corpus beforehand (parsing is not timed). For each
case it prints the sender's CPU time per record (encode + frame + send, one process, one
core) as records/s, the wall-clock rate until the receiver had counted every record, and
an "encode + frame only" figure without I/O. Target (issue 5): TCP octet-counted
>= 250,000 records/s encode+send on one core. UDP counts are what the receiver got: the
kernel drops datagrams when a receiver falls behind, which is UDP's nature.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from corpus import interpreter, lines  # noqa: E402

from shipper.cli import tune_gc  # noqa: E402
from shipper.encode.rfc5424 import Rfc5424Encoder  # noqa: E402
from shipper.framing import octet_counted_texts  # noqa: E402
from shipper.parse import LineParser, ParseOptions  # noqa: E402
from shipper.sinks.relp import RelpSink  # noqa: E402
from shipper.sinks.syslog import SyslogTcpSink, SyslogUdpSink  # noqa: E402
from shipper.tlsconfig import TlsOptions  # noqa: E402


def make_records(n: int) -> list[dict]:
    raw = list(itertools.islice(lines(n), n))
    parser = LineParser(ParseOptions(host="mx.example"), source="/var/log/qmail/current", file_id="0123456789abcdef")
    offsets = list(itertools.accumulate((len(ln) + 1 for ln in raw), initial=0))[:-1]
    return [r.to_dict() for r in parser.parse_batch(raw, offsets)]


def make_cert(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


# -- the counting receiver (another process)

def _count_octet_frames(buf: bytearray) -> tuple[int, int]:
    """Complete octet-counted frames in buf → (count, bytes consumed)."""
    count, pos, n = 0, 0, len(buf)
    while True:
        sp = buf.find(b" ", pos, pos + 12)
        if sp < 0:
            break
        end = sp + 1 + int(buf[pos:sp])
        if end > n:
            break
        count += 1
        pos = end
    return count, pos


def receiver(kind: str, cert: str | None, key: str | None, port_q: mp.Queue, counter, stop) -> None:
    async def tcp_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        while data := await reader.read(1 << 20):
            buf += data
            c, used = _count_octet_frames(buf)
            del buf[:used]
            with counter.get_lock():
                counter.value += c
        writer.close()

    async def relp_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        while data := await reader.read(1 << 20):
            buf += data
            out, pos, c = [], 0, 0
            while True:
                sp1 = buf.find(b" ", pos)
                sp2 = buf.find(b" ", sp1 + 1) if sp1 >= 0 else -1
                if sp2 < 0:
                    break
                j = sp2 + 1
                while j < len(buf) and 48 <= buf[j] <= 57:
                    j += 1
                if j >= len(buf):
                    break
                size = int(buf[sp2 + 1:j])
                end = j + (1 + size if size else 0)
                if end >= len(buf):
                    break
                txnr, cmd = bytes(buf[pos:sp1]), bytes(buf[sp1 + 1:sp2])
                if cmd == b"open":
                    body = b"200 OK\nrelp_version=0\nrelp_software=bench\ncommands=syslog"
                    out.append(b"%s rsp %d %s\n" % (txnr, len(body), body))
                elif cmd == b"syslog":
                    out.append(b"%s rsp 6 200 OK\n" % txnr)
                    c += 1
                else:
                    out.append(b"%s rsp 0\n" % txnr)
                pos = end + 1
            del buf[:pos]
            writer.write(b"".join(out))
            with counter.get_lock():
                counter.value += c
        writer.close()

    class Udp(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:
            with counter.get_lock():
                counter.value += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if kind == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:  # past net.core.rmem_max (4 MiB here) as root: the kernel drops less
                sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 << 20)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
            sock.bind(("127.0.0.1", 0))
            await loop.create_datagram_endpoint(Udp, sock=sock)
            port = sock.getsockname()[1]
        else:
            ctx = None
            if kind == "tls":
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cert, key)
            server = await asyncio.start_server(relp_conn if kind == "relp" else tcp_conn, "127.0.0.1", 0, ssl=ctx)
            port = server.sockets[0].getsockname()[1]
        port_q.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.05)

    asyncio.run(main())


# -- the sender (this process)

async def send_all(sink, records: list[dict], batch: int) -> None:
    for i in range(0, len(records), batch):
        await sink.send(records[i:i + batch])


def run_case(kind: str, records: list[dict], batch: int, cert: str | None, key: str | None
             ) -> tuple[tuple[float, float], float, int]:
    # The receiver is spawned, not forked: a forked child shares this process's pages,
    # and the sender's first write to each (a refcount of a record) then copies it: ~50,000
    # page faults a run, over 1 µs a record of kernel time that the daemon never pays.
    ctx = mp.get_context("spawn")
    counter, stop, port_q = ctx.Value("q", 0), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=receiver, args=(kind, cert, key, port_q, counter, stop), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=10)
        if kind == "udp":
            sink = SyslogUdpSink("127.0.0.1", port)
        elif kind == "relp":
            sink = RelpSink("127.0.0.1", port, window=1024)
        else:
            tls = TlsOptions(ca_file=cert) if kind == "tls" else None
            sink = SyslogTcpSink("127.0.0.1", port, tls=tls)

        async def go() -> tuple[tuple[float, float], float]:
            await sink.send(records[:10])  # connect and warm up outside the timing
            await asyncio.sleep(0.2)
            with counter.get_lock():
                counter.value = 0
            w0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            await send_all(sink, records, batch)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime)
            deadline = time.monotonic() + 30
            seen, still_since = -1, time.monotonic()
            while counter.value < len(records) and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
                if counter.value != seen:
                    seen, still_since = counter.value, time.monotonic()
                elif kind == "udp" and time.monotonic() - still_since > 1.0:
                    break  # datagrams the kernel dropped never come: not 30 s of wall time
            wall = time.perf_counter() - w0
            await sink.close()
            return cpu, wall

        cpu, wall = asyncio.run(go())
        return cpu, wall, counter.value
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def encode_only(records: list[dict], batch: int) -> float:
    """CPU seconds to encode and frame every batch as the TCP sink does (no I/O)."""
    enc = Rfc5424Encoder()
    c0 = time.process_time()
    for i in range(0, len(records), batch):
        octet_counted_texts(enc.encode_texts(records[i:i + batch]))
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="tcp,tls,udp,relp")
    args = ap.parse_args()
    tune_gc()
    records = make_records(args.records)
    n = len(records)
    fields = statistics.mean(len(r) for r in records)
    print(f"{interpreter()}; load average before: {os.getloadavg()[0]:.2f} (the CPU figures are sensitive to it)")
    print(f"{n:,} records from the benchmark corpus, {fields:.1f} keys each on average, batches of {args.batch}")
    cpu = statistics.median(encode_only(records, args.batch) for _ in range(args.runs))
    print(f"{'encode+frame only':<22} {n / cpu:>10,.0f} records/s CPU  {cpu / n * 1e6:5.2f} µs/record")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        for kind in args.only.split(","):
            results = [run_case(kind, records, args.batch, cert, key) for _ in range(args.runs)]
            results.sort(key=lambda r: sum(r[0]))
            (user, system), _, _ = results[len(results) // 2]
            cpu = user + system
            wall = statistics.median(r[1] for r in results)
            got = min(r[2] for r in results)
            label = {"tcp": "TCP octet-counted", "tls": "TLS octet-counted", "udp": "UDP",
                     "relp": "RELP (window 1024)"}[kind]
            print(f"{label:<22} {n / cpu:>10,.0f} records/s CPU  {cpu / n * 1e6:5.2f} µs/record "
                  f"(user {user / n * 1e6:.2f} + kernel {system / n * 1e6:.2f})  "
                  f"{n / wall:>10,.0f} records/s wall  received {got:,}/{n:,}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
