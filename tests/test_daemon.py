"""The daemon end to end: real multilog → `shipper run` → real rsyslog, with reloads,
restarts and stops under load, also under real daemontools `supervise`."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, require_binary, wait_until
from rsyslog_util import Rsyslog

from shipper import daemon

ROOT = Path(__file__).resolve().parent.parent
SEQ_RE = re.compile(r"seq (\d+)")

WRITER = r"""
import sys, time
rate, n, start = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = sys.stdout
t0 = time.monotonic()
for i in range(start, start + n):
    out.write(f"status: local 0/10 remote 1/20 seq {i} " + "x" * 40 + "\n")
    if i % 50 == 0:
        out.flush()
        lag = t0 + (i - start) / rate - time.monotonic()
        if lag > 0:
            time.sleep(lag)
out.flush()
"""


def _config(tmp: Path, logdir: Path, port: int, metrics_port: int, extra: str = "") -> str:
    return f"""
state_dir = "{tmp / 'state'}"
drain_timeout = "10s"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[parse]
host = "test-mx"

[sources.send]
type = "multilog"
paths = ["{logdir}"]
start_position = "all"

[tracking]
enabled = false

[buffer]
fsync = "interval"
fsync_interval_ms = 50

[sinks.siem]
type = "syslog"
protocol = "tcp"
host = "127.0.0.1"
port = {port}
{extra}
"""


def _seqs(rs: Rsyslog) -> list[int]:
    out = []
    for m in rs.messages("tcp"):
        g = SEQ_RE.search(m["msg"])
        if g:
            out.append(int(g.group(1)))
    return out


def _wait_seqs(rs: Rsyslog, n: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    seqs = _seqs(rs)
    while len(set(seqs)) < n and time.monotonic() < deadline:
        time.sleep(0.2)
        seqs = _seqs(rs)
    return seqs


def _bytes_under(top: Path) -> int:
    """Bytes of the files under ``top`` (one the shipper removes meanwhile counts 0)."""
    total = 0
    for f in top.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            total += f.stat().st_size if f.is_file() else 0
    return total


def _start_shipper(config: Path, log: Path) -> subprocess.Popen[bytes]:
    f = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "shipper", "run", "-c", str(config)],
                                stdout=f, stderr=f, cwd=ROOT)
    finally:
        f.close()


def _hup_until(proc: subprocess.Popen[bytes], log: Path, said: str, timeout: float = 20) -> None:
    """SIGHUP the running shipper and wait until its log says ``said``."""
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while said not in log.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
        time.sleep(0.05)


def _one_log_to_a_file(tmp_path: Path, top: str = "") -> tuple[Path, str]:
    """A log directory with an empty current and a config following it into a file sink,
    metrics off (``top``: more top-level settings): (the config's path, its text, written)."""
    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "current").write_bytes(b"")
    cfg = tmp_path / "shipper.toml"
    text = (f'state_dir = "{tmp_path}/state"\n{top}[metrics]\nenabled = false\n'
            f'[sources.q]\ntype = "multilog"\npaths = ["{logdir}"]\n'
            f'[sinks.a]\ntype = "file"\npath = "{tmp_path}/a.ndjson"\n')
    cfg.write_text(text)
    return cfg, text


