"""assemble: the tracking state kept across restarts must never stop the shipper: a state
file of any shape is set aside, and a correlator failure costs summaries, not records."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import end_pipeline

from shipper.assemble import Tracking
from shipper.config import load_config_text
from shipper.parse import LineParser

LINES = [b"@400000005a49ba341eefa7a4 new msg 1", b"@400000005a49ba341eefa7a5 info msg 1: bytes 10 "
         b"from <a@example.org> qp 7 uid 0", b"@400000005a49ba341eefa7a6 end msg 1"]


def _config(tmp: Path):
    return load_config_text(f'state_dir = "{tmp}/state"\n[sources.q]\ntype = "multilog"\n'
                            f'paths = ["{tmp}/log"]\n[sinks.o]\ntype = "stdout"\n'
                            '[tracking]\nenabled = true\n')


@contextlib.contextmanager
def _assembled(tmp_path: Path, extra: str = "", paths: str = "log") -> Iterator[Any]:
    """The daemon's parts for a multilog source of ``paths`` under ``tmp_path`` into a
    file sink (and ``extra``), their queues closed after."""
    from shipper.assemble import assemble
    asm = assemble(load_config_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                                    f'paths = ["{tmp_path}/{paths}"]\n{extra}[sinks.o]\ntype = "file"\n'
                                    f'path = "{tmp_path}/o.ndjson"\n'))
    try:
        yield asm
    finally:
        for r in asm.pipeline.routes:
            r.queue.close()


def _records() -> list[dict]:
    p = LineParser(source="t", file_id="0123456789abcdef")
    return [p.parse(ln + b"\n", i * 100).to_dict() for i, ln in enumerate(LINES)]


@pytest.mark.parametrize("state", [
    b"[1,2,3]",
    b'{"version":1,"qmail":{"mails":"x"}}',
    b'{"version":1,"qmail":{"mails":[["k",{"rcpts":["zz"]}]]},"clocks":{"q":"abc"}}',
    b"\x00" * 64,
    b"{",
])
def test_a_tracking_state_of_any_shape_is_set_aside(tmp_path: Path, state: bytes, caplog) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "tracking.json"
    path.write_bytes(state)
    t = Tracking(cfg)
    out = t(_records())  # whatever the restored state held, the batch goes through
    out += t.correlator.finish()
    assert [o["event"] for o in out] == ["mail"]
    t.save()
    assert orjson.loads(path.read_bytes())  # a good state again
    assert t.failures == 1  # every one of these is unusable
    assert (tmp_path / "state" / "tracking.json.corrupt").read_bytes() == state
    assert "set aside" in caplog.text


def test_a_correlator_failure_costs_the_summaries_not_the_batch(tmp_path: Path) -> None:
    t = Tracking(_config(tmp_path))

    class Broken:
        def feed(self, records):
            raise KeyError("msg")
    t.correlator = Broken()  # type: ignore[assignment]
    # a fresh correlator takes over and gets the batch again
    assert [o["event"] for o in t(_records()) + t.correlator.finish()] == ["mail"]
    assert t.failures == 1


def test_the_oldest_buffered_record_has_an_age(tmp_path: Path) -> None:
    """shipper_buffer_oldest_age_seconds was never set (a method taken for its value):
    an alert on a stuck buffer never fired (found by fault injection)."""
    import re
    import time

    with _assembled(tmp_path) as asm:
        q = asm.pipeline.routes[0].queue
        asm.collect()
        text = asm.registry.render()
        assert re.search(r'shipper_buffer_oldest_age_seconds\{sink="o"\} 0(\.0)?\n', text), text
        q.append([orjson.dumps({"time_unix_ns": (time.time_ns() - 600 * 10**9), "event": "x"})])
        asm.collect()
        m = re.search(r'shipper_buffer_oldest_age_seconds\{sink="o"\} ([\d.e+]+)', asm.registry.render())
        assert m and 590 < float(m.group(1)) < 700


def test_buffer_losses_errors_and_pauses_are_metrics(tmp_path: Path) -> None:
    """From the fault review: a full or failing buffer said so once in the log, and
    nothing a monitor could alert on showed it (records lost to corrupt bytes, write,
    state and delete errors, the reading paused)."""
    import re
    import time

    with _assembled(tmp_path) as asm:
        route = asm.pipeline.routes[0]
        qs = route.queue.stats
        qs.corrupt_records, qs.write_errors, qs.state_write_errors, qs.delete_errors = 7, 3, 2, 1
        qs.read_errors, qs.segments_set_aside = 4, 5
        route.paused_since = time.monotonic() - 42
        asm.collect()
        text = asm.registry.render()

        def value(series: str) -> float:
            m = re.search(re.escape(series) + r" ([\d.e+]+)\n", text)
            assert m, (series, text)
            return float(m.group(1))

        assert value('shipper_buffer_lost_records_total{sink="o"}') == 7
        assert value('shipper_buffer_errors_total{sink="o",kind="write"}') == 3
        assert value('shipper_buffer_errors_total{sink="o",kind="state"}') == 2
        assert value('shipper_buffer_errors_total{sink="o",kind="delete"}') == 1
        assert value('shipper_buffer_errors_total{sink="o",kind="read"}') == 4
        assert value('shipper_buffer_errors_total{sink="o",kind="set_aside"}') == 5
        assert 41 < value('shipper_buffer_paused_seconds{sink="o"}') < 60
        route.paused_since = None
        asm.collect()
        text = asm.registry.render()
        assert value('shipper_buffer_paused_seconds{sink="o"}') == 0


async def test_inputs_of_every_kind_read_to_their_end_go_on_with_the_wall_clock(tmp_path: Path) -> None:
    """Found by the third review: the inputs read to their end were named by the
    followers' keys, which are not the correlator's for stdin or a plain file named
    `current`: sessions left open there never aged. Now the daemon names the inputs
    still behind, as the correlator names them, and every other one is quiet."""
    import asyncio
    import copy
    import os
    import time

    from conftest import FakeSink

    from shipper.assemble import _behind
    from shipper.follower import FileSource, MultilogSource
    from shipper.memqueue import MemQueue
    from shipper.parse import ParseOptions
    from shipper.pipeline import Pipeline, SinkRoute
    from shipper.stdin_source import StdinSource
    from shipper.track.correlator import Correlator, CorrelatorOptions

    label = b"@400000005a49ba341eefa7a4 "

    def session(pid: int) -> bytes:
        return (label + b"tcpserver: pid %d from 203.0.113.5\n" % pid
                + label + b"tcpserver: ok %d mx:192.0.2.1:25 :203.0.113.5::3333\n" % pid)

    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "current").write_bytes(session(1))
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "current").write_bytes(session(2))  # a plain file source
    rfd, wfd = os.pipe()
    os.write(wfd, session(3))  # stdin, kept open
    sources = [MultilogSource([str(tmp_path / "ml")], str(tmp_path / "ml.json"), start="all", poll_interval=0.1),
               FileSource([str(tmp_path / "app" / "current")], str(tmp_path / "app.json"), start="all",
                          poll_interval=0.1),
               StdinSource(os.fdopen(rfd, "rb"))]
    corr = Correlator(CorrelatorOptions(skip_reread=True))
    pipeline = Pipeline([(s, ParseOptions(host="h")) for s in sources], [SinkRoute("s", FakeSink(), MemQueue())],
                        correlate=corr.feed, save_state=lambda: True, save_interval=3600)
    task = asyncio.create_task(pipeline.run())
    try:
        deadline = time.monotonic() + 10
        while len(corr.clocks) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        behind = _behind(pipeline)
        assert behind == set()
        later = time.time_ns() + 3 * 3600 * 10**9
        reference = copy.deepcopy(corr)
        got = corr.flush(read_ns=later, behind=behind)
        assert sorted(r["conn_pid"] for r in got if r["event"] == "smtp_session") == [1, 2, 3]
        # an input with bytes not read yet is not quiet: nothing of it ages
        got = reference.flush(read_ns=later, behind={str(tmp_path / "ml"), str(tmp_path / "app"), "-"})
        assert got == []
    finally:
        await pipeline.stop(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(wfd)


async def test_a_stop_writes_the_tracking_state_once(tmp_path: Path) -> None:
    """The pipeline's stop saves the state with the checkpoints; the assembly's close
    wrote it a second time, on the event loop (with many open mails, megabytes and an
    fsync in every reload, the new pipeline's lines waiting)."""
    import asyncio
    import time

    from shipper import assemble as assemble_module
    from shipper.assemble import assemble

    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "current").write_bytes(b"\n".join(LINES[:2]) + b"\n")  # a mail left open
    cfg = load_config_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                           f'paths = ["{tmp_path}/log"]\nstart_position = "all"\n[sinks.o]\n'
                           f'type = "file"\npath = "{tmp_path}/o.ndjson"\n[tracking]\nenabled = true\n')
    asm = assemble(cfg)
    writes: list[str] = []
    real_write = assemble_module.Tracking._write

    def counted(self, data: bytes) -> bool:
        writes.append(orjson.loads(data)["qmail"]["mails"][0][0])  # the open mail's key
        return real_write(self, data)

    assemble_module.Tracking._write = counted
    task = asyncio.create_task(asm.pipeline.run())
    try:
        deadline = time.monotonic() + 10
        while asm.pipeline.stats.lines < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert asm.pipeline.stats.lines == 2
        await asm.pipeline.stop(2)
        await asyncio.gather(task, return_exceptions=True)
        stopped = list(writes)
        asm.close()
    finally:
        assemble_module.Tracking._write = real_write
    assert len(stopped) >= 1 and writes == stopped  # saved by the stop, not again
    assert orjson.loads((tmp_path / "state" / "tracking.json").read_bytes())["qmail"]["mails"]


