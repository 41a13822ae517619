"""Metrics: exposition format 0.0.4 rendered right, and the HTTP endpoint scraped for real."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.error
import urllib.request

import pytest

from shipper import __version__
from shipper.metrics import (
    CONTENT_TYPE,
    MAX_REQUEST_BYTES,
    MetricsServer,
    Registry,
    declare_shipper_metrics,
    escape_label_value,
    format_value,
    set_last_error,
)

_SAMPLE_RE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|\Z)')


def parse_exposition(text: str) -> tuple[dict[str, str], dict[str, str], dict[tuple, float]]:
    """A small strict parser of the text format: (help, type, {(name, labels): value})."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: dict[tuple, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in helps
            helps[name] = doc.replace("\\n", "\n").replace("\\\\", "\\")
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge") and name in helps and name not in types
            types[name] = kind
        else:
            m = _SAMPLE_RE.match(line)
            assert m, f"bad sample line {line!r}"
            name, raw_labels, value = m.groups()
            assert name in types, f"sample before its TYPE: {line!r}"
            labels = []
            pos = 0
            while raw_labels and pos < len(raw_labels):
                lm = _LABEL_RE.match(raw_labels, pos)
                assert lm, f"bad labels in {line!r}"
                val = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), lm.group(2))
                labels.append((lm.group(1), val))
                pos = lm.end()
            key = (name, tuple(labels))
            assert key not in samples
            samples[key] = float(value)
    return helps, types, samples


def test_render_escaping_and_values():
    reg = Registry()
    c = reg.counter("demo_lines_total", "Lines read.\nSecond line with a \\ backslash.", ("source",))
    g = reg.gauge("demo_lag_seconds", "Lag.")
    nasty = 'dir "x"\\y\nz'
    c.inc(3, source=nasty)
    c.inc(source="plain")
    g.set(1.5)
    text = reg.render()
    assert text.splitlines() == [
        "# HELP demo_lines_total Lines read.\\nSecond line with a \\\\ backslash.",
        "# TYPE demo_lines_total counter",
        'demo_lines_total{source="dir \\"x\\"\\\\y\\nz"} 3',
        'demo_lines_total{source="plain"} 1',
        "# HELP demo_lag_seconds Lag.",
        "# TYPE demo_lag_seconds gauge",
        "demo_lag_seconds 1.5",
    ]
    helps, types, samples = parse_exposition(text)
    assert helps["demo_lines_total"] == "Lines read.\nSecond line with a \\ backslash."
    assert samples[("demo_lines_total", (("source", nasty),))] == 3
    assert escape_label_value('a"b') == 'a\\"b'
    assert [format_value(v) for v in (0, 7, 2.0, 0.25, float("inf"), float("-inf"), float("nan"))] == [
        "0", "7", "2", "0.25", "+Inf", "-Inf", "NaN"]


def test_metric_rules():
    reg = Registry()
    c = reg.counter("x_total", "X.", ("a",))
    with pytest.raises(ValueError):
        c.inc(-1, a="1")
    c.set(5, a="1")
    c.set(4, a="1")  # mirrored counters never go down (kept, not a failed scrape)
    assert c.get(a="1") == 5
    with pytest.raises(ValueError):
        c.inc(b="1")
    with pytest.raises(ValueError):
        reg.counter("x_total", "again")
    with pytest.raises(ValueError):
        reg.counter("no_suffix", "counters end in _total")
    with pytest.raises(ValueError):
        reg.gauge("bad-name", "x")
    with pytest.raises(ValueError):
        reg.gauge("ok", "x", ("__reserved",))


def test_series_bounded_and_last_error(caplog: pytest.LogCaptureFixture):
    reg = Registry()
    m = declare_shipper_metrics(reg)
    set_last_error(m.sink_last_error, "siem", "connection refused")
    set_last_error(m.sink_last_error, "siem", "TLS handshake timed out after 10 s")
    set_last_error(m.sink_last_error, "relp", "x" * 500)
    assert m.sink_last_error.values == {("siem", "TLS handshake timed out after 10 s"): 1,
                                        ("relp", "x" * 200): 1}
    set_last_error(m.sink_last_error, "relp", "")
    assert list(m.sink_last_error.values) == [("siem", "TLS handshake timed out after 10 s")]
    g = reg.gauge("many", "bounded", ("k",))
    for i in range(10_005):
        g.set(i, k=str(i))
    assert len(g.values) == 10_000 and g.dropped_series == 5
    # said once (found by a review: the dropped series were counted, and nothing read the count)
    said = [r.getMessage() for r in caplog.records if "series" in r.getMessage()]
    assert said == ["many: more than 10000 series (labels k=10000): the others are not shown"]