def _start_ready(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start shipper and wait until it logged "started" (its signal handlers in place):
    a SIGTERM before that ends it the default way, which is not what is tested here."""
    before = log.read_text().count(" started: ") if log.exists() else 0
    proc = _start_shipper(config, log)
    deadline = time.monotonic() + 30
    try:
        while (log.read_text().count(" started: ") if log.exists() else 0) == before:
            assert time.monotonic() < deadline and proc.poll() is None, "shipper did not start"
            time.sleep(0.05)
    except BaseException:
        _stop(proc, signal.SIGKILL)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        pytest.fail("shipper did not stop in time")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + want + "}" if want else " ")) or (
                not want and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _end_all(started: list[subprocess.Popen[bytes]], writer: subprocess.Popen[bytes]) -> None:
    """Kill what a test started and left running: its shippers, then its writer."""
    for p in started:
        if p.poll() is None:
            _stop(p, signal.SIGKILL)
    if writer.poll() is None:
        writer.kill()


@pytest.fixture
def receiver(tmp_path):
    rs = Rsyslog(tmp_path / "rsyslog", ("tcp",))
    rs.start()
    yield rs
    rs.stop()


@pytest.mark.slow
def test_reload_restart_and_stop_under_load_lose_nothing(tmp_path, receiver):
    multilog = require_binary("multilog")
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    mport = free_port()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, receiver.ports["tcp"], mport))
    shlog = tmp_path / "shipper.log"
    total = 30000
    # s16384 n400 keeps ~55,000 lines, the whole run: the stop, the restarts and the
    # kill below put the shipper seconds behind on a loaded machine (s8192 n500 kept
    # 4.9 s of lines, less than two slow starts and the pauses), and a line multilog
    # deleted unread is not the loss this test looks for
    writer = subprocess.Popen(f"{sys.executable} -c '{WRITER}' 6000 {total} 0 | {multilog} t s16384 n400 {logdir}",
                              shell=True)
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        started.append(_start_ready(cfg, shlog))
        return started[-1]

    def acked() -> float:
        return _metric(_scrape(mport), "shipper_sink_acked_total", sink="siem")

    try:
        proc = start()
        # metrics move (waited for: a loaded machine acknowledges the first batch late)
        wait_until("a first batch acknowledged", lambda: acked() > 0)
        text = _scrape(mport)
        assert _metric(text, "shipper_build_info", version=__import__("shipper").__version__,
                       state_dir=str(tmp_path / "state")) == 1
        first_acked = _metric(text, "shipper_sink_acked_total", sink="siem")
        assert first_acked > 0
        assert _metric(text, "shipper_source_lines_total", source=str(logdir)) >= first_acked
        wait_until("more acknowledged", lambda: acked() > first_acked)
        st = subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(cfg)],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 0, st.stderr
        rows = st.stdout.splitlines()
        assert any(r.startswith(str(logdir)[-50:]) for r in rows), st.stdout
        assert any(r.split()[:2] == ["siem", "up"] for r in rows), st.stdout
        # an invalid config is refused and the old one keeps running
        cfg.write_text(cfg.read_text() + "\n[sinks.bad]\ntype = \"nosuch\"\n")
        os.kill(proc.pid, signal.SIGHUP)
        wait_until("reload refused", lambda: "reload refused" in shlog.read_text() or proc.poll() is not None)
        assert proc.poll() is None
        # a valid change is taken: add a file sink (at most a reload a second: waited for)
        cfg.write_text(_config(tmp_path, logdir, receiver.ports["tcp"], mport,
                               extra=f'\n[sinks.copy]\ntype = "file"\npath = "{tmp_path / "copy.ndjson"}"\n'))
        os.kill(proc.pid, signal.SIGHUP)
        wait_until("reloaded", lambda: "reloaded" in shlog.read_text() or proc.poll() is not None)
        assert proc.poll() is None
        # stop (SIGTERM) while multilog keeps writing, then start again
        assert _stop(proc) == 0
        time.sleep(1.0)
        proc = start()
        time.sleep(1.0)
        # SIGKILL too: the checkpoint only covers durable appends
        _stop(proc, signal.SIGKILL)
        proc = start()
        assert writer.wait(60) == 0
        seqs = _wait_seqs(receiver, total, 60)
        assert _stop(proc) == 0
    finally:
        _end_all(started, writer)
    missing = set(range(total)) - set(seqs)
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:10]}; log: {shlog.read_text()[-3000:]}"
    # duplicates only from batches re-sent after the SIGKILL, each with its first copy's id
    dups = len(seqs) - len(set(seqs))
    assert dups <= total // 2
    ids: dict[int, str] = {}
    for m in receiver.messages("tcp"):
        g = SEQ_RE.search(m["msg"])
        eid = re.search(r'event_id="([^"]+)"', m["sd"])
        assert g and eid
        assert ids.setdefault(int(g.group(1)), eid.group(1)) == eid.group(1)
    copied = (tmp_path / "copy.ndjson").read_bytes().count(b"\n")
    assert copied > 0


@pytest.mark.slow
def test_under_daemontools_supervise(tmp_path, receiver):
    supervise = require_binary("supervise")
    svc = require_binary("svc")
    multilog = require_binary("multilog")
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, receiver.ports["tcp"], free_port()))
    service = tmp_path / "service" / "shipper"
    shutil.copytree(ROOT / "service" / "shipper", service)  # as installed: no ./env
    # The shipped run script, with only the user, the program path and the config
    # path changed for a test (no "shipper" user exists here).
    shipped = (ROOT / "service" / "shipper" / "run").read_text()
    run = shipped.replace("setpriv --reuid=shipper --regid=shipper --init-groups ", "").replace(
        "shipper run -c /etc/shipper/shipper.toml", f"{sys.executable} -m shipper run -c {cfg}").replace(
        "shipper check -c /etc/shipper/shipper.toml", f"{sys.executable} -m shipper check -c {cfg}")
    assert run != shipped and 'envdir="envdir ./env"' in run and "shipper check -c /etc" not in run
    (service / "run").write_text(run)
    (service / "run").chmod(0o755)
    out = open(tmp_path / "supervise.out", "wb")  # noqa: SIM115 - handed to the child
    total = 15000
    writer = subprocess.Popen(f"{sys.executable} -c '{WRITER}' 5000 {total} 0 | {multilog} t s8192 n500 {logdir}",
                              shell=True)
    sup = subprocess.Popen([supervise, str(service)], stdout=out, stderr=out)
    out.close()
    svstat = require_binary("svstat")

    def wait_for(what: str, n: int = 1) -> None:
        """Each step waits for the one before (a busy machine: a -d while the -t is
        still draining makes supervise start once, not twice)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if what == "down":
                if ": down " in subprocess.run([svstat, str(service)], capture_output=True, text=True,
                                               timeout=10).stdout:
                    return
            elif (tmp_path / "supervise.out").read_text(errors="replace").count(what) >= n:
                return
            time.sleep(0.05)
        pytest.fail(f"no {what!r} ({n}) in 30 s")

    try:
        wait_for("started")
        subprocess.run([svc, "-h", str(service)], check=True, timeout=10)  # reload
        wait_for("reloaded")
        subprocess.run([svc, "-t", str(service)], check=True, timeout=10)  # restart
        wait_for("started", 2)
        subprocess.run([svc, "-d", str(service)], check=True, timeout=10)  # stop
        wait_for("down")
        subprocess.run([svc, "-u", str(service)], check=True, timeout=10)  # up again
        wait_for("started", 3)
        assert writer.wait(60) == 0
        seqs = _wait_seqs(receiver, total, 60)
    finally:
        subprocess.run([svc, "-dx", str(service)], timeout=10)
        try:
            sup.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(sup.pid, signal.SIGKILL)
            sup.wait(5)
        if writer.poll() is None:
            writer.kill()
    missing = set(range(total)) - set(seqs)
    log = (tmp_path / "supervise.out").read_text(errors="replace")
    assert not missing, f"{len(missing)} lines lost, e.g. {sorted(missing)[:10]}; log: {log[-3000:]}"
    assert "reloaded" in log and log.count("started") == 3, log  # start, restart (-t), up (-u)


@pytest.mark.slow
def test_sink_down_then_up_every_line_arrives_in_order(tmp_path):
    """The SIEM is down when shipper starts and for a while: records wait in the disk
    buffer, then arrive, every one, in order."""
    multilog = require_binary("multilog")
    rs = Rsyslog(tmp_path / "rsyslog", ("tcp",))  # ports chosen, not started yet
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, rs.ports["tcp"], free_port()))
    shlog = tmp_path / "shipper.log"
    total = 8000
    writer = subprocess.Popen(f"{sys.executable} -c '{WRITER}' 4000 {total} 0 | {multilog} t s8192 n500 {logdir}",
                              shell=True)
    proc = _start_shipper(cfg, shlog)
    try:
        time.sleep(3.0)  # outage: the shipper retries with backoff, the buffer fills
        # (waited for too: a loaded machine starts the shipper and reads later)
        wait_until("100 kB buffered", lambda: _bytes_under(tmp_path / "state") > 100_000)
        rs.start()
        assert writer.wait(60) == 0
        seqs = _wait_seqs(rs, total, 60)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
        if writer.poll() is None:
            writer.kill()
        rs.stop()
    first_seen: list[int] = []
    seen: set[int] = set()
    for s in seqs:
        if s not in seen:
            seen.add(s)
            first_seen.append(s)
    assert first_seen == list(range(total)), f"log: {shlog.read_text()[-2000:]}"
    # a clean stop says it ended with everything delivered (it said only "stopping")
    assert shlog.read_text().rstrip().endswith("INFO shipper: stopped: everything read was delivered"), \
        shlog.read_text()[-500:]


