"""`shipper check -c FILE`: validate a configuration, then probe what it names.

Every problem is one line on stdout; the exit code is 0 when there is none,
1 when a probe failed, 2 when the configuration itself is invalid. Nothing is
sent to a sink: a probe connects (and does the TLS handshake, or one HTTP
request) and hangs up.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import socket
import sys
import tempfile

from shipper.assemble import build_sink, private_dir_problems
from shipper.config import Config, ConfigError, SinkConfig, load_config, shown_url
from shipper.daemon import metrics_listen_problem, nearest_existing, owning_dir, write_access_hint
from shipper.follower import (
    expand,
    file_problem,
    multilog_dir_problem,
    parent_log_hint,
    unmatched_problem,
)
from shipper.reader import open_log_file
from shipper.sinks.base import SinkError, lookup


async def _probe_stream(cfg: SinkConfig) -> str:
    # the sink's own connect, so check says what run's log will say: with a TLS 1.3
    # receiver refusing our client certificate after the handshake too (check said ok)
    try:
        sink = build_sink(cfg)
    except (ValueError, OSError) as exc:
        return str(exc)
    try:
        await sink.connect()
    except SinkError as exc:
        return _without_peer(str(exc), cfg)
    finally:
        await sink.close()
    return ""


def _without_peer(text: str, cfg: SinkConfig) -> str:
    """A sink's error without the "host:port: " or "host: " it starts with: check names
    the peer first."""
    return text.removeprefix(f"{cfg.host}:{cfg.port}: ").removeprefix(f"{cfg.host}: ")


async def _probe_relp(cfg: SinkConfig) -> str:
    sink = build_sink(cfg)
    sink.ack_timeout = cfg.connect_timeout  # the answer to "open" comes at once or never
    try:
        await sink.probe()
    except SinkError as exc:
        return _without_peer(str(exc), cfg)
    return ""


def _probe_http(cfg: SinkConfig) -> str:
    try:
        sink = build_sink(cfg)
    except (ValueError, OSError) as exc:
        return str(exc)
    try:  # the sink's own bounded look-up: http.client's waits as long as the name server
        asyncio.run(sink.look_up())
    except SinkError as exc:
        return str(exc).removeprefix(f"{sink.url}: ")
    return sink.probe()


def _probe_sink(cfg: SinkConfig) -> tuple[str, str]:
    """(what was probed, problem or "")."""
    t = cfg.type
    if t in ("syslog", "relp") or (t == "gelf" and cfg.transport in ("tcp", "tls")):
        proto = cfg.protocol or cfg.transport or "tcp"
        if proto == "udp":
            return _probe_udp(cfg)
        tls = proto == "tls" or (t == "relp" and cfg.tls is not None)
        what = f"{proto} {cfg.host}:{cfg.port}"
        if t == "relp":
            return f"relp {cfg.host}:{cfg.port}" + (" (tls)" if tls else ""), \
                asyncio.run(_probe_relp(cfg))
        return what, asyncio.run(_probe_stream(cfg))
    if t == "gelf" and cfg.transport == "udp":
        return _probe_udp(cfg)
    if t == "http" or (t == "gelf" and cfg.transport == "http"):
        return f"http {shown_url(cfg.url)}", _probe_http(cfg)
    if t == "file":
        if cfg.path and os.path.isdir(cfg.path):
            return f"file {cfg.path}", "is a directory, not a file"
        d = os.path.dirname(os.path.abspath(cfg.path or ".")) or "."
        probe = nearest_existing(d)  # run makes missing directories: this one must take them
        if not os.path.isdir(probe):
            return f"file {cfg.path}", f"{probe} is not a directory"
        if not os.access(probe, os.W_OK):
            return f"file {cfg.path}", f"directory {probe} is not writable"
        return f"file {cfg.path}" + ("" if probe == d else f" ({d} will be made)"), ""
    return t, ""


def _probe_udp(cfg: SinkConfig) -> tuple[str, str]:
    what = f"udp {cfg.host}:{cfg.port}"
    assert cfg.host is not None and cfg.port is not None
    try:  # bounded as the sinks' look-ups are: a silent name server held check 30 s a sink
        asyncio.run(asyncio.wait_for(lookup(cfg.host, cfg.port, socket.SOCK_DGRAM), cfg.connect_timeout))
    except TimeoutError:  # the words the look-up itself ends with (see open_stream)
        return what, "cannot resolve the host name: Temporary failure in name resolution"
    except OSError as exc:
        return what, f"cannot resolve the host name: {exc.strerror or exc}"
    return what + " (UDP has no handshake: only the name was checked)", ""


def _check_sources(config: Config) -> tuple[list[str], list[str]]:
    """What ``run`` would say about each configured path, said now: (warnings, errors).
    A path this user cannot read is an error: run would ship nothing from it."""
    notes: list[str] = []
    errors: list[str] = []
    every_log = [p for src in config.sources.values() if src.type == "multilog" for p in src.paths]
    for s in config.sources.values():
        if s.type == "stdin":
            continue
        problem = multilog_dir_problem if s.type == "multilog" else file_problem
        for pat in s.paths:
            paths = expand(pat)
            if not paths:
                text = unmatched_problem(pat)
                (errors if "Permission denied" in text else notes).append(f"sources.{s.name}: {text}")
            if s.type == "multilog" and glob.has_magic(pat):  # as run: files beside the dirs
                paths = [p for p in paths if not os.path.isfile(p)]
                hint = parent_log_hint(pat, every_log)
                if hint:
                    notes.append(f"sources.{s.name}: {hint}")
            for p in paths:
                text = problem(p)
                current = os.path.join(p, "current")
                if text is None and s.type == "multilog" and os.path.exists(current) \
                        and not os.access(current, os.R_OK):
                    text = f"{current}: cannot read it: Permission denied (run waits for it)"
                if text:  # never read, not "followed when it appears": errors
                    (errors if "Permission denied" in text or "not followed" in text
                     else notes).append(f"sources.{s.name}: {text}")
                elif s.type == "multilog" and (hint := _unstamped(current)):
                    notes.append(f"sources.{s.name}: {hint}")
    return notes, errors


def _unstamped(current: str) -> str | None:
    """A hint when a multilog current's first line has no TAI64N label (multilog run
    without ``t``): times are then guessed, and files that begin with the same line get
    the same event ids, which a SIEM deduplicating by id would merge."""
    try:  # a FIFO or a link named current: not waited on, not followed (a security review)
        fd = open_log_file(current)
    except OSError:
        return None
    try:
        head = os.read(fd, 64)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head or head[:1] == b"@":
        return None
    return (f"{current}: its lines carry no TAI64N label: run multilog with 't' (times are "
            "otherwise guessed, and event ids can repeat between files that begin alike)")


def _check_dirs(config: Config) -> list[str]:
    problems = []
    dirs = {config.state_dir} | {s.buffer.path for s in config.sinks.values() if s.buffer.type == "disk"}
    said: set[str] = set()  # the buffers below a state_dir that cannot be written: one line
    for d in sorted(dirs):
        probe = nearest_existing(d)
        if not probe or probe in said:
            continue
        if not os.path.isdir(probe):
            problems.append(f"{d}: {probe} is not a directory (state and buffers live there)")
            continue
        try:  # really write, as run will: os.access says yes to root on /proc, say
            os.rmdir(tempfile.mkdtemp(prefix=".shipper-check-", dir=probe))
        except OSError as exc:
            said.add(probe)
            problems.append(f"{d}: cannot create directories in {probe}: {exc.strerror} "
                            f"(state and buffers live there; "
                            f"{write_access_hint(owning_dir(config, d), probe)})")
            continue
    if not problems:  # run refuses these: another user could swap their files
        problems += private_dir_problems(config, tightened=False)
    return problems


def _metrics_port_taken(config: Config) -> str:
    """Why run could not listen for metrics, or "": bound and let go at once."""
    m = config.metrics
    if not m.enabled:
        return ""
    host, port = m.address
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"metrics.listen: cannot listen on {m.listen}: {exc.strerror or exc}"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            sock.bind(addr)
        except OSError as exc:
            return metrics_listen_problem(m.listen, exc)
    return ""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="shipper check",
        description="Validate the configuration, then probe each sink (connect, TLS handshake, "
                    "HTTP reachability). Run it as the user shipper runs as, with the service's "
                    "environment (secrets from envdir). Exit 0: all good; 1: a problem found (a sink "
                    "that does not answer, a log or state directory this user cannot use); 2: "
                    "invalid configuration.")
    ap.add_argument("-c", "--config", required=True, metavar="FILE", help="the configuration file")
    ap.add_argument("--no-probe", action="store_true", help="only validate, connect to nothing")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {line}")
        return 2
    except OSError as exc:
        print(f"error: {args.config}: {exc.strerror}")
        return 2
    for w in config.warnings:
        print(f"warning: {w}")
    # (not "ok": problems found below may follow it)
    print(f"valid: {args.config}: {len(config.sources)} sources, {len(config.sinks)} sinks")
    notes, unreadable = _check_sources(config)
    for n in notes:
        print(f"warning: {n}")
    if (busy := _metrics_port_taken(config)):
        print(f"warning: {busy} (run goes on without metrics)")
    problems = unreadable + _check_dirs(config)
    for name, scfg in config.sinks.items():  # what run builds must build here too
        try:
            build_sink(scfg)
        except Exception as exc:  # noqa: BLE001 - any refusal is the user's to see
            problems.append(f"sinks.{name}: cannot be set up: {exc}")
    if not args.no_probe:
        for name, scfg in config.sinks.items():
            try:
                what, problem = _probe_sink(scfg)
            except Exception as exc:  # noqa: BLE001 - a key that does not match its cert, ...
                what, problem = scfg.type, f"{type(exc).__name__}: {exc}"
            if problem:
                problems.append(f"sinks.{name}: {what}: {problem}")
            else:
                print(f"ok: sinks.{name}: {what}")
    for p in problems:
        print(f"error: {p}")
    sys.stdout.flush()
    return 1 if problems else 0