async def _get(url: str) -> tuple[int, dict[str, str], str]:
    def fetch() -> tuple[int, dict[str, str], str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()
    return await asyncio.to_thread(fetch)


async def test_server_scrape_counters_move_and_health():
    reg = Registry()
    m = declare_shipper_metrics(reg)
    pipeline_lines = {"qmail": 0}

    def collect() -> None:  # as the daemon does: copy counts kept elsewhere at scrape time
        m.source_lines.set(pipeline_lines["qmail"], source="qmail")

    reg.add_collector(collect)
    state = {"healthy": True, "ready": False}
    server = MetricsServer(reg, "127.0.0.1", 0,
                           health=lambda: (state["healthy"], "sinks connected"),
                           ready=lambda: state["ready"])
    await server.start()
    try:
        assert server.port > 0
        base = f"http://127.0.0.1:{server.port}"
        status, headers, body = await _get(base + "/metrics")
        assert status == 200 and headers["Content-Type"] == CONTENT_TYPE
        helps, types, samples = parse_exposition(body)
        assert types["shipper_source_lines_total"] == "counter"
        assert types["shipper_sink_connected"] == "gauge"
        assert samples[("shipper_build_info", (("version", __version__), ("state_dir", "")))] == 1
        assert samples[("shipper_source_lines_total", (("source", "qmail"),))] == 0

        for step in range(1, 4):  # lines flow, counters move
            pipeline_lines["qmail"] += 250
            m.records.inc(100, program="qmail-send", event="delivery")
            m.sink_acked.inc(90, sink="siem")
            _, _, body = await _get(base + "/metrics")
            _, _, samples = parse_exposition(body)
            assert samples[("shipper_source_lines_total", (("source", "qmail"),))] == 250 * step
            assert samples[("shipper_records_total",
                            (("program", "qmail-send"), ("event", "delivery")))] == 100 * step
            assert samples[("shipper_sink_acked_total", (("sink", "siem"),))] == 90 * step

        status, _, body = await _get(base + "/healthz")
        assert (status, body) == (200, "sinks connected\n")
        status, _, body = await _get(base + "/readyz")
        assert (status, body) == (503, "not ok\n")
        state["ready"] = True
        state["healthy"] = False
        assert (await _get(base + "/readyz"))[::2] == (200, "ok\n")
        assert (await _get(base + "/healthz"))[::2] == (503, "sinks connected\n")
        status, _, body = await _get(base + "/nope")
        assert status == 404 and "/metrics" in body
        status, _, _ = await _get(base + "/metrics?x=1")
        assert status == 200
    finally:
        await server.close()


async def test_server_bad_requests_and_oversize():
    reg = Registry()
    server = MetricsServer(reg, "127.0.0.1", 0, health=lambda: 1 / 0)
    await server.start()
    try:
        async def raw(request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

        resp = await raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"Allow: GET, HEAD" in resp
        resp = await raw(b"garbage\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 400 ")
        resp = await raw(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST_BYTES * 2) + b"\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 431 ")
        resp = await raw(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        head, _, body = resp.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and body == b""
        resp = await raw(b"GET /healthz HTTP/1.1\r\n\r\n")  # a failing check is a 503, not a crash
        assert resp.startswith(b"HTTP/1.1 503 ") and b"ZeroDivisionError" in resp
        # a client that connects and says nothing does not block other requests
        idle = socket.create_connection(("127.0.0.1", server.port))
        try:
            status, _, _ = await _get(f"http://127.0.0.1:{server.port}/metrics")
            assert status == 200
        finally:
            idle.close()
        assert server.requests >= 5
    finally:
        await server.close()


async def test_server_start_from_listen_string():
    server = MetricsServer(Registry())
    await server.start("127.0.0.1:0")
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        status, _, body = await _get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200 and body == ""  # nothing registered
    finally:
        await server.stop()


def test_counters_go_on_across_a_reload_and_never_fail_a_scrape():
    """A metrics audit: a reload (SIGHUP) reset every *_total (10,412 lines → 0) and
    moved shipper_start_time_seconds; an HTTP 413's split took back records counted
    sent, and the scrape failed with "counter cannot go down" (a 5.8 KB error each)."""
    from shipper.metrics import Registry, declare_shipper_metrics

    old = Registry()
    om = declare_shipper_metrics(old, "/var/lib/shipper")
    om.sink_sent.set(10_794, sink="http")
    om.reloads.set(1, result="ok")
    started = om.start_time.get()
    new = Registry()
    nm = declare_shipper_metrics(new, "/var/lib/shipper")
    new.carry_from(old, skip=("shipper_config_reloads_total",))
    nm.sink_sent.set(5, sink="http")  # the new parts count from 0
    nm.reloads.set(2, result="ok")  # kept by the daemon across reloads: not added twice
    assert nm.sink_sent.get(sink="http") == 10_799
    assert nm.reloads.get(result="ok") == 2
    assert nm.start_time.get() == started
    nm.sink_sent.set(3, sink="http")  # a count that went back: kept, no error
    assert nm.sink_sent.get(sink="http") == 10_799
    assert "shipper_sink_sent_total" in new.render()
