"""A reload (or restart) that removes or renames a sink or a source: what its buffer
and its checkpoints become. With real multilog and a real rsyslog receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port, require_binary
from rsyslog_util import Rsyslog
from test_daemon import WRITER, _config, _metric, _scrape, _seqs, _start_ready, _stop, _wait_seqs


def _wait_log(log: Path, text: str, count: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log: {log.read_text()[-2000:]}"
        time.sleep(0.1)


def _write_log(logdir: Path, n: int, start: int = 0) -> None:
    multilog = require_binary("multilog")
    subprocess.run(f"{sys.executable} -c '{WRITER}' 100000 {n} {start} | {multilog} t s100000 n50 {logdir}",
                   shell=True, check=True, timeout=60)


def test_a_removed_sinks_undelivered_buffer_is_reported_and_sent_when_it_is_back(tmp_path):
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    _write_log(logdir, 500)
    mport = free_port()
    down = free_port()  # nothing listens: the records of "other" wait in its buffer
    rs = Rsyslog(tmp_path / "rsyslog", ("tcp",))
    rs.start()
    with_other = f'\n[sinks.other]\ntype = "syslog"\nprotocol = "tcp"\nhost = "127.0.0.1"\nport = {down}\n'
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, rs.ports["tcp"], mport, extra=with_other))
    shlog = tmp_path / "shipper.log"
    proc = _start_ready(cfg, shlog)
    try:
        _wait_seqs(rs, 500, 30)
        deadline = time.monotonic() + 20
        while _metric(_scrape(mport), "shipper_buffer_records", sink="other") < 500:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # the sink is removed: its 500 records are said, not kept unseen
        cfg.write_text(_config(tmp_path, logdir, rs.ports["tcp"], mport))
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(shlog, "reloaded: 1 sources, 1 sinks")
        text = shlog.read_text()
        orphan = tmp_path / "state" / "buffer" / "other"
        assert f"buffer {orphan} belongs to no configured sink" in text, text
        assert "500 records in it were never delivered" in text, text
        assert _metric(_scrape(mport), "shipper_buffer_orphaned_records", path=str(orphan)) == 500
        assert orphan.is_dir()  # nothing deleted
        assert _stop(proc) == 0
        # a restart says it again
        proc = _start_ready(cfg, shlog)
        assert shlog.read_text().count("500 records in it were never delivered") == 2
        # back under its old name, to a receiver that is up: they go out, and it is no orphan
        cfg.write_text(_config(tmp_path, logdir, rs.ports["tcp"], mport,
                               extra=with_other.replace(str(down), str(rs.ports["tcp"]))))
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(shlog, "reloaded: 1 sources, 2 sinks")
        seqs = _wait_seqs(rs, 500, 30)
        deadline = time.monotonic() + 30
        while len(_seqs(rs)) < 1000 and time.monotonic() < deadline:
            time.sleep(0.2)
        seqs = _seqs(rs)
        assert sorted(seqs) == sorted(list(range(500)) * 2)  # once per sink
        assert "shipper_buffer_orphaned_records{" not in _scrape(mport)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
        rs.stop()


def test_a_renamed_source_resumes_where_it_was_and_sends_nothing_twice(tmp_path):
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    _write_log(logdir, 1000)
    mport = free_port()
    rs = Rsyslog(tmp_path / "rsyslog", ("tcp",))
    rs.start()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, rs.ports["tcp"], mport))  # start_position = "all"
    shlog = tmp_path / "shipper.log"
    proc = _start_ready(cfg, shlog)
    try:
        assert len(_wait_seqs(rs, 1000, 30)) == 1000
        cfg.write_text(cfg.read_text().replace("[sources.send]", "[sources.qmail_send]"))
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(shlog, "reloaded: 1 sources, 1 sinks")
        _write_log(logdir, 500, 1000)
        seqs = _wait_seqs(rs, 1500, 30)
        time.sleep(1.0)  # time for duplicates to arrive, if any
        seqs = _seqs(rs)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
        rs.stop()
    assert sorted(seqs) == list(range(1500)), f"{len(seqs) - len(set(seqs))} duplicates, " \
        f"{1500 - len(set(seqs))} missing"
    text = shlog.read_text()
    assert f"source qmail_send resumes {logdir} where source send left it" in text, text
    cdir = tmp_path / "state" / "checkpoints"
    assert not (cdir / "send.json").exists()  # handed over: not adopted again, stale, later
    assert (cdir / "qmail_send.json").exists()


def test_reloads_are_counted_in_the_metrics_refused_and_taken(tmp_path):
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    _write_log(logdir, 10)
    mport = free_port()
    cfg = tmp_path / "shipper.toml"
    good = _config(tmp_path, logdir, free_port(), mport)
    cfg.write_text(good)
    shlog = tmp_path / "shipper.log"
    proc = _start_ready(cfg, shlog)
    try:
        cfg.write_text(good + "\nbogus = 1\n")
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(shlog, "keeping the running configuration")
        # one problem is one line, what and that the old configuration runs on
        assert [line for line in shlog.read_text().splitlines() if "reload refused" in line] == [
            "ERROR shipper: reload refused: sinks.siem.bogus: unknown key; keeping the running configuration"]
        text = _scrape(mport)
        assert _metric(text, "shipper_config_reloads_total", result="refused") == 1
        assert _metric(text, "shipper_config_reloads_total", result="ok") == 0
        cfg.unlink()  # gone (a half-done deploy): one line naming it
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(shlog, "keeping the running configuration", count=2)
        # the refusals, not the log's last line: the sink's first "connect failed" (nothing
        # listens on its port) comes with its first batch, which a loaded machine may delay
        # past the second refusal
        text = shlog.read_text()
        assert [line for line in text.splitlines() if "reload refused" in line][1:] == [
            f"ERROR shipper: reload refused: {cfg}: cannot read: No such file or directory; keeping the running configuration"]
        assert "Traceback" not in text
        cfg.write_text(good)
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(shlog, "reloaded: 1 sources, 1 sinks")
        text = _scrape(mport)
        assert _metric(text, "shipper_config_reloads_total", result="refused") == 2
        assert _metric(text, "shipper_config_reloads_total", result="ok") == 1
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)


def test_a_directory_moved_to_another_source_resumes_where_it_was(tmp_path):
    """Narrowing one source's glob and naming a directory in another: the second takes
    the first one's position for it, the first keeps the rest."""
    from shipper.config import load_config_text
    from shipper.orphans import adopt_checkpoints

    logs = tmp_path / "log"
    for d in ("send", "smtpd"):
        (logs / d).mkdir(parents=True)
    cdir = tmp_path / "state" / "checkpoints"
    cdir.mkdir(parents=True)
    (cdir / "all.json").write_text(
        f'{{"schema":1,"sources":{{"{logs}/send":{{"at":1}},"{logs}/smtpd":{{"at":2}}}}}}')
    (cdir / "gone.json").write_text(f'{{"schema":1,"sources":{{"{tmp_path}/elsewhere":{{"at":3}}}}}}')
    cfg = load_config_text(f"""
state_dir = "{tmp_path / 'state'}"
[sources.all]
type = "multilog"
paths = ["{logs}/sm*"]
[sources.send]
type = "multilog"
paths = ["{logs}/send"]
[sinks.out]
type = "stdout"
""")
    assert adopt_checkpoints(cfg) == [(f"{logs}/send", "all", "send")]
    import json

    assert json.loads((cdir / "send.json").read_text())["sources"] == {f"{logs}/send": {"at": 1}}
    assert json.loads((cdir / "all.json").read_text())["sources"] == {f"{logs}/smtpd": {"at": 2}}
    # a position nobody follows now stays where it is (said as an orphan's, never lost)
    assert json.loads((cdir / "gone.json").read_text())["sources"] == {f"{tmp_path}/elsewhere": {"at": 3}}
    assert adopt_checkpoints(cfg) == []  # once