def test_a_mail_spanning_a_kill_9_is_still_one_record(tmp_path):
    """Open mails are saved with the checkpoints they match: SIGKILL the shipper
    between a mail's `starting delivery` and its `delivery`/`end msg`, start it
    again, and the mail record has its sender and its delivery, once."""
    records = _mail_across_kill_9(tmp_path, "0.5s", wait_for_state=True)
    raw = [r["event"] for r in records if r["event"] != "mail"]
    assert raw.count("delivery") == 1 and raw.count("end_msg") == 1


def test_no_checkpoint_is_written_ahead_of_the_tracking_state(tmp_path):
    """Found by a probe: checkpoints were written every 0.5 s, the tracking state every
    30 s; a kill -9 in between skipped, at the restart, lines the saved state had not
    seen (a mail with no sender and no delivery, or one sent again changed under its
    event id). A checkpoint is now written only with the state."""
    records = _mail_across_kill_9(tmp_path, "1h", wait_for_state=False)
    # what was read again after the kill comes again, under the same event ids
    by_id: dict[str, list[dict]] = {}
    for r in records:
        by_id.setdefault(r["event_id"], []).append(r)
    assert all(len({(r["event"], r.get("raw")) for r in same}) == 1 for same in by_id.values())


def _mail_across_kill_9(tmp_path: Path, save_interval: str, wait_for_state: bool) -> list[dict]:
    multilog = require_binary("multilog")
    logdir = tmp_path / "send"
    out = tmp_path / "out.ndjson"
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
[metrics]
enabled = false
[parse]
host = "test-mx"
[sources.send]
type = "multilog"
paths = ["{logdir}"]
start_position = "all"
[tracking]
enabled = true
save_interval = "{save_interval}"
[sinks.out]
type = "file"
path = "{out}"
""")

    def log(*lines: str) -> None:
        subprocess.run([multilog, "t", str(logdir)], input="".join(f"{ln}\n" for ln in lines).encode(),
                       check=True, timeout=10)

    def records() -> list[dict]:
        import orjson
        if not out.exists():
            return []
        return [orjson.loads(ln) for ln in out.read_bytes().splitlines() if ln.endswith(b"}")]

    log("new msg 4711",
        "info msg 4711: bytes 2456 from <alice@example.org> qp 30411 uid 1005",
        "starting delivery 1: msg 4711 to remote bob@example.net")
    proc = _start_shipper(cfg, tmp_path / "shipper.log")
    state = tmp_path / "state" / "tracking.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(records()) < 3:
        time.sleep(0.1)
    if wait_for_state:
        while time.monotonic() < deadline and not (
                state.exists() and b"alice@example.org" in state.read_bytes()):
            time.sleep(0.1)
        assert b"alice@example.org" in state.read_bytes()
    else:
        time.sleep(1.5)  # checkpoints were written every 0.5 s
    _stop(proc, signal.SIGKILL)

    log("delivery 1: success: 192.0.2.7_accepted_message./Remote_host_said:_250_ok/",
        "end msg 4711")
    proc = _start_shipper(cfg, tmp_path / "shipper.log")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(r["event"] == "mail" for r in records()):
            time.sleep(0.1)
    finally:
        assert _stop(proc) == 0
    mails = [r for r in records() if r["event"] == "mail"]
    assert len(mails) == 1, mails
    mail = mails[0]
    assert mail["mail_from"] == "alice@example.org" and mail["msg"] == 4711
    assert "incomplete" not in mail["flags"] and "partial" not in mail["flags"]
    [rcpt] = mail["recipients"]
    assert (rcpt["rcpt_to"], rcpt["result"], rcpt["n_attempts"]) == ("bob@example.net", "success", 1)
    return records()


def test_a_state_dir_it_cannot_use_is_one_line_and_exit_2(tmp_path):
    """Found by fault injection: an unusable state directory gave a 30-line traceback
    (a crash loop of tracebacks under supervise)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "buffer").write_text("a file where the buffer directory goes\n")
    (tmp_path / "log").mkdir()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{state}"
