"""Shared test helpers. Tests use the real daemontools, ucspi-tcp, rsyslog, ClickHouse,
Postfix, dovecot, spamd, clamd, svlogd, s6-log, tcpsvd and qpsmtpd-forkserver (Debian's
qpsmtpd) binaries; a missing one is a failure, never a skip (``require_binary``). The
one skip is ``require_root``'s: the Postfix and dovecot daemons need root, and a
developer's run as another user skips their tests; under CI (``CI`` set) that fails too."""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

FIXTURES = Path(__file__).parent / "fixtures"

# CI (CI=true) draws the same examples every run, so a red run is the change's, not
# the draw's; a developer's run explores new ones (failures kept in .hypothesis/).
# No deadline there: a loaded machine's stall of an example is not a failure.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def require_binary(name: str) -> str:
    """Path of a real binary the test needs; fail (not skip) when it is missing."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}") if Path(p).exists()),
        None,
    )
    if path is None:
        pytest.fail(f"{name} not found: install it (see .ci/run) — this test needs the real binary")
    return path


def require_root(why: str) -> None:
    """A real daemon that starts as root and switches users (Postfix's master, dovecot):
    as another user the test is skipped, and fails under CI (which runs as root)."""
    if os.geteuid() != 0:
        skip_outside_ci(f"{why}: run this test as root (CI does)")


def skip_outside_ci(msg: str) -> None:
    """A test that cannot run on this machine: skipped on a developer's, a failure in CI
    (which must run every test)."""
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def wait_until(what: str, cond: Callable[[], object], timeout: float = 30) -> None:
    """Poll ``cond`` until it holds, failing after ``timeout``: how soon a daemon or a
    task gets there depends on the machine's speed and load, which a fixed sleep before
    an assertion does not know."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


async def await_until(what: str, cond: Callable[[], object], timeout: float = 10) -> None:
    """``wait_until`` inside the event loop (the tasks waited for run meanwhile)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


async def end_pipeline(pipeline, task) -> None:
    """A pipeline a test ran as ``task``: stopped (5 s drain), its task ended."""
    await pipeline.stop(5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """A server the test started, stopped by its pid: SIGTERM, SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def without_root_powers() -> list[str]:
    """A command prefix under which file permissions hold: none for a user; for root,
    setpriv with an empty capability bounding set (uid 0 without CAP_DAC_OVERRIDE is
    held to the mode bits like anyone: a file of another user's, 0600, is closed)."""
    return [] if os.geteuid() != 0 else [require_binary("setpriv"), "--bounding-set=-all"]


_HANDED_OUT: set[tuple[int, int]] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now, and not handed out before in this run: the
    kernel picks a free port at random, so two picks in a row (rsyslog's inputs, a
    ClickHouse's HTTP and TCP ports) could be one number, and the server then failed
    to start."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if (kind, port) not in _HANDED_OUT:
            _HANDED_OUT.add((kind, port))
            return port
    raise RuntimeError("no port left that was not handed out already")


# A private real clickhouse-server (Debian's 18.16) on free 127.0.0.1 ports, shared
# by the tests of the session.
CLICKHOUSE_CONFIG = """<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709120</mark_cache_size>
  <timezone>UTC</timezone>
</yandex>
"""


def ch_query(port: int, sql: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/?output_format_json_quote_64bit_integers=0", body=sql.encode())
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200, text
        return text
    finally:
        conn.close()


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private clickhouse-server; yields its HTTP port."""
    binary = require_binary("clickhouse-server")
    d = tmp_path_factory.mktemp("clickhouse")
    http_port, tcp_port = free_port(), free_port()
    (d / "config.xml").write_text(CLICKHOUSE_CONFIG.format(http=http_port, tcp=tcp_port, d=d))
    log = open(d / "server.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen([binary, f"--config-file={d}/config.xml"], cwd=d, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=2)
                conn.request("GET", "/ping")
                if conn.getresponse().read() == b"Ok.\n":
                    conn.close()
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("clickhouse-server did not answer /ping within 60 s: "
                            + (d / "server.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        yield http_port
    finally:
        stop_process(proc, 20)
        log.close()


class FakeSink:
    """A sink in memory for pipeline tests: takes ``delay`` seconds a batch (forever
    when ``stuck``), keeps what it got, and counts it sent and acknowledged."""

    def __init__(self, name: str = "s", delay: float = 0.0, stuck: bool = False) -> None:
        from shipper.sinks.base import SinkStats

        self.name, self.delay, self.stuck = name, delay, stuck
        self.stats = SinkStats()
        self.got: list = []

    async def send(self, records: list) -> None:
        import asyncio

        if self.stuck:
            await asyncio.sleep(3600)
        if self.delay:
            await asyncio.sleep(self.delay)
        self.got += records
        self.stats.sent += len(records)
        self.stats.acked += len(records)

    async def close(self) -> None:
        pass


BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"  # Europe/Berlin as a POSIX rule: no tzdata needed


@pytest.fixture
def berlin(monkeypatch):
    """The process in Europe/Berlin's zone, put back after."""
    monkeypatch.setenv("TZ", BERLIN)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def dual_stack_name(monkeypatch) -> str:
    """A host name whose addresses are ::1, then 127.0.0.1 (localhost in a Debian
    /etc/hosts, where getaddrinfo puts IPv6 first); the connections are real."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        if host != "dual.test":
            return real(host, port, family, type, proto, flags)
        return [*real("::1", port, socket.AF_INET6, type, proto, flags),
                *real("127.0.0.1", port, socket.AF_INET, type, proto, flags)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return "dual.test"
