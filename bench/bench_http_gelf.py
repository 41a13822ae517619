"""Sink benchmark: GELF over UDP and HTTP ndjson into local counting receivers.

    python bench/bench_http_gelf.py [--records 100000] [--batch 1000]

Records are parsed from the realistic corpus (bench/corpus.py) first; the clock
covers encode + send only. Receivers run in a separate process (they count
datagrams / NDJSON lines) so they do not share our core. Prints records/s
(wall) and µs of our CPU per record. UDP may lose datagrams if the receiver
falls behind: the received count is printed next to the sent one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from corpus import lines  # noqa: E402

from shipper.parse import LineParser  # noqa: E402
from shipper.sinks.gelf import GelfUdpSink  # noqa: E402
from shipper.sinks.http import HttpSink  # noqa: E402

UDP_RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(1.0)
n = b = chunks = 0
while True:
    try:
        d = s.recv(65535)
    except TimeoutError:
        if n:
            break
        continue
    if d == b"STOP":
        break
    n += 1; b += len(d)
    if d[:2] == b"\x1e\x0f":
        chunks += 1
        if d[10] != d[11] - 1:
            n -= 1  # count a chunked message once, at its last chunk
print(n, b, chunks, flush=True)
"""

HTTP_RECEIVER = r"""
import http.server, gzip, sys, threading
count = [0, 0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        count[0] += body.count(b"\n"); count[1] += 1
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        out = f"{count[0]} {count[1]}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(out))); self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def records(n: int) -> list[dict]:
    parser = LineParser(source="/var/log/qmail/current", file_id="0123456789abcdef")
    out, off = [], 0
    for ln in lines(n):
        out.append(parser.parse(ln, off).to_dict())
        off += len(ln)
    return out


async def run_sink(sink, recs: list[dict], batch: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(recs), batch):
        await sink.send(recs[i:i + batch])
    await sink.close()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_udp(recs: list[dict], batch: int, compression: str, chunk_size: int, label: str,
              compress_min: int = 0) -> None:
    rx = subprocess.Popen([sys.executable, "-c", UDP_RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(rx.stdout.readline())
        sink = GelfUdpSink("127.0.0.1", port, compression=compression, chunk_size=chunk_size,
                           compress_min=compress_min)
        wall, cpu = asyncio.run(run_sink(sink, recs, batch))
        import socket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"STOP", ("127.0.0.1", port))
        got, nbytes, chunks = map(int, rx.stdout.readline().split())
    finally:
        rx.wait(10)
    n = len(recs)
    print(f"GELF UDP {label:<28} {n / wall:>10,.0f} rec/s  {cpu / n * 1e6:6.1f} µs CPU/rec  "
          f"received {got}/{n}  datagrams {sink.stats.extra['datagrams']:,} "
          f"({chunks:,} chunks, {nbytes / max(1, sink.stats.extra['datagrams']):.0f} B avg)")


def bench_http(recs: list[dict], batch: int, gzip: bool) -> None:
    rx = subprocess.Popen([sys.executable, "-c", HTTP_RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(rx.stdout.readline())
        sink = HttpSink(f"http://127.0.0.1:{port}/", "ndjson", gzip=gzip)
        wall, cpu = asyncio.run(run_sink(sink, recs, batch))
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        got, reqs = map(int, conn.getresponse().read().split())
        conn.close()
    finally:
        rx.terminate()
        rx.wait(10)
    n = len(recs)
    print(f"HTTP ndjson {'gzip' if gzip else 'plain':<25} {n / wall:>10,.0f} rec/s  "
          f"{cpu / n * 1e6:6.1f} µs CPU/rec  received {got}/{n} in {reqs} requests")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    recs = records(args.records)
    big = [dict(r, message=r["message"] * 40, raw=r["raw"] * 40) for r in recs[:args.records // 10]]
    print(f"{len(recs):,} records (corpus), batches of {args.batch}; python {sys.version.split()[0]}")
    bench_udp(recs, args.batch, "gzip", 1420, "gzip (default)")
    bench_udp(recs, args.batch, "zlib", 1420, "zlib")
    bench_udp(recs, args.batch, "none", 1420, "uncompressed")
    bench_udp(recs, args.batch, "gzip", 1420, "gzip, compress_min=1420", compress_min=1420)
    bench_udp(big, args.batch, "none", 1420, f"chunked ~{len(big[0]['raw']) * 2 // 1000} KB msgs")
    bench_http(recs, args.batch, gzip=False)
    bench_http(recs, args.batch, gzip=True)


if __name__ == "__main__":
    main()