[metrics]
enabled = false
[sources.send]
type = "multilog"
paths = ["{tmp_path / 'log'}"]
[sinks.out]
type = "file"
path = "{tmp_path / 'out.ndjson'}"
""")
    proc = subprocess.run([sys.executable, "-m", "shipper", "run", "-c", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR shipper: cannot start: "), proc.stderr
    assert "buffer" in lines[0] and "Traceback" not in proc.stderr


def test_a_reload_applies_the_log_and_metrics_sections(tmp_path):
    """Found by a black-box review: a reload said "reloaded" and kept the log's level
    and format and the metrics' address as at the start (debug turned on by svc -h gave
    nothing; status -c then looked on the new port and called the shipper down)."""
    import json
    import urllib.request

    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "current").write_bytes(b"")
    first, second = free_port(), free_port()
    cfg = tmp_path / "shipper.toml"
    text = (f'state_dir = "{tmp_path}/state"\n[log]\nlevel = "info"\nformat = "text"\n'
            f'[metrics]\nlisten = "127.0.0.1:{first}"\n'
            f'[sources.q]\ntype = "multilog"\npaths = ["{logdir}"]\n'
            f'[sinks.a]\ntype = "file"\npath = "{tmp_path}/a.ndjson"\n')
    cfg.write_text(text)
    log = tmp_path / "shipper.log"
    proc = _start_ready(cfg, log)
    try:
        assert b"shipper_build_info" in urllib.request.urlopen(f"http://127.0.0.1:{first}/metrics",
                                                               timeout=5).read()
        cfg.write_text(text.replace('level = "info"', 'level = "debug"').replace('format = "text"', 'format = "json"')
                       .replace(f"127.0.0.1:{first}", f"127.0.0.1:{second}"))
        _hup_until(proc, log, '"reloaded: 1 sources, 1 sinks"')
        after = log.read_text().split("reloading configuration", 1)[1].splitlines()[1:]
        said = [json.loads(line) for line in after if line.startswith("{")]
        assert {"level": "info", "logger": "shipper", "msg": "reloaded: 1 sources, 1 sinks"} in said, after
        assert b"shipper_build_info" in urllib.request.urlopen(f"http://127.0.0.1:{second}/metrics",
                                                               timeout=5).read()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{first}/metrics", timeout=5)
        assert (tmp_path / "state" / "metrics.addr").read_text().strip() == f"127.0.0.1:{second}"
        st = subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(cfg)],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 0, st.stderr
        # the level: "error" no longer says "reloaded" (an info line)
        cfg.write_text(text.replace('level = "info"', 'level = "error"'))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:  # the metrics back on the first port: the reload is done
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{first}/metrics", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
        last = log.read_text().rsplit("reloading configuration", 1)[1]
        assert "reloaded" not in last, last
    finally:
        assert _stop(proc) == 0


def test_a_reload_onto_a_metrics_port_in_use_keeps_the_old_one_and_tries_again(tmp_path):
    """Found by a tester: the listener was stopped before the new address was tried;
    that address in use, /metrics and /healthz were gone for good (a later reload with
    the port free did not bring them back) and status -c called the shipper down."""
    import socket
    import urllib.request

    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "current").write_bytes(b"")
    first, second = free_port(), free_port()
    cfg = tmp_path / "shipper.toml"
    text = (f'state_dir = "{tmp_path}/state"\n[metrics]\nlisten = "127.0.0.1:{first}"\n'
            f'[sources.q]\ntype = "multilog"\npaths = ["{logdir}"]\n'
            f'[sinks.a]\ntype = "file"\npath = "{tmp_path}/a.ndjson"\n')
    cfg.write_text(text)
    log = tmp_path / "shipper.log"
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", second))
    holder.listen()
    proc = _start_ready(cfg, log)
    try:
        cfg.write_text(text.replace(f"127.0.0.1:{first}", f"127.0.0.1:{second}"))
        _hup_until(proc, log, "metrics stay at 127.0.0.1:")
        assert b"shipper_build_info" in urllib.request.urlopen(f"http://127.0.0.1:{first}/metrics",
                                                               timeout=5).read()
        assert (tmp_path / "state" / "metrics.addr").read_text().strip() == f"127.0.0.1:{first}"
        holder.close()
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:  # the next reload moves it, the port free now
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{second}/metrics", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{first}/metrics", timeout=5)
    finally:
        holder.close()
        assert _stop(proc) == 0


def test_status_finds_metrics_on_a_port_picked_at_start(tmp_path, receiver):
    """listen = "127.0.0.1:0": the daemon notes the port it got in state_dir, where
    `shipper status -c` looks for it (before, status could not find it)."""
    logdir = tmp_path / "log" / "send"
    logdir.mkdir(parents=True)
    (logdir / "current").write_bytes(b"@400000006b02a2aa2bcb057c qmail: 1 status: local 0/10 remote 0/20\n")
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, receiver.ports["tcp"], 0))
    shlog = tmp_path / "shipper.log"
    proc = _start_ready(cfg, shlog)
    try:
        addr = tmp_path / "state" / "metrics.addr"
        host, port = addr.read_text().strip().rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert _metric(_scrape(int(port)), "shipper_build_info", version=__import__("shipper").__version__,
                       state_dir=str(tmp_path / "state")) == 1
        st = subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(cfg)],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 0, st.stderr
        assert any(r.split()[:1] == ["siem"] for r in st.stdout.splitlines()), st.stdout
        # From an admin's review: a second shipper's config naming the same port (its own
        # shipper went on without metrics) read the first one's figures as its own
        other = tmp_path / "other"
        other.mkdir()
        cfg2 = other / "shipper.toml"
        cfg2.write_text(_config(other, logdir, receiver.ports["tcp"], int(port)))
        st = subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(cfg2)],
                            capture_output=True, text=True, timeout=30)
        assert st.returncode == 1 and st.stdout == ""
        assert st.stderr.strip() == (
            f"shipper: http://127.0.0.1:{port} answers for another shipper (state_dir {tmp_path / 'state'}), "
            f"not the one of {cfg2} (state_dir {other / 'state'}): give each its own metrics.listen")
    finally:
        assert _stop(proc) == 0


def test_a_second_shipper_on_the_same_state_dir_is_refused_in_one_line(tmp_path):
    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "current").write_bytes(b"")
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[metrics]\nenabled = false\n'
                   f'[sources.q]\ntype = "multilog"\npaths = ["{logdir}"]\n'
                   f'[sinks.a]\ntype = "file"\npath = "{tmp_path}/a.ndjson"\n')
    first = _start_ready(cfg, tmp_path / "first.log")
    try:
        cfg2 = tmp_path / "other.toml"  # other sink names: the buffers would not clash
        cfg2.write_text(cfg.read_text().replace("[sinks.a]", "[sinks.b]"))
        r = subprocess.run([sys.executable, "-m", "shipper", "run", "-c", str(cfg2)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "another shipper is running with state_dir" in lines[0], r.stderr
        assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"
    finally:
        assert _stop(first) == 0


def test_a_reload_that_moves_state_dir_is_refused(tmp_path):
    """The buffers and checkpoints live in state_dir: a reload cannot move them (found by
    fault injection: the buffered records were left behind, never sent)."""
    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "current").write_bytes(b"")
    cfg = tmp_path / "shipper.toml"
    text = (f'state_dir = "{tmp_path}/state"\n[metrics]\nenabled = false\n'
            f'[sources.q]\ntype = "multilog"\npaths = ["{logdir}"]\n'
            f'[sinks.a]\ntype = "file"\npath = "{tmp_path}/a.ndjson"\n')
    cfg.write_text(text)
    log = tmp_path / "shipper.log"
    proc = _start_ready(cfg, log)
    try:
        for change, said in ((text.replace(f"{tmp_path}/state", f"{tmp_path}/state2"),
                              "reload refused: state_dir changed"),
                             (text + f'[sinks.a.buffer]\npath = "{tmp_path}/elsewhere"\n',
                              "reload refused: the buffer of sink(s) a would move")):
            cfg.write_text(change)
            _hup_until(proc, log, said)
        assert proc.poll() is None and "reloaded:" not in log.read_text()
    finally:
        assert _stop(proc) == 0


def test_a_storm_of_sighups_is_one_reload_or_few_and_sigterm_goes_first(tmp_path):
    """Found by fault injection: every SIGHUP was queued and ran its own stop and
    rebuild: 50 of them made SIGTERM wait 10 s (drain 5 s), 800 starved the reading for
    minutes while multilog deleted what was not read."""
    cfg, _ = _one_log_to_a_file(tmp_path, 'drain_timeout = "3s"\n')
    log = tmp_path / "shipper.log"
    proc = _start_ready(cfg, log)
    try:
        t_first = time.monotonic()
        for _ in range(60):  # spaced: the kernel merges signals sent while one is pending
            os.kill(proc.pid, signal.SIGHUP)
            time.sleep(0.005)
        t0 = time.monotonic()
        assert _stop(proc) == 0
        assert time.monotonic() - t0 < 3 + 3  # a reload under way may finish first, no more
    finally:
        _stop(proc)
    # one reload at once, then one a second at most, however fast a reload is (it was
    # as many as a reload's speed let through: 31 of the 60 in a CI run, 29 before)
    reloads = log.read_text().count("reloading configuration")
    assert 1 <= reloads <= 1 + math.ceil((t0 - t_first) / daemon.RELOAD_SPACING), log.read_text()


def test_a_reload_onto_a_key_that_does_not_match_its_certificate_is_refused(tmp_path):
    """A half-done certificate rotation, then SIGHUP: the reload is refused before anything
    stops, naming the sink and the files (found by fault injection: it said "keeping the
    running configuration", then died rebuilding it from the same bad files)."""
    from rsyslog_util import make_certs
    certs = make_certs(tmp_path / "certs")
    key = tmp_path / "client.key"
    shutil.copy(certs.client_key, key)
    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "current").write_bytes(b"")
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[metrics]\nenabled = false\n'
                   f'[sources.q]\ntype = "multilog"\npaths = ["{logdir}"]\n'
                   f'[sinks.s]\ntype = "syslog"\nprotocol = "tls"\nhost = "127.0.0.1"\nport = {free_port()}\n'
                   f'[sinks.s.tls]\nca_file = "{certs.ca}"\ncert_file = "{certs.client_cert}"\n'
                   f'key_file = "{key}"\n')
    log = tmp_path / "shipper.log"
    proc = _start_ready(cfg, log)
    try:
        shutil.copy(certs.server_key, key)  # another key: does not match client.pem
        _hup_until(proc, log, "reload refused: sinks.s.tls.cert_file: client certificate")
        text = log.read_text()
        assert str(key) in text and "Traceback" not in text and proc.poll() is None
    finally:
        assert _stop(proc) == 0


