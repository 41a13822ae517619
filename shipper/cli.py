"""The ``shipper`` command.

Exit codes: 0 success; 1 a problem found (check/verify failed, a file that could not be
read to its end); 2 usage or configuration error (a path that is not there); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable

from shipper import __version__

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(msg: str) -> None:
    from shipper.track.cli import terminal_safe  # (a file's name may hold escapes)

    print(terminal_safe(f"shipper: {msg}"), file=sys.stderr)


def cmd_parse(argv: list[str]) -> int:
    import orjson

    from shipper.parse import DEFAULT_MAX_LINE, LineParser, ParseOptions
    from shipper.reader import InputError, expand, is_output, read_joined, written_to
    from shipper.record import F_CONTINUATION, F_PARTIAL, F_TRUNCATED, add_flag, ndjson_all
    from shipper.track import input_of
    from shipper.when import year_arg

    ap = argparse.ArgumentParser(
        prog="shipper parse",
        description="Parse log files, multilog directories (archives in order, then current) "
                    "or stdin into one JSON record per line (NDJSON) on stdout.")
    ap.add_argument("paths", nargs="*", default=["-"], metavar="PATH",
                    help="file, multilog directory, .gz/.bz2/.xz archive, or - for stdin (default)")
    ap.add_argument("--pretty", action="store_true", help="indented JSON for humans")
    ap.add_argument("--max-line", type=int, default=DEFAULT_MAX_LINE, metavar="BYTES",
                    help="cut longer lines and flag them truncated (default %(default)s)")
    ap.add_argument("--no-redact", action="store_true", help="keep passwords and AUTH data")
    ap.add_argument("--tai", action="store_true",
                    help="TAI64N labels are true TAI with leap seconds (s6-log), not daemontools'")
    ap.add_argument("--utc", action="store_true", help="tai64nlocal/syslog stamps are UTC, not local time")
    ap.add_argument("--year", type=year_arg, help="year of the first BSD syslog stamps (they have none); "
                    "it turns with the dates, Dec 31 to Jan 1")
    ap.add_argument("--host", help="host name for records whose line names none")
    args = ap.parse_args(argv)
    if args.max_line < 64:
        _err("--max-line must be at least 64")
        return EXIT_USAGE
    opts = ParseOptions(max_line=args.max_line, redact=not args.no_redact, tai_leap=args.tai,
                        local_tz=not args.utc, syslog_year=args.year, host=args.host)
    try:
        expand(args.paths)  # every path there, or nothing is read
    except InputError as exc:  # a path given wrong: a usage error, as track and stats say it
        _err(str(exc))
        return EXIT_USAGE
    out = sys.stdout.buffer
    output = written_to(out)
    option = orjson.OPT_INDENT_2 if args.pretty else 0
    status = EXIT_OK

    def said(path: str, exc: InputError) -> None:
        nonlocal status
        _err(str(exc))
        status = EXIT_PROBLEM

    parsers: dict[str, LineParser] = {}
    for arg in args.paths:
        # A directory's files are read as one: a line multilog cut at a rotation is
        # joined again, as the live follower joins it
        group = expand([arg])
        for f in [f for f in group if is_output(f, output)]:  # (> mail.log.json, globbed again)
            _err(f"{f}: the output file itself: not read")
            group.remove(f)
        for files in ([group] if arg != "-" and os.path.isdir(arg) else [[f] for f in group]):
            try:
                for batch in read_joined(files, max_line=args.max_line, on_error=said):
                    path = batch.source
                    # One parser per input: a multilog directory's state (the time for
                    # unstamped lines, a recordio line cut inside a secret) goes on from
                    # an archive to the next; another file's lines are not its.
                    parser = parsers.get(input_of(path))
                    if parser is None:
                        parser = parsers[input_of(path)] = LineParser(opts)
                    parser.source = path
                    parser.file_id = batch.file_id
                    records = parser.parse_batch_dicts(batch.lines, batch.offsets)
                    if batch.truncated:
                        for i in batch.truncated:
                            add_flag(records[i], F_TRUNCATED)
                    if batch.partial is not None:
                        add_flag(records[batch.partial], F_PARTIAL)
                    if batch.continued is not None:
                        add_flag(records[batch.continued], F_CONTINUATION)
                    out.write(ndjson_all(records, option))
                    out.flush()  # a batch at a time: `tail -F current | shipper parse -` shows lines as they come
            except BrokenPipeError:
                return EXIT_OK
    out.flush()
    return status


_early_hups: list[int] = []


def _note_hup(signum: int, frame: object) -> None:
    _early_hups.append(signum)


def take_early_hup() -> bool:
    """Whether a SIGHUP came before the daemon's own handlers were in place."""
    got = bool(_early_hups)
    _early_hups.clear()
    return got