def test_state_that_cannot_be_written_is_a_metric_and_after_a_while_unhealthy(tmp_path: Path, caplog,
                                                                          monkeypatch) -> None:
    """Found by a black-box review: a checkpoint or the tracking state failing to be
    written was a log line (the tracking state's every 2 s), /healthz said ok and no
    metric showed it; a crash then reported archives deleted meanwhile as gaps."""
    import logging
    import re
    import time

    from shipper import assemble as assemble_module
    from shipper.assemble import STATE_FAILING_UNHEALTHY, assemble

    asm = assemble(_config(tmp_path))
    tracking = asm.tracking
    assert tracking is not None

    def refused(path, data):
        raise PermissionError(13, "Permission denied")

    try:
        monkeypatch.setattr(assemble_module, "atomic_write", refused)
        with caplog.at_level(logging.INFO, logger="shipper"):
            assert [tracking.save() for _ in range(3)] == [False, False, False]
            assert caplog.text.count("cannot save tracking state") == 1  # once a spell
            assert asm.health() == (True, "ok")  # a moment of it: retried, not alarmed
            tracking.save_failing_since = time.monotonic() - STATE_FAILING_UNHEALTHY - 1
            ok, why = asm.health()
            assert not ok and why.startswith(f"state cannot be written: {tracking.path} (1")
            asm.collect()
            text = asm.registry.render()
            assert f'shipper_state_write_errors_total{{file="{tracking.path}"}} 3' in text
            m = re.search(r'shipper_state_failing_seconds\{file="' + re.escape(tracking.path) + r'"\} ([\d.]+)', text)
            assert m and float(m.group(1)) > STATE_FAILING_UNHEALTHY
            monkeypatch.undo()
            assert tracking.save() and "written again" in caplog.text
        assert asm.health() == (True, "ok")
        asm.collect()
        assert f'shipper_state_failing_seconds{{file="{tracking.path}"}} 0' in asm.registry.render()
    finally:
        for r in asm.pipeline.routes:
            r.queue.close()