def test_accept_errors_of_asyncio_are_one_line_a_minute(caplog):
    # found by fault injection: with too few file descriptors asyncio logged a traceback
    # for every failed accept of the metrics listener, 12,700 a minute
    import asyncio
    import errno

    from shipper import daemon

    daemon._said_at.clear()  # said a minute ago by another test, it would not be said now
    loop = asyncio.new_event_loop()
    try:
        ctx = {"message": "socket.accept() out of system resource",
               "exception": OSError(errno.EMFILE, "Too many open files")}
        for _ in range(100):
            daemon._loop_exception(loop, ctx)
        said = [r for r in caplog.records if "cannot accept a connection" in r.getMessage()]
        assert len(said) == 1 and said[0].exc_info is None
        assert "Too many open files" in said[0].getMessage()
        daemon._loop_exception(loop, {"message": "something else"})  # asyncio's default
        assert any(r.getMessage() == "something else" for r in caplog.records)
    finally:
        loop.close()


def test_too_many_open_files_is_not_a_name_that_does_not_resolve():
    import errno

    from shipper.sinks.base import describe_error

    text = describe_error(OSError(errno.EMFILE, "Too many open files"))
    assert text.startswith("too many open files: raise the limit") and "resolve" not in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_config_refused_at_start_is_said_as_the_daemon_logs(tmp_path, fmt):
    """From an admin's review: under supervise a refused config printed bare
    "shipper: key: …" lines, in neither the log's format nor with a level, and naming
    the key but not the file."""
    import json

    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                   f'paths = ["{tmp_path}/log"]\n[sinks.s]\ntype = "stdout"\nconect_timeout = 1\n')
    proc = subprocess.run([sys.executable, "-m", "shipper", "run", "-c", str(cfg), "--log-format", fmt],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    said = f'{cfg}: sinks.s.conect_timeout: unknown key (did you mean "connect_timeout"?)'
    if fmt == "json":
        assert json.loads(line) == {"level": "error", "logger": "shipper", "msg": said}
    else:
        assert line == f"ERROR shipper: {said}"


def _http_500_peer() -> tuple[socket.socket, threading.Event]:
    """A receiver that keeps the connection and answers every POST 500 with ClickHouse's
    text (18.16 answers 500 to a row it cannot take, every time)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    done = threading.Event()
    answer = (b"Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is "
              b"non zero\n")

    def serve() -> None:
        conns: list[socket.socket] = []
        while not done.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            conns.append(c)
            threading.Thread(target=answer_all, args=(c,), daemon=True).start()
        for c in conns:
            c.close()

    def answer_all(c: socket.socket) -> None:
        f = c.makefile("rb")
        with contextlib.suppress(OSError, ValueError):
            while not done.is_set():
                head = [f.readline()]
                while head[-1] not in (b"\r\n", b""):
                    head.append(f.readline())
                if head[-1] == b"":
                    return
                n = next(int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length"))
                f.read(n)
                c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(answer), answer))

    threading.Thread(target=serve, daemon=True).start()
    return srv, done


def test_status_says_failing_for_a_connected_sink_whose_every_batch_is_refused(tmp_path):
    """Found by fault injection: a ClickHouse answering 500 to every batch (one row it
    cannot take) keeps the connection up, and `shipper status` said "up" with no error
    while nothing moved; now the sink is "failing", with the receiver's words."""
    logdir = tmp_path / "log" / "send"
    logdir.mkdir(parents=True)
    (logdir / "current").write_bytes(b"@400000006b02a2aa2bcb057c qmail: 1 status: local 0/10 remote 0/20\n")
    srv, done = _http_500_peer()
    mport = free_port()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
drain_timeout = "1s"
[metrics]
listen = "127.0.0.1:{mport}"
[sources.send]
type = "multilog"
paths = ["{logdir}"]
start_position = "all"
[sinks.ch]
type = "http"
url = "http://127.0.0.1:{srv.getsockname()[1]}/"
format = "ndjson"
batch_max_age = "100ms"
""")
    proc = _start_ready(cfg, tmp_path / "shipper.log")
    try:
        deadline = time.monotonic() + 20
        while _metric(_scrape(mport), "shipper_sink_failures_total", sink="ch") < 2:
            assert time.monotonic() < deadline, _scrape(mport)
            time.sleep(0.1)
        text = _scrape(mport)
        assert _metric(text, "shipper_sink_connected", sink="ch") == 1  # kept alive
        assert _metric(text, "shipper_sink_failing", sink="ch") == 1
        st = subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(cfg)],
                            capture_output=True, text=True, timeout=30)
        row = next(r for r in st.stdout.splitlines() if r.split()[:1] == ["ch"])
        assert row.split()[1] == "failing", st.stdout
        assert "HTTP 500 Internal Server Error" in row, st.stdout
    finally:
        done.set()
        _stop(proc)
        srv.close()


@pytest.mark.slow
def test_a_stop_during_a_reload_held_by_a_peer_that_does_not_answer_keeps_to_the_drain_time(tmp_path):
    """Found by fault injection (a real rsyslog's RELP input frozen with SIGSTOP: the
    connection up, no answers): a reload's drain waits the whole drain_timeout for it,
    and a SIGTERM during that drain waited for it, then for the new pipeline's drain
    too: 18.8 s to exit with drain_timeout 10 s. The reload's drain is the stop's now;
    nothing is lost, and what comes twice is the unanswered window, with its ids."""
    multilog = require_binary("multilog")
    rs = Rsyslog(tmp_path / "rsyslog", ("relp",))
    rs.start()
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, rs.ports["relp"], free_port())
                   .replace('drain_timeout = "10s"', 'drain_timeout = "4s"')
                   .replace('type = "syslog"\nprotocol = "tcp"', 'type = "relp"'))
    shlog = tmp_path / "shipper.log"
    total = 15000
    writer = subprocess.Popen(f"{sys.executable} -c '{WRITER}' 5000 {total} 0 | {multilog} t s99999 n100 {logdir}",
                              shell=True)
    started = [_start_ready(cfg, shlog)]
    frozen = False
    try:
        time.sleep(1.0)
        os.kill(rs.proc.pid, signal.SIGSTOP)  # the rsyslogd we started
        frozen = True
        time.sleep(1.0)
        os.kill(started[0].pid, signal.SIGHUP)
        time.sleep(0.5)
        t0 = time.monotonic()
        assert _stop(started[0]) == 0
        took = time.monotonic() - t0
        assert took < 4 + 1.5, f"{took:.1f} s; log: {shlog.read_text()[-2000:]}"  # before: 7.2 s
        os.kill(rs.proc.pid, signal.SIGCONT)
        frozen = False
        assert writer.wait(60) == 0
        started.append(_start_ready(cfg, shlog))
        deadline = time.monotonic() + 60
        seqs: list[tuple[int, str]] = []
        while len({s for s, _ in seqs}) < total and time.monotonic() < deadline:
            time.sleep(0.3)
            seqs = [(int(g.group(1)), re.search(r'event_id="([^"]+)"', m["sd"]).group(1))  # type: ignore[union-attr]
                    for m in rs.messages("relp") if (g := SEQ_RE.search(m["msg"]))]
        assert _stop(started[-1]) == 0
    finally:
        if frozen:
            os.kill(rs.proc.pid, signal.SIGCONT)
        for p in started:
            if p.poll() is None:
                _stop(p, signal.SIGKILL)
        if writer.poll() is None:
            writer.kill()
        rs.stop()
    assert {s for s, _ in seqs} == set(range(total)), shlog.read_text()[-2000:]
    assert len(seqs) - total <= 128  # the RELP window the frozen peer never answered
    assert len(set(seqs)) == total  # a line sent twice has its first copy's id


@pytest.mark.slow
def test_kills_soon_after_each_start_with_tracking_send_only_their_own_window_again(tmp_path, receiver):
    """Found by fault injection (tracking on, real multilog and rsyslog, kill -9 at 1-2 s
    after each start, as in a crash loop): the checkpoints are written with the tracking
    state, first after save_interval (2 s), so no life moved them and each start sent
    everything since the first again: 6 kills, 97,356 lines twice of 40,000. The first
    save comes at 0.5 s: a kill sends again what its own life read, about."""
    multilog = require_binary("multilog")
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, receiver.ports["tcp"], free_port())
                   .replace("[tracking]\nenabled = false", '[tracking]\nenabled = true\nsave_interval = "2s"'))
    shlog = tmp_path / "shipper.log"
    rate, total, kills, life = 4000, 30000, 3, 1.2
    writer = subprocess.Popen(f"{sys.executable} -c '{WRITER}' {rate} {total} 0 | {multilog} t s99999 n100 {logdir}",
                              shell=True)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(kills):
            started.append(_start_ready(cfg, shlog))
            time.sleep(life)
            _stop(started[-1], signal.SIGKILL)
        started.append(_start_ready(cfg, shlog))
        assert writer.wait(60) == 0
        seqs = _wait_seqs(receiver, total, 60)
        time.sleep(1.0)  # what comes late comes too
        seqs = _seqs(receiver)
        assert _stop(started[-1]) == 0
    finally:
        _end_all(started, writer)
    assert set(seqs) == set(range(total)), shlog.read_text()[-2000:]
    # each kill: what its life read (a catch-up reads faster than the writer: twice the rate)
    dups = len(seqs) - total
    assert dups <= kills * life * 2 * rate, dups  # before: 36,603


def test_a_stop_signal_after_the_loop_ended_does_not_kill_the_process():
    """Found by a tester: a second SIGTERM in the last moments of a stop (the loop's
    handlers gone with it, the interpreter exiting) killed the process: exit 143, no
    line. Once the daemon's run is over, a stop signal ends the process at once with the
    run's exit code (a thread the exit waits for must not hold it), a SIGHUP is ignored."""
    code = ("import signal, sys, time\n"
            "from shipper.daemon import run_main\n"
            "rc = run_main(None, demo=True)\n"
            "signal.raise_signal(signal.SIGHUP)\n"
            "sys.stderr.write('after hup\\n')\n"
            "signal.raise_signal(signal.SIGTERM)\n"
            "time.sleep(5)\n"
            "sys.stderr.write('not ended\\n')\n"
            "sys.exit(3)\n")
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "after hup" in p.stderr and "not ended" not in p.stderr, p.stderr


@pytest.mark.parametrize("where", ["state", "buffer"])
def test_a_state_or_buffer_directory_others_can_write_is_refused(tmp_path, where):
    """A security review: a state_dir or buffer directory another user could write let
    them put links in place of shipper's files (root overwrote any file through them):
    refused at the start, in one line, before anything is written there. (One of its
    own is tightened instead: see the umask test; one in a directory all can write,
    unsticky, could be swapped whole.)"""
    open_dir = tmp_path / "open"
    state = (open_dir if where == "state" else tmp_path) / "state"
    buf = (open_dir if where == "buffer" else tmp_path) / "buf"
    open_dir.mkdir(mode=0o700)
    for d in (state, buf, tmp_path / "log"):
        d.mkdir(mode=0o700)
    open_dir.chmod(0o777)
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f'state_dir = "{state}"\n[metrics]\nenabled = false\n'
                   f'[buffer]\npath = "{buf}"\n'
                   f'[sources.send]\ntype = "multilog"\npaths = ["{tmp_path / "log"}"]\n'
                   f'[sinks.out]\ntype = "file"\npath = "{tmp_path / "out.ndjson"}"\n')
    proc = subprocess.run([sys.executable, "-m", "shipper", "run", "-c", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot start: " in lines[0] and "writable by all (mode 777)" in lines[0], lines
    assert os.listdir(state) == [], "nothing written in an unsafe directory"


def test_a_reload_onto_a_buffer_directory_others_can_write_is_refused_before_anything_stops(tmp_path):
    """A review: the directory check ran inside the reload's assembly, after the old
    pipeline had stopped (a drain for nothing), and a state_dir made unsafe meanwhile
    made the fallback fail too: the daemon ended. Refused up front now."""
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o700)
    open_dir.chmod(0o777)
    cfg, text = _one_log_to_a_file(tmp_path)
    log = tmp_path / "shipper.log"
    proc = _start_ready(cfg, log)
    try:
        cfg.write_text(text + f'[sinks.b]\ntype = "file"\npath = "{tmp_path}/b.ndjson"\n'
                       f'[sinks.b.buffer]\npath = "{open_dir}"\n')
        _hup_until(proc, log, "reload refused: ")
        last = log.read_text().rsplit("reload refused: ", 1)[1].splitlines()[0]
        assert "writable by all (mode 777)" in last and "keeping the running configuration" in last
        assert "reloading configuration" not in log.read_text()  # nothing was stopped
        assert proc.poll() is None
    finally:
        assert _stop(proc) == 0


def test_svc_a_and_the_user_signals_do_not_end_the_daemon(tmp_path):
    """A deployment hunt: `svc -a` (SIGALRM, an admin's habit to make multilog rotate)
    and SIGUSR1/2 ended the process at once: no drain, nothing in its log."""
    cfg, _ = _one_log_to_a_file(tmp_path)
    log = tmp_path / "shipper.log"
    proc = _start_ready(cfg, log)
    try:
        for sig in (signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2):
            os.kill(proc.pid, sig)
            wait_until(f"{sig.name} said", lambda sig=sig: f"{sig.name} ignored" in log.read_text())
        assert proc.poll() is None
    finally:
        assert _stop(proc) == 0


def test_its_own_directories_made_under_umask_002_are_tightened_not_refused(tmp_path):
    """An upgrade hunt: directories made under umask 002 (state/checkpoints 0775, by
    this version or the one before) were refused, and the daemon could not start on
    its own state. The group's and others' write is taken off them, and said."""
    state = tmp_path / "state"
    (state / "checkpoints").mkdir(parents=True)
    state.chmod(0o700)
    (state / "checkpoints").chmod(0o775)
    cfg, _ = _one_log_to_a_file(tmp_path)
    r = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(cfg), "--no-probe"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stdout  # run takes the write off: not a problem
    log = tmp_path / "shipper.log"
    proc = _start_ready(cfg, log)
    assert _stop(proc) == 0
    assert f"{state / 'checkpoints'}: others could write it (mode 775): made 755" in log.read_text()
    assert (state / "checkpoints").stat().st_mode & 0o777 == 0o755
