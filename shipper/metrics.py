"""Metrics: a tiny registry rendering the Prometheus text format 0.0.4, and its HTTP endpoint.

No framework: counters and gauges with labels, kept in dicts, rendered on
scrape. Values that live elsewhere (a sink's ``SinkStats``, a queue's depth)
are copied in by collector callables the registry runs just before rendering,
so the hot path never touches the registry.

The server (``MetricsServer``) runs on the daemon's event loop with
``asyncio.start_server``: one request per connection, the request head capped
at ``MAX_REQUEST_BYTES`` and ``REQUEST_TIMEOUT`` seconds, so a slow or hostile
client cannot hold it. It answers ``GET``/``HEAD`` on

* ``/metrics`` — the exposition text;
* ``/healthz`` — 200 when the daemon's health callable says so, else 503;
* ``/readyz`` — the same with the readiness callable;

and 404/405 otherwise. It is unauthenticated: bind it to loopback (the default).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shipper import __version__

log = logging.getLogger("shipper.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 5.0
MAX_SERIES = 10_000  # per metric: a bound on label cardinality

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

Check = Callable[[], "bool | tuple[bool, str]"]


def escape_label_value(value: str) -> str:
    """Label values escape backslash, double quote and line feed (format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes backslash and line feed only."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Metric:
    """A counter or a gauge: one value per combination of label values."""

    __slots__ = ("name", "help", "kind", "label_names", "values", "dropped_series", "base")

    def __init__(self, name: str, help: str, kind: str, label_names: Iterable[str] = ()) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad metric name {name!r}")
        if kind not in ("counter", "gauge"):
            raise ValueError(f"bad metric kind {kind!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        self.label_names = tuple(label_names)
        for ln in self.label_names:
            if not _LABEL_RE.match(ln) or ln.startswith("__"):
                raise ValueError(f"bad label name {ln!r}")
        self.name = name
        self.help = help
        self.kind = kind
        self.values: dict[tuple[str, ...], float] = {}
        self.dropped_series = 0
        # a counter's totals before a reload (whose new parts count from 0): what set()
        # mirrors is added to them, so the counter never goes back (see Registry.carry_from)
        self.base: dict[tuple[str, ...], float] = {}

    def _key(self, labels: dict[str, object]) -> tuple[str, ...] | None:
        if len(labels) != len(self.label_names) or not all(n in labels for n in self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        key = tuple(str(labels[n]) for n in self.label_names)
        if key not in self.values and len(self.values) >= MAX_SERIES:
            if not self.dropped_series:  # said once: at each scrape, it would flood the log
                log.warning("%s: more than %d series (labels %s): the others are not shown",
                            self.name, MAX_SERIES, ", ".join(f"{n}={v}" for n, v in zip(self.label_names, key, strict=True)))
            self.dropped_series += 1
            return None
        return key

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError(f"counter {self.name} cannot go down")
        key = self._key(labels)
        if key is not None:
            self.values[key] = self.values.get(key, 0) + amount

    def set(self, value: float, **labels: object) -> None:
        """Gauges: the current value. Counters: mirror a count kept elsewhere (never lower it)."""
        key = self._key(labels)
        if key is None:
            return
        if self.kind == "counter":
            value += self.base.get(key, 0)
            if value < self.values.get(key, 0):
                # a count kept elsewhere went back (an HTTP 413's split takes back what it
                # had counted sent): kept where it was, never a scrape that fails
                return
        self.values[key] = value

    def get(self, **labels: object) -> float:
        return self.values.get(tuple(str(labels[n]) for n in self.label_names), 0)

    def remove_matching(self, **labels: object) -> None:
        """Forget every series whose labels include these (e.g. a removed sink)."""
        idx = [(self.label_names.index(k), str(v)) for k, v in labels.items()]
        if len(idx) == len(self.label_names):  # one series: no walk over all (1,000 sources)
            self.values.pop(tuple(v for _, v in sorted(idx)), None)
            return
        for key in [k for k in self.values if all(k[i] == v for i, v in idx)]:
            del self.values[key]

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        names = self.label_names
        for key, value in self.values.items():
            if names:
                labels = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, key, strict=True))
                out.append(f"{self.name}{{{labels}}} {format_value(value)}")
            else:
                out.append(f"{self.name} {format_value(value)}")


class Registry:
    """The metrics of one process, in registration order."""

    __slots__ = ("metrics", "collectors")

    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}
        self.collectors: list[Callable[[], None]] = []

    def _add(self, metric: Metric) -> Metric:
        if metric.name in self.metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self.metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labels: Iterable[str] = ()) -> Metric:
        return self._add(Metric(name, help, "counter", labels))

    def gauge(self, name: str, help: str, labels: Iterable[str] = ()) -> Metric:
        return self._add(Metric(name, help, "gauge", labels))

    def carry_from(self, old: Registry, *, skip: Iterable[str] = ()) -> None:
        """After a reload: this registry's counters go on from ``old``'s totals (a reload
        reset every ``*_total``, and ``shipper_start_time_seconds`` moved though the
        process did not start). ``skip``: counters mirrored from a count the reload
        keeps itself (they would be counted twice)."""
        skipped = set(skip)
        for name, metric in self.metrics.items():
            prev = old.metrics.get(name)
            if prev is None or name in skipped:
                continue
            if metric.kind == "counter":
                metric.base = dict(prev.values)  # (shown from the next collect on)
            elif name == "shipper_start_time_seconds":
                metric.values = dict(prev.values)

    def add_collector(self, fn: Callable[[], None]) -> None:
        """``fn`` runs before each render, to copy values kept elsewhere (must be quick)."""
        self.collectors.append(fn)

    def render(self) -> str:
        for fn in self.collectors:
            try:
                fn()
            except Exception:  # a broken collector must not take /metrics down
                log.exception("metrics collector %r failed", fn)
        out: list[str] = []
        for metric in self.metrics.values():
            metric.render(out)
        out.append("")
        return "\n".join(out)