def test_a_tracking_state_left_by_tracking_turned_off_is_not_taken_up_again(tmp_path: Path, caplog) -> None:
    """Found by a black-box review: tracking turned off, then on again, took up its old
    state, which had not seen the lines read meanwhile: a mail deferred then delivered
    was summarised complete as a deferral."""
    import logging

    from shipper.assemble import assemble, tracking_path

    def done(asm) -> None:
        asm.close()
        for r in asm.pipeline.routes:
            r.queue.close()

    asm = assemble(_config(tmp_path))
    assert asm.tracking is not None
    asm.tracking(_records()[:2])  # a mail left open
    assert asm.tracking.save()
    done(asm)
    state = tracking_path(str(tmp_path / "state"))
    off = load_config_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                           f'paths = ["{tmp_path}/log"]\n[sinks.o]\ntype = "stdout"\n'
                           '[tracking]\nenabled = false\n')
    with caplog.at_level(logging.INFO, logger="shipper"):
        done(assemble(off))
    assert not Path(state).exists() and Path(state + ".stale").exists()
    assert "set aside as" in caplog.text
    asm = assemble(_config(tmp_path))  # on again: no open mail
    assert asm.tracking is not None and asm.tracking.correlator.open_count == 0
    done(asm)


def test_a_memory_buffers_bytes_are_a_metric(tmp_path: Path) -> None:
    """Found by a black-box review: shipper_buffer_bytes was 0 for a memory buffer
    holding 32 MiB (the metric read bytes on disk only)."""
    import re

    from shipper.assemble import assemble

    cfg = load_config_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                           f'paths = ["{tmp_path}/log"]\n[sinks.o]\ntype = "stdout"\n'
                           '[sinks.o.buffer]\ntype = "memory"\n')
    asm = assemble(cfg)
    try:
        asm.pipeline.routes[0].queue.append([b'{"event":"x","message":"' + b"y" * 1000 + b'"}'] * 10)
        asm.collect()
        m = re.search(r'shipper_buffer_bytes\{sink="o"\} (\d+)', asm.registry.render())
        assert m and int(m.group(1)) >= 10_000
    finally:
        for r in asm.pipeline.routes:
            r.queue.close()