def test_a_reload_with_a_sink_down_does_not_stop_the_reading_for_the_drain_time(tmp_path):
    logdir = tmp_path / "log" / "send"
    logdir.parent.mkdir()
    _write_log(logdir, 300)
    rs = Rsyslog(tmp_path / "rsyslog", ("tcp",))
    rs.start()
    rs.stop()  # down; its port stays the same when it comes back
    mport = free_port()
    cfg = tmp_path / "shipper.toml"
    cfg.write_text(_config(tmp_path, logdir, rs.ports["tcp"], mport))  # drain_timeout 10 s
    shlog = tmp_path / "shipper.log"
    proc = _start_ready(cfg, shlog)
    try:
        deadline = time.monotonic() + 20
        while _metric(_scrape(mport), "shipper_buffer_records", sink="siem") < 300:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cfg.write_text(cfg.read_text() + "\n# changed\n")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGHUP)
        _wait_log(shlog, "reloaded: 1 sources, 1 sinks")
        took = time.monotonic() - t0
        _write_log(logdir, 300, 300)
        rs.start()
        seqs = _wait_seqs(rs, 600, 60)
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGKILL)
        rs.stop()
    assert took < 4, f"the reload took {took:.1f} s"
    assert sorted(set(seqs)) == list(range(600))


