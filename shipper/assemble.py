"""Configuration → running parts: sources, queues, sinks, transforms, tracker, pipeline.

Only construction lives here; behaviour lives in the parts. ``Assembly.collect``
copies the parts' counters into the metrics registry just before a scrape.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipper.checkpoint import atomic_write, checkpoint_dir, checkpoint_path, unsafe_dir_problem
from shipper.config import Config, SinkConfig, SourceConfig
from shipper.diskqueue import DiskQueue
from shipper.follower import FileSource, MultilogSource, held_locks, not_followed_problem
from shipper.memqueue import MemQueue
from shipper.metrics import Registry, ShipperMetrics, declare_shipper_metrics, set_last_error
from shipper.orphans import adopt_checkpoints, report_orphan_buffers
from shipper.parse_worker import resolve_workers
from shipper.pipeline import Pipeline, SinkRoute
from shipper.record import dumps_safe
from shipper.transforms import build_transformer, own_record, sink_filter

log = logging.getLogger("shipper")

SUMMARY_EVENTS = frozenset({"mail", "smtp_session"})
# /healthz says so once the state has failed to be written this long (a read-only
# state_dir, a full disk): a moment of it is retried without a word to the monitor
STATE_FAILING_UNHEALTHY = 10.0
FLUSH_EVERY = 10.0  # s between ageings of what the correlator holds open
# s between them while it holds mails for their session's reply: on a quiet host a local
# mail's summary waited for the next ageing, up to 15 s (a review)
HELD_FLUSH_EVERY = 1.0


def is_summary(rec: dict[str, Any]) -> bool:
    return rec.get("event") in SUMMARY_EVENTS


def batch_age(cfg: SinkConfig) -> float:
    """How long a sink's batch waits to fill: its ``batch_max_age``, by default 1 s where
    each batch is a request (HTTP; ClickHouse makes a part of each insert), none where
    records go down a stream and a wait is only latency."""
    if cfg.batch_max_age is not None:
        return cfg.batch_max_age
    return 1.0 if cfg.type == "http" or cfg.type == "gelf" and cfg.transport == "http" else 0.0


def tracking_path(state_dir: str) -> str:
    """The mail and session tracking state's file."""
    return os.path.join(state_dir, "tracking.json")


def build_source(cfg: SourceConfig, config: Config) -> Any:
    if cfg.type == "stdin":
        from shipper.stdin_source import StdinSource

        return StdinSource(max_line=cfg.parse_options(config.parse).max_line)
    state = checkpoint_path(config.state_dir, cfg.name)
    os.makedirs(os.path.dirname(state), mode=0o700, exist_ok=True)  # whatever the umask
    kind = MultilogSource if cfg.type == "multilog" else FileSource
    return kind(cfg.paths, state, start=cfg.start_position, watch=cfg.watch,
                poll_interval=cfg.poll_interval, max_line=cfg.parse_options(config.parse).max_line)


