"""Operations: what an administrator's environment does to a running shipper."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time

import pytest
from conftest import free_port, require_binary
from rsyslog_util import Rsyslog
from test_daemon import ROOT, _seqs, _stop

DIRS = 80


def test_more_log_directories_than_the_soft_open_files_limit_all_ship(tmp_path):
    """Under daemontools the soft limit is svscan's (often 1024), the hard one higher: a
    directory is an open ``current``, so a glob over more directories than the soft
    limit starved every socket and file and shipped nothing."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * DIRS:
        pytest.skip(f"hard open files limit {hard} too low for the test")
    multilog = require_binary("multilog")
    logs = tmp_path / "log"
    logs.mkdir()
    for i in range(DIRS):
        subprocess.run([multilog, "t", str(logs / f"d{i}")], input=f"status: seq {i}\n".encode(),
                       check=True, timeout=10)
    rs = Rsyslog(tmp_path / "rsyslog", ("tcp",))
    rs.start()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(f"""
state_dir = "{tmp_path / 'state'}"
drain_timeout = "2s"
[metrics]
listen = "127.0.0.1:{free_port()}"
[tracking]
enabled = false
[sources.all]
type = "multilog"
paths = ["{logs}/*"]
start_position = "all"
[sinks.siem]
type = "syslog"
protocol = "tcp"
host = "127.0.0.1"
port = {rs.ports["tcp"]}
""")
    log = open(tmp_path / "shipper.log", "wb")  # noqa: SIM115 - handed to the child
    # a soft limit below the directories, the hard one above
    proc = subprocess.Popen(["sh", "-c", f'ulimit -Sn {DIRS // 2} && exec "$0" -m shipper run -c "$1"',
                             sys.executable, str(cfg)], stdout=log, stderr=log, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while len(set(_seqs(rs))) < DIRS and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        seqs = _seqs(rs)
        assert proc.poll() is None
        assert _stop(proc, signal.SIGTERM) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
        rs.stop()
        log.close()
    assert sorted(seqs) == list(range(DIRS)), (tmp_path / "shipper.log").read_text()[-2000:]