def cmd_run(argv: list[str]) -> int:
    # A SIGHUP before the daemon's handlers are in place (imports, config, buffers:
    # more than 0.6 s measured) ended the process by its default action (svc -h just
    # after svc -u or -t): noted here, and taken as a reload once the daemon runs.
    signal.signal(signal.SIGHUP, _note_hup)
    ap = argparse.ArgumentParser(
        prog="shipper run",
        description="Run the daemon: follow the configured sources and ship to the sinks. "
                    "SIGHUP reloads the configuration, SIGTERM drains and exits.")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("-c", "--config", metavar="FILE", help="TOML configuration file")
    group.add_argument("--demo", action="store_true",
                       help="ship the built-in sample logs to stdout and exit (needs no server)")
    ap.add_argument("--log-format", choices=("text", "json"),
                    help="format of shipper's own log on stderr (default: from the config)")
    args = ap.parse_args(argv)
    from shipper.daemon import run_main

    return run_main(args.config, demo=args.demo, log_format=args.log_format)


def _lazy(module: str, func: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), func)(argv)

    return run


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (cmd_run, "run the daemon (or the demo: run --demo)"),
    "check": (_lazy("shipper.check", "main"), "validate a config and probe its sinks"),
    "status": (_lazy("shipper.status", "main"), "show what a running shipper is doing"),
    "parse": (cmd_parse, "parse logs into NDJSON records on stdout"),
    "replay": (_lazy("shipper.replay", "main"), "send archived logs to a sink, resumable"),
    "track": (_lazy("shipper.track.cli", "track_main"), "where did this mail go?"),
    "stats": (_lazy("shipper.track.cli", "stats_main"), "qmailanalog-style reports"),
    "buffer": (_lazy("shipper.buffer_tool", "main"), "verify, repair or inspect a disk buffer"),
}


def tune_gc() -> None:
    """Fewer, larger young-generation collections.

    The pipeline allocates a record (and its fields dict) per line and frees it
    a batch later; with CPython's default threshold of 700 the collector runs
    every few hundred lines and costs more than parsing them. Records hold no
    reference cycles, so rarer collections lose nothing.
    """
    import gc

    gc.set_threshold(50_000, 20, 100)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    tune_gc()
    ap = argparse.ArgumentParser(
        prog="shipper",
        description="Ship qmail and multilog logs to a SIEM as structured records, losing nothing.",
        epilog="Run 'shipper COMMAND --help' for a command's options. Exit codes: 0 ok, "
               "1 problem found, 2 usage or configuration error, 130 interrupted.")
    ap.add_argument("--version", action="version", version=f"shipper {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        ap.print_help()
        return EXIT_OK if argv else EXIT_USAGE
    if argv[0] == "--version":
        ap.parse_args(argv)
    name = argv[0]
    if name not in COMMANDS:
        ap.print_usage(sys.stderr)
        _err(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
        return EXIT_USAGE
    try:
        return COMMANDS[name][0](argv[1:])
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away ("shipper track ... | head"): not an error; keep Python
        # from complaining again when it flushes stdout at exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        # imported here: "shipper run" notes a SIGHUP as early as it can (see cmd_run)
        from shipper.diskqueue import QueueLocked

        if not isinstance(exc, QueueLocked):
            raise
        _err(f"{exc}: another shipper is running with this state_dir (stop it, or give "
             "this one its own)")
        return EXIT_PROBLEM
