"""Side by side: rsyslog and shipper forwarding the same qmail corpus to the same receiver.

    python bench/bench_e2e.py [--lines 1000000] [--runs 3] [--tls] [--latency]

Throughput mode: a corpus of N lines (bench/corpus.py, every line with a unique
TAI64N label) is written as a multilog ``current``; each forwarder reads it and
sends RFC 5424 octet-counted over TCP (or TLS) to bench/receiver.py on loopback.
For each, prints lines/s (first to last line received), MB/s, CPU seconds and
µs/line of the forwarder process (all its threads), peak RSS, missing and
duplicate lines, and the shipper/rsyslog ratio; medians of --runs.

rsyslog: imfile (inotify) → omfwd, RSYSLOG_SyslogProtocol23Format, octet-counted,
queues as in ../shared/reference/measured.md; it forwards the raw line.
shipper: `shipper run` with a multilog source, full parsing, disk buffer
(fsync every 100 ms), RFC 5424 with structured data; tracking off (it is a
separate feature; see bench_track.py).

Latency mode: real `multilog t` fed at 5,000 lines/s; the receiver measures
receipt time minus the line's TAI64N label (set by multilog when it read the
line), p50/p99/p99.9, for both forwarders, of all lines and of the steady ones
(without the first second after the start, and after --pause's idle spell).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from corpus import interpreter, write_file  # noqa: E402
from corpus import lines as corpus_lines  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the shipper's parse worker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def proc_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-days", "2", "-subj", "/CN=bench-ca")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "server.pem", d / "server.key"


def start_receiver(tmp: Path, port: int, expect: int, certs: tuple[Path, Path, Path] | None,
                   latency: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp / f"recv-{port}.json"
    cmd = [sys.executable, str(HERE / "receiver.py"), "--port", str(port), "--expect", str(expect),
           "--out", str(out)]
    if certs:
        cmd += ["--tls", str(certs[1]), str(certs[2])]
    if latency:
        cmd += ["--latency", "--series", str(out) + ".series"]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 20
    while not Path(str(out) + ".ready").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("receiver did not start")
        time.sleep(0.05)
    return proc, out


def rsyslog_conf(tmp: Path, current: Path, port: int, certs: tuple[Path, Path, Path] | None) -> Path:
    work = tmp / "rsyslog-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    glob = f'workDirectory="{work}" maxMessageSize="64k"'
    action_tls = ""
    if certs:
        glob += f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{certs[0]}"'
        action_tls = ' StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" ' \
                     'StreamDriverPermittedPeers="localhost"'
    conf = tmp / "rsyslog.conf"
    conf.write_text(f"""
global({glob})
module(load="imfile" mode="inotify")
input(type="imfile" file="{current}" tag="qmail" freshStartTail="off" reopenOnTruncate="on")
main_queue(queue.type="LinkedList" queue.size="200000" queue.dequeueBatchSize="1024")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted"
       template="RSYSLOG_SyslogProtocol23Format" action.resumeRetryCount="-1"{action_tls})
""")
    return conf


def shipper_conf(tmp: Path, logdir: Path, port: int, certs: tuple[Path, Path, Path] | None,
                 start: str = "all", workers: str = "auto") -> Path:
    state = tmp / "shipper-state"
    shutil.rmtree(state, ignore_errors=True)
    tls = ""
    if certs:
        tls = f'protocol = "tls"\n[sinks.siem.tls]\nca_file = "{certs[0]}"\nserver_name = "localhost"\n'
    else:
        tls = 'protocol = "tcp"\n'
    conf = tmp / "shipper.toml"
    conf.write_text(f"""
