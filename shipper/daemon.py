"""`shipper run`: the daemon's life — start, reload on SIGHUP, drain on SIGTERM.

Reload is a clean in-process restart: the running pipeline stops reading,
commits its checkpoints, finishes (or leaves in its disk queues) what it was
sending, and a pipeline built from the new configuration starts where the old
one stopped. Because positions are only committed behind durable queue appends,
and queues survive restarts, a reload neither loses nor duplicates a line.
An invalid new configuration is refused with its errors and the old one keeps
running. A second SIGTERM exits at once; the disk queues make that safe too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import resource
import signal
import sys
import time
from typing import Any

from shipper import __version__, sdnotify
from shipper.assemble import (
    Assembly,
    UnsafeDirectory,
    assemble,
    build_sink,
    check_private_dirs,
    tighten_own_dirs,
)
from shipper.checkpoint import atomic_write, remove_stale_temps
from shipper.config import Config, ConfigError, load_config, named_now, user_name
from shipper.diskqueue import QueueLocked
from shipper.metrics import METRICS_ADDR_FILE, MetricsServer

log = logging.getLogger("shipper")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """One line per event on stderr, no timestamp: multilog or journald adds one."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


_said_at: dict[str, float] = {}
RELOAD_SPACING = 1.0  # s between the end of one reload and the start of the next


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's errors of a server socket (the metrics listener), such as EMFILE on
    accept, which asyncio retries every second: one line a minute, no traceback (with
    too few file descriptors, 12,700 tracebacks a minute hid everything else)."""
    exc = context.get("exception")
    message = str(context.get("message", ""))
    if isinstance(exc, OSError) and message.startswith("socket.accept()"):
        now = time.monotonic()
        if now - _said_at.get(message, -math.inf) >= 60:
            _said_at[message] = now
            log.warning("metrics: cannot accept a connection: %s", describe_os_error(exc))
        return
    loop.default_exception_handler(context)


class Daemon:
    def __init__(self, config: Config, config_loader: Any, exit_when_idle: float | None = None,
                 log_format: str | None = None) -> None:
        self.config = config
        self.log_format = log_format  # --log-format: wins over the config's, reloads too
        self.config_loader = config_loader  # () -> Config, raises ConfigError
        self.exit_when_idle = exit_when_idle
        self.assembly: Assembly | None = None
        self._lock: int | None = None  # the state_dir lock's fd, held while running
        self.metrics_server: MetricsServer | None = None
        self._metrics_listen: str | None = None  # the listen setting it serves
        # Signals as flags, not a queue: any number of SIGHUPs make one reload, and a
        # stop goes before a pending reload (a storm of SIGHUPs queued hundreds of
        # reloads, minutes with nothing shipped, and SIGTERM waited behind them all)
        self._stop = False
        self._reload_wanted = False
        self._reloaded_at = -math.inf  # monotonic time the last reload ended
        self._signalled = asyncio.Event()
        self._terms = 0
        # shipper_config_reloads_total: kept here, as each reload builds a new registry
        self._reloads = {"ok": 0, "refused": 0}
        self._reload_ok = False

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._terms += 1
            if self._terms >= 2:
                log.warning("second stop signal: exiting now (unsent records wait in the buffer)")
                os._exit(0)
            self._stop = True
        else:
            self._reload_wanted = True
        self._signalled.set()

    async def _next_signal(self) -> int:
        while True:
            if self._stop:
                return signal.SIGTERM
            self._signalled.clear()
            if self._reload_wanted:
                # at most one reload a RELOAD_SPACING: each stops the reading and
                # reconnects the sinks, and how many a storm of SIGHUPs made depended on
                # how fast a reload was (a faster one: 31 of 60 signals 5 ms apart)
                wait = self._reloaded_at + RELOAD_SPACING - time.monotonic()
                if wait <= 0:
                    self._reload_wanted = False
                    return signal.SIGHUP
                with contextlib.suppress(TimeoutError):  # a stop ends the wait
                    async with asyncio.timeout(wait):  # no extra task to cancel
                        await self._signalled.wait()
                continue
            await self._signalled.wait()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        for sig in (signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2):
            # svc -a (an admin's habit, to make multilog rotate) ended the process at
            # once, no drain, nothing said: ignored, and said
            loop.add_signal_handler(sig, log.info, "%s ignored (HUP reloads, TERM stops)",
                                    signal.Signals(sig).name)
        from shipper.cli import take_early_hup

        if take_early_hup():  # a reload asked for while starting: the config may have changed since
            self._on_signal(signal.SIGHUP)
        loop.set_exception_handler(_loop_exception)
        notifier = sdnotify.Notifier()
        try:
            _own_dirs_safe(self.config)  # before the lock file is made there
            self._lock = lock_state_dir(self.config.state_dir)
        except UnsafeDirectory as exc:
            log.error("cannot start: %s", exc)
            return 2
        except OSError as exc:
            culprit = exc.filename if isinstance(exc.filename, str) else ""
            log.error("cannot start: %s%s", describe_os_error(exc),
                      f" ({write_access_hint(self.config.state_dir, culprit)})"
                      if isinstance(exc, PermissionError) else "")
            return 2
        if self._lock is None:
            log.error("cannot start: another shipper is running with state_dir %s (stop it, "
                      "or give this one its own)", self.config.state_dir)
            return 1
        stale = remove_stale_temps(self.config.state_dir)
        if stale:
            log.info("removed %d temp files a killed shipper left in %s", stale, self.config.state_dir)
        try:
            self.assembly = assemble(self.config)
            # again, now that they are made: one made meanwhile by another user (a race
            # a security re-test won in three starts) is theirs, whatever went in it
            check_private_dirs(self.config)
        except UnsafeDirectory as exc:
            log.error("cannot start: %s", exc)
            return 2
        except QueueLocked as exc:
            log.error("cannot start: %s: is another shipper using this buffer?", exc)
            return 1
        except PermissionError as exc:  # a buffer or checkpoint directory of another user's
            culprit = exc.filename if isinstance(exc.filename, str) else ""
            log.error("cannot start: %s (%s)", _why(exc),
                      write_access_hint(owning_dir(self.config, culprit), culprit))
            return 2
        except Exception as exc:  # noqa: BLE001 - state_dir not writable, a sink that cannot be built
            log.error("cannot start: %s", _why(exc))
            return 2
        await self._start_metrics()
        run_task = loop.create_task(self.assembly.pipeline.run())
        notifier.ready(f"shipping {len(self.config.sources)} sources to {len(self.config.sinks)} sinks")
        log.info("shipper %s started: %d sources, %d sinks", __version__, len(self.config.sources),
                 len(self.config.sinks))
        watchdog = loop.create_task(sdnotify.run_watchdog(notifier))
        try:
            while True:
                sig = await self._wait_signal(run_task)
                if sig is None:  # the pipeline ended on its own (demo, or an error)
                    exc = run_task.exception() if run_task.done() else None
                    if exc is not None:
                        log.error("pipeline failed: %s: %s", type(exc).__name__, exc)
                        await self._stop_assembly(run_task)
                        return 1
                    await self._stop_assembly(run_task)
                    return 0
                if sig == signal.SIGHUP:
                    try:
                        run_task = await self._reload(run_task, notifier)
                        self._reloaded_at = time.monotonic()
                    except CannotRun:
                        return 1
                    except StoppedWhileReloading:
                        notifier.stopping()
                        log.info("stopping: a stop came while reloading; the reload's drain was the stop's")
                        return 0
                    continue
                notifier.stopping()
                log.info("stopping: draining for up to %.0f s", self.config.drain_timeout)
                await self._stop_assembly(run_task)
                # (a clean stop said nothing after "stopping": had it finished? a new admin)
                left = self.assembly.pipeline.left_at_stop if self.assembly is not None else 0
                log.info("stopped: %s", "everything read was delivered" if not left else
                         f"{left:,} records not delivered (said above, by sink)")
                return 0
        finally:
            watchdog.cancel()
            if self.metrics_server is not None:
                await self.metrics_server.stop()

    async def _wait_signal(self, run_task: asyncio.Task[Any]) -> int | None:
        sig_task = asyncio.ensure_future(self._next_signal())
        idle_task = asyncio.ensure_future(self._idle()) if self.exit_when_idle else None
        waiting = {sig_task, run_task} | ({idle_task} if idle_task else set())
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if sig_task in done:
            if idle_task:
                idle_task.cancel()
            return sig_task.result()
        sig_task.cancel()
        if idle_task is not None and idle_task in done and not run_task.done():
            return signal.SIGTERM
        if idle_task:
            idle_task.cancel()
        return None

    async def _idle(self) -> None:
        """For the demo: done once everything read has been delivered for a while."""
        assert self.exit_when_idle is not None and self.assembly is not None
        quiet_since = None
        last = -1
        while True:
            await asyncio.sleep(0.2)
            a = self.assembly
            busy = any(getattr(r.queue, "depth", 0) for r in a.pipeline.routes)
            lines = a.pipeline.stats.lines
            if busy or lines != last:
                quiet_since = None
                last = lines
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.exit_when_idle:
                return

    async def _stop_assembly(self, run_task: asyncio.Task[Any], reload: bool = False) -> None:
        assert self.assembly is not None
        # A reload hands the queues over to the new pipeline: it waits for sinks that
        # deliver, not for those down or acknowledging nothing for 2 s (a sink down, or
        # a frozen peer, made every reload stop the reading for the whole drain_timeout,
        # 9.5 s of the default 10)
        await self.assembly.pipeline.stop(self.config.drain_timeout, wait_for_down=not reload)
        if not run_task.done():
            run_task.cancel()
        await asyncio.gather(run_task, return_exceptions=True)
        if reload:  # its last counts, which the next parts' counters go on from
            try:
                self.assembly.collect()
            except Exception:  # noqa: BLE001 - a closed part's figure: the rest is taken
                log.debug("last collect before the reload failed", exc_info=True)
        self.assembly.close()

    async def _reload(self, run_task: asyncio.Task[Any], notifier: sdnotify.Notifier) -> asyncio.Task[Any]:
        self._reload_ok = False
        try:
            return await self._reload_config(run_task, notifier)
        finally:
            self._reloads["ok" if self._reload_ok else "refused"] += 1
            self._show_reloads()

    def _show_reloads(self) -> None:
        m = self.assembly.metrics if self.assembly is not None else None
        if m is not None:
            for result, n in self._reloads.items():
                m.reloads.set(n, result=result)

    async def _reload_config(self, run_task: asyncio.Task[Any],
                             notifier: sdnotify.Notifier) -> asyncio.Task[Any]:
        try:
            new = self.config_loader()
        except ConfigError as exc:
            # one problem, one line (as every other refusal); several: one line each
            if len(exc.errors) == 1:
                log.error("reload refused: %s; keeping the running configuration", exc.errors[0])
                return run_task
            for line in exc.errors:
                log.error("reload refused: %s", line)
            log.error("reload refused: keeping the running configuration")
            return run_task
        except OSError as exc:
            log.error("reload refused: %s; keeping the running configuration", _why(exc))
            return run_task
        if os.path.abspath(new.state_dir) != os.path.abspath(self.config.state_dir):
            # the buffers and checkpoints would be left behind in the old one
            log.error("reload refused: state_dir changed (%s to %s): that needs a restart; "
                      "keeping the running configuration", self.config.state_dir, new.state_dir)
            return run_task
        moved = [name for name, old in self.config.sinks.items()
                 if name in new.sinks and old.buffer.type == "disk"
                 and (new.sinks[name].buffer.type != "disk"
                      or os.path.abspath(new.sinks[name].buffer.path)
                      != os.path.abspath(old.buffer.path))]
        if moved:
            log.error("reload refused: the buffer of sink(s) %s would move (its records would be "
                      "left behind): that needs a restart; keeping the running configuration",
                      ", ".join(moved))
            return run_task
        for name, scfg in new.sinks.items():  # certificates, keys, URLs: before stopping
            try:
                build_sink(scfg)
            except Exception as exc:  # noqa: BLE001 - whatever it is, the running config stays
                log.error("reload refused: sinks.%s cannot be set up: %s; keeping the running "
                          "configuration", name, _why(exc))
                return run_task
        try:  # before anything stops: a refused reload leaves the running one running
            _own_dirs_safe(new)
        except UnsafeDirectory as exc:
            log.error("reload refused: %s; keeping the running configuration", exc)
            return run_task
        for w in new.warnings:
            log.warning("%s", w)
        notifier.reloading()
        old_registry = self.assembly.registry if self.assembly is not None else None
        old_pipeline = self.assembly.pipeline if self.assembly is not None else None
        log.info("reloading configuration")
        await self._stop_assembly(run_task, reload=True)
        if self._stop:
            # A stop during the reload's drain (a peer connected but not answering holds
            # it the whole drain_timeout): that drain committed and closed everything, so
            # the stop ends here. Else the new pipeline drained again: 18.8 s to exit
            # with drain_timeout 10 s (a frozen rsyslog's RELP).
            raise StoppedWhileReloading
        try:
            self.assembly = assemble(new)
            old, self.config = self.config, new
            self._reload_ok = True
            self._relog(old, new)
            log.info("reloaded: %d sources, %d sinks", len(new.sources), len(new.sinks))
        except Exception as exc:  # noqa: BLE001 - a buffer not writable, a sink that cannot be built
            log.error("reload refused: %s; keeping the running configuration", _why(exc))
            try:
                self.assembly = assemble(self.config)  # it ran a moment ago
            except Exception as exc2:  # noqa: BLE001 - its files changed on disk meanwhile
                log.error("cannot go on with the running configuration either: %s; stopping",
                          _why(exc2))
                raise CannotRun from exc2
        if old_registry is not None:  # counters go on; the reloads' own count is kept here
            self.assembly.registry.carry_from(old_registry, skip=("shipper_config_reloads_total",))
        if old_pipeline is not None:
            self.assembly.pipeline.carry_from(old_pipeline)
        # a new address, metrics turned on or off, or a listener that could not start
        # before: it moves (a reload said "reloaded" and left it where it was; status -c
        # then found no shipper), else it serves the new parts
        await self._start_metrics()
        task = asyncio.get_running_loop().create_task(self.assembly.pipeline.run())
        notifier.ready("reloaded")
        return task

    def _relog(self, old: Config, new: Config) -> None:
        """The log's format and level as the reloaded configuration says (they stayed as
        at the start: a level turned to debug by a reload gave nothing)."""
        if (old.log.format, old.log.level) != (new.log.format, new.log.level):
            setup_logging(self.log_format or new.log.format, new.log.level)

    async def _start_metrics(self) -> None:
        """The metrics listener as the configuration says, at the start and at each
        reload. A new address is bound before the old listener goes: one that cannot be
        (in use) leaves the old one serving, said, and is tried again at the next reload
        (a tester: the old one was stopped first, /metrics and /healthz were gone for
        good, and status -c found no shipper)."""
        m = self.config.metrics
        old = self.metrics_server
        if not m.enabled:
            if old is not None:
                await old.stop()
            self.metrics_server = self._metrics_listen = None
            return
        assert self.assembly is not None
        if old is not None and self._metrics_listen == m.listen:
            self._point_metrics(old, self.assembly)
            return
        server = MetricsServer(self.assembly.registry)
        self._point_metrics(server, self.assembly)
        try:
            try:
                await server.start(m.listen)
            except OSError as exc:
                if old is None or exc.errno != errno.EADDRINUSE:
                    raise
                # the old listener may hold that port itself (another address of it)
                await old.stop()
                try:
                    await server.start(m.listen)
                except OSError:
                    old = MetricsServer(self.assembly.registry)  # back where it was
                    try:
                        await old.start(self._metrics_listen)
                    except OSError:
                        old = None
                    raise
        except OSError as exc:
            if old is not None:
                self.metrics_server = old
                log.error("%s; metrics stay at %s (tried again at the next reload)",
                          metrics_listen_problem(m.listen, exc), old.address)
                self._point_metrics(old, self.assembly)
            else:
                log.error("%s (going on without metrics; tried again at the next reload)",
                          metrics_listen_problem(m.listen, exc))
                self.metrics_server = self._metrics_listen = None
            return
        if old is not None:
            await old.stop()
        self.metrics_server, self._metrics_listen = server, m.listen
        # Where it really listens (port 0 picks one), for `shipper status -c`.
        try:
            atomic_write(os.path.join(self.config.state_dir, METRICS_ADDR_FILE),
                         server.address.encode() + b"\n")
        except OSError as exc:
            log.warning("metrics: cannot note the address in %s: %s", self.config.state_dir, exc)

    def _point_metrics(self, server: MetricsServer, assembly: Assembly) -> None:
        # A reload builds new parts with fresh counts; their counters go on from the
        # old ones' totals (Registry.carry_from).
        server.registry = assembly.registry
        self._show_reloads()
        server.health = assembly.health
        server.ready = assembly.ready

def metrics_listen_problem(listen: str, exc: OSError) -> str:
    """One line for a metrics address that cannot be bound (asyncio's own text repeats
    the address as a tuple after "[Errno 98]")."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EADDRINUSE:
        why += ": another program, or a shipper already running, listens there; set [metrics] listen"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why += ": not an address of this host; set [metrics] listen"
    return f"metrics.listen: cannot listen on {listen}: {why}"