def test_emit_summaries_still_ships_the_gap_reports(tmp_path: Path) -> None:
    """A config audit: [tracking] emit = "summaries" dropped the gap records (the reports
    of lost lines), which the docs say are always shipped."""
    from shipper.follower import Gap
    from shipper.pipeline import gap_record
    with _assembled(tmp_path, '[tracking]\nemit = "summaries"\n') as asm:
        wants = asm.pipeline.routes[0].wants
        gap = gap_record(Gap(f"{tmp_path}/log", "@4000000069558b0a00000000.s", 10, True, None, None,
                             "deleted by multilog", (f"{tmp_path}/log", {})), "mx")
        assert wants(gap)
        assert wants({"program": "qmail-send", "event": "mail"})
        assert not wants({"program": "qmail-send", "event": "delivery"})
        # a line logged as "shipper" (logger -t shipper) is no gap report (a review)
        assert not wants({"program": "shipper", "event": "unparsed", "event_id": "0123456789abcdef-1f"})


def test_healthz_is_unhealthy_while_a_buffer_drops_records(tmp_path: Path) -> None:
    """A metrics audit: with when_full = "drop_newest" a sink down and its buffer full
    threw records away while /healthz said ok (has_room is always true for a drop
    policy). Unhealthy now while drops go on, healthy again a minute after they stop."""
    from shipper import assemble as asm_mod
    cfg = load_config_text(f'state_dir = "{tmp_path}/state"\n[sources.q]\ntype = "multilog"\n'
                           f'paths = ["{tmp_path}/log"]\n[sinks.o]\ntype = "stdout"\n'
                           '[sinks.o.buffer]\ntype = "memory"\nmax_bytes = "1MiB"\nwhen_full = "drop_newest"\n')
    asm = asm_mod.assemble(cfg)
    try:
        assert asm.health() == (True, "ok")
        q = asm.pipeline.routes[0].queue
        for _ in range(40):  # 1.2 MB into a 1 MiB buffer
            q.append([orjson.dumps({"event": "x", "pad": "y" * 30_000})])
        assert q.stats.dropped_newest > 0
        ok, why = asm.health()
        assert not ok and why == "buffers full, dropping records (when_full): o"
        n, _ = asm.drops["o"]
        asm.drops["o"] = (n, time.monotonic() - asm_mod.DROPPING_SECONDS - 1)  # a minute without
        assert asm.health() == (True, "ok")
    finally:
        for r in asm.pipeline.routes:
            r.queue.close()