def build_sink(cfg: SinkConfig) -> Any:
    t = cfg.type
    if t in ("syslog", "relp"):
        from shipper.encode.rfc5424 import DEFAULT_MAX_SIZE, Rfc3164Encoder, Rfc5424Encoder

        if cfg.format == "rfc3164":
            encoder: Any = Rfc3164Encoder(facility=cfg.facility, msg_field=cfg.msg_field,
                                          local_time=cfg.local_time, max_size=cfg.max_message_bytes or 1024)
        else:
            kwargs: dict[str, Any] = {"sd_id": cfg.sd_id, "facility": cfg.facility,
                                      "msg_field": cfg.msg_field, "bom": cfg.bom}
            if cfg.max_message_bytes:
                kwargs["max_size"] = cfg.max_message_bytes
            elif t == "syslog" and cfg.protocol == "udp":
                from shipper.sinks.syslog import DEFAULT_MAX_DATAGRAM

                kwargs["max_size"] = DEFAULT_MAX_DATAGRAM  # one datagram, unfragmented on Ethernet
            if t == "relp":  # never more than a RELP frame carries: it would stop the sink
                from shipper.relp import DEFAULT_MAX_DATA

                # by default what imrelp takes whole (it cuts a longer frame and answers
                # 200 OK all the same: cut without a flag, counted delivered)
                kwargs["max_size"] = min(kwargs.get("max_size", DEFAULT_MAX_SIZE), DEFAULT_MAX_DATA)
            encoder = Rfc5424Encoder(**kwargs)
        if t == "relp":
            from shipper.sinks.relp import RelpSink

            return RelpSink(cfg.host, cfg.port, tls=cfg.tls, window=cfg.window, encoder=encoder,
                            connect_timeout=cfg.connect_timeout,
                            keepalive=(60, 10, 5) if cfg.keepalive else None, name=cfg.name)
        from shipper.sinks.syslog import DEFAULT_MAX_DATAGRAM, SyslogTcpSink, SyslogUdpSink

        if cfg.protocol == "udp":
            return SyslogUdpSink(cfg.host, cfg.port, encoder=encoder, name=cfg.name,
                                 max_datagram=max(encoder.max_size, DEFAULT_MAX_DATAGRAM))
        return SyslogTcpSink(cfg.host, cfg.port, framing=cfg.framing,
                             tls=cfg.tls if cfg.protocol == "tls" else None, encoder=encoder,
                             connect_timeout=cfg.connect_timeout,
                             keepalive=(60, 10, 5) if cfg.keepalive else None, name=cfg.name)
    if t == "gelf":
        from shipper.sinks import gelf

        if cfg.transport == "udp":
            return gelf.GelfUdpSink(cfg.host, cfg.port, name=cfg.name, chunk_size=cfg.chunk_size,
                                    compression=cfg.compression, compress_min=cfg.compress_min)
        if cfg.transport == "http":
            return gelf.gelf_http_sink(cfg.url, bulk=cfg.bulk, name=cfg.name, tls=cfg.tls,
                                       gzip=cfg.compression == "gzip", timeout=cfg.timeout,
                                       connect_timeout=cfg.connect_timeout, headers=cfg.headers,
                                       max_batch_bytes=cfg.batch_max_bytes, **_auth(cfg))
        return gelf.GelfTcpSink(cfg.host, cfg.port, name=cfg.name,
                                tls=cfg.tls if cfg.transport == "tls" else None,
                                connect_timeout=cfg.connect_timeout, keepalive=cfg.keepalive)
    if t == "http":
        from shipper.sinks.http import HttpSink

        return HttpSink(cfg.url, cfg.format or "ndjson", name=cfg.name, table=cfg.table,
                        index=cfg.index, gzip=cfg.gzip, timeout=cfg.timeout,
                        connect_timeout=cfg.connect_timeout, tls=cfg.tls, headers=cfg.headers,
                        max_batch_bytes=cfg.batch_max_bytes,
                        # GELF: one message per request unless the input receives bulk
                        max_batch_records=cfg.batch_max_records if cfg.format != "gelf" or cfg.bulk else 1,
                        reuse=cfg.keepalive, **_auth(cfg))
    from shipper.sinks.local import FileSink, StdoutSink

    if t == "file":
        return FileSink(cfg.path, name=cfg.name, max_bytes=cfg.max_bytes, keep=cfg.keep)
    return StdoutSink(name=cfg.name)


def _auth(cfg: SinkConfig) -> dict[str, Any]:
    a = cfg.auth
    if a is None:
        return {}
    # The config loader read the secret already (and names its file or variable
    # only for messages): hand over the value alone, else where to read it.
    if a.type == "basic":
        if a.password is not None:
            return {"user": a.user, "password": a.password.value}
        return {"user": a.user, "password_file": a.password_file, "password_env": a.password_env}
    if a.token is not None:
        return {"token": a.token.value}
    return {"token_file": a.token_file, "token_env": a.token_env}


def build_queue(cfg: SinkConfig) -> Any:
    b = cfg.buffer
    if b.type == "memory":
        return MemQueue.open(max_bytes=b.max_bytes, when_full=b.when_full)
    return DiskQueue.open(b.path, max_bytes=b.max_bytes, segment_bytes=b.segment_bytes,
                          fsync=b.fsync, fsync_interval_ms=b.fsync_interval_ms, when_full=b.when_full)