def test_another_program_s_directory_with_a_state_file_is_no_orphan_buffer(tmp_path):
    """The buffers' root may be a shared directory ([buffer] path = "/var/lib"): any
    directory there holding a file named "state" (/var/lib/nfs/state) was named in the
    log as a removed sink's buffer that 'may be removed'."""
    from shipper.config import load_config_text
    from shipper.diskqueue import DiskQueue
    from shipper.orphans import find_orphan_buffers

    root = tmp_path / "lib"
    (root / "nfs").mkdir(parents=True)
    (root / "nfs" / "state").write_bytes(b"\x00\x00\x00\x07")
    q = DiskQueue.open(root / "old-sink")
    q.append([b'{"a": 1}', b'{"a": 2}'])
    q.close()
    config = load_config_text(f"""
state_dir = "{tmp_path / 'state'}"
[buffer]
path = "{root}"
[sources.in]
type = "stdin"
[sinks.out]
type = "stdout"
""")
    found = find_orphan_buffers(config)
    assert [(os.path.basename(o.path), o.records) for o in found] == [("old-sink", 2)]


def test_a_position_goes_only_to_a_source_of_its_kind(tmp_path):
    """From the review: a removed multilog source's position for a path could land,
    unused, in a file source's checkpoint (and block a later handover)."""
    import json

    from shipper.config import load_config_text
    from shipper.orphans import adopt_checkpoints

    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "maillog").write_bytes(b"")
    cdir = tmp_path / "state" / "checkpoints"
    cdir.mkdir(parents=True)
    key = f"{tmp_path}/log/maillog"
    (cdir / "old.json").write_text(json.dumps({"schema": 1, "sources": {key: {"v": 1, "done": None}}}))
    cfg = load_config_text(f"""
state_dir = "{tmp_path / 'state'}"
[sources.mail]
type = "file"
paths = ["{tmp_path}/log/*"]
[sinks.out]
type = "stdout"
""")
    assert adopt_checkpoints(cfg) == []
    assert not (cdir / "mail.json").exists()
    (cdir / "old.json").write_text(json.dumps({"schema": 1, "sources": {key: {"v": 1, "kind": "file"}}}))
    assert adopt_checkpoints(cfg) == [(key, "old", "mail")]


def test_a_corrupt_checkpoint_is_left_to_its_source_not_overwritten_by_a_handover(tmp_path):
    """Reading the change: the handover replaced a corrupt checkpoint of the new owner
    with its own document, so the source never set it aside nor said it was corrupt."""
    import json

    from shipper.config import load_config_text
    from shipper.orphans import adopt_checkpoints

    (tmp_path / "log" / "send").mkdir(parents=True)
    cdir = tmp_path / "state" / "checkpoints"
    cdir.mkdir(parents=True)
    key = f"{tmp_path}/log/send"
    (cdir / "old.json").write_text(json.dumps({"schema": 1, "sources": {key: {"at": 1}}}))
    (cdir / "send.json").write_bytes(b"\x00" * 64)  # a crash left it so
    cfg = load_config_text(f"""
state_dir = "{tmp_path / 'state'}"
[sources.send]
type = "multilog"
paths = ["{key}"]
[sinks.out]
type = "stdout"
""")
    assert adopt_checkpoints(cfg) == []
    assert (cdir / "send.json").read_bytes() == b"\x00" * 64  # for its source to set aside
    assert json.loads((cdir / "old.json").read_text())["sources"] == {key: {"at": 1}}