async def test_a_log_directory_removed_leaves_no_lag_series_to_grow(tmp_path: Path) -> None:
    """A metrics audit: of 20 directories a glob matched and that were removed, 20 lag
    series stayed and grew: an alert on lag fired for directories no longer there."""
    import shutil

    from conftest import await_until
    with _assembled(tmp_path, 'start_position = "all"\n') as asm:
        (tmp_path / "log").mkdir()
        (tmp_path / "log" / "current").write_bytes(b"@400000005a49ba341eefa7a4 new msg 1\n")
        source = asm.pipeline.sources[0]
        task = asyncio.get_running_loop().create_task(asm.pipeline.run())
        try:
            await await_until("the line read", lambda: asm.pipeline.stats.lines >= 1)
            asm.collect()
            key = str(tmp_path / "log")
            assert asm.metrics.source_lag.get(source=key) > 0
            shutil.rmtree(tmp_path / "log")
            assert key in getattr(source, "followers", {})  # still followed, until a reload
            asm.collect()
            assert (key,) not in asm.metrics.source_lag.values
            assert asm.metrics.source_lines.get(source=key) == 1  # its counts stay
        finally:
            await end_pipeline(asm.pipeline, task)


@pytest.mark.parametrize("removed", ["a", "b"])
async def test_a_removed_log_directory_beside_a_live_one(tmp_path: Path, removed: str) -> None:
    """Found by a review: ``collect`` named the set of removed directories and a live
    follower's (files, bytes) deleted unread alike. A removed directory after a live
    one raised AttributeError at every scrape (no sink or buffer figure updated after
    it); one before a live one kept its lag series growing."""
    import shutil

    from conftest import await_until
    with _assembled(tmp_path, 'start_position = "all"\n', paths="logs/*") as asm:
        for name in ("a", "b"):
            (tmp_path / "logs" / name).mkdir(parents=True)
            (tmp_path / "logs" / name / "current").write_bytes(b"@400000005a49ba341eefa7a4 new msg 1\n")
        task = asyncio.get_running_loop().create_task(asm.pipeline.run())
        try:
            await await_until("both lines read", lambda: asm.pipeline.stats.lines >= 2)
            shutil.rmtree(tmp_path / "logs" / removed)
            asm.collect()
            live = "b" if removed == "a" else "a"
            assert (str(tmp_path / "logs" / removed),) not in asm.metrics.source_lag.values
            assert asm.metrics.source_lag.get(source=str(tmp_path / "logs" / live)) > 0
            assert asm.metrics.sink_sent.get(sink="o") == 2  # figures after the sources set too
        finally:
            await end_pipeline(asm.pipeline, task)


def test_a_sinks_own_counts_are_exported(tmp_path: Path) -> None:
    """Found by a review: the counts each sink keeps besides the common ones (a syslog
    peer's closes, records sent again, a file sink's rotations) were kept and never read."""
    with _assembled(tmp_path) as asm:
        asm.pipeline.routes[0].sink.stats.extra.update(peer_closed=3, relp_server="librelp 1.11")
        asm.collect()
        assert asm.metrics.sink_events.get(sink="o", event="peer_closed") == 3
        assert asm.metrics.sink_events.get(sink="o", event="rotations") == 0  # the file sink's own
        assert ("o", "relp_server") not in asm.metrics.sink_events.values  # a name, not a count
