"""`shipper status`: what a running shipper is doing, from its metrics endpoint."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict

from shipper.sinks.base import printable

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$')
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m:
            labels = {k: _unescape(v) for k, v in _LABEL_RE.findall(m.group(2) or "")}
            out[m.group(1)].append((labels, float(m.group(3))))
    return out


_ESCAPE_RE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    """A label value as the exposition format escapes it (``\\``, ``\"``, ``\n``):
    "unicode_escape" read its UTF-8 as Latin-1 (a source ``ü`` shown as ``Ã¼``)."""
    return _ESCAPE_RE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _shown(text: str) -> str:
    """A name or an error on one line of the table: control characters escaped (a
    directory named with a newline split the table)."""
    return printable(text, 1000)


def _by(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, label: str) -> dict[str, float]:
    return {lb.get(label, ""): v for lb, v in metrics.get(name, [])}


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


STATUS_MAX_BYTES = 16 << 20


def _lag(secs: float | None) -> str:
    """No line with a time read yet: the lag is not known, not 0."""
    return "-" if secs is None else f"{secs:.1f}"


# More sources than this (a host logging into 500 multilog directories): only those
# behind or with gaps are listed, worst first, and the others counted in one line. A
# table of 1,000 alike rows hid the one directory that was behind (a scale hunt).
SOURCES_SHOWN = 40


# Why a log matched is not followed (shipper_source_not_followed's reason), in short:
# the /healthz line status ends with says it whole
_NOT_FOLLOWED = {"file_descriptors": "for want of file descriptors (ulimit -n)",
                 "unreadable": "unreadable by this user",
                 "blocked": "a file or the directory cannot be read (see the log)"}


# Less free than this on a log's file system: full, as far as multilog goes (a new file at
# each rotation, and writes of up to a few KiB)
DISK_FULL_BYTES = 64 << 10


def _logs(paths: list[str]) -> str:
    return f"{len(paths):,} log{'s' if len(paths) > 1 else ''}"


def _names(paths: list[str]) -> str:
    """The first three, and how many more."""
    more = f" and {len(paths) - 3:,} more" if len(paths) > 3 else ""
    return ", ".join(_shown(p) for p in paths[:3]) + more


def _not_followed(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> list[str]:
    """A line per reason for the logs matched and not followed: not in the table (they
    have no counts), they looked all green while not shipped."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for lb, v in metrics.get("shipper_source_not_followed", []):
        if v:
            by_reason[lb.get("reason", "")].append(lb.get("source", ""))
    return [f"not followed: {_logs(paths)}, {_NOT_FOLLOWED.get(reason, _shown(reason))}: "
            f"{_names(sorted(paths))}" for reason, paths in sorted(by_reason.items())]


def render(metrics: dict[str, list[tuple[dict[str, str], float]]], all_sources: bool = False) -> str:
    lines = []
    version = next((lb.get("version") for lb, _ in metrics.get("shipper_build_info", [])), "?")
    lines.append(f"shipper {version}")
    lines.append("")
    lines.append(f"{'source':50} {'lines':>12} {'unread':>10} {'lag s':>8} {'gaps':>6}")
    lag = _by(metrics, "shipper_source_lag_seconds", "source")
    gaps = _by(metrics, "shipper_source_gaps_total", "source")
    unread = _by(metrics, "shipper_source_unread_bytes", "source")
    rows = sorted(_by(metrics, "shipper_source_lines_total", "source").items())
    hidden, hidden_trouble = 0, 0
    if not all_sources and len(rows) > SOURCES_SHOWN:
        trouble = sorted((r for r in rows if unread.get(r[0], 0) > 0 or gaps.get(r[0], 0) > 0),
                         key=lambda r: (-unread.get(r[0], 0), -gaps.get(r[0], 0), r[0]))
        hidden, hidden_trouble = len(rows) - len(trouble[:SOURCES_SHOWN]), len(trouble[SOURCES_SHOWN:])
        rows = trouble[:SOURCES_SHOWN]
    for src, n in rows:
        lines.append(f"{_shown(src)[-50:]:50} {n:>12,.0f} {_size(unread.get(src, 0)):>10} "
                     f"{_lag(lag.get(src)):>8} {gaps.get(src, 0):>6,.0f}")
    if hidden:
        rest = (f"{hidden_trouble:,} of them behind or with gaps" if hidden_trouble
                else "each read to the end, no gaps")
        lines.append(f"... and {hidden:,} more sources: {rest} (status --all lists every one)")
    lines.extend(_not_followed(metrics))
    # (a log whose multilog is stopped, or whose disk is full, lags as a quiet one does:
    # the table alone cannot tell them apart)
    stopped = sorted(lb.get("source", "") for lb, v in metrics.get("shipper_source_multilog_running", [])
                     if not v)
    if stopped:
        lines.append(f"no multilog running in {_logs(stopped)} (nothing is logged there: svstat "
                     f"its log service): {_names(stopped)}")
    full = sorted(lb.get("source", "") for lb, v in metrics.get("shipper_source_disk_free_bytes", [])
                  if v < DISK_FULL_BYTES)
    if full:
        lines.append(f"disk full under {_logs(full)} (multilog pauses, and the service logging "
                     f"there waits: free space there): {_names(full)}")
    lines.append("")
    lines.append(f"{'sink':20} {'state':>7} {'acked':>12} {'retried':>9} {'refused':>8} {'buffered':>10} "
                 f"{'oldest s':>9} last error")
    up = _by(metrics, "shipper_sink_connected", "sink")
    acked = _by(metrics, "shipper_sink_acked_total", "sink")
    retried = _by(metrics, "shipper_sink_retried_total", "sink")
    refused = _by(metrics, "shipper_sink_dead_lettered_total", "sink")
    depth = _by(metrics, "shipper_buffer_records", "sink")
    age = _by(metrics, "shipper_buffer_oldest_age_seconds", "sink")
    failing = _by(metrics, "shipper_sink_failing", "sink")
    errors = {lb.get("sink", ""): lb.get("error", "") for lb, _ in metrics.get("shipper_sink_last_error_info", [])}
    for sink in sorted(set(acked) | set(depth)):
        # not connected and never failed: nothing to send yet ("idle"); a connected
        # sink's last error is history, not its state, unless its tries fail now
        # (a receiver answering 500 to every batch, or never answering, keeps the
        # connection up: found by fault injection, "up" with no error while nothing moved)
        error = "" if up.get(sink) and not failing.get(sink) else errors.get(sink, "")
        state = ("failing" if failing.get(sink) else "up") if up.get(sink) else "down" if error else "idle"
        if not error and refused.get(sink) and not failing.get(sink):
            error = errors.get(sink, "")  # records it refused for good: why, though it is up
        lines.append(f"{_shown(sink):20} {state:>7} {acked.get(sink, 0):>12,.0f} "
                     f"{retried.get(sink, 0):>9,.0f} {refused.get(sink, 0):>8,.0f} "
                     f"{depth.get(sink, 0):>10,.0f} {age.get(sink, 0):>9.1f} {_shown(error)[:60]}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="shipper status",
                                 description="Show sources, lag, buffers and sinks of a running shipper "
                                             "(reads its metrics endpoint).")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("-c", "--config", metavar="FILE", help="take the metrics address from this config")
    g.add_argument("--url", default=None, help="metrics address (default http://127.0.0.1:9810)")
    ap.add_argument("--all", action="store_true",
                    help=f"list every source (over {SOURCES_SHOWN}: only those behind or with gaps)")
    args = ap.parse_args(argv)
    url = args.url or "http://127.0.0.1:9810"
    if args.config:
        from shipper.config import ConfigError, load_config

        try:
            cfg = load_config(args.config, check_files=False)
        except ConfigError as exc:
            # Only state_dir and [metrics] matter here: a sink's ${VAR} or *_env that
            # only the service's environment (envdir, EnvironmentFile) sets is no error.
            ours = [line for line in exc.errors if line.startswith(("state_dir:", "metrics.", "metrics:"))]
            if exc.partial is None or ours:
                for line in ours or exc.errors:
                    print(f"shipper: {line}", file=sys.stderr)
                return 2
            cfg = exc.partial
        if not cfg.metrics.enabled:
            print("shipper: metrics are off in this config: status has nothing to read", file=sys.stderr)
            return 2
        url = f"http://{cfg.metrics.listen}"
        if cfg.metrics.listen.rsplit(":", 1)[-1] == "0":  # a port picked at start: noted there
            from shipper.metrics import METRICS_ADDR_FILE

            try:
                with open(os.path.join(cfg.state_dir, METRICS_ADDR_FILE), encoding="ascii") as f:
                    url = f"http://{f.read().strip()}"
            except (OSError, UnicodeDecodeError):
                print(f"shipper: metrics listen on port 0 and {cfg.state_dir}/{METRICS_ADDR_FILE} "
                      "cannot be read (is shipper running?)", file=sys.stderr)
                return 1
    if not url.startswith("http"):
        url = "http://" + url
    try:
        # bounded, whatever answers there (any local user may listen on the port while
        # shipper is down): 16 MiB, and the whole answer within 10 s (a security review)
        deadline = time.monotonic() + 10
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as r:
            parts, got = [], 0
            while got <= STATUS_MAX_BYTES:
                if time.monotonic() > deadline:
                    raise TimeoutError("the answer took longer than 10 s")
                chunk = r.read1(65536)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            if got > STATUS_MAX_BYTES:
                raise ValueError(f"an answer over {STATUS_MAX_BYTES >> 20} MiB")
            text = b"".join(parts).decode()
        metrics = parse_exposition(text)
        report = render(metrics, args.all)
    except Exception as exc:  # noqa: BLE001 - a bad URL, a peer that is not ours: one line
        why = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        if isinstance(why, OSError) and why.strerror:  # "Connection refused", not "[Errno 111] ..."
            why = why.strerror
        print(f"shipper: cannot read {printable(url)}/metrics: {printable(str(why))} "
              "(is shipper running there?)", file=sys.stderr)
        return 1
    if args.config:
        # Two shippers on one host both default to port 9810: the one this config runs
        # may have gone on without metrics, and another answers there.
        theirs = {lb.get("state_dir") for lb, _ in metrics.get("shipper_build_info", [])} - {None, ""}
        if theirs and cfg.state_dir not in theirs:
            print(f"shipper: {printable(url)} answers for another shipper (state_dir "
                  f"{printable(', '.join(sorted(theirs)))}), not the one of {args.config} (state_dir "
                  f"{cfg.state_dir}): give each its own metrics.listen", file=sys.stderr)
            return 1
    print(report)
    problem = _health_problem(url)
    if problem:
        # the table showed the sink up and its buffer empty while a read-only state_dir
        # had paused all reading: only the growing unread and lag hinted at it
        print(f"\nunhealthy: {printable(problem)}")
        return 1
    return 0


def _health_problem(url: str) -> str:
    """What /healthz says is wrong ("" when healthy or when it cannot be asked)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=5):
            return ""
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            return ""
        return exc.read(4096).decode("utf-8", "replace").strip() or "see the log"
    except Exception:  # noqa: BLE001 - gone meanwhile: the table is what there is
        return ""
