"""`shipper status -c`: what it needs of the config, and its one-line errors."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path

from conftest import free_port


def _status(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "shipper", "status", "-c", str(config)],
                          capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if k != "RELP_HOST"} | (env or {}))


def _config(tmp_path: Path, port: int, state_dir: str) -> Path:
    # as installed under daemontools: the relay's name comes from ./env/RELP_HOST through envdir,
    # which the admin's shell does not have
    p = tmp_path / "shipper.toml"
    p.write_text(f'state_dir = "{state_dir}"\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
                 '[sources.q]\ntype = "multilog"\npaths = ["/var/log/qmail/*"]\n'
                 '[sinks.relp]\ntype = "relp"\nhost = "${RELP_HOST}"\nport = 2514\n')
    return p


def _serve(body: bytes, health: tuple[int, bytes]) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            code, data = health if self.path == "/healthz" else (200, body)
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_sink_variable_only_the_service_has_does_not_stop_status(tmp_path):
    """Found installing as an admin: with the relay's host in envdir, `shipper status -c`
    answered "sinks.relp.host: environment variable RELP_HOST is not set", exit 2."""
    state = tmp_path / "state"
    body = (f'shipper_build_info{{version="0.1.0",state_dir="{state}"}} 1\n'
            'shipper_sink_connected{sink="relp"} 1\nshipper_sink_acked_total{sink="relp"} 7\n').encode()
    server = _serve(body, (200, b"ok\n"))
    try:
        r = _status(_config(tmp_path, server.server_address[1], str(state)))
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr
    assert any(line.split()[:2] == ["relp", "up"] for line in r.stdout.splitlines()), r.stdout


def test_status_says_what_health_finds_wrong_in_one_line_and_exits_1(tmp_path):
    """The ops probe: the state_dir's ext4 gone read-only, every append failing and all
    reading paused; status showed the sink up, nothing buffered, exit 0: only unread
    bytes and lag growing hinted at it. /healthz knew."""
    state = tmp_path / "state"
    body = (f'shipper_build_info{{version="0.1.0",state_dir="{state}"}} 1\n'
            'shipper_sink_connected{sink="relp"} 1\nshipper_sink_acked_total{sink="relp"} 1690\n').encode()
    why = (b"reading paused: sink relp (21 s): its buffer cannot be written: EROFS Read-only "
           b"file system\n")
    for health, rc, last in ((503, 1, "unhealthy: " + why.decode().strip()), (200, 0, None)):
        server = _serve(body, (health, why if health == 503 else b"ok\n"))
        try:
            r = _status(_config(tmp_path, server.server_address[1], str(state)))
        finally:
            server.shutdown()
            server.server_close()
        assert r.returncode == rc, r.stderr
        lines = r.stdout.splitlines()
        assert any(line.split()[:2] == ["relp", "up"] for line in lines), r.stdout
        assert (lines[-1] == last) if last else not any("unhealthy" in ln for ln in lines), r.stdout


def test_status_still_refuses_its_own_keys_and_says_why_it_cannot_connect(tmp_path):
    r = _status(_config(tmp_path, free_port(), "relative/state"))
    assert r.returncode == 2
    assert r.stderr.splitlines() == ['shipper: state_dir: must be an absolute path, got "relative/state"'], r.stderr
    port = free_port()
    r = _status(_config(tmp_path, port, str(tmp_path / "state")))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"shipper: cannot read http://127.0.0.1:{port}/metrics: Connection "
                                     "refused (is shipper running there?)"], r.stderr


def test_the_readme_status_sample_is_what_status_prints():
    """Found comparing the README with a real `shipper status`: its sample lacked the
    version line and the blank lines between the tables."""
    from shipper.status import render

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("$ shipper status -c")
    sample = readme[readme.index("\n", start) + 1:readme.index("```", start)].rstrip("\n").splitlines()
    metrics = {
        "shipper_build_info": [({"version": "0.1.0"}, 1.0)],
        "shipper_source_lines_total": [({"source": "/var/log/qmail/send"}, 1204332.0)],
        "shipper_source_unread_bytes": [({"source": "/var/log/qmail/send"}, 0.0)],
        "shipper_source_lag_seconds": [({"source": "/var/log/qmail/send"}, 0.2)],
        "shipper_source_gaps_total": [({"source": "/var/log/qmail/send"}, 0.0)],
        "shipper_sink_connected": [({"sink": "siem"}, 1.0)],
        "shipper_sink_acked_total": [({"sink": "siem"}, 1204101.0)],
        "shipper_sink_retried_total": [({"sink": "siem"}, 0.0)],
        "shipper_buffer_records": [({"sink": "siem"}, 231.0)],
        "shipper_buffer_oldest_age_seconds": [({"sink": "siem"}, 0.1)],
    }
    assert [line.rstrip() for line in render(metrics).splitlines()] == sample


def test_status_shows_names_as_they_are_and_what_a_sink_refused():
    """A metrics audit: a source .../ü showed as .../Ã¼ ("unicode_escape" read UTF-8 as
    Latin-1), a directory named with a newline split the table, and 100 records refused
    for good (400) left no trace in status: no column, and the last error an older 503."""
    from shipper.metrics import Registry, declare_shipper_metrics, set_last_error
    from shipper.status import parse_exposition, render

    reg = Registry()
    m = declare_shipper_metrics(reg, "/var/lib/shipper")
    m.source_lines.set(5, source="/var/log/qmail/ü")
    m.source_lines.set(6, source="/var/log/qmail/a\nb")
    m.sink_connected.set(1, sink="http")
    m.sink_acked.set(900, sink="http")
    m.sink_dead_lettered.set(100, sink="http")
    set_last_error(m.sink_last_error, "http", 'refused for good: HTTP 400 "Überlastet" \\ x')
    out = render(parse_exposition(reg.render()))
    assert "/var/log/qmail/ü " in out and "/var/log/qmail/a\\nb" in out
    # no line with a time read yet (after a start, a reload): its lag is not known, not 0
    assert re.search(r"/var/log/qmail/ü +5 +0 B +- +0$", out, re.M), out
    lines = out.splitlines()
    assert len(lines) == 8  # one line a source and a sink: the newline escaped
    http = next(line for line in lines if line.startswith("http "))
    assert http.split()[:6] == ["http", "up", "900", "0", "100", "0"]
    assert 'refused for good: HTTP 400 "Überlastet" \\ x' in http


def test_status_of_a_thousand_sources_shows_those_behind_and_counts_the_rest():
    """A scale hunt: with 1,000 log directories (one per service and tcpserver instance),
    status printed 1,000 alike rows, the one directory behind or with gaps among them."""
    from shipper.metrics import Registry, declare_shipper_metrics
    from shipper.status import SOURCES_SHOWN, parse_exposition, render

    reg = Registry()
    m = declare_shipper_metrics(reg, "/var/lib/shipper")
    for i in range(1000):
        src = f"/var/log/qmail/smtpd{i:04d}"
        m.source_lines.set(10, source=src)
        m.source_unread.set(0, source=src)
        m.source_gaps.set(0, source=src)
        m.source_lag.set(3.0, source=src)
    m.source_unread.set(5 << 20, source="/var/log/qmail/smtpd0500")
    m.source_gaps.set(2, source="/var/log/qmail/smtpd0900")
    m.sink_connected.set(1, sink="siem")
    m.sink_acked.set(10_000, sink="siem")
    metrics = parse_exposition(reg.render())
    out = render(metrics).splitlines()
    assert len(out) < SOURCES_SHOWN
    assert out[3].startswith("/var/log/qmail/smtpd0500") and "5.0 MiB" in out[3]  # worst first
    assert out[4].startswith("/var/log/qmail/smtpd0900") and out[4].endswith(" 2")
    assert out[5] == ("... and 998 more sources: each read to the end, no gaps "
                      "(status --all lists every one)")
    assert any(line.startswith("siem ") for line in out)
    assert len(render(metrics, all_sources=True).splitlines()) == 1000 + 6


def test_every_metric_the_docs_name_is_one_shipper_serves():
    """The README, the annotated configs and docs/ point admins at metrics by name (what to
    alert on): each one named is declared, so a renamed metric cannot leave a dead alert."""
    import glob

    from shipper.metrics import Registry, declare_shipper_metrics

    root = Path(__file__).resolve().parent.parent
    reg = Registry()
    declare_shipper_metrics(reg, "/var/lib/shipper")
    docs = [root / "README.md", *map(Path, glob.glob(str(root / "conf" / "**" / "*.toml"), recursive=True)),
            *map(Path, glob.glob(str(root / "docs" / "*.md")))]
    named = {m for p in docs for m in re.findall(r"\bshipper_[a-z_]+[a-z]\b", p.read_text())}
    assert len(named) >= 8
    assert named - set(reg.metrics) == set()
    labelled = {(m, label) for p in docs
                for m, label in re.findall(r"\b(shipper_[a-z_]+[a-z])\{([a-z_]+)=", p.read_text())}
    assert labelled and {(m, label) for m, label in labelled if label not in reg.metrics[m].label_names} == set()