state_dir = "{state}"
[metrics]
enabled = false
[parse]
workers = {'"auto"' if workers == "auto" else int(workers)}
[sources.qmail]
type = "multilog"
paths = ["{logdir}"]
start_position = "{start}"
[tracking]
enabled = false
[sinks.siem]
type = "syslog"
host = "127.0.0.1"
port = {port}
{tls}""")
    return conf


def run_forwarder(name: str, cmd: list[str], recv: subprocess.Popen[bytes], out: Path, nbytes: int,
                  timeout: float) -> dict[str, float]:
    t0 = time.monotonic()
    fwd = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    cpu = hwm = 0.0
    # Worker processes count too: CPU and peak RSS are the sums over the tree.
    kids: dict[int, tuple[float, float]] = {}

    def sample() -> tuple[float, float]:
        for kid in children(fwd.pid):
            try:
                kids[kid] = (proc_cpu(kid), proc_hwm_mib(kid))
            except OSError:
                pass
        return (proc_cpu(fwd.pid) + sum(c for c, _ in kids.values()),
                proc_hwm_mib(fwd.pid) + sum(h for _, h in kids.values()))
    deadline = time.monotonic() + timeout
    try:
        while recv.poll() is None and time.monotonic() < deadline:
            if fwd.poll() is not None:
                raise SystemExit(f"{name} exited: {fwd.stderr.read().decode()[-2000:]}")
            cpu, hwm = sample()
            time.sleep(0.1)
        cpu, hwm = sample()
    finally:
        if fwd.poll() is None:
            os.kill(fwd.pid, signal.SIGTERM)
            try:
                fwd.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(fwd.pid, signal.SIGKILL)
                fwd.wait()
        if recv.poll() is None:
            os.kill(recv.pid, signal.SIGTERM)
            recv.wait(10)
    res = json.loads(out.read_text()) if out.exists() else {"distinct": 0, "duplicates": 0, "span_s": 0}
    span = res["span_s"] or 1e-9
    n = res["distinct"]
    wall = (res.get("last_mono") or 0) - t0
    return {"lines_s": n / span, "lines_s_wall": n / wall if wall > 0 else 0.0, "mb_s": nbytes / span / 1e6 if n else 0.0, "cpu_s": cpu,
            "cpu_us_line": cpu / max(n, 1) * 1e6, "rss_mib": hwm, "received": n,
            "duplicates": res["duplicates"], **{k: v for k, v in res.items() if k.startswith("latency")}}


def throughput(args: argparse.Namespace, tmp: Path) -> None:
    logdir = tmp / "corpus"
    logdir.mkdir()
    current = logdir / "current"
    nbytes = write_file(str(current), args.lines)
    print(f"corpus: {args.lines:,} lines, {nbytes / 1e6:.1f} MB, {'TLS' if args.tls else 'TCP'}; "
          f"shipper on {interpreter()}; load average {os.getloadavg()[0]:.2f}")
    certs = make_certs(tmp) if args.tls else None
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    results: dict[str, list[dict[str, float]]] = {"rsyslog": [], "shipper": []}
    for run in range(args.runs):
        for name in ("rsyslog", "shipper"):
            port = free_port()
            recv, out = start_receiver(tmp, port, args.lines, certs)
            if name == "rsyslog":
                conf = rsyslog_conf(tmp, current, port, certs)
                cmd = [rsyslogd, "-n", "-f", str(conf), "-i", str(tmp / "rsyslog.pid")]
            else:
                conf = shipper_conf(tmp, logdir, port, certs, workers=args.workers)
                cmd = [sys.executable, "-m", "shipper", "run", "-c", str(conf)]
            r = run_forwarder(name, cmd, recv, out, nbytes, args.timeout)
            results[name].append(r)
            print(f"  run {run + 1} {name:8}: {r['lines_s']:>10,.0f} lines/s  "
                  f"{r['lines_s_wall']:>9,.0f} from start  cpu {r['cpu_us_line']:.2f} µs/line  "
                  f"rss {r['rss_mib']:.0f} MiB  received {r['received']:,}  dups {r['duplicates']}")
    print()
    print(f"{'forwarder':10} {'lines/s':>10} {'from start':>10} {'MB/s':>7} {'CPU s':>7} {'CPU µs/line':>12} {'peak RSS MiB':>13} "
          f"{'missing':>8} {'dups':>6}")
    med = {}
    for name, rs in results.items():
        m = {k: statistics.median(r[k] for r in rs) for k in ("lines_s", "lines_s_wall", "mb_s", "cpu_s", "cpu_us_line",
                                                               "rss_mib", "received", "duplicates")}
        med[name] = m
        print(f"{name:10} {m['lines_s']:>10,.0f} {m['lines_s_wall']:>10,.0f} {m['mb_s']:>7.1f} {m['cpu_s']:>7.2f} {m['cpu_us_line']:>12.2f} "
              f"{m['rss_mib']:>13.0f} {args.lines - m['received']:>8,.0f} {m['duplicates']:>6.0f}")
    if med["rsyslog"]["lines_s"]:
        print(f"shipper/rsyslog: {med['shipper']['lines_s'] / med['rsyslog']['lines_s']:.2f} × lines/s "
              f"({med['shipper']['lines_s_wall'] / max(med['rsyslog']['lines_s_wall'], 1e-9):.2f} × from start), "
              f"{med['shipper']['cpu_us_line'] / max(med['rsyslog']['cpu_us_line'], 1e-9):.2f} × CPU per line")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def latency_figures(series: list[float], rate: int, pause_at: int | None) -> dict[str, float]:
    """Percentiles (ms) of all lines, and of the steady ones: without the first second
    after the start and after the pause, when this VM makes the first work after an
    idle spell up to 40 times slower (a page first touched after 5 s idle costs ~36 µs,
    without a fault in the guest: bench/bench_idle.py); the max of those first lines too."""
    cold = set(range(min(rate, len(series))))
    if pause_at is not None:
        cold |= set(range(pause_at, min(pause_at + rate, len(series))))
    steady = [v for i, v in enumerate(series) if i not in cold]
    out = {"p50": _pct(series, 0.5), "p99": _pct(series, 0.99), "p999": _pct(series, 0.999),
           "steady_p99": _pct(steady, 0.99), "steady_p999": _pct(steady, 0.999),
           "start_max": max(series[:100], default=0.0)}
    if pause_at is not None:
        out["after_pause_max"] = max(series[pause_at:pause_at + 100], default=0.0)
    return out


def latency(args: argparse.Namespace, tmp: Path) -> None:
    multilog = shutil.which("multilog") or "/usr/bin/multilog"
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    n = args.rate * args.seconds
    pause_at = n // 2 if args.pause else None
    print(f"latency: {n:,} lines at {args.rate:,}/s through real multilog"
          + (f", paused {args.pause:g} s after line {pause_at:,}" if pause_at else "")
          + f"; {args.runs} run(s); ms from multilog's label to receipt")
    print("  'steady': without the first second after the start" + (" and after the pause" if pause_at else "")
          + "; 'first 100': the slowest of the first 100 lines" + (" (and after the pause)" if pause_at else ""))
    table: dict[str, list[dict[str, float]]] = {"rsyslog": [], "shipper": []}
    for run in range(args.runs):
        for name in ("rsyslog", "shipper"):
            logdir = tmp / f"lat-{name}"
            shutil.rmtree(logdir, ignore_errors=True)
            port = free_port()
            recv, out = start_receiver(tmp, port, n, None, latency=True)
            # start with an empty current so both forwarders follow from the start
            subprocess.run([multilog, "t", "s1000000", "n20", str(logdir)], input=b"", check=True)
            if name == "rsyslog":
                conf = rsyslog_conf(tmp, logdir / "current", port, None)
                cmd = [rsyslogd, "-n", "-f", str(conf), "-i", str(tmp / "rsyslog.pid")]
            else:
                conf = shipper_conf(tmp, logdir, port, None, start="current")
                cmd = [sys.executable, "-m", "shipper", "run", "-c", str(conf)]
            fwd = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
            time.sleep(2.0)
            feeder = subprocess.Popen([multilog, "t", "s1000000", "n20", str(logdir)], stdin=subprocess.PIPE)
            assert feeder.stdin is not None
            t0 = time.monotonic()
            for i, line in enumerate(corpus_lines(n, seed=7)):
                if i == pause_at:
                    time.sleep(args.pause)
                    t0 += args.pause
                feeder.stdin.write(line[26:])  # multilog adds the label
                feeder.stdin.flush()
                delay = t0 + (i + 1) / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            feeder.stdin.close()
            feeder.wait(30)
            recv.wait(args.timeout)
            os.kill(fwd.pid, signal.SIGTERM)
            fwd.wait(30)
            res = json.loads(out.read_text())
            series = [int(v) / 1e6 for v in Path(str(out) + ".series").read_text().split()]
            fig = latency_figures(series, args.rate, pause_at)
            table[name].append(fig)
            print(f"  run {run + 1} {name:8} p50 {fig['p50']:.2f}  p99 {fig['p99']:.2f}  p99.9 {fig['p999']:.2f}  "
                  f"steady p99 {fig['steady_p99']:.2f}  p99.9 {fig['steady_p999']:.2f}  "
                  f"first 100 {fig['start_max']:.1f}"
                  + (f" / {fig['after_pause_max']:.1f}" if pause_at else "")
                  + f"  received {res['frames']:,}/{n:,} lines", flush=True)
    if args.runs > 1:
        for name, figs in table.items():
            med = {k: statistics.median(f[k] for f in figs) for k in figs[0]}
            print(f"  median  {name:8} p50 {med['p50']:.2f}  p99 {med['p99']:.2f}  p99.9 {med['p999']:.2f}  "
                  f"steady p99 {med['steady_p99']:.2f}  p99.9 {med['steady_p999']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--latency", action="store_true", help="latency mode instead of throughput")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--pause", type=float, default=0.0,
                    help="latency mode: stop feeding for this many seconds half-way (an idle spell)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--workers", default="auto", help='shipper\'s [parse] workers: "auto" or a number')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as tmp:
        if args.latency:
            latency(args, Path(tmp))
        else:
            throughput(args, Path(tmp))


if __name__ == "__main__":
    main()