@dataclass(slots=True)
class ShipperMetrics:
    """Every metric the daemon exports, declared in one place (names are the contract)."""

    build_info: Metric
    start_time: Metric
    source_lines: Metric
    source_bytes: Metric
    source_lag: Metric
    source_unread: Metric
    source_deleted_unread: Metric
    source_gaps: Metric
    source_gap_bytes: Metric
    source_not_followed: Metric
    source_multilog_running: Metric
    source_disk_free: Metric
    records: Metric
    filtered: Metric
    rate_limited: Metric
    sink_sent: Metric
    sink_acked: Metric
    sink_retried: Metric
    sink_failures: Metric
    sink_dead_lettered: Metric
    sink_truncated: Metric
    sink_events: Metric
    sink_connected: Metric
    sink_failing: Metric
    sink_last_error: Metric
    buffer_bytes: Metric
    buffer_records: Metric
    buffer_oldest_age: Metric
    buffer_dropped: Metric
    buffer_repairs: Metric
    buffer_lost: Metric
    buffer_errors: Metric
    buffer_paused: Metric
    buffer_orphaned: Metric
    reloads: Metric
    state_write_errors: Metric
    state_failing: Metric


def declare_shipper_metrics(registry: Registry, state_dir: str = "") -> ShipperMetrics:
    r = registry
    m = ShipperMetrics(
        build_info=r.gauge("shipper_build_info", "Version and state_dir of the running shipper "
                           "(value 1): which shipper answers on this port.", ("version", "state_dir")),
        start_time=r.gauge("shipper_start_time_seconds", "Unix time the process started."),
        source_lines=r.counter("shipper_source_lines_total", "Lines read, per source.", ("source",)),
        source_bytes=r.counter("shipper_source_bytes_total", "Bytes read, per source.", ("source",)),
        source_lag=r.gauge("shipper_source_lag_seconds",
                           "Now minus the event time of the newest line read, per source.",
                           ("source",)),
        source_unread=r.gauge("shipper_source_unread_bytes",
                              "Bytes written to the log and not read yet, per source (0: caught "
                              "up; unlike the lag, it stays 0 on a quiet log).", ("source",)),
        source_deleted_unread=r.gauge(
            "shipper_source_deleted_unread_bytes",
            "Bytes of archives multilog deleted before they were read, not reported as gap "
            "records yet (reading paused by a full buffer: they are when it resumes).",
            ("source",)),
        source_gaps=r.counter("shipper_source_gaps_total",
                              "Files removed (by multilog's n limit) before they were read.",
                              ("source",)),
        source_gap_bytes=r.counter("shipper_source_gap_bytes_total",
                                   "Bytes known lost in gaps, per source.", ("source",)),
        source_not_followed=r.gauge(
            "shipper_source_not_followed",
            "1 for each log matched and not followed now, with why (file_descriptors: none "
            "left for it, ulimit -n; unreadable: this user cannot list its directory or open a "
            "file of it; blocked: a file of it is a symbolic link, not a regular file, or cannot "
            "be read): its lines are not shipped, and multilog may delete them.",
            ("source", "reason")),
        source_multilog_running=r.gauge(
            "shipper_source_multilog_running",
            "1 while a multilog holds the lock of the log directory, 0 when none does (its "
            "service is down: nothing is logged, the lag grows as on a quiet log).", ("source",)),
        source_disk_free=r.gauge(
            "shipper_source_disk_free_bytes",
            "Bytes free (to users) on the file system of the log directory: with none, "
            "multilog pauses, and the service logging there waits.", ("source",)),
        records=r.counter("shipper_records_total", "Records produced, per program and event.",
                          ("program", "event")),
        filtered=r.counter("shipper_transform_filtered_total",
                           "Records dropped by the include/exclude filter."),
        rate_limited=r.counter("shipper_transform_rate_limited_total",
                               "Records dropped by the rate limit, per program.", ("program",)),
        state_write_errors=r.counter(
            "shipper_state_write_errors_total",
            "Failed writes of a checkpoint or of the tracking state, per file.", ("file",)),
        state_failing=r.gauge(
            "shipper_state_failing_seconds",
            "How long a checkpoint or the tracking state has failed to be written (0: written); "
            "after a crash meanwhile, lines are read again and deleted archives reported as gaps.",
            ("file",)),
        sink_sent=r.counter("shipper_sink_sent_total", "Records handed to the peer, each try of "
                            "each (HTTP: a batch answered 5xx or split by a 413 counts again; "
                            "stream sinks: a record once a connection).", ("sink",)),
        sink_acked=r.counter("shipper_sink_acked_total", "Records the peer confirmed.", ("sink",)),
        sink_retried=r.counter("shipper_sink_retried_total",
                                  "Records tried again after a failed attempt (counted at each try: "
                                  "a batch tried 10 times counts 10 times its records).",
                               ("sink",)),
        sink_failures=r.counter("shipper_sink_failures_total", "Failed delivery attempts (batches).",
                                ("sink",)),
        sink_dead_lettered=r.counter("shipper_sink_dead_lettered_total",
                                     "Records the peer refused for good, kept in the dead-letter file.",
                                     ("sink",)),
        sink_truncated=r.counter("shipper_sink_truncated_total",
                                 "Records cut to fit a size limit (flagged, not dropped).", ("sink",)),
        sink_events=r.counter("shipper_sink_events_total",
                              "What a sink of this type counts besides: peer_closed (connections "
                              "the peer ended), unexpected_bytes (sent by a syslog peer, which sends "
                              "none), resent_unacknowledged (records sent again after a connection "
                              "lost them), duplicates (items an HTTP receiver had already), "
                              "datagrams (GELF UDP), rotations, files_dropped, reopened (file sink).",
                              ("sink", "event")),
        sink_connected=r.gauge("shipper_sink_connected", "1 when the sink's connection is up.",
                               ("sink",)),
        sink_failing=r.gauge("shipper_sink_failing",
                             "1 while the sink's delivery attempts fail (its last one failed), "
                             "connected or not.", ("sink",)),
        sink_last_error=r.gauge("shipper_sink_last_error_info",
                                "The sink's last error (value 1; one series per sink).",
                                ("sink", "error")),
        buffer_bytes=r.gauge("shipper_buffer_bytes", "Bytes on disk (or in memory) in the queue.",
                             ("sink",)),
        buffer_records=r.gauge("shipper_buffer_records", "Records waiting in the queue.", ("sink",)),
        buffer_oldest_age=r.gauge("shipper_buffer_oldest_age_seconds",
                                  "Age of the oldest unacknowledged record.", ("sink",)),
        buffer_dropped=r.counter("shipper_buffer_dropped_total",
                                 "Records dropped because the queue was full (when_full).",
                                 ("sink", "reason")),
        buffer_repairs=r.counter("shipper_buffer_repairs_total",
                                 "Repairs at recovery (torn tails, corrupt records set aside).",
                                 ("sink",)),
        buffer_lost=r.counter("shipper_buffer_lost_records_total",
                              "Records lost to corrupt or missing buffer bytes (each said in the log).",
                              ("sink",)),
        buffer_errors=r.counter("shipper_buffer_errors_total",
                                "Buffer I/O errors: write (an append), state (its state file), "
                                "delete (a delivered segment left on disk), read (a segment "
                                "that could not be read), set_aside (segments renamed "
                                "*.corrupt: not what their name says, or unreadable).",
                                ("sink", "kind")),
        buffer_paused=r.gauge("shipper_buffer_paused_seconds",
                              "How long this sink's buffer (full, or its disk failing) has paused "
                              "the reading; 0 when it takes records.", ("sink",)),
        buffer_orphaned=r.gauge("shipper_buffer_orphaned_records",
                                "Undelivered records in a buffer directory no configured sink "
                                "uses (a sink removed or renamed), as of the last start or "
                                "reload.", ("path",)),
        reloads=r.counter("shipper_config_reloads_total", "Configuration reloads, by result.",
                          ("result",)),
    )
    m.build_info.set(1, version=__version__, state_dir=state_dir)
    m.start_time.set(time.time())
    return m