def owning_dir(config: Config, path: str) -> str:
    """The state_dir, or the buffer path outside it, that ``path`` is in."""
    for d in (config.state_dir, *(s.buffer.path for s in config.sinks.values())):
        if d and (path == d or path.startswith(d.rstrip(os.sep) + os.sep)):
            return d
    return config.state_dir


class CannotRun(Exception):
    """Neither the new configuration nor the running one can be set up any more."""


class StoppedWhileReloading(Exception):
    """SIGTERM came while a reload drained the old pipeline: that drain was the stop's."""


def _why(exc: BaseException) -> str:
    return describe_os_error(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"


def describe_os_error(exc: OSError) -> str:
    """``PermissionError: [Errno 13] ...: 'path'`` → ``path: Permission denied``."""
    if isinstance(exc, FileExistsError) and exc.filename and not os.path.isdir(exc.filename):
        return f"{exc.filename}: not a directory (a file is in the way)"
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def nearest_existing(path: str) -> str:
    """``path``, or its nearest ancestor that exists (what a missing directory would be
    made in); "" when none of a relative path exists."""
    while path and not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def write_access_hint(directory: str, culprit: str = "") -> str:
    """What to do when this user cannot write ``culprit`` (default: ``directory``) in
    ``directory``, the state_dir or a buffer path: most often the shipper ran once as
    root, and its files are root's now."""
    me = user_name(os.geteuid())
    if nearest_existing(directory) != directory:
        return f"make it as root: install -d -m 700 -o {me} {directory}"
    culprit = nearest_existing(culprit or directory)
    try:
        owner = user_name(os.stat(culprit).st_uid)
    except OSError:
        return f"it must be writable by {me}, the user this runs as"
    return f"{culprit} belongs to {owner}, this runs as {me}: chown -R {me} {directory}"


def _own_dirs_safe(config: Config) -> None:
    """The state and buffer directories tightened where they are ours (said), then
    checked: UnsafeDirectory for one another user could change."""
    for done in tighten_own_dirs(config):
        log.warning("%s", done)
    check_private_dirs(config)


def lock_state_dir(state_dir: str) -> int | None:
    """An exclusive lock on ``state_dir`` for this process's life (its fd), or None when
    another process holds it: two shippers on one state_dir would each move the
    other's checkpoints."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, "lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


FD_HEADROOM = 64  # files besides the followed directories: sinks, buffers, state, metrics


def followed_now(config: Config) -> int:
    """How many logs the sources' patterns name now (each holds a file open): a multilog
    glob's directories (not the archives of a directory it also matches), a file glob's
    files (``named_now``)."""
    return sum(len(named_now(pat, src.type)) for src in config.sources.values()
               for pat in src.paths)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard one; (before, after).

    A followed log directory holds its ``current`` open, so the shipper needs a file
    descriptor per directory besides its sockets, buffers and state files. Under
    daemontools the soft limit is svscan's, often 1024: with 200 directories and a
    soft limit of 120, every directory and the sink's socket failed with EMFILE and
    nothing at all was shipped, nor did the metrics endpoint answer. The hard limit is
    what the administrator allows; taking it is what Go programs do at start."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 0, 0
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, want
    return soft, soft


def run_main(config_path: str | None, demo: bool = False, log_format: str | None = None) -> int:
    if demo:
        import shutil
        import tempfile

        from shipper.config import demo_config

        demo_state = tempfile.mkdtemp(prefix="shipper-demo-")
        try:
            return _run_config(lambda: demo_config(demo_state), None, log_format, True)
        finally:  # each demo starts afresh: leave no state behind
            shutil.rmtree(demo_state, ignore_errors=True)
    assert config_path is not None
    return _run_config(lambda: load_config(config_path), config_path, log_format, False)


def _run_config(loader: Any, config_path: str | None, log_format: str | None, demo: bool) -> int:
    """Run the daemon on what ``loader`` (``() -> Config``, also used by SIGHUP) loads."""
    try:
        config = loader()
    except (ConfigError, OSError) as exc:
        # said as the daemon says everything (level, --log-format): under supervise
        # these lines go to the same log as the rest
        setup_logging(log_format or "text")
        lines = exc.errors if isinstance(exc, ConfigError) else [f"{config_path}: {exc.strerror}"]
        for line in lines:
            where = f"{config_path}: " if config_path and not line.startswith(config_path) else ""
            log.error("%s%s", where, line)
        return 2
    setup_logging(log_format or config.log.format, config.log.level)
    before, after = raise_open_files_limit()
    if after != before:
        log.debug("open files limit raised from %d to %d", before, after)
    dirs = followed_now(config)
    if after and dirs + FD_HEADROOM > after:
        log.warning("%d log directories to follow, and this process may open %d files: each "
                    "directory holds one open, and sockets, buffers and state need about %d "
                    "more; raise the hard limit (ulimit -Hn, LimitNOFILE=) or those beyond it "
                    "are not followed", dirs, after, FD_HEADROOM)
    for w in config.warnings:
        log.warning("%s", w)
    # The demo, and a config reading only standard input, end when all is delivered.
    only_stdin = bool(config.sources) and all(s.type == "stdin" for s in config.sources.values())
    daemon = Daemon(config, loader, exit_when_idle=2.0 if demo or only_stdin else None,
                    log_format=log_format)
    rc = 1
    try:
        rc = asyncio.run(daemon.run())
        return rc
    finally:
        # The loop's handlers go with it; a stop signal now (a second SIGTERM in the
        # last moments: the interpreter's exit) killed the process, exit 143, unsaid.
        # The stop is done: such a signal ends it at once with its own exit code (not
        # ignored: a thread the exit waits for, stuck in a look-up, would hold it).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: os._exit(rc))