class Tracking:
    """The correlator with its state kept in the state directory across restarts."""

    def __init__(self, config: Config) -> None:
        from shipper.track.correlator import Correlator

        self.path = tracking_path(config.state_dir)
        self.emit = config.tracking.emit
        self._opts = opts = correlator_options(config, skip_reread=True)
        self.failures = 0  # states set aside and batches the correlator failed on
        self.save_errors = 0  # writes of the state that failed (a metric)
        self.save_failing_since: float | None = None  # monotonic: when the spell began
        try:
            with open(self.path, "rb") as f:
                state = orjson.loads(f.read())
            self.correlator = Correlator.from_state(state, opts) if state else Correlator(opts)
        except FileNotFoundError:
            self.correlator = Correlator(opts)
        except Exception as exc:  # noqa: BLE001 - unreadable or of the wrong shape: never a crash loop
            self._set_aside(f"unusable ({type(exc).__name__}: {exc})")
        self._last_flush = time.monotonic()
        # the inputs not read to their end now (None: reading paused), set by assemble:
        # their clocks do not go on with the wall clock (see Correlator.flush)
        self.behind: Callable[[], set[str] | None] | None = None

    def _set_aside(self, why: str) -> None:
        """Keep the bad state file for a look (``tracking.json.corrupt``); start anew."""
        from shipper.track.correlator import Correlator

        self.failures += 1
        self.correlator = Correlator(self._opts)
        kept = self.path + ".corrupt"
        try:
            os.replace(self.path, kept)
        except OSError:
            kept = "not kept"
        log.error("tracking state %s %s: set aside (%s); starting with no open mails: "
                  "mails and sessions then open are summarised incomplete, the records "
                  "themselves all go out", self.path, why, kept)

    def __call__(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return self._feed(records)
        except Exception as exc:  # noqa: BLE001 - a bad restored state or a bug of ours:
            # summaries are lost, never the records (nor the pipeline)
            log.exception("tracking failed on a batch")
            self._set_aside(f"failed on a batch ({type(exc).__name__}: {exc})")
        try:  # the batch again, into a fresh correlator: only the old open mails are lost
            return self._feed(records)
        except Exception:  # noqa: BLE001
            log.exception("tracking failed on a batch again: its summaries are lost")
            return []

    def _feed(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = self.correlator.feed(records)
        now = time.monotonic()
        if now - self._last_flush > (HELD_FLUSH_EVERY if self.correlator.held else FLUSH_EVERY):
            self._last_flush = now
            try:
                behind = self.behind() if self.behind is not None else set()
            except Exception:  # noqa: BLE001 - a look at the followers must not cost the state
                behind = None
            if behind is None:  # reading paused: no input is quiet, every one is waiting
                out += self.correlator.flush()
            else:
                out += self.correlator.flush(read_ns=time.time_ns(), behind=behind)
        return out

    def waiting(self) -> bool:
        """Mails held for their session's reply: the pipeline's idle tick comes sooner."""
        return bool(self.correlator.held)

    def save(self) -> bool:
        """Write the state; False when it could not be (said in the log)."""
        return self.snapshot()()

    def snapshot(self) -> Callable[[], bool]:
        """The state as it is now, and the write of it, which may run in another thread:
        False when it could not be written (said in the log)."""
        try:
            state = self.correlator.to_state()
            try:
                data = orjson.dumps(state)
            except TypeError:  # something JSON cannot hold slipped in: save what it can
                data = dumps_safe(state)
        except Exception as exc:  # noqa: BLE001 - never stop shipping for the summaries
            log.error("cannot save tracking state to %s: %s", self.path, exc)
            return lambda: False
        return functools.partial(self._write, data)

    def _write(self, data: bytes) -> bool:
        # (in a thread: the counters are ints and a float, read by the scrapes alone)
        try:
            atomic_write(self.path, data)
        except Exception as exc:  # noqa: BLE001
            self.save_errors += 1
            if self.save_failing_since is None:  # once a spell (it said so every 2 s)
                self.save_failing_since = time.monotonic()
                log.error("cannot save tracking state to %s: %s (the checkpoints are not "
                          "written either until it is: retrying)", self.path, exc)
            return False
        if self.save_failing_since is not None:
            self.save_failing_since = None
            log.info("tracking state %s: written again", self.path)
        return True


# A sink whose buffer dropped records this recently is unhealthy (healthz)
DROPPING_SECONDS = 60.0


@dataclass(slots=True)
class Assembly:
    config: Config
    pipeline: Pipeline
    tracking: Tracking | None
    transformer: Any
    registry: Registry = field(default_factory=Registry)
    metrics: ShipperMetrics | None = None
    # sink → (records its buffer dropped, when that last grew): a full buffer with a drop
    # policy takes every batch (has_room), so only its drops show it throws records away
    drops: dict[str, tuple[int, float]] = field(default_factory=dict)

    def close(self) -> None:
        """After the pipeline's stop, which saved the tracking state with the checkpoints
        (or kept both as they were): nothing to write here."""
        # Break the cycles its parts make (registry → collect → self, tracking → behind →
        # pipeline → save_state → tracking): freed at once, not at Python's rare full
        # collection (a reload left its records in memory until then)
        self.registry.collectors.clear()
        if self.tracking is not None:
            self.tracking.behind = None
            self.tracking.correlator.unlink()

    def health(self) -> tuple[bool, str]:
        # A batch that does not fit pauses the reading, though a byte may still fit
        # which of the two: "full or not writable" left the admin to guess between the
        # sink (a full buffer) and the state_dir's disk (read-only, I/O errors)
        paused = [f"sink {name} ({secs:.0f} s): " + (f"its buffer cannot be written: {why}" if why
                                                     else "its buffer is full")
                  for name, secs, why in self.pipeline.paused_by()]
        if paused:
            return False, f"reading paused: {'; '.join(paused)}"
        bad = [r.name for r in self.pipeline.routes
               if not r.sink.stats.connected and not _queue_has_room(r.queue)]
        if bad:
            return False, f"sinks down with a full buffer: {', '.join(bad)}"
        dropping = self._dropping()
        if dropping:
            return False, f"buffers full, dropping records (when_full): {', '.join(dropping)}"
        now = time.monotonic()
        failing = [f"{path} ({now - since:.0f} s)" for path, _, since in self._state_files()
                   if since is not None and now - since >= STATE_FAILING_UNHEALTHY]
        if failing:
            # shipping goes on, but a crash now reads again what was read since, and
            # reports the archives multilog deleted meanwhile as gaps
            return False, f"state cannot be written: {', '.join(failing)}"
        unfollowed = not_followed_problem(self.pipeline.sources)
        if unfollowed:
            return False, unfollowed
        return True, "ok"

    def _dropping(self) -> list[str]:
        """Sinks whose buffer dropped records in the last DROPPING_SECONDS (a full buffer
        under drop_newest or drop_oldest: healthz said ok while records were thrown away)."""
        now = time.monotonic()
        out = []
        for r in self.pipeline.routes:
            qs = getattr(r.queue, "stats", None)
            n = (getattr(qs, "dropped_newest", 0) or 0) + (getattr(qs, "dropped_oldest", 0) or 0)
            seen, since = self.drops.get(r.name, (0, 0.0))
            if n > seen:
                self.drops[r.name] = (n, now)
                since = now
            if n and now - since < DROPPING_SECONDS:
                out.append(r.name)
        return out

    def _state_files(self) -> list[tuple[str, int, float | None]]:
        """(path, writes failed, failing since) of each checkpoint and the tracking state."""
        out = [(s.store.path, s.save_errors, s.save_failing_since) for s in self.pipeline.sources
               if getattr(s, "store", None) is not None]
        if self.tracking is not None:
            out.append((self.tracking.path, self.tracking.save_errors, self.tracking.save_failing_since))
        return out

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    def collect(self) -> None:
        """Copy the parts' counters into the registry (called before each scrape)."""
        m = self.metrics
        if m is None:
            return
        st = self.pipeline.stats
        now = time.time()
        now_mono = time.monotonic()
        for (program, event), n in st.by_event.items():
            m.records.set(n, program=program, event=event)
        gone: set[str] = set()  # log directories no longer there (a glob's, removed)
        m.source_not_followed.values.clear()  # (those followed since have no series)
        m.source_multilog_running.values.clear()
        m.source_disk_free.values.clear()
        locks = held_locks()
        for source in self.pipeline.sources:  # directories followed but quiet since start too
            for path, reason in getattr(source, "not_followed", dict)().items():
                m.source_not_followed.set(1, source=path, reason=reason)
            for path, running in getattr(source, "multilog_running", lambda _: {})(locks).items():
                m.source_multilog_running.set(1 if running else 0, source=path)
            for path, free in getattr(source, "disk_free", dict)().items():
                m.source_disk_free.set(free, source=path)
            gone.update(getattr(source, "let_go", ()))  # and those no longer followed
            for f in list(getattr(source, "followers", {}).values()):
                if getattr(f, "listing", None) is not None and not os.path.isdir(f.dir):
                    gone.add(f.key)
                    continue
                st.source(f.key)
                unread = getattr(f, "unread_bytes", None)
                if unread is not None:
                    m.source_unread.set(unread(), source=f.key)
                    deleted = getattr(f, "deleted_unread", None)  # (files, bytes)
                    if deleted is not None:
                        m.source_deleted_unread.set(deleted[1], source=f.key)
        for key, ss in st.by_source.items():
            m.source_lines.set(ss.lines, source=key)
            m.source_bytes.set(ss.bytes, source=key)
            m.source_gaps.set(ss.gaps, source=key)
            m.source_gap_bytes.set(ss.gap_bytes, source=key)
            if key in gone:  # its lag grew for good: an alert for a directory no more there
                for metric in (m.source_lag, m.source_unread, m.source_deleted_unread):
                    metric.remove_matching(source=key)
            elif ss.last_event_ns:
                m.source_lag.set(max(0.0, now - ss.last_event_ns / 1e9), source=key)
        for path, errors, since in self._state_files():
            m.state_write_errors.set(errors, file=path)
            m.state_failing.set(now_mono - since if since is not None else 0.0, file=path)
        for route in self.pipeline.routes:
            s = route.sink.stats
            name = route.name
            m.sink_sent.set(s.sent, sink=name)
            m.sink_acked.set(s.acked, sink=name)
            m.sink_retried.set(s.retried, sink=name)
            m.sink_failures.set(s.failed, sink=name)
            m.sink_dead_lettered.set(s.dead_lettered, sink=name)
            m.sink_truncated.set(s.truncated, sink=name)
            for event, n in s.extra.items():
                if type(n) is int:  # (the RELP peer's software is a name, not a count)
                    m.sink_events.set(n, sink=name, event=event)
            m.sink_connected.set(1 if s.connected else 0, sink=name)
            m.sink_failing.set(1 if s.failing else 0, sink=name)
            if s.last_error:
                set_last_error(m.sink_last_error, name, s.last_error)
            q = route.queue
            # a memory buffer's in memory (it has no bytes on disk: it said 0 when full)
            m.buffer_bytes.set(getattr(q, "bytes_in_memory", 0) or getattr(q, "bytes_on_disk", 0), sink=name)
            m.buffer_records.set(getattr(q, "depth", 0), sink=name)
            qs = getattr(q, "stats", None)
            if qs is not None:
                m.buffer_repairs.set(getattr(qs, "repairs", 0), sink=name)
                m.buffer_dropped.set(getattr(qs, "dropped_newest", 0), sink=name, reason="drop_newest")
                m.buffer_dropped.set(getattr(qs, "dropped_oldest", 0), sink=name, reason="drop_oldest")
                m.buffer_lost.set(getattr(qs, "corrupt_records", 0), sink=name)
                for kind, field_name in (("write", "write_errors"), ("state", "state_write_errors"),
                                         ("delete", "delete_errors"), ("read", "read_errors"),
                                         ("set_aside", "segments_set_aside")):
                    m.buffer_errors.set(getattr(qs, field_name, 0), sink=name, kind=kind)
            paused = route.paused_since
            m.buffer_paused.set(time.monotonic() - paused if paused is not None else 0.0, sink=name)
            oldest_of = getattr(q, "oldest_unacked_time", None)
            try:
                oldest = oldest_of() if oldest_of is not None else None
            except OSError:  # a segment gone under us: the queue says so itself
                oldest = None
            m.buffer_oldest_age.set(max(0.0, now - oldest / 1e9) if isinstance(oldest, int)
                                    and oldest else 0.0, sink=name)
        t = self.transformer
        if t is not None:
            m.filtered.set(getattr(t, "filtered", 0))
            rl = getattr(t, "rate_limiter", None)
            if rl is not None:
                for program, n in rl.dropped.items():
                    m.rate_limited.set(n, program=program)


def _behind(pipeline: Pipeline) -> set[str] | None:
    """The inputs with bytes not read yet, named as the correlator's clocks name them
    (a log directory, a file; the file being read too: a rotated ``maillog.1``); None
    while reading is paused. Inputs the followers do not know (stdin) count as read."""
    from shipper.track.correlator import input_of

    if pipeline.reading_paused():
        return None
    out = set()
    for source in pipeline.sources:
        for f in list(getattr(source, "followers", {}).values()):
            unread = getattr(f, "unread_bytes", None)
            if unread is None or unread() == 0:
                continue
            reader = getattr(f, "reader", None)
            for path in (f.key, getattr(reader, "path", None)):
                if path:
                    out.add(input_of(path))
    return out


def _queue_has_room(q: Any) -> bool:
    try:
        return bool(q.has_room(1))
    except Exception:
        return True


class UnsafeDirectory(Exception):
    """A state or buffer directory another user could change (unsafe_dir_problem)."""


def _private_dirs(config: Config) -> list[str]:
    return [config.state_dir, checkpoint_dir(config.state_dir)] + [
        s.buffer.path for s in config.sinks.values() if s.buffer.type == "disk" and s.buffer.path]


def _own_and_open(d: str) -> bool:
    try:
        st = os.lstat(d)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and bool(st.st_mode & 0o022)


def tighten_own_dirs(config: Config) -> list[str]:
    """Take the group's and others' write off the state and buffer directories this user
    owns (made under a umask of 002, by an earlier version or by hand): refused as they
    were, they stopped a start (an upgrade hunt). What was changed, a line each."""
    done = []
    for d in filter(_own_and_open, _private_dirs(config)):
        try:
            mode = os.lstat(d).st_mode & 0o7777
            os.chmod(d, mode & ~0o022)
        except OSError:
            continue  # said by the check that follows
        done.append(f"{d}: others could write it (mode {mode:o}): made {mode & ~0o022:o}")
    return done


def private_dir_problems(config: Config, tightened: bool = True) -> list[str]:
    """Why each state or disk buffer directory another user could put files or links in
    is unsafe (see checkpoint.unsafe_dir_problem), one line per directory: a buffer
    below a state_dir said already is not said again. Checked by run before it starts
    and before a reload stops anything, and by check (``tightened`` False: before run's
    tighten_own_dirs, this user's are judged as they will be then)."""
    will = frozenset() if tightened else frozenset(
        os.path.realpath(d) for d in _private_dirs(config) if _own_and_open(d))
    said: list[str] = []
    out = []
    for d in _private_dirs(config):
        if any(d == u or d.startswith(u + os.sep) for u in said):
            continue
        why = unsafe_dir_problem(d, will)
        if why is not None:
            said.append(d)
            out.append(why)
    return out


def check_private_dirs(config: Config) -> None:
    """Raise UnsafeDirectory for the first of private_dir_problems."""
    problems = private_dir_problems(config)
    if problems:
        raise UnsafeDirectory(problems[0])


def check_state_access(config: Config) -> None:
    """Raise PermissionError naming the first state file or directory this user cannot
    use. After an upgrade or a test run as root, checkpoints owned by another user were
    taken for missing (the sources started again from start_position: everything sent
    twice, or with "end" the lines written meanwhile skipped) and could never be saved
    again, and the open mails' state was set aside as if corrupt: refused at start
    instead, in one line, as a buffer of another user is."""
    cdir = checkpoint_dir(config.state_dir)
    files = [checkpoint_path(config.state_dir, s.name) for s in config.sources.values()
             if s.type != "stdin"]
    if config.tracking.enabled:
        files.append(tracking_path(config.state_dir))
    for d in (config.state_dir, cdir):
        if os.path.isdir(d) and not os.access(d, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES) + " (not writable by this user)", d)
    for path in files:
        try:
            with open(path, "rb"):
                pass
        except (FileNotFoundError, IsADirectoryError):
            pass  # (a directory there is moved aside when it is loaded)
        except PermissionError as exc:
            raise PermissionError(exc.errno, exc.strerror + " (not readable by this user)", path) from None


def correlator_options(config: Config, skip_reread: bool = False) -> Any:
    """The correlator's options as ``[tracking]`` sets them (the daemon's, replay's)."""
    from shipper.track.correlator import CorrelatorOptions

    opts = CorrelatorOptions(skip_reread=skip_reread)
    t = config.tracking
    for part in (opts.qmail, opts.session, opts.postfix):
        part.max_open = t.max_open
    opts.session.link_cap = t.max_open
    # max_age is how long a mail may stay in the queue (qmail retries for a
    # week by default); SMTP sessions keep their own, shorter limit.
    opts.qmail.max_age_s = opts.postfix.max_age_s = t.max_age
    return opts


def _set_aside_tracking_state(path: str) -> None:
    """With tracking off, its state no longer follows the logs: taken up again when
    tracking is turned back on, it summarised mails whose lines it never saw as
    complete (a deferral that had since succeeded; a black-box review)."""
    try:
        os.replace(path, path + ".stale")
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("tracking is off; its old state %s could not be set aside: %s", path, exc)
        return
    log.info("tracking is off: its state %s is set aside as %s.stale (turned on again, it "
             "starts with no open mails)", path, path)


def assemble(config: Config) -> Assembly:
    from shipper.sinks.deadletter import DeadLetterFile

    os.makedirs(config.state_dir, mode=0o700, exist_ok=True)  # buffers hold mail addresses
    check_state_access(config)
    if not config.tracking.enabled:
        _set_aside_tracking_state(tracking_path(config.state_dir))
    queues: list[Any] = []
    routes = []
    try:
        for scfg in config.sinks.values():
            queues.append(build_queue(scfg))
            routes.append(SinkRoute(
                name=scfg.name, sink=build_sink(scfg), queue=queues[-1],
                wants=sink_filter(scfg, is_summary), batch_records=scfg.batch_max_records,
                batch_bytes=scfg.batch_max_bytes, batch_age=batch_age(scfg),
                dead_letter=DeadLetterFile(scfg.dead_letter, sink=scfg.name) if scfg.dead_letter else None))
        transformer = build_transformer(config.transforms)
        tracking = Tracking(config) if config.tracking.enabled else None
        if tracking is not None and tracking.emit != "both":
            # The global choice narrows every sink's own ``records`` choice.
            want_summaries = tracking.emit == "summaries"
            for route in routes:
                own = route.wants
                # (the shipper's own records, gap reports, go whatever it says: a loss is
                # never filtered away, as sink_filter keeps them too)
                route.wants = lambda rec, own=own: (
                    own_record(rec) or is_summary(rec) == want_summaries) and own(rec)
        try:  # a source renamed in the configuration resumes where it was
            adopt_checkpoints(config)
        except OSError as exc:
            log.warning("cannot hand over the checkpoints of removed sources: %s", exc)
        parse = config.parse
        if parse.host is None:
            parse.host = socket.gethostname()
        sources = [(build_source(s, config), s.parse_options(parse)) for s in config.sources.values()]
    except BaseException:
        for q in queues:  # release their locks: the caller may assemble the old config again
            q.close()
        raise
    pipeline = Pipeline(sources, routes, transform=None if transformer.is_noop else transformer,
                        correlate=tracking, save_state=tracking.save if tracking else None,
                        snapshot_state=tracking.snapshot if tracking else None,
                        save_interval=config.tracking.save_interval,
                        parse_workers=resolve_workers(parse.workers, len(sources)))
    if tracking is not None:
        tracking.behind = lambda: _behind(pipeline)
    registry = Registry()
    asm = Assembly(config, pipeline, tracking, transformer, registry)
    asm.metrics = declare_shipper_metrics(registry, config.state_dir)
    for orphan in report_orphan_buffers(config):
        asm.metrics.buffer_orphaned.set(orphan.records, path=orphan.path)
    registry.add_collector(asm.collect)
    return asm