def set_last_error(metric: Metric, sink: str, error: str) -> None:
    """Keep one ``shipper_sink_last_error_info`` series per sink (bounded cardinality)."""
    metric.remove_matching(sink=sink)
    if error:
        metric.set(1, sink=sink, error=error[:200])


# ---------------------------------------------------------------- the endpoint


def _run_check(check: Check | None) -> tuple[bool, str]:
    if check is None:
        return True, "ok"
    try:
        got = check()
    except Exception as exc:
        return False, f"check failed: {type(exc).__name__}: {exc}"
    if isinstance(got, tuple):
        return bool(got[0]), str(got[1])
    return bool(got), "ok" if got else "not ok"


# In the state dir: the address the metrics endpoint listens on, as HOST:PORT
METRICS_ADDR_FILE = "metrics.addr"


class MetricsServer:
    """``/metrics``, ``/healthz``, ``/readyz`` over HTTP/1.1, one request per connection."""

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 9810,
                 health: Check | None = None, ready: Check | None = None) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.health = health
        self.ready = ready
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def start(self, listen: str | None = None) -> None:
        """Bind (port 0 picks a free port; ``self.port`` then holds it) and serve.

        ``listen`` (``HOST:PORT``, as in the config) overrides host and port.
        """
        if listen is not None:
            from shipper.config import split_host_port

            self.host, self.port = split_host_port(listen)
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  limit=MAX_REQUEST_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        """``HOST:PORT`` it listens on (``[HOST]:PORT`` for IPv6), as ``listen`` takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    stop = close

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError,
                    ConnectionError) as exc:
                if isinstance(exc, asyncio.LimitOverrunError):
                    await self._send(writer, 431, "request header too large\n")
                return
            self.requests += 1
            status, body, ctype, head_only = self._respond(head)
            await self._send(writer, status, body, ctype, head_only)
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)
            except (OSError, TimeoutError):
                pass

    def _respond(self, head: bytes) -> tuple[int, str, str, bool]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "bad request\n", "text/plain; charset=utf-8", False
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/healthz", "/readyz"):
            return 404, "not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8", False
        if method not in ("GET", "HEAD"):
            return 405, "method not allowed\n", "text/plain; charset=utf-8", False
        head_only = method == "HEAD"
        if target == "/metrics":
            return 200, self.registry.render(), CONTENT_TYPE, head_only
        ok, detail = _run_check(self.health if target == "/healthz" else self.ready)
        return (200 if ok else 503), detail.rstrip("\n") + "\n", "text/plain; charset=utf-8", head_only

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: str,
                    ctype: str = "text/plain; charset=utf-8", head_only: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  431: "Request Header Fields Too Large", 503: "Service Unavailable"}[status]
        data = body.encode("utf-8")
        extra = "Allow: GET, HEAD\r\n" if status == 405 else ""
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(data)}\r\n{extra}Connection: close\r\n\r\n".encode("ascii"))
        if not head_only:
            writer.write(data)
        await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
